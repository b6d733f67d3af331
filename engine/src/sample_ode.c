/* Probability-flow ODE: adaptive Dormand-Prince RK45 and fixed-step Euler/Heun solvers,
 * the ODE sampler, encode/decode and latent slerp (docs/math.md#pf-ode).
 *
 * Design choice (deviates from the reference, docs/math.md#pitfall-ode-batch): the reference flattens
 * the whole batch into one scipy state with ONE shared adaptive step, so a sample's
 * result and the NFE depend on what else is in the batch. Here every sample runs its own
 * RK45 step-size control (its own t, h, accept/reject), while all samples advance in
 * lockstep through the stages so each stage is still ONE batched score call over the
 * samples that have not finished. A sample's result is therefore a pure function of its
 * own input: independent of batch composition and thread count, which the GStreamer
 * elements need (a frame must decode the same whatever frames share its batch).
 *
 * The state is held in double; every right-hand-side evaluation hands the score model
 * float32 x and t (as the reference's scipy->torch bridge does) and gets float32 back.
 * The linear drift part a(t)·x is applied to the double state. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample_internal.h"
#include "scoresde/scoresde.h"

/* ---- Dormand-Prince 5(4) tableau, as scipy's RK45 ---------------------------------- */

static const double DP_C[6] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0};
static const double DP_A[6][5] = {
    {0, 0, 0, 0, 0},
    {1.0 / 5, 0, 0, 0, 0},
    {3.0 / 40, 9.0 / 40, 0, 0, 0},
    {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
};
static const double DP_B[6] = {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784,
                               11.0 / 84};
/* Error weights: difference of the 5th- and 4th-order solutions, last entry on f_new. */
static const double DP_E[7] = {-71.0 / 57600,  0.0, 71.0 / 16695, -71.0 / 1920,
                               17253.0 / 339200, -22.0 / 525, 1.0 / 40};

#define RK_SAFETY 0.9
#define RK_MIN_FACTOR 0.2
#define RK_MAX_FACTOR 10.0
#define RK_ERR_EXP (-1.0 / 5.0) /* -1 / (error estimator order + 1) */

/* ---- probability-flow right-hand side ---------------------------------------------- */

int sde_pf_ode_init(sde_pf_ode *f, const sde_model *m, const sde_sde *sde, int n,
                    sde_pf_div div, const float *noise) {
  memset(f, 0, sizeof *f);
  f->m = m;
  f->sde = sde;
  f->D = sde_model_dim(m);
  f->dim = f->D + (div != SDE_PF_DIV_NONE);
  f->div = div;
  f->noise = noise;
  size_t nd = (size_t)n * (size_t)f->D;
  f->xb = sde_malloc(nd * sizeof(float));
  f->sb = sde_malloc(nd * sizeof(float));
  f->tb = sde_malloc((size_t)n * sizeof(float));
  f->divb = sde_malloc((size_t)n * sizeof(double));
  if (div == SDE_PF_DIV_HUTCHINSON) {
    f->vb = sde_malloc(nd * sizeof(float));
    f->jb = sde_malloc(nd * sizeof(float));
  }
  if (!f->xb || !f->sb || !f->tb || !f->divb ||
      (div == SDE_PF_DIV_HUTCHINSON && (!f->vb || !f->jb))) {
    sde_pf_ode_free(f);
    return SDE_ENOMEM;
  }
  return SDE_OK;
}

void sde_pf_ode_free(sde_pf_ode *f) {
  free(f->xb);
  free(f->sb);
  free(f->tb);
  free(f->vb);
  free(f->jb);
  free(f->divb);
  f->xb = f->sb = f->tb = f->vb = f->jb = NULL;
  f->divb = NULL;
}

/* Gathers the active rows into the float32 batch: xb[na,D], tb[na] (and probes vb). */
static void pf_gather(sde_pf_ode *f, int na, const int *act, const double *t, const double *y) {
  const int64_t D = f->D, dim = f->dim;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const int i = act[k];
    const double *yi = y + (int64_t)i * dim;
    float *xk = f->xb + (int64_t)k * D;
    for (int64_t j = 0; j < D; j++) xk[j] = (float)yi[j];
    f->tb[k] = (float)t[i];
    if (f->div == SDE_PF_DIV_HUTCHINSON)
      memcpy(f->vb + (int64_t)k * D, f->noise + (int64_t)i * D, (size_t)D * sizeof(float));
  }
}

