/* CPU reference ops (scoresde/nn.h): GEMM on fixed tiles, conv2d (im2col + GEMM, or the
 * AVX-512 direct convolution, or for wide 3x3 pad-1 layers Winograd F(2x2, 3x3); on AVX2
 * CPUs without AVX-512 the kernels of ops_conv_avx2.c), linear and NIN.
 *
 * Determinism: every parallel loop runs over independent outputs, and every reduction is
 * done by one thread in a fixed order. GEMMs are split into tiles whose sizes depend only
 * on the GEMM shape; each tile is one single-threaded sgemm call, so each output element
 * is computed by the same instruction sequence whatever the number of threads. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "../parallel.h"
#include "ops_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"
#include "scoresde/scoresde.h"

/* ======================================================================================
 * GEMM on fixed tiles */

#if defined(OPENBLAS_VERSION)
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) { openblas_set_num_threads(1); }
#endif

/* OpenBLAS's own pool would fight the pool threads that call it; we parallelise
 * ourselves, so BLAS runs single-threaded. */
static void blas_init(void) {
#if defined(OPENBLAS_VERSION)
  pthread_once(&blas_once, blas_single_thread);
#endif
}

static int round_up16(int a) { return (a + 15) / 16 * 16; }

/* Tile sizes for an M x N GEMM, chosen from the shape alone. `want` tiles are asked for,
 * but no more than leave GEMM_TILE_FLOPS of work each, so that sgemm's packing (which a
 * split repeats: the A panel once per column tile, the B panel once per row tile) stays
 * cheap. N (the pixel axis) is split first, down to GEMM_MIN_NT columns, then M. */
#ifndef GEMM_TILE_FLOPS
#define GEMM_TILE_FLOPS 16e6
#endif
#ifndef GEMM_TASKS
#define GEMM_TASKS 4 /* parallel tasks aimed at per GEMM batch */
#endif
#ifndef GEMM_MIN_NT
#define GEMM_MIN_NT 128
#endif
#ifndef GEMM_MIN_MT
#define GEMM_MIN_MT 64
#endif
static void gemm_tile_sizes(int M, int N, double flops, int want, int *mt, int *nt) {
  if (want > flops / GEMM_TILE_FLOPS) want = (int)(flops / GEMM_TILE_FLOPS);
  *mt = M;
  *nt = N;
  while (ceil_div(M, *mt) * ceil_div(N, *nt) < want) {
    if (*nt >= 2 * GEMM_MIN_NT) *nt = round_up16(ceil_div(*nt, 2));
    else if (*mt >= 2 * GEMM_MIN_MT) *mt = round_up16(ceil_div(*mt, 2));
    else break;
  }
}

/* Strided batch of row-major GEMMs, item i using X + i·strideX for X in A, B, C:
 *   reduce = 0:  C_i[M,N] = alpha·op(A_i)[M,K]·op(B_i)[K,N] + beta·C_i     (independent)
 *   reduce = 1:  C[M,N] = beta·C + Σ_i alpha·op(A_i)·op(B_i)  (items summed in order)
 * Work is split into (item, tile) tasks, each one single-threaded sgemm call per item. A
 * reduction with fewer tiles than GEMM_TASKS (the weight gradients of small 1x1 convs)
 * also splits its items into `parts` consecutive runs, chosen from the shape alone: part 0
 * sums into C, the others into buffers of their own, added to C in part order. */
typedef struct {
  int batch, reduce, transA, transB, M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int lda, ldb, ldc;
  size_t strideA, strideB, strideC;
  int mt, nt, tn, per_item; /* tile sizes, tiles per row of tiles and per item */
  int parts;                /* reduce: runs of items; parts 1.. sum into pbuf */
  float *pbuf;              /* [parts − 1][M][N] */
} gemm_job;

static void gemm_tasks(void *ctx, int64_t t0, int64_t t1) {
  const gemm_job *g = ctx;
  for (int64_t task = t0; task < t1; task++) {
    int t = (int)(task % g->per_item), part = g->reduce ? (int)(task / g->per_item) : 0;
    int i0 = g->reduce ? (int)((int64_t)part * g->batch / g->parts) : (int)(task / g->per_item);
    int i1 = g->reduce ? (int)((int64_t)(part + 1) * g->batch / g->parts) : i0 + 1;
    int m0 = (t / g->tn) * g->mt, n0 = (t % g->tn) * g->nt;
    int m = g->M - m0 < g->mt ? g->M - m0 : g->mt, n = g->N - n0 < g->nt ? g->N - n0 : g->nt;
    float *cp = part ? g->pbuf + (size_t)(part - 1) * g->M * g->N : g->C;
    const int ldc = part ? g->N : g->ldc;
    for (int i = i0; i < i1; i++) {
      const float *a = g->A + i * g->strideA + (g->transA ? (size_t)m0 : (size_t)m0 * g->lda);
      const float *b = g->B + i * g->strideB + (g->transB ? (size_t)n0 * g->ldb : (size_t)n0);
      float *c = cp + (g->reduce ? 0 : i * g->strideC) + (size_t)m0 * ldc + n0;
      const float beta = i > i0 ? 1.0f : part ? 0.0f : g->beta;
      cblas_sgemm(CblasRowMajor, g->transA ? CblasTrans : CblasNoTrans,
                  g->transB ? CblasTrans : CblasNoTrans, m, n, g->K, g->alpha, a, g->lda, b,
                  g->ldb, beta, c, ldc);
    }
  }
}

/* C rows [r0, r1) += the parts' buffers, in part order */
static void gemm_add_parts(void *ctx, int64_t r0, int64_t r1) {
  const gemm_job *g = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float *c = g->C + r * g->ldc;
    for (int p = 1; p < g->parts; p++) {
      const float *b = g->pbuf + ((size_t)(p - 1) * g->M + (size_t)r) * g->N;
      for (int n = 0; n < g->N; n++) c[n] += b[n];
    }
  }
}

void sde_ops_gemm_batch(int batch, int reduce, int transA, int transB, int M, int N, int K,
                       float alpha, const float *A, int lda, size_t strideA, const float *Bm,
                       int ldb, size_t strideB, float beta, float *C, int ldc, size_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  blas_init();
  gemm_job g = {batch, reduce, transA, transB, M, N, K, alpha, beta, A, Bm, C, lda, ldb, ldc,
                strideA, strideB, strideC, 0, 0, 0, 0, 1, NULL};
  /* Tiles depend on the GEMM shape only, never on the batch: OpenBLAS's kernels may round
   * differently for different tile shapes (generic kernels do), and sample i must come out
   * bit-identical whether it runs alone or in a batch. */
  gemm_tile_sizes(M, N, 2.0 * M * N * K, GEMM_TASKS, &g.mt, &g.nt);
  g.tn = ceil_div(N, g.nt);
  g.per_item = ceil_div(M, g.mt) * g.tn;
  if (reduce && g.per_item < GEMM_TASKS) {
    /* parts of at least GEMM_TILE_FLOPS / 4 each */
    const double item_flops = 2.0 * M * N * K;
    int parts = GEMM_TASKS / g.per_item < batch ? GEMM_TASKS / g.per_item : batch;
    while (parts > 1 && item_flops * batch / parts < GEMM_TILE_FLOPS / 4) parts--;
    /* without memory for the parts: one run, the order of summation before this split */
    if (parts > 1) g.pbuf = malloc((size_t)(parts - 1) * M * N * sizeof(float));
    if (g.pbuf) g.parts = parts;
  }
  sde_parallel_for_dynamic(reduce ? (int64_t)g.per_item * g.parts : (int64_t)g.per_item * batch, 1,
                           gemm_tasks, &g);
  if (g.parts > 1) {
    sde_parallel_for(M, grain(M, (size_t)M * N * g.parts), gemm_add_parts, &g);
    free(g.pbuf);
  }
}

/* One GEMM: C[M,N] = alpha·op(A)·op(B) + beta·C */
void sde_ops_gemm_tiled(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *Bm, int ldb, float beta, float *C,
                       int ldc) {
  sde_ops_gemm_batch(1, 0, transA, transB, M, N, K, alpha, A, lda, 0, Bm, ldb, 0, beta, C, ldc, 0);
}


static void fill_bias_rows(void *ctx, int64_t r0, int64_t r1) {
  const sde_ops_chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float bv = j->in ? j->in[r % j->C] : 0.0f;
    float *o = j->out + r * j->len;
    for (int p = 0; p < j->len; p++) o[p] = bv;
  }
}

/* out[b, c, :] = bias[c] (0 without a bias) */
void sde_ops_fill_bias(float *out, const float *bias, int B, int C, int len) {
  sde_ops_chan_job j = {out, bias, B, C, len};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * len), fill_bias_rows, &j);
}

#ifdef HAVE_DCONV
/* Σ_b Σ_p of channel c in 16 double lanes (plus a scalar tail), reduced in a fixed order */
__attribute__((target("avx512f"))) static double sum_channel_avx512(const float *in, int B, int C,
                                                                   int c, int len) {
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
  double tail = 0.0;
  const int l16 = len & ~15;
  for (int b = 0; b < B; b++) {
    const float *g = in + ((size_t)b * C + c) * len;
    for (int p = 0; p < l16; p += 16) {
      a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(g + p)));
      a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(g + p + 8)));
    }
    for (int p = l16; p < len; p++) tail += g[p];
  }
  double t[16];
  _mm512_storeu_pd(t, a0);
  _mm512_storeu_pd(t + 8, a1);
  double acc = 0.0;
  for (int i = 0; i < 16; i++) acc += t[i];
  return acc + tail;
}

/* the same 16 double lanes on AVX2 (four 4-lane accumulators), the same order: the same bits */
__attribute__((target("avx2,fma"))) static double sum_channel_avx2(const float *in, int B, int C,
                                                                  int c, int len) {
  __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  double tail = 0.0;
  const int l16 = len & ~15;
  for (int b = 0; b < B; b++) {
    const float *g = in + ((size_t)b * C + c) * len;
    for (int p = 0; p < l16; p += 16)
      for (int q = 0; q < 4; q++) a[q] = _mm256_add_pd(a[q], _mm256_cvtps_pd(_mm_loadu_ps(g + p + 4 * q)));
    for (int p = l16; p < len; p++) tail += g[p];
  }
  double t[16];
  for (int q = 0; q < 4; q++) _mm256_storeu_pd(t + 4 * q, a[q]);
  double acc = 0.0;
  for (int i = 0; i < 16; i++) acc += t[i];
  return acc + tail;
}
#endif

/* Σ x[0 .. len) in float64: the 16 lanes of sum_channel_* where the CPU has them, else in
 * order */
double sde_ops_sum_row(const float *x, int len) {
#ifdef HAVE_DCONV
  if (dconv_cpu_ok()) return sum_channel_avx512(x, 1, 1, 0, len);
  if (avx2_cpu_ok()) return sum_channel_avx2(x, 1, 1, 0, len);
#endif
  double acc = 0.0;
  for (int p = 0; p < len; p++) acc += x[p];
  return acc;
}

static void sum_channels_range(void *ctx, int64_t c0, int64_t c1) {
  const sde_ops_chan_job *j = ctx;
#ifdef HAVE_DCONV
  if (dconv_cpu_ok() || avx2_cpu_ok()) {
    double (*sum)(const float *, int, int, int, int) = dconv_cpu_ok() ? sum_channel_avx512 : sum_channel_avx2;
    for (int64_t c = c0; c < c1; c++) j->out[c] += (float)sum(j->in, j->B, j->C, (int)c, j->len);
    return;
  }
#endif
  for (int64_t c = c0; c < c1; c++) {
    double acc = 0.0;
    for (int b = 0; b < j->B; b++) {
      const float *g = j->in + ((size_t)b * j->C + c) * j->len;
      for (int p = 0; p < j->len; p++) acc += g[p];
    }
    j->out[c] += (float)acc;
  }
}

/* dbias[c] += Σ_b Σ_p dout[b, c, p], one channel per thread, the batch in order */
void sde_ops_sum_channels(float *dbias, const float *dout, int B, int C, int len) {
  sde_ops_chan_job j = {dbias, dout, B, C, len};
  sde_parallel_for(C, grain(C, (size_t)B * C * len), sum_channels_range, &j);
}

const char *sde_cpu_kernels(void) {
  return dconv_cpu_ok() ? "avx512" : avx2_cpu_ok() ? "avx2" : "portable";
}

/* ======================================================================================
 * conv2d */

sde_nn_conv2d_shape sde_nn_conv2d_shape_make(int B, int C_in, int H, int W, int C_out, int k,
                                             int stride, int pad) {
  sde_nn_conv2d_shape s = {B, C_in, H, W, C_out, k, k, stride, pad, pad, pad, pad, 0};
  return s;
}

int sde_nn_conv2d_out_h(const sde_nn_conv2d_shape *s) {
  return (s->H + s->pad_top + s->pad_bottom - s->KH) / s->stride + 1;
}

int sde_nn_conv2d_out_w(const sde_nn_conv2d_shape *s) {
  return (s->W + s->pad_left + s->pad_right - s->KW) / s->stride + 1;
}

static int conv2d_is_pointwise(const sde_nn_conv2d_shape *s) {
  return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad_top == 0 && s->pad_bottom == 0 &&
         s->pad_left == 0 && s->pad_right == 0;
}

static int conv2d_check(const sde_nn_conv2d_shape *s) {
  if (!s || s->B < 1 || s->C_in < 1 || s->H < 1 || s->W < 1 || s->C_out < 1 || s->KH < 1 ||
      s->KW < 1 || s->stride < 1 || s->pad_top < 0 || s->pad_bottom < 0 || s->pad_left < 0 ||
      s->pad_right < 0)
    return sde_fail(SDE_EINVAL, "conv2d: bad shape");
  if (s->H + s->pad_top + s->pad_bottom < s->KH || s->W + s->pad_left + s->pad_right < s->KW)
    return sde_fail(SDE_EINVAL, "conv2d: kernel %dx%d larger than padded input %dx%d", s->KH,
                    s->KW, s->H + s->pad_top + s->pad_bottom, s->W + s->pad_left + s->pad_right);
  return SDE_OK;
}

/* Work plan: the im2col matrix [C_in·KH·KW, Ho·Wo] of `imgs` whole images is built at once
 * (layout [imgs][K][Ho·Wo]); an image too big for CONV_COL_FLOATS alone is done a band of
 * `rows` output rows at a time. Depends on the shape only. */
#define CONV_COL_FLOATS (1 << 21)

static void conv2d_plan(const sde_nn_conv2d_shape *s, int *imgs, int *rows) {
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
  size_t K = (size_t)s->C_in * s->KH * s->KW, per_img = K * Ho * Wo;
  if (per_img <= CONV_COL_FLOATS) {
    size_t g = 1; /* a power of two, for even work among 2^k threads */
    while (2 * g * per_img <= CONV_COL_FLOATS && 2 * g <= (size_t)s->B) g *= 2;
    *imgs = (int)g;
    *rows = Ho;
  } else {
    size_t r = CONV_COL_FLOATS / (K * Wo);
    *imgs = 1;
    *rows = r < 1 ? 1 : (int)r;
  }
}

static int dconv_usable(const sde_nn_conv2d_shape *s);
static size_t dconv_scratch_floats(const sde_nn_conv2d_shape *s);
#ifdef HAVE_DCONV
static int pconv_s2_usable(const sde_nn_conv2d_shape *s);
static size_t pconv_s2_scratch_floats(const sde_nn_conv2d_shape *s);
static int wino_shape_ok(const sde_nn_conv2d_shape *s);
static size_t wino_scratch_floats(const sde_nn_conv2d_shape *s);
#endif

/* dweight of a group of imgs images is summed in dw_parts(s, imgs) partials, part c over
 * images [c·imgs/parts, (c+1)·imgs/parts) in order, one task each, then the partials are
 * added in part order (0 = one reduction over the group's images, the GEMM tiles in
 * parallel). Depends on the shape only, so the sums do not depend on the thread count. */
#define DW_PARTS 8
static int dw_parts(const sde_nn_conv2d_shape *s, int imgs) {
  const size_t per = (size_t)s->C_out * s->C_in * s->KH * s->KW;
  int p = imgs < DW_PARTS ? imgs : DW_PARTS;
  while (p > 1 && (size_t)p * per > CONV_COL_FLOATS) p /= 2;
  return p > 1 ? p : 0;
}

