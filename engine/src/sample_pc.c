/* Predictor-corrector samplers (docs/math.md#pc). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "sample_internal.h"
#include "scoresde/error.h"
#include "scoresde/marginal.h"
#include "scoresde/rng.h"
#include "scoresde/scoresde.h"

void sde_sample_params_init(sde_sample_params *p) {
  memset(p, 0, sizeof *p);
  p->sampler = SDE_SAMPLER_PC;
  p->predictor = SDE_PRED_REVERSE_DIFFUSION;
  p->corrector = SDE_CORR_LANGEVIN;
  p->snr = 0.16;
  p->corrector_steps = 1;
  p->steps = 0;
  p->eps = 0.0;
  p->denoise = 1;
  p->ode_method = SDE_ODE_RK45;
  p->rtol = 1e-5;
  p->atol = 1e-5;
  p->schedule = SDE_SCHEDULE_KARRAS; /* lower FD than logsnr on the shipped models (docs/sampling.md) */
  p->lower_order_final = 1;
  p->churn = 0.0;
  p->clip_denoised = 0;
  p->t_start = 0.0;
  p->center_chroma = 0;
  p->seed = 0;
  p->max_evals = SDE_ODE_DEFAULT_MAX_EVALS;
}

static const char *const sampler_names[SDE_SAMPLER_COUNT] = {
    "pc", "ode", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun"};
static const char *const schedule_names[SDE_SCHEDULE_COUNT] = {"logsnr", "time", "karras"};

const char *sde_sampler_name(sde_sampler s) {
  return (unsigned)s < SDE_SAMPLER_COUNT ? sampler_names[s] : "?";
}

int sde_sampler_is_fewstep(sde_sampler s) {
  return s >= SDE_SAMPLER_DDIM && s <= SDE_SAMPLER_HEUN;
}

const char *sde_schedule_name(sde_schedule s) {
  return (unsigned)s < SDE_SCHEDULE_COUNT ? schedule_names[s] : "?";
}

int sde_sampler_from_name(const char *s, sde_sampler *out) {
  for (int i = 0; s && i < SDE_SAMPLER_COUNT; i++)
    if (!strcmp(s, sampler_names[i])) {
      *out = (sde_sampler)i;
      return SDE_OK;
    }
  return SDE_EINVAL;
}

int sde_schedule_from_name(const char *s, sde_schedule *out) {
  for (int i = 0; s && i < SDE_SCHEDULE_COUNT; i++)
    if (!strcmp(s, schedule_names[i])) {
      *out = (sde_schedule)i;
      return SDE_OK;
    }
  return SDE_EINVAL;
}

const char *sde_predictor_name(sde_predictor p) {
  switch (p) {
    case SDE_PRED_NONE: return "none";
    case SDE_PRED_EULER_MARUYAMA: return "euler_maruyama";
    case SDE_PRED_REVERSE_DIFFUSION: return "reverse_diffusion";
    case SDE_PRED_ANCESTRAL: return "ancestral_sampling";
  }
  return "?";
}

const char *sde_corrector_name(sde_corrector c) {
  switch (c) {
    case SDE_CORR_NONE: return "none";
    case SDE_CORR_LANGEVIN: return "langevin";
    case SDE_CORR_ALD: return "ald";
  }
  return "?";
}

const char *sde_ode_method_name(sde_ode_method m) {
  switch (m) {
    case SDE_ODE_RK45: return "rk45";
    case SDE_ODE_EULER: return "euler";
    case SDE_ODE_HEUN: return "heun";
  }
  return "?";
}

static int name_is(const char *s, const char *a, const char *b, const char *c) {
  return !strcmp(s, a) || (b && !strcmp(s, b)) || (c && !strcmp(s, c));
}

int sde_predictor_from_name(const char *s, sde_predictor *p) {
  if (!s) return sde_fail(SDE_EINVAL, "no predictor name");
  if (name_is(s, "none", NULL, NULL)) *p = SDE_PRED_NONE;
  else if (name_is(s, "euler_maruyama", "em", "euler-maruyama")) *p = SDE_PRED_EULER_MARUYAMA;
  else if (name_is(s, "reverse_diffusion", "rd", "reverse-diffusion")) *p = SDE_PRED_REVERSE_DIFFUSION;
  else if (name_is(s, "ancestral_sampling", "ancestral", "ancestral-sampling")) *p = SDE_PRED_ANCESTRAL;
  else
    return sde_fail(SDE_EINVAL,
                    "unknown predictor '%s' (expected euler_maruyama, reverse_diffusion, "
                    "ancestral_sampling or none)", s);
  return SDE_OK;
}

int sde_corrector_from_name(const char *s, sde_corrector *c) {
  if (!s) return sde_fail(SDE_EINVAL, "no corrector name");
  if (name_is(s, "none", NULL, NULL)) *c = SDE_CORR_NONE;
  else if (name_is(s, "langevin", NULL, NULL)) *c = SDE_CORR_LANGEVIN;
  else if (name_is(s, "ald", "annealed_langevin", "annealed-langevin")) *c = SDE_CORR_ALD;
  else return sde_fail(SDE_EINVAL, "unknown corrector '%s' (expected langevin, ald or none)", s);
  return SDE_OK;
}

int sde_ode_method_from_name(const char *s, sde_ode_method *m) {
  if (!s) return sde_fail(SDE_EINVAL, "no ODE method name");
  if (name_is(s, "rk45", "dopri5", "RK45")) *m = SDE_ODE_RK45;
  else if (name_is(s, "euler", NULL, NULL)) *m = SDE_ODE_EULER;
  else if (name_is(s, "heun", NULL, NULL)) *m = SDE_ODE_HEUN;
  else return sde_fail(SDE_EINVAL, "unknown ODE method '%s' (expected rk45, euler or heun)", s);
  return SDE_OK;
}

void sde_prior_sample(const sde_sde *sde, uint64_t seed, uint64_t stream0, uint32_t step, int n,
                      int64_t D, float *x) {
  const float s = (float)sde_prior_std(sde);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    float *xi = x + (size_t)i * D;
    sde_randn(seed, stream0 + (uint64_t)i, step, xi, D);
    for (int64_t d = 0; d < D; d++) xi[d] *= s;
  }
}

