/* VE, VP and sub-VP SDEs (docs/math.md#sdes). */
#include <math.h>
#include <string.h>

#include "scoresde/error.h"
#include "scoresde/sde.h"

void sde_init(sde_sde *sde, sde_kind kind) {
  sde->kind = kind;
  sde->sigma_min = 0.01;
  sde->sigma_max = 50.0;
  sde->beta_min = 0.1;
  sde->beta_max = 20.0;
  sde->N = 1000;
}

int sde_validate(const sde_sde *sde) {
  if (!sde) return sde_fail(SDE_EINVAL, "no SDE given");
  if (sde->N < 2 || sde->N > 1000000)
    return sde_fail(SDE_EINVAL, "SDE: number of scales N = %d must be in [2, 1000000]", sde->N);
  switch (sde->kind) {
    case SDE_VE:
      if (!(sde->sigma_min > 0.0) || !(sde->sigma_max > sde->sigma_min) || !isfinite(sde->sigma_max))
        return sde_fail(SDE_EINVAL, "VE SDE: need 0 < sigma_min (%g) < sigma_max (%g)",
                        sde->sigma_min, sde->sigma_max);
      return SDE_OK;
    case SDE_VP:
    case SDE_SUBVP:
      if (!(sde->beta_min > 0.0) || !(sde->beta_max >= sde->beta_min) || !isfinite(sde->beta_max))
        return sde_fail(SDE_EINVAL, "%s SDE: need 0 < beta_min (%g) <= beta_max (%g)",
                        sde_kind_name(sde->kind), sde->beta_min, sde->beta_max);
      if (sde->beta_max / sde->N >= 1.0)
        return sde_fail(SDE_EINVAL, "%s SDE: beta_max/N = %g must be < 1 (discrete betas)",
                        sde_kind_name(sde->kind), sde->beta_max / sde->N);
      return SDE_OK;
  }
  return sde_fail(SDE_EINVAL, "unknown SDE kind %d", (int)sde->kind);
}

const char *sde_kind_name(sde_kind kind) {
  switch (kind) {
    case SDE_VE: return "ve";
    case SDE_VP: return "vp";
    case SDE_SUBVP: return "subvp";
  }
  return "?";
}

int sde_kind_from_name(const char *name, sde_kind *kind) {
  if (!name) return sde_fail(SDE_EINVAL, "no SDE name");
  if (!strcmp(name, "ve") || !strcmp(name, "vesde")) *kind = SDE_VE;
  else if (!strcmp(name, "vp") || !strcmp(name, "vpsde")) *kind = SDE_VP;
  else if (!strcmp(name, "subvp") || !strcmp(name, "sub-vp") || !strcmp(name, "subvpsde"))
    *kind = SDE_SUBVP;
  else return sde_fail(SDE_EINVAL, "unknown SDE '%s' (expected ve, vp or subvp)", name);
  return SDE_OK;
}

double sde_sampling_eps(const sde_sde *sde) { return sde->kind == SDE_VE ? 1e-5 : 1e-3; }

static double ve_sigma(const sde_sde *sde, double t) {
  return sde->sigma_min * pow(sde->sigma_max / sde->sigma_min, t);
}

static double vp_beta(const sde_sde *sde, double t) {
  return sde->beta_min + t * (sde->beta_max - sde->beta_min);
}

/* log of the VP/sub-VP mean coefficient: -t²(β1-β0)/4 - tβ0/2 */
static double vp_log_mean_coef(const sde_sde *sde, double t) {
  return -0.25 * t * t * (sde->beta_max - sde->beta_min) - 0.5 * t * sde->beta_min;
}

