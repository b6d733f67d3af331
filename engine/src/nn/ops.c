/* Neural-network ops of the CPU backend (see scoresde/nn.h for the conventions).
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
#include "scoresde/error.h"
#include "scoresde/nn.h"

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

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
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
 * Work is split into (item, tile) tasks, each one single-threaded sgemm call per item. */
typedef struct {
  int batch, reduce, transA, transB, M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int lda, ldb, ldc;
  size_t strideA, strideB, strideC;
  int mt, nt, tn, per_item; /* tile sizes, tiles per row of tiles and per item */
} gemm_job;

static void gemm_tasks(void *ctx, int64_t t0, int64_t t1) {
  const gemm_job *g = ctx;
  for (int64_t task = t0; task < t1; task++) {
    int t = (int)(task % g->per_item);
    int i0 = g->reduce ? 0 : (int)(task / g->per_item), i1 = g->reduce ? g->batch : i0 + 1;
    int m0 = (t / g->tn) * g->mt, n0 = (t % g->tn) * g->nt;
    int m = g->M - m0 < g->mt ? g->M - m0 : g->mt, n = g->N - n0 < g->nt ? g->N - n0 : g->nt;
    for (int i = i0; i < i1; i++) {
      const float *a = g->A + i * g->strideA + (g->transA ? (size_t)m0 : (size_t)m0 * g->lda);
      const float *b = g->B + i * g->strideB + (g->transB ? (size_t)n0 * g->ldb : (size_t)n0);
      float *c = g->C + (g->reduce ? 0 : i * g->strideC) + (size_t)m0 * g->ldc + n0;
      cblas_sgemm(CblasRowMajor, g->transA ? CblasTrans : CblasNoTrans,
                  g->transB ? CblasTrans : CblasNoTrans, m, n, g->K, g->alpha, a, g->lda, b,
                  g->ldb, (g->reduce && i > 0) ? 1.0f : g->beta, c, g->ldc);
    }
  }
}

static void gemm_batch(int batch, int reduce, int transA, int transB, int M, int N, int K,
                       float alpha, const float *A, int lda, size_t strideA, const float *Bm,
                       int ldb, size_t strideB, float beta, float *C, int ldc, size_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  blas_init();
  gemm_job g = {batch, reduce, transA, transB, M, N, K, alpha, beta, A, Bm, C, lda, ldb, ldc,
                strideA, strideB, strideC, 0, 0, 0, 0};
  /* Tiles depend on the GEMM shape only, never on the batch: OpenBLAS's kernels may round
   * differently for different tile shapes (generic kernels do), and sample i must come out
   * bit-identical whether it runs alone or in a batch. */
  gemm_tile_sizes(M, N, 2.0 * M * N * K, GEMM_TASKS, &g.mt, &g.nt);
  g.tn = ceil_div(N, g.nt);
  g.per_item = ceil_div(M, g.mt) * g.tn;
  sde_parallel_for_dynamic(reduce ? g.per_item : (int64_t)g.per_item * batch, 1, gemm_tasks, &g);
}

/* One GEMM: C[M,N] = alpha·op(A)·op(B) + beta·C */
static void gemm_tiled(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *Bm, int ldb, float beta, float *C,
                       int ldc) {
  gemm_batch(1, 0, transA, transB, M, N, K, alpha, A, lda, 0, Bm, ldb, 0, beta, C, ldc, 0);
}

/* Parallel-loop threshold for cheap elementwise work: loops whose total work is below
 * it run serially. grain(n, work) is sde_parallel_for's min_chunk for that rule. */
#define PAR_MIN 16384
static int64_t grain(int64_t n, size_t work) { return work > PAR_MIN ? 1 : n; }

/* Scratch: the caller's buffer, or one we allocate into *owned (the caller frees it). */
static float *scratch_get(float *given, size_t nfloats, float **owned) {
  *owned = NULL;
  if (given || nfloats == 0) return given;
  *owned = sde_malloc(nfloats * sizeof(float));
  return *owned;
}

/* Per-channel bias over [B, C, len] tensors: filling an output, and its gradient. */
typedef struct {
  float *out;
  const float *in;
  int B, C, len;
} chan_job;

static void fill_bias_rows(void *ctx, int64_t r0, int64_t r1) {
  const chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float bv = j->in ? j->in[r % j->C] : 0.0f;
    float *o = j->out + r * j->len;
    for (int p = 0; p < j->len; p++) o[p] = bv;
  }
}

/* out[b, c, :] = bias[c] (0 without a bias) */
static void fill_bias(float *out, const float *bias, int B, int C, int len) {
  chan_job j = {out, bias, B, C, len};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * len), fill_bias_rows, &j);
}