/* divb[na] = ∇·s for the batch: exact, or the Hutchinson estimate vᵀ(vᵀ∂s/∂x). */
static int pf_divergence(sde_pf_ode *f, int na) {
  const sde_model *m = f->m;
  if (f->div == SDE_PF_DIV_EXACT) return m->ops->score_div(m, f->sde, na, f->xb, f->tb, f->divb);
  int rc = m->ops->score_vjp(m, f->sde, na, f->xb, f->tb, f->vb, f->jb);
  if (rc) return rc;
  const int64_t D = f->D;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const float *v = f->vb + (int64_t)k * D, *jv = f->jb + (int64_t)k * D;
    double acc = 0.0; /* sequential per sample: same sum for any thread count */
    for (int64_t j = 0; j < D; j++) acc += (double)v[j] * (double)jv[j];
    f->divb[k] = acc;
  }
  return SDE_OK;
}

int sde_pf_ode_rhs(void *ctx, int na, const int *act, const double *t, const double *y,
                   double *dy) {
  sde_pf_ode *f = ctx;
  const sde_model *m = f->m;
  const int64_t D = f->D, dim = f->dim;
  if (na == 0) return SDE_OK;
  pf_gather(f, na, act, t, y);
  int rc = m->ops->score(m, f->sde, na, f->xb, f->tb, f->sb);
  if (rc) return rc;
  if (f->div != SDE_PF_DIV_NONE && (rc = pf_divergence(f, na))) return rc;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const int i = act[k];
    double a, g;
    sde_coefficients(f->sde, t[i], &a, &g);
    const double hg2 = 0.5 * g * g;
    const double *yi = y + (int64_t)i * dim;
    const float *sk = f->sb + (int64_t)k * D;
    double *di = dy + (int64_t)i * dim;
    for (int64_t j = 0; j < D; j++) di[j] = a * yi[j] - hg2 * (double)sk[j];
    if (dim > D) di[D] = a * (double)D - hg2 * f->divb[k];
  }
  return SDE_OK;
}

/* ---- shared solver helpers --------------------------------------------------------- */

static int row_finite(const double *v, int64_t dim) {
  for (int64_t j = 0; j < dim; j++)
    if (!isfinite(v[j])) return 0;
  return 1;
}

/* Permille of the way from t0 to t1 made by the slowest active sample. */
static int progress_permille(const double *t, const int *act, int na, double t0, double t1) {
  double frac = 1.0;
  for (int k = 0; k < na; k++) {
    double fk = fabs(t[act[k]] - t0) / fabs(t1 - t0);
    if (fk < frac) frac = fk;
  }
  return (int)floor(1000.0 * frac);
}

static int report_progress(const sde_ode_opts *o, int done) {
  if (o->progress && o->progress(o->user, done, 1000))
    return sde_fail(SDE_ECANCELLED, "ODE solve cancelled by the progress callback");
  return SDE_OK;
}

/* ---- adaptive RK45 with per-sample step control ------------------------------------ */

typedef struct {
  int n;
  int64_t dim;
  double *K[7];     /* stage derivatives [n, dim]; K[0] holds f(t, y) (FSAL) */
  double *ys;       /* stage input, then y_new [n, dim] */
  double *t, *ts;   /* current and stage times [n] */
  double *h, *habs; /* signed step of the attempt, step magnitude to try [n] */
  double *tnew;     /* end of the attempted step [n] */
  int64_t *nacc, *nrej;
  unsigned char *rej; /* this step already had a rejected attempt */
  int *act;           /* active sample indices */
  int *fail;          /* per-sample failure: 0 ok, 1 step underflow, 2 non-finite */
} rk_ws;

