/* Analytic score models: the diagonal Gaussian mixture and the empirical-data model.
 *
 * Under every SDE here the marginal of x(0) ~ Σ_k w_k N(μ_k, diag(v_k)) at time t is
 * Σ_k w_k N(m μ_k, diag(m² v_k + std²)) with (m, std) = sde_marginal(t), so the score,
 * its divergence and its Jacobian are exact. The empirical model is the same mixture
 * with one zero-variance component per training image. All arithmetic is in double. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "parallel.h"
#include "scoresde/error.h"
#include "scoresde/model.h"
#include "scoresde/rng.h"

typedef struct {
  int K;          /* components */
  int64_t D;      /* dimension */
  double *w;      /* [K] normalised weights */
  double *log_w;  /* [K] */
  double *means;  /* [K,D] */
  double *vars;   /* [K,D] variances at t = 0, or NULL when all are 0 (empirical model) */
  double *sq_norms; /* [K] |μ_k|², for the empirical model's GEMM path */
} gmm;

/* The noised mixture at one time: var_kd = m² v_kd + std². Rebuilt whenever the time
 * changes; the per-sample work then needs no logarithms or divisions. */
typedef struct {
  double t;         /* time the table holds (NAN = none yet) */
  double m, s2;     /* marginal mean coefficient and std² */
  double *inv_var;  /* [K,D] 1/var, NULL for the isotropic (empirical) model */
  double *log_norm; /* [K] log w_k - ½ Σ_d log(2π var_kd) */
  double *trace;    /* [K] Σ_d 1/var_kd */
} gmm_table;

/* Σ_d log(x_d) with one log per 8 factors (the factors stay far from over/underflow). */
static double sum_log(const double *x, int64_t D) {
  double total = 0.0;
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    double prod = 1.0;
    int safe = 1;
    for (int j = 0; j < 8; j++) {
      prod *= x[d + j];
      safe &= x[d + j] > 1e-30 && x[d + j] < 1e30;
    }
    if (safe) {
      total += log(prod);
    } else {
      for (int j = 0; j < 8; j++) total += log(x[d + j]);
    }
  }
  for (; d < D; d++) total += log(x[d]);
  return total;
}

static void gmm_table_build(const gmm *g, const sde_sde *sde, double t, gmm_table *tab,
                            double *var_scratch) {
  const int64_t D = g->D;
  double std;
  sde_marginal(sde, t, &tab->m, &std);
  tab->t = t;
  tab->s2 = std * std;
  const double m2 = tab->m * tab->m, s2 = tab->s2;
  for (int k = 0; k < g->K; k++) {
    if (tab->inv_var) {
      const double *v = g->vars + (size_t)k * D;
      double *iv = tab->inv_var + (size_t)k * D, trace = 0.0;
      for (int64_t d = 0; d < D; d++) {
        var_scratch[d] = m2 * v[d] + s2;
        iv[d] = 1.0 / var_scratch[d];
        trace += iv[d];
      }
      tab->trace[k] = trace;
      tab->log_norm[k] = g->log_w[k] - 0.5 * (sum_log(var_scratch, D) + (double)D * log(2.0 * M_PI));
    } else {
      tab->trace[k] = (double)D / s2;
      tab->log_norm[k] = g->log_w[k] - 0.5 * (double)D * log(2.0 * M_PI * s2);
    }
  }
}

#define GMM_LANES 4

/* Posterior r[K] of each component for x[D]; returns log p(x). Also fills
 * g2[K] = ||g_k||² where g_k = -(x - m μ_k)/var_k is component k's score. */
