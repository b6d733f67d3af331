/* The arithmetic whose bits every backend must reproduce, written once for gcc and nvcc:
 * the Philox-4x32-10 generator with the Box-Muller normals, uniform and Rademacher words
 * of rng.h, and the Adam + EMA update of one parameter (train.c). rng.c (scalar path and
 * public functions), the CPU backend and the CUDA kernels (backend/cuda/cuda_math.cuh)
 * all call these functions, so there is no second copy to drift.
 *
 * Box-Muller needs log, sin and cos. libm's differ between platforms and from CUDA's, so
 * they are written with +, -, *, / and sqrt only (all correctly rounded in IEEE double):
 * the same bits on every backend, accuracy ~1e-12, far below float32. No multiply-add may
 * be contracted: C is compiled in ISO mode (-std=c11, contraction off) and the CUDA
 * kernels that use this file with --fmad=false (cuda_exact.cu). */
#ifndef SCORESDE_EXACT_MATH_H
#define SCORESDE_EXACT_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SDE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SDE_HOST_DEVICE static inline
#endif

#define SDE_PHILOX_M0 0xD2511F53u
#define SDE_PHILOX_M1 0xCD9E8D57u
#define SDE_PHILOX_W0 0x9E3779B9u
#define SDE_PHILOX_W1 0xBB67AE85u

/* out = Philox-4x32-10(counter ctr, key) (Salmon et al., SC'11) */
SDE_HOST_DEVICE void sde_philox_rounds(const uint32_t ctr[4], const uint32_t key[2],
                                       uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)SDE_PHILOX_M0 * c0, p1 = (uint64_t)SDE_PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += SDE_PHILOX_W0;
    k1 += SDE_PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* The 4 raw words for block `block` of (seed, stream, step):
 * counter = (block, step, stream lo, stream hi), key = (seed lo, seed hi). */
SDE_HOST_DEVICE void sde_philox_block(uint64_t seed, uint64_t stream, uint32_t step,
                                      uint32_t block, uint32_t out[4]) {
  const uint32_t ctr[4] = {block, step, (uint32_t)stream, (uint32_t)(stream >> 32)};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  sde_philox_rounds(ctr, key, out);
}

/* ln(u) for normal u in (0, 1]: u = 2^e m with m in [√½, √2),
 * ln m = 2 atanh((m-1)/(m+1)). Splitting the exponent off the bits is exact. */
SDE_HOST_DEVICE double sde_det_log(double u) {
  uint64_t bits;
  memcpy(&bits, &u, sizeof bits);
  int e = (int)((bits >> 52) & 0x7ff) - 1022;
  bits = (bits & 0x800fffffffffffffULL) | (1022ULL << 52);
  double m;
  memcpy(&m, &bits, sizeof m); /* m in [0.5, 1) */
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e--;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  /* |s| <= 0.1716: the series to s^13 leaves < 1e-12 */
  const double series =
      1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11 + s2 * (1.0 / 13))))));
  return 2.0 * s * series + (double)e * 0.69314718055994530942;
}

/* sin and cos of 2πf for f in [0, 1): quadrant from 4f, then Taylor series around the
 * quadrant's middle (|x| <= π/4, so terms to x^13 leave < 1e-12). */
SDE_HOST_DEVICE void sde_det_sincos_2pi(double f, double *sin_out, double *cos_out) {
  const double v = 4.0 * f;
  const int quadrant = (int)v;
  const double x = (v - quadrant - 0.5) * 1.57079632679489661923; /* in [-π/4, π/4) */
  const double x2 = x * x;
  const double sn = x * (1.0 + x2 * (-1.0 / 6 + x2 * (1.0 / 120 + x2 * (-1.0 / 5040 +
                    x2 * (1.0 / 362880 + x2 * (-1.0 / 39916800 + x2 * (1.0 / 6227020800.0)))))));
  const double cs = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24 + x2 * (-1.0 / 720 + x2 * (1.0 / 40320 +
                    x2 * (-1.0 / 3628800 + x2 * (1.0 / 479001600))))));
  /* angle = quadrant·π/2 + π/4 + x */
  const double r = 0.70710678118654752440;
  const double s0 = r * (sn + cs), c0 = r * (cs - sn);
  switch (quadrant & 3) {
    case 0: *sin_out = s0; *cos_out = c0; break;
    case 1: *sin_out = c0; *cos_out = -s0; break;
    case 2: *sin_out = -s0; *cos_out = -c0; break;
    default: *sin_out = -c0; *cos_out = s0; break;
  }
}

/* The 4 normals of one Philox block (sde_randn): Box-Muller on word pairs, the first word
 * as u in (0,1) (never 0, so its log is finite), in double, rounded to float once. */
SDE_HOST_DEVICE void sde_randn_block(uint64_t seed, uint64_t stream, uint32_t step,
                                     uint32_t block, float z[4]) {
  uint32_t r[4];
  sde_philox_block(seed, stream, step, block, r);
  for (int pair = 0; pair < 2; pair++) {
    double u = ((double)r[2 * pair] + 0.5) * (1.0 / 4294967296.0);
    double radius = sqrt(-2.0 * sde_det_log(u));
    double s, c;
    sde_det_sincos_2pi((double)r[2 * pair + 1] * (1.0 / 4294967296.0), &s, &c);
    z[2 * pair] = (float)(radius * c);
    z[2 * pair + 1] = (float)(radius * s);
  }
}

/* uniform in [0,1) from 24 bits (exactly representable); Rademacher from the top bit */
SDE_HOST_DEVICE float sde_randu_word(uint32_t r) { return (float)(r >> 8) * 0x1p-24f; }
SDE_HOST_DEVICE float sde_rademacher_word(uint32_t r) { return (r >> 31) ? 1.0f : -1.0f; }

/* One Adam (torch.optim.Adam, no weight decay) + EMA update of one parameter, in float,
 * operation by operation (the backend table's adam_step). sqrtf and ÷ are correctly
 * rounded on both sides, so the CUDA kernel gives the CPU's bits. */
SDE_HOST_DEVICE void sde_adam_elem(float *p, float *m, float *v, float *ema, float grad, float clip,
                                   float b1, float b2, float step_size, float sbc2, float aeps,
                                   float one_m_decay) {
  float g = grad * clip;
  *m = b1 * *m + (1.0f - b1) * g;
  *v = b2 * *v + (1.0f - b2) * g * g;
  float denom = sqrtf(*v) / sbc2 + aeps;
  *p -= step_size * (*m / denom);
  *ema -= one_m_decay * (*ema - *p);
}

#endif
