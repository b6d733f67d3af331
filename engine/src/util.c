/* Threads and clocks. */
#include <omp.h>
#include <time.h>

#include "parallel.h"
#include "scoresde/scoresde.h"

/* The OpenMP call is for the regions still in sample_pc.c, sample_ode.c, control.c and
 * likelihood.c; it goes when they move to the pool. */
void sde_set_num_threads(int n) {
  sde_parallel_set_threads(n);
  omp_set_num_threads(sde_parallel_threads());
}

int sde_get_num_threads(void) { return sde_parallel_threads(); }

double sde_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
