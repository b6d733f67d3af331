/* Few-step solvers in the data-prediction form: ddim, dpmpp-2m, dpmpp-3m, dpmpp-2m-sde
 * and heun (docs/sampling.md has the formulas and the choices).
 *
 * Every solver works on x0(x, t) = (x + sigma_t² s(x, t)) / alpha_t, the model's data
 * prediction, and on the log-SNR lambda_t = log(alpha_t / sigma_t) (marginal.h). With
 * h = lambda_t - lambda_s the probability-flow ODE has the exact solution
 *   x_t = (sigma_t/sigma_s) x_s + alpha_t ∫_0^h e^{u-h} x0(lambda_s + u) du,
 * and the reverse SDE
 *   x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t ∫_0^h 2e^{2(u-h)} x0(lambda_s + u) du
 *         + sigma_t sqrt(1 - e^{-2h}) z.
 * The multistep solvers replace x0 by the polynomial through the last k predictions and
 * integrate it against the kernel (order k = 1: ddim, 2: dpmpp-2m, 3: dpmpp-3m;
 * dpmpp-2m-sde: the SDE form with k = 2; see multistep_weights). heun is Karras et al.'s second-order method on x/alpha against
 * sigma/alpha = e^{-lambda}, with optional churn.
 *
 * The loops run on sampler rows (sample_rows.c): the same code on the CPU and on a
 * device. steps counts network evaluations (heun: see fs_points). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "sample_internal.h"
#include "scoresde/error.h"
#include "scoresde/marginal.h"
#include "scoresde/scoresde.h"

#define KARRAS_RHO 7.0
#define LOWER_ORDER_BELOW 15 /* lower_order_final applies to runs of fewer steps */
/* With the final data prediction, the grid ends at sigma/alpha = 0.01 (or the SDE's own
 * end, if noisier): where the VE and VP reference configs end, about one 8-bit level of
 * data in [-1, 1]. sub-VP at eps = 1e-3 reaches 1e-4; uniform in log-SNR, a third of a
 * 20-step budget went below 0.01, where samples move by less than that
 * (docs/sampling.md#the-grids-end). */
#define FINAL_NOISE_RATIO 0.01

typedef struct {
  sde_rows rows;
  const sde_sample_params *p;
  uint64_t stream0;
  uint32_t draw;              /* next noise draw id */
  sde_x0_constraint_fn constrain;
  void *ctx;
  float *host;                /* [n, D] host copy for the constraint and the clip (device
                               * rows only) */
  float lo, hi;               /* the data range of p->clip_denoised */
  float *x, *s, *z, *xe;      /* [n, D] rows: state, score, noise, Heun's Euler point */
  float *x0[3];               /* data predictions, newest first */
  double lam[3];              /* their log-SNRs */
  int done, total;            /* evaluations, for progress */
} fs_run;

/* ---- time grids ------------------------------------------------------------------------ */

/* The grid t[npts] from t_hi down to t_lo (t[0] = t_hi, t[npts-1] = t_lo): uniform in
 * log-SNR, in time, or in sigma/alpha^(1/rho) (Karras). Times are rounded to float, the
 * precision the model sees, so solver and model agree on every time. */
static void fs_grid(const sde_sde *sde, sde_schedule sched, double t_hi, double t_lo, int npts,
                    double *t) {
  const double l_hi = sde_marg_at(sde, t_hi).lambda, l_lo = sde_marg_at(sde, t_lo).lambda;
  const double r_hi = exp(-l_hi / KARRAS_RHO), r_lo = exp(-l_lo / KARRAS_RHO);
  for (int i = 0; i < npts; i++) {
    const double f = npts > 1 ? (double)i / (npts - 1) : 0.0;
    double ti;
    if (i == 0) ti = t_hi;
    else if (i == npts - 1) ti = t_lo;
    else if (sched == SDE_SCHEDULE_TIME) ti = t_hi + (t_lo - t_hi) * f;
    else if (sched == SDE_SCHEDULE_LOGSNR) ti = sde_marg_time(sde, l_hi + (l_lo - l_hi) * f);
    else ti = sde_marg_time(sde, -KARRAS_RHO * log(r_hi + (r_lo - r_hi) * f));
    t[i] = (float)ti;
  }
}

/* Grid points for N evaluations. Multistep: N points and a final data prediction
 * (denoise), or N + 1 points. heun: m steps of two evaluations on m + 1 points, m = N/2
 * with the final prediction (N or N + 1 evaluations), else (N+1)/2. */
