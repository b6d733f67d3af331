/* Predictor-corrector samplers (docs/score_sde_spec.md §3.1-3.3). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "internal.h"
#include "scoresde/error.h"
#include "scoresde/network.h"
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
  p->schedule = SDE_SCHEDULE_LOGSNR;
  p->lower_order_final = 1;
  p->churn = 0.0;
  p->seed = 0;
  p->max_evals = SDE_ODE_DEFAULT_MAX_EVALS;
}

static const char *const sampler_names[SDE_SAMPLER_COUNT] = {
    "pc", "ode", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun"};
static const char *const schedule_names[SDE_SCHEDULE_COUNT] = {"logsnr", "time", "karras"};

const char *sde_sampler_name(sde_sampler s) {
  return (unsigned)s < SDE_SAMPLER_COUNT ? sampler_names[s] : "?";
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

/* Working state of one PC run. */
typedef struct {
  const sde_model *m;
  sde_sde sde;     /* a copy whose N is the grid size */
  const sde_sample_params *p;
  int n;
  int64_t D;
  uint64_t stream0;
  uint32_t draw;   /* next noise draw id: the `step` of the RNG key */
  float *t;        /* [n] time of each sample (all equal here) */
  float *score;    /* [n, D] */
  float *noise;    /* [n, D] */
  double *norms;   /* [2n] per-sample gradient and noise norms */
  sde_stats *st;
} pc_run;

static int pc_score(pc_run *r, const float *x, float t) {
  for (int i = 0; i < r->n; i++) r->t[i] = t;
  r->st->evals++;
  r->st->nfe++;
  return sde_model_score(r->m, &r->sde, r->n, x, r->t, r->score);
}

static void pc_noise(pc_run *r) {
  const uint32_t draw = r->draw++;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < r->n; i++)
    sde_randn(r->p->seed, r->stream0 + (uint64_t)i, draw, r->noise + (size_t)i * r->D, r->D);
}

/* α of the Langevin step: 1 for VE, 1 - β_i for VP. The reference reads VP tables that
 * sub-VP lacks (it crashes); we use the same DDPM α for sub-VP (docs/design.md). */
static double langevin_alpha(const pc_run *r, float t) {
  if (r->sde.kind == SDE_VE) return 1.0;
  return 1.0 - sde_ddpm_beta(&r->sde, sde_time_index(&r->sde, t));
}

/* The corrector's step size ε at t (Langevin: from the per-sample norms r->norms[2n]).
 * Returns 0 when the score is zero everywhere (Langevin has nothing to correct). */
static int corrector_step(const pc_run *r, float t, double *step) {
  const sde_sample_params *p = r->p;
  const int n = r->n;
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
    *step = 2.0 * langevin_alpha(r, t) * ratio * ratio;
  } else { /* annealed Langevin: ε = 2 α (snr σ(t))² */
    double m, std;
    sde_marginal(&r->sde, t, &m, &std);
    *step = 2.0 * langevin_alpha(r, t) * (p->snr * std) * (p->snr * std);
  }
  return 1;
}

/* One corrector iteration: x_mean = x + ε s, x = x_mean + sqrt(2ε) z. */
static int pc_correct(pc_run *r, float *x, float *x_mean, float t) {
  const sde_sample_params *p = r->p;
  int status = pc_score(r, x, t);
  if (status) return status;
  pc_noise(r);
  const int64_t D = r->D;
  const int n = r->n;
  double step;
  if (p->corrector == SDE_CORR_LANGEVIN) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
      double g2 = 0.0, z2 = 0.0;
      for (int64_t d = 0; d < D; d++) {
        g2 += (double)r->score[(size_t)i * D + d] * r->score[(size_t)i * D + d];
        z2 += (double)r->noise[(size_t)i * D + d] * r->noise[(size_t)i * D + d];
      }
      r->norms[i] = sqrt(g2);
      r->norms[n + i] = sqrt(z2);
    }
  }
  if (!corrector_step(r, t, &step)) return SDE_OK; /* zero score: nothing to correct */
  const float eps = (float)step, noise_scale = (float)sqrt(2.0 * step);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < (int64_t)n * D; j++) {
    x_mean[j] = x[j] + eps * r->score[j];
    x[j] = x_mean[j] + noise_scale * r->noise[j];
  }
  return SDE_OK;
}