static void sum_channels_range(void *ctx, int64_t c0, int64_t c1) {
  const chan_job *j = ctx;
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
static void sum_channels(float *dbias, const float *dout, int B, int C, int len) {
  chan_job j = {dbias, dout, B, C, len};
  sde_parallel_for(C, grain(C, (size_t)B * C * len), sum_channels_range, &j);
}

/* ======================================================================================
 * conv2d */

sde_nn_conv2d_shape sde_nn_conv2d_shape_make(int B, int C_in, int H, int W, int C_out, int k,
                                             int stride, int pad) {
  sde_nn_conv2d_shape s = {B, C_in, H, W, C_out, k, k, stride, pad, pad, pad, pad};
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

size_t sde_nn_conv2d_scratch_floats(const sde_nn_conv2d_shape *s) {
  if (conv2d_check(s) != SDE_OK || conv2d_is_pointwise(s)) return 0;
  int imgs, rows;
  conv2d_plan(s, &imgs, &rows);
  size_t n = (size_t)s->C_in * s->KH * s->KW * imgs * rows * sde_nn_conv2d_out_w(s);
  if (dconv_usable(s)) {
    size_t d = dconv_scratch_floats(s);
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
 * read in place. */
#define DC_R 8
#define DC_J 3
#define DC_V 16

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SDE_NO_DCONV)
#include <immintrin.h>
#define HAVE_DCONV 1
static int dconv_cpu_ok(void) {
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
static int dconv_cpu_ok(void) { return 0; }
#endif

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

static size_t dconv_scratch_floats(const sde_nn_conv2d_shape *s) {
  dconv_plan p;
  dconv_plan_make(s, &p);
  return (size_t)s->B * s->C_in * p.S + 16;
}

#ifdef HAVE_DCONV
/* tile[r][j·16 + i] = Σ_{c,kh,kw} w_r[c][kh][kw] · x[c·S + off[j] + kh·rs + kw + i] (lanes
 * outside km[kw] read as 0 when MASKED), with w_r = w + min(r, nr − 1)·wstride: the weights
 * are read in place (one broadcast per output channel and tap); rows past the last output
 * channel repeat it and are thrown away. */
__attribute__((target("avx512f"), always_inline)) static inline void
dconv_kernel(float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *w,
             size_t wstride, int nr, int Cin, size_t S, int KH, int KW, int rs, const int J,
             const int MASKED, int load) {
  __m512 acc[DC_R][DC_J];
  const float *wr[DC_R];
  const float *xj[DC_J];
#pragma GCC unroll 3
  for (int j = 0; j < J; j++) xj[j] = x + off[j];
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++) {
    wr[r] = w + (size_t)(r < nr ? r : nr - 1) * wstride;
#pragma GCC unroll 3
    for (int j = 0; j < J; j++)
      acc[r][j] = load ? _mm512_loadu_ps(tile + r * DC_J * DC_V + j * DC_V) : _mm512_setzero_ps();
  }
  size_t k = 0;
  for (int c = 0; c < Cin; c++) {
    const size_t xc = (size_t)c * S;
#pragma GCC unroll 3
    for (int kh = 0; kh < KH; kh++) {
      const size_t xr = xc + (size_t)kh * rs;
#pragma GCC unroll 3
      for (int kw = 0; kw < KW; kw++, k++) {
        __m512 xv[DC_J];
#pragma GCC unroll 3
        for (int j = 0; j < J; j++)
          xv[j] = MASKED ? _mm512_maskz_loadu_ps(km[kw], xj[j] + xr + kw)
                         : _mm512_loadu_ps(xj[j] + xr + kw);
#pragma GCC unroll 8
        for (int r = 0; r < DC_R; r++) {
          __m512 wv = _mm512_set1_ps(wr[r][k]);
#pragma GCC unroll 3
          for (int j = 0; j < J; j++) acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < DC_R; r++)
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) _mm512_storeu_ps(tile + r * DC_J * DC_V + j * DC_V, acc[r][j]);
}

#define DCONV_TILE(JJ, MM)                                                                    \
  __attribute__((target("avx512f"))) static void dconv_tile##JJ##_##MM(                       \
      float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *w, \
      size_t wstride, int nr, int Cin, size_t S, int KH, int KW, int rs, int load) {          \
    dconv_kernel(tile, x, off, km, w, wstride, nr, Cin, S, KH, KW, rs, JJ, MM, load);         \
  }
/* the same with KH = KW = 3 known at compile time (the taps unrolled) */
#define DCONV_TILE33(JJ, MM)                                                                  \
  __attribute__((target("avx512f"))) static void dconv_tile##JJ##_##MM##_33(                  \
      float *tile, const float *x, const ptrdiff_t *off, const __mmask16 *km, const float *w, \
      size_t wstride, int nr, int Cin, size_t S, int KH, int KW, int rs, int load) {          \
    (void)KH;                                                                                 \
    (void)KW;                                                                                 \
    dconv_kernel(tile, x, off, km, w, wstride, nr, Cin, S, 3, 3, rs, JJ, MM, load);           \
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
                              const float *, size_t, int, int, size_t, int, int, int, int);

/* dconv_forward's state, shared by its two loops */
typedef struct {
  const sde_nn_conv2d_shape *s;
  dconv_plan p;
  float *out, *xp;
  const float *inp, *weight, *bias;
  __mmask16 km[16];
  int V, tpc, cbk, nt, masked, k33;
  atomic_int fail; /* a task could not allocate its buffer */
} dconv_job;

/* zero-padded input planes bc in [b0, b1) */
static void dconv_pad(void *ctx, int64_t b0, int64_t b1) {
  const dconv_job *j = ctx;
  const dconv_plan *p = &j->p;
  const int H = j->s->H, W = j->s->W, pt = j->s->pad_top, pl = j->s->pad_left;
  for (int64_t bc = b0; bc < b1; bc++) {
    float *d = j->xp + (size_t)bc * p->S;
    const float *src = j->inp + (size_t)bc * H * W;
    if (j->masked) {
      size_t top = DC_SLACK + (size_t)pt * W, body = (size_t)H * W;
      memset(d, 0, top * sizeof(float));
      memcpy(d + top, src, body * sizeof(float));
      memset(d + top + body, 0, (p->S - top - body) * sizeof(float));
      continue;
    }
    memset(d, 0, (size_t)pt * p->Wp * sizeof(float));
    for (int i = 0; i < H; i++) {
      float *dr = d + (size_t)(i + pt) * p->Wp;
      for (int k = 0; k < pl; k++) dr[k] = 0.0f;
      memcpy(dr + pl, src + (size_t)i * W, (size_t)W * sizeof(float));
      for (int k = pl + W; k < p->Wp; k++) dr[k] = 0.0f;
    }
    size_t used = (size_t)(H + pt) * p->Wp;
    memset(d + used, 0, (p->S - used) * sizeof(float));
  }
}

/* Tasks t in [t0, t1): (chunk of about one image's tiles) x (block of DC_R output
 * channels). Partial sums of the task's tiles are kept while the input channels go by in
 * chunks of cbk (whose weights stay in L1 across the tiles); reloading a float partial
 * sum is exact, so every output is still one FMA chain over c = 0 .. C_in − 1 in order. */
static void dconv_tasks(void *ctx, int64_t t0, int64_t t1) {
  dconv_job *j = ctx;
  static const dconv_tile_fn fns[2][2][3] = {
      {{dconv_tile1_0, dconv_tile2_0, dconv_tile3_0}, {dconv_tile1_1, dconv_tile2_1, dconv_tile3_1}},
      {{dconv_tile1_0_33, dconv_tile2_0_33, dconv_tile3_0_33},
       {dconv_tile1_1_33, dconv_tile2_1_33, dconv_tile3_1_33}}};
  const sde_nn_conv2d_shape *s = j->s;
  const dconv_plan *p = &j->p;
  const int Ci = s->C_in, Co = s->C_out, KH = s->KH, KW = s->KW, KK = KH * KW;
  const int HWo = p->Ho * p->Wo, pl = s->pad_left, V = j->V, tpc = j->tpc, nt = j->nt;
  const size_t out_img = (size_t)Co * HWo, wst = (size_t)Ci * KK;
  float *accbuf = malloc(sizeof(float) * (size_t)tpc * DC_R * DC_J * DC_V);
  if (!accbuf) {
    atomic_store(&j->fail, 1);
    return;
  }
  ptrdiff_t off[DC_J];
  for (int t = (int)t0; t < t1; t++) {
    int ch = t / p->ncb, cb = t % p->ncb;
    const float *wb = j->weight + (size_t)cb * DC_R * wst;
    int nr = Co - cb * DC_R < DC_R ? Co - cb * DC_R : DC_R;
    int tl1 = (ch + 1) * tpc < nt ? (ch + 1) * tpc : nt;
    for (int c0 = 0; c0 < Ci; c0 += j->cbk) {
    int cn = Ci - c0 < j->cbk ? Ci - c0 : j->cbk, last = c0 + cn == Ci;
    for (int tl = ch * tpc; tl < tl1; tl++) {
      float *tile = accbuf + (size_t)(tl - ch * tpc) * DC_R * DC_J * DC_V;
      int v0, J, b = 0;
      if (p->mode == DC_GRID) { /* chunk = image */
        b = tl / p->ntile;
        v0 = (tl % p->ntile) * DC_J;
        J = p->nvec - v0 < DC_J ? p->nvec - v0 : DC_J;
      } else if (V % DC_J == 1 && V > 1 && tl >= nt - 2) { /* 2 + 2 rather than 3 + 1 */
        v0 = V - 4 + 2 * (tl - (nt - 2));
        J = 2;
      } else {
        v0 = tl * DC_J;
        J = V - v0 < DC_J ? V - v0 : DC_J;
      }
      for (int k = 0; k < J; k++) {
        int v = v0 + k, bv = p->mode == DC_GRID ? b : v / p->nvec, vl = p->mode == DC_GRID ? v : v % p->nvec;
        ptrdiff_t base = (ptrdiff_t)bv * Ci * p->S;
        if (p->mode == DC_ROWS) {
          int per_row = p->Wo / DC_V, oh = vl / per_row, ow0 = (vl % per_row) * DC_V;
          off[k] = base + (ptrdiff_t)oh * p->Wp + ow0;
        } else if (p->mode == DC_MASK) {
          off[k] = base + DC_SLACK - pl + (ptrdiff_t)vl * DC_V;
        } else {
          off[k] = base + (ptrdiff_t)vl * DC_V;
        }
      }
      fns[j->k33][j->masked][J - 1](tile, j->xp + (size_t)c0 * p->S, off, j->km,
                                    wb + (size_t)c0 * KK, wst, nr, cn, p->S, KH, KW, p->rs,
                                    c0 > 0);
      if (!last) continue;
      for (int r = 0; r < nr; r++) {
        int co = cb * DC_R + r;
        float bv = j->bias ? j->bias[co] : 0.0f;
        const float *tr = tile + r * DC_J * DC_V;
        if (p->mode != DC_GRID) {
          /* global vector v is outputs [16·vl, 16·vl + 16) of image v / nvec */
          for (int k = 0; k < J; k++) {
            int v = v0 + k;
            float *o = j->out + (size_t)(v / p->nvec) * out_img + (size_t)co * HWo +
                       (size_t)(v % p->nvec) * DC_V;
            const float *tv = tr + k * DC_V;
            for (int i = 0; i < DC_V; i++) o[i] = tv[i] + bv;
          }
          continue;
        }
        /* DC_GRID: scatter the valid columns */
        float *oc = j->out + (size_t)b * out_img + (size_t)co * HWo;
        int q0 = v0 * DC_V, Np = p->Ho * p->Wp;
        int q = q0, qe = q0 + J * DC_V < Np ? q0 + J * DC_V : Np;
        while (q < qe) {
          int oh = q / p->Wp, ow = q % p->Wp;
          int seg = p->Wp - ow < qe - q ? p->Wp - ow : qe - q;
          int nv = ow < p->Wo ? (p->Wo - ow < seg ? p->Wo - ow : seg) : 0;
          float *o = oc + (size_t)oh * p->Wo + ow;
          const float *tv = tr + (q - q0);
          for (int i = 0; i < nv; i++) o[i] = tv[i] + bv;
          q += seg;
        }
      }
    }
    }
  }
  free(accbuf);
}

static int dconv_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const sde_nn_conv2d_shape *s, float *scratch) {
  dconv_job j = {.s = s, .out = out, .xp = scratch, .inp = inp, .weight = weight, .bias = bias};
  dconv_plan_make(s, &j.p);
  const dconv_plan *p = &j.p;
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
  sde_parallel_for(s->B * s->C_in, 1, dconv_pad, &j);
  sde_parallel_for_dynamic((int64_t)ceil_div(j.nt, j.tpc) * p->ncb, 1, dconv_tasks, &j);
  return atomic_load(&j.fail) ? sde_fail(SDE_ENOMEM, "conv2d: out of memory") : SDE_OK;
}
#endif

int sde_nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const sde_nn_conv2d_shape *s, float *scratch) {
  int rc = conv2d_check(s);
  if (rc) return rc;
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s), HWo = Ho * Wo;
  int K = s->C_in * s->KH * s->KW, Co = s->C_out;
  size_t in_img = (size_t)s->C_in * s->H * s->W, out_img = (size_t)Co * HWo;
  float *owned, *col = scratch_get(scratch, sde_nn_conv2d_scratch_floats(s), &owned);
  if (!col && !conv2d_is_pointwise(s)) return SDE_ENOMEM;
#ifdef HAVE_DCONV
  if (dconv_usable(s)) {
    rc = dconv_forward(out, inp, weight, bias, s, col);
    free(owned);
    return rc;
  }
#endif
  /* out <- bias, then the GEMMs accumulate onto it (beta = 1) */
  fill_bias(out, bias, s->B, Co, HWo);
  if (conv2d_is_pointwise(s)) {
    /* y_b[Co,HW] += weight[Co,Ci] · x_b[Ci,HW] */
    gemm_batch(s->B, 0, 0, 0, Co, HWo, K, 1.0f, weight, K, 0, inp, HWo, in_img, 1.0f, out, HWo,
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
      gemm_batch(g, 0, 0, 0, Co, nc, K, 1.0f, weight, K, 0, col, nc, (size_t)K * nc, 1.0f,
                 out + b0 * out_img + (size_t)oh0 * Wo, HWo, out_img);
    }
  }
  free(owned);
  return SDE_OK;
}

