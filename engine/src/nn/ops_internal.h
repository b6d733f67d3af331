/* Private helpers shared by the CPU reference ops (nn/ops_*.c; nn.h is the public side).
 * Not installed. */
#ifndef SCORESDE_NN_OPS_INTERNAL_H
#define SCORESDE_NN_OPS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/error.h"
#include "scoresde/nn.h"

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

/* The SIMD kernels the CPU ops take, read once per process:
 *   2: AVX-512F (ops_conv.c's direct, pointwise and Winograd convolutions, and ops_norm.c's
 *      GroupNorm and SiLU): dconv_cpu_ok();
 *   1: AVX2 + FMA without AVX-512F (AMD Zen 1-3, Intel client cores; ops_conv_avx2.c and
 *      the AVX2 branches of ops_norm.c): avx2_cpu_ok();
 *   0: neither (portable C and OpenBLAS).
 * Environment: SDE_NN_NO_DIRECT_CONV=1 forces 0 (an A/B switch for benchmarks);
 * SDE_NN_ISA=avx2 takes the AVX2 kernels on an AVX-512 CPU too (tests, benchmarks). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SDE_NO_DCONV)
#include <immintrin.h>
#define HAVE_DCONV 1
static inline int simd_level(void) {
  static int level = -1;
  if (level < 0) {
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int l = __builtin_cpu_supports("avx512f") ? 2 : avx2 ? 1 : 0;
    const char *isa = getenv("SDE_NN_ISA"), *off = getenv("SDE_NN_NO_DIRECT_CONV");
    if (isa && !strcmp(isa, "avx2") && avx2) l = 1;
    if (off && *off && *off != '0') l = 0;
    level = l;
  }
  return level;
}
#else
static inline int simd_level(void) { return 0; }
#endif
static inline int dconv_cpu_ok(void) { return simd_level() == 2; }
static inline int avx2_cpu_ok(void) { return simd_level() == 1; }

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
/* Σ x[0 .. len) in float64, in 16 lanes on AVX2 / AVX-512 (the same bits on both) */
double sde_ops_sum_row(const float *x, int len);

/* ---- direct stride-1 convolution on AVX2 + FMA CPUs (ops_conv_avx2.c) ------------------- */
/* 1 when the CPU takes the AVX2 path (avx2_cpu_ok) and s is stride 1, not 1x1 */
int sde_ops_conv_avx2_usable(const sde_nn_conv2d_shape *s);
size_t sde_ops_conv_avx2_scratch_floats(const sde_nn_conv2d_shape *s);
/* out = conv(inp) + bias, or out += conv(inp) (accum); weights w[o·so + c·sc + k] (k
 * reversed when flip: the input gradient's flipped, transposed weights in place) */
int sde_ops_conv_avx2(float *out, const float *inp, const float *w, size_t so, size_t sc,
                      int flip, const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                      int accum, const float *packed);
/* the forward's weights packed once (packed above; prep_floats floats, 32-byte aligned) */
size_t sde_ops_conv_avx2_prep_floats(const sde_nn_conv2d_shape *s);
void sde_ops_conv_avx2_prepare(float *wpk, const float *w, const sde_nn_conv2d_shape *s);
/* dweight += the weight gradient of a 3x3 stride-1 conv whose output rows are multiples of
 * 8 wide (sde_ops_conv_avx2_dweight_usable); scratch as sde_ops_conv_avx2 */
int sde_ops_conv_avx2_dweight_usable(const sde_nn_conv2d_shape *s);
int sde_ops_conv_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s, float *scratch);
/* out = conv3x3(inp, pad 1) + bias (or out += conv, accum) by Winograd F(2x2, 3x3) or
 * F(4x4, 3x3) (chosen by the image shape), weights [C_out][C_in][3][3]: 3x3 stride-1 pad-1
 * shapes on AVX2 CPUs (sde_ops_wino_avx2_usable) */
int sde_ops_wino_avx2_usable(const sde_nn_conv2d_shape *s);
/* the usable shapes where Winograd beats the AVX2 direct conv (measured) */
int sde_ops_wino_avx2_pays(const sde_nn_conv2d_shape *s);
size_t sde_ops_wino_avx2_scratch_floats(const sde_nn_conv2d_shape *s);
/* after + bias, in the output transform (not with accum): + bias2[b][co], residual + · (the
 * same layout as out; may be out), / div (0: none) — each optional */
typedef struct {
  const float *bias2, *residual;
  float div;
} sde_ops_conv_epilogue;
int sde_ops_wino_avx2(float *out, const float *inp, const float *w, const float *bias,
                      const sde_nn_conv2d_shape *s, float *scratch, int accum,
                      const float *U, int U_m, const sde_ops_conv_epilogue *ep);
/* the transformed weights U made once for the tile side the shape takes (U and U_m above:
 * used when U_m is still that side); prepare returns the side */
size_t sde_ops_wino_avx2_prep_floats(const sde_nn_conv2d_shape *s);
int sde_ops_wino_avx2_prepare(float *U, const float *w, const sde_nn_conv2d_shape *s);
/* dweight += the weight gradient of a usable shape by Winograd (the forward's tile size;
 * allocates its own memory); _pays: the shapes where it beats the direct one (measured) */
int sde_ops_wino_avx2_dweight_pays(const sde_nn_conv2d_shape *s);
int sde_ops_wino_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s);

#endif
