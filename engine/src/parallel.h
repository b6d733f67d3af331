/* The engine's thread pool (parallel.c). Not installed.
 *
 * Replaces OpenMP's `parallel for`: libgomp's default wait policy spins for milliseconds
 * at every barrier and between regions, which makes everything several times slower as
 * soon as another process wants the CPU, and an application embedding the engine cannot
 * change that policy (libgomp reads it at load time). Our idle workers poll for 50 us,
 * yielding their core, then sleep.
 *
 * A loop body is a function over a range of indices, fn(ctx, i0, i1), that handles
 * i0 <= i < i1. Every index of [0, n) is handed to exactly one call; which thread makes
 * the call, and in which order, is unspecified, so the body must write independent
 * outputs (or reduce in a fixed order inside one call) for results not to depend on
 * the thread count.
 *
 * Nested calls (from inside a body) and calls made while another thread's region is
 * running execute serially in the calling thread, over the same ranges. */
#ifndef SCORESDE_PARALLEL_H
#define SCORESDE_PARALLEL_H

#include <stdint.h>

typedef void (*sde_range_fn)(void *ctx, int64_t i0, int64_t i1);

/* OpenMP schedule(static): [0, n) cut into as many equal contiguous ranges as threads,
 * each of at least min_chunk indices. min_chunk >= n runs fn(ctx, 0, n) in the caller:
 * pass `work > threshold ? 1 : n` for OpenMP's `if (work > threshold)`. */
void sde_parallel_for(int64_t n, int64_t min_chunk, sde_range_fn fn, void *ctx);

/* OpenMP schedule(dynamic, grain): ranges of `grain` indices (the last may be shorter),
 * handed out in order to whichever thread is free; for tasks of uneven cost. */
void sde_parallel_for_dynamic(int64_t n, int64_t grain, sde_range_fn fn, void *ctx);

/* Threads a region uses, the caller included: sde_set_num_threads(n), else
 * OMP_NUM_THREADS, else the CPUs this process may run on. */
int sde_parallel_threads(void);
/* n <= 0: the CPUs this process may run on. Takes effect at the next region. */
void sde_parallel_set_threads(int n);

#endif
