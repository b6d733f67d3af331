/* Test mixtures shared by the engine tests, and the sliced Wasserstein distance. */
#ifndef SDE_TEST_MIXTURES_H
#define SDE_TEST_MIXTURES_H

#include <math.h>
#include <stdlib.h>

#include "scoresde/scoresde.h"

/* 2-D, 3 components, well separated (8+ std apart) so classification is unambiguous. */
static inline sde_model *mixture_2d(void) {
  const double w[3] = {0.5, 0.3, 0.2};
  const double mu[6] = {-5.0, 0.0, 4.0, 4.0, 2.0, -6.0};
  const double sd[6] = {0.6, 0.9, 1.0, 0.5, 0.7, 0.7};
  sde_model *m = NULL;
  if (sde_gmm_create(3, 2, w, mu, sd, &m)) return NULL;
  return m;
}

/* 64-D, 4 components with per-dimension stds in [0.3, 1], means in [-3, 3]. */
static inline sde_model *mixture_64d(void) {
  enum { K = 4, D = 64 };
  double w[K] = {0.4, 0.3, 0.2, 0.1}, mu[K * D], sd[K * D];
  float u[2 * K * D];
  sde_randu(1234, 0, 0, u, 2 * K * D);
  for (int i = 0; i < K * D; i++) {
    mu[i] = 6.0 * u[i] - 3.0;
    sd[i] = 0.3 + 0.7 * u[K * D + i];
  }
  sde_model *m = NULL;
  if (sde_gmm_create(K, D, w, mu, sd, &m)) return NULL;
  return m;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sliced 1-Wasserstein distance between two equal-size samples a[n, D] and b[n, D]:
 * the mean over `dirs` random unit directions of the 1-D W1 between projections. The
 * directions run in parallel (where the test is built with OpenMP); their distances are
 * summed in order, so the result does not depend on the threads. */
static inline double sliced_w1(int n, int D, const float *a, const float *b, int dirs,
                               uint64_t seed) {
  double *w = malloc(sizeof(double) * dirs);
#pragma omp parallel for schedule(dynamic)
  for (int r = 0; r < dirs; r++) {
    double *pa = malloc(sizeof(double) * n), *pb = malloc(sizeof(double) * n);
    float *dir = malloc(sizeof(float) * D);
    sde_randn(seed, 0, (uint32_t)r, dir, D);
    double norm = 0.0;
    for (int d = 0; d < D; d++) norm += (double)dir[d] * dir[d];
    norm = sqrt(norm);
    for (int i = 0; i < n; i++) {
      double sa = 0.0, sb = 0.0;
      for (int d = 0; d < D; d++) {
        sa += (double)a[(size_t)i * D + d] * dir[d];
        sb += (double)b[(size_t)i * D + d] * dir[d];
      }
      pa[i] = sa / norm;
      pb[i] = sb / norm;
    }
    qsort(pa, n, sizeof(double), cmp_double);
    qsort(pb, n, sizeof(double), cmp_double);
    double acc = 0.0;
    for (int i = 0; i < n; i++) acc += fabs(pa[i] - pb[i]);
    w[r] = acc / n;
    free(pa);
    free(pb);
    free(dir);
  }
  double total = 0.0;
  for (int r = 0; r < dirs; r++) total += w[r];
  free(w);
  return total / dirs;
}

#endif