int sde_nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const sde_nn_conv2d_shape *s,
                           float *scratch) {
  int rc = conv2d_check(s);
  if (rc) return rc;
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s), HWo = Ho * Wo;
  int K = s->C_in * s->KH * s->KW, Co = s->C_out;
  size_t in_img = (size_t)s->C_in * s->H * s->W, out_img = (size_t)Co * HWo;
  if (dbias) sum_channels(dbias, dout, s->B, Co, HWo);
  if (!dinp && !dweight) return SDE_OK;
  if (conv2d_is_pointwise(s)) {
    /* dweight[Co,Ci] += Σ_b g_b[Co,HW] · x_b[Ci,HW]ᵀ ; dx_b[Ci,HW] += weight[Co,Ci]ᵀ · g_b */
    if (dweight)
      gemm_batch(s->B, 1, 0, 1, Co, K, HWo, 1.0f, dout, HWo, out_img, inp, HWo, in_img, 1.0f,
                 dweight, K, 0);
    if (dinp)
      gemm_batch(s->B, 0, 1, 0, K, HWo, Co, 1.0f, weight, K, 0, dout, HWo, out_img, 1.0f, dinp,
                 HWo, in_img);
    return SDE_OK;
  }
  float *owned, *col = scratch_get(scratch, sde_nn_conv2d_scratch_floats(s), &owned);
  if (!col) return SDE_ENOMEM;
  int imgs, rows;
  conv2d_plan(s, &imgs, &rows);
  for (int b0 = 0; b0 < s->B; b0 += imgs) {
    int g = s->B - b0 < imgs ? s->B - b0 : imgs;
    for (int oh0 = 0; oh0 < Ho; oh0 += rows) {
      int oh1 = oh0 + rows < Ho ? oh0 + rows : Ho, nc = (oh1 - oh0) * Wo;
      const float *gb = dout + b0 * out_img + (size_t)oh0 * Wo;
      if (dweight) {
        /* dweight[Co,K] += Σ_b g_b[Co,nc] · col_b[K,nc]ᵀ, images in order */
        im2col(col, inp + b0 * in_img, g, s, oh0, oh1);
        gemm_batch(g, 1, 0, 1, Co, K, nc, 1.0f, gb, HWo, out_img, col, nc, (size_t)K * nc, 1.0f,
                   dweight, K, 0);
      }
      if (dinp) {
        /* dcol_b[K,nc] = weight[Co,K]ᵀ · g_b[Co,nc], scattered back into dx_b */
        gemm_batch(g, 0, 1, 0, K, nc, Co, 1.0f, weight, K, 0, gb, HWo, out_img, 0.0f, col, nc,
                   (size_t)K * nc);
        col2im_add(dinp + b0 * in_img, col, g, s, oh0, oh1);
      }
    }
  }
  free(owned);
  return SDE_OK;
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
  gemm_batch(B, 0, 0, 1, 1, out_f, in_f, 1.0f, inp, in_f, in_f, weight, in_f, 0, 1.0f, out,
             out_f, out_f);
  return SDE_OK;
}

int sde_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int B, int in_f, int out_f) {
  if (B < 1 || in_f < 1 || out_f < 1) return sde_fail(SDE_EINVAL, "linear: bad shape");
  /* dinp[B,in] += dout[B,out] · weight[out,in] */
  if (dinp) gemm_tiled(0, 0, B, in_f, out_f, 1.0f, dout, out_f, weight, in_f, 1.0f, dinp, in_f);
  /* dweight[out,in] += dout[B,out]ᵀ · inp[B,in] */
  if (dweight)
    gemm_tiled(1, 0, out_f, in_f, B, 1.0f, dout, out_f, inp, in_f, 1.0f, dweight, in_f);
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
  fill_bias(out, bias, B, C_out, HW);
  /* out_b[Co,HW] += W[Ci,Co]ᵀ · inp_b[Ci,HW] */
  gemm_batch(B, 0, 1, 0, C_out, HW, C_in, 1.0f, W, C_out, 0, inp, HW, (size_t)C_in * HW, 1.0f,
             out, HW, (size_t)C_out * HW);
  return SDE_OK;
}

