/* The NCSNv2 noise-scale planner (Song & Ermon 2020, techniques 1, 2 and 4). */
#ifndef SCORESDE_PLAN_H
#define SCORESDE_PLAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Technique 1: sigma_1 = the maximum Euclidean distance between two of the n points x[n, D]. */
int sde_plan_sigma_max(int n, int64_t D, const float *x, double *sigma_max);

/* Technique 2: the ratio gamma > 1 with
 * Phi(sqrt(2D)(gamma-1) + 3gamma) - Phi(sqrt(2D)(gamma-1) - 3gamma) = target (0.5). */
double sde_plan_gamma(int64_t D, double target);
/* Number of geometric scales from sigma_1 down to sigma_L with ratio at most gamma. */
int sde_plan_num_scales(double sigma_1, double sigma_L, double gamma);

/* Technique 4: the right-hand side of the step-size equation, s_T²/sigma_i², for step
 * size eps, T steps per scale, ratio gamma and smallest scale sigma_L. */
double sde_plan_step_ratio(double eps, int T, double gamma, double sigma_L);
/* The eps that brings the ratio closest to 1. */
double sde_plan_step_size(int T, double gamma, double sigma_L);

#ifdef __cplusplus
}
#endif
#endif