static void rk_ws_free(rk_ws *w) {
  for (int s = 0; s < 7; s++) free(w->K[s]);
  free(w->ys);
  free(w->t);
  free(w->ts);
  free(w->h);
  free(w->habs);
  free(w->tnew);
  free(w->nacc);
  free(w->nrej);
  free(w->rej);
  free(w->act);
  free(w->fail);
}

static int rk_ws_alloc(rk_ws *w, int n, int64_t dim) {
  memset(w, 0, sizeof *w);
  w->n = n;
  w->dim = dim;
  size_t nd = (size_t)n * (size_t)dim;
  int ok = 1;
  for (int s = 0; s < 7; s++) ok &= (w->K[s] = sde_malloc(nd * sizeof(double))) != NULL;
  ok &= (w->ys = sde_malloc(nd * sizeof(double))) != NULL;
  ok &= (w->t = sde_malloc((size_t)n * sizeof(double))) != NULL;
  ok &= (w->ts = sde_malloc((size_t)n * sizeof(double))) != NULL;
  ok &= (w->h = sde_malloc((size_t)n * sizeof(double))) != NULL;
  ok &= (w->habs = sde_malloc((size_t)n * sizeof(double))) != NULL;
  ok &= (w->tnew = sde_malloc((size_t)n * sizeof(double))) != NULL;
  ok &= (w->nacc = sde_calloc((size_t)n, sizeof(int64_t))) != NULL;
  ok &= (w->nrej = sde_calloc((size_t)n, sizeof(int64_t))) != NULL;
  ok &= (w->rej = sde_calloc((size_t)n, 1)) != NULL;
  ok &= (w->act = sde_malloc((size_t)n * sizeof(int))) != NULL;
  ok &= (w->fail = sde_calloc((size_t)n, sizeof(int))) != NULL;
  if (!ok) {
    rk_ws_free(w);
    return SDE_ENOMEM;
  }
  return SDE_OK;
}

/* Reports the lowest-index failed sample, if any (deterministic message). */
static int rk_check_fail(const rk_ws *w, int na) {
  for (int k = 0; k < na; k++) {
    int i = w->act[k];
    if (w->fail[i] == 1)
      return sde_fail(SDE_ENUMERIC,
                      "RK45 step size underflow for sample %d at t = %.9g (tolerances too "
                      "tight or the score is not smooth there)",
                      i, w->t[i]);
    if (w->fail[i] == 2)
      return sde_fail(SDE_ENUMERIC, "non-finite value (NaN/Inf) in the ODE state of sample %d "
                                    "near t = %.9g",
                      i, w->t[i]);
  }
  return SDE_OK;
}

/* RMS over a row of v/scale, scale = atol + rtol·|y| (scipy's norm / sqrt(size)). */
static double rms_scaled(const double *v, const double *y, int64_t dim, double rtol,
                         double atol) {
  double acc = 0.0;
  for (int64_t j = 0; j < dim; j++) {
    double r = v[j] / (atol + rtol * fabs(y[j]));
    acc += r * r;
  }
  return sqrt(acc / (double)dim);
}

/* scipy's select_initial_step (Hairer, Nørsett & Wanner II.4), per sample, batched:
 * needs f0 in K[0]; uses one evaluation at y0 + h0·f0 (into K[1]). Sets habs[i]. */