/* Working state of one PC run: the rows x, x_mean, score and noise live in the memory of
 * the model's backend for the whole loop (sample_rows.c), so the loop below is the same
 * on the CPU and on a device. */
typedef struct {
  sde_rows rows;
  const sde_sde *sde;
  const sde_sample_params *p;
  int steps;       /* grid size */
  double eps;
  int exact;       /* steps != sde->N: kernels between grid times from the marginal */
  uint64_t stream0;
  uint32_t draw;   /* next noise draw id: the `step` of the RNG key */
  float *x, *xm, *s, *z; /* [n, D] rows */
  double *norms;   /* [2n] host: per-sample score and noise norms (Langevin) */
} pc_run;

/* out = a·x + c·y. Host rows keep the reference arithmetic of the PC sampler (float
 * products and sum: its results stay bit-identical); a device computes it in double,
 * rounded once (axpby_rows), within one rounding of the host. */
static int pc_update(pc_run *r, float *out, float a, const float *x, float c, const float *y) {
  if (!r->rows.be->host_memory) return sde_rows_axpby(&r->rows, out, a, x, c, y);
  const int64_t nd = (int64_t)r->rows.n * r->rows.D;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < nd; j++) out[j] = a * x[j] + c * y[j];
  return SDE_OK;
}

static int pc_noise(pc_run *r) {
  return sde_rows_noise(&r->rows, r->p->seed, r->stream0, r->draw++, r->z);
}

/* The noise levels of grid time k and of the next one (the clean data after the last). */
static void grid_levels(const pc_run *r, int k, sde_marg *hi, sde_marg *lo) {
  *hi = sde_marg_at(r->sde, sde_time_grid(r->eps, r->steps, k));
  *lo = k + 1 < r->steps ? sde_marg_at(r->sde, sde_time_grid(r->eps, r->steps, k + 1))
                         : sde_marg_clean();
}

/* The forward kernel x(t_k) = a·x(t_{k+1}) + b·z between them: the exact discretisation
 * used when steps != N. */
static void grid_kernel(const pc_run *r, int k, double *a, double *b2) {
  sde_marg hi, lo;
  grid_levels(r, k, &hi, &lo);
  sde_marg_kernel(&hi, &lo, a, b2);
}

