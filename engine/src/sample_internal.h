/* Private declarations of the samplers (sample_*.c), shared with likelihood.c and
 * control*.c. Not installed. */
#ifndef SCORESDE_SAMPLE_INTERNAL_H
#define SCORESDE_SAMPLE_INTERNAL_H

#include <stdint.h>

#include "scoresde/model.h"
#include "scoresde/sample.h"
#include "scoresde/sde.h"

/* ---- ODE solvers (sample_ode.c; used by sample_pc.c and likelihood.c) ---------------- */

/* Right-hand side of an ODE over a batch of n independent per-sample states y[n, dim].
 * Evaluates dy[i] = f(t[i], y[i]) for the active rows i = act[0..na), batched into one
 * call so a score model sees one batch. Rows not in act are neither read nor written.
 * Returns an sde_status (the message set on the calling thread). */
typedef int (*sde_ode_rhs_fn)(void *ctx, int na, const int *act, const double *t,
                              const double *y, double *dy);

typedef struct {
  sde_ode_method method;
  double rtol, atol;  /* RK45 */
  int steps;          /* Euler, Heun: equal steps (> 0) */
  sde_progress_fn progress;
  void *user;
  int64_t max_evals;  /* RK45: evaluations allowed (0: no cap) */
} sde_ode_opts;

/* Integrates y[n, dim] in place from t0 to t1 (either direction). RK45 controls the step
 * of every sample on its own; evaluations stay batched. Adds evals, nfe, accepted and
 * rejected to *st (may be NULL). */
int sde_ode_integrate(sde_ode_rhs_fn rhs, void *ctx, int n, int64_t dim, double *y, double t0,
                      double t1, const sde_ode_opts *o, sde_stats *st);

/* How the probability-flow right-hand side also computes the drift divergence. */
typedef enum { SDE_PF_DIV_NONE = 0, SDE_PF_DIV_EXACT = 1, SDE_PF_DIV_HUTCHINSON = 2 } sde_pf_div;

/* The probability-flow ODE dx/dt = a(t) x - ½ g(t)² s(x, t) as an sde_ode_rhs_fn. With a
 * divergence the state is [x (D), Δlogp] and dΔlogp/dt = a(t) D - ½ g(t)² ∇·s. */
typedef struct {
  const sde_model *m;
  const sde_sde *sde;
  int64_t D;          /* data dimension */
  int64_t dim;        /* state dimension: D, or D + 1 with a divergence */
  sde_pf_div div;
  const float *noise; /* [n, D] Hutchinson probes (SDE_PF_DIV_HUTCHINSON) */
  float *xb, *tb, *sb, *vb, *jb; /* batch scratch: x[n,D], t[n], s[n,D], v[n,D], vjp[n,D] */
  double *divb;       /* [n] */
} sde_pf_ode;

int sde_pf_ode_init(sde_pf_ode *f, const sde_model *m, const sde_sde *sde, int n,
                    sde_pf_div div, const float *noise);
void sde_pf_ode_free(sde_pf_ode *f);
int sde_pf_ode_rhs(void *ctx, int na, const int *act, const double *t, const double *y,
                   double *dy);

/* ODE branch of sde_sample_from: integrates x_T[n, D] from T to eps with p's method, then,
 * if p->denoise, one reverse-diffusion step at eps keeping x_mean. Fills *stats (may be
 * NULL): nfe = ODE evaluations (as the reference), evals also counts the denoise call. */
int sde_ode_sample(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                   const float *x_T, float *out, sde_stats *stats);

/* ---- end ODE solvers ------------------------------------------------------------------ */

/* x [n, 3, hw] (RGB noise) minus the spatial mean of its two chroma channels in the
 * decoupled colours of control.h; tmp [n, 3, hw] (control.c; center_chroma) */
void sde_center_chroma(int n, int64_t hw, float *x, float *tmp);

/* ---- sampler rows (sample_rows.c; used by sample_pc.c and sample_fewstep.c) ------------
 * The samplers' view of a batch: n rows of D floats in the memory of a backend (the
 * network's backend, else the CPU), the score model, and the row ops (noise, axpby, dot)
 * through which every sampler loop runs unchanged on the CPU and on a device. */

struct sde_backend;
struct sde_net_workspace;