static int rk_initial_step(sde_ode_rhs_fn rhs, void *ctx, rk_ws *w, const double *y,
                           double t0, double t1, double rtol, double atol, int64_t *evals) {
  const int n = w->n;
  const int64_t dim = w->dim;
  const double dir = t1 > t0 ? 1.0 : -1.0, len = fabs(t1 - t0);
  double *h0 = w->h, *d1 = w->tnew; /* scratch */
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    const double *yi = y + (int64_t)i * dim, *fi = w->K[0] + (int64_t)i * dim;
    double d0 = rms_scaled(yi, yi, dim, rtol, atol);
    d1[i] = rms_scaled(fi, yi, dim, rtol, atol);
    double hi = (d0 < 1e-5 || d1[i] < 1e-5) ? 1e-6 : 0.01 * d0 / d1[i];
    h0[i] = fmin(hi, len);
    double *ysi = w->ys + (int64_t)i * dim;
    for (int64_t j = 0; j < dim; j++) ysi[j] = yi[j] + h0[i] * dir * fi[j];
    w->ts[i] = t0 + h0[i] * dir;
  }
  int rc = rhs(ctx, n, w->act, w->ts, w->ys, w->K[1]);
  (*evals)++;
  if (rc) return rc;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    const double *yi = y + (int64_t)i * dim, *f0 = w->K[0] + (int64_t)i * dim;
    const double *f1 = w->K[1] + (int64_t)i * dim;
    double acc = 0.0;
    for (int64_t j = 0; j < dim; j++) {
      double r = (f1[j] - f0[j]) / (atol + rtol * fabs(yi[j]));
      acc += r * r;
    }
    double d2 = sqrt(acc / (double)dim) / h0[i];
    double h1 = (d1[i] <= 1e-15 && d2 <= 1e-15) ? fmax(1e-6, h0[i] * 1e-3)
                                                 : pow(0.01 / fmax(d1[i], d2), 1.0 / 5.0);
    w->habs[i] = fmin(fmin(100.0 * h0[i], h1), len);
    w->fail[i] = isfinite(w->habs[i]) && row_finite(f0, dim) && row_finite(f1, dim) ? 0 : 2;
  }
  return rk_check_fail(w, n);
}

/* Starts an attempt for every active sample: step clamped to t1, underflow check. */
static void rk_begin_attempt(rk_ws *w, int na, double t1, double dir) {
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const int i = w->act[k];
    const double t = w->t[i];
    const double min_step = 10.0 * fabs(nextafter(t, dir * INFINITY) - t);
    if (!w->rej[i] && w->habs[i] < min_step) w->habs[i] = min_step; /* scipy: clamp at start */
    if (w->habs[i] < min_step) {
      w->fail[i] = 1;
      continue;
    }
    double tn = t + w->habs[i] * dir;
    if (dir * (tn - t1) > 0) tn = t1;
    w->tnew[i] = tn;
    w->h[i] = tn - t;
    w->habs[i] = fabs(w->h[i]);
  }
}

/* ys = y + h Σ_{j<s} coef[j] K[j]; ts = t + c·h, for the active rows. */
static void rk_stage_input(rk_ws *w, int na, const double *y, int s, const double *coef,
                           double c) {
  const int64_t dim = w->dim;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const int i = w->act[k];
    const int64_t o = (int64_t)i * dim;
    const double h = w->h[i];
    for (int64_t j = 0; j < dim; j++) {
      double acc = 0.0;
      for (int q = 0; q < s; q++) acc += coef[q] * w->K[q][o + j];
      w->ys[o + j] = y[o + j] + h * acc;
    }
    w->ts[i] = (s == 6) ? w->tnew[i] : w->t[i] + c * h;
  }
}

/* Error norm, accept/reject and the next step size for every active sample. */
static void rk_finish_attempt(rk_ws *w, int na, double *y, double rtol, double atol) {
  const int64_t dim = w->dim;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < na; k++) {
    const int i = w->act[k];
    const int64_t o = (int64_t)i * dim;
    const double h = w->h[i];
    double acc = 0.0;
    for (int64_t j = 0; j < dim; j++) {
      double e = 0.0;
      for (int q = 0; q < 7; q++) e += DP_E[q] * w->K[q][o + j];
      double scale = atol + rtol * fmax(fabs(y[o + j]), fabs(w->ys[o + j]));
      double r = h * e / scale;
      acc += r * r;
    }
    const double en = sqrt(acc / (double)dim);
    if (!isfinite(en)) {
      w->fail[i] = 2;
      continue;
    }
    if (en < 1.0) {
      double factor = en == 0.0 ? RK_MAX_FACTOR : fmin(RK_MAX_FACTOR, RK_SAFETY * pow(en, RK_ERR_EXP));
      if (w->rej[i]) factor = fmin(1.0, factor);
      w->habs[i] *= factor;
      memcpy(y + o, w->ys + o, (size_t)dim * sizeof(double));
      memcpy(w->K[0] + o, w->K[6] + o, (size_t)dim * sizeof(double)); /* FSAL */
      w->t[i] = w->tnew[i];
      w->rej[i] = 0;
      w->nacc[i]++;
    } else {
      w->habs[i] *= fmax(RK_MIN_FACTOR, RK_SAFETY * pow(en, RK_ERR_EXP));
      w->rej[i] = 1;
      w->nrej[i]++;
    }
  }
}