__attribute__((target_clones("avx2", "default"))) static double
gmm_posterior(const gmm *g, const gmm_table *tab, const float *x, double *r, double *g2) {
  const int64_t D = g->D;
  const double m = tab->m;
  double best = -INFINITY;
  for (int k = 0; k < g->K; k++) {
    const double *mu = g->means + (size_t)k * D;
    /* GMM_LANES partial sums in a fixed order: the sums are latency-bound otherwise, and
     * the lanes vectorise (the same bits in every clone: no FMA is contracted) */
    double quad_l[GMM_LANES] = {0}, sq_l[GMM_LANES] = {0}, quad = 0.0, sq = 0.0;
    const double *iv = tab->inv_var ? tab->inv_var + (size_t)k * D : NULL;
    int64_t d = 0;
    for (; d + GMM_LANES <= D; d += GMM_LANES)
      for (int l = 0; l < GMM_LANES; l++) {
        double diff = (double)x[d + l] - m * mu[d + l], z = iv ? diff * iv[d + l] : diff;
        quad_l[l] += z * diff;
        sq_l[l] += z * z;
      }
    for (; d < D; d++) {
      double diff = (double)x[d] - m * mu[d], z = iv ? diff * iv[d] : diff;
      quad_l[0] += z * diff;
      sq_l[0] += z * z;
    }
    for (int l = 0; l < GMM_LANES; l++) {
      quad += quad_l[l];
      sq += sq_l[l];
    }
    if (!iv) { /* isotropic: z = diff / s2 */
      sq = quad / (tab->s2 * tab->s2);
      quad /= tab->s2;
    }
    r[k] = tab->log_norm[k] - 0.5 * quad;
    g2[k] = sq;
    if (r[k] > best) best = r[k];
  }
  double total = 0.0;
  for (int k = 0; k < g->K; k++) {
    r[k] = exp(r[k] - best);
    total += r[k];
  }
  for (int k = 0; k < g->K; k++) r[k] /= total;
  return best + log(total);
}

/* Components whose posterior is below this contribute less than double rounding. */
#define GMM_NEGLIGIBLE 1e-18

static inline double gmm_inv_var(const gmm_table *tab, int k, int64_t D, int64_t d) {
  return tab->inv_var ? tab->inv_var[(size_t)k * D + d] : 1.0 / tab->s2;
}

/* acc[D] = Σ_k r_k g_k, the score. */
__attribute__((target_clones("avx2", "default"))) static void
gmm_score_one(const gmm *g, const gmm_table *tab, const float *x, const double *r, double *acc) {
  const int64_t D = g->D;
  memset(acc, 0, sizeof(double) * (size_t)D);
  for (int k = 0; k < g->K; k++) {
    if (r[k] < GMM_NEGLIGIBLE) continue;
    const double *mu = g->means + (size_t)k * D, m = tab->m, rk = r[k];
    if (tab->inv_var) {
      const double *iv = tab->inv_var + (size_t)k * D;
      for (int64_t d = 0; d < D; d++) acc[d] -= rk * ((double)x[d] - m * mu[d]) * iv[d];
    } else {
      const double iv = 1.0 / tab->s2;
      for (int64_t d = 0; d < D; d++) acc[d] -= rk * ((double)x[d] - m * mu[d]) * iv;
    }
  }
}

/* What gmm_samples computes for each sample. */
typedef enum { GMM_SCORE, GMM_DIV, GMM_VJP, GMM_LOGP, GMM_CLASSIFY } gmm_what;

typedef struct {
  const gmm *g;
  const sde_sde *sde;
  gmm_what what;
  const float *x, *t, *v; /* samples [n, D], times [n], VJP vectors [n, D] */
  float *out;             /* score or VJP [n, D] */
  double *val;            /* divergence or log p [n] */
  int *comp;              /* classification [n] */
  atomic_int fail;        /* a range could not allocate its scratch */
} gmm_job;

/* ∇·s = Σ_k r_k (||g_k||² - tr Σ_k⁻¹) - ||s||² */
static double gmm_div_one(const gmm *g, const gmm_table *tab, const double *r,
                          const double *g2, const double *acc) {
  double sum = 0.0, s_norm = 0.0;
  for (int k = 0; k < g->K; k++) sum += r[k] * (g2[k] - tab->trace[k]);
  for (int64_t d = 0; d < g->D; d++) s_norm += acc[d] * acc[d];
  return sum - s_norm;
}

/* J v = Σ_k r_k (-v / var_k + g_k ((g_k - s)·v)); J is symmetric so vᵀJ = Jv. */
static void gmm_vjp_one(const gmm *g, const gmm_table *tab, const float *xi, const float *vi,
                        const double *r, const double *acc, double *prod) {
  const int64_t D = g->D;
  memset(prod, 0, sizeof(double) * (size_t)D);
  for (int k = 0; k < g->K; k++) {
    if (r[k] < GMM_NEGLIGIBLE) continue;
    const double *mu = g->means + (size_t)k * D;
    double dot = 0.0;
    for (int64_t d = 0; d < D; d++) {
      double gk = -((double)xi[d] - tab->m * mu[d]) * gmm_inv_var(tab, k, D, d);
      dot += (gk - acc[d]) * vi[d];
    }
    for (int64_t d = 0; d < D; d++) {
      double iv = gmm_inv_var(tab, k, D, d);
      double gk = -((double)xi[d] - tab->m * mu[d]) * iv;
      prod[d] += r[k] * (-(double)vi[d] * iv + gk * dot);
    }
  }
}