static int predictor_coefs(const pc_run *r, float t, double *pcx, double *pcs, double *pcz);

/* One predictor update x -> (x, x_mean) at grid time t. */
static int pc_predict(pc_run *r, float *x, float *x_mean, float t) {
  const int64_t nd = (int64_t)r->n * r->D;
  if (r->p->predictor == SDE_PRED_NONE) {
    memcpy(x_mean, x, sizeof(float) * (size_t)nd);
    return SDE_OK;
  }
  int status = pc_score(r, x, t);
  if (status) return status;
  pc_noise(r);
  double cx, cs, cz;
  if ((status = predictor_coefs(r, t, &cx, &cs, &cz))) return status;
  const float fx = (float)cx, fs = (float)cs, fz = (float)cz;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < nd; j++) {
    x_mean[j] = fx * x[j] + fs * r->score[j];
    x[j] = x_mean[j] + fz * r->noise[j];
  }
  return SDE_OK;
}

/* Every predictor is x_mean = cx·x + cs·s, x = x_mean + cz·z. */
static int predictor_coefs(const pc_run *r, float t, double *pcx, double *pcs, double *pcz) {
  const sde_sde *sde = &r->sde;
  double cx, cs, cz;
  switch (r->p->predictor) {
    case SDE_PRED_EULER_MARUYAMA: {
      double a, g, dt = 1.0 / sde->N; /* dt = 1/N as the reference (trap 4) */
      sde_coefficients(sde, t, &a, &g);
      cx = 1.0 - a * dt;
      cs = g * g * dt;
      cz = g * sqrt(dt);
      break;
    }
    case SDE_PRED_REVERSE_DIFFUSION: {
      double fa, G;
      sde_discretize(sde, t, &fa, &G);
      cx = 1.0 - fa;
      cs = G * G;
      cz = G;
      break;
    }
    case SDE_PRED_ANCESTRAL: {
      int i = sde_time_index(sde, t);
      if (sde->kind == SDE_VE) {
        double s = sde_smld_sigma(sde, i), sp = sde_smld_sigma(sde, i - 1);
        cx = 1.0;
        cs = s * s - sp * sp;
        cz = sqrt(sp * sp * (s * s - sp * sp) / (s * s));
      } else {
        double beta = sde_ddpm_beta(sde, i);
        cx = 1.0 / sqrt(1.0 - beta);
        cs = beta / sqrt(1.0 - beta);
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

/* ---- the PC loop on a device ------------------------------------------------------------
 * With a network model on a device backend, x, x_mean, the score and the noise stay in
 * backend memory for the whole loop: noise from randn_rows with the host keys (seed,
 * stream0 + i, draw), updates as axpby_rows with the host coefficients, Langevin norms from
 * dot_rows. Only the result is downloaded (and x, x_mean around a constraint, which works
 * on host memory). */

typedef struct {
  const sde_backend *be;
  sde_net_workspace *ws; /* the network's scratch for the whole loop */
  float *x, *xm, *s, *z; /* [n, D] backend memory */
  double *a, *c;         /* [n] host coefficients */
} pc_dev;

static int pcd_score(pc_run *r, pc_dev *d, float t) {
  for (int i = 0; i < r->n; i++) r->t[i] = t;
  r->st->evals++;
  r->st->nfe++;
  return sde_network_score_dev_ws(r->m, &r->sde, r->n, d->x, r->t, d->s, d->ws);
}

static int pcd_noise(pc_run *r, pc_dev *d) {
  return d->be->randn_rows(d->be, d->z, r->p->seed, r->stream0, r->draw++, r->n, r->D);
}

/* xm = ca·x + cb·s; x = xm + cz·z, with the float-rounded coefficients of the host loop */
static int pcd_update(pc_run *r, pc_dev *d, float ca, float cb, float cz) {
  const int n = r->n;
  for (int i = 0; i < n; i++) {
    d->a[i] = ca;
    d->c[i] = cb;
  }
  int rc = d->be->axpby_rows(d->be, d->xm, d->a, d->x, d->c, d->s, n, r->D);
  for (int i = 0; i < n; i++) {
    d->a[i] = 1.0;
    d->c[i] = cz;
  }
  if (!rc) rc = d->be->axpby_rows(d->be, d->x, d->a, d->xm, d->c, d->z, n, r->D);
  return rc;
}

static int pcd_correct(pc_run *r, pc_dev *d, float t) {
  int rc = pcd_score(r, d, t);
  if (!rc) rc = pcd_noise(r, d);
  if (rc) return rc;
  const int n = r->n;
  if (r->p->corrector == SDE_CORR_LANGEVIN) {
    if ((rc = d->be->dot_rows(d->be, r->norms, d->s, d->s, n, r->D)) ||
        (rc = d->be->dot_rows(d->be, r->norms + n, d->z, d->z, n, r->D)))
      return rc;
    for (int i = 0; i < 2 * n; i++) r->norms[i] = sqrt(r->norms[i]);
  }
  double step;
  if (!corrector_step(r, t, &step)) return SDE_OK;
  return pcd_update(r, d, 1.0f, (float)step, (float)sqrt(2.0 * step));
}

static int pcd_predict(pc_run *r, pc_dev *d, float t) {
  const size_t bytes = sizeof(float) * (size_t)r->n * (size_t)r->D;
  if (r->p->predictor == SDE_PRED_NONE) return d->be->copy(d->be, d->xm, d->x, bytes);
  int rc = pcd_score(r, d, t);
  if (!rc) rc = pcd_noise(r, d);
  double cx, cs, cz;
  if (!rc) rc = predictor_coefs(r, t, &cx, &cs, &cz);
  if (!rc) rc = pcd_update(r, d, (float)cx, (float)cs, (float)cz);
  return rc;
}

/* A constraint on host copies of x and x_mean */
static int pcd_constrain(pc_run *r, pc_dev *d, float t, float *x, float *x_mean,
                         sde_pc_constraint_fn constrain, void *ctx) {
  const size_t bytes = sizeof(float) * (size_t)r->n * (size_t)r->D;
  int rc = d->be->download(d->be, x, d->x, bytes);
  if (!rc) rc = d->be->download(d->be, x_mean, d->xm, bytes);
  if (!rc) rc = constrain(ctx, r->n, t, r->draw++, x, x_mean);
  if (!rc) rc = d->be->upload(d->be, d->x, x, bytes);
  if (!rc) rc = d->be->upload(d->be, d->xm, x_mean, bytes);
  return rc;
}

static int pc_loop_device(pc_run *r, const sde_backend *be, int steps, double eps, float *x,
                          float *x_mean, float *out, sde_pc_constraint_fn constrain,
                          void *ctx) {
  const sde_sample_params *p = r->p;
  const size_t bytes = sizeof(float) * (size_t)r->n * (size_t)r->D;
  pc_dev d = {.be = be};
  int status = SDE_OK;
  d.a = sde_malloc(sizeof(double) * 2 * (size_t)r->n);
  if (!d.a) return SDE_ENOMEM;
  d.c = d.a + r->n;
  if ((status = sde_net_workspace_create(r->m, r->n, &d.ws)) ||
      (status = be->alloc(be, bytes, (void **)&d.x)) ||
      (status = be->alloc(be, bytes, (void **)&d.xm)) ||
      (status = be->alloc(be, bytes, (void **)&d.s)) ||
      (status = be->alloc(be, bytes, (void **)&d.z)) ||
      (status = be->upload(be, d.x, x, bytes)) || (status = be->upload(be, d.xm, x, bytes)))
    goto done;
  for (int k = 0; k < steps && !status; k++) {
    const float t = sde_time_grid(eps, steps, k);
    if (p->corrector != SDE_CORR_NONE) {
      for (int j = 0; j < p->corrector_steps && !status; j++) {
        status = pcd_correct(r, &d, t);
        if (!status && constrain) status = pcd_constrain(r, &d, t, x, x_mean, constrain, ctx);
      }
    }
    if (!status && p->predictor != SDE_PRED_NONE) {
      status = pcd_predict(r, &d, t);
      if (!status && constrain) status = pcd_constrain(r, &d, t, x, x_mean, constrain, ctx);
    }
    if (!status && p->progress && p->progress(p->user, k + 1, steps))
      status = sde_fail(SDE_ECANCELLED, "sampling cancelled at step %d of %d", k + 1, steps);
  }
  if (!status) status = be->download(be, out, p->denoise ? d.xm : d.x, bytes);
  if (!status) status = be->download(be, x, d.x, bytes); /* x holds the final state, as on the host */
done:
  be->synchronize(be); /* nothing may still use the buffers freed here */
  sde_net_workspace_free(d.ws);
  be->free(be, d.x);
  be->free(be, d.xm);
  be->free(be, d.s);
  be->free(be, d.z);
  free(d.a);
  return status;
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
  pc_run r = {.m = m, .sde = *sde, .p = p, .n = n, .D = sde_model_dim(m), .stream0 = stream0,
              .draw = first_draw, .st = st};
  const int steps = p->steps > 0 ? p->steps : sde->N;
  r.sde.N = steps; /* the grid and the discretisation share N, as in the reference */
  const double eps = p->eps > 0.0 ? p->eps : sde_sampling_eps(sde);
  const size_t nd = (size_t)n * (size_t)r.D;
  float *x_mean = sde_malloc(sizeof(float) * nd);
  r.t = sde_malloc(sizeof(float) * (size_t)n);
  r.score = sde_malloc(sizeof(float) * nd);
  r.noise = sde_malloc(sizeof(float) * nd);
  r.norms = sde_malloc(sizeof(double) * 2 * (size_t)n);
  if (!x_mean || !r.t || !r.score || !r.noise || !r.norms) {
    status = sde_fail(SDE_ENOMEM, "sample: out of memory for a batch of %d x %lld", n,
                      (long long)r.D);
    goto done;
  }
  const sde_backend *be = sde_network_backend(m);
  if (be && !be->host_memory) {
    status = pc_loop_device(&r, be, steps, eps, x, x_mean, out, constrain, ctx);
    goto done;
  }
  memcpy(x_mean, x, sizeof(float) * nd);
  for (int k = 0; k < steps && !status; k++) {
    const float t = sde_time_grid(eps, steps, k);
    if (p->corrector != SDE_CORR_NONE) {
      for (int j = 0; j < p->corrector_steps && !status; j++) {
        status = pc_correct(&r, x, x_mean, t);
        if (!status && constrain) status = constrain(ctx, n, t, r.draw++, x, x_mean);
      }
    }
    if (!status && p->predictor != SDE_PRED_NONE) {
      status = pc_predict(&r, x, x_mean, t);
      if (!status && constrain) status = constrain(ctx, n, t, r.draw++, x, x_mean);
    }
    if (!status && p->progress && p->progress(p->user, k + 1, steps))
      status = sde_fail(SDE_ECANCELLED, "sampling cancelled at step %d of %d", k + 1, steps);
  }
  if (!status) memcpy(out, p->denoise ? x_mean : x, sizeof(float) * nd);
done:
  free(x_mean);
  free(r.t);
  free(r.score);
  free(r.noise);
  free(r.norms);
  st->seconds = sde_now() - t_start;
  return status;
}

int sde_sample_from(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    uint64_t stream0, const float *x_T, float *out, sde_stats *stats) {
  int status = pc_validate(m, sde, p, n, x_T, out);
  if (status) return status;
  if (p->sampler == SDE_SAMPLER_ODE) return sde_ode_sample(m, sde, p, n, x_T, out, stats);
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