static int fs_points(const sde_sample_params *p, int denoise) {
  const int N = p->steps > 0 ? p->steps : SDE_FEWSTEP_DEFAULT_STEPS;
  if (p->sampler == SDE_SAMPLER_HEUN) return (denoise ? N / 2 : (N + 1) / 2) + 1;
  return denoise ? N : N + 1;
}

/* ---- exponential-integrator weights ---------------------------------------------------- */

/* M[p] = ∫_0^h u^p e^{u-h} du, p = 0, 1, 2 (h of either sign). */
static void exp_moments(double h, double M[3]) {
  if (fabs(h) >= 0.5) {
    const double e = expm1(-h);
    M[0] = -e;
    M[1] = h + e;
    M[2] = h * h - 2.0 * h - 2.0 * e;
    return;
  }
  /* small |h|: e^{-h} Σ_n h^{n+p+1} / (n! (n+p+1)), no cancellation */
  for (int p = 0; p < 3; p++) {
    double hp = pow(h, p + 1), f = 1.0, sum = 0.0;
    for (int n = 0; n < 24; n++) {
      sum += hp * f / (n + p + 1);
      f *= h / (n + 1);
    }
    M[p] = exp(-h) * sum;
  }
}

/* Moments of the solver's kernel: e^{u-h} (ODE) or 2e^{2(u-h)} (SDE, = 2^-p M_p(2h)). */
static void kernel_moments(double h, int sde, double M[3]) {
  exp_moments(sde ? 2.0 * h : h, M);
  if (sde) {
    M[1] *= 0.5;
    M[2] *= 0.25;
  }
}

/* w[j] = ∫_0^h K(u) L_j(u) du for the Lagrange basis L_j on the nodes u[0..k) (u[0] = 0):
 * the weight of the prediction at u[j] when their interpolating polynomial is integrated
 * exactly against the kernel, given its moments M. */
static void lagrange_weights(int k, const double *u, const double *M, double *w) {
  for (int j = 0; j < k; j++) {
    double c[3] = {1.0, 0.0, 0.0}, den = 1.0; /* L_j = (c0 + c1 u + c2 u²) / den */
    for (int m = 0; m < k; m++) {
      if (m == j) continue;
      c[2] = c[1] - u[m] * c[2];
      c[1] = c[0] - u[m] * c[1];
      c[0] = -u[m] * c[0];
      den *= u[j] - u[m];
    }
    w[j] = (c[0] * M[0] + c[1] * M[1] + c[2] * M[2]) / den;
  }
}

/* Weights of a step of order k over h. dpmpp-2m (order 2) takes DPM-Solver++(2M)'s: the
 * slope of the last two predictions at the weight M0/2 instead of its exact M1/h (the
 * two agree to O(h³); the 2M form is the more accurate at 20 NFE on our mixtures,
 * docs/sampling.md). ddim and dpmpp-3m, whose start uses orders 1 and 2, integrate the
 * interpolating polynomial exactly. */
static void multistep_weights(int order, int k, const double *u, double h, int sde, double *w) {
  double M[3];
  kernel_moments(h, sde, M);
  if (order != 2) {
    lagrange_weights(k, u, M, w);
    return;
  }
  if (k == 1) {
    w[0] = M[0];
    return;
  }
  const double r = -u[1] / h; /* previous step over this one */
  w[0] = M[0] * (1.0 + 0.5 / r);
  w[1] = -M[0] * 0.5 / r;
}

/* Order of multistep step i of `steps`: the history available, and lower in the last
 * steps of short runs (lower_order_final). */
static int fs_order(const fs_run *r, int order, int i, int steps) {
  int k = order < i + 1 ? order : i + 1;
  if (r->p->lower_order_final && steps < LOWER_ORDER_BELOW && steps - i < k) k = steps - i;
  return k;
}

/* ---- evaluations ----------------------------------------------------------------------- */

static int fs_progress(fs_run *r) {
  const sde_sample_params *p = r->p;
  r->done++;
  if (p->progress && p->progress(p->user, r->done, r->total))
    return sde_fail(SDE_ECANCELLED, "sampling cancelled at evaluation %d of %d", r->done,
                    r->total);
  return SDE_OK;
}

/* Clamps the finite entries of x0[n, D] to [lo, hi]; NaN and infinities stay, so a
 * diverging solve is still reported. */
static void clip_x0(float *x0, size_t count, float lo, float hi) {
  for (size_t j = 0; j < count; j++)
    if (isfinite(x0[j])) x0[j] = x0[j] < lo ? lo : x0[j] > hi ? hi : x0[j];
}

