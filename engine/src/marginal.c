/* Marginal coefficients, log-SNR and the score / eps / x0 conversions (marginal.h). */
#include <math.h>

#include "scoresde/marginal.h"

sde_marg sde_marg_at(const sde_sde *sde, double t) {
  sde_marg mk = {.t = t};
  sde_marginal(sde, t, &mk.alpha, &mk.sigma);
  mk.lambda = log(mk.alpha) - log(mk.sigma);
  return mk;
}

sde_marg sde_marg_clean(void) {
  return (sde_marg){.t = 0.0, .alpha = 1.0, .sigma = 0.0, .lambda = INFINITY};
}

double sde_marg_time(const sde_sde *sde, double lambda) {
  /* lambda falls with t: bisect [0, T] until the interval stops shrinking */
  double lo = 0.0, hi = SDE_T;
  for (;;) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) return mid;
    if (sde_marg_at(sde, mid).lambda > lambda) lo = mid;
    else hi = mid;
  }
}

/* The parametrisation p as px·x + pe·eps, from x = alpha·x0 + sigma·eps. */
static void as_x_eps(const sde_marg *mk, sde_param p, double *px, double *pe) {
  *px = p == SDE_PARAM_X0 ? 1.0 / mk->alpha : 0.0;
  *pe = p == SDE_PARAM_X0 ? -mk->sigma / mk->alpha : p == SDE_PARAM_SCORE ? -1.0 / mk->sigma : 1.0;
}

void sde_marg_convert(const sde_marg *mk, sde_param from, sde_param to, double *cx,
                      double *cy) {
  double fx, fe, tx, te;
  as_x_eps(mk, from, &fx, &fe);
  as_x_eps(mk, to, &tx, &te);
  *cy = te / fe; /* eliminate eps: eps = (from - fx·x) / fe */
  *cx = tx - *cy * fx;
}

void sde_marg_kernel(const sde_marg *hi, const sde_marg *lo, double *a, double *b2) {
  *a = hi->alpha / lo->alpha;
  /* sigma_hi² - a²sigma_lo² = sigma_hi² (1 - exp(2(lambda_hi - lambda_lo))), without
   * cancellation between close levels */
  *b2 = -hi->sigma * hi->sigma * expm1(2.0 * (hi->lambda - lo->lambda));
}