int sde_nn_nin_backward(float *dinp, float *dW, float *dbias, const float *dout,
                        const float *inp, const float *W, int B, int C_in, int HW, int C_out) {
  if (B < 1 || C_in < 1 || HW < 1 || C_out < 1) return sde_fail(SDE_EINVAL, "nin: bad shape");
  /* dinp_b[Ci,HW] += W[Ci,Co] · g_b[Co,HW] ; dW[Ci,Co] += Σ_b x_b[Ci,HW] · g_b[Co,HW]ᵀ */
  if (dinp)
    gemm_batch(B, 0, 0, 0, C_in, HW, C_out, 1.0f, W, C_out, 0, dout, HW, (size_t)C_out * HW,
               1.0f, dinp, HW, (size_t)C_in * HW);
  if (dW)
    gemm_batch(B, 1, 0, 1, C_in, C_out, HW, 1.0f, inp, HW, (size_t)C_in * HW, dout, HW,
               (size_t)C_out * HW, 1.0f, dW, C_out, 0);
  if (dbias) sum_channels(dbias, dout, B, C_out, HW);
  return SDE_OK;
}

/* ======================================================================================
 * GroupNorm and SiLU */

int sde_nn_groupnorm_groups(int C) {
  int g = C / 4 < 32 ? C / 4 : 32;
  return g < 1 ? 1 : g;
}

static int groupnorm_check(int B, int C, int HW, int G) {
  if (B < 1 || C < 1 || HW < 1 || G < 1 || C % G)
    return sde_fail(SDE_EINVAL, "groupnorm: bad shape B=%d C=%d HW=%d groups=%d", B, C, HW, G);
  return SDE_OK;
}

static float silu1(float x) { return x / (1.0f + expf(-x)); }

/* Normalises one (b, g) group of n = (C/G)·HW contiguous values; optionally applies SiLU. */
static void groupnorm_group(float *y, const float *x, const float *gamma, const float *beta,
                            int cpg, int HW, float eps, int with_silu, float *mean_out,
                            float *rstd_out) {
  size_t n = (size_t)cpg * HW;
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += x[i];
  double mean = sum / (double)n, ss = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  float meanf = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
  for (int c = 0; c < cpg; c++) {
    float scale = rstd * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    const float *xc = x + (size_t)c * HW;
    float *yc = y + (size_t)c * HW;
    if (with_silu) {
      for (int p = 0; p < HW; p++) yc[p] = silu1((xc[p] - meanf) * scale + shift);
    } else {
      for (int p = 0; p < HW; p++) yc[p] = (xc[p] - meanf) * scale + shift;
    }
  }
  if (mean_out) *mean_out = meanf;
  if (rstd_out) *rstd_out = rstd;
}

#ifdef HAVE_DCONV
/* AVX-512 GroupNorm(+SiLU) of one group, same arithmetic as groupnorm_group up to the
 * order of the double-precision sums (16 fixed lanes, reduced in a fixed order) and the
 * exponential (exp512: Cody-Waite reduction + degree-6 polynomial, max error ~2 ulp on
 * the float range). Deterministic: one group is one thread's sequential work. */
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

/* silu(y) = y / (1 + exp(−y)) */
__attribute__((target("avx512f"))) static inline __m512 silu512(__m512 y) {
  __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), y));
  return _mm512_div_ps(y, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

__attribute__((target("avx512f"))) static double hsum_pd2(__m512d a, __m512d b) {
  double t[16];
  _mm512_storeu_pd(t, a);
  _mm512_storeu_pd(t + 8, b);
  double s = 0.0;
  for (int i = 0; i < 16; i++) s += t[i];
  return s;
}

__attribute__((target("avx512f"))) static void
groupnorm_group_avx512(float *y, const float *x, const float *gamma, const float *beta, int cpg,
                       int HW, float eps, int with_silu, float *mean_out, float *rstd_out) {
  size_t n = (size_t)cpg * HW, n16 = n & ~(size_t)15;
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (size_t i = 0; i < n16; i += 16) {
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
  }
  double sum = hsum_pd2(s0, s1);
  for (size_t i = n16; i < n; i++) sum += x[i];
  double mean = sum / (double)n;
  __m512d m = _mm512_set1_pd(mean);
  s0 = _mm512_setzero_pd();
  s1 = _mm512_setzero_pd();
  for (size_t i = 0; i < n16; i += 16) {
    __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m);
    __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), m);
    s0 = _mm512_fmadd_pd(d0, d0, s0);
    s1 = _mm512_fmadd_pd(d1, d1, s1);
  }
  double ss = hsum_pd2(s0, s1);
  for (size_t i = n16; i < n; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  float meanf = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
  __m512 mv = _mm512_set1_ps(meanf);
  for (int c = 0; c < cpg; c++) {
    float scale = rstd * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    __m512 sv = _mm512_set1_ps(scale), bv = _mm512_set1_ps(shift);
    const float *xc = x + (size_t)c * HW;
    float *yc = y + (size_t)c * HW;
    int p = 0;
    for (; p + 16 <= HW; p += 16) {
      __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xc + p), mv), sv), bv);
      _mm512_storeu_ps(yc + p, with_silu ? silu512(v) : v);
    }
    if (p < HW) {
      __mmask16 k = (__mmask16)((1u << (HW - p)) - 1);
      __m512 v = _mm512_add_ps(
          _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xc + p), mv), sv), bv);
      _mm512_mask_storeu_ps(yc + p, k, with_silu ? silu512(v) : v);
    }
  }
  if (mean_out) *mean_out = meanf;
  if (rstd_out) *rstd_out = rstd;
}

__attribute__((target("avx512f"))) static void silu_avx512(float *out, const float *inp,
                                                           size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, silu512(_mm512_loadu_ps(inp + i)));
  if (i < n) {
    __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, k, silu512(_mm512_maskz_loadu_ps(k, inp + i)));
  }
}
#endif

/* GroupNorm forward and backward, one (sample, group) or one channel per index */
typedef struct {
  float *out, *mean, *rstd, *dgamma, *dbeta;
  const float *inp, *dout, *gamma, *beta, *cmean, *crstd;
  int B, C, HW, G, cpg, with_silu, simd;
  float eps;
} gn_job;

static void groupnorm_groups(void *ctx, int64_t bg0, int64_t bg1) {
  const gn_job *j = ctx;
  const int cpg = j->cpg, HW = j->HW;
  for (int bg = (int)bg0; bg < bg1; bg++) {
    int g = bg % j->G;
    size_t off = (size_t)bg * cpg * HW;
    const float *gamma = j->gamma ? j->gamma + g * cpg : NULL;
    const float *beta = j->beta ? j->beta + g * cpg : NULL;
    float *mean = j->mean ? j->mean + bg : NULL, *rstd = j->rstd ? j->rstd + bg : NULL;
#ifdef HAVE_DCONV
    if (j->simd)
      groupnorm_group_avx512(j->out + off, j->inp + off, gamma, beta, cpg, HW, j->eps,
                             j->with_silu, mean, rstd);
    else
#endif
      groupnorm_group(j->out + off, j->inp + off, gamma, beta, cpg, HW, j->eps, j->with_silu,
                      mean, rstd);
  }
}

static int groupnorm_forward_impl(float *out, float *mean, float *rstd, const float *inp,
                                  const float *gamma, const float *beta, int B, int C, int HW,
                                  int G, float eps, int with_silu) {
  int rc = groupnorm_check(B, C, HW, G);
  if (rc) return rc;
  gn_job j = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .gamma = gamma, .beta = beta,
              .B = B, .C = C, .HW = HW, .G = G, .cpg = C / G, .with_silu = with_silu,
              .simd = dconv_cpu_ok(), .eps = eps};
  sde_parallel_for(B * G, grain(B * G, (size_t)B * C * HW), groupnorm_groups, &j);
  return SDE_OK;
}

int sde_nn_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                             const float *gamma, const float *beta, int B, int C, int HW, int G,
                             float eps) {
  return groupnorm_forward_impl(out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps, 0);
}

