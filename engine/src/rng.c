/* Philox-4x32-10 (Salmon et al., SC'11) and the distributions built on it: the scalar
 * arithmetic is exact_math.h's; this file adds the AVX2 path of sde_randn, which must give
 * the same bits (test_core compares it with sde_randn_scalar). */
#include <math.h>
#include <string.h>

#include "exact_math.h" /* the scalar math, shared with the CPU backend and CUDA */
#include "scoresde/rng.h"

void sde_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  sde_philox_rounds(ctr, key, out);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_RANDN_AVX2 1

/* sde_det_log on 4 lanes, the same IEEE operations in the same order (so the same bits);
 * the target has no FMA, so nothing can be contracted. */
__attribute__((target("avx2"))) static inline __m256d det_log_x4(__m256d u) {
  const __m256i bits = _mm256_castpd_si256(u);
  /* the biased exponent, as a double via the 2^52 trick (exact for small integers) */
  const __m256i ebits = _mm256_srli_epi64(bits, 52);
  const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
  __m256d e = _mm256_sub_pd(
      _mm256_castsi256_pd(_mm256_or_si256(ebits, _mm256_castpd_si256(two52))), two52);
  e = _mm256_sub_pd(e, _mm256_set1_pd(1022.0));
  const __m256i mbits = _mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi64x((long long)0x800fffffffffffffULL)),
      _mm256_set1_epi64x((long long)(1022ULL << 52)));
  __m256d m = _mm256_castsi256_pd(mbits);
  const __m256d small = _mm256_cmp_pd(m, _mm256_set1_pd(0.70710678118654752440), _CMP_LT_OQ);
  m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(2.0)), small);
  e = _mm256_sub_pd(e, _mm256_and_pd(small, _mm256_set1_pd(1.0)));
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d s = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
  const __m256d s2 = _mm256_mul_pd(s, s);
  __m256d series = _mm256_set1_pd(1.0 / 13);
  series = _mm256_add_pd(_mm256_set1_pd(1.0 / 11), _mm256_mul_pd(s2, series));
  series = _mm256_add_pd(_mm256_set1_pd(1.0 / 9), _mm256_mul_pd(s2, series));
  series = _mm256_add_pd(_mm256_set1_pd(1.0 / 7), _mm256_mul_pd(s2, series));
  series = _mm256_add_pd(_mm256_set1_pd(1.0 / 5), _mm256_mul_pd(s2, series));
  series = _mm256_add_pd(_mm256_set1_pd(1.0 / 3), _mm256_mul_pd(s2, series));
  series = _mm256_add_pd(one, _mm256_mul_pd(s2, series));
  return _mm256_add_pd(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), s), series),
                       _mm256_mul_pd(e, _mm256_set1_pd(0.69314718055994530942)));
}

