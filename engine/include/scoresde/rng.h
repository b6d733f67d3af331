/* Counter-based random numbers: Philox-4x32-10.
 *
 * Every random number is a pure function of (seed, stream, step, index):
 *   key     = seed (64 bits)
 *   counter = (index / 4, step, stream low 32 bits, stream high 32 bits)
 * so noise does not depend on thread count, batch composition or backend.
 * `stream` identifies a sample (the frame number in a video), `step` identifies one
 * noise draw of the sampler (incremented per draw), `index` is the element. */
#ifndef SCORESDE_RNG_H
#define SCORESDE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out = Philox4x32-10(counter ctr, key) */
void sde_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* out[0..n) = standard normal numbers for elements 0..n of (seed, stream, step).
 * Box-Muller in double precision, rounded to float. */
void sde_randn(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n);
/* Row i of out[n_rows, row_len] = sde_randn(seed, stream0 + i, step, ·, row_len). */
void sde_randn_rows(uint64_t seed, uint64_t stream0, uint32_t step, float *out, int n_rows,
                    int64_t row_len);
/* The same numbers, one block at a time without SIMD: the reference the vector path of
 * sde_randn is tested against (bit for bit). */
void sde_randn_scalar(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n);

/* out[0..n) = uniform in [0,1) for elements 0..n of (seed, stream, step). */
void sde_randu(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n);

/* out[0..n) = Rademacher (+1/-1) for elements 0..n of (seed, stream, step). */
void sde_rand_rademacher(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
