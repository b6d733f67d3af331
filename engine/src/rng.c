/* Philox-4x32-10 (Salmon et al., SC'11) and the distributions built on it. */
#include <math.h>
#include <string.h>

#include "scoresde/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
  uint64_t p = (uint64_t)a * b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

void sde_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(PHILOX_M0, c0, &hi0, &lo0);
    mulhilo32(PHILOX_M1, c2, &hi1, &lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* The 4 raw words for block `block` of (seed, stream, step). */
static inline void philox_block(uint64_t seed, uint64_t stream, uint32_t step, uint32_t block,
                                uint32_t out[4]) {
  const uint32_t ctr[4] = {block, step, (uint32_t)stream, (uint32_t)(stream >> 32)};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  sde_philox4x32(ctr, key, out);
}

/* Box-Muller needs log, sin and cos. libm's differ between platforms and from CUDA's,
 * so these are written with +, -, *, / and sqrt only (all correctly rounded in IEEE
 * double): the same bits on every backend. Accuracy ~1e-12, far below float32. */

/* ln(u) for normal u in (0, 1]: u = 2^e m with m in [√½, √2),
 * ln m = 2 atanh((m-1)/(m+1)). Splitting the exponent off the bits is exact. */
static inline double det_log(double u) {
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
static inline void det_sincos_2pi(double f, double *sin_out, double *cos_out) {
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

/* u in (0,1), never 0, so log(u) is finite. */
static inline double open_unit(uint32_t r) { return ((double)r + 0.5) * (1.0 / 4294967296.0); }

void sde_randn(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  for (int64_t base = 0; base < n; base += 4) {
    uint32_t r[4];
    philox_block(seed, stream, step, (uint32_t)(base / 4), r);
    double z[4];
    for (int pair = 0; pair < 2; pair++) {
      double radius = sqrt(-2.0 * det_log(open_unit(r[2 * pair])));
      double s, c;
      det_sincos_2pi((double)r[2 * pair + 1] * (1.0 / 4294967296.0), &s, &c);
      z[2 * pair] = radius * c;
      z[2 * pair + 1] = radius * s;
    }
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = (float)z[j];
  }
}

void sde_randu(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  for (int64_t base = 0; base < n; base += 4) {
    uint32_t r[4];
    philox_block(seed, stream, step, (uint32_t)(base / 4), r);
    /* 24 random bits: exactly representable, in [0,1). */
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = (float)(r[j] >> 8) * 0x1p-24f;
  }
}

void sde_rand_rademacher(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  for (int64_t base = 0; base < n; base += 4) {
    uint32_t r[4];
    philox_block(seed, stream, step, (uint32_t)(base / 4), r);
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = (r[j] >> 31) ? 1.0f : -1.0f;
  }
}