/* sde_det_sincos_2pi on 4 lanes, operation for operation */
__attribute__((target("avx2"))) static inline void det_sincos_2pi_x4(__m256d f, __m256d *sin_out,
                                                                    __m256d *cos_out) {
  const __m256d v = _mm256_mul_pd(_mm256_set1_pd(4.0), f);
  const __m256d q = _mm256_round_pd(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256d x = _mm256_mul_pd(_mm256_sub_pd(_mm256_sub_pd(v, q), _mm256_set1_pd(0.5)),
                                  _mm256_set1_pd(1.57079632679489661923));
  const __m256d x2 = _mm256_mul_pd(x, x);
#define HORNER(acc, c) acc = _mm256_add_pd(_mm256_set1_pd(c), _mm256_mul_pd(x2, acc))
  __m256d sn = _mm256_set1_pd(1.0 / 6227020800.0);
  HORNER(sn, -1.0 / 39916800);
  HORNER(sn, 1.0 / 362880);
  HORNER(sn, -1.0 / 5040);
  HORNER(sn, 1.0 / 120);
  HORNER(sn, -1.0 / 6);
  HORNER(sn, 1.0);
  sn = _mm256_mul_pd(x, sn);
  __m256d cs = _mm256_set1_pd(1.0 / 479001600);
  HORNER(cs, -1.0 / 3628800);
  HORNER(cs, 1.0 / 40320);
  HORNER(cs, -1.0 / 720);
  HORNER(cs, 1.0 / 24);
  HORNER(cs, -0.5);
  HORNER(cs, 1.0);
#undef HORNER
  const __m256d r = _mm256_set1_pd(0.70710678118654752440);
  const __m256d s0 = _mm256_mul_pd(r, _mm256_add_pd(sn, cs));
  const __m256d c0 = _mm256_mul_pd(r, _mm256_sub_pd(cs, sn));
  const __m256d zero = _mm256_setzero_pd();
  const __m256d q1 = _mm256_cmp_pd(q, _mm256_set1_pd(1.0), _CMP_EQ_OQ);
  const __m256d q2 = _mm256_cmp_pd(q, _mm256_set1_pd(2.0), _CMP_EQ_OQ);
  const __m256d q3 = _mm256_cmp_pd(q, _mm256_set1_pd(3.0), _CMP_EQ_OQ);
  const __m256d ns0 = _mm256_sub_pd(zero, s0), nc0 = _mm256_sub_pd(zero, c0);
  /* quadrant 0: (s0, c0); 1: (c0, -s0); 2: (-s0, -c0); 3: (-c0, s0) */
  __m256d sv = _mm256_blendv_pd(s0, c0, q1), cv = _mm256_blendv_pd(c0, ns0, q1);
  sv = _mm256_blendv_pd(sv, ns0, q2);
  cv = _mm256_blendv_pd(cv, nc0, q2);
  *sin_out = _mm256_blendv_pd(sv, nc0, q3);
  *cos_out = _mm256_blendv_pd(cv, s0, q3);
}

/* Philox-4x32-10 of 4 blocks, one per 64-bit lane holding a 32-bit word: lane l has
 * counter (block[l], step, stream[l]) and the shared key; w[j] is word j of the outputs. */
__attribute__((target("avx2"))) static inline void philox_x4(uint64_t seed, const uint64_t stream[4],
                                                            uint32_t step, const uint32_t block[4],
                                                            __m256i w[4]) {
  const __m256i lo32 = _mm256_set1_epi64x(0xffffffffLL);
  const __m256i m0 = _mm256_set1_epi64x(SDE_PHILOX_M0), m1 = _mm256_set1_epi64x(SDE_PHILOX_M1);
  __m256i c0 = _mm256_setr_epi64x(block[0], block[1], block[2], block[3]);
  __m256i c1 = _mm256_set1_epi64x(step);
  __m256i c2 = _mm256_setr_epi64x((uint32_t)stream[0], (uint32_t)stream[1], (uint32_t)stream[2],
                                  (uint32_t)stream[3]);
  __m256i c3 = _mm256_setr_epi64x(stream[0] >> 32, stream[1] >> 32, stream[2] >> 32,
                                  stream[3] >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < 10; round++) {
    const __m256i p0 = _mm256_mul_epu32(m0, c0), p1 = _mm256_mul_epu32(m1, c2);
    const __m256i hi0 = _mm256_srli_epi64(p0, 32), lo0 = _mm256_and_si256(p0, lo32);
    const __m256i hi1 = _mm256_srli_epi64(p1, 32), lo1 = _mm256_and_si256(p1, lo32);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi64x(k0));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi64x(k1));
    c3 = lo0;
    k0 += SDE_PHILOX_W0;
    k1 += SDE_PHILOX_W1;
  }
  w[0] = c0;
  w[1] = c1;
  w[2] = c2;
  w[3] = c3;
}

/* 32-bit words in 64-bit lanes to double, exactly (the 2^52 trick) */
__attribute__((target("avx2"))) static inline __m256d u32_to_pd(__m256i r) {
  const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
  return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(r, _mm256_castpd_si256(two52))),
                       two52);
}

/* The normals of 4 Philox blocks (lane l: block[l] of stream[l]): z[b] holds the 4 values
 * of lane b's block. */
__attribute__((target("avx2"))) static void randn_x4(uint64_t seed, const uint64_t stream[4],
                                                    uint32_t step, const uint32_t block[4],
                                                    __m128 z[4]) {
  __m256i w[4];
  philox_x4(seed, stream, step, block, w);
  /* before the transpose z[2·pair] = radius·cos, z[2·pair + 1] = radius·sin, per lane */
  for (int pair = 0; pair < 2; pair++) {
    const __m256d u = _mm256_mul_pd(_mm256_add_pd(u32_to_pd(w[2 * pair]), _mm256_set1_pd(0.5)),
                                    _mm256_set1_pd(1.0 / 4294967296.0));
    const __m256d f = _mm256_mul_pd(u32_to_pd(w[2 * pair + 1]),
                                    _mm256_set1_pd(1.0 / 4294967296.0));
    const __m256d radius =
        _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), det_log_x4(u)));
    __m256d s, c;
    det_sincos_2pi_x4(f, &s, &c);
    z[2 * pair] = _mm256_cvtpd_ps(_mm256_mul_pd(radius, c));
    z[2 * pair + 1] = _mm256_cvtpd_ps(_mm256_mul_pd(radius, s));
  }
  _MM_TRANSPOSE4_PS(z[0], z[1], z[2], z[3]);
}