/* Drops finished samples from the active list; returns the new count. */
static int rk_compact(rk_ws *w, int na, double t1, double dir) {
  int m = 0;
  for (int k = 0; k < na; k++) {
    int i = w->act[k];
    if (dir * (w->t[i] - t1) < 0) w->act[m++] = i;
  }
  return m;
}

/* One lockstep attempt: 6 batched evaluations (stages 2..6 and f_new). */
static int rk_attempt(sde_ode_rhs_fn rhs, void *ctx, rk_ws *w, int na, double *y, double t1,
                      double dir, double rtol, double atol, int64_t *evals) {
  rk_begin_attempt(w, na, t1, dir);
  int rc = rk_check_fail(w, na);
  if (rc) return rc;
  for (int s = 1; s <= 6; s++) {
    rk_stage_input(w, na, y, s, s < 6 ? DP_A[s] : DP_B, s < 6 ? DP_C[s] : 1.0);
    rc = rhs(ctx, na, w->act, w->ts, w->ys, w->K[s]);
    (*evals)++;
    if (rc) return rc;
  }
  rk_finish_attempt(w, na, y, rtol, atol);
  return rk_check_fail(w, na);
}

/* Refuses another attempt (6 evaluations) that would pass o->max_evals, naming the
 * option and how far the slowest sample got. */
static int rk_check_budget(const sde_ode_opts *o, int64_t evals, const rk_ws *w, int na,
                           double t0, double t1) {
  if (o->max_evals <= 0 || evals + 6 <= o->max_evals) return SDE_OK;
  int slow = w->act[0];
  for (int k = 1; k < na; k++)
    if (fabs(w->t[w->act[k]] - t0) < fabs(w->t[slow] - t0)) slow = w->act[k];
  return sde_fail(SDE_ENUMERIC,
                  "the ODE solver reached max-evals = %lld score evaluations with sample %d at "
                  "t = %.6g on the way from %g to %g (raise max-evals, or loosen rtol/atol)",
                  (long long)o->max_evals, slow, w->t[slow], t0, t1);
}

static int rk45_solve(sde_ode_rhs_fn rhs, void *ctx, int n, int64_t dim, double *y, double t0,
                      double t1, const sde_ode_opts *o, sde_stats *st) {
  const double dir = t1 > t0 ? 1.0 : -1.0;
  const double rtol = fmax(o->rtol, 100.0 * DBL_EPSILON), atol = o->atol; /* as scipy */
  int64_t evals = 0;
  rk_ws w;
  int rc = rk_ws_alloc(&w, n, dim);
  if (rc) return rc;
  for (int i = 0; i < n; i++) {
    w.act[i] = i;
    w.t[i] = t0;
  }
  rc = rhs(ctx, n, w.act, w.t, y, w.K[0]);
  evals++;
  if (!rc) rc = rk_initial_step(rhs, ctx, &w, y, t0, t1, rtol, atol, &evals);
  int na = n;
  while (!rc && na > 0) {
    if ((rc = rk_check_budget(o, evals, &w, na, t0, t1))) break;
    rc = rk_attempt(rhs, ctx, &w, na, y, t1, dir, rtol, atol, &evals);
    if (rc) break;
    na = rk_compact(&w, na, t1, dir);
    rc = report_progress(o, progress_permille(w.t, w.act, na, t0, t1));
  }
  if (st) {
    st->evals += evals;
    st->nfe += evals;
    for (int i = 0; i < n; i++) {
      st->accepted += w.nacc[i];
      st->rejected += w.nrej[i];
    }
  }
  rk_ws_free(&w);
  return rc;
}

/* ---- fixed-step Euler and Heun ----------------------------------------------------- */