/* The host-side edits of a data prediction: the clip to the data range, then the
 * constraint (the known part is data, already in range). */
static int fs_x0_host(fs_run *r, float *x0) {
  if (r->p->clip_denoised) clip_x0(x0, (size_t)r->rows.n * (size_t)r->rows.D, r->lo, r->hi);
  return r->constrain ? r->constrain(r->ctx, r->rows.n, x0) : SDE_OK;
}

/* dst = x0(x, mk): the data prediction, clipped and constrained when asked. */
static int fs_x0(fs_run *r, const float *x, const sde_marg *mk, float *dst) {
  double cx, cy;
  sde_marg_convert(mk, SDE_PARAM_SCORE, SDE_PARAM_X0, &cx, &cy);
  int rc = sde_rows_score(&r->rows, x, (float)mk->t, r->s);
  if (!rc) rc = sde_rows_axpby(&r->rows, dst, cx, x, cy, r->s);
  if (!rc && (r->constrain || r->p->clip_denoised)) {
    if (r->rows.be->host_memory) {
      rc = fs_x0_host(r, dst);
    } else {
      rc = sde_rows_get(&r->rows, r->host, dst);
      if (!rc) rc = fs_x0_host(r, r->host);
      if (!rc) rc = sde_rows_put(&r->rows, dst, r->host);
    }
  }
  return rc ? rc : fs_progress(r);
}

/* Pushes a new prediction slot: returns the oldest buffer, now first. */
static float *fs_push(fs_run *r, double lambda) {
  float *oldest = r->x0[2] ? r->x0[2] : r->x0[1] ? r->x0[1] : r->x0[0];
  for (int j = 2; j > 0; j--) {
    if (r->x0[j]) r->x0[j] = r->x0[j - 1];
    r->lam[j] = r->lam[j - 1];
  }
  r->x0[0] = oldest;
  r->lam[0] = lambda;
  return oldest;
}

/* ---- the solvers ----------------------------------------------------------------------- */

/* ddim, dpmpp-2m, dpmpp-3m (order 1, 2, 3) and dpmpp-2m-sde over the grid t[steps + 1]. */
static int fs_multistep(fs_run *r, const double *t, int steps, int order, int sde) {
  sde_rows *rows = &r->rows;
  int rc = SDE_OK;
  for (int i = 0; i < steps && !rc; i++) {
    const sde_marg ms = sde_marg_at(rows->sde, t[i]), mt = sde_marg_at(rows->sde, t[i + 1]);
    rc = fs_x0(r, r->x, &ms, fs_push(r, ms.lambda));
    const int k = fs_order(r, order, i, steps);
    const double h = mt.lambda - ms.lambda;
    double u[3], w[3];
    for (int j = 0; j < k; j++) u[j] = r->lam[j] - ms.lambda;
    multistep_weights(order, k, u, h, sde, w);
    const double decay = mt.sigma / ms.sigma * (sde ? exp(-h) : 1.0);
    if (!rc) rc = sde_rows_axpby(rows, r->x, decay, r->x, mt.alpha * w[0], r->x0[0]);
    for (int j = 1; j < k && !rc; j++)
      rc = sde_rows_axpby(rows, r->x, 1.0, r->x, mt.alpha * w[j], r->x0[j]);
    if (sde && !rc) {
      rc = sde_rows_noise(rows, r->p->seed, r->stream0, r->draw++, r->z);
      if (!rc) rc = sde_rows_axpby(rows, r->x, 1.0, r->x, mt.sigma * sqrt(-expm1(-2.0 * h)), r->z);
    }
  }
  return rc;
}

/* sigma/alpha = e^{-lambda}: the noise level of x/alpha */
static double noise_ratio(const sde_marg *mk) { return mk->sigma / mk->alpha; }

/* Churn: raises the noise of x from the level ms by a factor 1 + gamma in sigma/alpha (at
 * most to the level of t_top) with fresh noise; *ms becomes the new level. */
static int heun_churn(fs_run *r, double gamma, double t_top, sde_marg *ms) {
  const sde_sde *sde = r->rows.sde;
  const sde_marg top = sde_marg_at(sde, t_top);
  const double rs = noise_ratio(ms), target = fmin(rs * (1.0 + gamma), noise_ratio(&top));
  const sde_marg mh = sde_marg_at(sde, (float)sde_marg_time(sde, -log(target)));
  const double rh = noise_ratio(&mh);
  if (!(rh > rs)) return SDE_OK;
  int rc = sde_rows_noise(&r->rows, r->p->seed, r->stream0, r->draw++, r->z);
  if (!rc) rc = sde_rows_axpby(&r->rows, r->x, mh.alpha / ms->alpha, r->x,
                               mh.alpha * sqrt(rh * rh - rs * rs), r->z);
  *ms = mh;
  return rc;
}