/* Sample i with the table at its time; r[K], g2[K], acc[D], prod[D] are scratch. */
static void gmm_sample(const gmm_job *j, const gmm_table *tab, int64_t i, double *r,
                       double *g2, double *acc, double *prod) {
  const gmm *g = j->g;
  const int64_t D = g->D;
  const float *xi = j->x + (size_t)i * D;
  double logp = gmm_posterior(g, tab, xi, r, g2);
  if (j->what == GMM_LOGP) {
    j->val[i] = logp;
    return;
  }
  if (j->what == GMM_CLASSIFY) {
    int best = 0;
    for (int k = 1; k < g->K; k++)
      if (r[k] > r[best]) best = k;
    j->comp[i] = best;
    return;
  }
  gmm_score_one(g, tab, xi, r, acc);
  if (j->what == GMM_SCORE) {
    for (int64_t d = 0; d < D; d++) j->out[(size_t)i * D + d] = (float)acc[d];
  } else if (j->what == GMM_DIV) {
    j->val[i] = gmm_div_one(g, tab, r, g2, acc);
  } else {
    gmm_vjp_one(g, tab, xi, j->v + (size_t)i * D, r, acc, prod);
    for (int64_t d = 0; d < D; d++) j->out[(size_t)i * D + d] = (float)prod[d];
  }
}

/* Samples [i0, i1), with scratch and a table for the current time, rebuilt only when the
 * time changes (tables for equal times are equal, so results do not depend on the split). */
static void gmm_samples(void *ctx, int64_t i0, int64_t i1) {
  gmm_job *j = ctx;
  const gmm *g = j->g;
  const size_t K = (size_t)g->K, D = (size_t)g->D, kd = g->vars ? K * D : 0;
  double *scratch = malloc(sizeof(double) * (4 * K + 3 * D + kd));
  if (!scratch) {
    atomic_store(&j->fail, 1);
    return;
  }
  gmm_table tab = {.t = NAN, .log_norm = scratch, .trace = scratch + K,
                   .inv_var = kd ? scratch + 4 * K + 3 * D : NULL};
  double *r = scratch + 2 * K, *g2 = r + K, *acc = g2 + K, *prod = acc + D;
  for (int64_t i = i0; i < i1; i++) {
    if ((double)j->t[i] != tab.t) gmm_table_build(g, j->sde, (double)j->t[i], &tab, prod + D);
    gmm_sample(j, &tab, i, r, g2, acc, prod);
  }
  free(scratch);
}

/* Runs `what` for every sample in parallel; returns SDE_ENOMEM without a message. */
static int gmm_run(gmm_job *j, int n) {
  atomic_init(&j->fail, 0);
  sde_parallel_for(n, 1, gmm_samples, j);
  return atomic_load(&j->fail) ? SDE_ENOMEM : SDE_OK;
}

static int gmm_check(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                     const float *t) {
  if (!mdl || !sde || n < 0 || (n > 0 && (!x || !t)))
    return sde_fail(SDE_EINVAL, "gmm: bad arguments");
  return SDE_OK;
}

static int gmm_score(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                     const float *t, float *out) {
  int status = gmm_check(mdl, sde, n, x, t);
  if (status) return status;
  gmm_job j = {.g = mdl->impl, .sde = sde, .what = GMM_SCORE, .x = x, .t = t, .out = out};
  if (gmm_run(&j, n)) return sde_fail(SDE_ENOMEM, "gmm: out of memory for scratch");
  return SDE_OK;
}

static int gmm_score_div(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                         const float *t, double *div) {
  int status = gmm_check(mdl, sde, n, x, t);
  if (status) return status;
  gmm_job j = {.g = mdl->impl, .sde = sde, .what = GMM_DIV, .x = x, .t = t, .val = div};
  if (gmm_run(&j, n)) return sde_fail(SDE_ENOMEM, "gmm: out of memory for scratch");
  return SDE_OK;
}

