/* The forward SDEs of Song et al. (2021): VE, VP and sub-VP.
 *
 * All three have a drift linear in x, f(x,t) = a(t)·x, and a scalar diffusion g(t),
 * so every function here works on scalar coefficients. Formulas and defaults follow
 * docs/math.md#sdes; see docs/design.md for the choices where the reference code
 * and the paper disagree. */
#ifndef SCORESDE_SDE_H
#define SCORESDE_SDE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SDE_VE = 0, SDE_VP = 1, SDE_SUBVP = 2 } sde_kind;

typedef struct {
  sde_kind kind;
  double sigma_min, sigma_max; /* VE: sigma(t) = sigma_min (sigma_max/sigma_min)^t */
  double beta_min, beta_max;   /* VP, sub-VP: beta(t) = beta_min + t (beta_max - beta_min) */
  int N;                       /* discretisation steps (num_scales) */
} sde_sde;

#define SDE_T 1.0

/* Defaults of the spec: sigma 0.01..50, beta 0.1..20, N = 1000. */
void sde_init(sde_sde *sde, sde_kind kind);
/* Checks parameter ranges; returns SDE_EINVAL with a message when invalid. */
int sde_validate(const sde_sde *sde);

const char *sde_kind_name(sde_kind kind);             /* "ve", "vp", "subvp" */
int sde_kind_from_name(const char *name, sde_kind *kind); /* SDE_OK or SDE_EINVAL */

/* Smallest time used by the samplers of the reference run_lib: 1e-5 (VE), 1e-3 (VP, sub-VP). */
double sde_sampling_eps(const sde_sde *sde);
/* Smallest time of the likelihood ODE and of the training loss: 1e-5. */
#define SDE_LIKELIHOOD_EPS 1e-5

/* Forward SDE at t: drift f = a·x, diffusion g. */
void sde_coefficients(const sde_sde *sde, double t, double *a, double *g);
/* Marginal p_0t(x(t)|x(0)) = N(mean_coef·x(0), std² I). VE std is sigma(t) (reference code). */
void sde_marginal(const sde_sde *sde, double t, double *mean_coef, double *std);
/* Standard deviation of the prior N(0, std² I): sigma_max (VE) or 1. */
double sde_prior_std(const sde_sde *sde);
/* log N(z; 0, prior_std² I) for z[D], accumulated in double. */
double sde_prior_logp(const sde_sde *sde, const float *z, int64_t D);

/* Discrete index of the reference, i = floor(t (N-1)) computed in float32 as torch does. */
int sde_time_index(const sde_sde *sde, float t);
/* SMLD noise level sigma_i = exp(linspace(ln sigma_min, ln sigma_max, N))[i]; 0 for i < 0. */
double sde_smld_sigma(const sde_sde *sde, int i);
/* DDPM beta_i = linspace(beta_min/N, beta_max/N, N)[i]. Defined for VP and sub-VP. */
double sde_ddpm_beta(const sde_sde *sde, int i);

/* Reverse-diffusion discretisation at t: forward step f = fa·x and noise scale G
 * (VE: SMLD, VP: DDPM, sub-VP: Euler-Maruyama with dt = 1/N). */
void sde_discretize(const sde_sde *sde, double t, double *fa, double *G);

/* The reference's discrete time grid linspace(T, eps, steps) emulated in float32. */
float sde_time_grid(double eps, int steps, int k);

#ifdef __cplusplus
}
#endif
#endif