static int dw_parts(const sde_nn_conv2d_shape *s, int imgs);
static int dconv_dinp_shape(const sde_nn_conv2d_shape *s, sde_nn_conv2d_shape *t);
static int avx2_dinp_shape(const sde_nn_conv2d_shape *s, sde_nn_conv2d_shape *t);

size_t sde_nn_conv2d_scratch_floats(const sde_nn_conv2d_shape *s) {
  if (conv2d_check(s) != SDE_OK || conv2d_is_pointwise(s)) return 0;
  int imgs, rows;
  conv2d_plan(s, &imgs, &rows);
  const size_t K = (size_t)s->C_in * s->KH * s->KW;
  size_t n = K * imgs * rows * sde_nn_conv2d_out_w(s);
  /* backward: the dweight partials after the columns */
  n += (size_t)dw_parts(s, imgs) * s->C_out * K;
  if (dconv_usable(s)) {
    size_t d = dconv_scratch_floats(s);
    if (d > n) n = d;
  }
#ifdef HAVE_DCONV
  if (pconv_s2_usable(s)) {
    size_t d = pconv_s2_scratch_floats(s);
    if (d > n) n = d;
  }
  if (wino_shape_ok(s)) { /* the forward, and the input gradient (C_in and C_out swapped) */
    sde_nn_conv2d_shape t = *s;
    t.C_in = s->C_out, t.C_out = s->C_in;
    size_t d = wino_scratch_floats(s), e = wino_scratch_floats(&t);
    if (avx2_cpu_ok()) d = sde_ops_wino_avx2_scratch_floats(s), e = sde_ops_wino_avx2_scratch_floats(&t);
    if (d > n) n = d;
    if (e > n) n = e;
  }
#endif
  sde_nn_conv2d_shape t;
  if (dconv_dinp_shape(s, &t)) { /* backward: dinp as a direct conv */
    size_t d = dconv_scratch_floats(&t);
    if (d > n) n = d;
  }
  if (sde_ops_conv_avx2_usable(s)) { /* AVX2: the forward and dweight */
    size_t d = sde_ops_conv_avx2_scratch_floats(s);
    if (d > n) n = d;
  }
  if (avx2_dinp_shape(s, &t)) { /* AVX2: dinp as a direct conv */
    size_t d = sde_ops_conv_avx2_scratch_floats(&t);
    if (d > n) n = d;
  }
  return n;
}

/* im2col and col2im_add: g images, output rows [oh0, oh1) */
typedef struct {
  float *col;
  const float *x;
  float *dx;
  const float *dcol;
  const sde_nn_conv2d_shape *s;
  int oh0, oh1;
} col_job;

static void im2col_rows(void *ctx, int64_t r0, int64_t r1) {
  const col_job *j = ctx;
  const sde_nn_conv2d_shape *s = j->s;
  int H = s->H, W = s->W, KH = s->KH, KW = s->KW, st = s->stride, oh0 = j->oh0, oh1 = j->oh1;
  int Wo = sde_nn_conv2d_out_w(s), nc = (oh1 - oh0) * Wo;
  int rows = s->C_in * KH * KW;
  size_t in_img = (size_t)s->C_in * H * W;
  const float *x = j->x;
  for (int gr = (int)r0; gr < r1; gr++) {
    int i = gr / rows, r = gr % rows;
    int c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
    const float *xc = x + i * in_img + (size_t)c * H * W;
    float *dst = j->col + (size_t)gr * nc;
    /* output columns whose input column iw = ow·st − pad_left + kw is inside [0, W) */
    int ow_lo = 0, ow_hi = Wo;
    while (ow_lo < Wo && ow_lo * st - s->pad_left + kw < 0) ow_lo++;
    while (ow_hi > ow_lo && (ow_hi - 1) * st - s->pad_left + kw >= W) ow_hi--;
    for (int oh = oh0; oh < oh1; oh++) {
      float *d = dst + (size_t)(oh - oh0) * Wo;
      int ih = oh * st - s->pad_top + kh;
      if (ih < 0 || ih >= H) {
        memset(d, 0, (size_t)Wo * sizeof(float));
        continue;
      }
      const float *xr = xc + (size_t)ih * W - s->pad_left + kw;
      for (int ow = 0; ow < ow_lo; ow++) d[ow] = 0.0f;
      if (st == 1) {
        memcpy(d + ow_lo, xr + ow_lo, (size_t)(ow_hi - ow_lo) * sizeof(float));
      } else {
        for (int ow = ow_lo; ow < ow_hi; ow++) d[ow] = xr[(size_t)ow * st];
      }
      for (int ow = ow_hi; ow < Wo; ow++) d[ow] = 0.0f;
    }
  }
}

/* col[g][C_in·KH·KW][(oh1-oh0)·Wo] <- patches of x[g][C_in,H,W], output rows [oh0, oh1) */
static void im2col(float *col, const float *x, int g, const sde_nn_conv2d_shape *s, int oh0,
                   int oh1) {
  col_job j = {.col = col, .x = x, .s = s, .oh0 = oh0, .oh1 = oh1};
  int64_t rows = (int64_t)g * s->C_in * s->KH * s->KW;
  sde_parallel_for(rows, grain(rows, (size_t)rows * (oh1 - oh0) * sde_nn_conv2d_out_w(s)),
                   im2col_rows, &j);
}

static void col2im_planes(void *ctx, int64_t p0, int64_t p1) {
  const col_job *j = ctx;
  const sde_nn_conv2d_shape *s = j->s;
  int H = s->H, W = s->W, KH = s->KH, KW = s->KW, st = s->stride, oh0 = j->oh0, oh1 = j->oh1;
  int Wo = sde_nn_conv2d_out_w(s), nc = (oh1 - oh0) * Wo;
  for (int gc = (int)p0; gc < p1; gc++) {
    float *dxc = j->dx + (size_t)gc * H * W; /* image gc / Ci, channel gc % Ci */
    for (int kh = 0; kh < KH; kh++) {
      for (int kw = 0; kw < KW; kw++) {
        const float *src = j->dcol + ((size_t)(gc * KH + kh) * KW + kw) * nc;
        int ow_lo = 0, ow_hi = Wo;
        while (ow_lo < Wo && ow_lo * st - s->pad_left + kw < 0) ow_lo++;
        while (ow_hi > ow_lo && (ow_hi - 1) * st - s->pad_left + kw >= W) ow_hi--;
        for (int oh = oh0; oh < oh1; oh++) {
          int ih = oh * st - s->pad_top + kh;
          if (ih < 0 || ih >= H) continue;
          const float *sr = src + (size_t)(oh - oh0) * Wo;
          float *dr = dxc + (size_t)ih * W - s->pad_left + kw;
          for (int ow = ow_lo; ow < ow_hi; ow++) dr[(size_t)ow * st] += sr[ow];
        }
      }
    }
  }
}

/* dx[g][C_in,H,W] += scatter of dcol[g][C_in·KH·KW][(oh1-oh0)·Wo] (adjoint of im2col) */
static void col2im_add(float *dx, const float *dcol, int g, const sde_nn_conv2d_shape *s,
                       int oh0, int oh1) {
  col_job j = {.dx = dx, .dcol = dcol, .s = s, .oh0 = oh0, .oh1 = oh1};
  int64_t planes = (int64_t)g * s->C_in;
  size_t work = (size_t)planes * s->KH * s->KW * (oh1 - oh0) * sde_nn_conv2d_out_w(s);
  sde_parallel_for(planes, grain(planes, work), col2im_planes, &j);
}

/* Direct 3x3 (any KH x KW) stride-1 convolution for AVX-512 CPUs, no im2col and no
 * per-tile repacking (the path sde_nn_conv2d_forward takes when the CPU has AVX-512F).
 *
 * Each image is copied once into zero-padded planes [C_in][Hp·Wp (+ slack)]. Outputs are
 * computed on the padded grid, q = oh·Wp + ow with ow in [0, Wp), so that the input of tap
 * (kh, kw) is the same plane shifted by kh·Wp + kw: every tap is one unaligned vector
 * load, and the Wp − Wo columns past the right edge are computed and thrown away. A
 * register tile is DC_R output channels x DC_J vectors of 16 positions, accumulated over
 * (c_in, kh, kw) in that fixed order (one FMA chain per output element), so the result
 * does not depend on the thread count or on how tasks fall on threads. The weights are
 * packed per call, the DC_R channels of a tap contiguous (dconv_pack_weights). */
#define DC_R 8
#define DC_J 3
#define DC_V 16


/* Three layouts (the mode depends on the shape only):
 *  DC_GRID: outputs on the padded grid as above (any shape; wastes Wp − Wo columns).
 *  DC_ROWS: Wo a multiple of 16: the padded planes as above, but each vector is 16 outputs
 *           of one output row, so nothing is computed twice or thrown away.
 *  DC_MASK: 16 a multiple of Wo = W ("same" padding horizontally, Ho·Wo a multiple of 16):
 *           the planes are padded vertically only (row stride W), a vector is 16/W whole
 *           output rows, and the horizontal zero padding is a per-kw lane mask on the loads.
 * In every mode tap (kh, kw) of vector v is the load at off[v] + kh·rs + kw, rs the row
 * stride of the padded planes. */
enum { DC_GRID, DC_ROWS, DC_MASK };
#define DC_SLACK 16 /* floats before each DC_MASK plane (reads at kw − pad_left < 0) */
#ifndef DC_LOCAL
#define DC_LOCAL 65536 /* floats of padded planes per task, at most, for per-task padding */
#endif
#define DC_CHUNK 1024 /* outputs per channel aimed at per chunk of images (per-task padding) */
#define DC_TASKS 8    /* tasks aimed at (per-task padding) */

typedef struct {
  int mode, Hp, Wp, Ho, Wo, rs, nvec, ntile, ncb;
  size_t S; /* floats per padded plane */
} dconv_plan;

static int dconv_usable(const sde_nn_conv2d_shape *s) {
  return s->stride == 1 && !conv2d_is_pointwise(s) && s->KW <= 16 && dconv_cpu_ok();
}

static void dconv_plan_make(const sde_nn_conv2d_shape *s, dconv_plan *p) {
  p->Hp = s->H + s->pad_top + s->pad_bottom;
  p->Wp = s->W + s->pad_left + s->pad_right;
  p->Ho = p->Hp - s->KH + 1;
  p->Wo = p->Wp - s->KW + 1;
  p->ncb = ceil_div(s->C_out, DC_R);
  size_t plane = (size_t)p->Hp * p->Wp, need;
  if (p->Wo % DC_V == 0) {
    p->mode = DC_ROWS;
    p->rs = p->Wp;
    p->nvec = p->Ho * p->Wo / DC_V;
    need = plane + DC_V;
  } else if (DC_V % p->Wo == 0 && p->Wo == s->W && (p->Ho * p->Wo) % DC_V == 0 &&
             s->pad_left < DC_SLACK) {
    p->mode = DC_MASK;
    p->rs = s->W;
    p->nvec = p->Ho * p->Wo / DC_V;
    need = DC_SLACK + (size_t)p->Hp * s->W + DC_SLACK;
    plane = 0;
  } else {
    p->mode = DC_GRID;
    p->rs = p->Wp;
    p->nvec = ceil_div(p->Ho * p->Wp, DC_V);
    need = (size_t)ceil_div(p->nvec, DC_J) * DC_J * DC_V + (size_t)(s->KH - 1) * p->Wp + s->KW;
  }
  p->ntile = ceil_div(p->nvec, DC_J);
  p->S = (size_t)round_up16((int)(need > plane ? need : plane));
}

/* the packed weights of dconv_forward (dconv_pack_weights) */
static size_t dconv_wpk_floats(const sde_nn_conv2d_shape *s) {
  return (size_t)ceil_div(s->C_out, DC_R) * DC_R * s->C_in * s->KH * s->KW;
}

/* the padded planes, then (64-byte aligned) the packed weights */
static size_t dconv_scratch_floats(const sde_nn_conv2d_shape *s) {
  dconv_plan p;
  dconv_plan_make(s, &p);
  return (size_t)s->B * s->C_in * p.S + 32 + dconv_wpk_floats(s);
}

/* The input gradient of a stride-1 conv is a stride-1 conv of dout[B,C_out,Ho,Wo] with the
 * flipped, transposed weights wT[ci][co][kh][kw] = w[co][ci][KH-1-kh][KW-1-kw] and padding
 * KH-1-pad_top etc.: *t that shape, 0 when a pad is KH or more (no such conv) */
static int dinp_shape(const sde_nn_conv2d_shape *s, sde_nn_conv2d_shape *t) {
  if (s->stride != 1 || s->pad_top >= s->KH || s->pad_bottom >= s->KH || s->pad_left >= s->KW ||
      s->pad_right >= s->KW)
    return 0;
  sde_nn_conv2d_shape u = {s->B,  s->C_out, sde_nn_conv2d_out_h(s), sde_nn_conv2d_out_w(s),
                           s->C_in, s->KH, s->KW, 1, s->KH - 1 - s->pad_top,
                           s->KH - 1 - s->pad_bottom, s->KW - 1 - s->pad_left,
                           s->KW - 1 - s->pad_right, s->by_batch};
  *t = u;
  return 1;
}

/* 1 (and *t as dinp_shape) when the AVX-512 direct conv can do the input gradient */
static int dconv_dinp_shape(const sde_nn_conv2d_shape *s, sde_nn_conv2d_shape *t) {
  return dconv_usable(s) && dinp_shape(s, t) && dconv_usable(t);
}

/* the same for the AVX2 direct conv (ops_conv_avx2.c), which then takes s's forward too */
static int avx2_dinp_shape(const sde_nn_conv2d_shape *s, sde_nn_conv2d_shape *t) {
  return sde_ops_conv_avx2_usable(s) && dinp_shape(s, t);
}

#ifdef HAVE_DCONV
/* acc[r][j·16 + i] = Σ_{c,kh,kw} w_r[c][kh][kw] · x[c·S + off[j] + kh·rs + kw + i] (lanes
 * outside km[kw] read as 0 when MASKED), the weights packed as wp[c][kh·KW + kw][r] (the
 * DC_R rows of one tap contiguous: one pointer, constant offsets; rows past the last output
 * channel repeat it). The accumulators start from tile (load) or 0. At the end they go to
 * tile (dst NULL), or, for the rows r < nr, straight to the output vectors dst[j] + r·ds:
 * acc + bias[r] (+ 0 without bias, so that a sum of −0 comes out +0), or dst + acc
 * (accum). One load per input vector and tap, kept in a register by an empty asm (gcc
 * otherwise folds it into each of the DC_R FMAs, or hoists the loads of later taps and
 * spills accumulators). */
__attribute__((target("avx512f"), always_inline)) static inline void
dconv_kernel(float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *wp,
             int Cin, size_t S, int KH, int KW, int rs, const int J, const int MASKED, int load,
             float *const *dst, size_t ds, int nr, const float *bias, int accum) {
  __m512 acc[DC_R][DC_J];
  const float *xj[DC_J];
#pragma GCC unroll 3
  for (int j = 0; j < J; j++) xj[j] = x + off[j];
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++)
#pragma GCC unroll 3
    for (int j = 0; j < J; j++)
      acc[r][j] = load ? _mm512_loadu_ps(tile + r * DC_J * DC_V + j * DC_V) : _mm512_setzero_ps();
  const int KK = KH * KW;
  for (int c = 0; c < Cin; c++, wp += (size_t)KK * DC_R) {
    const size_t xc = (size_t)c * S;
#pragma GCC unroll 3
    for (int kh = 0; kh < KH; kh++) {
      const size_t xr = xc + (size_t)kh * rs;
#pragma GCC unroll 3
      for (int kw = 0; kw < KW; kw++) {
        const float *wk = wp + (size_t)(kh * KW + kw) * DC_R;
        __m512 xv[DC_J];
#pragma GCC unroll 3
        for (int j = 0; j < J; j++) {
          xv[j] = MASKED ? _mm512_maskz_loadu_ps(km[kw], xj[j] + xr + kw)
                         : _mm512_loadu_ps(xj[j] + xr + kw);
          __asm__("" : "+v"(xv[j]));
        }
#pragma GCC unroll 8
        for (int r = 0; r < DC_R; r++) {
          __m512 wv = _mm512_set1_ps(wk[r]);
#pragma GCC unroll 3
          for (int j = 0; j < J; j++) acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
        }
      }
    }
  }
  if (!dst) {
#pragma GCC unroll 8
    for (int r = 0; r < DC_R; r++)
#pragma GCC unroll 3
      for (int j = 0; j < J; j++) _mm512_storeu_ps(tile + r * DC_J * DC_V + j * DC_V, acc[r][j]);
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++) {
    if (r >= nr) break;
    const __m512 bv = _mm512_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) {
      float *o = dst[j] + (size_t)r * ds;
      _mm512_storeu_ps(o, accum ? _mm512_add_ps(_mm512_loadu_ps(o), acc[r][j])
                                : _mm512_add_ps(acc[r][j], bv));
    }
  }
}