static int gmm_score_vjp(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                         const float *t, const float *v, float *out) {
  int status = gmm_check(mdl, sde, n, x, t);
  if (status) return status;
  if (n > 0 && (!v || !out)) return sde_fail(SDE_EINVAL, "gmm: bad arguments");
  gmm_job j = {.g = mdl->impl, .sde = sde, .what = GMM_VJP, .x = x, .t = t, .v = v, .out = out};
  if (gmm_run(&j, n)) return sde_fail(SDE_ENOMEM, "gmm: out of memory for scratch");
  return SDE_OK;
}

/* The empirical model (equal isotropic components) by GEMM: with d_ik = x_i·y_k,
 *   |x_i - m y_k|² = |x_i|² - 2 m d_ik + m² |y_k|²,   s_i = (m Σ_k r_ik y_k - x_i) / std²,
 * so a batch costs two matrix products. In double: at small std the logits are
 * |x - m y|²/(2 std²) and float rounding of the expanded form would swamp them. */
#define EMPIRICAL_BLOCK 64

#if defined(OPENBLAS_VERSION)
static pthread_once_t empirical_blas_once = PTHREAD_ONCE_INIT;
/* We parallelise over sample blocks ourselves; OpenBLAS's pool would fight us. */
static void empirical_blas_single_thread(void) { openblas_set_num_threads(1); }
#endif

typedef struct {
  const gmm *g;
  const sde_sde *sde;
  int n, block;
  const float *x, *t;
  float *score;   /* [n, D] or NULL */
  double *div;    /* [n] or NULL */
  atomic_int fail;
} empirical_job;

/* Samples [b0, b0 + bn) with scratch xd[bn, D], mix[bn, D], dots[bn, K] */
static void empirical_block(const empirical_job *j, int b0, int bn, double *xd, double *mix,
                            double *dots) {
  const gmm *g = j->g;
  const int K = g->K;
  const int64_t D = g->D;
  for (int64_t e = 0; e < (int64_t)bn * D; e++) xd[e] = j->x[(size_t)b0 * D + e];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bn, K, (int)D, 1.0, xd, (int)D,
              g->means, (int)D, 0.0, dots, K);
  for (int i = 0; i < bn; i++) {
    double m, std;
    sde_marginal(j->sde, (double)j->t[b0 + i], &m, &std);
    const double s2 = std * std;
    const double *xi = xd + (size_t)i * D;
    double x2 = 0.0;
    for (int64_t d = 0; d < D; d++) x2 += xi[d] * xi[d];
    double *r = dots + (size_t)i * K, best = -INFINITY;
    for (int k = 0; k < K; k++) {
      double dist2 = fmax(x2 - 2.0 * m * r[k] + m * m * g->sq_norms[k], 0.0);
      r[k] = g->log_w[k] - 0.5 * dist2 / s2; /* the common normaliser cancels */
      best = fmax(best, r[k]);
    }
    double total = 0.0;
    for (int k = 0; k < K; k++) total += (r[k] = exp(r[k] - best));
    for (int k = 0; k < K; k++) r[k] /= total;
  }
  /* mix = R Y: the posterior mean of the clean image, per sample */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bn, (int)D, K, 1.0, dots, K,
              g->means, (int)D, 0.0, mix, (int)D);
  for (int i = 0; i < bn; i++) {
    double m, std;
    sde_marginal(j->sde, (double)j->t[b0 + i], &m, &std);
    const double s2 = std * std;
    const double *xi = xd + (size_t)i * D, *yi = mix + (size_t)i * D;
    double s_norm = 0.0;
    for (int64_t d = 0; d < D; d++) {
      double sd = (m * yi[d] - xi[d]) / s2;
      if (j->score) j->score[(size_t)(b0 + i) * D + d] = (float)sd;
      s_norm += sd * sd;
    }
    if (j->div) {
      /* ∇·s = Σ_k r_k |g_k|² - D/s2 - |s|², with |g_k|² = |x - m y_k|²/s2² */
      double sum = 0.0;
      const double *r = dots + (size_t)i * K;
      for (int k = 0; k < K; k++) {
        if (r[k] < GMM_NEGLIGIBLE) continue;
        const double *yk = g->means + (size_t)k * D;
        double dist2 = 0.0;
        for (int64_t d = 0; d < D; d++) {
          double diff = xi[d] - m * yk[d];
          dist2 += diff * diff;
        }
        sum += r[k] * dist2 / (s2 * s2);
      }
      j->div[b0 + i] = sum - (double)D / s2 - s_norm;
    }
  }
}