static int fixed_solve(sde_ode_rhs_fn rhs, void *ctx, int n, int64_t dim, double *y, double t0,
                       double t1, const sde_ode_opts *o, sde_stats *st) {
  const int heun = o->method == SDE_ODE_HEUN, steps = o->steps;
  const size_t nd = (size_t)n * (size_t)dim;
  double *k1 = sde_malloc(nd * sizeof(double)), *k2 = NULL, *ys = NULL;
  double *t = sde_malloc((size_t)n * sizeof(double));
  int *act = sde_malloc((size_t)n * sizeof(int)), *bad = sde_calloc((size_t)n, sizeof(int));
  if (heun) {
    k2 = sde_malloc(nd * sizeof(double));
    ys = sde_malloc(nd * sizeof(double));
  }
  int rc = (!k1 || !t || !act || !bad || (heun && (!k2 || !ys))) ? SDE_ENOMEM : SDE_OK;
  int64_t evals = 0;
  for (int i = 0; !rc && i < n; i++) act[i] = i;
  for (int s = 0; !rc && s < steps; s++) {
    /* endpoints from the step index, so the last one is exactly t1 */
    const double ta = t0 + (t1 - t0) * s / steps, tb = t0 + (t1 - t0) * (s + 1) / steps;
    const double h = tb - ta;
    for (int i = 0; i < n; i++) t[i] = ta;
    rc = rhs(ctx, n, act, t, y, k1);
    evals++;
    if (rc) break;
    if (heun) {
#pragma omp parallel for schedule(static)
      for (int64_t j = 0; j < (int64_t)nd; j++) ys[j] = y[j] + h * k1[j];
      for (int i = 0; i < n; i++) t[i] = tb;
      rc = rhs(ctx, n, act, t, ys, k2);
      evals++;
      if (rc) break;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
      double *yi = y + (int64_t)i * dim;
      const double *a = k1 + (int64_t)i * dim, *b = heun ? k2 + (int64_t)i * dim : NULL;
      for (int64_t j = 0; j < dim; j++) yi[j] += heun ? 0.5 * h * (a[j] + b[j]) : h * a[j];
      bad[i] = !row_finite(yi, dim);
    }
    for (int i = 0; i < n; i++)
      if (bad[i]) {
        rc = sde_fail(SDE_ENUMERIC, "non-finite value (NaN/Inf) in the ODE state of sample %d "
                                    "at t = %.9g",
                      i, tb);
        break;
      }
    if (!rc) rc = report_progress(o, (int)floor(1000.0 * (s + 1) / steps));
  }
  if (st) {
    st->evals += evals;
    st->nfe += evals;
    st->accepted += rc ? 0 : (int64_t)n * steps;
  }
  free(k1);
  free(k2);
  free(ys);
  free(t);
  free(act);
  free(bad);
  return rc;
}

int sde_ode_integrate(sde_ode_rhs_fn rhs, void *ctx, int n, int64_t dim, double *y, double t0,
                      double t1, const sde_ode_opts *o, sde_stats *st) {
  if (n == 0 || t0 == t1) return SDE_OK;
  switch (o->method) {
    case SDE_ODE_RK45: return rk45_solve(rhs, ctx, n, dim, y, t0, t1, o, st);
    case SDE_ODE_EULER:
    case SDE_ODE_HEUN: return fixed_solve(rhs, ctx, n, dim, y, t0, t1, o, st);
  }
  return sde_fail(SDE_EINVAL, "unknown ODE method %d", (int)o->method);
}

/* ---- public entry points ----------------------------------------------------------- */

/* Common argument checks of the ODE entry points. */
static int check_args(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                      const void *x, const void *out, const char *fn) {
  if (!m || !m->ops || !m->ops->score) return sde_fail(SDE_EINVAL, "%s: no score model", fn);
  if (!sde || !p) return sde_fail(SDE_EINVAL, "%s: sde and params are required", fn);
  int rc = sde_validate(sde);
  if (rc) return sde_fail_context(rc, "%s", fn);
  if (n < 0) return sde_fail(SDE_EINVAL, "%s: n = %d must be >= 0", fn, n);
  if (n > 0 && (!x || !out)) return sde_fail(SDE_EINVAL, "%s: NULL sample buffer", fn);
  if (sde_model_dim(m) <= 0) return sde_fail(SDE_EINVAL, "%s: model has no dimensions", fn);
  sde_sample_params q = *p; /* what runs here is the ODE, whatever p->sampler names */
  q.sampler = SDE_SAMPLER_ODE;
  rc = sde_sample_params_check(&q, sde);
  return rc ? sde_fail_context(rc, "%s", fn) : SDE_OK;
}