/* heun over the grid t[steps + 1]: per step an Euler point and the trapezoidal
 * correction, in y = x/alpha against r = sigma/alpha where dy/dr = (y - x0)/r. */
static int fs_heun(fs_run *r, const double *t, int steps) {
  sde_rows *rows = &r->rows;
  const double gamma = fmin(r->p->churn / (steps > 0 ? steps : 1), sqrt(2.0) - 1.0);
  int rc = SDE_OK;
  for (int i = 0; i < steps && !rc; i++) {
    sde_marg ms = sde_marg_at(rows->sde, t[i]);
    const sde_marg mt = sde_marg_at(rows->sde, t[i + 1]);
    if (gamma > 0.0) rc = heun_churn(r, gamma, t[0], &ms);
    if (!rc) rc = fs_x0(r, r->x, &ms, r->x0[0]);
    const double rs = noise_ratio(&ms), rt = noise_ratio(&mt), dr = rt - rs;
    /* Euler: y_e = y + dr (y - x0)/rs, i.e. x_e = (sigma_t/sigma_s) x + alpha_t (1 - rt/rs) x0 */
    if (!rc) rc = sde_rows_axpby(rows, r->xe, mt.sigma / ms.sigma, r->x, -mt.alpha * dr / rs, r->x0[0]);
    if (!rc) rc = fs_x0(r, r->xe, &mt, r->x0[1]);
    /* y_t = y + dr/2 ((y - x0)/rs + (y_e - x0_e)/rt), back in x = alpha_t y_t */
    const double ht = 0.5 * dr;
    if (!rc) rc = sde_rows_axpby(rows, r->x, mt.alpha / ms.alpha * (1.0 + ht / rs), r->x,
                                 -mt.alpha * ht / rs, r->x0[0]);
    if (!rc) rc = sde_rows_axpby(rows, r->x, 1.0, r->x, ht / rt, r->xe);
    if (!rc) rc = sde_rows_axpby(rows, r->x, 1.0, r->x, -mt.alpha * ht / rt, r->x0[1]);
  }
  return rc;
}

/* ---- entry ----------------------------------------------------------------------------- */

int sde_fewstep_validate(const sde_sample_params *p, int deterministic) {
  const sde_sampler s = p->sampler;
  if (!sde_sampler_is_fewstep(s))
    return sde_fail(SDE_EINVAL, "%s is not a few-step solver", sde_sampler_name(s));
  if ((unsigned)p->schedule >= SDE_SCHEDULE_COUNT)
    return sde_fail(SDE_EINVAL, "unknown schedule %d", (int)p->schedule);
  if (!(p->churn >= 0.0) || !isfinite(p->churn))
    return sde_fail(SDE_EINVAL, "churn = %g must be a finite number >= 0", p->churn);
  if (p->steps < 0 || p->steps > 100000)
    return sde_fail(SDE_EINVAL, "steps = %d must be 0 (default %d) or in [1, 100000]", p->steps,
                    SDE_FEWSTEP_DEFAULT_STEPS);
  const int stochastic = s == SDE_SAMPLER_DPMPP_2M_SDE || (s == SDE_SAMPLER_HEUN && p->churn > 0);
  if (deterministic && stochastic)
    return sde_fail(SDE_EINVAL, "%s%s is stochastic: encode and decode need a deterministic "
                                "solver (ddim, dpmpp-2m, dpmpp-3m, heun without churn)",
                    sde_sampler_name(s), s == SDE_SAMPLER_HEUN ? " with churn" : "");
  return SDE_OK;
}

static int fs_alloc(fs_run *r, int order, int noise) {
  int rc = sde_rows_alloc(&r->rows, &r->x);
  if (!rc) rc = sde_rows_alloc(&r->rows, &r->s);
  for (int j = 0; j < order && !rc; j++) rc = sde_rows_alloc(&r->rows, &r->x0[j]);
  if (!rc && noise) rc = sde_rows_alloc(&r->rows, &r->z);
  if (!rc && r->p->sampler == SDE_SAMPLER_HEUN) rc = sde_rows_alloc(&r->rows, &r->xe);
  if (!rc && (r->constrain || r->p->clip_denoised) && !r->rows.be->host_memory) {
    r->host = sde_malloc(sizeof(float) * (size_t)r->rows.n * (size_t)r->rows.D);
    if (!r->host) rc = SDE_ENOMEM;
  }
  return rc;
}