/* α of the Langevin step: 1 for VE, 1 - β_i for VP. The reference reads VP tables that
 * sub-VP lacks (it crashes); we use the same DDPM α for sub-VP (docs/design.md). With
 * the exact discretisation 1 - β_i is the ratio of alpha_bar between grid times. */
static double langevin_alpha(const pc_run *r, int k, float t) {
  if (r->sde->kind == SDE_VE) return 1.0;
  if (!r->exact) return 1.0 - sde_ddpm_beta(r->sde, sde_time_index(r->sde, t));
  double a, b2;
  grid_kernel(r, k, &a, &b2);
  return a * a;
}

/* The corrector's step size ε at grid time k (Langevin: from the norms r->norms[2n]).
 * Returns 0 when the score is zero everywhere (Langevin has nothing to correct). */
static int corrector_step(const pc_run *r, int k, float t, double *step) {
  const sde_sample_params *p = r->p;
  const int n = r->rows.n;
  if (p->corrector == SDE_CORR_LANGEVIN) {
    /* One step size for the whole batch from batch-averaged norms, as the reference. */
    double grad_norm = 0.0, noise_norm = 0.0;
    for (int i = 0; i < n; i++) {
      grad_norm += r->norms[i];
      noise_norm += r->norms[n + i];
    }
    grad_norm /= n;
    noise_norm /= n;
    if (!(grad_norm > 0.0)) return 0;
    double ratio = p->snr * noise_norm / grad_norm;
    *step = 2.0 * langevin_alpha(r, k, t) * ratio * ratio;
  } else { /* annealed Langevin: ε = 2 α (snr σ(t))² */
    double m, std;
    sde_marginal(r->sde, t, &m, &std);
    *step = 2.0 * langevin_alpha(r, k, t) * (p->snr * std) * (p->snr * std);
  }
  return 1;
}

/* One corrector iteration: x_mean = x + ε s, x = x_mean + sqrt(2ε) z. */
static int pc_correct(pc_run *r, int k, float t) {
  const int n = r->rows.n;
  const sde_backend *be = r->rows.be;
  int rc = sde_rows_score(&r->rows, r->x, t, r->s);
  if (!rc) rc = pc_noise(r);
  if (!rc && r->p->corrector == SDE_CORR_LANGEVIN) {
    rc = be->dot_rows(be, r->norms, r->s, r->s, n, r->rows.D);
    if (!rc) rc = be->dot_rows(be, r->norms + n, r->z, r->z, n, r->rows.D);
    for (int i = 0; i < 2 * n; i++) r->norms[i] = sqrt(r->norms[i]);
  }
  double step;
  if (rc || !corrector_step(r, k, t, &step)) return rc; /* zero score: nothing to correct */
  rc = pc_update(r, r->xm, 1.0f, r->x, (float)step, r->s);
  if (!rc) rc = pc_update(r, r->x, 1.0f, r->xm, (float)sqrt(2.0 * step), r->z);
  return rc;
}

/* Every predictor is x_mean = cx·x + cs·s, x = x_mean + cz·z. At steps == N the
 * reference discretisation; otherwise the kernel (a, b²) between grid times. */
static int predictor_coefs(const pc_run *r, int k, float t, double *pcx, double *pcs,
                           double *pcz) {
  const sde_sde *sde = r->sde;
  double cx, cs, cz, a = 1.0, b2 = 0.0;
  sde_marg hi, lo;
  if (r->exact) {
    grid_levels(r, k, &hi, &lo);
    sde_marg_kernel(&hi, &lo, &a, &b2);
  }
  switch (r->p->predictor) {
    case SDE_PRED_EULER_MARUYAMA: {
      double fa, g, dt = 1.0 / r->steps; /* dt = 1/N as the reference (trap 4) */
      sde_coefficients(sde, t, &fa, &g);
      cx = 1.0 - fa * dt;
      cs = g * g * dt;
      cz = g * sqrt(dt);
      break;
    }
    case SDE_PRED_REVERSE_DIFFUSION: { /* the forward step f = fa·x, G, reversed */
      double fa, G;
      if (r->exact) {
        fa = a - 1.0;
        G = sqrt(b2);
      } else {
        sde_discretize(sde, t, &fa, &G);
      }
      cx = 1.0 - fa;
      cs = G * G;
      cz = G;
      break;
    }
    case SDE_PRED_ANCESTRAL: {
      if (sde->kind == SDE_VE) {
        double s2, sp2; /* sigma_i², sigma_{i-1}² */
        if (r->exact) {
          s2 = hi.sigma * hi.sigma;
          sp2 = lo.sigma * lo.sigma;
        } else {
          int i = sde_time_index(sde, t);
          double s = sde_smld_sigma(sde, i), sp = sde_smld_sigma(sde, i - 1);
          s2 = s * s;
          sp2 = sp * sp;
        }
        cx = 1.0;
        cs = r->exact ? b2 : s2 - sp2;
        cz = sqrt(sp2 * cs / s2);
      } else { /* VP: beta_i and sqrt(1 - beta_i), = a of the kernel when exact */
        double beta = r->exact ? b2 : sde_ddpm_beta(sde, sde_time_index(sde, t));
        double root = r->exact ? a : sqrt(1.0 - beta);
        cx = 1.0 / root;
        cs = beta / root;
        cz = sqrt(beta);
      }
      break;
    }
    default:
      return sde_fail(SDE_EINVAL, "unknown predictor %d", (int)r->p->predictor);
  }
  *pcx = cx;
  *pcs = cs;
  *pcz = cz;
  return SDE_OK;
}