static int check_time(double t, const char *what) {
  if (!(t >= 0.0 && t <= SDE_T))
    return sde_fail(SDE_EINVAL, "sde_ode_solve: %s = %g must be in [0, %g]", what, t, SDE_T);
  return SDE_OK;
}

/* The score is float32: tolerances below what it resolves are raised to SDE_ODE_MIN_TOL,
 * and max_evals bounds the solve whatever the tolerances. */
static void ode_opts_from(const sde_sample_params *p, const sde_sde *sde, sde_ode_opts *o) {
  o->method = p->ode_method;
  o->rtol = fmax(p->rtol, SDE_ODE_MIN_TOL);
  o->atol = fmax(p->atol, SDE_ODE_MIN_TOL);
  o->steps = p->steps > 0 ? p->steps : sde->N;
  o->progress = p->progress;
  o->user = p->user;
  o->max_evals = p->max_evals > 0 ? p->max_evals : SDE_ODE_DEFAULT_MAX_EVALS;
}

static double sampling_eps(const sde_sample_params *p, const sde_sde *sde) {
  return p->eps > 0 ? p->eps : sde_sampling_eps(sde);
}

/* Solves the plain PF-ODE on float x[n,D] in place; adds to *st. */
static int pf_solve(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    float *x, double t0, double t1, sde_stats *st) {
  if (n == 0) return SDE_OK;
  const int64_t D = sde_model_dim(m);
  const size_t nd = (size_t)n * (size_t)D;
  sde_pf_ode f;
  int rc = sde_pf_ode_init(&f, m, sde, n, SDE_PF_DIV_NONE, NULL);
  if (rc) return rc;
  double *y = sde_malloc(nd * sizeof(double));
  if (!y) {
    sde_pf_ode_free(&f);
    return SDE_ENOMEM;
  }
  for (size_t j = 0; j < nd; j++) y[j] = x[j];
  sde_ode_opts o;
  ode_opts_from(p, sde, &o);
  rc = sde_ode_integrate(sde_pf_ode_rhs, &f, n, D, y, t0, t1, &o, st);
  if (!rc)
    for (size_t j = 0; j < nd; j++) x[j] = (float)y[j];
  free(y);
  sde_pf_ode_free(&f);
  return rc;
}

static void stats_begin(sde_stats *st, double *t_start) {
  if (st) memset(st, 0, sizeof *st);
  *t_start = sde_now();
}

static void stats_end(sde_stats *st, double t_start) {
  if (st) st->seconds = sde_now() - t_start;
}

int sde_ode_solve(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                  float *x, double t0, double t1, sde_stats *stats) {
  double ts;
  stats_begin(stats, &ts);
  int rc = check_args(m, sde, p, n, x, x, "sde_ode_solve");
  if (!rc) rc = check_time(t0, "t0");
  if (!rc) rc = check_time(t1, "t1");
  if (!rc) rc = pf_solve(m, sde, p, n, x, t0, t1, stats);
  stats_end(stats, ts);
  return rc;
}

/* Copies src to dst (they may alias) and solves from t0 to t1 there. */
static int copy_and_solve(const sde_model *m, const sde_sde *sde, const sde_sample_params *p,
                          int n, const float *src, float *dst, double t0, double t1,
                          sde_stats *st, const char *fn) {
  double ts;
  stats_begin(st, &ts);
  int rc = check_args(m, sde, p, n, src, dst, fn);
  if (!rc && n > 0) {
    memmove(dst, src, (size_t)n * (size_t)sde_model_dim(m) * sizeof(float));
    rc = pf_solve(m, sde, p, n, dst, t0, t1, st);
  }
  stats_end(st, ts);
  return rc;
}

