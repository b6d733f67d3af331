/* Exact log-likelihood through the probability-flow ODE (docs/math.md#likelihood).
 *
 * Per sample the augmented state [x (D), Δlogp] is integrated forwards from eps to T
 * with the RK45 of sample_ode.c: each sample has its own step control and the error
 * norm is the RMS over all D + 1 entries, as scipy's norm over the flattened state.
 * The divergence of the drift f̃ = a(t)x - ½g²s is a(t)·D - ½g²∇·s: the linear part is
 * exact even with Hutchinson probes (the reference estimates it as a·|ε|², which only
 * adds variance for Gaussian probes); ∇·s is exact (score_div) or εᵀ(εᵀ∂s/∂x).
 * Stats count right-hand-side evaluations: each is one batched score call plus one
 * batched score_div or score_vjp call, and counts 1 in nfe and evals (as scipy's nfev). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample_internal.h"
#include "scoresde/scoresde.h"

void sde_likelihood_params_init(sde_likelihood_params *p) {
  memset(p, 0, sizeof *p);
  p->rtol = 1e-5;
  p->atol = 1e-5;
  p->eps = SDE_LIKELIHOOD_EPS;
  p->divergence = SDE_DIV_AUTO;
  p->max_evals = SDE_ODE_DEFAULT_MAX_EVALS;
}

const char *sde_divergence_name(sde_divergence d) {
  switch (d) {
    case SDE_DIV_AUTO: return "auto";
    case SDE_DIV_EXACT: return "exact";
    case SDE_DIV_RADEMACHER: return "rademacher";
    case SDE_DIV_GAUSSIAN: return "gaussian";
  }
  return "unknown";
}

int sde_divergence_from_name(const char *s, sde_divergence *d) {
  static const struct { const char *name; sde_divergence d; } names[] = {
      {"auto", SDE_DIV_AUTO},           {"exact", SDE_DIV_EXACT},
      {"rademacher", SDE_DIV_RADEMACHER}, {"hutchinson", SDE_DIV_RADEMACHER},
      {"gaussian", SDE_DIV_GAUSSIAN},   {"normal", SDE_DIV_GAUSSIAN},
  };
  for (size_t k = 0; s && k < sizeof names / sizeof names[0]; k++)
    if (!strcmp(s, names[k].name)) {
      *d = names[k].d;
      return SDE_OK;
    }
  return sde_fail(SDE_EINVAL,
                  "unknown divergence '%s' (expected auto, exact, rademacher or gaussian)",
                  s ? s : "(null)");
}

double sde_bits_per_dim(double logp, int64_t D, double offset) {
  return -logp / log(2.0) / (double)D + offset;
}

double sde_dequant_offset(const sde_model *m) {
  if (!m || !m->is_image) return 0.0;
  return m->centered ? 7.0 : 8.0;
}

void sde_dequantize(const sde_model *m, uint64_t seed, uint64_t stream0, int n, float *x) {
  const int64_t D = sde_model_dim(m);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    float *xi = x + (int64_t)i * D;
    float *u = malloc((size_t)D * sizeof(float));
    if (!u) { /* no way to report from a void function: poison so logp fails loudly */
      for (int64_t j = 0; j < D; j++) xi[j] = NAN;
      continue;
    }
    sde_randu(seed, stream0 + (uint64_t)i, 0, u, D);
    for (int64_t j = 0; j < D; j++) {
      float v = (u[j] + 255.0f * xi[j]) / 256.0f;
      xi[j] = m->centered ? 2.0f * v - 1.0f : v;
    }
    free(u);
  }
}

/* Chooses how the divergence is computed; *gaussian selects Gaussian probes. */
static int resolve_divergence(const sde_model *m, sde_divergence d, sde_pf_div *mode,
                              int *gaussian) {
  const int has_div = m->ops->score_div != NULL, has_vjp = m->ops->score_vjp != NULL;
  *gaussian = d == SDE_DIV_GAUSSIAN;
  switch (d) {
    case SDE_DIV_AUTO:
      if (has_div) {
        *mode = SDE_PF_DIV_EXACT;
        return SDE_OK;
      }
      if (has_vjp) {
        *mode = SDE_PF_DIV_HUTCHINSON;
        return SDE_OK;
      }
      return sde_fail(SDE_EUNSUPPORTED, "sde_likelihood: model '%s' has neither an exact "
                                        "divergence nor a vector-Jacobian product",
                      m->ops->kind ? m->ops->kind : "?");
    case SDE_DIV_EXACT:
      if (!has_div)
        return sde_fail(SDE_EUNSUPPORTED, "sde_likelihood: model '%s' has no exact divergence; "
                                          "use divergence auto, rademacher or gaussian",
                        m->ops->kind ? m->ops->kind : "?");
      *mode = SDE_PF_DIV_EXACT;
      return SDE_OK;
    case SDE_DIV_RADEMACHER:
    case SDE_DIV_GAUSSIAN:
      if (!has_vjp)
        return sde_fail(SDE_EUNSUPPORTED, "sde_likelihood: model '%s' has no vector-Jacobian "
                                          "product for the Hutchinson-Skilling estimator",
                        m->ops->kind ? m->ops->kind : "?");
      *mode = SDE_PF_DIV_HUTCHINSON;
      return SDE_OK;
  }
  return sde_fail(SDE_EINVAL, "sde_likelihood: unknown divergence %d", (int)d);
}

