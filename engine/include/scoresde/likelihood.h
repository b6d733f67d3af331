/* Exact likelihood through the probability-flow ODE (docs/math.md#likelihood).
 *
 * log p_eps(x) = log p_T(x(T)) + ∫_eps^T ∇·f̃(x(t), t) dt, with f̃ the PF-ODE drift,
 * integrated forwards with RK45 on the augmented state [x, Δlogp]. The divergence is
 * exact when the model has one, else the Hutchinson-Skilling estimate εᵀ(∂f̃/∂x)ε with ε
 * drawn once per sample and held fixed along the trajectory. */
#ifndef SCORESDE_LIKELIHOOD_H
#define SCORESDE_LIKELIHOOD_H

#include "model.h"
#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SDE_DIV_AUTO = 0,       /* exact if available, else Rademacher */
  SDE_DIV_EXACT = 1,
  SDE_DIV_RADEMACHER = 2,
  SDE_DIV_GAUSSIAN = 3,
} sde_divergence;

typedef struct {
  double rtol, atol;      /* 1e-5; at least SDE_ODE_MIN_TOL is used */
  double eps;             /* lower time limit (1e-5) */
  sde_divergence divergence;
  uint64_t seed;          /* Hutchinson noise, stream = stream0 + i */
  sde_progress_fn progress;
  void *user;
  int64_t max_evals;      /* cap on the evaluations of the solve (0 = SDE_ODE_DEFAULT_MAX_EVALS) */
} sde_likelihood_params;

void sde_likelihood_params_init(sde_likelihood_params *p);
const char *sde_divergence_name(sde_divergence d);
int sde_divergence_from_name(const char *s, sde_divergence *d);

/* logp[n] (nats) of x[n, D] under p_eps; z[n, D] (may be NULL) receives x(T). */
int sde_likelihood(const sde_model *m, const sde_sde *sde, const sde_likelihood_params *p, int n,
                   uint64_t stream0, const float *x, double *logp, float *z, sde_stats *stats);

/* bits/dim = -logp / ln 2 / D + offset. The offset converts a density of scaled data to
 * one of 8-bit pixels dequantised to [0,256): 8 for [0,1] data, 7 for [-1,1] data, 0 for
 * non-image data (docs/math.md#bpd). */
double sde_bits_per_dim(double logp, int64_t D, double offset);
double sde_dequant_offset(const sde_model *m);

/* Uniform dequantisation of images in [0,1] that came from 8-bit pixels:
 * x = (u + 255·x) / 256 with u ~ U[0,1) keyed by (seed, stream0 + i), then the scaler. */
void sde_dequantize(const sde_model *m, uint64_t seed, uint64_t stream0, int n, float *x);

#ifdef __cplusplus
}
#endif
#endif
