/* The marginal of the forward SDE as the few-step solvers see it (docs/sampling.md).
 *
 * Under VE, VP and sub-VP, x(t) given x(0) is N(alpha_t x(0), sigma_t² I):
 *   VE      alpha = 1,                sigma = sigma_min (sigma_max/sigma_min)^t
 *   VP      alpha = exp(m(t)),        sigma = sqrt(1 - alpha²)
 *   sub-VP  alpha = exp(m(t)),        sigma = 1 - alpha²
 * with m(t) = -t²(beta_max - beta_min)/4 - t beta_min/2 (sde_marginal). The log-SNR
 * lambda_t = log(alpha_t / sigma_t) falls strictly with t, so it can stand for time.
 *
 * A network or analytic model gives the score s = ∇x log p_t(x). Two other readings of
 * the same quantity are the noise prediction eps = -sigma·s and the data prediction
 * (Tweedie's denoiser) x0 = (x + sigma²·s) / alpha, all linked by x = alpha·x0 + sigma·eps.
 * sde_marg_convert gives the two coefficients of any conversion, so a sampler converts
 * a batch with one axpby per row. */
#ifndef SCORESDE_MARGINAL_H
#define SCORESDE_MARGINAL_H

#include "sde.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  double t;      /* time; 0 for the clean level */
  double alpha;  /* mean coefficient */
  double sigma;  /* standard deviation */
  double lambda; /* log(alpha / sigma); +inf for the clean level */
} sde_marg;

/* What a model output means. */
typedef enum { SDE_PARAM_SCORE = 0, SDE_PARAM_EPS = 1, SDE_PARAM_X0 = 2 } sde_param;

/* The marginal at t. */
sde_marg sde_marg_at(const sde_sde *sde, double t);
/* The noise-free data (alpha 1, sigma 0, lambda +inf): the level below the last grid
 * time of a sampler. */
sde_marg sde_marg_clean(void);
/* The time in [0, T] whose log-SNR is lambda (clamped to the ends). */
double sde_marg_time(const sde_sde *sde, double lambda);

/* to = cx·x + cy·from at the marginal mk, for x at that marginal (from != to). */
void sde_marg_convert(const sde_marg *mk, sde_param from, sde_param to, double *cx,
                      double *cy);

/* The forward kernel from the lower noise level `lo` up to `hi`: x_hi = a·x_lo + b·z with
 * a = alpha_hi/alpha_lo and b² = sigma_hi² - a²·sigma_lo² (> 0 when lambda_hi < lambda_lo).
 * Between the VP marginals of two grid times this is DDPM's sqrt(1 - beta_i) and beta_i
 * (ratios of alpha_bar); under VE it is SMLD's 1 and sigma_i² - sigma_{i-1}². */
void sde_marg_kernel(const sde_marg *hi, const sde_marg *lo, double *a, double *b2);

#ifdef __cplusplus
}
#endif
#endif
