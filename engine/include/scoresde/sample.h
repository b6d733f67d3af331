/* Samplers: predictor-corrector (PC) and the probability-flow ODE, plus encode/decode.
 *
 * Conventions shared by every sampler:
 *  - x is [n, D] float32 in model space (scaled data: [0,1] or [-1,1]).
 *  - Sample i draws its noise from stream (stream0 + i); draws are numbered by the
 *    sampler, so a sample's trajectory depends only on (seed, stream, settings).
 *    The one exception is the Langevin corrector, whose step size uses norms averaged
 *    over the batch, as the reference does (docs/design.md).
 *  - NFE counts batched score evaluations, as the reference reports it.
 *  - progress(user, done, total) is called between steps (few-step solvers: between
 *    evaluations); a non-zero return cancels the run promptly with SDE_ECANCELLED. */
#ifndef SCORESDE_SAMPLE_H
#define SCORESDE_SAMPLE_H

#include <float.h>
#include <stdint.h>
#include "model.h"
#include "sde.h"

#ifdef __cplusplus
extern "C" {
#endif

/* pc and ode are the references; the others are few-step solvers of the probability-flow
 * ODE (dpmpp-2m-sde: of the reverse SDE) in the data-prediction form, where `steps` counts
 * network evaluations: N, heun N or N + 1 (docs/sampling.md). Names: "pc", "ode", "ddim",
 * "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun". */
typedef enum {
  SDE_SAMPLER_PC = 0,
  SDE_SAMPLER_ODE = 1,
  SDE_SAMPLER_DDIM = 2,
  SDE_SAMPLER_DPMPP_2M = 3,
  SDE_SAMPLER_DPMPP_3M = 4,
  SDE_SAMPLER_DPMPP_2M_SDE = 5,
  SDE_SAMPLER_HEUN = 6,
} sde_sampler;
#define SDE_SAMPLER_COUNT 7
/* Time grid of the few-step solvers: uniform in log-SNR, uniform in t, or the Karras et al.
 * rho = 7 grid in sigma (default). Names: "logsnr", "time", "karras". */
typedef enum { SDE_SCHEDULE_LOGSNR = 0, SDE_SCHEDULE_TIME = 1, SDE_SCHEDULE_KARRAS = 2 } sde_schedule;
#define SDE_SCHEDULE_COUNT 3
typedef enum {
  SDE_PRED_NONE = 0,
  SDE_PRED_EULER_MARUYAMA = 1,
  SDE_PRED_REVERSE_DIFFUSION = 2,
  SDE_PRED_ANCESTRAL = 3,
} sde_predictor;
typedef enum { SDE_CORR_NONE = 0, SDE_CORR_LANGEVIN = 1, SDE_CORR_ALD = 2 } sde_corrector;
typedef enum { SDE_ODE_RK45 = 0, SDE_ODE_EULER = 1, SDE_ODE_HEUN = 2 } sde_ode_method;

typedef int (*sde_progress_fn)(void *user, int done, int total);

typedef struct {
  sde_sampler sampler;
  sde_predictor predictor;
  sde_corrector corrector;
  double snr;           /* Langevin / ALD signal-to-noise ratio (0.16) */
  int corrector_steps;  /* corrector iterations per step (1) */
  int steps;            /* PC grid size (exact kernels when != sde->N); fixed-step ODE
                         * steps; 0 = sde->N. Few-step solvers: evaluations, 0 = 15 */
  double eps;           /* smallest time; 0 = sde_sampling_eps() */
  int denoise;          /* final noise removal (Tweedie step; few-step: the data
                         * prediction at eps) (1) */
  sde_ode_method ode_method;
  double rtol, atol;    /* RK45 tolerances (1e-5; at least SDE_ODE_MIN_TOL is used) */
  sde_schedule schedule; /* few-step solvers' time grid (karras) */
  int lower_order_final; /* few-step multistep solvers: lower the order in the last steps (1) */
  double churn;         /* heun: stochastic churn S_churn (0 = deterministic) */
  int clip_denoised;    /* few-step solvers: clamp every data prediction to the model's
                         * data range, [-1,1] when centered else [0,1] (DDPM's
                         * clip_denoised); image models only, not encode; pc and ode
                         * ignore it (0) */
  double t_start;       /* colorize with a few-step solver: start at this time from the
                         * gray image noised to it (SDEdit) instead of from the prior at T;
                         * smaller keeps the colours nearer the gray (0 or T: the prior) */
  int center_chroma;    /* colorize: the starting noise's two chroma channels (decoupled
                         * colours) have their spatial mean removed, and so has every fresh
                         * draw of a stochastic sampler (pc, dpmpp-2m-sde, heun with churn),
                         * so the picture's overall tint comes from the model and not from
                         * the noise (docs/sampling.md#center-chroma) (0) */
  uint64_t seed;
  sde_progress_fn progress;
  void *user;
  int64_t max_evals;    /* RK45: cap on the score evaluations of one solve; reaching it fails
                         * with SDE_ENUMERIC (0 = SDE_ODE_DEFAULT_MAX_EVALS) */
} sde_sample_params;

/* The adaptive ODE solver stops with an error after this many evaluations by default. A
 * solve usually takes 100-1000; a stiff one (an empirical model far from its data, at
 * rtol 1e-6) some 70000. The cap bounds what would otherwise have no end. */
#define SDE_ODE_DEFAULT_MAX_EVALS 100000
/* The smallest rtol and atol the solvers use: the score is float32, known to about
 * FLT_EPSILON relative, so tighter tolerances only shrink the steps towards its rounding
 * noise (and 1e-14 never ended). */
#define SDE_ODE_MIN_TOL ((double)FLT_EPSILON)
/* Upper bounds of steps and corrector_steps. */
#define SDE_MAX_STEPS 1000000
#define SDE_MAX_CORRECTOR_STEPS 100000

typedef struct {
  int64_t nfe;          /* score evaluations, counted as the reference does */
  int64_t evals;        /* batched score calls actually made */
  int64_t accepted, rejected; /* RK45 steps (sums over samples) */
  double seconds;
} sde_stats;

void sde_sample_params_init(sde_sample_params *p);
/* Checks p for the sampler it names (the ODE entry points check it as the ode sampler):
 * SDE_EINVAL with a message naming the parameter and its range. sde may be NULL; then
 * steps = 0 (the SDE's N) is not judged. Every sampler calls this; front ends call it on
 * their settings to refuse them before any work. */
int sde_sample_params_check(const sde_sample_params *p, const sde_sde *sde);

const char *sde_sampler_name(sde_sampler s);       /* "pc", "ode", "dpmpp-2m", ... */
const char *sde_schedule_name(sde_schedule s);     /* "logsnr", "time", "karras" */
int sde_sampler_from_name(const char *s, sde_sampler *out);
/* True for ddim, dpmpp-2m, dpmpp-3m, dpmpp-2m-sde and heun (steps = evaluations). */
int sde_sampler_is_fewstep(sde_sampler s);
int sde_schedule_from_name(const char *s, sde_schedule *out);
const char *sde_predictor_name(sde_predictor p);   /* "euler_maruyama", ... */
const char *sde_corrector_name(sde_corrector c);   /* "langevin", "ald", "none" */
const char *sde_ode_method_name(sde_ode_method m); /* "rk45", "euler", "heun" */
/* Parse names; accept the reference names and short forms (em, rd, ancestral). */
int sde_predictor_from_name(const char *s, sde_predictor *p);
int sde_corrector_from_name(const char *s, sde_corrector *c);
int sde_ode_method_from_name(const char *s, sde_ode_method *m);

/* Draws n samples into out[n, D] with the sampler chosen in p. A few-step solver returns
 * SDE_ENUMERIC when an output is not finite. */
int sde_sample(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               uint64_t stream0, float *out, sde_stats *stats);

/* Same, starting from given prior draws x_T[n, D]. */
int sde_sample_from(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                    uint64_t stream0, const float *x_T, float *out, sde_stats *stats);

/* Fills x[n, D] with prior samples N(0, prior_std² I), keyed by (seed, stream0+i, step). */
void sde_prior_sample(const sde_sde *sde, uint64_t seed, uint64_t stream0, uint32_t step, int n,
                      int64_t D, float *x);

/* Probability-flow ODE between two times, in place on x[n, D], with the method and
 * tolerances of p. t0 > t1 integrates backwards. The state is held in double. */
int sde_ode_solve(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                  float *x, double t0, double t1, sde_stats *stats);

/* Encode data x(eps) -> latent x(T); decode latent x(T) -> data x(eps). Decode applies
 * no denoising step, so decode(encode(x)) ≈ x to the ODE tolerance. p->sampler pc or ode:
 * the ODE with p->ode_method; ddim, dpmpp-2m, dpmpp-3m, heun (no churn): that solver with
 * p->steps evaluations on the same grid both ways; stochastic solvers are refused. */
int sde_encode(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               const float *data, float *latent, sde_stats *stats);
int sde_decode(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
               const float *latent, float *data, sde_stats *stats);

/* Spherical interpolation between two latents of D elements (falls back to lerp when
 * they are parallel). */
void sde_slerp(const float *a, const float *b, int64_t D, double w, float *out);

#ifdef __cplusplus
}
#endif
#endif