#define DCONV_TILE(JJ, MM)                                                                    \
  __attribute__((target("avx512f"))) static void dconv_tile##JJ##_##MM(                       \
      float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *wp, \
      int Cin, size_t S, int KH, int KW, int rs, int load, float *const *dst, size_t ds,      \
      int nr, const float *bias, int accum) {                                                 \
    dconv_kernel(tile, x, off, km, wp, Cin, S, KH, KW, rs, JJ, MM, load, dst, ds, nr, bias,   \
                 accum);                                                                      \
  }
/* the same with KH = KW = 3 known at compile time (the taps unrolled) */
#define DCONV_TILE33(JJ, MM)                                                                  \
  __attribute__((target("avx512f"))) static void dconv_tile##JJ##_##MM##_33(                  \
      float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *wp, \
      int Cin, size_t S, int KH, int KW, int rs, int load, float *const *dst, size_t ds,      \
      int nr, const float *bias, int accum) {                                                 \
    (void)KH;                                                                                 \
    (void)KW;                                                                                 \
    dconv_kernel(tile, x, off, km, wp, Cin, S, 3, 3, rs, JJ, MM, load, dst, ds, nr, bias,     \
                 accum);                                                                      \
  }
DCONV_TILE(1, 0)
DCONV_TILE(2, 0)
DCONV_TILE(3, 0)
DCONV_TILE(1, 1)
DCONV_TILE(2, 1)
DCONV_TILE(3, 1)
DCONV_TILE33(1, 0)
DCONV_TILE33(2, 0)
DCONV_TILE33(3, 0)
DCONV_TILE33(1, 1)
DCONV_TILE33(2, 1)
DCONV_TILE33(3, 1)

typedef void (*dconv_tile_fn)(float *, const float *, const ptrdiff_t *, const __mmask16 *,
                              const float *, int, size_t, int, int, int, int, float *const *,
                              size_t, int, const float *, int);

/* dconv_forward's state, shared by its two loops */
typedef struct {
  const sde_nn_conv2d_shape *s;
  dconv_plan p;
  float *out, *xp;
  const float *inp, *wpk, *bias; /* wpk: the packed weights [ncb][C_in][KH·KW][DC_R] */
  __mmask16 km[16];
  int V, tpc, cbk, nt, masked, k33, accum;
  int nb, gsz; /* dconv_local_tasks: images per chunk, output-channel blocks per task */
  atomic_int fail; /* a task could not allocate its buffer */
} dconv_job;

/* d[0, S) <- the zero-padded plane of src[H·W] in the layout of j->p (AVX-512 only: the
 * direct paths that use it run where the CPU has it): the plane zeroed, then each input row
 * copied in 16-float pieces (one memcpy call a row cost more than the copy at 32 wide) */
__attribute__((target("avx512f"))) static void dconv_pad_plane(const dconv_job *j, float *d,
                                                              const float *src) {
  const dconv_plan *p = &j->p;
  const int H = j->s->H, W = j->s->W, pt = j->s->pad_top, pl = j->s->pad_left;
  const __m512 z = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + DC_V <= p->S; i += DC_V) _mm512_storeu_ps(d + i, z);
  for (; i < p->S; i++) d[i] = 0.0f;
  if (j->masked) { /* rows of W back to back after DC_SLACK + pt·W zeros */
    float *dst = d + DC_SLACK + (size_t)pt * W;
    const size_t n = (size_t)H * W;
    size_t k = 0;
    for (; k + DC_V <= n; k += DC_V) _mm512_storeu_ps(dst + k, _mm512_loadu_ps(src + k));
    const __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
    _mm512_mask_storeu_ps(dst + k, m, _mm512_maskz_loadu_ps(m, src + k));
    return;
  }
  const int w16 = W & ~(DC_V - 1);
  const __mmask16 mt = (__mmask16)((1u << (W - w16)) - 1u);
  for (int r = 0; r < H; r++) {
    float *dr = d + (size_t)(r + pt) * p->Wp + pl;
    const float *sr = src + (size_t)r * W;
    for (int c = 0; c < w16; c += DC_V) _mm512_storeu_ps(dr + c, _mm512_loadu_ps(sr + c));
    if (mt) _mm512_mask_storeu_ps(dr + w16, mt, _mm512_maskz_loadu_ps(mt, sr + w16));
  }
}

/* zero-padded input planes bc in [b0, b1) */
static void dconv_pad(void *ctx, int64_t b0, int64_t b1) {
  const dconv_job *j = ctx;
  for (int64_t bc = b0; bc < b1; bc++)
    dconv_pad_plane(j, j->xp + (size_t)bc * j->p.S, j->inp + (size_t)bc * j->s->H * j->s->W);
}

/* One register tile: J vectors from vector v0 of a run of images whose padded planes start
 * at xb (image i at xb + i·C_in·S) and whose outputs start at ob. DC_ROWS / DC_MASK number
 * the vectors across the run (vector v is vector v % nvec of image v / nvec, so a tile may
 * span two images); DC_GRID tiles stay in image b. Input channels [c0, c0 + cn): the
 * accumulators come from tile when c0 > 0 and go back to it unless this is the last
 * chunk, where the kernel writes DC_ROWS / DC_MASK outputs itself (each vector is 16
 * consecutive outputs of one image and channel) and DC_GRID tiles are scattered here. */
__attribute__((target("avx512f"))) static void dconv_tile_run(const dconv_job *j, const float *xb,
                                                             float *ob, float *tile, int cb,
                                                             int c0, int cn, int v0, int J, int b) {
  static const dconv_tile_fn fns[2][2][3] = {
      {{dconv_tile1_0, dconv_tile2_0, dconv_tile3_0}, {dconv_tile1_1, dconv_tile2_1, dconv_tile3_1}},
      {{dconv_tile1_0_33, dconv_tile2_0_33, dconv_tile3_0_33},
       {dconv_tile1_1_33, dconv_tile2_1_33, dconv_tile3_1_33}}};
  const sde_nn_conv2d_shape *s = j->s;
  const dconv_plan *p = &j->p;
  const int Ci = s->C_in, Co = s->C_out, KK = s->KH * s->KW;
  const int HWo = p->Ho * p->Wo, last = c0 + cn == Ci, direct = last && p->mode != DC_GRID;
  const size_t out_img = (size_t)Co * HWo;
  const int nr = Co - cb * DC_R < DC_R ? Co - cb * DC_R : DC_R;
  ptrdiff_t off[DC_J];
  float *dst[DC_J];
  for (int k = 0; k < J; k++) {
    int v = v0 + k, bv = p->mode == DC_GRID ? b : v / p->nvec, vl = p->mode == DC_GRID ? v : v % p->nvec;
    ptrdiff_t base = (ptrdiff_t)bv * Ci * p->S;
    if (p->mode == DC_ROWS) {
      int per_row = p->Wo / DC_V, oh = vl / per_row, ow0 = (vl % per_row) * DC_V;
      off[k] = base + (ptrdiff_t)oh * p->Wp + ow0;
    } else if (p->mode == DC_MASK) {
      off[k] = base + DC_SLACK - s->pad_left + (ptrdiff_t)vl * DC_V;
    } else {
      off[k] = base + (ptrdiff_t)vl * DC_V;
    }
    if (direct) dst[k] = ob + (size_t)bv * out_img + (size_t)cb * DC_R * HWo + (size_t)vl * DC_V;
  }
  fns[j->k33][j->masked][J - 1](tile, xb + (size_t)c0 * p->S, off, j->km,
                                j->wpk + ((size_t)cb * Ci + c0) * KK * DC_R, cn, p->S, s->KH,
                                s->KW, p->rs, c0 > 0, direct ? dst : NULL, (size_t)HWo, nr,
                                j->bias ? j->bias + cb * DC_R : NULL, j->accum);
  if (!last || direct) return;
  /* DC_GRID: scatter the valid columns */
  for (int r = 0; r < nr; r++) {
    int co = cb * DC_R + r;
    float bv = j->bias ? j->bias[co] : 0.0f;
    const float *tr = tile + r * DC_J * DC_V;
    float *oc = ob + (size_t)b * out_img + (size_t)co * HWo;
    int q0 = v0 * DC_V, Np = p->Ho * p->Wp;
    int q = q0, qe = q0 + J * DC_V < Np ? q0 + J * DC_V : Np;
    while (q < qe) {
      int oh = q / p->Wp, ow = q % p->Wp;
      int seg = p->Wp - ow < qe - q ? p->Wp - ow : qe - q;
      int nv = ow < p->Wo ? (p->Wo - ow < seg ? p->Wo - ow : seg) : 0;
      float *o = oc + (size_t)oh * p->Wo + ow;
      const float *tv = tr + (q - q0);
      if (j->accum)
        for (int i = 0; i < nv; i++) o[i] += tv[i];
      else
        for (int i = 0; i < nv; i++) o[i] = tv[i] + bv;
      q += seg;
    }
  }
}

/* tile tl of a run of nimg images: *v0 and *J (and *b for DC_GRID); DC_ROWS / DC_MASK cut
 * the run's V vectors in tiles of 3, the last four as 2 + 2 rather than 3 + 1 */
static void dconv_tile_at(const dconv_plan *p, int nimg, int tl, int *v0, int *J, int *b) {
  if (p->mode == DC_GRID) {
    *b = tl / p->ntile;
    *v0 = (tl % p->ntile) * DC_J;
    *J = p->nvec - *v0 < DC_J ? p->nvec - *v0 : DC_J;
    return;
  }
  const int V = nimg * p->nvec, nt = ceil_div(V, DC_J);
  *b = 0;
  if (V % DC_J == 1 && V > 1 && tl >= nt - 2) {
    *v0 = V - 4 + 2 * (tl - (nt - 2));
    *J = 2;
  } else {
    *v0 = tl * DC_J;
    *J = V - *v0 < DC_J ? V - *v0 : DC_J;
  }
}

static int dconv_run_tiles(const dconv_plan *p, int nimg) {
  return p->mode == DC_GRID ? nimg * p->ntile : ceil_div(nimg * p->nvec, DC_J);
}

/* Whole-batch padding (j->xp holds every image's planes, padded by dconv_pad first): tasks t
 * in [t0, t1) are (chunk of tpc tiles of the batch) x (block of DC_R output channels).
 * Partial sums of the task's tiles are kept while the input channels go by in chunks of
 * cbk (whose weights stay in L1 across the tiles); reloading a float partial sum is exact,
 * so every output is still one FMA chain over c = 0 .. C_in − 1 in order. */
static void dconv_tasks(void *ctx, int64_t t0, int64_t t1) {
  dconv_job *j = ctx;
  const dconv_plan *p = &j->p;
  const int Ci = j->s->C_in, tpc = j->tpc, nt = j->nt;
  const int multi = Ci > j->cbk || p->mode == DC_GRID; /* tiles parked in accbuf */
  float *accbuf = multi ? malloc(sizeof(float) * (size_t)tpc * DC_R * DC_J * DC_V) : NULL;
  if (multi && !accbuf) {
    atomic_store(&j->fail, 1);
    return;
  }
  for (int t = (int)t0; t < t1; t++) {
    int ch = t / p->ncb, cb = t % p->ncb;
    int tl1 = (ch + 1) * tpc < nt ? (ch + 1) * tpc : nt;
    for (int c0 = 0; c0 < Ci; c0 += j->cbk) {
      int cn = Ci - c0 < j->cbk ? Ci - c0 : j->cbk;
      for (int tl = ch * tpc; tl < tl1; tl++) {
        int v0, J, b;
        dconv_tile_at(p, j->s->B, tl, &v0, &J, &b);
        dconv_tile_run(j, j->xp, j->out,
                       multi ? accbuf + (size_t)(tl - ch * tpc) * DC_R * DC_J * DC_V : NULL, cb,
                       c0, cn, v0, J, b);
      }
    }
  }
  free(accbuf);
}

/* Padding per task (when a chunk's planes are small): tasks t in [t0, t1) are (chunk of nb
 * images) x (group of gsz blocks of DC_R output channels). A task pads its chunk's input
 * planes into its own buffer (they stay in L2 for all its blocks; no pass over the whole
 * input and no barrier before the tiles), then runs the chunk's tiles per block. The tiles
 * differ from dconv_tasks' but each output is the same FMA chain, so the bits do not. */
static void dconv_local_tasks(void *ctx, int64_t t0, int64_t t1) {
  dconv_job *j = ctx;
  const sde_nn_conv2d_shape *s = j->s;
  const dconv_plan *p = &j->p;
  const int Ci = s->C_in, nb = j->nb, ngrp = ceil_div(p->ncb, j->gsz);
  const size_t HW = (size_t)s->H * s->W, tile = DC_R * DC_J * DC_V;
  const int multi = Ci > j->cbk || p->mode == DC_GRID;
  const size_t nx = (size_t)nb * Ci * p->S + DC_V;
  const size_t nacc = multi ? (size_t)dconv_run_tiles(p, nb) * tile : 0;
  float *xl = aligned_alloc(64, sizeof(float) * (size_t)round_up16((int)(nx + nacc)));
  if (!xl) {
    atomic_store(&j->fail, 1);
    return;
  }
  float *accbuf = multi ? xl + nx : NULL;
  for (int64_t t = t0; t < t1; t++) {
    const int ch = (int)(t / ngrp), grp = (int)(t % ngrp);
    const int b0 = ch * nb, nimg = s->B - b0 < nb ? s->B - b0 : nb;
    const int cb0 = grp * j->gsz, cb1 = cb0 + j->gsz < p->ncb ? cb0 + j->gsz : p->ncb;
    for (int i = 0; i < nimg * Ci; i++)
      dconv_pad_plane(j, xl + (size_t)i * p->S, j->inp + ((size_t)b0 * Ci + i) * HW);
    const int nt = dconv_run_tiles(p, nimg);
    float *ob = j->out + (size_t)b0 * s->C_out * p->Ho * p->Wo;
    for (int cb = cb0; cb < cb1; cb++)
      for (int c0 = 0; c0 < Ci; c0 += j->cbk) {
        int cn = Ci - c0 < j->cbk ? Ci - c0 : j->cbk;
        for (int tl = 0; tl < nt; tl++) {
          int v0, J, b;
          dconv_tile_at(p, nimg, tl, &v0, &J, &b);
          dconv_tile_run(j, xl, ob, multi ? accbuf + (size_t)tl * tile : NULL, cb, c0, cn, v0, J, b);
        }
      }
  }
  free(xl);
}

/* The packed weights of dconv_forward: wpk[cb][c][k][r] = w(o = min(cb·DC_R + r, Co − 1), c,
 * k) with w(o, c, k) = w[o·so + c·sc + k], or w[o·so + c·sc + KK − 1 − k] when flip (the
 * flipped, transposed weights of the input gradient without a copy of them) */
static void dconv_pack_weights(float *wpk, const float *w, const sde_nn_conv2d_shape *s,
                               size_t so, size_t sc, int flip) {
  const int Co = s->C_out, Ci = s->C_in, KK = s->KH * s->KW, ncb = ceil_div(Co, DC_R);
  for (int cb = 0; cb < ncb; cb++)
    for (int c = 0; c < Ci; c++)
      for (int k = 0; k < KK; k++)
        for (int r = 0; r < DC_R; r++) {
          const int o = cb * DC_R + r < Co ? cb * DC_R + r : Co - 1;
          *wpk++ = w[(size_t)o * so + (size_t)c * sc + (size_t)(flip ? KK - 1 - k : k)];
        }
}

/* out = conv(inp) + bias, or out += conv(inp) when accum (bias unused); the weights w(o, c, k)
 * as in dconv_pack_weights */