/* One predictor update x -> (x, x_mean) at grid time k. */
static int pc_predict(pc_run *r, int k, float t) {
  double cx = 0.0, cs = 0.0, cz = 0.0;
  int rc = sde_rows_score(&r->rows, r->x, t, r->s);
  if (!rc) rc = pc_noise(r);
  if (!rc) rc = predictor_coefs(r, k, t, &cx, &cs, &cz);
  if (!rc) rc = pc_update(r, r->xm, (float)cx, r->x, (float)cs, r->s);
  if (!rc) rc = pc_update(r, r->x, 1.0f, r->xm, (float)cz, r->z);
  return rc;
}

/* A constraint sees host memory: the rows themselves, or host copies of device rows in
 * hx, hxm. */
static int pc_constrain(pc_run *r, float t, sde_pc_constraint_fn constrain, void *ctx,
                        float *hx, float *hxm) {
  const uint32_t draw = r->draw++;
  if (r->rows.be->host_memory) return constrain(ctx, r->rows.n, t, draw, r->x, r->xm);
  int rc = sde_rows_get(&r->rows, hx, r->x);
  if (!rc) rc = sde_rows_get(&r->rows, hxm, r->xm);
  if (!rc) rc = constrain(ctx, r->rows.n, t, draw, hx, hxm);
  if (!rc) rc = sde_rows_put(&r->rows, r->x, hx);
  if (!rc) rc = sde_rows_put(&r->rows, r->xm, hxm);
  return rc;
}

static int pc_validate(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                       const void *x, const void *out) {
  if (!m || !sde || !p) return sde_fail(SDE_EINVAL, "sample: missing model, SDE or parameters");
  if (n < 0 || (n > 0 && (!x || !out))) return sde_fail(SDE_EINVAL, "sample: bad batch arguments");
  int status = sde_validate(sde);
  if (status) return status;
  if ((status = sde_sample_params_check(p, sde))) return sde_fail_context(status, "sample");
  if (p->sampler == SDE_SAMPLER_PC && p->predictor == SDE_PRED_ANCESTRAL && sde->kind == SDE_SUBVP)
    return sde_fail(SDE_EUNSUPPORTED, "ancestral sampling is defined for the VE and VP SDEs only");
  return SDE_OK;
}

static void pc_free(pc_run *r) {
  sde_rows_free(&r->rows, r->x);
  sde_rows_free(&r->rows, r->xm);
  sde_rows_free(&r->rows, r->s);
  sde_rows_free(&r->rows, r->z);
  sde_rows_close(&r->rows);
  free(r->norms);
}

/* The loop: x[n, D] in (the prior draw) and out (the final state); out[n, D] gets x_mean
 * (denoise) or x. Both double as host staging for a constraint on device rows. */