int sde_nn_groupnorm_silu_forward(float *out, const float *inp, const float *gamma,
                                  const float *beta, int B, int C, int HW, int G, float eps) {
  return groupnorm_forward_impl(out, NULL, NULL, inp, gamma, beta, B, C, HW, G, eps, 1);
}

/* per group: dx = rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = dout·gamma */
static void groupnorm_dinp_groups(void *ctx, int64_t bg0, int64_t bg1) {
  const gn_job *j = ctx;
  const int cpg = j->cpg, HW = j->HW;
  const float *gamma = j->gamma, *inp = j->inp, *dout = j->dout;
  float *dinp = j->out;
  for (int bg = (int)bg0; bg < bg1; bg++) {
    int g = bg % j->G;
    size_t off = (size_t)bg * cpg * HW, n = (size_t)cpg * HW;
    float mu = j->cmean[bg], rs = j->crstd[bg];
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < cpg; c++) {
      float gm = gamma ? gamma[g * cpg + c] : 1.0f;
      const float *x = inp + off + (size_t)c * HW, *dy = dout + off + (size_t)c * HW;
      for (int p = 0; p < HW; p++) {
        float dxhat = dy[p] * gm, xhat = (x[p] - mu) * rs;
        s1 += dxhat;
        s2 += (double)dxhat * xhat;
      }
    }
    float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
    for (int c = 0; c < cpg; c++) {
      float gm = gamma ? gamma[g * cpg + c] : 1.0f;
      const float *x = inp + off + (size_t)c * HW, *dy = dout + off + (size_t)c * HW;
      float *dx = dinp + off + (size_t)c * HW;
      for (int p = 0; p < HW; p++) {
        float xhat = (x[p] - mu) * rs;
        dx[p] += rs * (dy[p] * gm - m1 - xhat * m2);
      }
    }
  }
}

/* dgamma[c] += Σ_b Σ_p dout·xhat, dbeta[c] += Σ_b Σ_p dout, one channel per thread */
static void groupnorm_dparam_channels(void *ctx, int64_t c0, int64_t c1) {
  const gn_job *j = ctx;
  const int HW = j->HW;
  for (int c = (int)c0; c < c1; c++) {
    double sg = 0.0, sb = 0.0;
    for (int b = 0; b < j->B; b++) {
      int bg = b * j->G + c / j->cpg;
      float mu = j->cmean[bg], rs = j->crstd[bg];
      size_t off = ((size_t)b * j->C + c) * HW;
      for (int p = 0; p < HW; p++) {
        sg += (double)j->dout[off + p] * ((j->inp[off + p] - mu) * rs);
        sb += j->dout[off + p];
      }
    }
    if (j->dgamma) j->dgamma[c] += (float)sg;
    if (j->dbeta) j->dbeta[c] += (float)sb;
  }
}

int sde_nn_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                              const float *inp, const float *mean, const float *rstd,
                              const float *gamma, int B, int C, int HW, int G) {
  int rc = groupnorm_check(B, C, HW, G);
  if (rc) return rc;
  gn_job j = {.out = dinp, .dgamma = dgamma, .dbeta = dbeta, .inp = inp, .dout = dout,
              .gamma = gamma, .cmean = mean, .crstd = rstd, .B = B, .C = C, .HW = HW, .G = G,
              .cpg = C / G};
  size_t total = (size_t)B * C * HW;
  if (dinp) sde_parallel_for(B * G, grain(B * G, total), groupnorm_dinp_groups, &j);
  if (dgamma || dbeta) sde_parallel_for(C, grain(C, total), groupnorm_dparam_channels, &j);
  return SDE_OK;
}

/* Elementwise loops: out (and out2) from a (and b) */
typedef struct {
  float *out, *out2;
  const float *a, *b;
  float scale;
  int simd;
} ew_job;

/* Each element's result depends only on its value, not on where a range starts. */
static void silu_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
#ifdef HAVE_DCONV
  if (j->simd) {
    silu_avx512(j->out + i0, j->a + i0, (size_t)(i1 - i0));
    return;
  }
#endif
  for (int64_t i = i0; i < i1; i++) j->out[i] = silu1(j->a[i]);
}

void sde_nn_silu_forward(float *out, const float *inp, size_t n) {
  ew_job j = {.out = out, .a = inp, .simd = dconv_cpu_ok()};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), silu_range, &j);
}

static void silu_backward_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) {
    float x = j->b[i], sg = 1.0f / (1.0f + expf(-x));
    j->out[i] += j->a[i] * sg * (1.0f + x * (1.0f - sg));
  }
}

void sde_nn_silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
  ew_job j = {.out = dinp, .a = dout, .b = inp};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), silu_backward_range, &j);
}

/* ======================================================================================
 * Spatial self-attention core */

size_t sde_nn_attention_scratch_floats(int N) { return N > 0 ? (size_t)N * N : 0; }

/* softmax over each row of att[rows, N] (the keys) */
typedef struct {
  float *att, *da;
  const float *a;
  float scale;
  int N;
} softmax_job;

static void softmax_rows(void *ctx, int64_t r0, int64_t r1) {
  const softmax_job *j = ctx;
  const int N = j->N;
  for (int64_t i = r0; i < r1; i++) {
    float *row = j->att + i * N, mx = row[0];
    for (int c = 1; c < N; c++) mx = row[c] > mx ? row[c] : mx;
    double sum = 0.0;
    for (int c = 0; c < N; c++) {
      row[c] = expf(row[c] - mx);
      sum += row[c];
    }
    float inv = (float)(1.0 / sum);
    for (int c = 0; c < N; c++) row[c] *= inv;
  }
}

/* softmax backward, times the logit scale: dl = scale · a ⊙ (da − Σ_j a·da) */
static void softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const softmax_job *j = ctx;
  const int N = j->N;
  for (int64_t i = r0; i < r1; i++) {
    const float *ar = j->a + i * N;
    float *dr = j->da + i * N;
    double dot = 0.0;
    for (int c = 0; c < N; c++) dot += (double)ar[c] * dr[c];
    float dotf = (float)dot;
    for (int c = 0; c < N; c++) dr[c] = j->scale * ar[c] * (dr[c] - dotf);
  }
}

int sde_nn_attention_forward(float *out, float *att, const float *q, const float *k,
                             const float *v, int B, int C, int N) {
  if (B < 1 || C < 1 || N < 1) return sde_fail(SDE_EINVAL, "attention: bad shape");
  float scale = (float)pow((double)C, -0.5);
  size_t xs = (size_t)C * N, as = (size_t)N * N;
  /* att_b[N,N] = scale · q_b[C,N]ᵀ · k_b[C,N] */
  gemm_batch(B, 0, 1, 0, N, N, C, scale, q, N, xs, k, N, xs, 0.0f, att, N, as);
  softmax_job j = {.att = att, .N = N};
  int64_t rows = (int64_t)B * N;
  sde_parallel_for(rows, grain(rows, (size_t)rows * N), softmax_rows, &j);
  /* out_b[C,N] = v_b[C,N] · att_b[N,N]ᵀ */
  gemm_batch(B, 0, 0, 1, C, N, N, 1.0f, v, N, xs, att, N, as, 0.0f, out, N, xs);
  return SDE_OK;
}