/* 16 values of one stream: blocks block0..block0+3 */
__attribute__((target("avx2"))) static void randn_16(uint64_t seed, uint64_t stream,
                                                    uint32_t step, uint32_t block0, float *out) {
  const uint64_t streams[4] = {stream, stream, stream, stream};
  const uint32_t blocks[4] = {block0, block0 + 1, block0 + 2, block0 + 3};
  __m128 z[4];
  randn_x4(seed, streams, step, blocks, z);
  for (int b = 0; b < 4; b++) _mm_storeu_ps(out + 4 * b, z[b]);
}

/* Rows i..i+3 of sde_randn_rows, each of len < 16 values: lane l is row i + l */
__attribute__((target("avx2"))) static void randn_4rows(uint64_t seed, uint64_t stream,
                                                       uint32_t step, float *out, int64_t len) {
  const uint64_t streams[4] = {stream, stream + 1, stream + 2, stream + 3};
  for (int64_t base = 0; base < len; base += 4) {
    const uint32_t b = (uint32_t)(base / 4), blocks[4] = {b, b, b, b};
    __m128 z[4];
    float v[4];
    randn_x4(seed, streams, step, blocks, z);
    for (int l = 0; l < 4; l++) {
      _mm_storeu_ps(v, z[l]);
      for (int j = 0; j < 4 && base + j < len; j++) out[l * len + base + j] = v[j];
    }
  }
}

static int randn_avx2_ok(void) {
  static int ok = -1;
  if (ok < 0) {
    __builtin_cpu_init();
    ok = __builtin_cpu_supports("avx2") ? 1 : 0;
  }
  return ok;
}
#endif

/* out[from..n) one block at a time (from a multiple of 4) */
static void randn_scalar_from(uint64_t seed, uint64_t stream, uint32_t step, float *out,
                              int64_t from, int64_t n) {
  for (int64_t base = from; base < n; base += 4) {
    float z[4];
    sde_randn_block(seed, stream, step, (uint32_t)(base / 4), z);
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = z[j];
  }
}

void sde_randn_scalar(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  randn_scalar_from(seed, stream, step, out, 0, n);
}

void sde_randn(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  int64_t done = 0;
#ifdef HAVE_RANDN_AVX2
  if (randn_avx2_ok())
    for (; done + 16 <= n; done += 16)
      randn_16(seed, stream, step, (uint32_t)(done / 4), out + done);
#endif
  randn_scalar_from(seed, stream, step, out, done, n);
}

void sde_randn_rows(uint64_t seed, uint64_t stream0, uint32_t step, float *out, int n_rows,
                    int64_t row_len) {
  int i = 0;
#ifdef HAVE_RANDN_AVX2
  /* short rows (low-dimensional models) fill the lanes with 4 rows at a time */
  if (row_len < 16 && randn_avx2_ok())
    for (; i + 4 <= n_rows; i += 4)
      randn_4rows(seed, stream0 + (uint64_t)i, step, out + (int64_t)i * row_len, row_len);
#endif
  for (; i < n_rows; i++) sde_randn(seed, stream0 + (uint64_t)i, step, out + (int64_t)i * row_len, row_len);
}

void sde_randu(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  for (int64_t base = 0; base < n; base += 4) {
    uint32_t r[4];
    sde_philox_block(seed, stream, step, (uint32_t)(base / 4), r);
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = sde_randu_word(r[j]);
  }
}

void sde_rand_rademacher(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n) {
  for (int64_t base = 0; base < n; base += 4) {
    uint32_t r[4];
    sde_philox_block(seed, stream, step, (uint32_t)(base / 4), r);
    for (int j = 0; j < 4 && base + j < n; j++) out[base + j] = sde_rademacher_word(r[j]);
  }
}
