/* NCSNv2 noise-scale planning (Song & Ermon 2020, techniques 1, 2 and 4). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "parallel.h"
#include "scoresde/error.h"
#include "scoresde/plan.h"

#define PLAN_BLOCK 512

typedef struct {
  int64_t D;
  const float *x;
  double *norms;
} norms_job;

static void norms_range(void *ctx, int64_t i0, int64_t i1) {
  const norms_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) {
    const float *xi = j->x + (size_t)i * j->D;
    double s = 0.0;
    for (int64_t d = 0; d < j->D; d++) s += (double)xi[d] * xi[d];
    j->norms[i] = s;
  }
}

/* Squared norms in double. */
static void row_norms(int n, int64_t D, const float *x, double *norms) {
  norms_job j = {D, x, norms};
  sde_parallel_for(n, 1, norms_range, &j);
}

static double exact_distance(int64_t D, const float *a, const float *b) {
  double s = 0.0;
  for (int64_t d = 0; d < D; d++) {
    double diff = (double)a[d] - b[d];
    s += diff * diff;
  }
  return sqrt(s);
}

int sde_plan_sigma_max(int n, int64_t D, const float *x, double *sigma_max) {
  if (n < 2 || D < 1 || !x || !sigma_max)
    return sde_fail(SDE_EINVAL, "sigma_max: need at least 2 points of dimension >= 1");
  if (D > INT32_MAX) return sde_fail(SDE_EINVAL, "sigma_max: dimension too large");
  double *norms = sde_malloc(sizeof(double) * (size_t)n);
  float *dots = sde_malloc(sizeof(float) * PLAN_BLOCK * PLAN_BLOCK);
  if (!norms || !dots) {
    free(norms);
    free(dots);
    return SDE_ENOMEM;
  }
  row_norms(n, D, x, norms);
  /* |a-b|² = |a|² + |b|² - 2 a·b, with the dot products from GEMM over blocks. The
   * float rounding only affects which near-maximal pair wins; the winner's distance is
   * then recomputed exactly. */
  double best = -1.0;
  int best_i = 0, best_j = 1;
  for (int i0 = 0; i0 < n; i0 += PLAN_BLOCK) {
    int bi = n - i0 < PLAN_BLOCK ? n - i0 : PLAN_BLOCK;
    for (int j0 = i0; j0 < n; j0 += PLAN_BLOCK) {
      int bj = n - j0 < PLAN_BLOCK ? n - j0 : PLAN_BLOCK;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bi, bj, (int)D, 1.0f,
                  x + (size_t)i0 * D, (int)D, x + (size_t)j0 * D, (int)D, 0.0f, dots, bj);
      for (int i = 0; i < bi; i++)
        for (int j = 0; j < bj; j++) {
          if (i0 + i >= j0 + j) continue;
          double d2 = norms[i0 + i] + norms[j0 + j] - 2.0 * dots[(size_t)i * bj + j];
          if (d2 > best) {
            best = d2;
            best_i = i0 + i;
            best_j = j0 + j;
          }
        }
    }
  }
  *sigma_max = exact_distance(D, x + (size_t)best_i * D, x + (size_t)best_j * D);
  free(norms);
  free(dots);
  return SDE_OK;
}

static double std_normal_cdf(double v) { return 0.5 * erfc(-v / sqrt(2.0)); }

/* Φ(√(2D)(γ-1) + 3γ) - Φ(√(2D)(γ-1) - 3γ): decreasing in γ from ≈0.997 at γ = 1. */
static double gamma_criterion(int64_t D, double gamma) {
  double c = sqrt(2.0 * (double)D) * (gamma - 1.0);
  return std_normal_cdf(c + 3.0 * gamma) - std_normal_cdf(c - 3.0 * gamma);
}

double sde_plan_gamma(int64_t D, double target) {
  if (D < 1 || !(target > 0.0 && target < gamma_criterion(D, 1.0))) return NAN;
  double lo = 1.0, hi = 2.0;
  while (gamma_criterion(D, hi) > target && hi < 1e6) hi *= 2.0;
  for (int it = 0; it < 200; it++) {
    double mid = 0.5 * (lo + hi);
    if (gamma_criterion(D, mid) > target) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

int sde_plan_num_scales(double sigma_1, double sigma_L, double gamma) {
  if (!(sigma_1 > sigma_L && sigma_L > 0.0 && gamma > 1.0)) return 0;
  double L = ceil(log(sigma_1 / sigma_L) / log(gamma) - 1e-9) + 1.0;
  return L > 1e7 ? 0 : (int)L;
}

double sde_plan_step_ratio(double eps, int T, double gamma, double sigma_L) {
  const double s2 = sigma_L * sigma_L;
  const double decay = 1.0 - eps / s2;
  const double fixed = 2.0 * eps / (s2 - s2 * decay * decay);
  return pow(decay, 2.0 * T) * (gamma * gamma - fixed) + fixed;
}

/* |ratio - 1| is unimodal in log eps on (0, sigma_L²): scan a log grid, then refine by
 * golden-section search around the best grid point. */
double sde_plan_step_size(int T, double gamma, double sigma_L) {
  if (T < 1 || !(gamma > 1.0) || !(sigma_L > 0.0)) return NAN;
  const double lo = log(sigma_L * sigma_L * 1e-8), hi = log(sigma_L * sigma_L * (1.0 - 1e-9));
  const int grid = 2000;
  int best = 0;
  double best_err = INFINITY;
  for (int k = 0; k <= grid; k++) {
    double e = exp(lo + (hi - lo) * k / grid);
    double err = fabs(sde_plan_step_ratio(e, T, gamma, sigma_L) - 1.0);
    if (err < best_err) {
      best_err = err;
      best = k;
    }
  }
  double a = lo + (hi - lo) * (best > 0 ? best - 1 : 0) / grid;
  double b = lo + (hi - lo) * (best < grid ? best + 1 : grid) / grid;
  const double phi = 0.5 * (sqrt(5.0) - 1.0);
  for (int it = 0; it < 100; it++) {
    double c = b - phi * (b - a), d = a + phi * (b - a);
    double fc = fabs(sde_plan_step_ratio(exp(c), T, gamma, sigma_L) - 1.0);
    double fd = fabs(sde_plan_step_ratio(exp(d), T, gamma, sigma_L) - 1.0);
    if (fc < fd) b = d;
    else a = c;
  }
  return exp(0.5 * (a + b));
}