int sde_nn_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              int B, int C, int N, float *scratch) {
  if (B < 1 || C < 1 || N < 1) return sde_fail(SDE_EINVAL, "attention: bad shape");
  float scale = (float)pow((double)C, -0.5);
  float *owned, *da = scratch_get(scratch, sde_nn_attention_scratch_floats(N), &owned);
  if (!da) return SDE_ENOMEM;
  for (int b = 0; b < B; b++) {
    size_t xo = (size_t)b * C * N;
    const float *a = att + (size_t)b * N * N, *g = dout + xo;
    /* dv[C,N] += g[C,N] · a[N,N] */
    if (dv) gemm_tiled(0, 0, C, N, N, 1.0f, g, N, a, N, 1.0f, dv + xo, N);
    if (!dq && !dk) continue;
    /* da[N,N] = g[C,N]ᵀ · v[C,N] */
    gemm_tiled(1, 0, N, N, C, 1.0f, g, N, v + xo, N, 0.0f, da, N);
    softmax_job j = {.da = da, .a = a, .scale = scale, .N = N};
    sde_parallel_for(N, grain(N, (size_t)N * N), softmax_backward_rows, &j);
    /* dq[C,N] += k[C,N] · dl[N,N]ᵀ ; dk[C,N] += q[C,N] · dl[N,N] */
    if (dq) gemm_tiled(0, 1, C, N, N, 1.0f, k + xo, N, da, N, 1.0f, dq + xo, N);
    if (dk) gemm_tiled(0, 0, C, N, N, 1.0f, q + xo, N, da, N, 1.0f, dk + xo, N);
  }
  free(owned);
  return SDE_OK;
}

/* ======================================================================================
 * FIR resampling. Every FIR op and its adjoint is separable with at most 4 taps per output
 * index along each axis; a tap table per axis drives one generic 2-D routine. */

typedef struct {
  int n;       /* number of valid taps */
  int idx[4];  /* input indices */
  float w[4];  /* weights */
} fir_taps;

typedef enum {
  FIR_UP,      /* n_out = 2 n_in: y[2i] = ¼x[i−1] + ¾x[i], y[2i+1] = ¾x[i] + ¼x[i+1] */
  FIR_UP_T,    /* adjoint of FIR_UP, n_out = n_in / 2 */
  FIR_DOWN,    /* n_out = n_in / 2: y[i] = (x[2i−1] + 3x[2i] + 3x[2i+1] + x[2i+2]) / 8 */
  FIR_DOWN_T,  /* adjoint of FIR_DOWN, n_out = 2 n_in */
  FIR_BLUR2,   /* n_out = n_in + 1: b[n] = (x[n−2] + 3x[n−1] + 3x[n] + x[n+1]) / 8 */
  FIR_BLUR2_T, /* adjoint of FIR_BLUR2, n_out = n_in − 1 */
} fir_kind;

static void fir_tap_add(fir_taps *t, int i, float w, int n_in) {
  if (i < 0 || i >= n_in) return;
  t->idx[t->n] = i;
  t->w[t->n] = w;
  t->n++;
}

static void fir_build(fir_taps *t, int n_out, int n_in, fir_kind kind) {
  for (int o = 0; o < n_out; o++) {
    fir_taps *T = &t[o];
    T->n = 0;
    int m = o / 2;
    switch (kind) {
      case FIR_UP:
        if (o % 2 == 0) {
          fir_tap_add(T, m - 1, 0.25f, n_in);
          fir_tap_add(T, m, 0.75f, n_in);
        } else {
          fir_tap_add(T, m, 0.75f, n_in);
          fir_tap_add(T, m + 1, 0.25f, n_in);
        }
        break;
      case FIR_UP_T:
        fir_tap_add(T, 2 * o - 1, 0.25f, n_in);
        fir_tap_add(T, 2 * o, 0.75f, n_in);
        fir_tap_add(T, 2 * o + 1, 0.75f, n_in);
        fir_tap_add(T, 2 * o + 2, 0.25f, n_in);
        break;
      case FIR_DOWN:
        fir_tap_add(T, 2 * o - 1, 0.125f, n_in);
        fir_tap_add(T, 2 * o, 0.375f, n_in);
        fir_tap_add(T, 2 * o + 1, 0.375f, n_in);
        fir_tap_add(T, 2 * o + 2, 0.125f, n_in);
        break;
      case FIR_DOWN_T:
        if (o % 2 == 0) {
          fir_tap_add(T, m - 1, 0.125f, n_in);
          fir_tap_add(T, m, 0.375f, n_in);
        } else {
          fir_tap_add(T, m, 0.375f, n_in);
          fir_tap_add(T, m + 1, 0.125f, n_in);
        }
        break;
      case FIR_BLUR2:
        fir_tap_add(T, o - 2, 0.125f, n_in);
        fir_tap_add(T, o - 1, 0.375f, n_in);
        fir_tap_add(T, o, 0.375f, n_in);
        fir_tap_add(T, o + 1, 0.125f, n_in);
        break;
      case FIR_BLUR2_T:
        fir_tap_add(T, o - 1, 0.125f, n_in);
        fir_tap_add(T, o, 0.375f, n_in);
        fir_tap_add(T, o + 1, 0.375f, n_in);
        fir_tap_add(T, o + 2, 0.125f, n_in);
        break;
    }
  }
}

/* fir_apply's planes [p0, p1): filter every row along W into tmp[H,Wo], then combine
 * rows of tmp along H */
typedef struct {
  float *out;
  const float *inp;
  const fir_taps *rt, *ct; /* taps along H (Ho of them) and along W (Wo) */
  int H, W, Ho, Wo, accumulate;
  atomic_int fail;
} fir_job;

static void fir_planes(void *ctx, int64_t p0, int64_t p1) {
  fir_job *j = ctx;
  const int H = j->H, W = j->W, Ho = j->Ho, Wo = j->Wo;
  const fir_taps *rt = j->rt, *ct = j->ct;
  float *t = malloc(((size_t)H * Wo + Wo) * sizeof(float)), *acc = t + (size_t)H * Wo;
  if (!t) {
    atomic_store(&j->fail, 1);
    return;
  }
  for (int64_t p = p0; p < p1; p++) {
    const float *x = j->inp + (size_t)p * H * W;
    for (int i = 0; i < H; i++) {
      const float *xr = x + (size_t)i * W;
      float *tr = t + (size_t)i * Wo;
      for (int ow = 0; ow < Wo; ow++) {
        const fir_taps *c = &ct[ow];
        float v = 0.0f;
        for (int e = 0; e < c->n; e++) v += c->w[e] * xr[c->idx[e]];
        tr[ow] = v;
      }
    }
    for (int oh = 0; oh < Ho; oh++) {
      const fir_taps *r = &rt[oh];
      float *y = j->out + ((size_t)p * Ho + oh) * Wo;
      for (int ow = 0; ow < Wo; ow++) acc[ow] = 0.0f;
      for (int a = 0; a < r->n; a++) {
        const float *tr = t + (size_t)r->idx[a] * Wo;
        float w = r->w[a];
        for (int ow = 0; ow < Wo; ow++) acc[ow] += w * tr[ow];
      }
      if (j->accumulate) {
        for (int ow = 0; ow < Wo; ow++) y[ow] += acc[ow];
      } else {
        for (int ow = 0; ow < Wo; ow++) y[ow] = acc[ow];
      }
    }
  }
  free(t);
}

/* out[P,Ho,Wo] (=, or += when accumulate) FIR(inp[P,H,W]) along both axes. */
static int fir_apply(float *out, const float *inp, int P, int H, int W, int Ho, int Wo,
                     fir_kind kind, int accumulate) {
  fir_taps *rt = sde_malloc(((size_t)Ho + Wo) * sizeof(fir_taps));
  if (!rt) return SDE_ENOMEM;
  fir_build(rt, Ho, H, kind);
  fir_build(rt + Ho, Wo, W, kind);
  fir_job j = {out, inp, rt, rt + Ho, H, W, Ho, Wo, accumulate, 0};
  sde_parallel_for(P, grain(P, (size_t)P * Ho * Wo), fir_planes, &j);
  free(rt);
  return atomic_load(&j.fail) ? sde_fail(SDE_ENOMEM, "fir: out of memory") : SDE_OK;
}

static int resample_check(const char *op, int B, int C, int H, int W, int need_even) {
  if (B < 1 || C < 1 || H < 1 || W < 1)
    return sde_fail(SDE_EINVAL, "%s: bad shape [%d,%d,%d,%d]", op, B, C, H, W);
  if (need_even && (H % 2 || W % 2))
    return sde_fail(SDE_EINVAL, "%s: height and width must be even (got %dx%d)", op, H, W);
  return SDE_OK;
}