static int dconv_forward(float *out, const float *inp, const float *weight, size_t so, size_t sc,
                         int flip, const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                         int accum) {
  dconv_job j = {.s = s, .out = out, .xp = scratch, .inp = inp, .bias = bias, .accum = accum};
  dconv_plan_make(s, &j.p);
  const dconv_plan *p = &j.p;
  float *wpk = scratch + (size_t)s->B * s->C_in * p->S;
  wpk += (16 - ((uintptr_t)wpk / sizeof(float)) % 16) % 16;
  dconv_pack_weights(wpk, weight, s, so, sc, flip);
  j.wpk = wpk;
  /* tiles of DC_J vectors; ROWS/MASK number the vectors across the batch (V of them), so a
   * tile may span two images */
  j.V = s->B * p->nvec;
  j.tpc = p->ntile < 32 ? p->ntile : 32;
  j.cbk = 288 / (s->KH * s->KW) > 8 ? 288 / (s->KH * s->KW) : 8; /* input channels per pass */
  j.nt = p->mode == DC_GRID ? s->B * p->ntile : ceil_div(j.V, DC_J);
  j.masked = p->mode == DC_MASK;
  j.k33 = s->KH == 3 && s->KW == 3;
  atomic_init(&j.fail, 0);
  for (int kw = 0; kw < s->KW; kw++) {
    unsigned m = 0;
    for (int i = 0; i < DC_V; i++) {
      int iw = i % s->W + kw - s->pad_left;
      if (iw >= 0 && iw < s->W) m |= 1u << i;
    }
    j.km[kw] = (__mmask16)m;
  }
  /* per-task padding when one image's padded planes fit in L2 easily: chunks of images
   * with about DC_CHUNK outputs per channel and at most DC_LOCAL floats of planes, at
   * least DC_TASKS tasks (the output-channel blocks split when the chunks are fewer) */
  const size_t img = (size_t)s->C_in * p->S;
  if (img <= DC_LOCAL) {
    const int hwo = p->Ho * p->Wo;
    int nb = hwo >= DC_CHUNK ? 1 : DC_CHUNK / hwo;
    if ((size_t)nb * img > DC_LOCAL) nb = (int)(DC_LOCAL / img);
    while (nb > 1 && ceil_div(s->B, nb) < DC_TASKS) nb--;
    const int nch = ceil_div(s->B, nb);
    int ngrp = nch >= DC_TASKS ? 1 : ceil_div(DC_TASKS, nch);
    if (ngrp > p->ncb) ngrp = p->ncb;
    j.nb = nb;
    j.gsz = ceil_div(p->ncb, ngrp);
    sde_parallel_for_dynamic((int64_t)nch * ceil_div(p->ncb, j.gsz), 1, dconv_local_tasks, &j);
  } else {
    sde_parallel_for(s->B * s->C_in, 1, dconv_pad, &j);
    sde_parallel_for_dynamic((int64_t)ceil_div(j.nt, j.tpc) * p->ncb, 1, dconv_tasks, &j);
  }
  return atomic_load(&j.fail) ? sde_fail(SDE_ENOMEM, "conv2d: out of memory") : SDE_OK;
}

/* dweight of a 3x3 stride-1 conv directly from zero-padded input planes (the DC_ROWS /
 * DC_MASK layouts of dconv_pad_plane) and dout, no im2col and no packing:
 *   dw[co][ci][kh·3 + kw] += Σ_lanes Σ_b Σ_v dout[b][co][16v .. 16v + 16) ·
 *                            xpad[b][ci][base(v) + kh·rs + kw .. + 16)
 * Each (co, ci, tap) has one vector accumulator: lane i takes the products of lane i of
 * every output vector v of every image b, in the order (b, v); the 16 lanes are then summed
 * by _mm512_reduce_add_ps. That order is fixed by the shape alone.
 *
 * Register tile: R ≤ DW_R = 3 output channels x 1 input channel x the 9 taps = 27
 * accumulators; per output vector R dout loads and 9 input loads feed 9·R FMAs (2 x 9 and
 * 11 loads per 18 FMAs before; 1.3-2x faster at the training shapes). The output channels
 * are cut into blocks of 3 and 2 (16 = 3+3+3+3+2+2). A task is (block of cb ≤ DW_CB input
 * channels, group of output-channel blocks, usually all of them); it walks the batch in
 * chunks of nb images (about DW_CHUNK output positions, so that a block's dout rows, 12 KiB,
 * stay in L1), pads the chunk's input planes of its channels into its own buffer (in L1/L2;
 * no pass over the whole input) and runs, per output-channel block, every input channel,
 * the tiles' accumulators parked in a per-task buffer between chunks (storing and
 * reloading a float vector is exact, so every lane is still one FMA chain in (b, v) order).
 * Each dweight element is one task's work, so the sums depend neither on the thread count
 * nor on how tasks fall on threads, and they are bit-identical to the earlier 2 x 9 kernel. */
#define DW_R 3
#define DW_CB 8      /* input channels per task, at most */
#define DW_CHUNK 1024 /* output positions per chunk of images (per output channel) */
#define DW_TASKS 8    /* tasks aimed at */

typedef struct {
  dconv_job *d;
  float *dw;
  const float *g;
  int nblk, q, rem; /* output-channel blocks: the first rem have q + 1 channels, the rest q */
  int cb, ncib, nb; /* input channels per task, input-channel blocks, images per chunk */
  int gsz;          /* output-channel blocks per task */
  atomic_int fail;  /* a task could not allocate its buffer */
} dconv_dw_job;

/* acc[r][k] (k = kh·3 + kw) over images [0, nb) of one chunk for input channel plane x
 * (image stride xs) and output channels g + r·HWo (image stride gs); rows of `per`
 * vectors, `nrow` rows per image, the input pointer skipping `skip` floats after each row */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_kernel(float *part, int load, const float *x, size_t xs, const float *g, size_t gs,
          size_t HWo, int nb, int nrow, int per, int skip, int rs, const __mmask16 *km,
          const int R, const int MASKED) {
  __m512 acc[DW_R][9];
#pragma GCC unroll 3
  for (int r = 0; r < R; r++)
#pragma GCC unroll 9
    for (int k = 0; k < 9; k++)
      acc[r][k] = load ? _mm512_loadu_ps(part + (r * 9 + k) * DC_V) : _mm512_setzero_ps();
  const __mmask16 m0 = MASKED ? km[0] : 0, m1 = MASKED ? km[1] : 0, m2 = MASKED ? km[2] : 0;
  for (int b = 0; b < nb; b++) {
    const float *xq = x + (size_t)b * xs, *gq = g + (size_t)b * gs;
    for (int row = 0; row < nrow; row++, xq += skip) {
      for (int v = 0; v < per; v++, xq += DC_V, gq += DC_V) {
        __m512 gv[DW_R];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) gv[r] = _mm512_loadu_ps(gq + r * HWo);
#pragma GCC unroll 3
        for (int kh = 0; kh < 3; kh++) {
          const float *xr = xq + kh * rs;
#pragma GCC unroll 3
          for (int kw = 0; kw < 3; kw++) {
            const __mmask16 m = kw == 0 ? m0 : kw == 1 ? m1 : m2;
            __m512 xv = MASKED ? _mm512_maskz_loadu_ps(m, xr + kw) : _mm512_loadu_ps(xr + kw);
            /* one load per tap: without this gcc folds it into each of the R FMAs */
            __asm__("" : "+v"(xv));
#pragma GCC unroll 3
            for (int r = 0; r < R; r++)
              acc[r][kh * 3 + kw] = _mm512_fmadd_ps(gv[r], xv, acc[r][kh * 3 + kw]);
          }
        }
      }
    }
  }
#pragma GCC unroll 3
  for (int r = 0; r < R; r++)
#pragma GCC unroll 9
    for (int k = 0; k < 9; k++) _mm512_storeu_ps(part + (r * 9 + k) * DC_V, acc[r][k]);
}

#define DW_TILE(RR, MM)                                                                       \
  __attribute__((target("avx512f"))) static void dw_tile##RR##_##MM(                          \
      float *part, int load, const float *x, size_t xs, const float *g, size_t gs, size_t HWo, \
      int nb, int nrow, int per, int skip, int rs, const __mmask16 *km) {                     \
    dw_kernel(part, load, x, xs, g, gs, HWo, nb, nrow, per, skip, rs, km, RR, MM);            \
  }
DW_TILE(1, 0)
DW_TILE(2, 0)
DW_TILE(3, 0)
DW_TILE(1, 1)
DW_TILE(2, 1)
DW_TILE(3, 1)

typedef void (*dw_tile_fn)(float *, int, const float *, size_t, const float *, size_t, size_t,
                           int, int, int, int, int, const __mmask16 *);

/* tasks t: input-channel block t % ncib, group t / ncib of gsz output-channel blocks. Per
 * chunk of images: for each output-channel block of the group (its dout rows stay in L1),
 * every input channel of the block (its planes stay in L1/L2 across the group). */
__attribute__((target("avx512f"))) static void dconv_dw_tasks(void *ctx, int64_t t0, int64_t t1) {
  static const dw_tile_fn fns[2][3] = {{dw_tile1_0, dw_tile2_0, dw_tile3_0},
                                       {dw_tile1_1, dw_tile2_1, dw_tile3_1}};
  dconv_dw_job *jj = ctx;
  const dconv_job *j = jj->d;
  const sde_nn_conv2d_shape *s = j->s;
  const dconv_plan *p = &j->p;
  const int Ci = s->C_in, Co = s->C_out;
  const size_t HWo = (size_t)p->Ho * p->Wo, gs = (size_t)Co * HWo;
  /* DC_MASK: one run of nvec vectors per image from DC_SLACK − pad_left; DC_ROWS: Ho rows of
   * Wo / 16 vectors, the padded row Wp − Wo floats longer */
  const int nrow = j->masked ? 1 : p->Ho, per = j->masked ? p->nvec : p->Wo / DC_V;
  const int skip = j->masked ? 0 : p->Wp - p->Wo;
  const ptrdiff_t x0 = j->masked ? DC_SLACK - s->pad_left : 0;
  const size_t tile = DW_R * 9 * DC_V, HW = (size_t)s->H * s->W;
  /* the accumulators of the task's tiles, then its chunk's padded planes [c][b][S] */
  const size_t npart = (size_t)jj->gsz * jj->cb * tile, nxc = (size_t)jj->cb * jj->nb * p->S;
  float *part = aligned_alloc(64, sizeof(float) * (npart + nxc)), *xc = part + npart;
  if (!part) {
    atomic_store(&jj->fail, 1);
    return;
  }
  for (int64_t t = t0; t < t1; t++) {
    const int cib = (int)(t % jj->ncib), grp = (int)(t / jj->ncib);
    const int blk0 = grp * jj->gsz, nblk = jj->nblk - blk0 < jj->gsz ? jj->nblk - blk0 : jj->gsz;
    const int ci0 = cib * jj->cb, cn = Ci - ci0 < jj->cb ? Ci - ci0 : jj->cb;
    for (int b0 = 0; b0 < s->B; b0 += jj->nb) {
      const int nb = s->B - b0 < jj->nb ? s->B - b0 : jj->nb;
      for (int c = 0; c < cn; c++)
        for (int b = 0; b < nb; b++)
          dconv_pad_plane(j, xc + ((size_t)c * jj->nb + b) * p->S,
                          j->inp + ((size_t)(b0 + b) * Ci + ci0 + c) * HW);
      /* the next chunk's input planes on their way to L2 while this one computes */
      for (int b = b0 + nb; b < b0 + 2 * jj->nb && b < s->B; b++)
        for (int c = 0; c < cn; c++) {
          const char *src = (const char *)(j->inp + ((size_t)b * Ci + ci0 + c) * HW);
          for (size_t o = 0; o < HW * sizeof(float); o += 64) _mm_prefetch(src + o, _MM_HINT_T1);
        }
      for (int k = 0; k < nblk; k++) {
        const int blk = blk0 + k;
        const int co0 = blk * jj->q + (blk < jj->rem ? blk : jj->rem), R = jj->q + (blk < jj->rem);
        const dw_tile_fn fn = fns[j->masked][R - 1];
        const float *g = jj->g + (size_t)b0 * gs + (size_t)co0 * HWo;
        for (int c = 0; c < cn; c++)
          fn(part + ((size_t)k * jj->cb + c) * tile, b0 > 0, xc + (size_t)c * jj->nb * p->S + x0,
             p->S, g, gs, HWo, nb, nrow, per, skip, p->rs, j->km);
      }
    }
    for (int k = 0; k < nblk; k++) {
      const int blk = blk0 + k;
      const int co0 = blk * jj->q + (blk < jj->rem ? blk : jj->rem), R = jj->q + (blk < jj->rem);
      for (int c = 0; c < cn; c++)
        for (int r = 0; r < R; r++) {
          const float *pr = part + ((size_t)k * jj->cb + c) * tile + (size_t)r * 9 * DC_V;
          float *d = jj->dw + ((size_t)(co0 + r) * Ci + ci0 + c) * 9;
          for (int i = 0; i < 9; i++) d[i] += _mm512_reduce_add_ps(_mm512_load_ps(pr + i * DC_V));
        }
    }
  }
  free(part);
}

/* 1 (and dweight updated) when the direct path takes the shape, -1 when out of memory (part
 * of dweight updated) */
static int dconv_dweight(float *dweight, const float *dout, const float *inp,
                         const sde_nn_conv2d_shape *s) {
  if (!dconv_usable(s) || s->KH != 3 || s->KW != 3) return 0;
  dconv_job j = {.s = s, .inp = inp};
  dconv_plan_make(s, &j.p);
  if (j.p.mode == DC_GRID) return 0;
  j.masked = j.p.mode == DC_MASK;
  for (int kw = 0; kw < s->KW; kw++) {
    unsigned m = 0;
    for (int i = 0; i < DC_V; i++) {
      int iw = i % s->W + kw - s->pad_left;
      if (iw >= 0 && iw < s->W) m |= 1u << i;
    }
    j.km[kw] = (__mmask16)m;
  }
  dconv_dw_job jj = {.d = &j, .dw = dweight, .g = dout};
  jj.nblk = ceil_div(s->C_out, DW_R);
  jj.q = s->C_out / jj.nblk;
  jj.rem = s->C_out % jj.nblk;
  /* tasks: DW_CB input channels x every output channel, split (input channels down to 1, then
   * the output-channel blocks in halves) until there are DW_TASKS of them; shape only */
  jj.cb = DW_CB;
  jj.gsz = jj.nblk;
  while ((int64_t)ceil_div(s->C_in, jj.cb) * ceil_div(jj.nblk, jj.gsz) < DW_TASKS) {
    if (jj.cb > 1) jj.cb /= 2;
    else if (jj.gsz > 1) jj.gsz = ceil_div(jj.gsz, 2);
    else break;
  }
  jj.ncib = ceil_div(s->C_in, jj.cb);
  const int hw = j.p.Ho * j.p.Wo;
  jj.nb = hw >= DW_CHUNK ? 1 : DW_CHUNK / hw;
  atomic_init(&jj.fail, 0);
  sde_parallel_for_dynamic((int64_t)jj.ncib * ceil_div(jj.nblk, jj.gsz), 1, dconv_dw_tasks, &jj);
  return atomic_load(&jj.fail) ? -1 : 1;
}

/* ---- direct 1x1 (pointwise, NIN) and 3x3 stride-2 convolutions ---------------------------
 * Both are GEMMs out[co][p] = bias[co] + Σ_k w(co, k) · panel[k][p] over k = input channel
 * (1x1, NIN) or (input channel, tap) (stride 2), the weights read in place at
 * w[co·wr + k·wc] (conv [Co][Ci][KH][KW] or NIN [Ci][Co]). A task takes 48 output
 * positions of the batch (runs of several images when H·W < 48), copies their K input
 * columns into a contiguous panel [K][48] (read in place, the columns of a 1x1 conv on a
 * 32x32 image lie 4 KiB apart and all fall in the same few L1 sets: 1.8x slower), and runs
 * register tiles of DC_R output channels x DC_J vectors over it for up to PC_G blocks of
 * channels. One FMA chain per output over k in order: the bits depend neither on the
 * thread count nor on the batch.
 * Stride 2 takes its panel from the four polyphase planes of the zero-padded input (input
 * column 2·ow + kw is column ow + kw/2 of phase kw & 1, rows alike): contiguous copies. */
#define PC_G 16 /* output-channel blocks per task (128 channels): the panel is copied once */
#define PC_P (DC_J * DC_V) /* panel row: the positions of one tile */

/* dst[r·ds + j·16 + i] = bias[r] + Σ_{k < K} w_r[k·wc] · panel[k·PC_P + j·16 + i] for r < nr,
 * w_r = w + min(r, nr − 1)·wr (rows past nr repeat the last one and are dropped); bias NULL:
 * + 0 (so that a sum of −0 comes out +0 whichever way the output is written) */