static int pc_loop(pc_run *r, float *x, float *out, sde_pc_constraint_fn constrain, void *ctx) {
  const sde_sample_params *p = r->p;
  const sde_backend *be = r->rows.be;
  const size_t bytes = sizeof(float) * (size_t)r->rows.n * (size_t)r->rows.D;
  int rc = sde_rows_put(&r->rows, r->x, x);
  if (!rc) rc = be->copy(be, r->xm, r->x, bytes);
  for (int k = 0; k < r->steps && !rc; k++) {
    const float t = sde_time_grid(r->eps, r->steps, k);
    if (p->corrector != SDE_CORR_NONE) {
      for (int j = 0; j < p->corrector_steps && !rc; j++) {
        rc = pc_correct(r, k, t);
        if (!rc && constrain) rc = pc_constrain(r, t, constrain, ctx, x, out);
      }
    }
    if (!rc && p->predictor != SDE_PRED_NONE) {
      rc = pc_predict(r, k, t);
      if (!rc && constrain) rc = pc_constrain(r, t, constrain, ctx, x, out);
    }
    if (!rc && p->progress && p->progress(p->user, k + 1, r->steps))
      rc = sde_fail(SDE_ECANCELLED, "sampling cancelled at step %d of %d", k + 1, r->steps);
  }
  if (!rc) rc = sde_rows_get(&r->rows, out, p->denoise ? r->xm : r->x);
  if (!rc) rc = sde_rows_get(&r->rows, x, r->x);
  return rc;
}

int sde_pc_run(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               uint64_t stream0, uint32_t first_draw, float *x, float *out,
               sde_pc_constraint_fn constrain, void *ctx, sde_stats *stats) {
  sde_stats local = {0};
  sde_stats *st = stats ? stats : &local;
  memset(st, 0, sizeof *st);
  const double t_start = sde_now();
  int status = pc_validate(m, sde, p, n, x, out);
  if (status) return status;
  if (n == 0) return SDE_OK;
  pc_run r = {.sde = sde, .p = p, .stream0 = stream0, .draw = first_draw};
  r.steps = p->steps > 0 ? p->steps : sde->N;
  r.exact = r.steps != sde->N;
  r.eps = p->eps > 0.0 ? p->eps : sde_sampling_eps(sde);
  status = sde_rows_open(&r.rows, m, sde, n, st);
  if (!status) status = sde_rows_center_chroma(&r.rows, p);
  if (!status) {
    r.norms = sde_malloc(sizeof(double) * 2 * (size_t)n);
    if (!r.norms || sde_rows_alloc(&r.rows, &r.x) || sde_rows_alloc(&r.rows, &r.xm) ||
        sde_rows_alloc(&r.rows, &r.s) || sde_rows_alloc(&r.rows, &r.z))
      status = sde_fail(SDE_ENOMEM, "sample: out of memory for a batch of %d x %lld", n,
                        (long long)r.rows.D);
  }
  if (!status) status = pc_loop(&r, x, out, constrain, ctx);
  pc_free(&r);
  st->seconds = sde_now() - t_start;
  return status;
}

int sde_sample_from(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    uint64_t stream0, const float *x_T, float *out, sde_stats *stats) {
  int status = pc_validate(m, sde, p, n, x_T, out);
  if (status) return status;
  if (p->sampler == SDE_SAMPLER_ODE) return sde_ode_sample(m, sde, p, n, x_T, out, stats);
  if (sde_sampler_is_fewstep(p->sampler)) {
    const double eps = p->eps > 0.0 ? p->eps : sde_sampling_eps(sde);
    return sde_fewstep_run(m, sde, p, n, stream0, 1, SDE_T, eps, p->denoise, x_T, out, NULL,
                           NULL, stats);
  }
  const size_t nd = (size_t)n * (size_t)sde_model_dim(m);
  float *x = sde_malloc(sizeof(float) * (nd ? nd : 1));
  if (!x) return SDE_ENOMEM;
  memcpy(x, x_T, sizeof(float) * nd);
  status = sde_pc_run(m, sde, p, n, stream0, 1, x, out, NULL, NULL, stats);
  free(x);
  return status;
}

int sde_sample(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               uint64_t stream0, float *out, sde_stats *stats) {
  int status = pc_validate(m, sde, p, n, out, out);
  if (status) return status;
  const int64_t D = sde_model_dim(m);
  float *x_T = sde_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * (size_t)D);
  if (!x_T) return SDE_ENOMEM;
  sde_prior_sample(sde, p->seed, stream0, 0, n, D, x_T); /* draw 0 is the prior */
  status = sde_sample_from(m, sde, p, n, stream0, x_T, out, stats);
  free(x_T);
  return status;
}