static int check_args(const sde_model *m, const sde_sde *sde, const sde_likelihood_params *p,
                      int n, const float *x, const double *logp) {
  if (!m || !m->ops || !m->ops->score) return sde_fail(SDE_EINVAL, "sde_likelihood: no score model");
  if (!sde || !p) return sde_fail(SDE_EINVAL, "sde_likelihood: sde and params are required");
  int rc = sde_validate(sde);
  if (rc) return sde_fail_context(rc, "sde_likelihood");
  if (n < 0) return sde_fail(SDE_EINVAL, "sde_likelihood: n = %d must be >= 0", n);
  if (n > 0 && (!x || !logp)) return sde_fail(SDE_EINVAL, "sde_likelihood: NULL x or logp");
  if (sde_model_dim(m) <= 0) return sde_fail(SDE_EINVAL, "sde_likelihood: model has no dimensions");
  if (!(p->rtol > 0) || !(p->atol > 0) || !isfinite(p->rtol) || !isfinite(p->atol))
    return sde_fail(SDE_EINVAL, "sde_likelihood: rtol (%g) and atol (%g) must be > 0", p->rtol,
                    p->atol);
  if (!(p->eps >= 0 && p->eps < SDE_T))
    return sde_fail(SDE_EINVAL, "sde_likelihood: eps = %g must be in [0, %g) (0 = default)",
                    p->eps, SDE_T);
  if (p->max_evals < 0)
    return sde_fail(SDE_EINVAL, "sde_likelihood: max_evals = %lld must be >= 0 (0 = default)",
                    (long long)p->max_evals);
  return SDE_OK;
}

/* Hutchinson probes noise[n, D], drawn once per sample: (seed, stream0 + i, step 0). */
static void draw_probes(uint64_t seed, uint64_t stream0, int gaussian, int n, int64_t D,
                        float *noise) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    float *e = noise + (int64_t)i * D;
    if (gaussian)
      sde_randn(seed, stream0 + (uint64_t)i, 0, e, D);
    else
      sde_rand_rademacher(seed, stream0 + (uint64_t)i, 0, e, D);
  }
}

/* Integrates [x, 0] from eps to T; y[n, D+1] holds the result. */
static int solve_augmented(const sde_model *m, const sde_sde *sde, const sde_likelihood_params *p,
                           int n, sde_pf_div mode, const float *noise, double *y,
                           sde_stats *st) {
  sde_pf_ode f;
  int rc = sde_pf_ode_init(&f, m, sde, n, mode, noise);
  if (rc) return rc;
  /* float32 scores cannot meet tighter tolerances; the cap bounds the solve anyway */
  sde_ode_opts o = {.method = SDE_ODE_RK45, .rtol = fmax(p->rtol, SDE_ODE_MIN_TOL),
                    .atol = fmax(p->atol, SDE_ODE_MIN_TOL), .progress = p->progress,
                    .user = p->user,
                    .max_evals = p->max_evals > 0 ? p->max_evals : SDE_ODE_DEFAULT_MAX_EVALS};
  const double eps = p->eps > 0 ? p->eps : SDE_LIKELIHOOD_EPS;
  rc = sde_ode_integrate(sde_pf_ode_rhs, &f, n, f.dim, y, eps, SDE_T, &o, st);
  sde_pf_ode_free(&f);
  return rc;
}

int sde_likelihood(const sde_model *m, const sde_sde *sde, const sde_likelihood_params *p, int n,
                   uint64_t stream0, const float *x, double *logp, float *z, sde_stats *stats) {
  const double t_start = sde_now();
  if (stats) memset(stats, 0, sizeof *stats);
  int rc = check_args(m, sde, p, n, x, logp);
  sde_pf_div mode = SDE_PF_DIV_NONE;
  int gaussian = 0;
  if (!rc) rc = resolve_divergence(m, p->divergence, &mode, &gaussian);
  if (rc || n == 0) return rc;

  const int64_t D = sde_model_dim(m), dim = D + 1;
  float *noise = NULL, *zb = z;
  double *y = sde_malloc((size_t)n * (size_t)dim * sizeof(double));
  if (mode == SDE_PF_DIV_HUTCHINSON) noise = sde_malloc((size_t)n * (size_t)D * sizeof(float));
  if (!zb) zb = sde_malloc((size_t)n * (size_t)D * sizeof(float));
  if (!y || !zb || (mode == SDE_PF_DIV_HUTCHINSON && !noise)) {
    rc = SDE_ENOMEM;
    goto done;
  }
  if (noise) draw_probes(p->seed, stream0, gaussian, n, D, noise);
  for (int i = 0; i < n; i++) {
    for (int64_t j = 0; j < D; j++) y[i * dim + j] = x[i * D + j];
    y[i * dim + D] = 0.0; /* Δlogp(eps) = 0 */
  }
  rc = solve_augmented(m, sde, p, n, mode, noise, y, stats);
  if (rc) goto done;
  for (int i = 0; i < n; i++) {
    for (int64_t j = 0; j < D; j++) zb[i * D + j] = (float)y[i * dim + j];
    logp[i] = sde_prior_logp(sde, zb + i * D, D) + y[i * dim + D];
  }
done:
  if (zb != z) free(zb);
  free(noise);
  free(y);
  if (stats) stats->seconds = sde_now() - t_start;
  return rc;
}