__attribute__((target("avx512f"), always_inline)) static inline void
pconv_kernel(float *dst, size_t ds, const float *bias, const float *panel, const float *w,
             size_t wr, size_t wc, int nr, int K, const int J) {
  __m512 acc[DC_R][DC_J];
  const float *wp[DC_R];
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++) {
    wp[r] = w + (size_t)(r < nr ? r : nr - 1) * wr;
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) acc[r][j] = _mm512_setzero_ps();
  }
  for (int k = 0; k < K; k++) {
    const float *pk = panel + (size_t)k * PC_P;
    const size_t wo = (size_t)k * wc;
    __m512 xv[DC_J];
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) xv[j] = _mm512_loadu_ps(pk + j * DC_V);
#pragma GCC unroll 8
    for (int r = 0; r < DC_R; r++) {
      __m512 wv = _mm512_set1_ps(wp[r][wo]);
#pragma GCC unroll 3
      for (int j = 0; j < J; j++) acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++) {
    if (r >= nr) break;
    const __m512 bv = _mm512_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) _mm512_storeu_ps(dst + r * ds + j * DC_V, _mm512_add_ps(acc[r][j], bv));
  }
}

#define PCONV_TILE(JJ)                                                                         \
  __attribute__((target("avx512f"))) static void pconv_tile##JJ(                               \
      float *dst, size_t ds, const float *bias, const float *panel, const float *w, size_t wr, \
      size_t wc, int nr, int K) {                                                              \
    pconv_kernel(dst, ds, bias, panel, w, wr, wc, nr, K, JJ);                                  \
  }
PCONV_TILE(1)
PCONV_TILE(2)
PCONV_TILE(3)

typedef struct {
  float *out;
  const float *x, *w, *bias, *inp;
  int Ci, Co, K, H, W, pt, pl; /* K = Ci (1x1) or 9·Ci (stride 2); H, W, pads: stride 2 */
  size_t S, Sq, ximg, wr, wc;  /* x: S floats per input channel (Sq per phase), ximg per image */
  int s2, Wq, Wo, HWo, HWp;    /* stride 2: phase row; output row, outputs per channel;
                                  positions per image (HWo; stride 2: Ho·Wq, the grid) */
  int B, ntile, G, ngr;        /* tiles of the batch; channel blocks per task, groups of them */
  float *panels;               /* few tiles: every tile's panel, packed once before the tasks */
  atomic_int fail;             /* a task could not allocate its panel */
} pconv_job;

/* A tile's positions: runs of one image each (several images when H·W < 48) */
typedef struct {
  int b, p, len, d; /* image, first position, count, offset in the tile */
} pconv_run_t;

/* the runs of tile tl; returns their count */
static int pconv_runs(const pconv_job *j, int tl, pconv_run_t *runs) {
  const int64_t all = (int64_t)j->B * j->HWp, g0 = (int64_t)tl * PC_P;
  const int64_t g1 = g0 + PC_P < all ? g0 + PC_P : all;
  int n = 0;
  for (int64_t g = g0; g < g1; n++) {
    const int b = (int)(g / j->HWp), p = (int)(g % j->HWp);
    const int len = j->HWp - p < g1 - g ? j->HWp - p : (int)(g1 - g);
    runs[n] = (pconv_run_t){b, p, len, (int)(g - g0)};
    g += len;
  }
  return n;
}

/* panel[c][0, 48) = x[c][0, 48) for c < Ci (a whole tile of a 1x1 conv), the rows PC_PF
 * ahead prefetched: the columns of an image the caches do not hold come from memory in
 * 192-byte pieces, one per channel */
#define PC_PF 8
__attribute__((target("avx512f"))) static void pconv_pack_whole(float *panel, const float *x,
                                                                size_t S, int Ci) {
  for (int c = 0; c < Ci; c++) {
    const float *src = x + (size_t)c * S;
    if (c + PC_PF < Ci)
      for (int l = 0; l < PC_P; l += 16) __builtin_prefetch(src + PC_PF * S + l);
    for (int l = 0; l < PC_P; l += 16)
      _mm512_storeu_ps(panel + (size_t)c * PC_P + l, _mm512_loadu_ps(src + l));
  }
}

/* panel[k][0, n) for the tile's n positions (the rest of each row 0) */
static void pconv_pack(const pconv_job *j, float *panel, const pconv_run_t *runs, int nrun, int n) {
  if (!j->s2 && nrun == 1 && n == PC_P) {
    pconv_pack_whole(panel, j->x + (size_t)runs[0].b * j->ximg + runs[0].p, j->S, j->Ci);
    return;
  }
  for (int c = 0; c < j->Ci; c++) {
    if (!j->s2) {
      float *d = panel + (size_t)c * PC_P;
      for (int u = 0; u < nrun; u++)
        memcpy(d + runs[u].d, j->x + (size_t)runs[u].b * j->ximg + (size_t)c * j->S + runs[u].p,
               (size_t)runs[u].len * sizeof(float));
      for (int i = n; i < PC_P; i++) d[i] = 0.0f;
      continue;
    }
    /* stride 2: tap (kh, kw) of grid position oh·Wq + ow is phase (kh & 1, kw & 1) at
     * position (oh + kh/2)·Wq + ow + kw/2: one contiguous copy per run */
    for (int t = 0; t < 9; t++) {
      const int kh = t / 3, kw = t % 3;
      const size_t tap = (size_t)c * j->S + (size_t)(2 * (kh & 1) + (kw & 1)) * j->Sq +
                         (size_t)(kh >> 1) * j->Wq + (kw >> 1);
      float *d = panel + ((size_t)c * 9 + t) * PC_P;
      for (int u = 0; u < nrun; u++)
        memcpy(d + runs[u].d, j->x + (size_t)runs[u].b * j->ximg + tap + runs[u].p,
               (size_t)runs[u].len * sizeof(float));
      for (int i = n; i < PC_P; i++) d[i] = 0.0f;
    }
  }
}

/* Tasks (tile of 48 positions of the batch, group of PC_G output-channel blocks), the group
 * fastest */
static void pconv_tasks(void *ctx, int64_t t0, int64_t t1) {
  pconv_job *j = ctx;
  static void (*const fns[3])(float *, size_t, const float *, const float *, const float *,
                              size_t, size_t, int, int) = {pconv_tile1, pconv_tile2, pconv_tile3};
  float tile[DC_R * PC_P] __attribute__((aligned(64)));
  pconv_run_t runs[PC_P];
  float *own = j->panels ? NULL : malloc((size_t)j->K * PC_P * sizeof(float)), *panel = own;
  if (!j->panels && !own) {
    atomic_store(&j->fail, 1);
    return;
  }
  const int ncb = ceil_div(j->Co, DC_R);
  int packed = -1; /* the tile whose panel is in `own` */
  for (int64_t t = t0; t < t1; t++) {
    const int g = (int)(t % j->ngr), tl = (int)(t / j->ngr);
    const int nrun = pconv_runs(j, tl, runs);
    const int n = runs[nrun - 1].d + runs[nrun - 1].len, J = ceil_div(n, DC_V);
    if (j->panels) panel = j->panels + (size_t)tl * j->K * PC_P;
    else if (tl != packed) pconv_pack(j, panel, runs, nrun, n), packed = tl;
    const int cb1 = (g + 1) * j->G < ncb ? (g + 1) * j->G : ncb;
    const int whole = nrun == 1 && n == PC_P && !j->s2; /* the tile is 48 outputs of a row */
    for (int cb = g * j->G; cb < cb1; cb++) {
      const int nr = j->Co - cb * DC_R < DC_R ? j->Co - cb * DC_R : DC_R;
      const float *wb = j->w + (size_t)cb * DC_R * j->wr, *bb = j->bias ? j->bias + cb * DC_R : NULL;
      if (whole) { /* straight into the output rows */
        fns[J - 1](j->out + ((size_t)runs[0].b * j->Co + cb * DC_R) * j->HWo + runs[0].p, j->HWo,
                   bb, panel, wb, j->wr, j->wc, nr, j->K);
        continue;
      }
      fns[J - 1](tile, PC_P, bb, panel, wb, j->wr, j->wc, nr, j->K);
      for (int r = 0; r < nr; r++) {
        const int co = cb * DC_R + r;
        for (int u = 0; u < nrun; u++) {
          const float *tr = tile + r * PC_P + runs[u].d - runs[u].p;
          float *o = j->out + ((size_t)runs[u].b * j->Co + co) * j->HWo;
          const int p0 = runs[u].p, p1 = p0 + runs[u].len;
          if (j->Wq == j->Wo) {
            memcpy(o + p0, tr + p0, (size_t)(p1 - p0) * sizeof(float));
            continue;
          }
          /* stride 2: grid row oh holds outputs oh·Wo .. from oh·Wq, then a column to drop */
          for (int q = p0; q < p1;) {
            const int oh = q / j->Wq, ow = q % j->Wq, e = p1 < (oh + 1) * j->Wq ? p1 : (oh + 1) * j->Wq;
            for (int i = ow; i < j->Wo && q + i - ow < e; i++) o[oh * j->Wo + i] = tr[q + i - ow];
            q = e;
          }
        }
      }
    }
  }
  free(own);
}

/* the panels of tiles [t0, t1) into j->panels */
static void pconv_pack_tiles(void *ctx, int64_t t0, int64_t t1) {
  const pconv_job *j = ctx;
  pconv_run_t runs[PC_P];
  for (int64_t tl = t0; tl < t1; tl++) {
    const int nrun = pconv_runs(j, (int)tl, runs);
    pconv_pack(j, j->panels + (size_t)tl * j->K * PC_P, runs, nrun,
               runs[nrun - 1].d + runs[nrun - 1].len);
  }
}

/* The tasks. Under PC_FEW tiles (small images) every panel is packed once up front and the
 * channel blocks are split further, to 8 tasks or more, without packing a panel twice. */
#define PC_FEW 8
static int pconv_run(pconv_job *j) {
  const int ncb = ceil_div(j->Co, DC_R);
  j->ntile = (int)(((int64_t)j->B * j->HWp + PC_P - 1) / PC_P);
  j->G = PC_G < ncb ? PC_G : ncb;
  j->panels = NULL;
  if (j->ntile < PC_FEW) {
    j->panels = malloc((size_t)j->ntile * j->K * PC_P * sizeof(float));
    if (!j->panels) return sde_fail(SDE_ENOMEM, "conv2d: out of memory");
    sde_parallel_for(j->ntile, 1, pconv_pack_tiles, j);
    while (j->G > 1 && (int64_t)j->ntile * ceil_div(ncb, j->G) < 8) j->G = ceil_div(j->G, 2);
  }
  j->ngr = ceil_div(ncb, j->G);
  atomic_init(&j->fail, 0);
  /* packed per task: a tile's groups in one call, one pack and one buffer for them */
  sde_parallel_for_dynamic((int64_t)j->ntile * j->ngr, j->panels ? 1 : j->ngr, pconv_tasks, j);
  free(j->panels);
  return atomic_load(&j->fail) ? sde_fail(SDE_ENOMEM, "conv2d: out of memory") : SDE_OK;
}

/* out[b][co][p] = bias[co] + Σ_c w[co·wr + c·wc] · inp[b][c][p]: a 1x1 conv (wr = Ci, wc = 1)
 * or a NIN (wr = 1, wc = Co) over [B, Ci, HW] */
static int pconv_pointwise(float *out, const float *inp, const float *w, const float *bias, int B,
                           int Ci, int HW, int Co, size_t wr, size_t wc) {
  pconv_job j = {.out = out, .x = inp, .w = w, .bias = bias, .B = B, .Ci = Ci, .Co = Co, .K = Ci,
                 .S = (size_t)HW, .ximg = (size_t)Ci * HW, .wr = wr, .wc = wc, .Wq = HW,
                 .Wo = HW, .HWo = HW, .HWp = HW};
  return pconv_run(&j);
}

static int pconv_s2_usable(const sde_nn_conv2d_shape *s) {
  return s->stride == 2 && s->KH == 3 && s->KW == 3 && dconv_cpu_ok();
}

/* the polyphase planes: 4 per input channel, Ho + 1 rows of Wq = Wo + 1 columns and a 0 */
static size_t pconv_s2_scratch_floats(const sde_nn_conv2d_shape *s) {
  return (size_t)s->B * s->C_in * 4 * ((sde_nn_conv2d_out_h(s) + 1) * (sde_nn_conv2d_out_w(s) + 1) + 1);
}

/* phase (a, e) of plane bc: P[i][jj] = xpad[2i + a][2jj + e], 0 outside the input */
static void pconv_phases(void *ctx, int64_t p0, int64_t p1) {
  const pconv_job *j = ctx;
  const int Hq = j->HWp / j->Wq + 1, Wq = j->Wq;
  for (int64_t bc = p0; bc < p1; bc++) {
    const float *src = j->inp + (size_t)bc * j->H * j->W;
    float *d = (float *)j->x + (size_t)bc * j->S;
    for (int ph = 0; ph < 4; ph++) {
      float *P = d + (size_t)ph * j->Sq;
      const int a = ph >> 1, e = ph & 1;
      for (int i = 0; i < Hq; i++) {
        const int ih = 2 * i + a - j->pt;
        for (int jj = 0; jj < Wq; jj++) {
          const int iw = 2 * jj + e - j->pl;
          P[(size_t)i * Wq + jj] =
              ih >= 0 && ih < j->H && iw >= 0 && iw < j->W ? src[(size_t)ih * j->W + iw] : 0.0f;
        }
      }
      P[(size_t)Hq * Wq] = 0.0f;
    }
  }
}

/* out = conv(inp) + bias for a 3x3 stride-2 conv (any padding); scratch: the phase planes */
static int pconv_stride2(float *out, const float *inp, const float *w, const float *bias,
                         const sde_nn_conv2d_shape *s, float *scratch) {
  const int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
  pconv_job j = {.out = out, .x = scratch, .inp = inp, .w = w, .bias = bias, .B = s->B, .Ci = s->C_in,
                 .Co = s->C_out, .K = 9 * s->C_in, .H = s->H, .W = s->W, .pt = s->pad_top,
                 .pl = s->pad_left, .wr = (size_t)s->C_in * 9, .wc = 1, .s2 = 1, .Wq = Wo + 1,
                 .Wo = Wo, .HWo = Ho * Wo, .HWp = Ho * (Wo + 1)};
  j.Sq = (size_t)(Ho + 1) * j.Wq + 1; /* the last grid position's tap (2, 2) reads the 1 */
  j.S = 4 * j.Sq;
  j.ximg = (size_t)s->C_in * j.S;
  sde_parallel_for((int64_t)s->B * s->C_in, 1, pconv_phases, &j);
  return pconv_run(&j);
}

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 convolutions ------------------------------
 * y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A on 2x2 output tiles: each tile's 4x4 input patch d (rows
 * 2·th − 1 .., columns 2·tw − 1 .., zeros outside the image) goes to 16 values V[ξ] (ξ = 4i + j),
 * the weights g[co][ci] to U[ξ][co][ci] (computed in float64, rounded once; packed 8 output
 * channels contiguous, wino_weights), and then
 *   M[ξ][co][t] = Σ_ci U[ξ][co][ci] · V[ξ][ci][t]
 * is 16 independent 1x1 convolutions over the tiles t, each run by pconv's register tile
 * (8 output channels x 48 tiles, one FMA chain over ci in order). 4 multiplications per
 * output and input channel instead of 9. A task takes 1-4 panels of 48 consecutive tiles of
 * the batch (tiles numbered (b, th, tw); as many panels as keep the transformed inputs of
 * every input channel within WG_L2 floats), transforms their inputs into its own buffer,
 * and runs a group of output-channel blocks over them (all of them unless the chunks are
 * fewer than 8), each block's 16 products then its output transform (+ bias) straight
 * into the output. The training forward shares this path (sde_nn_conv2d_forward), so it
 * still equals the inference forward bit for bit; the backward stays on the direct kernels.
 * Each output is the same fixed sequence of operations whatever task, lane or thread it
 * falls on, so the bits depend neither on the thread count nor on the batch.
 * Error (float32, u = 2^-24; roundings: 2 in V, 1 in U, C_in in the FMA chain, 4 in the
 * output transform, 1 for the bias): |ŷ − y| ≤ γ(C_in + 8)·(|Aᵀ|(Σ_ci |G||g||Gᵀ| ⊙ |Bᵀ||d||B|)|A|
 * + |bias|), which tests/engine/test_direct_conv.c checks (with 2 spare). Not bounded by
 * Σ|w·x| as the direct conv's is (terms of different taps cancel only in exact arithmetic),
 * but in practice as close to float64: about 1e-7 of Σ|w·x| on random data, and the
 * networks' outputs agree with PyTorch as closely as with the direct conv (docs/BENCHMARKS.md). */