static void empirical_blocks(void *ctx, int64_t k0, int64_t k1) {
  empirical_job *j = ctx;
  double *xd = malloc(sizeof(double) * EMPIRICAL_BLOCK * (size_t)j->g->D);
  double *mix = malloc(sizeof(double) * EMPIRICAL_BLOCK * (size_t)j->g->D);
  double *dots = malloc(sizeof(double) * EMPIRICAL_BLOCK * (size_t)j->g->K);
  if (!xd || !mix || !dots) {
    atomic_store(&j->fail, 1);
  } else {
    for (int64_t k = k0; k < k1; k++) {
      int b0 = (int)k * j->block, bn = j->n - b0 < j->block ? j->n - b0 : j->block;
      empirical_block(j, b0, bn, xd, mix, dots);
    }
  }
  free(xd);
  free(mix);
  free(dots);
}

static int empirical_eval(const gmm *g, const sde_sde *sde, int n, const float *x, const float *t,
                          float *score, double *div) {
#if defined(OPENBLAS_VERSION)
  pthread_once(&empirical_blas_once, empirical_blas_single_thread);
#endif
  /* Small batches are split so every thread gets a share. Each sample's arithmetic is
   * the same in any block, so the result does not depend on the split. */
  const int threads = sde_parallel_threads();
  int block = (n + threads - 1) / threads;
  if (block > EMPIRICAL_BLOCK) block = EMPIRICAL_BLOCK;
  if (block < 1) block = 1;
  empirical_job j = {g, sde, n, block, x, t, score, div, 0};
  sde_parallel_for((n + block - 1) / block, 1, empirical_blocks, &j);
  return atomic_load(&j.fail) ? sde_fail(SDE_ENOMEM, "empirical model: out of memory for a batch")
                              : SDE_OK;
}

static int empirical_score(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                           const float *t, float *out) {
  int status = gmm_check(mdl, sde, n, x, t);
  return status ? status : empirical_eval(mdl->impl, sde, n, x, t, out, NULL);
}

static int empirical_score_div(const sde_model *mdl, const sde_sde *sde, int n, const float *x,
                               const float *t, double *div) {
  int status = gmm_check(mdl, sde, n, x, t);
  return status ? status : empirical_eval(mdl->impl, sde, n, x, t, NULL, div);
}

static void gmm_destroy(sde_model *mdl) {
  gmm *g = mdl->impl;
  if (g) {
    free(g->w);
    free(g->log_w);
    free(g->means);
    free(g->vars);
    free(g->sq_norms);
    free(g);
  }
  free(mdl);
}

static const sde_model_ops gmm_ops = {
    .kind = "gmm",
    .score = gmm_score,
    .score_div = gmm_score_div,
    .score_vjp = gmm_score_vjp,
    .destroy = gmm_destroy,
};

static const sde_model_ops empirical_ops = {
    .kind = "empirical",
    .score = empirical_score,
    .score_div = empirical_score_div,
    .score_vjp = gmm_score_vjp,
    .destroy = gmm_destroy,
};

