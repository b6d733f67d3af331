/* Comparing two tensors in tests: the relative L2 distance of a to the reference b. */
#ifndef SCORESDE_TESTS_COMPARE_H
#define SCORESDE_TESTS_COMPARE_H

#include <math.h>
#include <stdint.h>

/* ||a − b|| / ||b|| over n floats, in double (||b|| = 0: the absolute distance) */
static inline double rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num / (den > 0 ? den : 1));
}

#endif