#define WG_P PC_P /* tiles per panel */
#ifndef WG_L2
#define WG_L2 (768 * 1024 / 4) /* floats of transformed input per task, at most */
#endif
#define WG_PF 4 /* input channels prefetched ahead */
#define WG_MAXSEG (4 * WG_P + 4 * WG_P / DC_V) /* segments of a chunk (4 panels), at most */
/* Where it pays (one thread against the direct conv, docs/BENCHMARKS.md): planes with 8 tiles
 * a row or more (at least 15 wide: a vector holds two tile rows, or 16 tiles of one) and 64
 * tiles an image, 32 channels in and out or more: 1.0-1.7x (16x16 at batch 1: 1.0x; 32x32
 * and batch 8: 1.3-1.7x). Narrower planes leave part of each vector empty (8x8, 256
 * channels: 0.9x at batch 8). The choice depends on the image shape only, never on the
 * batch, so a sample's output stays bit-identical alone or in a batch. */
#define WG_MIN_C 32
#define WG_MIN_TW 8
#define WG_MIN_TILES 64

typedef struct {
  float *out;
  const float *inp, *U, *bias;
  int B, Ci, Co, H, W, nth, ntw, T; /* tile rows and columns per image, tiles of the batch */
  int np, nchunk, G, ngr;           /* panels per task; chunks; channel blocks per group; groups */
  const float *w;                   /* weight transform: the [Co][Ci][3][3] weights */
  float *Uw;
  float *vall; /* fewer than 8 chunks: every chunk's transformed inputs, made once */
  int accum;   /* out += conv (the input gradient) instead of out = conv + bias */
  atomic_int fail;
} wino_job;

/* SDE_NN_WINOGRAD: 0 off (the direct conv), 2 every 3x3 stride-1 pad-1 shape (tests), else
 * (unset, 1) the shapes where it pays. Read per call: tests and benchmarks switch it. */
static int wino_mode(void) {
  const char *e = getenv("SDE_NN_WINOGRAD");
  return e && *e ? atoi(e) : 1;
}

/* the shapes the Winograd path can take: 3x3, stride 1, pad 1, on AVX-512 (or AVX2:
 * ops_conv_avx2.c's F(2x2, 3x3), the same arithmetic on 8-float vectors, and F(4x4, 3x3)) */
static int wino_shape_ok(const sde_nn_conv2d_shape *s) {
  return (s->stride == 1 && s->KH == 3 && s->KW == 3 && s->pad_top == 1 && s->pad_bottom == 1 &&
          s->pad_left == 1 && s->pad_right == 1 && dconv_cpu_ok()) ||
         sde_ops_wino_avx2_usable(s);
}

static int wino_usable(const sde_nn_conv2d_shape *s) {
  if (!wino_shape_ok(s)) return 0;
  const int mode = wino_mode();
  if (mode == 0 || mode == 2) return mode == 2;
  if (avx2_cpu_ok()) return sde_ops_wino_avx2_pays(s); /* its own measured gate */
  const int ntw = (s->W + 1) / 2, cmin = s->C_in < s->C_out ? s->C_in : s->C_out;
  return cmin >= WG_MIN_C && ntw >= WG_MIN_TW && (int64_t)((s->H + 1) / 2) * ntw >= WG_MIN_TILES;
}

/* the weight gradient by Winograd: AVX2 only (ops_conv_avx2.c), its own measured gate */
static int wino_dweight_usable(const sde_nn_conv2d_shape *s) {
  if (!sde_ops_wino_avx2_usable(s)) return 0; /* (false off AVX2) */
  const int mode = wino_mode();
  return mode == 2 || (mode != 0 && sde_ops_wino_avx2_dweight_pays(s));
}

/* U[ξ][cb][ci][DC_R] (64-byte aligned in the scratch) */
static size_t wino_scratch_floats(const sde_nn_conv2d_shape *s) {
  return (size_t)16 * ceil_div(s->C_out, DC_R) * DC_R * s->C_in + 16;
}

/* U = (G g Gᵀ) in float64, rounded once (G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]), packed for the
 * register tiles as U[ξ][cb][ci][r] = U(ξ, co = cb·DC_R + r, ci) (the DC_R channels of a block
 * contiguous; 0 past C_out). Tasks over output-channel blocks: each block's weights
 * transposed to [ci][tap][r], then one vector of DC_R channels per input channel. */
__attribute__((target("avx512f"))) static void wino_weights(void *ctx, int64_t c0, int64_t c1) {
  wino_job *j = ctx;
  const int Ci = j->Ci, ncb = ceil_div(j->Co, DC_R);
  float *gt = malloc((size_t)9 * Ci * DC_R * sizeof(float));
  if (!gt) {
    atomic_store(&j->fail, 1);
    return;
  }
  const __m512d half = _mm512_set1_pd(0.5);
  for (int64_t cb = c0; cb < c1; cb++) {
    /* gt[ci][k][r] = w[cb·8 + r][ci][k]: the 8 x 72 floats of 8 input channels, 9 8x8
     * transposes; the last channels (and rows past C_out) one by one */
    const int nr = j->Co - (int)cb * DC_R < DC_R ? j->Co - (int)cb * DC_R : DC_R;
    const float *wb = j->w + (size_t)cb * DC_R * Ci * 9;
    int ci0 = 0;
    if (nr == DC_R)
      for (; ci0 + 8 <= Ci; ci0 += 8)
        for (int q = 0; q < 9; q++) {
          __m256 a[8], t[8];
          for (int r = 0; r < 8; r++) a[r] = _mm256_loadu_ps(wb + ((size_t)r * Ci + ci0) * 9 + 8 * q);
          for (int r = 0; r < 8; r += 2) {
            t[r] = _mm256_unpacklo_ps(a[r], a[r + 1]);
            t[r + 1] = _mm256_unpackhi_ps(a[r], a[r + 1]);
          }
          const __m256 u0 = _mm256_shuffle_ps(t[0], t[2], 0x44), u1 = _mm256_shuffle_ps(t[0], t[2], 0xEE);
          const __m256 u2 = _mm256_shuffle_ps(t[1], t[3], 0x44), u3 = _mm256_shuffle_ps(t[1], t[3], 0xEE);
          const __m256 u4 = _mm256_shuffle_ps(t[4], t[6], 0x44), u5 = _mm256_shuffle_ps(t[4], t[6], 0xEE);
          const __m256 u6 = _mm256_shuffle_ps(t[5], t[7], 0x44), u7 = _mm256_shuffle_ps(t[5], t[7], 0xEE);
          float *d = gt + ((size_t)ci0 * 9 + 8 * q) * DC_R; /* column m = 8q + c: d + c·8 */
          _mm256_storeu_ps(d + 0 * DC_R, _mm256_permute2f128_ps(u0, u4, 0x20));
          _mm256_storeu_ps(d + 1 * DC_R, _mm256_permute2f128_ps(u1, u5, 0x20));
          _mm256_storeu_ps(d + 2 * DC_R, _mm256_permute2f128_ps(u2, u6, 0x20));
          _mm256_storeu_ps(d + 3 * DC_R, _mm256_permute2f128_ps(u3, u7, 0x20));
          _mm256_storeu_ps(d + 4 * DC_R, _mm256_permute2f128_ps(u0, u4, 0x31));
          _mm256_storeu_ps(d + 5 * DC_R, _mm256_permute2f128_ps(u1, u5, 0x31));
          _mm256_storeu_ps(d + 6 * DC_R, _mm256_permute2f128_ps(u2, u6, 0x31));
          _mm256_storeu_ps(d + 7 * DC_R, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    for (int r = 0; r < DC_R; r++)
      for (int ci = ci0; ci < Ci; ci++)
        for (int k = 0; k < 9; k++)
          gt[((size_t)ci * 9 + k) * DC_R + r] = r < nr ? wb[((size_t)r * Ci + ci) * 9 + k] : 0.0f;
    for (int ci = 0; ci < Ci; ci++) {
      __m512d g[9], t[4][3];
      for (int k = 0; k < 9; k++)
        g[k] = _mm512_cvtps_pd(_mm512_castps512_ps256(
            _mm512_maskz_loadu_ps(0xFF, gt + ((size_t)ci * 9 + k) * DC_R)));
      for (int k = 0; k < 3; k++) { /* G g: rows */
        const __m512d s = _mm512_add_pd(g[k], g[6 + k]);
        t[0][k] = g[k];
        t[1][k] = _mm512_mul_pd(half, _mm512_add_pd(s, g[3 + k]));
        t[2][k] = _mm512_mul_pd(half, _mm512_sub_pd(s, g[3 + k]));
        t[3][k] = g[6 + k];
      }
      for (int a = 0; a < 4; a++) { /* (G g) Gᵀ: columns */
        const __m512d s = _mm512_add_pd(t[a][0], t[a][2]);
        const __m512d u[4] = {t[a][0], _mm512_mul_pd(half, _mm512_add_pd(s, t[a][1])),
                              _mm512_mul_pd(half, _mm512_sub_pd(s, t[a][1])), t[a][2]};
        for (int e = 0; e < 4; e++)
          _mm512_mask_storeu_ps(j->Uw + (((size_t)(4 * a + e) * ncb + cb) * Ci + ci) * DC_R, 0xFF,
                                _mm512_castps256_ps512(_mm512_cvtpd_ps(u[e])));
      }
    }
  }
  free(gt);
}

/* lanes i of a 16-float load at column c0 + i that lie in [0, W) */
static inline __mmask16 wino_colmask(int c0, int W) {
  const int lo = c0 < 0 ? -c0 : 0, hi = W - c0 < 16 ? W - c0 : 16;
  if (hi <= lo) return 0;
  return (__mmask16)((((1u << hi) - 1u) >> lo) << lo);
}

/* v = Bᵀ d B for 16 tiles a vector, d[r][k] the patches' rows r and columns k;
 * Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]: rows first, then columns */
__attribute__((target("avx512f"), always_inline)) static inline void wino_bt(__m512 v[16],
                                                                             __m512 d[4][4]) {
  __m512 t[4][4];
  for (int k = 0; k < 4; k++) {
    t[0][k] = _mm512_sub_ps(d[0][k], d[2][k]);
    t[1][k] = _mm512_add_ps(d[1][k], d[2][k]);
    t[2][k] = _mm512_sub_ps(d[2][k], d[1][k]);
    t[3][k] = _mm512_sub_ps(d[1][k], d[3][k]);
  }
  for (int a = 0; a < 4; a++) {
    v[4 * a + 0] = _mm512_sub_ps(t[a][0], t[a][2]);
    v[4 * a + 1] = _mm512_add_ps(t[a][1], t[a][2]);
    v[4 * a + 2] = _mm512_sub_ps(t[a][2], t[a][1]);
    v[4 * a + 3] = _mm512_sub_ps(t[a][1], t[a][3]);
  }
}

/* 16 tiles of one input plane: lane i = tile (th, tw0 + i) (lanes past the row computed and
 * unused), or with two rows (ntw ≤ 8, tw0 = 0): lanes i < ntw tile (th, i), lanes ntw + i
 * tile (th + 1, i). Row r of a patch: its 4 columns 2·tw − 1 .. 2·tw + 2, deinterleaved from
 * two pairs of lane-masked loads (zeros outside the image) by one permute each: the loads'
 * offsets in the plane and masks, the same for every input channel (wino_seg_make). */
typedef struct {
  ptrdiff_t off[4][4]; /* row r: the loads a, b (first pair), c, e (second pair) */
  __mmask16 m[4][4];
} wino_seg;

static void wino_seg_make(wino_seg *sg, int H, int W, int th, int tw0, int two) {
  const int c0 = 2 * tw0 - 1;
  const __mmask16 m0 = wino_colmask(c0, W), m1 = wino_colmask(c0 + 16, W),
                  m2 = wino_colmask(c0 + 2, W), m3 = wino_colmask(c0 + 18, W);
  for (int r = 0; r < 4; r++) {
    const int ih = 2 * th - 1 + r, ih2 = ih + 2; /* the second source: the next row or tile row */
    const int ok = ih >= 0 && ih < H, ok2 = two ? ih2 >= 0 && ih2 < H : ok;
    const ptrdiff_t row = ok ? (ptrdiff_t)ih * W + c0 : 0;
    const ptrdiff_t row2 = two ? (ok2 ? (ptrdiff_t)ih2 * W + c0 : 0) : row + 16;
    sg->off[r][0] = row, sg->off[r][1] = row2, sg->off[r][2] = row + 2, sg->off[r][3] = row2 + 2;
    sg->m[r][0] = ok ? m0 : 0, sg->m[r][1] = ok2 ? (two ? m0 : m1) : 0;
    sg->m[r][2] = ok ? m2 : 0, sg->m[r][3] = ok2 ? (two ? m2 : m3) : 0;
  }
}

__attribute__((target("avx512f"), always_inline)) static inline void
wino_in16(__m512 v[16], const float *x, const wino_seg *sg, __m512i ev, __m512i od) {
  __m512 d[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; r++) {
    const __m512 a = _mm512_maskz_loadu_ps(sg->m[r][0], x + sg->off[r][0]);
    const __m512 b = _mm512_maskz_loadu_ps(sg->m[r][1], x + sg->off[r][1]);
    const __m512 c = _mm512_maskz_loadu_ps(sg->m[r][2], x + sg->off[r][2]);
    const __m512 e = _mm512_maskz_loadu_ps(sg->m[r][3], x + sg->off[r][3]);
    d[r][0] = _mm512_permutex2var_ps(a, ev, b);
    d[r][1] = _mm512_permutex2var_ps(a, od, b);
    d[r][2] = _mm512_permutex2var_ps(c, ev, e);
    d[r][3] = _mm512_permutex2var_ps(c, od, e);
  }
  wino_bt(v, d);
}

/* The task's transformed inputs: vb[ξ][p][ci][48] for its panels p < np (n tiles from tile g0;
 * lanes past n up to a whole vector zero) */
__attribute__((target("avx512f"))) static void wino_input(const wino_job *j, float *vb, int64_t g0,
                                                         int n, int np) {
  const size_t pstride = (size_t)j->Ci * WG_P, xstride = (size_t)np * pstride;
  const size_t HW = (size_t)j->H * j->W;
  const int per = j->nth * j->ntw;
  /* zero the lanes past n up to a whole vector (the kernel reads whole vectors) */
  if (n % DC_V) {
    const int p = n / WG_P, l0 = n % WG_P, l1 = (l0 + DC_V - 1) / DC_V * DC_V;
    for (int xi = 0; xi < 16; xi++)
      for (int ci = 0; ci < j->Ci; ci++)
        memset(vb + xi * xstride + p * pstride + (size_t)ci * WG_P + l0, 0,
               (size_t)(l1 - l0) * sizeof(float));
  }
  /* the deinterleave: lane i takes element 2i (2i + 1) of the pair; with two rows, lanes
   * ntw + i element 2i (2i + 1) of the second source */
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i ev1 = _mm512_slli_epi32(lane, 1), od1 = _mm512_add_epi32(ev1, _mm512_set1_epi32(1));
  const __mmask16 hi = _mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32(j->ntw));
  const __m512i e2 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(lane, _mm512_set1_epi32(j->ntw)), 1),
                                      _mm512_set1_epi32(16));
  const __m512i ev2 = _mm512_mask_mov_epi32(ev1, hi, e2);
  const __m512i od2 = _mm512_mask_mov_epi32(od1, hi, _mm512_add_epi32(e2, _mm512_set1_epi32(1)));
  /* runs of tiles in one tile row of one image and one panel, or of two whole tile rows
   * (ntw ≤ 8) where both lie in the same image, panel and chunk; cut in segments of 16 */
  typedef struct {
    wino_seg sg;
    const float *x;    /* the image's plane 0 */
    size_t dst;        /* in vb: panel, lane */
    __mmask16 sm, two; /* lanes stored; two rows */
  } seg_t;
  seg_t segs[WG_MAXSEG];
  int ns = 0;
  for (int64_t g = g0; g < g0 + n;) {
    const int b = (int)(g / per), rem = (int)(g % per), th = rem / j->ntw, tw = rem % j->ntw;
    const int lane0 = (int)(g - g0), p = lane0 / WG_P, lp = lane0 % WG_P;
    int len = j->ntw - tw;
    if (len > WG_P - lp) len = WG_P - lp;
    if (len > g0 + n - g) len = (int)(g0 + n - g);
    const int two = 2 * j->ntw <= DC_V && tw == 0 && th + 1 < j->nth &&
                    lp + 2 * j->ntw <= WG_P && lane0 + 2 * j->ntw <= n;
    if (two) len = 2 * j->ntw;
    for (int q = 0; q * DC_V < len; q++, ns++) {
      seg_t *t = &segs[ns];
      wino_seg_make(&t->sg, j->H, j->W, th, tw + q * DC_V, two);
      t->x = j->inp + (size_t)b * j->Ci * HW;
      t->dst = p * pstride + lp + q * DC_V;
      t->sm = len - q * DC_V >= DC_V ? 0xFFFF : (__mmask16)((1u << (len - q * DC_V)) - 1u);
      t->two = (__mmask16)two;
    }
    g += len;
  }
  /* channel by channel, the segments in order (consecutive rows of one plane) */
  for (int ci = 0; ci < j->Ci; ci++)
    for (int q = 0; q < ns; q++) {
      const seg_t *t = &segs[q];
      const float *x = t->x + (size_t)ci * HW;
      if (ci + WG_PF < j->Ci) /* the rows WG_PF channels ahead (the loads miss otherwise) */
        for (int r = 0; r < 4; r++) {
          if (t->sg.m[r][0]) __builtin_prefetch(x + WG_PF * HW + t->sg.off[r][0]);
          if (t->sg.m[r][3]) __builtin_prefetch(x + WG_PF * HW + t->sg.off[r][3] + 15);
          if (t->two && t->sg.m[r][1]) __builtin_prefetch(x + WG_PF * HW + t->sg.off[r][1]);
        }
      __m512 v[16];
      wino_in16(v, x, &t->sg, t->two ? ev2 : ev1, t->two ? od2 : od1);
      float *d = vb + t->dst + (size_t)ci * WG_P;
#pragma GCC unroll 16
      for (int xi = 0; xi < 16; xi++) _mm512_mask_storeu_ps(d + xi * xstride, t->sm, v[xi]);
    }
}