void sde_coefficients(const sde_sde *sde, double t, double *a, double *g) {
  switch (sde->kind) {
    case SDE_VE:
      *a = 0.0;
      *g = ve_sigma(sde, t) * sqrt(2.0 * (log(sde->sigma_max) - log(sde->sigma_min)));
      return;
    case SDE_VP: {
      double beta = vp_beta(sde, t);
      *a = -0.5 * beta;
      *g = sqrt(beta);
      return;
    }
    case SDE_SUBVP: {
      double beta = vp_beta(sde, t);
      /* 1 - exp(-2∫β) with ∫β = β0 t + (β1-β0) t²/2 */
      double discount = -expm1(-2.0 * sde->beta_min * t - (sde->beta_max - sde->beta_min) * t * t);
      *a = -0.5 * beta;
      *g = sqrt(beta * discount);
      return;
    }
  }
}

void sde_marginal(const sde_sde *sde, double t, double *mean_coef, double *std) {
  if (sde->kind == SDE_VE) {
    *mean_coef = 1.0;
    *std = ve_sigma(sde, t); /* the reference uses sigma(t), not sqrt(sigma(t)² - sigma(0)²) */
    return;
  }
  double lmc = vp_log_mean_coef(sde, t);
  double one_minus = -expm1(2.0 * lmc); /* 1 - exp(2 lmc), accurate at small t */
  *mean_coef = exp(lmc);
  *std = sde->kind == SDE_VP ? sqrt(one_minus) : one_minus; /* sub-VP: no square root */
}

double sde_prior_std(const sde_sde *sde) { return sde->kind == SDE_VE ? sde->sigma_max : 1.0; }

double sde_prior_logp(const sde_sde *sde, const float *z, int64_t D) {
  const double s = sde_prior_std(sde);
  double sq = 0.0;
  for (int64_t i = 0; i < D; i++) sq += (double)z[i] * z[i];
  return -0.5 * (double)D * log(2.0 * M_PI * s * s) - sq / (2.0 * s * s);
}

int sde_time_index(const sde_sde *sde, float t) {
  /* torch: (t * (N - 1) / T).long() in float32, truncating */
  volatile float scaled = t * (float)(sde->N - 1);
  int i = (int)scaled;
  if (i < 0) i = 0;
  if (i > sde->N - 1) i = sde->N - 1;
  return i;
}

double sde_smld_sigma(const sde_sde *sde, int i) {
  if (i < 0) return 0.0;
  double lo = log(sde->sigma_min), hi = log(sde->sigma_max);
  return exp(lo + (hi - lo) * (double)i / (double)(sde->N - 1));
}

double sde_ddpm_beta(const sde_sde *sde, int i) {
  double lo = sde->beta_min / sde->N, hi = sde->beta_max / sde->N;
  return lo + (hi - lo) * (double)i / (double)(sde->N - 1);
}

void sde_discretize(const sde_sde *sde, double t, double *fa, double *G) {
  switch (sde->kind) {
    case SDE_VE: {
      int i = sde_time_index(sde, (float)t);
      double s = sde_smld_sigma(sde, i), s_prev = sde_smld_sigma(sde, i - 1);
      *fa = 0.0;
      *G = sqrt(s * s - s_prev * s_prev);
      return;
    }
    case SDE_VP: {
      double beta = sde_ddpm_beta(sde, sde_time_index(sde, (float)t));
      *fa = sqrt(1.0 - beta) - 1.0;
      *G = sqrt(beta);
      return;
    }
    case SDE_SUBVP: {
      /* generic Euler-Maruyama discretisation with dt = 1/N (reference, trap 4) */
      double a, g, dt = 1.0 / sde->N;
      sde_coefficients(sde, t, &a, &g);
      *fa = a * dt;
      *G = g * sqrt(dt);
      return;
    }
  }
}

float sde_time_grid(double eps, int steps, int k) {
  /* torch.linspace(T, eps, steps) on the CPU in float32: from the start for the first
   * half, from the end for the second half. */
  const float start = (float)SDE_T, end = (float)eps;
  if (steps <= 1) return start;
  const float step = (end - start) / (float)(steps - 1);
  if (k < steps / 2) return start + step * (float)k;
  return end - step * (float)(steps - k - 1);
}