int sde_nn_fir_upsample2x_forward(float *out, const float *inp, int B, int C, int H, int W) {
  int rc = resample_check("fir_upsample2x", B, C, H, W, 0);
  if (rc) return rc;
  return fir_apply(out, inp, B * C, H, W, 2 * H, 2 * W, FIR_UP, 0);
}

int sde_nn_fir_upsample2x_backward(float *dinp, const float *dout, int B, int C, int H, int W) {
  int rc = resample_check("fir_upsample2x", B, C, H, W, 0);
  if (rc) return rc;
  return fir_apply(dinp, dout, B * C, 2 * H, 2 * W, H, W, FIR_UP_T, 1);
}

int sde_nn_fir_downsample2x_forward(float *out, const float *inp, int B, int C, int H, int W) {
  int rc = resample_check("fir_downsample2x", B, C, H, W, 1);
  if (rc) return rc;
  return fir_apply(out, inp, B * C, H, W, H / 2, W / 2, FIR_DOWN, 0);
}

int sde_nn_fir_downsample2x_backward(float *dinp, const float *dout, int B, int C, int H,
                                     int W) {
  int rc = resample_check("fir_downsample2x", B, C, H, W, 1);
  if (rc) return rc;
  return fir_apply(dinp, dout, B * C, H / 2, W / 2, H, W, FIR_DOWN_T, 1);
}

/* The blurred image [B,C_in,H+1,W+1] feeds a 3x3 stride-2 unpadded conv. */
static sde_nn_conv2d_shape fir_conv_down_shape(int B, int C_in, int H, int W, int C_out) {
  return sde_nn_conv2d_shape_make(B, C_in, H + 1, W + 1, C_out, 3, 2, 0);
}

size_t sde_nn_fir_conv_downsample2x_scratch_floats(int B, int C_in, int H, int W, int C_out) {
  if (B < 1 || C_in < 1 || H < 2 || W < 2 || C_out < 1) return 0;
  sde_nn_conv2d_shape s = fir_conv_down_shape(B, C_in, H, W, C_out);
  size_t blur = (size_t)B * C_in * (H + 1) * (W + 1);
  return 2 * blur + sde_nn_conv2d_scratch_floats(&s);
}

int sde_nn_fir_conv_downsample2x_forward(float *out, const float *inp, const float *weight,
                                         const float *bias, int B, int C_in, int H, int W,
                                         int C_out, float *scratch) {
  int rc = resample_check("fir_conv_downsample2x", B, C_in, H, W, 1);
  if (rc) return rc;
  if (C_out < 1) return sde_fail(SDE_EINVAL, "fir_conv_downsample2x: bad C_out %d", C_out);
  float *owned,
      *buf = scratch_get(scratch, sde_nn_fir_conv_downsample2x_scratch_floats(B, C_in, H, W, C_out),
                         &owned);
  if (!buf) return SDE_ENOMEM;
  size_t blur_n = (size_t)B * C_in * (H + 1) * (W + 1);
  float *blur = buf, *conv_scratch = buf + 2 * blur_n;
  sde_nn_conv2d_shape s = fir_conv_down_shape(B, C_in, H, W, C_out);
  rc = fir_apply(blur, inp, B * C_in, H, W, H + 1, W + 1, FIR_BLUR2, 0);
  if (!rc) rc = sde_nn_conv2d_forward(out, blur, weight, bias, &s, conv_scratch);
  free(owned);
  return rc;
}

int sde_nn_fir_conv_downsample2x_backward(float *dinp, float *dweight, float *dbias,
                                          const float *dout, const float *inp,
                                          const float *weight, int B, int C_in, int H, int W,
                                          int C_out, float *scratch) {
  int rc = resample_check("fir_conv_downsample2x", B, C_in, H, W, 1);
  if (rc) return rc;
  if (C_out < 1) return sde_fail(SDE_EINVAL, "fir_conv_downsample2x: bad C_out %d", C_out);
  float *owned,
      *buf = scratch_get(scratch, sde_nn_fir_conv_downsample2x_scratch_floats(B, C_in, H, W, C_out),
                         &owned);
  if (!buf) return SDE_ENOMEM;
  size_t blur_n = (size_t)B * C_in * (H + 1) * (W + 1);
  float *blur = buf, *dblur = buf + blur_n, *conv_scratch = buf + 2 * blur_n;
  sde_nn_conv2d_shape s = fir_conv_down_shape(B, C_in, H, W, C_out);
  rc = fir_apply(blur, inp, B * C_in, H, W, H + 1, W + 1, FIR_BLUR2, 0);
  if (!rc && dinp) memset(dblur, 0, blur_n * sizeof(float));
  if (!rc)
    rc = sde_nn_conv2d_backward(dinp ? dblur : NULL, dweight, dbias, dout, blur, weight, &s,
                                conv_scratch);
  if (!rc && dinp) rc = fir_apply(dinp, dblur, B * C_in, H + 1, W + 1, H, W, FIR_BLUR2_T, 1);
  free(owned);
  return rc;
}

/* Nearest 2x upsampling and 2x2 average pooling, forward and backward. Index r runs over
 * the P·h input rows (upsampling) or output rows (pooling) of all planes; its two rows on
 * the fine side start at 2r·Wf, Wf the fine width. */
typedef struct {
  float *out;
  const float *in;
  int W;  /* the coarse width */
} resample_job;

static void upsample_rows(void *ctx, int64_t r0, int64_t r1) {
  const resample_job *j = ctx;
  const int W = j->W, Wo = 2 * W;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->in + r * W;
    float *y0 = j->out + 2 * r * Wo, *y1 = y0 + Wo;
    for (int c = 0; c < W; c++) y0[2 * c] = y0[2 * c + 1] = x[c];
    memcpy(y1, y0, (size_t)Wo * sizeof(float));
  }
}

static void upsample_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const resample_job *j = ctx;
  const int W = j->W, Wo = 2 * W;
  for (int64_t r = r0; r < r1; r++) {
    float *dx = j->out + r * W;
    const float *g0 = j->in + 2 * r * Wo, *g1 = g0 + Wo;
    for (int c = 0; c < W; c++) dx[c] += (g0[2 * c] + g0[2 * c + 1]) + (g1[2 * c] + g1[2 * c + 1]);
  }
}

static void avgpool_rows(void *ctx, int64_t r0, int64_t r1) {
  const resample_job *j = ctx;
  const int Wo = j->W, W = 2 * Wo;
  for (int64_t r = r0; r < r1; r++) {
    const float *x0 = j->in + 2 * r * W, *x1 = x0 + W;
    float *y = j->out + r * Wo;
    for (int c = 0; c < Wo; c++)
      y[c] = ((x0[2 * c] + x0[2 * c + 1]) + (x1[2 * c] + x1[2 * c + 1])) * 0.25f;
  }
}

static void avgpool_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const resample_job *j = ctx;
  const int Wo = j->W, W = 2 * Wo;
  for (int64_t r = r0; r < r1; r++) {
    const float *g = j->in + r * Wo;
    float *d0 = j->out + 2 * r * W, *d1 = d0 + W;
    for (int c = 0; c < Wo; c++) {
      float v = 0.25f * g[c];
      d0[2 * c] += v;
      d0[2 * c + 1] += v;
      d1[2 * c] += v;
      d1[2 * c + 1] += v;
    }
  }
}

/* fn over `rows` rows; parallel when the input image is large enough */
static void resample(sde_range_fn fn, float *out, const float *in, int coarse_w, int64_t rows,
                     size_t in_size) {
  resample_job j = {out, in, coarse_w};
  sde_parallel_for(rows, grain(rows, in_size), fn, &j);
}