/* Output transform of one block of nr ≤ 8 output channels over the panel's n tiles from g0:
 * m[ξ][r][48] -> out, + bias. Aᵀ = [1 1 1 0; 0 1 −1 −1]. */
__attribute__((target("avx512f"))) static void wino_output(const wino_job *j, const float *m,
                                                          int64_t g0, int n, int co0, int nr) {
  float y[4][WG_P] __attribute__((aligned(64)));
  const int per = j->nth * j->ntw, HW = j->H * j->W;
  for (int r = 0; r < nr; r++) {
    const __m512 bv = _mm512_set1_ps(j->bias ? j->bias[co0 + r] : 0.0f);
    for (int l = 0; l < n; l += DC_V) {
      __m512 q[16];
#pragma GCC unroll 16
      for (int xi = 0; xi < 16; xi++) q[xi] = _mm512_load_ps(m + ((size_t)xi * DC_R + r) * WG_P + l);
      __m512 t[2][4];
      for (int k = 0; k < 4; k++) {
        t[0][k] = _mm512_add_ps(_mm512_add_ps(q[k], q[4 + k]), q[8 + k]);
        t[1][k] = _mm512_sub_ps(_mm512_sub_ps(q[4 + k], q[8 + k]), q[12 + k]);
      }
      for (int a = 0; a < 2; a++) {
        const __m512 y0 = _mm512_add_ps(_mm512_add_ps(t[a][0], t[a][1]), t[a][2]);
        const __m512 y1 = _mm512_sub_ps(_mm512_sub_ps(t[a][1], t[a][2]), t[a][3]);
        _mm512_store_ps(y[2 * a] + l, _mm512_add_ps(y0, bv));
        _mm512_store_ps(y[2 * a + 1] + l, _mm512_add_ps(y1, bv));
      }
    }
    for (int l = 0; l < n;) {
      const int64_t g = g0 + l;
      const int b = (int)(g / per), rem = (int)(g % per), th = rem / j->ntw, tw = rem % j->ntw;
      int len = j->ntw - tw;
      if (len > n - l) len = n - l;
      float *o = j->out + ((size_t)b * j->Co + co0 + r) * HW;
      for (int dy = 0; dy < 2; dy++) {
        const int oh = 2 * th + dy;
        if (oh >= j->H) break;
        float *orow = o + (size_t)oh * j->W + 2 * tw;
        const float *y0 = y[2 * dy] + l, *y1 = y[2 * dy + 1] + l;
        const int full = 2 * (tw + len) <= j->W ? len : len - 1; /* tiles with both columns */
        int i = 0;
        for (; i + DC_V <= full; i += DC_V) { /* 16 tiles -> 32 outputs, interleaved */
          const __m512 a = _mm512_loadu_ps(y0 + i), c = _mm512_loadu_ps(y1 + i);
          const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
          const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
          __m512 v0 = _mm512_permutex2var_ps(a, lo, c), v1 = _mm512_permutex2var_ps(a, hi, c);
          if (j->accum) {
            v0 = _mm512_add_ps(_mm512_loadu_ps(orow + 2 * i), v0);
            v1 = _mm512_add_ps(_mm512_loadu_ps(orow + 2 * i + DC_V), v1);
          }
          _mm512_storeu_ps(orow + 2 * i, v0);
          _mm512_storeu_ps(orow + 2 * i + DC_V, v1);
        }
        if (j->accum) {
          for (; i < full; i++) orow[2 * i] += y0[i], orow[2 * i + 1] += y1[i];
          if (full < len) orow[2 * i] += y0[i];
        } else {
          for (; i < full; i++) orow[2 * i] = y0[i], orow[2 * i + 1] = y1[i];
          if (full < len) orow[2 * i] = y0[i];
        }
      }
      l += len;
    }
  }
}

/* Tasks (chunk of np panels, group of G output-channel blocks), the group fastest */
static void wino_tasks(void *ctx, int64_t t0, int64_t t1) {
  wino_job *j = ctx;
  static void (*const fns[3])(float *, size_t, const float *, const float *, const float *,
                              size_t, size_t, int, int) = {pconv_tile1, pconv_tile2, pconv_tile3};
  const size_t vfl = (size_t)16 * j->np * j->Ci * WG_P;
  float *own = aligned_alloc(64, ((j->vall ? 0 : vfl) + (size_t)16 * DC_R * WG_P) * sizeof(float));
  if (!own) {
    atomic_store(&j->fail, 1);
    return;
  }
  float *vb = own, *m = own + (j->vall ? 0 : vfl);
  const int ncb = ceil_div(j->Co, DC_R);
  int64_t done = -1; /* the chunk whose inputs are in vb */
  for (int64_t t = t0; t < t1; t++) {
    const int64_t ch = t / j->ngr;
    const int gr = (int)(t % j->ngr);
    const int64_t g0 = ch * j->np * WG_P;
    const int n = (int)(j->T - g0 < (int64_t)j->np * WG_P ? j->T - g0 : (int64_t)j->np * WG_P);
    const int np = ceil_div(n, WG_P);
    if (j->vall) vb = j->vall + ch * vfl;
    else if (ch != done) wino_input(j, vb, g0, n, j->np), done = ch;
    const int cb1 = (gr + 1) * j->G < ncb ? (gr + 1) * j->G : ncb;
    for (int cb = gr * j->G; cb < cb1; cb++) {
      const int nr = j->Co - cb * DC_R < DC_R ? j->Co - cb * DC_R : DC_R;
      for (int p = 0; p < np; p++) {
        const int pn = n - p * WG_P < WG_P ? n - p * WG_P : WG_P, J = ceil_div(pn, DC_V);
        for (int xi = 0; xi < 16; xi++)
          fns[J - 1](m + (size_t)xi * DC_R * WG_P, WG_P, NULL,
                     vb + ((size_t)xi * j->np + p) * j->Ci * WG_P,
                     j->U + ((size_t)xi * ncb + cb) * j->Ci * DC_R, 1, DC_R, nr, j->Ci);
        wino_output(j, m, g0 + p * WG_P, pn, cb * DC_R, nr);
      }
    }
  }
  free(own);
}

/* the transformed inputs of chunks [c0, c1) into j->vall */
static void wino_input_tasks(void *ctx, int64_t c0, int64_t c1) {
  const wino_job *j = ctx;
  const size_t vfl = (size_t)16 * j->np * j->Ci * WG_P;
  for (int64_t ch = c0; ch < c1; ch++) {
    const int64_t g0 = ch * j->np * WG_P;
    const int n = (int)(j->T - g0 < (int64_t)j->np * WG_P ? j->T - g0 : (int64_t)j->np * WG_P);
    wino_input(j, j->vall + ch * vfl, g0, n, j->np);
  }
}

/* out = conv3x3(inp, pad 1) + bias (accum: out += conv3x3(inp, pad 1)) by Winograd
 * F(2x2, 3x3); scratch: wino_scratch_floats */
static int wino_forward(float *out, const float *inp, const float *weight, const float *bias,
                        const sde_nn_conv2d_shape *s, float *scratch, int accum) {
  wino_job j = {.out = out, .inp = inp, .bias = bias, .B = s->B, .Ci = s->C_in, .Co = s->C_out,
                .H = s->H, .W = s->W, .w = weight, .accum = accum};
  j.nth = (s->H + 1) / 2;
  j.ntw = (s->W + 1) / 2;
  j.T = s->B * j.nth * j.ntw;
  float *U = scratch + (16 - ((uintptr_t)scratch / sizeof(float)) % 16) % 16;
  j.Uw = U;
  j.U = U;
  atomic_init(&j.fail, 0);
  sde_parallel_for(ceil_div(s->C_out, DC_R), 1, wino_weights, &j);
  /* panels per task: the transformed inputs within WG_L2, no more than leave `want` tasks
   * (4 a thread, for an even split; the task layout does not change any bits) */
  const int th4 = 4 * sde_parallel_threads(), want = th4 > 8 ? th4 : 8;
  const int npan = ceil_div(j.T, WG_P);
  j.np = (int)(WG_L2 / ((size_t)16 * s->C_in * WG_P));
  if (j.np < 1) j.np = 1;
  if (j.np > 4) j.np = 4;
  while (j.np > 1 && ceil_div(npan, j.np) < want) j.np--;
  j.nchunk = ceil_div(npan, j.np);
  const int ncb = ceil_div(s->C_out, DC_R);
  /* channel groups: `want` tasks where the chunks are fewer */
  int ngr = j.nchunk >= want ? 1 : ceil_div(want, j.nchunk);
  if (ngr > ncb) ngr = ncb;
  j.G = ceil_div(ncb, ngr);
  j.ngr = ceil_div(ncb, j.G);
  /* several groups a chunk: its inputs transformed once, up front, not once per group */
  j.vall = NULL;
  if (j.ngr > 1) {
    j.vall = aligned_alloc(64, (size_t)j.nchunk * 16 * j.np * s->C_in * WG_P * sizeof(float));
    if (!j.vall) return sde_fail(SDE_ENOMEM, "conv2d: out of memory");
    sde_parallel_for(j.nchunk, 1, wino_input_tasks, &j);
  }
  sde_parallel_for_dynamic((int64_t)j.nchunk * j.ngr, 1, wino_tasks, &j);
  free(j.vall);
  return atomic_load(&j.fail) ? sde_fail(SDE_ENOMEM, "conv2d: out of memory") : SDE_OK;
}

/* dinp[B,Ci,H,W] += (add) or = conv3x3(dout[B,Co,H,W], wT, pad 1): the input gradient of a
 * 3x3 stride-1 pad-1 conv is that conv with the flipped, transposed weights
 * wT[ci][co][k] = w[co][ci][8-k] (made here, Ci·Co·9 floats); scratch: wino_scratch_floats of
 * the transposed shape */
static int wino_dinp(float *dinp, const float *dout, const float *weight,
                     const sde_nn_conv2d_shape *s, float *scratch, int add) {
  const int Ci = s->C_in, Co = s->C_out;
  float *wT = malloc((size_t)Ci * Co * 9 * sizeof(float));
  if (!wT) return sde_fail(SDE_ENOMEM, "conv2d: out of memory");
  for (int co = 0; co < Co; co++)
    for (int ci = 0; ci < Ci; ci++)
      for (int k = 0; k < 9; k++)
        wT[((size_t)ci * Co + co) * 9 + k] = weight[((size_t)co * Ci + ci) * 9 + 8 - k];
  sde_nn_conv2d_shape t = *s;
  t.C_in = Co, t.C_out = Ci;
  const int rc = avx2_cpu_ok()
                     ? sde_ops_wino_avx2(dinp, dout, wT, NULL, &t, scratch, add, NULL, 0, NULL)
                     : wino_forward(dinp, dout, wT, NULL, &t, scratch, add);
  free(wT);
  return rc;
}
#endif

/* dweight parts: part c[Co,K] = Σ_{i in chunk c} g_i[Co,HWo] · col_i[K,HWo]ᵀ, one task and
 * one sgemm per image in order; then dweight += part 0 + part 1 + ... per element. */
typedef struct {
  float *dw, *part;
  const float *g, *col;
  int n, cs, Co, K, HWo, nparts;
  size_t out_img;
} dw_job;

static void dw_part_tasks(void *ctx, int64_t c0, int64_t c1) {
  const dw_job *j = ctx;
  for (int64_t c = c0; c < c1; c++) {
    int i0 = (int)c * j->cs, i1 = i0 + j->cs < j->n ? i0 + j->cs : j->n;
    for (int i = i0; i < i1; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->Co, j->K, j->HWo, 1.0f,
                  j->g + i * j->out_img, j->HWo, j->col + (size_t)i * j->K * j->HWo, j->HWo,
                  i > i0 ? 1.0f : 0.0f, j->part + (size_t)c * j->Co * j->K, j->K);
  }
}

static void dw_part_sum(void *ctx, int64_t e0, int64_t e1) {
  const dw_job *j = ctx;
  const size_t per = (size_t)j->Co * j->K;
  for (int64_t e = e0; e < e1; e++) {
    float acc = j->part[e];
    for (int c = 1; c < j->nparts; c++) acc += j->part[c * per + e];
    j->dw[e] += acc;
  }
}

static void conv2d_dweight_parts(float *dweight, float *part, const float *g, const float *col,
                                 int n, int cs, int Co, int K, int HWo, size_t out_img) {
  blas_init();
  dw_job j = {dweight, part, g, col, n, cs, Co, K, HWo, ceil_div(n, cs), out_img};
  sde_parallel_for_dynamic(j.nparts, 1, dw_part_tasks, &j);
  const int64_t per = (int64_t)Co * K;
  sde_parallel_for(per, grain(per, (size_t)per * j.nparts), dw_part_sum, &j);
}

/* ---- weights prepared once (inference) ------------------------------------------------
 * The AVX2 paths spend a share of each call on the weights alone: the Winograd transform U
 * and the direct kernel's packing (at batch 1 about a fifth of NCSN++ CIFAR-10's forward).
 * Neither depends on the batch, so a network whose weights no longer change makes them once
 * per conv. The AVX-512 and GEMM paths keep preparing per call. */
/* The kernel a forward of a checked shape s takes on this CPU, in the order of
 * sde_nn_conv2d_forward_prepared; prepared weights exist for the two AVX2 ones. */
enum { PATH_GEMM, PATH_WINO_AVX2, PATH_WINO_512, PATH_DCONV, PATH_POINTWISE, PATH_S2,
       PATH_DIRECT_AVX2 };

static int forward_path(const sde_nn_conv2d_shape *s) {
#ifdef HAVE_DCONV
  if (wino_usable(s)) return avx2_cpu_ok() ? PATH_WINO_AVX2 : PATH_WINO_512;
  if (dconv_usable(s)) return PATH_DCONV;
  if (conv2d_is_pointwise(s) && dconv_cpu_ok()) return PATH_POINTWISE;
  if (pconv_s2_usable(s)) return PATH_S2;
#endif
  sde_nn_conv2d_shape t;
  return avx2_dinp_shape(s, &t) ? PATH_DIRECT_AVX2 : PATH_GEMM;
}

struct sde_nn_conv2d_prep {
  int kind, m;              /* kind: PATH_WINO_AVX2 or PATH_DIRECT_AVX2; m: U's tile side */
  sde_nn_conv2d_shape s;    /* the shape it was made for (B not compared) */
  size_t floats;
  float *buf, *data;        /* data: buf on 32 bytes */
};

