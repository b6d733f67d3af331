/* Threads and clocks. */
#include <time.h>

#include "parallel.h"
#include "scoresde/scoresde.h"

void sde_set_num_threads(int n) { sde_parallel_set_threads(n); }

int sde_get_num_threads(void) { return sde_parallel_threads(); }

double sde_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