static void fs_free(fs_run *r) {
  float *bufs[] = {r->x, r->s, r->z, r->xe, r->x0[0], r->x0[1], r->x0[2]};
  for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++) sde_rows_free(&r->rows, bufs[j]);
  free(r->host);
  sde_rows_close(&r->rows);
}

/* The first sample of out[n, D] that holds a NaN or an infinity, or -1. */
static int first_nonfinite(const float *out, int n, int64_t D) {
  for (int i = 0; i < n; i++)
    for (int64_t j = 0; j < D; j++)
      if (!isfinite(out[(int64_t)i * D + j])) return i;
  return -1;
}

int sde_fewstep_run(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    uint64_t stream0, uint32_t first_draw, double t0, double t1, int denoise,
                    const float *x, float *out, sde_x0_constraint_fn constrain, void *ctx,
                    sde_stats *stats) {
  const int encode = t0 < t1;
  sde_stats local = {0};
  sde_stats *st = stats ? stats : &local;
  memset(st, 0, sizeof *st);
  const double t_start = sde_now();
  int rc = sde_fewstep_validate(p, encode);
  if (rc || n == 0) return rc;
  const sde_sampler s = p->sampler;
  const int order = s == SDE_SAMPLER_DDIM ? 1 : s == SDE_SAMPLER_DPMPP_3M ? 3 : 2;
  const int noise = s == SDE_SAMPLER_DPMPP_2M_SDE || (s == SDE_SAMPLER_HEUN && p->churn > 0);
  if (encode) denoise = 0;
  if (p->clip_denoised && (encode || !m->is_image))
    return sde_fail(SDE_EINVAL, "clip-denoised needs an image model with a data range and a "
                                "sampling direction (not encode)");
  const int npts = fs_points(p, denoise), steps = npts - 1;
  fs_run r = {.p = p, .stream0 = stream0, .draw = first_draw, .constrain = constrain,
              .ctx = ctx, .lo = m->centered ? -1.0f : 0.0f, .hi = 1.0f};
  r.total = (s == SDE_SAMPLER_HEUN ? 2 * steps : steps) + denoise;
  double *t = sde_malloc(sizeof(double) * (size_t)npts);
  if (!t) return SDE_ENOMEM;
  if (encode) { /* the sampling grid reversed: decode retraces encode */
    fs_grid(sde, p->schedule, t1, t0, npts, t);
    for (int i = 0; i < npts / 2; i++) {
      const double tmp = t[i];
      t[i] = t[npts - 1 - i];
      t[npts - 1 - i] = tmp;
    }
  } else {
    const double lambda_end = -log(FINAL_NOISE_RATIO);
    const double t_end =
        denoise && sde_marg_at(sde, t1).lambda > lambda_end ? sde_marg_time(sde, lambda_end) : t1;
    fs_grid(sde, p->schedule, t0, t_end, npts, t);
  }
  rc = sde_rows_open(&r.rows, m, sde, n, st);
  if (!rc && noise) rc = sde_rows_center_chroma(&r.rows, p);
  if (!rc) rc = fs_alloc(&r, s == SDE_SAMPLER_HEUN ? 2 : order, noise);
  if (!rc) rc = sde_rows_put(&r.rows, r.x, x);
  if (!rc && s == SDE_SAMPLER_HEUN) rc = fs_heun(&r, t, steps);
  else if (!rc) rc = fs_multistep(&r, t, steps, order, s == SDE_SAMPLER_DPMPP_2M_SDE);
  if (!rc && denoise) { /* the final step to sigma = 0 of every solver: x0 at t1 */
    const sde_marg m1 = sde_marg_at(sde, t[steps]);
    rc = fs_x0(&r, r.x, &m1, fs_push(&r, m1.lambda));
  }
  if (!rc) rc = sde_rows_get(&r.rows, out, denoise ? r.x0[0] : r.x);
  fs_free(&r);
  free(t);
  const int bad = rc ? -1 : first_nonfinite(out, n, sde_model_dim(m));
  if (bad >= 0)
    rc = sde_fail(SDE_ENUMERIC, "%s: sample %d is not finite after %d evaluations",
                  sde_sampler_name(s), bad, r.done);
  st->seconds = sde_now() - t_start;
  return rc;
}