typedef struct {
  const sde_model *m;
  const sde_sde *sde;            /* handed to every score call */
  const struct sde_backend *be;  /* where the rows live */
  struct sde_net_workspace *ws;  /* a network on a device: its forward scratch */
  int n;
  int64_t D;
  float *t;                      /* [n] host times of a score call */
  double *a, *c;                 /* [n] host coefficients of an axpby */
  sde_stats *st;                 /* evals and nfe are counted here */
  int64_t chroma_hw;             /* > 0: every noise draw is chroma-centred over hw pixels */
  float *chroma_host;            /* [2, n, D] host scratch of the centring */
} sde_rows;

int sde_rows_open(sde_rows *r, const sde_model *m, const sde_sde *sde, int n, sde_stats *st);
void sde_rows_close(sde_rows *r);
/* buf[n, D] of backend memory; NULL-safe free */
int sde_rows_alloc(const sde_rows *r, float **buf);
void sde_rows_free(const sde_rows *r, float *buf);
/* s[n, D] = score(x[n, D], t) with every row at time t; counts one evaluation */
int sde_rows_score(sde_rows *r, const float *x, float t, float *s);
/* Fresh noise without a chroma mean from now on (p->center_chroma on an RGB image model;
 * a no-op otherwise): the colorizer's stochastic solvers add no chroma mean the network
 * cannot see (docs/sampling.md#center-chroma). */
int sde_rows_center_chroma(sde_rows *r, const sde_sample_params *p);
/* z[n, D]: row i = sde_randn(seed, stream0 + i, draw) (chroma-centred, see above) */
int sde_rows_noise(const sde_rows *r, uint64_t seed, uint64_t stream0, uint32_t draw, float *z);
/* out = a·x + c·y on every row (double, rounded once; out may alias x or y) */
int sde_rows_axpby(sde_rows *r, float *out, double a, const float *x, double c, const float *y);
/* host[n, D] <- buf, buf <- host[n, D] (plain copies on host memory) */
int sde_rows_get(const sde_rows *r, float *host, const float *buf);
int sde_rows_put(const sde_rows *r, float *buf, const float *host);

/* ---- end sampler rows ----------------------------------------------------------------- */

/* ---- few-step solvers (sample_fewstep.c; used by sample_pc.c, sample_ode.c, control.c) */

/* Default number of network evaluations of the few-step solvers (steps = 0). */
#define SDE_FEWSTEP_DEFAULT_STEPS 15

/* Checks the few-step parameters of p; `deterministic` refuses the stochastic solvers
 * (encode, decode). */
int sde_fewstep_validate(const sde_sample_params *p, int deterministic);

/* Called on host memory with every data prediction x0[n, D] of a few-step solver, before
 * the solver uses it; may overwrite it (replacement conditioning in the x0 form). */
typedef int (*sde_x0_constraint_fn)(void *ctx, int n, float *x0);

/* Solves the probability-flow ODE (dpmpp-2m-sde: the reverse SDE) with the few-step solver
 * p->sampler from t0 to t1 on x[n, D] (t0 > t1 samples or decodes; t0 < t1 encodes,
 * deterministic solvers only). With `denoise` (t0 > t1) out[n, D] gets the data
 * prediction at t1, else the state at t1. Noise draws are numbered from first_draw. */
int sde_fewstep_run(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    uint64_t stream0, uint32_t first_draw, double t0, double t1, int denoise,
                    const float *x, float *out, sde_x0_constraint_fn constrain, void *ctx,
                    sde_stats *stats);

/* ---- end few-step solvers ------------------------------------------------------------- */

/* ---- PC sampler (sample_pc.c; used by control.c) -------------------------------------- */

/* Called after every corrector and predictor update at grid time t; may overwrite x and
 * x_mean [n, D]. `draw` is a fresh noise draw id the constraint may use. */
typedef int (*sde_pc_constraint_fn)(void *ctx, int n, float t, uint32_t draw, float *x,
                                    float *x_mean);

/* The PC loop from x[n, D] (the prior draw, overwritten); noise draws are numbered from
 * first_draw. out[n, D] receives x_mean (denoise) or x. */
int sde_pc_run(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               uint64_t stream0, uint32_t first_draw, float *x, float *out,
               sde_pc_constraint_fn constrain, void *ctx, sde_stats *stats);

/* ---- end PC sampler ------------------------------------------------------------------- */

#endif