/* A few-step solver from t0 to t1 without a final denoising step (encode, decode). */
static int fewstep_solve(const sde_model *m, const sde_sde *sde, const sde_sample_params *p,
                         int n, const float *src, float *dst, double t0, double t1,
                         sde_stats *st, const char *fn) {
  int rc = check_args(m, sde, p, n, src, dst, fn);
  if (!rc) rc = sde_fewstep_validate(p, 1);
  if (!rc) rc = sde_fewstep_run(m, sde, p, n, 0, 1, t0, t1, 0, src, dst, NULL, NULL, st);
  return rc ? sde_fail_context(rc, "%s", fn) : SDE_OK;
}

int sde_encode(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               const float *data, float *latent, sde_stats *stats) {
  double eps = (p && sde) ? sampling_eps(p, sde) : 0.0;
  if (p && sde_sampler_is_fewstep(p->sampler))
    return fewstep_solve(m, sde, p, n, data, latent, eps, SDE_T, stats, "sde_encode");
  return copy_and_solve(m, sde, p, n, data, latent, eps, SDE_T, stats, "sde_encode");
}

int sde_decode(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               const float *latent, float *data, sde_stats *stats) {
  double eps = (p && sde) ? sampling_eps(p, sde) : 0.0;
  if (p && sde_sampler_is_fewstep(p->sampler))
    return fewstep_solve(m, sde, p, n, latent, data, SDE_T, eps, stats, "sde_decode");
  return copy_and_solve(m, sde, p, n, latent, data, SDE_T, eps, stats, "sde_decode");
}

/* One reverse-diffusion step at t = eps keeping the mean: x - f + G² s (docs/math.md#pf-ode). */
static int denoise_step(const sde_model *m, const sde_sde *sde, double eps, int n, float *x,
                        sde_stats *st) {
  const int64_t D = sde_model_dim(m);
  const size_t nd = (size_t)n * (size_t)D;
  float *s = sde_malloc(nd * sizeof(float)), *t = sde_malloc((size_t)n * sizeof(float));
  int rc = (!s || !t) ? SDE_ENOMEM : SDE_OK;
  if (!rc) {
    for (int i = 0; i < n; i++) t[i] = (float)eps;
    rc = m->ops->score(m, sde, n, x, t, s);
    if (st) st->evals++;
  }
  if (!rc) {
    double fa, G;
    sde_discretize(sde, eps, &fa, &G);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < (int64_t)nd; j++)
      x[j] = (float)((double)x[j] - fa * (double)x[j] + G * G * (double)s[j]);
  }
  free(s);
  free(t);
  return rc;
}

int sde_ode_sample(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                   const float *x_T, float *out, sde_stats *stats) {
  double ts;
  stats_begin(stats, &ts);
  int rc = check_args(m, sde, p, n, x_T, out, "ODE sampler");
  if (!rc && n > 0) {
    const double eps = sampling_eps(p, sde);
    memmove(out, x_T, (size_t)n * (size_t)sde_model_dim(m) * sizeof(float));
    rc = pf_solve(m, sde, p, n, out, SDE_T, eps, stats);
    if (!rc && p->denoise) rc = denoise_step(m, sde, eps, n, out, stats);
  }
  stats_end(stats, ts);
  return rc;
}

void sde_slerp(const float *a, const float *b, int64_t D, double w, float *out) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int64_t j = 0; j < D; j++) {
    ab += (double)a[j] * b[j];
    aa += (double)a[j] * a[j];
    bb += (double)b[j] * b[j];
  }
  double na = sqrt(aa), nb = sqrt(bb);
  double ca = 1.0 - w, cb = w; /* lerp weights */
  if (na > 0 && nb > 0) {
    double c = fmax(-1.0, fmin(1.0, ab / (na * nb)));
    double theta = acos(c), st = sin(theta);
    if (st > 1e-6) { /* else (anti)parallel: the great circle is undefined, lerp */
      ca = sin((1.0 - w) * theta) / st;
      cb = sin(w * theta) / st;
    }
  }
  for (int64_t j = 0; j < D; j++) out[j] = (float)(ca * a[j] + cb * b[j]);
}