/* FNV-1a over bytes, continuing from h. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

static void gmm_set_id(sde_model *mdl, const gmm *g) {
  uint64_t h1 = 0xcbf29ce484222325ULL, h2 = 0x84222325cbf29ce4ULL;
  const size_t kd = (size_t)g->K * (size_t)g->D;
  h1 = fnv1a(h1, mdl->ops->kind, strlen(mdl->ops->kind));
  h1 = fnv1a(h1, g->w, sizeof(double) * (size_t)g->K);
  h1 = fnv1a(h1, g->means, sizeof(double) * kd);
  h2 = fnv1a(h2, g->means, sizeof(double) * kd);
  if (g->vars) h2 = fnv1a(h2, g->vars, sizeof(double) * kd);
  h2 = fnv1a(h2, &g->D, sizeof g->D);
  snprintf(mdl->id, sizeof mdl->id, "%016llx%016llx", (unsigned long long)h1,
           (unsigned long long)h2);
}

static int gmm_alloc(int K, int64_t D, int with_vars, sde_model **out_model, gmm **out_g) {
  if (K < 1 || D < 1 || (double)K * (double)D > 2e9)
    return sde_fail(SDE_EINVAL, "mixture: need K >= 1 components and D >= 1 dimensions (K=%d, D=%lld)",
                    K, (long long)D);
  sde_model *mdl = sde_calloc(1, sizeof *mdl);
  gmm *g = sde_calloc(1, sizeof *g);
  if (!mdl || !g) {
    free(mdl);
    free(g);
    return SDE_ENOMEM;
  }
  g->K = K;
  g->D = D;
  g->w = sde_malloc(sizeof(double) * (size_t)K);
  g->log_w = sde_malloc(sizeof(double) * (size_t)K);
  g->means = sde_malloc(sizeof(double) * (size_t)K * (size_t)D);
  if (with_vars) g->vars = sde_malloc(sizeof(double) * (size_t)K * (size_t)D);
  mdl->impl = g;
  mdl->ops = &gmm_ops;
  if (!g->w || !g->log_w || !g->means || (with_vars && !g->vars)) {
    gmm_destroy(mdl);
    return SDE_ENOMEM;
  }
  mdl->channels = 1;
  mdl->height = 1;
  mdl->width = (int)D;
  *out_model = mdl;
  *out_g = g;
  return SDE_OK;
}

int sde_gmm_create(int K, int64_t D, const double *weights, const double *means,
                   const double *stds, sde_model **out) {
  if (!out || !weights || !means || !stds) return sde_fail(SDE_EINVAL, "gmm: missing arguments");
  if (D > INT32_MAX) return sde_fail(SDE_EINVAL, "gmm: dimension too large");
  double total = 0.0;
  for (int k = 0; k < K; k++) {
    if (!(weights[k] >= 0.0) || !isfinite(weights[k]))
      return sde_fail(SDE_EINVAL, "gmm: weight %d is %g; weights must be finite and >= 0", k,
                      weights[k]);
    total += weights[k];
  }
  if (K >= 1 && !(total > 0.0)) return sde_fail(SDE_EINVAL, "gmm: weights sum to zero");
  /* w / total would be 0 for every weight: log 0, then NaN scores */
  if (!isfinite(total))
    return sde_fail(SDE_EINVAL, "gmm: the weights sum to %g (overflow); scale them down, only "
                    "their ratios matter", total);
  /* samples are float32: larger means or stds cannot be sampled, and their squares
   * (variances, distances) must stay finite in double */
  for (int64_t i = 0; i < (int64_t)K * D; i++) {
    if (!(fabs(means[i]) <= FLT_MAX))
      return sde_fail(SDE_EINVAL, "gmm: mean entry %lld is %g; means must be finite in float32",
                      (long long)i, means[i]);
    if (!(stds[i] >= 0.0 && stds[i] <= FLT_MAX))
      return sde_fail(SDE_EINVAL, "gmm: std entry %lld is %g; stds must be >= 0 and finite in "
                      "float32", (long long)i, stds[i]);
  }
  sde_model *mdl;
  gmm *g;
  int status = gmm_alloc(K, D, 1, &mdl, &g);
  if (status) return status;
  for (int k = 0; k < K; k++) {
    g->w[k] = weights[k] / total;
    g->log_w[k] = log(g->w[k]);
  }
  memcpy(g->means, means, sizeof(double) * (size_t)K * (size_t)D);
  for (int64_t i = 0; i < (int64_t)K * D; i++) g->vars[i] = stds[i] * stds[i];
  gmm_set_id(mdl, g);
  *out = mdl;
  return SDE_OK;
}

int sde_empirical_create(int M, int channels, int height, int width, const float *data,
                         int centered, sde_model **out) {
  if (!out || !data) return sde_fail(SDE_EINVAL, "empirical model: missing arguments");
  if (channels < 1 || height < 1 || width < 1)
    return sde_fail(SDE_EINVAL, "empirical model: bad sample shape %dx%dx%d", channels, height, width);
  const int64_t D = (int64_t)channels * height * width;
  sde_model *mdl;
  gmm *g;
  int status = gmm_alloc(M, D, 0, &mdl, &g);
  if (status) return sde_fail_context(status, "empirical model");
  for (int k = 0; k < M; k++) {
    g->w[k] = 1.0 / M;
    g->log_w[k] = -log((double)M);
  }
  g->sq_norms = sde_calloc((size_t)M, sizeof(double));
  if (!g->sq_norms) {
    gmm_destroy(mdl);
    return SDE_ENOMEM;
  }
  for (int64_t i = 0; i < (int64_t)M * D; i++) {
    g->sq_norms[i / D] += (double)data[i] * data[i];
    if (!isfinite(data[i])) {
      gmm_destroy(mdl);
      return sde_fail(SDE_EINVAL, "empirical model: data entry %lld is not finite", (long long)i);
    }
    g->means[i] = data[i];
  }
  mdl->ops = &empirical_ops;
  mdl->channels = channels;
  mdl->height = height;
  mdl->width = width;
  mdl->centered = centered;
  gmm_set_id(mdl, g);
  *out = mdl;
  return SDE_OK;
}

