/* Private helpers shared by the CPU reference ops (nn/ops_*.c; nn.h is the public side).
 * Not installed. */
#ifndef SCORESDE_NN_OPS_INTERNAL_H
#define SCORESDE_NN_OPS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "scoresde/error.h"

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Parallel-loop threshold for cheap elementwise work: loops whose total work is below
 * it run serially. grain(n, work) is sde_parallel_for's min_chunk for that rule. */
#define PAR_MIN 16384
static inline int64_t grain(int64_t n, size_t work) { return work > PAR_MIN ? 1 : n; }

/* Scratch: the caller's buffer, or one we allocate into *owned (the caller frees it). */
static inline float *scratch_get(float *given, size_t nfloats, float **owned) {
  *owned = NULL;
  if (given || nfloats == 0) return given;
  *owned = sde_malloc(nfloats * sizeof(float));
  return *owned;
}

/* The AVX-512 paths (direct conv, GroupNorm, SiLU) exist when HAVE_DCONV is defined and
 * run when dconv_cpu_ok(): the CPU has AVX-512F and SDE_NN_NO_DIRECT_CONV is unset or 0
 * (an A/B switch for benchmarks). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SDE_NO_DCONV)
#include <immintrin.h>
#define HAVE_DCONV 1
static inline int dconv_cpu_ok(void) {
  static int ok = -1;
  if (ok < 0) {
    __builtin_cpu_init();
    ok = __builtin_cpu_supports("avx512f") ? 1 : 0;
    const char *e = getenv("SDE_NN_NO_DIRECT_CONV"); /* A/B switch for benchmarks */
    if (e && *e && *e != '0') ok = 0;
  }
  return ok;
}
#else
static inline int dconv_cpu_ok(void) { return 0; }
#endif

/* Elementwise loops: out (and out2) from a (and b) */
typedef struct {
  float *out, *out2;
  const float *a, *b;
  float scale;
  int simd;
} ew_job;

/* ---- GEMM on fixed tiles (ops_conv.c) ----------------------------------------------------
 * C = alpha·op(A)·op(B) + beta·C, row-major, split into tiles whose sizes depend only on
 * the shape, each one single-threaded sgemm: the same bits for any thread count.
 * gemm_batch runs `batch` such GEMMs at strides sA, sB, sC (reduce: all into one C, in
 * batch order). */
void sde_ops_gemm_batch(int batch, int reduce, int transA, int transB, int M, int N, int K,
                        float alpha, const float *A, int lda, size_t sA, const float *B, int ldb,
                        size_t sB, float beta, float *C, int ldc, size_t sC);
void sde_ops_gemm_tiled(int transA, int transB, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C,
                        int ldc);

/* ---- per-channel bias over [B, C, len] tensors (ops_conv.c) ---------------------------- */
typedef struct {
  float *out;
  const float *in;
  int B, C, len;
} sde_ops_chan_job;

/* out[b, c, :] = bias[c] (0 without a bias) */
void sde_ops_fill_bias(float *out, const float *bias, int B, int C, int len);
/* dbias[c] += Σ_b Σ_p dout[b, c, p], one channel per thread, the batch in order */
void sde_ops_sum_channels(float *dbias, const float *dout, int B, int C, int len);

#endif