static int prep_same_shape(const sde_nn_conv2d_shape *a, const sde_nn_conv2d_shape *b) {
  return a->C_in == b->C_in && a->H == b->H && a->W == b->W && a->C_out == b->C_out &&
         a->KH == b->KH && a->KW == b->KW && a->stride == b->stride && a->pad_top == b->pad_top &&
         a->pad_bottom == b->pad_bottom && a->pad_left == b->pad_left &&
         a->pad_right == b->pad_right;
}

int sde_nn_conv2d_prepare(const float *weight, const sde_nn_conv2d_shape *s,
                          sde_nn_conv2d_prep **out) {
  *out = NULL;
  const int rc = conv2d_check(s);
  if (rc) return rc;
  const int kind = forward_path(s);
  if (kind != PATH_WINO_AVX2 && kind != PATH_DIRECT_AVX2) return SDE_OK;
  sde_nn_conv2d_prep *p = sde_calloc(1, sizeof *p);
  if (!p) return SDE_ENOMEM;
  p->kind = kind;
  p->s = *s;
  p->floats = kind == PATH_WINO_AVX2 ? sde_ops_wino_avx2_prep_floats(s)
                                      : sde_ops_conv_avx2_prep_floats(s);
  p->buf = sde_malloc((p->floats + 8) * sizeof(float));
  if (!p->buf) {
    free(p);
    return SDE_ENOMEM;
  }
  p->data = p->buf + (8 - ((uintptr_t)p->buf / sizeof(float)) % 8) % 8;
  if (kind == PATH_WINO_AVX2) p->m = sde_ops_wino_avx2_prepare(p->data, weight, s);
  else sde_ops_conv_avx2_prepare(p->data, weight, s);
  *out = p;
  return SDE_OK;
}

size_t sde_nn_conv2d_prep_bytes(const sde_nn_conv2d_prep *p) {
  return p ? sizeof *p + (p->floats + 8) * sizeof(float) : 0;
}

void sde_nn_conv2d_prep_free(sde_nn_conv2d_prep *p) {
  if (!p) return;
  free(p->buf);
  free(p);
}

int sde_nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const sde_nn_conv2d_shape *s, float *scratch) {
  return sde_nn_conv2d_forward_prepared(out, inp, weight, bias, s, scratch, NULL);
}

int sde_nn_conv2d_forward_fused(float *out, const float *inp, const float *weight,
                                const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                                const sde_nn_conv2d_prep *prep, const float *bias2,
                                const float *residual, float div, int *fused) {
  *fused = 0;
  if (conv2d_check(s) || forward_path(s) != PATH_WINO_AVX2) return SDE_OK;
  if (prep && (prep->kind != PATH_WINO_AVX2 || !prep_same_shape(&prep->s, s)))
    return SDE_OK; /* as the forward would not take it: the caller's separate passes */
  float *owned, *col = scratch_get(scratch, sde_nn_conv2d_scratch_floats(s), &owned);
  if (!col) return SDE_ENOMEM;
  const sde_ops_conv_epilogue ep = {bias2, residual, div};
  const int rc = sde_ops_wino_avx2(out, inp, weight, bias, s, col, 0, prep ? prep->data : NULL,
                                   prep ? prep->m : 0, &ep);
  free(owned);
  *fused = rc == SDE_OK;
  return rc;
}

int sde_nn_conv2d_forward_prepared(float *out, const float *inp, const float *weight,
                                   const float *bias, const sde_nn_conv2d_shape *s,
                                   float *scratch, const sde_nn_conv2d_prep *prep) {
  int rc = conv2d_check(s);
  if (rc) return rc;
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s), HWo = Ho * Wo;
  int K = s->C_in * s->KH * s->KW, Co = s->C_out;
  size_t in_img = (size_t)s->C_in * s->H * s->W, out_img = (size_t)Co * HWo;
  float *owned, *col = scratch_get(scratch, sde_nn_conv2d_scratch_floats(s), &owned);
  if (!col && !conv2d_is_pointwise(s)) return SDE_ENOMEM;
  const int path = forward_path(s);
  if (prep && (prep->kind != path || !prep_same_shape(&prep->s, s)))
    prep = NULL; /* made for another shape, or before an environment override */
  switch (path) {
    case PATH_WINO_AVX2:
      rc = sde_ops_wino_avx2(out, inp, weight, bias, s, col, 0, prep ? prep->data : NULL,
                             prep ? prep->m : 0, NULL);
      break;
    case PATH_DIRECT_AVX2:
      rc = sde_ops_conv_avx2(out, inp, weight, (size_t)K, (size_t)s->KH * s->KW, 0, bias, s, col,
                             0, prep ? prep->data : NULL);
      break;
#ifdef HAVE_DCONV
    case PATH_WINO_512:
      rc = wino_forward(out, inp, weight, bias, s, col, 0);
      break;
    case PATH_DCONV:
      rc = dconv_forward(out, inp, weight, (size_t)K, (size_t)s->KH * s->KW, 0, bias, s, col, 0);
      break;
    case PATH_POINTWISE:
      rc = pconv_pointwise(out, inp, weight, bias, s->B, s->C_in, HWo, Co, (size_t)K, 1);
      break;
    case PATH_S2:
      rc = pconv_stride2(out, inp, weight, bias, s, col);
      break;
#endif
    default: /* PATH_GEMM, below */
      break;
  }
  if (path != PATH_GEMM) {
    free(owned);
    return rc;
  }
  /* out <- bias, then the GEMMs accumulate onto it (beta = 1) */
  sde_ops_fill_bias(out, bias, s->B, Co, HWo);
  if (conv2d_is_pointwise(s)) {
    /* y_b[Co,HW] += weight[Co,Ci] · x_b[Ci,HW] */
    sde_ops_gemm_batch(s->B, 0, 0, 0, Co, HWo, K, 1.0f, weight, K, 0, inp, HWo, in_img, 1.0f, out, HWo,
               out_img);
    return SDE_OK;
  }
  int imgs, rows;
  conv2d_plan(s, &imgs, &rows);
  for (int b0 = 0; b0 < s->B; b0 += imgs) {
    int g = s->B - b0 < imgs ? s->B - b0 : imgs;
    for (int oh0 = 0; oh0 < Ho; oh0 += rows) {
      int oh1 = oh0 + rows < Ho ? oh0 + rows : Ho, nc = (oh1 - oh0) * Wo;
      im2col(col, inp + b0 * in_img, g, s, oh0, oh1);
      /* y_b[Co, band] += weight[Co,K] · col_b[K, nc] */
      sde_ops_gemm_batch(g, 0, 0, 0, Co, nc, K, 1.0f, weight, K, 0, col, nc, (size_t)K * nc, 1.0f,
                 out + b0 * out_img + (size_t)oh0 * Wo, HWo, out_img);
    }
  }
  free(owned);
  return SDE_OK;
}

/* dinp += (add) or = (store) the input gradient; the store writes what the add would write
 * onto zeros, bit for bit (every kernel's store adds +0 for a missing bias) */
static int conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const sde_nn_conv2d_shape *s,
                           float *scratch, int add) {
  int rc = conv2d_check(s);
  if (rc) return rc;
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s), HWo = Ho * Wo;
  int K = s->C_in * s->KH * s->KW, Co = s->C_out;
  size_t in_img = (size_t)s->C_in * s->H * s->W, out_img = (size_t)Co * HWo;
  if (dbias) sde_ops_sum_channels(dbias, dout, s->B, Co, HWo);
  if (!dinp && !dweight) return SDE_OK;
  if (conv2d_is_pointwise(s)) {
    /* dweight[Co,Ci] += Σ_b g_b[Co,HW] · x_b[Ci,HW]ᵀ ; dx_b[Ci,HW] += weight[Co,Ci]ᵀ · g_b */
    if (dweight)
      sde_ops_gemm_batch(s->B, 1, 0, 1, Co, K, HWo, 1.0f, dout, HWo, out_img, inp, HWo, in_img, 1.0f,
                 dweight, K, 0);
    if (dinp)
      sde_ops_gemm_batch(s->B, 0, 1, 0, K, HWo, Co, 1.0f, weight, K, 0, dout, HWo, out_img,
                         add ? 1.0f : 0.0f, dinp, HWo, in_img);
    return SDE_OK;
  }
  float *owned, *col = scratch_get(scratch, sde_nn_conv2d_scratch_floats(s), &owned);
  if (!col) return SDE_ENOMEM;
  int imgs, rows;
  conv2d_plan(s, &imgs, &rows);
  sde_nn_conv2d_shape t;
  int wino = 0;
#ifdef HAVE_DCONV
  wino = dinp && wino_usable(s); /* the same shapes as the forward: symmetric in C_in, C_out */
#endif
  const int avx2 = dinp && avx2_dinp_shape(s, &t);
  const int direct = dinp && (wino || avx2 || dconv_dinp_shape(s, &t));
  const int parts = dw_parts(s, imgs);
  float *part = col + (size_t)K * imgs * rows * Wo;
  if (dinp && !direct && !add) memset(dinp, 0, (size_t)s->B * in_img * sizeof(float));
#ifdef HAVE_DCONV
  if (dweight && wino_dweight_usable(s)) {
    rc = sde_ops_wino_avx2_dweight(dweight, dout, inp, s);
    if (rc) {
      free(owned);
      return rc;
    }
    dweight = NULL;
  }
#endif
  if (dweight && sde_ops_conv_avx2_dweight_usable(s)) {
    rc = sde_ops_conv_avx2_dweight(dweight, dout, inp, s, col);
    if (rc) {
      free(owned);
      return rc;
    }
    dweight = NULL;
  }
#ifdef HAVE_DCONV
  if (dweight) {
    const int dd = dconv_dweight(dweight, dout, inp, s);
    if (dd < 0) {
      free(owned);
      return sde_fail(SDE_ENOMEM, "conv2d: out of memory");
    }
    if (dd) dweight = NULL;
  }
#endif
  for (int b0 = 0; b0 < s->B && (dweight || (dinp && !direct)); b0 += imgs) {
    int g = s->B - b0 < imgs ? s->B - b0 : imgs;
    for (int oh0 = 0; oh0 < Ho; oh0 += rows) {
      int oh1 = oh0 + rows < Ho ? oh0 + rows : Ho, nc = (oh1 - oh0) * Wo;
      const float *gb = dout + b0 * out_img + (size_t)oh0 * Wo;
      if (dweight) {
        /* dweight[Co,K] += Σ_b g_b[Co,nc] · col_b[K,nc]ᵀ, images in order */
        im2col(col, inp + b0 * in_img, g, s, oh0, oh1);
        if (parts && nc == HWo)
          conv2d_dweight_parts(dweight, part, gb, col, g, imgs / parts, Co, K, HWo, out_img);
        else
          sde_ops_gemm_batch(g, 1, 0, 1, Co, K, nc, 1.0f, gb, HWo, out_img, col, nc,
                             (size_t)K * nc, 1.0f, dweight, K, 0);
      }
      if (dinp && !direct) {
        /* dcol_b[K,nc] = weight[Co,K]ᵀ · g_b[Co,nc], scattered back into dx_b */
        sde_ops_gemm_batch(g, 0, 1, 0, K, nc, Co, 1.0f, weight, K, 0, gb, HWo, out_img, 0.0f, col, nc,
                   (size_t)K * nc);
        col2im_add(dinp + b0 * in_img, col, g, s, oh0, oh1);
      }
    }
  }
#ifdef HAVE_DCONV
  if (wino) rc = wino_dinp(dinp, dout, weight, s, col, add);
  else if (direct && !avx2) {
    /* dinp (+)= conv(dout, flipped transposed weights wT[ci][co][k] = w[co][ci][KK-1-k]),
     * no columns */
    const size_t KK = (size_t)s->KH * s->KW;
    rc = dconv_forward(dinp, dout, weight, KK, (size_t)s->C_in * KK, 1, NULL, &t, col, add);
  }
#endif
  if (avx2 && !wino) { /* the direct conv's input gradient on AVX2 */
    const size_t KK = (size_t)s->KH * s->KW;
    rc = sde_ops_conv_avx2(dinp, dout, weight, KK, (size_t)s->C_in * KK, 1, NULL, &t, col, add,
                           NULL);
  }
  free(owned);
  return rc;
}

int sde_nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const sde_nn_conv2d_shape *s,
                           float *scratch) {
  return conv2d_backward(dinp, dweight, dbias, dout, inp, weight, s, scratch, 1);
}

int sde_nn_conv2d_backward_store(float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *weight,
                                 const sde_nn_conv2d_shape *s, float *scratch) {
  return conv2d_backward(dinp, dweight, dbias, dout, inp, weight, s, scratch, 0);
}

/* ======================================================================================
 * linear and NIN */

int sde_nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                          int B, int in_f, int out_f) {
  if (B < 1 || in_f < 1 || out_f < 1) return sde_fail(SDE_EINVAL, "linear: bad shape");
  for (int b = 0; b < B; b++)
    for (int o = 0; o < out_f; o++) out[(size_t)b * out_f + o] = bias ? bias[o] : 0.0f;
  /* out_b[1,out] += inp_b[1,in] · weight[out,in]ᵀ, one GEMM per sample so that a sample's
   * result does not depend on the batch it is in */
  sde_ops_gemm_batch(B, 0, 0, 1, 1, out_f, in_f, 1.0f, inp, in_f, in_f, weight, in_f, 0, 1.0f, out,
             out_f, out_f);
  return SDE_OK;
}

int sde_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int B, int in_f, int out_f) {
  if (B < 1 || in_f < 1 || out_f < 1) return sde_fail(SDE_EINVAL, "linear: bad shape");
  /* dinp[B,in] += dout[B,out] · weight[out,in] */
  if (dinp) sde_ops_gemm_tiled(0, 0, B, in_f, out_f, 1.0f, dout, out_f, weight, in_f, 1.0f, dinp, in_f);
  /* dweight[out,in] += dout[B,out]ᵀ · inp[B,in] */
  if (dweight)
    sde_ops_gemm_tiled(1, 0, out_f, in_f, B, 1.0f, dout, out_f, inp, in_f, 1.0f, dweight, in_f);
  if (dbias) {
    for (int o = 0; o < out_f; o++) {
      double acc = 0.0;
      for (int b = 0; b < B; b++) acc += dout[(size_t)b * out_f + o];
      dbias[o] += (float)acc;
    }
  }
  return SDE_OK;
}

int sde_nn_nin_forward(float *out, const float *inp, const float *W, const float *bias, int B,
                       int C_in, int HW, int C_out) {
  if (B < 1 || C_in < 1 || HW < 1 || C_out < 1) return sde_fail(SDE_EINVAL, "nin: bad shape");
#ifdef HAVE_DCONV
  if (dconv_cpu_ok()) {
    return pconv_pointwise(out, inp, W, bias, B, C_in, HW, C_out, 1, (size_t)C_out);
  }
#endif
  sde_ops_fill_bias(out, bias, B, C_out, HW);
  /* out_b[Co,HW] += W[Ci,Co]ᵀ · inp_b[Ci,HW] */
  sde_ops_gemm_batch(B, 0, 1, 0, C_out, HW, C_in, 1.0f, W, C_out, 0, inp, HW, (size_t)C_in * HW, 1.0f,
             out, HW, (size_t)C_out * HW);
  return SDE_OK;
}

int sde_nn_nin_backward(float *dinp, float *dW, float *dbias, const float *dout,
                        const float *inp, const float *W, int B, int C_in, int HW, int C_out) {
  if (B < 1 || C_in < 1 || HW < 1 || C_out < 1) return sde_fail(SDE_EINVAL, "nin: bad shape");
  /* dinp_b[Ci,HW] += W[Ci,Co] · g_b[Co,HW] ; dW[Ci,Co] += Σ_b x_b[Ci,HW] · g_b[Co,HW]ᵀ */
  if (dinp)
    sde_ops_gemm_batch(B, 0, 0, 0, C_in, HW, C_out, 1.0f, W, C_out, 0, dout, HW, (size_t)C_out * HW,
               1.0f, dinp, HW, (size_t)C_in * HW);
  if (dW)
    sde_ops_gemm_batch(B, 1, 0, 1, C_in, C_out, HW, 1.0f, inp, HW, (size_t)C_in * HW, dout, HW,
               (size_t)C_out * HW, 1.0f, dW, C_out, 0);
  if (dbias) sde_ops_sum_channels(dbias, dout, B, C_out, HW);
  return SDE_OK;
}