int sde_nn_upsample_nearest2x_forward(float *out, const float *inp, int B, int C, int H, int W) {
  int rc = resample_check("upsample_nearest2x", B, C, H, W, 0);
  if (rc) return rc;
  resample(upsample_rows, out, inp, W, (int64_t)B * C * H, (size_t)B * C * H * W);
  return SDE_OK;
}

int sde_nn_upsample_nearest2x_backward(float *dinp, const float *dout, int B, int C, int H,
                                       int W) {
  int rc = resample_check("upsample_nearest2x", B, C, H, W, 0);
  if (rc) return rc;
  resample(upsample_backward_rows, dinp, dout, W, (int64_t)B * C * H, (size_t)B * C * H * W);
  return SDE_OK;
}

int sde_nn_avgpool2x_forward(float *out, const float *inp, int B, int C, int H, int W) {
  int rc = resample_check("avgpool2x", B, C, H, W, 1);
  if (rc) return rc;
  resample(avgpool_rows, out, inp, W / 2, (int64_t)B * C * (H / 2), (size_t)B * C * H * W);
  return SDE_OK;
}

int sde_nn_avgpool2x_backward(float *dinp, const float *dout, int B, int C, int H, int W) {
  int rc = resample_check("avgpool2x", B, C, H, W, 1);
  if (rc) return rc;
  resample(avgpool_backward_rows, dinp, dout, W / 2, (int64_t)B * C * (H / 2),
           (size_t)B * C * H * W);
  return SDE_OK;
}

/* ======================================================================================
 * Embeddings. The float32 operation order follows the PyTorch code, so the sin/cos
 * arguments are bit-identical to the reference; sin/cos themselves are done in double. */

int sde_nn_fourier_embedding_forward(float *out, const float *u, const float *W, int B, int E) {
  if (B < 1 || E < 1) return sde_fail(SDE_EINVAL, "fourier_embedding: bad shape");
  const float pi = (float)M_PI;
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t)b * 2 * E;
    for (int e = 0; e < E; e++) {
      float proj = u[b] * W[e] * 2.0f * pi  /* ((u·W)·2)·π in float, as PyTorch */;
      o[e] = (float)sin((double)proj);
      o[E + e] = (float)cos((double)proj);
    }
  }
  return SDE_OK;
}

int sde_nn_fourier_embedding_backward(float *du, float *dW, const float *dout, const float *u,
                                      const float *W, int B, int E) {
  if (B < 1 || E < 1) return sde_fail(SDE_EINVAL, "fourier_embedding: bad shape");
  const double two_pi = 2.0 * (double)(float)M_PI;
  /* dproj = dsin·cos(proj) − dcos·sin(proj); proj = 2π·u·W */
  if (du) {
    for (int b = 0; b < B; b++) {
      double acc = 0.0;
      for (int e = 0; e < E; e++) {
        double proj = (double)(u[b] * W[e] * 2.0f * (float)M_PI);
        const float *g = dout + (size_t)b * 2 * E;
        acc += (g[e] * cos(proj) - g[E + e] * sin(proj)) * two_pi * W[e];
      }
      du[b] += (float)acc;
    }
  }
  if (dW) {
    for (int e = 0; e < E; e++) {
      double acc = 0.0;
      for (int b = 0; b < B; b++) {
        double proj = (double)(u[b] * W[e] * 2.0f * (float)M_PI);
        const float *g = dout + (size_t)b * 2 * E;
        acc += (g[e] * cos(proj) - g[E + e] * sin(proj)) * two_pi * u[b];
      }
      dW[e] += (float)acc;
    }
  }
  return SDE_OK;
}

/* freq_k = exp(k · (−ln(10000)/(half−1))), evaluated like the PyTorch float32 code */
static float timestep_freq(int k, int half) {
  float neg = (float)(-log(10000.0) / (double)(half - 1));
  return (float)exp((double)((float)k * neg));
}

int sde_nn_timestep_embedding_forward(float *out, const float *t, int B, int dim) {
  if (B < 1 || dim < 4) return sde_fail(SDE_EINVAL, "timestep_embedding: need dim >= 4 (got %d)", dim);
  int half = dim / 2;
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t)b * dim;
    for (int k = 0; k < half; k++) {
      float arg = t[b] * timestep_freq(k, half);
      o[k] = (float)sin((double)arg);
      o[half + k] = (float)cos((double)arg);
    }
    if (dim % 2) o[dim - 1] = 0.0f;
  }
  return SDE_OK;
}

int sde_nn_timestep_embedding_backward(float *dt, const float *dout, const float *t, int B,
                                       int dim) {
  if (B < 1 || dim < 4) return sde_fail(SDE_EINVAL, "timestep_embedding: need dim >= 4 (got %d)", dim);
  if (!dt) return SDE_OK;
  int half = dim / 2;
  for (int b = 0; b < B; b++) {
    const float *g = dout + (size_t)b * dim;
    double acc = 0.0;
    for (int k = 0; k < half; k++) {
      float f = timestep_freq(k, half);
      double arg = (double)(t[b] * f);
      acc += f * (g[k] * cos(arg) - g[half + k] * sin(arg));
    }
    dt[b] += (float)acc;
  }
  return SDE_OK;
}

/* ======================================================================================
 * Elementwise helpers */

static void add_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] = (j->a[i] + j->b[i]) * j->scale;
}

void sde_nn_add_forward(float *out, const float *a, const float *b, float scale, size_t n) {
  ew_job j = {.out = out, .a = a, .b = b, .scale = scale};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), add_range, &j);
}

static void add_backward_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) {
    float g = j->scale * j->a[i];
    if (j->out) j->out[i] += g;
    if (j->out2) j->out2[i] += g;
  }
}

void sde_nn_add_backward(float *da, float *db, const float *dout, float scale, size_t n) {
  ew_job j = {.out = da, .out2 = db, .a = dout, .scale = scale};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), add_backward_range, &j);
}

static void scale_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] = j->a[i] * j->scale;
}

void sde_nn_scale(float *out, const float *inp, float scale, size_t n) {
  ew_job j = {.out = out, .a = inp, .scale = scale};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), scale_range, &j);
}

static void accumulate_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] += j->a[i];
}

void sde_nn_accumulate(float *dst, const float *src, size_t n) {
  ew_job j = {.out = dst, .a = src};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), accumulate_range, &j);
}

/* bias[r] per row r of x[B·C rows, HW] */
static void channel_bias_rows(void *ctx, int64_t r0, int64_t r1) {
  const chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float bv = j->in[r], *xr = j->out + r * j->len;
    for (int p = 0; p < j->len; p++) xr[p] += bv;
  }
}

void sde_nn_add_channel_bias_forward(float *x, const float *bias, int B, int C, int HW) {
  chan_job j = {x, bias, B, C, HW};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), channel_bias_rows, &j);
}

static void channel_bias_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    double acc = 0.0;
    const float *g = j->in + r * j->len;
    for (int p = 0; p < j->len; p++) acc += g[p];
    j->out[r] += (float)acc;
  }
}

void sde_nn_add_channel_bias_backward(float *dbias, const float *dx, int B, int C, int HW) {
  if (!dbias) return;
  chan_job j = {dbias, dx, B, C, HW};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), channel_bias_backward_rows, &j);
}

void sde_nn_concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca,
                                    int Cb, int HW) {
  size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
  for (int i = 0; i < B; i++) {
    memcpy(out + i * (na + nb), a + i * na, na * sizeof(float));
    memcpy(out + i * (na + nb) + na, b + i * nb, nb * sizeof(float));
  }
}

void sde_nn_concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca,
                                     int Cb, int HW) {
  size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
  for (int i = 0; i < B; i++) {
    if (da) sde_nn_accumulate(da + i * na, dout + i * (na + nb), na);
    if (db) sde_nn_accumulate(db + i * nb, dout + i * (na + nb) + na, nb);
  }
}