static int is_mixture(const sde_model *m) {
  return m && (m->ops == &gmm_ops || m->ops == &empirical_ops);
}

int sde_gmm_logp(const sde_model *mdl, const sde_sde *sde, int n, const float *x, const float *t,
                 double *logp) {
  if (!is_mixture(mdl)) return sde_fail(SDE_EINVAL, "not a mixture model");
  int status = gmm_check(mdl, sde, n, x, t);
  if (status) return status;
  gmm_job j = {.g = mdl->impl, .sde = sde, .what = GMM_LOGP, .x = x, .t = t, .val = logp};
  if (gmm_run(&j, n)) return sde_fail(SDE_ENOMEM, "gmm: out of memory for scratch");
  return SDE_OK;
}

int sde_gmm_classify(const sde_model *mdl, const sde_sde *sde, int n, const float *x, double t,
                     int *comp) {
  if (!is_mixture(mdl)) return sde_fail(SDE_EINVAL, "not a mixture model");
  float *tv = sde_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  if (!tv) return SDE_ENOMEM;
  for (int i = 0; i < n; i++) tv[i] = (float)t;
  int status = gmm_check(mdl, sde, n, x, tv);
  gmm_job j = {.g = mdl->impl, .sde = sde, .what = GMM_CLASSIFY, .x = x, .t = tv, .comp = comp};
  if (!status) status = gmm_run(&j, n);
  free(tv);
  return status ? sde_fail(status, "gmm: classification failed") : SDE_OK;
}

typedef struct {
  const gmm *g;
  double m, std;
  uint64_t seed, stream0;
  float *x;
  int *comp;
} draw_job;

/* Exact draws i in [i0, i1): component from stream (seed, stream0 + i) step 0, noise step 1 */
static void gmm_draws(void *ctx, int64_t i0, int64_t i1) {
  const draw_job *j = ctx;
  const gmm *g = j->g;
  const double m = j->m, std = j->std;
  for (int64_t i = i0; i < i1; i++) {
    float u;
    float *xi = j->x + (size_t)i * g->D;
    sde_randu(j->seed, j->stream0 + (uint64_t)i, 0, &u, 1);
    int k = 0;
    double cum = g->w[0];
    while (k < g->K - 1 && (double)u >= cum) cum += g->w[++k];
    sde_randn(j->seed, j->stream0 + (uint64_t)i, 1, xi, g->D);
    const double *mu = g->means + (size_t)k * g->D;
    for (int64_t d = 0; d < g->D; d++) {
      double var = (g->vars ? m * m * g->vars[(size_t)k * g->D + d] : 0.0) + std * std;
      xi[d] = (float)(m * mu[d] + sqrt(var) * xi[d]);
    }
    if (j->comp) j->comp[i] = k;
  }
}

int sde_gmm_sample(const sde_model *mdl, const sde_sde *sde, double t, int n, uint64_t seed,
                   uint64_t stream0, float *x, int *comp) {
  if (!is_mixture(mdl)) return sde_fail(SDE_EINVAL, "not a mixture model");
  draw_job j = {.g = mdl->impl, .seed = seed, .stream0 = stream0, .x = x, .comp = comp};
  sde_marginal(sde, t, &j.m, &j.std);
  sde_parallel_for(n, 1, gmm_draws, &j);
  return SDE_OK;
}

int sde_gmm_num_components(const sde_model *m) {
  return is_mixture(m) ? ((const gmm *)m->impl)->K : 0;
}
const double *sde_gmm_weights(const sde_model *m) {
  return is_mixture(m) ? ((const gmm *)m->impl)->w : NULL;
}
const double *sde_gmm_means(const sde_model *m) {
  return is_mixture(m) ? ((const gmm *)m->impl)->means : NULL;
}
const double *sde_gmm_vars(const sde_model *m) {
  return is_mixture(m) ? ((const gmm *)m->impl)->vars : NULL;
}
