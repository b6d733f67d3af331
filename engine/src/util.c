/* Threads and clocks. */
#include <omp.h>
#include <time.h>

#include "scoresde/scoresde.h"

void sde_set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
}

int sde_get_num_threads(void) { return omp_get_max_threads(); }

double sde_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
