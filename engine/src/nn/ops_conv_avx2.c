/* Convolution kernels for CPUs with AVX2 + FMA but no AVX-512 (AMD Zen 1-3, Intel client
 * cores), which sde_nn_conv2d_forward / _backward (ops_conv.c) take there instead of im2col +
 * GEMM: the direct stride-1 conv (forward and input gradient), the 3x3 weight gradient, and
 * Winograd F(2x2, 3x3) and F(4x4, 3x3) where they pay (sde_ops_wino_avx2_pays). ops_conv.c
 * keeps the AVX-512 kernels, which need
 * 32 vector registers and 16-lane masks.
 *
 * Each image is copied once into zero-padded planes [C_in][S] (Hp x Wp, row stride Wp).
 * Outputs are computed on the padded grid, so that the input of tap (kh, kw) for output
 * position q is the plane at q + kh·Wp + kw: every tap is one unaligned 8-float load.
 *  A2_ROWS (Wo a multiple of 8): a vector is 8 outputs of one output row, written straight
 *          to the output; nothing is computed twice or thrown away.
 *  A2_GRID (any other shape): a vector is 8 consecutive positions q = oh·Wp + ow of the
 *          padded grid; the Wp − Wo columns past the right edge are computed and dropped.
 * A register tile is A2_R = 4 output channels x up to A2_J = 3 vectors: 12 accumulators,
 * 3 input loads and 4 weight broadcasts per tap feed 12 FMAs (16 ymm registers in all).
 * Every output is one FMA chain over (c_in, kh, kw) in that order, then + bias, whatever
 * tile, task or thread it falls on: the bits depend neither on the thread count nor on the
 * batch (a sample alone or in a batch comes out the same). */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../parallel.h"
#include "ops_internal.h"
#include "scoresde/error.h"

#ifdef HAVE_DCONV

#define A2_R 4   /* output channels per register tile */
#define A2_J 3   /* vectors per register tile */
#define A2_V 8   /* floats per vector */
#define A2_TPC 16 /* tiles per task */
#define A2_CB 288 /* taps (input channels x KH·KW) per pass: the pass's weights stay in L1 */

enum { A2_ROWS, A2_GRID };

typedef struct {
  int mode, Hp, Wp, Ho, Wo, nvec, ncb; /* nvec: vectors per image */
  size_t S;                            /* floats per padded plane (with read slack) */
} a2_plan;

static void a2_plan_make(const sde_nn_conv2d_shape *s, a2_plan *p) {
  p->Hp = s->H + s->pad_top + s->pad_bottom;
  p->Wp = s->W + s->pad_left + s->pad_right;
  p->Ho = p->Hp - s->KH + 1;
  p->Wo = p->Wp - s->KW + 1;
  p->ncb = ceil_div(s->C_out, A2_R);
  size_t need = (size_t)p->Hp * p->Wp;
  if (p->Wo % A2_V == 0) {
    p->mode = A2_ROWS; /* the last vector's last tap reads (Hp−1)·Wp + Wp − 1: inside */
    p->nvec = p->Ho * p->Wo / A2_V;
  } else {
    p->mode = A2_GRID; /* vectors past Ho·Wp and their taps read up to here */
    p->nvec = ceil_div(p->Ho * p->Wp, A2_V);
    size_t reach = (size_t)p->nvec * A2_V + (size_t)(s->KH - 1) * p->Wp + s->KW;
    if (reach > need) need = reach;
  }
  p->S = (need + 7) / 8 * 8;
}

int sde_ops_conv_avx2_usable(const sde_nn_conv2d_shape *s) {
  return s->stride == 1 && !(s->KH == 1 && s->KW == 1) && avx2_cpu_ok();
}

static size_t a2_wpk_floats(const sde_nn_conv2d_shape *s) {
  return (size_t)ceil_div(s->C_out, A2_R) * A2_R * s->C_in * s->KH * s->KW;
}

size_t sde_ops_conv_avx2_scratch_floats(const sde_nn_conv2d_shape *s) {
  a2_plan p;
  a2_plan_make(s, &p);
  return (size_t)s->B * s->C_in * p.S + 8 + a2_wpk_floats(s);
}

/* acc[r][j] = Σ_{c, kh, kw} wp[c][kh·KW + kw][r] · x[c·S + off[j] + kh·Wp + kw + 0..7], the
 * accumulators starting from tile[r][j·8] (load) or 0; then for rows r < nr: dst[j] + r·ds
 * <- acc + bias[r] (+ 0 without bias, so that a sum of −0 comes out +0), or += acc (accum);
 * or the whole tile back to tile when dst is NULL (a float parked and reloaded is exact:
 * the FMA chain goes on unchanged). One load per input vector and tap, kept in a register
 * by an empty asm (gcc otherwise folds it into each of the A2_R FMAs). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_kernel(float *tile, const float *x, const ptrdiff_t *off, const float *wp, int Cin, size_t S,
          const int KH, const int KW, int Wp, const int J, int load, float *const *dst, size_t ds,
          int nr, const float *bias, int accum) {
  __m256 acc[A2_R][A2_J];
#pragma GCC unroll 4
  for (int r = 0; r < A2_R; r++)
#pragma GCC unroll 3
    for (int j = 0; j < J; j++)
      acc[r][j] = load ? _mm256_loadu_ps(tile + (r * A2_J + j) * A2_V) : _mm256_setzero_ps();
  const int KK = KH * KW;
  const float *xj[A2_J]; /* the J vectors' first taps, moved on by S per input channel: the
                          * taps are then base + kh·Wp + kw addresses, no recomputed sums */
#pragma GCC unroll 3
  for (int j = 0; j < J; j++) xj[j] = x + off[j];
  for (int c = 0; c < Cin; c++, wp += (size_t)KK * A2_R) {
#pragma GCC unroll 3
    for (int kh = 0; kh < KH; kh++) {
#pragma GCC unroll 3
      for (int kw = 0; kw < KW; kw++) {
        const float *wk = wp + (size_t)(kh * KW + kw) * A2_R;
        const ptrdiff_t t = (ptrdiff_t)kh * Wp + kw;
        __m256 xv[A2_J];
#pragma GCC unroll 3
        for (int j = 0; j < J; j++) {
          xv[j] = _mm256_loadu_ps(xj[j] + t);
          __asm__("" : "+x"(xv[j]));
        }
#pragma GCC unroll 4
        for (int r = 0; r < A2_R; r++) {
          const __m256 wv = _mm256_broadcast_ss(wk + r);
#pragma GCC unroll 3
          for (int j = 0; j < J; j++) acc[r][j] = _mm256_fmadd_ps(wv, xv[j], acc[r][j]);
        }
      }
    }
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) xj[j] += S;
  }
  if (!dst) {
#pragma GCC unroll 4
    for (int r = 0; r < A2_R; r++)
#pragma GCC unroll 3
      for (int j = 0; j < J; j++) _mm256_storeu_ps(tile + (r * A2_J + j) * A2_V, acc[r][j]);
    return;
  }
#pragma GCC unroll 4
  for (int r = 0; r < A2_R; r++) {
    if (r >= nr) break;
    const __m256 bv = _mm256_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 3
    for (int j = 0; j < J; j++) {
      float *o = dst[j] + (size_t)r * ds;
      _mm256_storeu_ps(o, accum ? _mm256_add_ps(_mm256_loadu_ps(o), acc[r][j])
                                : _mm256_add_ps(acc[r][j], bv));
    }
  }
}

typedef void (*a2_tile_fn)(float *, const float *, const ptrdiff_t *, const float *, int, size_t,
                           int, int, int, int, float *const *, size_t, int, const float *, int);

/* instances: J vectors, KH x KW read at run time, or fixed at K x K (3: the 3x3 convs; 1:
 * the Winograd products), which unrolls the taps */
#define A2_TILE(JJ)                                                                             \
  __attribute__((target("avx2,fma"))) static void a2_tile##JJ(                                  \
      float *tile, const float *x, const ptrdiff_t *off, const float *wp, int Cin, size_t S,    \
      int KH, int KW, int Wp, int load, float *const *dst, size_t ds, int nr,                   \
      const float *bias, int accum) {                                                           \
    a2_kernel(tile, x, off, wp, Cin, S, KH, KW, Wp, JJ, load, dst, ds, nr, bias, accum);        \
  }
#define A2_TILE_KK(JJ, K)                                                                       \
  __attribute__((target("avx2,fma"))) static void a2_tile##JJ##_##K##K(                         \
      float *tile, const float *x, const ptrdiff_t *off, const float *wp, int Cin, size_t S,    \
      int KH, int KW, int Wp, int load, float *const *dst, size_t ds, int nr,                   \
      const float *bias, int accum) {                                                           \
    (void)KH;                                                                                   \
    (void)KW;                                                                                   \
    a2_kernel(tile, x, off, wp, Cin, S, K, K, Wp, JJ, load, dst, ds, nr, bias, accum);          \
  }
A2_TILE(1)
A2_TILE(2)
A2_TILE(3)
A2_TILE_KK(1, 3)
A2_TILE_KK(2, 3)
A2_TILE_KK(3, 3)
A2_TILE_KK(1, 1)
A2_TILE_KK(2, 1)
A2_TILE_KK(3, 1)

typedef struct {
  const sde_nn_conv2d_shape *s;
  a2_plan p;
  float *out, *xp;
  const float *inp, *wpk, *bias; /* wpk: [ncb][C_in][KH·KW][A2_R] */
  int ntile, k33, accum;         /* tiles of the batch */
} a2_job;

/* n floats of zeros at d (src NULL) or copied from src (not overlapping d), by vector moves:
 * the hot paths below do this per row of a few floats, where a libc call each (3 million
 * per nf 32 training step, most of 4-64 bytes) cost about 1 % of the step's time. The empty
 * asm statements hide the values, else GCC turns the loops back into those calls. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_move(float *d, const float *src, size_t n) {
  __m256 z = _mm256_setzero_ps();
  __asm__("" : "+x"(z));
  size_t i = 0;
  for (; i + A2_V <= n; i += A2_V) {
    __m256 v = src ? _mm256_loadu_ps(src + i) : z;
    __asm__("" : "+x"(v));
    _mm256_storeu_ps(d + i, v);
  }
  if (i < n && n >= A2_V) { /* the last vector again, overlapping */
    _mm256_storeu_ps(d + n - A2_V, src ? _mm256_loadu_ps(src + n - A2_V) : z);
    return;
  }
  for (; i < n; i++) {
    float v = src ? src[i] : 0.0f;
    __asm__("" : "+x"(v));
    d[i] = v;
  }
}

/* zero-padded planes bc in [b0, b1) of the batch */
__attribute__((target("avx2,fma"))) static void a2_pad(void *ctx, int64_t b0, int64_t b1) {
  const a2_job *j = ctx;
  const sde_nn_conv2d_shape *s = j->s;
  const a2_plan *p = &j->p;
  for (int64_t bc = b0; bc < b1; bc++) {
    float *d = j->xp + (size_t)bc * p->S;
    const float *src = j->inp + (size_t)bc * s->H * s->W;
    /* only the border is zeroed: the pad rows above, between two rows the right pad of one
     * and the left pad of the next, and after the last row everything to the end */
    size_t at = (size_t)s->pad_top * p->Wp + s->pad_left; /* the first row's first float */
    a2_move(d, NULL, at);
    for (int r = 0; r < s->H; r++, at += p->Wp) {
      a2_move(d + at, src + (size_t)r * s->W, (size_t)s->W);
      const size_t gap = r + 1 < s->H ? (size_t)(p->Wp - s->W) : p->S - at - s->W;
      a2_move(d + at + s->W, NULL, gap);
    }
  }
}

/* register tile tl of V vectors cut into tiles of A2_J: its first vector *v0 and *J
 * vectors, the last four as 2 + 2 rather than 3 + 1 (a tile of one vector loads a weight
 * per FMA) */
static void a2_split(int V, int tl, int *v0, int *J) {
  const int nt = ceil_div(V, A2_J);
  if (V % A2_J == 1 && V > 1 && tl >= nt - 2) {
    *v0 = V - 4 + 2 * (tl - (nt - 2));
    *J = 2;
  } else {
    *v0 = tl * A2_J;
    *J = V - *v0 < A2_J ? V - *v0 : A2_J;
  }
}

/* tile tl: its first vector *v0 and *J vectors. A2_ROWS numbers the vectors across the batch
 * (vector v is vector v % nvec of image v / nvec: a tile may span two images) and cuts the
 * last four as 2 + 2 rather than 3 + 1; A2_GRID tiles stay in one image (*b). */
static void a2_tile_at(const a2_plan *p, int B, int tl, int *v0, int *J, int *b) {
  if (p->mode == A2_GRID) {
    const int per = ceil_div(p->nvec, A2_J);
    *b = tl / per;
    *v0 = (tl % per) * A2_J;
    *J = p->nvec - *v0 < A2_J ? p->nvec - *v0 : A2_J;
    return;
  }
  *b = 0;
  a2_split(B * p->nvec, tl, v0, J);
}

static int a2_ntile(const a2_plan *p, int B) {
  return p->mode == A2_GRID ? B * ceil_div(p->nvec, A2_J) : ceil_div(B * p->nvec, A2_J);
}

/* tasks t: (chunk of A2_TPC tiles) x (block of A2_R output channels). The input channels go
 * by in passes of cpp (A2_CB taps), each over all the task's tiles, whose partial sums are
 * parked in acc between passes: the pass's weights stay in L1 across the tiles. */
static void a2_tasks(void *ctx, int64_t t0, int64_t t1) {
  static const a2_tile_fn fns[2][A2_J] = {{a2_tile1, a2_tile2, a2_tile3},
                                          {a2_tile1_33, a2_tile2_33, a2_tile3_33}};
  const a2_job *j = ctx;
  const sde_nn_conv2d_shape *s = j->s;
  const a2_plan *p = &j->p;
  const int Ci = s->C_in, Co = s->C_out, KK = s->KH * s->KW, HWo = p->Ho * p->Wo;
  const int cpp = A2_CB / KK > 1 ? A2_CB / KK : 1, grid = p->mode == A2_GRID;
  const size_t img = (size_t)Ci * p->S, out_img = (size_t)Co * HWo, tsz = A2_R * A2_J * A2_V;
  float acc[A2_TPC * A2_R * A2_J * A2_V];
  for (int64_t t = t0; t < t1; t++) {
    const int ch = (int)(t / p->ncb), cb = (int)(t % p->ncb);
    const int nr = Co - cb * A2_R < A2_R ? Co - cb * A2_R : A2_R;
    const float *bias = j->bias ? j->bias + cb * A2_R : NULL;
    const int tl0 = ch * A2_TPC, tl1 = tl0 + A2_TPC < j->ntile ? tl0 + A2_TPC : j->ntile;
    for (int c0 = 0; c0 < Ci; c0 += cpp) {
      const int cn = Ci - c0 < cpp ? Ci - c0 : cpp, last = c0 + cn == Ci;
      const float *wp = j->wpk + ((size_t)cb * Ci + c0) * KK * A2_R;
      for (int tl = tl0; tl < tl1; tl++) {
        int v0, J, b;
        a2_tile_at(p, s->B, tl, &v0, &J, &b);
        ptrdiff_t off[A2_J];
        float *dst[A2_J];
        for (int k = 0; k < J; k++) {
          const int v = v0 + k;
          if (!grid) {
            const int bv = v / p->nvec, vl = v % p->nvec, per_row = p->Wo / A2_V;
            const int oh = vl / per_row, ow0 = (vl % per_row) * A2_V;
            off[k] = (ptrdiff_t)(bv * img) + (ptrdiff_t)oh * p->Wp + ow0;
            dst[k] = j->out + bv * out_img + (size_t)cb * A2_R * HWo + (size_t)oh * p->Wo + ow0;
          } else {
            off[k] = (ptrdiff_t)(b * img) + (ptrdiff_t)v * A2_V;
          }
        }
        float *tile = acc + (size_t)(tl - tl0) * tsz;
        fns[j->k33][J - 1](tile, j->xp + (size_t)c0 * p->S, off, wp, cn, p->S, s->KH, s->KW,
                           p->Wp, c0 > 0, last && !grid ? dst : NULL, (size_t)HWo, nr, bias,
                           j->accum);
        if (!last || !grid) continue;
        /* A2_GRID: the tile's positions q that are outputs (ow < Wo, oh < Ho) */
        const int q0 = v0 * A2_V;
        for (int r = 0; r < nr; r++) {
          const float bv = bias ? bias[r] : 0.0f;
          float *oc = j->out + b * out_img + (size_t)(cb * A2_R + r) * HWo;
          for (int k = 0; k < J; k++)
            for (int i = 0; i < A2_V; i++) {
              const int q = q0 + k * A2_V + i, oh = q / p->Wp, ow = q % p->Wp;
              if (oh >= p->Ho || ow >= p->Wo) continue;
              const float a = tile[(r * A2_J + k) * A2_V + i];
              float *o = oc + (size_t)oh * p->Wo + ow;
              *o = j->accum ? *o + a : a + bv;
            }
        }
      }
    }
  }
}

/* the 9 taps at g[r] + off of 4 rows: t[k] = (g[0][off + k], ..., g[3][off + k]); taps 0-7
 * by a 4 x 8 transpose, tap 8 gathered */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_taps9(const float *const g[A2_R], size_t off, __m128 t[9]) {
  const __m256 r0 = _mm256_loadu_ps(g[0] + off), r1 = _mm256_loadu_ps(g[1] + off);
  const __m256 r2 = _mm256_loadu_ps(g[2] + off), r3 = _mm256_loadu_ps(g[3] + off);
  const __m256 a = _mm256_unpacklo_ps(r0, r1), b = _mm256_unpackhi_ps(r0, r1);
  const __m256 c = _mm256_unpacklo_ps(r2, r3), d = _mm256_unpackhi_ps(r2, r3);
  const __m256 q[4] = {_mm256_shuffle_ps(a, c, 0x44), _mm256_shuffle_ps(a, c, 0xEE),
                       _mm256_shuffle_ps(b, d, 0x44), _mm256_shuffle_ps(b, d, 0xEE)};
  for (int k = 0; k < 4; k++) { /* q[k]: taps k (low half) and k + 4 (high half) */
    t[k] = _mm256_castps256_ps128(q[k]);
    t[k + 4] = _mm256_extractf128_ps(q[k], 1);
  }
  t[8] = _mm_set_ps(g[3][off + 8], g[2][off + 8], g[1][off + 8], g[0][off + 8]);
}

typedef struct {
  float *wpk;
  const float *w;
  size_t so, sc;
  int Co, Ci, KK, flip;
} a2_pack_job;

/* wpk[cb][c][k][r] = w[o = cb·A2_R + r][c][k] (taps reversed when flip; rows past C_out
 * repeat the last) for channel blocks [c0, c1) */
__attribute__((target("avx2,fma"))) static void a2_pack(void *ctx, int64_t c0, int64_t c1) {
  const a2_pack_job *pk = ctx;
  for (int64_t cb = c0; cb < c1; cb++) {
    const float *row[A2_R];
    for (int r = 0; r < A2_R; r++)
      row[r] = pk->w + (size_t)(cb * A2_R + r < pk->Co ? cb * A2_R + r : pk->Co - 1) * pk->so;
    float *d = pk->wpk + (size_t)cb * pk->Ci * pk->KK * A2_R;
    if (pk->KK == 9 && pk->sc == 9 && !pk->flip) { /* the forward's 3x3 weights, rows of 9·C_in */
      for (int c = 0; c < pk->Ci; c++, d += 9 * A2_R) {
        __m128 t[9];
        a2_taps9(row, (size_t)c * 9, t);
        for (int k = 0; k < 9; k++) _mm_storeu_ps(d + k * A2_R, t[k]);
      }
      continue;
    }
    for (int c = 0; c < pk->Ci; c++)
      for (int k = 0; k < pk->KK; k++, d += A2_R) {
        const size_t at = (size_t)c * pk->sc + (size_t)(pk->flip ? pk->KK - 1 - k : k);
        for (int r = 0; r < A2_R; r++) d[r] = row[r][at];
      }
  }
}

/* the forward's packed weights wpk (sde_ops_conv_avx2_prep_floats(s), 32-byte aligned) */
size_t sde_ops_conv_avx2_prep_floats(const sde_nn_conv2d_shape *s) {
  return (size_t)ceil_div(s->C_out, A2_R) * A2_R * s->C_in * s->KH * s->KW;
}

void sde_ops_conv_avx2_prepare(float *wpk, const float *w, const sde_nn_conv2d_shape *s) {
  const int KK = s->KH * s->KW;
  a2_pack_job pk = {.wpk = wpk, .w = w, .so = (size_t)s->C_in * KK, .sc = (size_t)KK,
                    .Co = s->C_out, .Ci = s->C_in, .KK = KK};
  sde_parallel_for(ceil_div(s->C_out, A2_R), 1, a2_pack, &pk);
}

/* out = conv(inp) + bias, or out += conv(inp) when accum (bias unused), for a stride-1 conv
 * of shape s; the weights w(o, c, k) = w[o·so + c·sc + k], or w[o·so + c·sc + KK − 1 − k]
 * when flip (the flipped, transposed weights of an input gradient, read in place), packed
 * here or, for the forward, once before (packed: sde_ops_conv_avx2_prepare; NULL: here).
 * scratch: sde_ops_conv_avx2_scratch_floats(s). */
int sde_ops_conv_avx2(float *out, const float *inp, const float *w, size_t so, size_t sc,
                      int flip, const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                      int accum, const float *packed) {
  a2_job j = {.s = s, .out = out, .xp = scratch, .inp = inp, .bias = accum ? NULL : bias,
              .accum = accum, .k33 = s->KH == 3 && s->KW == 3};
  a2_plan_make(s, &j.p);
  const int Co = s->C_out, Ci = s->C_in, KK = s->KH * s->KW;
  /* the packed weights after the planes, 32-byte aligned; rows past C_out repeat the last */
  float *wpk = scratch + (size_t)s->B * Ci * j.p.S;
  wpk += (8 - ((uintptr_t)wpk / sizeof(float)) % 8) % 8;
  if (!packed) {
    a2_pack_job pk = {.wpk = wpk, .w = w, .so = so, .sc = sc, .Co = Co, .Ci = Ci, .KK = KK,
                      .flip = flip};
    sde_parallel_for(j.p.ncb, 1, a2_pack, &pk);
  }
  j.wpk = packed ? packed : wpk;
  j.ntile = a2_ntile(&j.p, s->B);
  sde_parallel_for((int64_t)s->B * Ci, 1, a2_pad, &j);
  sde_parallel_for_dynamic((int64_t)ceil_div(j.ntile, A2_TPC) * j.p.ncb, 1, a2_tasks, &j);
  return SDE_OK;
}

/* ---- weight gradient of 3x3 stride-1 convs (A2_ROWS shapes) ------------------------------
 *   dw[co][ci][kh·3 + kw] += Σ_lanes Σ_b Σ_v dout[b][co][8v .. 8v + 8) ·
 *                            xpad[b][ci][base(v) + kh·Wp + kw .. + 8)
 * on the zero-padded planes of the forward. Each (co, ci, tap) has one vector accumulator
 * (lane i takes lane i of every output vector, images and vectors in order), whose 8 lanes
 * are summed in a fixed order at the end: the order depends on the shape alone. Register
 * tile: R ≤ 3 output channels x the 3 taps of one kernel row (9 accumulators, R dout and
 * 3 input loads per 3·R FMAs); the three kernel rows are three passes over a chunk of
 * about A2_DW_CHUNK outputs of nb images (its dout rows stay in L1). A task is (block of
 * output channels, block of ≤ A2_DW_CB input channels): each dweight element is one task's
 * work, so the sums depend neither on the thread count nor on how tasks fall on threads. */
#define A2_DW_R 3
#define A2_DW_CB 8
#define A2_DW_CHUNK 1024
#define A2_DW_TASKS 8

typedef struct {
  const a2_job *a;
  float *dw;
  const float *g;
  int nblk, q, rem; /* output-channel blocks: the first rem have q + 1 channels, the rest q */
  int cb, ncib, nb; /* input channels per task, input-channel blocks, images per chunk */
  const int *xoff;  /* output vector v's input offset in its padded plane */
} a2_dw_job;

/* part[r][kw] (+)= Σ over images [0, nb) and the nvec output vectors of x (row kh of the
 * taps, image stride xs; vector v's input at xoff[v]) times dout vectors g + r·HWo + 8v
 * (image stride gs); one flat loop over the vectors, not one per output row of 1-4 */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_dw_kernel(float *part, int load, const float *x, size_t xs, const float *g, size_t gs,
             size_t HWo, int nb, int nvec, const int *xoff, const int R) {
  __m256 acc[A2_DW_R][3];
#pragma GCC unroll 3
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int k = 0; k < 3; k++)
      acc[r][k] = load ? _mm256_loadu_ps(part + (r * 9 + k) * A2_V) : _mm256_setzero_ps();
  for (int b = 0; b < nb; b++) {
    const float *xb = x + b * xs, *gr = g + b * gs;
#pragma GCC unroll 2
    for (int v = 0; v < nvec; v++, gr += A2_V) {
      const float *xr = xb + xoff[v];
      __m256 gv[A2_DW_R];
#pragma GCC unroll 3
      for (int r = 0; r < R; r++) gv[r] = _mm256_loadu_ps(gr + r * HWo);
#pragma GCC unroll 3
      for (int kw = 0; kw < 3; kw++) {
        __m256 xv = _mm256_loadu_ps(xr + kw);
        __asm__("" : "+x"(xv));
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) acc[r][kw] = _mm256_fmadd_ps(gv[r], xv, acc[r][kw]);
      }
    }
  }
#pragma GCC unroll 3
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int k = 0; k < 3; k++) _mm256_storeu_ps(part + (r * 9 + k) * A2_V, acc[r][k]);
}

typedef void (*a2_dw_fn)(float *, int, const float *, size_t, const float *, size_t, size_t, int,
                         int, const int *);
#define A2_DW_TILE(RR)                                                                          \
  __attribute__((target("avx2,fma"))) static void a2_dw_tile##RR(                               \
      float *part, int load, const float *x, size_t xs, const float *g, size_t gs, size_t HWo,  \
      int nb, int nvec, const int *xoff) {                                                      \
    a2_dw_kernel(part, load, x, xs, g, gs, HWo, nb, nvec, xoff, RR);                            \
  }
A2_DW_TILE(1)
A2_DW_TILE(2)
A2_DW_TILE(3)

static void a2_dw_tasks(void *ctx, int64_t t0, int64_t t1) {
  static const a2_dw_fn fns[A2_DW_R] = {a2_dw_tile1, a2_dw_tile2, a2_dw_tile3};
  const a2_dw_job *jj = ctx;
  const a2_job *j = jj->a;
  const sde_nn_conv2d_shape *s = j->s;
  const a2_plan *p = &j->p;
  const int Ci = s->C_in, Co = s->C_out;
  const size_t HWo = (size_t)p->Ho * p->Wo, gs = (size_t)Co * HWo, xs = (size_t)Ci * p->S;
  float part[A2_DW_CB * A2_DW_R * 9 * A2_V];
  for (int64_t t = t0; t < t1; t++) {
    const int blk = (int)(t / jj->ncib), cib = (int)(t % jj->ncib);
    const int co0 = blk * jj->q + (blk < jj->rem ? blk : jj->rem), R = jj->q + (blk < jj->rem);
    const int ci0 = cib * jj->cb, cn = Ci - ci0 < jj->cb ? Ci - ci0 : jj->cb;
    for (int b0 = 0; b0 < s->B; b0 += jj->nb) {
      const int nb = s->B - b0 < jj->nb ? s->B - b0 : jj->nb;
      const float *g = jj->g + b0 * gs + (size_t)co0 * HWo;
      for (int c = 0; c < cn; c++)
        for (int kh = 0; kh < 3; kh++)
          fns[R - 1](part + ((size_t)c * A2_DW_R * 9 + kh * 3) * A2_V, b0 > 0,
                     j->xp + b0 * xs + (size_t)(ci0 + c) * p->S + (size_t)kh * p->Wp, xs, g, gs,
                     HWo, nb, p->nvec, jj->xoff);
    }
    for (int c = 0; c < cn; c++)
      for (int r = 0; r < R; r++)
        for (int k = 0; k < 9; k++) {
          const float *l = part + (((size_t)c * A2_DW_R + r) * 9 + k) * A2_V;
          const float sum = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
          jj->dw[((size_t)(co0 + r) * Ci + ci0 + c) * 9 + k] += sum;
        }
  }
}

int sde_ops_conv_avx2_dweight_usable(const sde_nn_conv2d_shape *s) {
  if (!sde_ops_conv_avx2_usable(s) || s->KH != 3 || s->KW != 3) return 0;
  a2_plan p;
  a2_plan_make(s, &p);
  return p.mode == A2_ROWS;
}

/* dweight += the weight gradient of a 3x3 stride-1 conv (sde_ops_conv_avx2_dweight_usable)
 * from dout and inp; scratch: sde_ops_conv_avx2_scratch_floats(s) */
int sde_ops_conv_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s, float *scratch) {
  a2_job j = {.s = s, .xp = scratch, .inp = inp};
  a2_plan_make(s, &j.p);
  a2_dw_job jj = {.a = &j, .dw = dweight, .g = dout};
  jj.nblk = ceil_div(s->C_out, A2_DW_R);
  jj.q = s->C_out / jj.nblk;
  jj.rem = s->C_out % jj.nblk;
  jj.cb = A2_DW_CB; /* halved down to 1 while there are fewer than A2_DW_TASKS tasks */
  while (jj.cb > 1 && (int64_t)jj.nblk * ceil_div(s->C_in, jj.cb) < A2_DW_TASKS) jj.cb /= 2;
  jj.ncib = ceil_div(s->C_in, jj.cb);
  const int hw = j.p.Ho * j.p.Wo;
  jj.nb = hw >= A2_DW_CHUNK ? 1 : A2_DW_CHUNK / hw;
  int *xoff = malloc((size_t)j.p.nvec * sizeof(int));
  if (!xoff) return sde_fail(SDE_ENOMEM, "conv2d: out of memory");
  for (int v = 0, per_row = j.p.Wo / A2_V; v < j.p.nvec; v++)
    xoff[v] = v / per_row * j.p.Wp + v % per_row * A2_V;
  jj.xoff = xoff;
  sde_parallel_for((int64_t)s->B * s->C_in, 1, a2_pad, &j);
  sde_parallel_for_dynamic((int64_t)jj.nblk * jj.ncib, 1, a2_dw_tasks, &jj);
  free(xoff);
  return SDE_OK;
}

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 convs --------------------------------------
 * y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A on 2x2 output tiles, as ops_conv.c's AVX-512 path (the same
 * matrices and the same roundings: 2 in each transformed input V, 1 in each transformed
 * weight U, computed in float64 and rounded once, C_in in each product's FMA chain, 4 in the
 * output transform, 1 for the bias), so tests/engine/test_direct_conv.c checks both against
 * one bound. The batch's tiles go by in bands of whole tile rows (about A2_WG_BAND tiles; a
 * band may hold the last rows of one image and the first of the next):
 *   V[ξ][ci][t] = (Bᵀ d B)[ξ] of tile t's 4x4 zero-padded patch (tasks over ci),
 *   M[ξ][co][t] = Σ_ci U[ξ][co][ci] · V[ξ][ci][t]: 16 1x1 convolutions over the band's
 *                 tiles, run by the direct conv's register tile (a2_tile*, KH = KW = 1),
 *   y = Aᵀ M A (+ bias, or added to y) (tasks over co).
 * A tile's outputs are one fixed sequence of operations wherever its band starts (its lane of
 * the products, its place in its tile row for the transforms), so the bits depend neither on
 * the thread count nor on the batch. */
#define A2_WG_BAND 256

/* The row stride of V and M for Tp tiles: an odd number of 8-float half lines, so that the
 * C_in rows of a register tile's column of V fall on all L1 sets. At a stride of a power
 * of two (256 tiles: 1 KB) they share a few sets and the column, which should stay in L1
 * while every output-channel block streams past it, came from L2 each time. */
static int a2_wg_stride(int Tp) { return Tp / A2_V % 2 ? Tp : Tp + A2_V; }

typedef struct {
  float *out, *V, *M;
  const float *inp, *w, *bias;
  float *U; /* [nxi][ncb][Ci][A2_R] */
  int m, nxi; /* output tile side (2 or 4) and transformed positions ((m + 2)²) */
  int Ci, Co, H, W, nth, ntw, ncb, accum;
  int th0, nrow, Tp, Ts; /* the band: first tile row of the batch (image b's tile row th is
                          * row b·nth + th), tile rows, tiles rounded up to 8, and the row
                          * stride of V and M (a2_wg_stride) */
  int ntile;         /* register tiles of the products per ξ (over the band's tiles) */
  const float *bias2, *res; /* the epilogue (sde_ops_conv_epilogue), or NULL */
  float div;
} a2_wg_job;

/* y + bias's epilogue, 8, 4 or 1 outputs at offset at of the plane (yr: the residual's plane,
 * NULL without one): + bias2 of the image and channel (b2), residual + ·, then / div; the
 * operations and order of the separate passes it replaces (ncsnpp_forward.c) */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256
a2_ep8(const a2_wg_job *j, __m256 v, float b2, const float *yr, size_t at) {
  if (j->bias2) v = _mm256_add_ps(v, _mm256_set1_ps(b2));
  if (yr) v = _mm256_add_ps(_mm256_loadu_ps(yr + at), v);
  return j->div != 0.0f ? _mm256_div_ps(v, _mm256_set1_ps(j->div)) : v;
}
__attribute__((target("avx2,fma"), always_inline)) static inline __m128
a2_ep4(const a2_wg_job *j, __m128 v, float b2, const float *yr, size_t at) {
  if (j->bias2) v = _mm_add_ps(v, _mm_set1_ps(b2));
  if (yr) v = _mm_add_ps(_mm_loadu_ps(yr + at), v);
  return j->div != 0.0f ? _mm_div_ps(v, _mm_set1_ps(j->div)) : v;
}
static inline float a2_ep1(const a2_wg_job *j, float v, float b2, const float *yr, size_t at) {
  if (j->bias2) v = v + b2;
  if (yr) v = yr[at] + v;
  return j->div != 0.0f ? v / j->div : v;
}

/* The weight transforms compute U for A2_WG_CCH input channels into a small buffer
 * tmp[ξ][ci % A2_WG_CCH][A2_R] and then copy each ξ's run into U[ξ][cb][ci][A2_R]: written
 * straight to U, the nxi stores per input channel land nxi·ncb·C_in floats apart (a power
 * of two for the usual channel counts), in one L1 set, and the F(4x4) transform took twice
 * as long. */
#define A2_WG_CCH 16

/* the A2_R output channels of block cb (rows past C_out repeat the last) */
static void a2_wg_rows(const a2_wg_job *j, int64_t cb, const float *g[A2_R]) {
  for (int r = 0; r < A2_R; r++) {
    const int co = (int)cb * A2_R + r < j->Co ? (int)cb * A2_R + r : j->Co - 1;
    g[r] = j->w + (size_t)co * j->Ci * 9;
  }
}

/* tmp's channels up to ci (the chunk ci ends) into U */
static void a2_wg_flush(const a2_wg_job *j, const float *tmp, int64_t cb, int ci) {
  const int ci0 = ci - ci % A2_WG_CCH, n = ci - ci0 + 1;
  for (int xi = 0; xi < j->nxi; xi++) { /* vector moves: memcpy's rep movs is slow at 256 B */
    float *u = j->U + (((size_t)xi * j->ncb + cb) * j->Ci + ci0) * A2_R;
    const float *t = tmp + (size_t)xi * A2_WG_CCH * A2_R;
    for (int k = 0; k < n * A2_R; k += 4) {
      __m128 v = _mm_loadu_ps(t + k);
      __asm__("" : "+x"(v)); /* (else the loop is turned back into memcpy) */
      _mm_storeu_ps(u + k, v);
    }
  }
}

/* G applied to one column (g0, g1, g2) of 4 output channels' kernels, in float64: F(2x2, 3x3)
 * (m = 2, G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]) or F(4x4, 3x3) (m = 4, G below), m + 2 values */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wg_g(int m, __m256d g0, __m256d g1, __m256d g2, __m256d *o) {
  const __m256d e02 = _mm256_add_pd(g0, g2);
  if (m == 2) {
    const __m256d half = _mm256_set1_pd(0.5);
    o[0] = g0;
    o[1] = _mm256_mul_pd(half, _mm256_add_pd(e02, g1));
    o[2] = _mm256_mul_pd(half, _mm256_sub_pd(e02, g1));
    o[3] = g2;
    return;
  }
  const __m256d s6 = _mm256_set1_pd(-1.0 / 6), s12 = _mm256_set1_pd(1.0 / 12);
  const __m256d p = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(1.0 / 24), g0),
                                  _mm256_mul_pd(_mm256_set1_pd(1.0 / 6), g2));
  o[0] = _mm256_mul_pd(_mm256_set1_pd(0.25), g0);
  o[1] = _mm256_mul_pd(s6, _mm256_add_pd(e02, g1));
  o[2] = _mm256_mul_pd(s6, _mm256_sub_pd(e02, g1));
  o[3] = _mm256_add_pd(p, _mm256_mul_pd(s12, g1));
  o[4] = _mm256_sub_pd(p, _mm256_mul_pd(s12, g1));
  o[5] = g2;
}

/* U = G g Gᵀ in float64, rounded once, packed U[ξ][cb][ci][r] (rows past C_out repeat the
 * last), output-channel blocks [c0, c1): the 4 output channels of a block are the 4 double
 * lanes, so each (ξ, ci) is one 4-float store (into tmp, then U) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wg_weights_m(void *ctx, int64_t c0, int64_t c1, const int m) {
  const a2_wg_job *j = ctx;
  const int P = m + 2;
  float tmp[36 * A2_WG_CCH * A2_R];
  for (int64_t cb = c0; cb < c1; cb++) {
    const float *g[A2_R];
    a2_wg_rows(j, cb, g);
    for (int ci = 0; ci < j->Ci; ci++) {
      __m256d k9[9], t[6][3], o[6];
      __m128 t4[9];
      a2_taps9(g, (size_t)ci * 9, t4);
      for (int k = 0; k < 9; k++) k9[k] = _mm256_cvtps_pd(t4[k]);
      for (int k = 0; k < 3; k++) { /* G g: column k of the kernel */
        a2_wg_g(m, k9[k], k9[3 + k], k9[6 + k], o);
        for (int a = 0; a < P; a++) t[a][k] = o[a];
      }
      for (int a = 0; a < P; a++) { /* (G g) Gᵀ: row a */
        a2_wg_g(m, t[a][0], t[a][1], t[a][2], o);
        for (int e = 0; e < P; e++)
          _mm_storeu_ps(tmp + ((size_t)(P * a + e) * A2_WG_CCH + ci % A2_WG_CCH) * A2_R,
                        _mm256_cvtpd_ps(o[e]));
      }
      if (ci % A2_WG_CCH == A2_WG_CCH - 1 || ci == j->Ci - 1) a2_wg_flush(j, tmp, cb, ci);
    }
  }
}
__attribute__((target("avx2,fma"))) static void a2_wg_weights2(void *ctx, int64_t c0, int64_t c1) {
  a2_wg_weights_m(ctx, c0, c1, 2);
}
__attribute__((target("avx2,fma"))) static void a2_wg_weights4(void *ctx, int64_t c0, int64_t c1) {
  a2_wg_weights_m(ctx, c0, c1, 4);
}

/* the transforms' arithmetic on vectors of 8 or 4 floats or on one float (T), so that every
 * width runs the same operations per tile */
#define S_ADD(a, b) ((a) + (b))
#define S_SUB(a, b) ((a) - (b))
#define S_FMA(k, a, b) fmaf(k, a, b)
#define S_FNMA(k, a, b) fmaf(-(k), a, b)
#define V_FMA(k, a, b) _mm256_fmadd_ps(k, a, b)
#define V_FNMA(k, a, b) _mm256_fnmadd_ps(k, a, b)
#define Q_FMA(k, a, b) _mm_fmadd_ps(k, a, b)
#define Q_FNMA(k, a, b) _mm_fnmadd_ps(k, a, b)
#define S_LD(p) (*(p))
#define S_ST(p, v) (*(p) = (v))

/* row ih of the plane x (H x W) as n floats (W ≤ n), zero past W (buf holds them where
 * W < n), or the zero row z outside the plane */
__attribute__((target("avx2,fma"), always_inline)) static inline const float *
a2_row_n(const float *x, int ih, int H, int W, int n, float *buf, const float *z) {
  if (ih < 0 || ih >= H) return z;
  if (W == n) return x + (size_t)ih * W;
  a2_move(buf, x + (size_t)ih * W, (size_t)W);
  a2_move(buf + W, NULL, (size_t)(n - W));
  return buf;
}

/* Planes of 2 or 4 tiles a tile row (F(4x4) on planes 5-8 and 13-16 wide, F(2x2) on 7-8):
 * G = 8 / ntw tile rows make one vector of 8 tiles, the lanes in the band's tile order.
 * rows[g][i] = input row m·th + r0 + i (i < n) of tile row tr + g of the band (g < G), in
 * channel c's plane of x ([B][C][H][W]), as m·ntw floats (a2_row_n; pad: the copies), the
 * zero row z for tile rows past the band (their lanes fill the band's padding tiles) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_group_rows(const a2_wg_job *j, const float *x, int C, int64_t c, int tr, int G, int r0, int n,
              const float *rows[][6], float pad[][6][16], const float *z) {
  for (int g = 0; g < G; g++) {
    const int img = (j->th0 + tr + g) / j->nth, th = (j->th0 + tr + g) % j->nth;
    const float *p = x + ((size_t)img * C + c) * j->H * j->W;
    for (int i = 0; i < n; i++)
      rows[g][i] = tr + g >= j->nrow
                       ? z
                       : a2_row_n(p, j->m * th + r0 + i, j->H, j->W, j->m * j->ntw, pad[g][i], z);
  }
}

/* the even and odd columns of 8 floats at a and 8 at b: (a0 a2 a4 a6 b0 b2 b4 b6) and
 * (a1 a3 a5 a7 b1 b3 b5 b7) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_evod2(const float *a, const float *b, __m256 *ev, __m256 *od) {
  const __m256 q = _mm256_loadu_ps(a), r = _mm256_loadu_ps(b);
  const __m256 t = _mm256_permute2f128_ps(q, r, 0x20), u = _mm256_permute2f128_ps(q, r, 0x31);
  *ev = _mm256_shuffle_ps(t, u, 0x88), *od = _mm256_shuffle_ps(t, u, 0xDD);
}

/* Bᵀ d B of two tile rows of 4 tiles (planes 7-8 wide) as one row of 8, from their patch
 * rows rows[0][i] and rows[1][i] (8 floats each), into vt: the operations of A2_WG_IN per
 * tile. Patch column k of the tiles: odd columns moved a lane right (k = 0, column −1), even
 * ones (k = 1), odd ones (k = 2), even ones moved a lane left (k = 3, column 8). */
__attribute__((target("avx2,fma"))) static void a2_wg_input_pair(const float *rows[][6], float *vt,
                                                                  size_t xs) {
  const __m256 z = _mm256_setzero_ps();
  __m256 e[4][4], d[4][4]; /* d[k][i]: patch column k, row i of the 8 tiles */
  for (int i = 0; i < 4; i++) {
    __m256 ev, od;
    a2_evod2(rows[0][i], rows[1][i], &ev, &od);
    d[0][i] = _mm256_blend_ps(_mm256_permute_ps(od, 0x90), z, 0x11);
    d[1][i] = ev, d[2][i] = od;
    d[3][i] = _mm256_blend_ps(_mm256_permute_ps(ev, 0x39), z, 0x88);
  }
  for (int k = 0; k < 4; k++) {
    e[0][k] = _mm256_sub_ps(d[k][0], d[k][2]), e[1][k] = _mm256_add_ps(d[k][1], d[k][2]);
    e[2][k] = _mm256_sub_ps(d[k][2], d[k][1]), e[3][k] = _mm256_sub_ps(d[k][1], d[k][3]);
  }
  for (int a = 0; a < 4; a++) {
    _mm256_storeu_ps(vt + (4 * a + 0) * xs, _mm256_sub_ps(e[a][0], e[a][2]));
    _mm256_storeu_ps(vt + (4 * a + 1) * xs, _mm256_add_ps(e[a][1], e[a][2]));
    _mm256_storeu_ps(vt + (4 * a + 2) * xs, _mm256_sub_ps(e[a][2], e[a][1]));
    _mm256_storeu_ps(vt + (4 * a + 3) * xs, _mm256_sub_ps(e[a][1], e[a][3]));
  }
}

/* Bᵀ d B of tiles tw, tw + 1, ... of a tile row, N at a time while N are left (T: vectors of
 * N floats, or float for N = 1), from the patch rows' even and odd columns into vt (ξ rows xs
 * apart); in a2_wg_input */
#define A2_WG_IN(T, LD, ST, ADD, SUB, N)                                                        \
  for (; tw + (N) <= ntw; tw += (N)) {                                                          \
    T e[4][4];                                                                                  \
    for (int k = 0; k < 4; k++) {                                                               \
      const int c = tw + k / 2;                                                                 \
      T d[4];                                                                                   \
      for (int i = 0; i < 4; i++) d[i] = LD(k & 1 ? od[i] + c : ev[i] + c);                     \
      e[0][k] = SUB(d[0], d[2]), e[1][k] = ADD(d[1], d[2]);                                     \
      e[2][k] = SUB(d[2], d[1]), e[3][k] = SUB(d[1], d[3]);                                     \
    }                                                                                           \
    for (int a = 0; a < 4; a++) {                                                               \
      ST(vt + (4 * a + 0) * xs + tw, SUB(e[a][0], e[a][2]));                                    \
      ST(vt + (4 * a + 1) * xs + tw, ADD(e[a][1], e[a][2]));                                    \
      ST(vt + (4 * a + 2) * xs + tw, SUB(e[a][2], e[a][1]));                                    \
      ST(vt + (4 * a + 3) * xs + tw, SUB(e[a][1], e[a][3]));                                    \
    }                                                                                           \
  }

/* V of the band for input channels [c0, c1): Bᵀ d B, Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0;
 * 0 1 0 −1], rows first, then columns. Each padded input row (columns −1 .. 2·ntw) is split
 * into its even and odd columns, so that column k of every tile's patch is a contiguous
 * run (ev[tw], od[tw], ev[tw + 1], od[tw + 1]) and the loop over tiles vectorises (8 tiles,
 * then 4, then one at a time); the tiles past the band's last read zeros. On planes 7-8
 * wide two tile rows are one vector (a2_wg_input_pair). */
__attribute__((target("avx2,fma"))) static void a2_wg_input(void *ctx, int64_t c0, int64_t c1) {
  const a2_wg_job *j = ctx;
  const int H = j->H, W = j->W, ntw = j->ntw;
  const size_t xs = (size_t)j->Ci * j->Ts;
  float ev[4][512 + 1], od[4][512 + 1];
  float pad[2][6][16], zero[16] = {0};
  for (int64_t ci = c0; ci < c1; ci++) {
    float *v = j->V + (size_t)ci * j->Ts;
    int tr = 0;
    for (; ntw == 4 && tr < j->nrow; tr += 2) { /* planes 7-8 wide: two tile rows a vector */
      const float *rows[2][6];
      a2_group_rows(j, j->inp, j->Ci, ci, tr, 2, -1, 4, rows, pad, zero);
      a2_wg_input_pair(rows, v + (size_t)tr * ntw, xs);
    }
    for (; tr < j->nrow; tr++) {
      const int img = (j->th0 + tr) / j->nth, th = (j->th0 + tr) % j->nth;
      const float *x = j->inp + ((size_t)img * j->Ci + ci) * H * W;
      for (int i = 0; i < 4; i++) { /* input row 2·th − 1 + i: column 2c − 1 even, 2c odd */
        const int ih = 2 * th - 1 + i;
        if (ih < 0 || ih >= H) { /* a padding row */
          a2_move(ev[i], NULL, (size_t)ntw + 1);
          a2_move(od[i], NULL, (size_t)ntw + 1);
          continue;
        }
        const float *xr = x + (size_t)ih * W;
        int c = 0;
        ev[i][0] = 0.0f; /* column −1 */
        /* 16 columns at a time: columns 2c.. into od[c..], 2c + 1.. into ev[c + 1..] */
        for (; 2 * c + 16 <= W; c += A2_V) {
          const __m256 q0 = _mm256_loadu_ps(xr + 2 * c), q1 = _mm256_loadu_ps(xr + 2 * c + 8);
          /* the shuffles give columns 0 2 8 10 4 6 12 14 (and 1 3 9 11 ...): put in order */
          const __m256 e = _mm256_shuffle_ps(q0, q1, 0x88), o = _mm256_shuffle_ps(q0, q1, 0xDD);
          _mm256_storeu_ps(od[i] + c,
                           _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
          _mm256_storeu_ps(ev[i] + c + 1,
                           _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
        }
        for (; 2 * c + 8 <= W; c += 4) { /* 8 columns (in order: no permute in 128 bits) */
          const __m128 q0 = _mm_loadu_ps(xr + 2 * c), q1 = _mm_loadu_ps(xr + 2 * c + 4);
          _mm_storeu_ps(od[i] + c, _mm_shuffle_ps(q0, q1, 0x88));
          _mm_storeu_ps(ev[i] + c + 1, _mm_shuffle_ps(q0, q1, 0xDD));
        }
        for (; c <= ntw; c++) { /* the rest, zero past the image */
          od[i][c] = 2 * c < W ? xr[2 * c] : 0.0f;
          if (c < ntw) ev[i][c + 1] = 2 * c + 1 < W ? xr[2 * c + 1] : 0.0f;
        }
      }
      float *vt = v + (size_t)tr * ntw;
      int tw = 0;
      A2_WG_IN(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps, A2_V);
      A2_WG_IN(__m128, _mm_loadu_ps, _mm_storeu_ps, _mm_add_ps, _mm_sub_ps, 4); /* 8x8 planes */
      A2_WG_IN(float, S_LD, S_ST, S_ADD, S_SUB, 1);
    }
    for (int xi = 0; j->Tp > j->nrow * ntw && xi < 16; xi++) /* the padding tiles, if any */
      a2_move(v + (size_t)xi * xs + (size_t)j->nrow * ntw, NULL, (size_t)(j->Tp - j->nrow * ntw));
  }
}

/* products, tasks t: (ξ, register tile of A2_J·8 tiles), all output-channel blocks in turn,
 * so that the register tile's column of V (C_in x 24 floats) stays in L1 while U streams */
static void a2_wg_products(void *ctx, int64_t t0, int64_t t1) {
  static const a2_tile_fn fns[A2_J] = {a2_tile1_11, a2_tile2_11, a2_tile3_11};
  const a2_wg_job *j = ctx;
  const int nv = j->Tp / A2_V, cpp = A2_CB;
  float acc[A2_R * A2_J * A2_V];
  for (int64_t t = t0; t < t1; t++) {
    const int xi = (int)(t / j->ntile), tl = (int)(t % j->ntile);
    const float *vx = j->V + (size_t)xi * j->Ci * j->Ts;
    int v0, J;
    a2_split(nv, tl, &v0, &J);
    ptrdiff_t off[A2_J];
    for (int k = 0; k < J; k++) off[k] = (ptrdiff_t)(v0 + k) * A2_V;
    for (int cb = 0; cb < j->ncb; cb++) {
      const int nr = j->Co - cb * A2_R < A2_R ? j->Co - cb * A2_R : A2_R;
      float *m = j->M + ((size_t)xi * j->Co + (size_t)cb * A2_R) * j->Ts, *dst[A2_J];
      for (int k = 0; k < J; k++) dst[k] = m + (size_t)(v0 + k) * A2_V;
      for (int c0 = 0; c0 < j->Ci; c0 += cpp) {
        const int cn = j->Ci - c0 < cpp ? j->Ci - c0 : cpp, last = c0 + cn == j->Ci;
        const float *wp = j->U + (((size_t)xi * j->ncb + cb) * j->Ci + c0) * A2_R;
        fns[J - 1](acc, vx + (size_t)c0 * j->Ts, off, wp, cn, (size_t)j->Ts, 1, 1, 0, c0 > 0,
                   last ? dst : NULL, (size_t)j->Ts, nr, NULL, 0);
      }
    }
  }
}

/* tile i's outputs (r0[i], r1[i]) into columns 2i, 2i + 1 of y0 (the first vector's width)
 * and y1 (the rest) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_zip8(__m256 r0, __m256 r1, __m256 *y0, __m256 *y1) {
  const __m256 lo = _mm256_unpacklo_ps(r0, r1), hi = _mm256_unpackhi_ps(r0, r1);
  *y0 = _mm256_permute2f128_ps(lo, hi, 0x20), *y1 = _mm256_permute2f128_ps(lo, hi, 0x31);
}
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_zip4(__m128 r0, __m128 r1, __m128 *y0, __m128 *y1) {
  *y0 = _mm_unpacklo_ps(r0, r1), *y1 = _mm_unpackhi_ps(r0, r1);
}

/* Aᵀ M A of tiles tw, tw + 1, ... of a tile row, N at a time while their 2N columns lie in
 * the image (T: vectors of N floats), into output rows 2·th, 2·th + 1: added to them
 * (accum), or + bias and the epilogue EP; in a2_wg_output */
#define A2_WG_OUT(T, LD, ST, ADD, SUB, SET1, ZIP, EP, N)                                        \
  for (; tw + (N) <= ntw && 2 * tw + 2 * (N) <= W; tw += (N)) {                                 \
    const size_t t = (size_t)tr * ntw + tw;                                                     \
    T e[2][4];                                                                                  \
    for (int k = 0; k < 4; k++) {                                                               \
      const T m0 = LD(m + (0 + k) * ms + t), m1 = LD(m + (4 + k) * ms + t);                     \
      const T m2 = LD(m + (8 + k) * ms + t), m3 = LD(m + (12 + k) * ms + t);                    \
      e[0][k] = ADD(ADD(m0, m1), m2);                                                           \
      e[1][k] = SUB(SUB(m1, m2), m3);                                                           \
    }                                                                                           \
    for (int dy = 0; dy < 2; dy++) {                                                            \
      const int oh = 2 * th + dy;                                                               \
      if (oh >= H) continue;                                                                    \
      const T r0 = ADD(ADD(e[dy][0], e[dy][1]), e[dy][2]);                                      \
      const T r1 = SUB(SUB(e[dy][1], e[dy][2]), e[dy][3]);                                      \
      T y0, y1;                                                                                 \
      ZIP(r0, r1, &y0, &y1);                                                                    \
      const size_t at = (size_t)oh * W + 2 * tw;                                                \
      if (j->accum) {                                                                           \
        y0 = ADD(LD(y + at), y0);                                                               \
        y1 = ADD(LD(y + at + (N)), y1);                                                         \
      } else {                                                                                  \
        y0 = EP(j, ADD(y0, SET1(bv)), b2, yr, at);                                              \
        y1 = EP(j, ADD(y1, SET1(bv)), b2, yr, at + (N));                                        \
      }                                                                                         \
      ST(y + at, y0);                                                                           \
      ST(y + at + (N), y1);                                                                     \
    }                                                                                           \
  }

/* where a tile row's outputs go: output channel co's plane of its image (and the
 * residual's, NULL without one), bias2 of that image and channel, the first output row */
typedef struct {
  float *y;
  const float *yr;
  float b2;
  int oh0;
} a2_orow;

static a2_orow a2_wg_orow(const a2_wg_job *j, int64_t co, int tr) {
  const int img = (j->th0 + tr) / j->nth;
  const size_t off = ((size_t)img * j->Co + co) * j->H * j->W;
  return (a2_orow){j->out + off, j->res ? j->res + off : NULL,
                   j->bias2 ? j->bias2[(size_t)img * j->Co + co] : 0.0f,
                   j->m * ((j->th0 + tr) % j->nth)};
}

/* Aᵀ M A of two tile rows of 4 tiles (planes 8 wide) at tile t of M, as A2_WG_OUT per tile:
 * tile row h's outputs into output rows 2·th, 2·th + 1 of rw[h] (NULL: past the band) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wg_out_pair(const a2_wg_job *j, const float *m, size_t ms, size_t t, float bv,
               const a2_orow *const rw[2]) {
  __m256 e[2][4];
  for (int k = 0; k < 4; k++) {
    const __m256 m0 = _mm256_loadu_ps(m + (0 + k) * ms + t), m1 = _mm256_loadu_ps(m + (4 + k) * ms + t);
    const __m256 m2 = _mm256_loadu_ps(m + (8 + k) * ms + t), m3 = _mm256_loadu_ps(m + (12 + k) * ms + t);
    e[0][k] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
    e[1][k] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
  }
  for (int dy = 0; dy < 2; dy++) {
    const __m256 a = _mm256_add_ps(_mm256_add_ps(e[dy][0], e[dy][1]), e[dy][2]);
    const __m256 b = _mm256_sub_ps(_mm256_sub_ps(e[dy][1], e[dy][2]), e[dy][3]);
    __m256 y[2];
    a2_zip8(a, b, &y[0], &y[1]); /* the 8 outputs of each tile row */
    for (int h = 0; h < 2; h++) {
      const a2_orow *row = rw[h];
      if (!row || row->oh0 + dy >= j->H) continue;
      const size_t at = (size_t)(row->oh0 + dy) * j->W;
      float *yo = row->y + at;
      _mm256_storeu_ps(yo, j->accum ? _mm256_add_ps(_mm256_loadu_ps(yo), y[h])
                                    : a2_ep8(j, _mm256_add_ps(y[h], _mm256_set1_ps(bv)), row->b2,
                                             row->yr, at));
    }
  }
}

/* y = Aᵀ M A (Aᵀ = [1 1 1 0; 0 1 −1 −1]), rows first, for output channels [c0, c1): on
 * planes 8 wide the 4 tiles of two tile rows at a time (a2_wg_out_pair), else 8 tiles of a
 * tile row at a time (their 2 x 16 outputs interleaved back into two output rows), then 4
 * (planes 9-15 wide), the rest and the last column of an odd width one tile at a time, in
 * the same order */
__attribute__((target("avx2,fma"))) static void a2_wg_output(void *ctx, int64_t c0, int64_t c1) {
  const a2_wg_job *j = ctx;
  const int H = j->H, W = j->W, ntw = j->ntw;
  const size_t ms = (size_t)j->Co * j->Ts;
  for (int64_t co = c0; co < c1; co++) {
    const float *m = j->M + (size_t)co * j->Ts;
    const float bv = j->bias ? j->bias[co] : 0.0f;
    int tr = 0;
    for (; W == 8 && tr < j->nrow; tr += 2) { /* two tile rows a vector */
      a2_orow rows[2];
      const a2_orow *rw[2] = {&rows[0], NULL};
      rows[0] = a2_wg_orow(j, co, tr);
      if (tr + 1 < j->nrow) rows[1] = a2_wg_orow(j, co, tr + 1), rw[1] = &rows[1];
      a2_wg_out_pair(j, m, ms, (size_t)tr * ntw, bv, rw);
    }
    for (; tr < j->nrow; tr++) {
      const int img = (j->th0 + tr) / j->nth, th = (j->th0 + tr) % j->nth;
      const size_t yo = ((size_t)img * j->Co + co) * H * W;
      float *y = j->out + yo;
      const float *yr = j->res ? j->res + yo : NULL;
      const float b2 = j->bias2 ? j->bias2[(size_t)img * j->Co + co] : 0.0f;
      int tw = 0;
      A2_WG_OUT(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps,
                _mm256_set1_ps, a2_zip8, a2_ep8, A2_V);
      A2_WG_OUT(__m128, _mm_loadu_ps, _mm_storeu_ps, _mm_add_ps, _mm_sub_ps, _mm_set1_ps, a2_zip4,
                a2_ep4, 4); /* planes 8-15 wide */
      for (; tw < ntw; tw++) {
        const size_t t = (size_t)tr * ntw + tw;
        float e[2][4];
        for (int k = 0; k < 4; k++) {
          const float m0 = m[(0 + k) * ms + t], m1 = m[(4 + k) * ms + t];
          const float m2 = m[(8 + k) * ms + t], m3 = m[(12 + k) * ms + t];
          e[0][k] = m0 + m1 + m2, e[1][k] = m1 - m2 - m3;
        }
        for (int dy = 0; dy < 2; dy++) {
          const int oh = 2 * th + dy;
          if (oh >= H) continue;
          const float r[2] = {e[dy][0] + e[dy][1] + e[dy][2], e[dy][1] - e[dy][2] - e[dy][3]};
          for (int dx = 0; dx < 2; dx++) {
            const int ow = 2 * tw + dx;
            if (ow >= W) continue;
            const size_t at = (size_t)oh * W + ow;
            float *o = y + at;
            *o = j->accum ? *o + r[dx] : a2_ep1(j, r[dx] + bv, b2, yr, at);
          }
        }
      }
    }
  }
}

/* ---- Winograd F(4x4, 3x3): the same scheme on 4x4 output tiles and 6x6 patches ------------
 * 36 products for 16 outputs where F(2x2, 3x3) spends 64, at the price of larger transform
 * coefficients (interpolation points 0, ±1, ±2, ∞):
 *   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
 *   G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
 *   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
 * Roundings (tests/engine/test_direct_conv.c bounds them): at most 4 in each V (2 per pass:
 * one add, one multiply-add), 1 in each U (float64, rounded once), C_in in a product's FMA
 * chain, at most 6 in the output transform (3 per pass), 1 for the bias. Scalar and vector
 * code run the same operations (fmaf where the vectors use an FMA), so every output is one
 * fixed sequence whichever path its tile takes. */
#define A2_WG4_BAND 192

/* d[0..5] -> Bᵀ d, two roundings each */
#define A2_BT6(T, ADD, SUB, FMA, FNMA, C4, C5, C2, d, r)                                        \
  do {                                                                                          \
    const T s12 = ADD(d[1], d[2]), s34 = ADD(d[3], d[4]), d12 = SUB(d[1], d[2]);               \
    const T d43 = SUB(d[4], d[3]), d31 = SUB(d[3], d[1]), d42 = SUB(d[4], d[2]);               \
    r[0] = FMA(C4, d[0], FNMA(C5, d[2], d[4]));                                                 \
    r[1] = FNMA(C4, s12, s34);                                                                  \
    r[2] = FMA(C4, d12, d43);                                                                   \
    r[3] = FMA(C2, d31, d42);                                                                   \
    r[4] = FNMA(C2, d31, d42);                                                                  \
    r[5] = FMA(C4, d[1], FNMA(C5, d[3], d[5]));                                                 \
  } while (0)

/* m[0..5] -> Aᵀ m (4 values), three roundings at most */
#define A2_AT6(T, ADD, SUB, FMA, C2, C4, C8, m, y)                                              \
  do {                                                                                          \
    const T a = ADD(m[1], m[2]), b = SUB(m[1], m[2]), c = ADD(m[3], m[4]), d = SUB(m[3], m[4]); \
    y[0] = ADD(ADD(m[0], a), c);                                                                \
    y[1] = FMA(C2, d, b);                                                                       \
    y[2] = FMA(C4, c, a);                                                                       \
    y[3] = ADD(FMA(C8, d, b), m[5]);                                                            \
  } while (0)


/* 8 floats at each of q[0..3] as 8 groups of 4 -> o[p] = (q0[p], q0[4 + p], q1[p], q1[4 + p],
 * ..., q3[4 + p]): the 4 column phases of 8 4-wide tiles, one vector each (a 4x8 transpose) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_phases4_q(const float *const q[4], __m256 o[4]) {
  const __m256 q0 = _mm256_loadu_ps(q[0]), q1 = _mm256_loadu_ps(q[1]);
  const __m256 q2 = _mm256_loadu_ps(q[2]), q3 = _mm256_loadu_ps(q[3]);
  const __m256 a = _mm256_permute2f128_ps(q0, q2, 0x20), b = _mm256_permute2f128_ps(q0, q2, 0x31);
  const __m256 c = _mm256_permute2f128_ps(q1, q3, 0x20), d = _mm256_permute2f128_ps(q1, q3, 0x31);
  const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
  const __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
  o[0] = _mm256_shuffle_ps(t0, t2, 0x44), o[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
  o[2] = _mm256_shuffle_ps(t1, t3, 0x44), o[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}
/* the same on 32 floats r[0..31] (8 neighbouring tiles of one row) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_phases4(const float *r, __m256 o[4]) {
  const float *const q[4] = {r, r + 8, r + 16, r + 24};
  a2_phases4_q(q, o);
}

/* Planes 5-8 or 13-16 wide have 2 or 4 tiles of 4 in a tile row: G = 8 / ntw tile rows make
 * one vector of 8 tiles (lanes in the order of the band's tiles), their rows 8 or 16 floats
 * (zero past the image). q[i][0..3] (a2_phases4_q) for row i of G tile rows whose row i is
 * rows[0][i], ..., rows[G - 1][i] */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_rows_q(int G, const float *rows[][6], int i, const float *q[4]) {
  for (int k = 0; k < 4; k++) q[k] = G == 2 ? rows[k / 2][i] + 8 * (k % 2) : rows[k][i];
}


/* Bᵀ d B of tiles tw, tw + 1, ... of a tile row, N at a time while N are left (T: vectors of
 * N floats, or float for N = 1, with their loads, stores and arithmetic), from the patch rows'
 * phases ph into vt (ξ rows xs apart); in a2_wg4_input */
#define A2_WG4_IN(T, LD, ST, ADD, SUB, FMA, FNMA, C4, C5, C2, N)                                \
  for (; tw + (N) <= ntw; tw += (N)) {                                                          \
    T e[6][6];                                                                                  \
    for (int k = 0; k < 6; k++) {                                                               \
      T d[6], r[6];                                                                             \
      for (int i = 0; i < 6; i++) d[i] = LD(ph[i][k % 4] + tw + k / 4);                         \
      A2_BT6(T, ADD, SUB, FMA, FNMA, C4, C5, C2, d, r);                                          \
      for (int a = 0; a < 6; a++) e[a][k] = r[a];                                               \
    }                                                                                           \
    for (int a = 0; a < 6; a++) {                                                               \
      T r[6];                                                                                   \
      A2_BT6(T, ADD, SUB, FMA, FNMA, C4, C5, C2, e[a], r);                                       \
      for (int b = 0; b < 6; b++) ST(vt + (6 * a + b) * xs + tw, r[b]);                         \
    }                                                                                           \
  }

/* Bᵀ d B of G tile rows of 8 / G tiles (a2_rows_q) as one row of 8, from their patch rows
 * rows[g][i], into vt (ξ rows xs apart): the operations of A2_WG4_IN per tile. Patch column
 * k of the tiles is phase (k + 3) % 4, moved by a lane within each tile row's lanes for
 * k = 0 (column −1) and k = 5 (column 4·ntw). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wg4_input_rows(const int G, const float *rows[][6], float *vt, size_t xs) {
  const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5);
  const __m256 z = _mm256_setzero_ps();
  __m256 d[6][6], e[6][6]; /* d[k][i]: patch column k, row i of the 8 tiles */
  for (int i = 0; i < 6; i++) {
    __m256 o[4];
    const float *q[4];
    a2_rows_q(G, rows, i, q);
    a2_phases4_q(q, o);
    if (G == 2) { /* lanes 0-3 and 4-7: a tile row each */
      d[0][i] = _mm256_blend_ps(_mm256_permute_ps(o[3], 0x90), z, 0x11);
      d[5][i] = _mm256_blend_ps(_mm256_permute_ps(o[0], 0x39), z, 0x88);
    } else { /* lanes 2g, 2g + 1 */
      d[0][i] = _mm256_blend_ps(_mm256_permute_ps(o[3], 0xA0), z, 0x55);
      d[5][i] = _mm256_blend_ps(_mm256_permute_ps(o[0], 0xF5), z, 0xAA);
    }
    d[1][i] = o[0], d[2][i] = o[1], d[3][i] = o[2], d[4][i] = o[3];
  }
  for (int k = 0; k < 6; k++) {
    __m256 r[6];
    A2_BT6(__m256, _mm256_add_ps, _mm256_sub_ps, V_FMA, V_FNMA, c4, c5, c2, d[k], r);
    for (int a = 0; a < 6; a++) e[a][k] = r[a];
  }
  for (int a = 0; a < 6; a++) {
    __m256 r[6];
    A2_BT6(__m256, _mm256_add_ps, _mm256_sub_ps, V_FMA, V_FNMA, c4, c5, c2, e[a], r);
    for (int b = 0; b < 6; b++) _mm256_storeu_ps(vt + (6 * a + b) * xs, r[b]);
  }
}

/* V of the band for input channels [c0, c1): Bᵀ d B on each tile's 6x6 patch (rows 4·th − 1
 * .. 4·th + 4, columns 4·tw − 1 .. 4·tw + 4, zero outside), rows first. Each padded input
 * row is split into its 4 column phases (ph[p][c] = column 4c − 1 + p), so that column k of
 * tile tw's patch is ph[k % 4][tw + k / 4] and 8 neighbouring tiles are one vector; on planes
 * 5-8 and 13-16 wide, 4 or 2 tile rows are one vector (a2_wg4_input_rows). */
__attribute__((target("avx2,fma"))) static void a2_wg4_input(void *ctx, int64_t c0, int64_t c1) {
  const a2_wg_job *j = ctx;
  const int H = j->H, W = j->W, ntw = j->ntw;
  const size_t xs = (size_t)j->Ci * j->Ts;
  const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5);
  const __m128 q2 = _mm_set1_ps(2), q4 = _mm_set1_ps(4), q5 = _mm_set1_ps(5);
  const int nb = (ntw + A2_V) / A2_V; /* blocks of 8 phase entries: c = 0 .. ntw */
  float buf[6][4][(1024 / 4 + A2_V) / A2_V * A2_V];
  float pad[4][6][16], zero[16] = {0};
  const int G = ntw == 2 || ntw == 4 ? 8 / ntw : 0; /* tile rows a vector (a2_rows_q) */
  for (int64_t ci = c0; ci < c1; ci++) {
    float *v = j->V + (size_t)ci * j->Ts;
    int tr = 0;
    for (; G && tr < j->nrow; tr += G) {
      const float *rows[4][6];
      a2_group_rows(j, j->inp, j->Ci, ci, tr, G, -1, 6, rows, pad, zero);
      if (G == 2) a2_wg4_input_rows(2, rows, v + (size_t)tr * ntw, xs);
      else a2_wg4_input_rows(4, rows, v + (size_t)tr * ntw, xs);
    }
    float(*ph[6])[(1024 / 4 + A2_V) / A2_V * A2_V]; /* patch row i's phases: one of buf */
    for (int i = 0; i < 6; i++) ph[i] = buf[i];
    int kept = 0; /* rows 0 and 1 hold the last tile row's rows 4 and 5 */
    for (; tr < j->nrow; tr++) {
      const int img = (j->th0 + tr) / j->nth, th = (j->th0 + tr) % j->nth;
      const float *x = j->inp + ((size_t)img * j->Ci + ci) * H * W;
      for (int i = kept ? 2 : 0; i < 6; i++) {
        const int ih = 4 * th - 1 + i;
        if (ih < 0 || ih >= H) {
          for (int p = 0; p < 4; p++) a2_move(ph[i][p], NULL, (size_t)nb * A2_V);
          continue;
        }
        /* columns 32q .. 32q + 31 of the row (blocks inside it) as 8 x 4 phases, transposed
         * to 4 x 8: phase p is ph[p + 1][8q ..], phase 3 is ph[0][8q + 1 ..] (column 4c − 1
         * is phase 3 of c − 1); the rest of the row, and column −1, one entry at a time */
        const float *xr = x + (size_t)ih * W;
        const int inside = W / (4 * A2_V);
        for (int q = 0; q < inside; q++) {
          __m256 o[4];
          a2_phases4(xr + q * 4 * A2_V, o);
          for (int p = 0; p < 3; p++) _mm256_storeu_ps(ph[i][p + 1] + q * A2_V, o[p]);
          _mm256_storeu_ps(ph[i][0] + q * A2_V + 1, o[3]);
        }
        ph[i][0][0] = 0.0f;
        for (int c = inside * A2_V; c <= ntw; c++) {
          const int p0 = c > 0 && c == inside * A2_V; /* ph[0][c]: the last block's phase 3 */
          for (int p = p0; p < 4; p++) {
            const int col = 4 * c - 1 + p;
            ph[i][p][c] = col >= 0 && col < W ? xr[col] : 0.0f;
          }
        }
      }
      float *vt = v + (size_t)tr * ntw;
      int tw = 0;
      A2_WG4_IN(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps, V_FMA,
                V_FNMA, c4, c5, c2, A2_V);                    /* 8 tiles at a time */
      A2_WG4_IN(__m128, _mm_loadu_ps, _mm_storeu_ps, _mm_add_ps, _mm_sub_ps, Q_FMA, Q_FNMA, q4,
                q5, q2, 4);                                   /* 4 (planes 16 wide) */
      A2_WG4_IN(float, S_LD, S_ST, S_ADD, S_SUB, S_FMA, S_FNMA, 4.0f, 5.0f, 2.0f, 1); /* 1 */
      /* patch rows 4 and 5 (input rows 4·th + 3, + 4) are rows 0 and 1 of the next tile row
       * of the same image */
      float(*t)[(1024 / 4 + A2_V) / A2_V * A2_V];
      t = ph[0], ph[0] = ph[4], ph[4] = t;
      t = ph[1], ph[1] = ph[5], ph[5] = t;
      kept = th + 1 < j->nth;
    }
    for (int xi = 0; j->Tp > j->nrow * ntw && xi < 36; xi++) /* the padding tiles, if any */
      a2_move(v + (size_t)xi * xs + (size_t)j->nrow * ntw, NULL, (size_t)(j->Tp - j->nrow * ntw));
  }
}

/* Aᵀ M A of the 8 tiles of M at tile t (ξ rows ms apart; + bias bv and the epilogue, or
 * added to y), columns first: the outputs of tiles 2q and 2q + 1 (8 columns of each of
 * their 4 output rows) into columns col[q] .. col[q] + 7 of tile row rw[q] (NULL: none): the
 * 32 columns of one tile row, or 16 of each of 2 tile rows, or 8 of each of 4 (a2_rows_q) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wg4_out8(const a2_wg_job *j, const float *m, size_t ms, size_t t, float bv,
            const a2_orow *const rw[4], const int col[4]) {
  const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c8 = _mm256_set1_ps(8);
  const __m256 bias8 = _mm256_set1_ps(bv);
  __m256 e[4][6];
  for (int k = 0; k < 6; k++) {
    __m256 mv[6], r[4];
    for (int i = 0; i < 6; i++) mv[i] = _mm256_loadu_ps(m + (6 * i + k) * ms + t);
    A2_AT6(__m256, _mm256_add_ps, _mm256_sub_ps, V_FMA, c2, c4, c8, mv, r);
    for (int dy = 0; dy < 4; dy++) e[dy][k] = r[dy];
  }
  for (int dy = 0; dy < 4; dy++) {
    int in[4], any = 0;
    for (int q = 0; q < 4; q++) any |= in[q] = rw[q] && rw[q]->oh0 + dy < j->H;
    if (!any) continue;
    __m256 r[4];
    A2_AT6(__m256, _mm256_add_ps, _mm256_sub_ps, V_FMA, c2, c4, c8, e[dy], r);
    /* r[dx] holds column dx of the 8 tiles: transpose to tile-major order */
    const __m256 a = _mm256_unpacklo_ps(r[0], r[1]), b = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 c = _mm256_unpacklo_ps(r[2], r[3]), d = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t04 = _mm256_shuffle_ps(a, c, 0x44), t15 = _mm256_shuffle_ps(a, c, 0xEE);
    const __m256 t26 = _mm256_shuffle_ps(b, d, 0x44), t37 = _mm256_shuffle_ps(b, d, 0xEE);
    const __m256 o[4] = {_mm256_permute2f128_ps(t04, t15, 0x20), _mm256_permute2f128_ps(t26, t37, 0x20),
                         _mm256_permute2f128_ps(t04, t15, 0x31), _mm256_permute2f128_ps(t26, t37, 0x31)};
    for (int q = 0; q < 4; q++) {
      const a2_orow *row = rw[q];
      if (!in[q]) continue;
      const size_t at = (size_t)(row->oh0 + dy) * j->W + col[q];
      float *yo = row->y + at;
      _mm256_storeu_ps(yo, j->accum ? _mm256_add_ps(_mm256_loadu_ps(yo), o[q])
                                    : a2_ep8(j, _mm256_add_ps(o[q], bias8), row->b2, row->yr, at));
    }
  }
}

/* y = Aᵀ M A, columns of the tile first (over ξ rows), for output channels [c0, c1): 8 tiles
 * of a tile row at a time where their 32 columns lie inside the image (4 rows of 8 tiles x 4
 * outputs, transposed into place), on planes 8 or 16 wide the tiles of 4 or 2 tile rows,
 * the rest 4 or one tile at a time */
__attribute__((target("avx2,fma"))) static void a2_wg4_output(void *ctx, int64_t c0, int64_t c1) {
  const a2_wg_job *j = ctx;
  const int H = j->H, W = j->W, ntw = j->ntw;
  const size_t ms = (size_t)j->Co * j->Ts;
  const int G = W == 8 || W == 16 ? 8 / ntw : 0; /* tile rows a vector (a2_rows_q) */
  for (int64_t co = c0; co < c1; co++) {
    const float *m = j->M + (size_t)co * j->Ts;
    const float bv = j->bias ? j->bias[co] : 0.0f;
    int tr = 0;
    for (; G && tr < j->nrow; tr += G) { /* G tile rows at a time (NULL: past the band) */
      a2_orow rows[4];
      const a2_orow *rw[4];
      int col[4];
      for (int g = 0; g < G && tr + g < j->nrow; g++) rows[g] = a2_wg_orow(j, co, tr + g);
      for (int q = 0; q < 4; q++) {
        rw[q] = tr + q * G / 4 < j->nrow ? &rows[q * G / 4] : NULL;
        col[q] = G == 2 ? 8 * (q % 2) : 0;
      }
      a2_wg4_out8(j, m, ms, (size_t)tr * ntw, bv, rw, col);
    }
    for (; tr < j->nrow; tr++) {
      const a2_orow row = a2_wg_orow(j, co, tr);
      float *y = row.y;
      const float *yr = row.yr;
      const float b2 = row.b2;
      const int oh0 = row.oh0;
      int tw = 0;
      for (; tw + A2_V <= ntw && 4 * tw + 4 * A2_V <= W; tw += A2_V) {
        const a2_orow *const rw[4] = {&row, &row, &row, &row};
        const int col[4] = {4 * tw, 4 * tw + 8, 4 * tw + 16, 4 * tw + 24};
        a2_wg4_out8(j, m, ms, (size_t)tr * ntw + tw, bv, rw, col);
      }
      for (; tw + 4 <= ntw && 4 * tw + 16 <= W; tw += 4) { /* the same, 4 tiles */
        const __m128 q2 = _mm_set1_ps(2), q4 = _mm_set1_ps(4), q8 = _mm_set1_ps(8);
        const __m128 bias4 = _mm_set1_ps(bv);
        const size_t t = (size_t)tr * ntw + tw;
        __m128 e[4][6];
        for (int k = 0; k < 6; k++) {
          __m128 mv[6], r[4];
          for (int i = 0; i < 6; i++) mv[i] = _mm_loadu_ps(m + (6 * i + k) * ms + t);
          A2_AT6(__m128, _mm_add_ps, _mm_sub_ps, Q_FMA, q2, q4, q8, mv, r);
          for (int dy = 0; dy < 4; dy++) e[dy][k] = r[dy];
        }
        for (int dy = 0; dy < 4 && oh0 + dy < H; dy++) {
          __m128 r[4];
          A2_AT6(__m128, _mm_add_ps, _mm_sub_ps, Q_FMA, q2, q4, q8, e[dy], r);
          _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]); /* r[q]: the 4 outputs of tile tw + q */
          const size_t at = (size_t)(oh0 + dy) * W + 4 * tw;
          float *yo = y + at;
          for (int q = 0; q < 4; q++) {
            const __m128 v = _mm_add_ps(r[q], bias4);
            _mm_storeu_ps(yo + 4 * q, j->accum ? _mm_add_ps(_mm_loadu_ps(yo + 4 * q), r[q])
                                                : a2_ep4(j, v, b2, yr, at + 4 * q));
          }
        }
      }
      for (; tw < ntw; tw++) {
        const size_t t = (size_t)tr * ntw + tw;
        float e[4][6];
        for (int k = 0; k < 6; k++) {
          float mv[6], r[4];
          for (int i = 0; i < 6; i++) mv[i] = m[(6 * i + k) * ms + t];
          A2_AT6(float, S_ADD, S_SUB, S_FMA, 2.0f, 4.0f, 8.0f, mv, r);
          for (int dy = 0; dy < 4; dy++) e[dy][k] = r[dy];
        }
        for (int dy = 0; dy < 4 && oh0 + dy < H; dy++) {
          float r[4];
          A2_AT6(float, S_ADD, S_SUB, S_FMA, 2.0f, 4.0f, 8.0f, e[dy], r);
          for (int dx = 0; dx < 4 && 4 * tw + dx < W; dx++) {
            const size_t at = (size_t)(oh0 + dy) * W + 4 * tw + dx;
            float *o = y + at;
            *o = j->accum ? *o + r[dx] : a2_ep1(j, r[dx] + bv, b2, yr, at);
          }
        }
      }
    }
  }
}

/* 4x4 tiles per image from which F(4x4, 3x3) is taken; from A2_WG4_WIDE_TILES with at least
 * A2_WG4_WIDE_C channels in and out, or A2_WG4_W16_C on planes 16 wide (whose transforms take
 * two tile rows a vector: the 16x16 planes of NCSN++; sde_ops_wino_avx2_pays) */
#define A2_WG4_MIN_TILES 64
#define A2_WG4_WIDE_TILES 16
#define A2_WG4_WIDE_C 128
#define A2_WG4_W16_C 32
/* and on planes 8 wide (4 tile rows a vector) where the batch may choose (by_batch) and has
 * A2_WG4_W8_B images or more, from A2_WG4_W8_C channels: at batch 1 the vector holds 4
 * tiles, and F(4x4) took 1.1-1.6x the time of the direct conv where F(2x2) took 0.6-0.8x */
#define A2_WG4_W8_B 8
#define A2_WG4_W8_C 32

/* planes 8 wide, taken by F(4x4, 3x3) for the batch */
static int a2_wg4_w8(const sde_nn_conv2d_shape *s) {
  const int cmin = s->C_in < s->C_out ? s->C_in : s->C_out;
  return s->by_batch && s->W == 8 && s->H >= 5 && s->B >= A2_WG4_W8_B && cmin >= A2_WG4_W8_C;
}

/* the image shape of s has enough 4x4 tiles for F(4x4, 3x3) */
static int a2_wg4_shape(const sde_nn_conv2d_shape *s) {
  const int64_t tiles = (int64_t)((s->H + 3) / 4) * ((s->W + 3) / 4);
  const int cmin = s->C_in < s->C_out ? s->C_in : s->C_out;
  return tiles >= A2_WG4_MIN_TILES ||
         (tiles >= A2_WG4_WIDE_TILES &&
          (cmin >= A2_WG4_WIDE_C || (s->W == 16 && cmin >= A2_WG4_W16_C))) ||
         a2_wg4_w8(s);
}

/* SDE_NN_WINOGRAD_TILE=2 or 4 (read per call, for tests and benchmarks) picks F(2x2, 3x3) or
 * F(4x4, 3x3) on every shape; otherwise F(4x4, 3x3) on the shapes of a2_wg4_shape: below
 * them, its per-call weight transform (36/16 of F(2x2)'s) outweighs the products at batch 1.
 * The choice depends on the image shape alone, so that a sample gives the same bits alone
 * and in a batch, unless the shape is by_batch (a2_wg4_w8). */
static int a2_wg_tile(const sde_nn_conv2d_shape *s) {
  const char *e = getenv("SDE_NN_WINOGRAD_TILE");
  if (e && (*e == '2' || *e == '4')) return *e - '0';
  return a2_wg4_shape(s) ? 4 : 2;
}

/* Winograd against the direct conv, 2 threads, Zen 3, one conv at batch 1, 8 and 32, with
 * threads taking bands of their own (best of 9-30, other work paused; docs/BENCHMARKS.md):
 * F(4x4) at 32x32 0.72/0.53/0.75x the time at 16 channels (batch 32/8/1), 0.51/0.50/0.92x at
 * 32, 0.44-0.79x from 64; F(2x2) at 16x16 0.68/0.79/0.86x at 32 channels, 0.60-0.73x at
 * 64-128 (1.03x at 128, batch 1), 0.87-1.12x at 16. With two tile rows a vector in its
 * transforms, F(4x4) at 16x16 beats F(2x2) at every batch from 32 channels: per call 0.42x
 * at 64 channels batch 32 (F(2x2) 0.61x), 0.43x at batch 8 (0.64x), 0.63x at batch 1 (0.70x),
 * 32 channels batch 1 0.70x (0.82-0.86x), 128 channels batch 1 0.59x (0.70x); prepared, at
 * batch 1, 0.51x at 32 channels, 0.44x at 64, 0.39x at 128 (F(2x2) 0.70-0.76x); 16 channels
 * 1.34x at batch 1. On planes 7-14 wide (rows of 4 tiles, 128-bit transforms) F(2x2) at 8x8
 * takes 0.77x at batch 32 (64 and 128 channels), 0.64-0.88x at 256 channels, but per call
 * 1.07-1.48x at batch 1-8 from 64 to 128 channels (the weight transform outweighs the
 * products); with the weights prepared once, as a frozen network keeps them, 0.62-0.90x at
 * batch 1 and 8 from 64 channels (32 channels 1.2-1.3x); 12x12 at 64 channels 0.59-0.60x.
 * With two tile rows a vector on planes 7-8 wide, prepared at 8x8: 64 channels 0.75-0.87x
 * at batch 1, 0.67-0.75x at batch 8, 0.61-0.62x at batch 32, 128 channels 0.59x and 256
 * 0.54-0.55x at batch 1; 32 channels still 1.06x at batch 1 (0.96x at batch 8).
 * F(4x4) at 8x8 (four tile rows a vector) takes 0.45x at 64 channels batch 32 (F(2x2) 0.75x),
 * 0.59x at batch 8 (0.90x), 0.65x at 32 channels batch 32 (1.01x), but at batch 1, where a
 * vector holds 4 tiles, prepared 1.13-1.6x (F(2x2) 0.62-0.83x): there only where the batch
 * may choose (a2_wg4_w8). So: F(4x4) shapes (from 64 4x4 tiles, or 16 at 128 channels or on
 * planes 16 wide from 32) from 16 channels in and out, F(2x2) shapes from 32 (planes ≥ 15
 * wide, ≥ 64 tiles of 2x2) or 64 (planes 7-14 wide). */
int sde_ops_wino_avx2_pays(const sde_nn_conv2d_shape *s) {
  if (!sde_ops_wino_avx2_usable(s)) return 0;
  const int cmin = s->C_in < s->C_out ? s->C_in : s->C_out, ntw = (s->W + 1) / 2;
  if (a2_wg4_shape(s)) return cmin >= 16;
  if (ntw >= 4 && ntw < 8) return cmin >= 64 && s->H >= 7;
  return cmin >= 32 && ntw >= 8 && (int64_t)((s->H + 1) / 2) * ntw >= 64;
}

/* The bands of shape s for tile side m: *rows tile rows each (about `band` tiles, at least
 * one row); returns the largest band's row stride (the V and M sizes per channel and
 * transformed position) */
static size_t a2_wg_band_of(const sde_nn_conv2d_shape *s, int m, int band, int *rows) {
  const int ntw = (s->W + m - 1) / m;
  const int64_t all = (int64_t)s->B * ((s->H + m - 1) / m); /* tile rows of the batch */
  *rows = band / ntw > 1 ? band / ntw : 1;
  return a2_wg_stride(ceil_div((int)(*rows < all ? *rows : all) * ntw, A2_V) * A2_V);
}

/* the forward's bands: about A2_WG_BAND or A2_WG4_BAND tiles */
static size_t a2_wg_band(const sde_nn_conv2d_shape *s, int m, int *rows) {
  return a2_wg_band_of(s, m, m == 4 ? A2_WG4_BAND : A2_WG_BAND, rows);
}

int sde_ops_wino_avx2_usable(const sde_nn_conv2d_shape *s) {
  return avx2_cpu_ok() && s->stride == 1 && s->KH == 3 && s->KW == 3 && s->pad_top == 1 &&
         s->pad_bottom == 1 && s->pad_left == 1 && s->pad_right == 1 && s->W <= 1024;
}

/* Bands per thread: with A2_WG_SLOTS threads or fewer and enough bands, each thread
 * transforms, multiplies and transforms back bands of its own (a2_wg_slot), with its own V
 * and M, sized to stay in its L2 (A2_WG_SLOT_BYTES, at least A2_WG_SLOT_MIN tiles). Split
 * by channels instead, every phase read what the other core had just written, and two
 * threads were 0.9-1.65x as fast as one where the direct conv is 1.6-1.8x (16 and 32
 * channels, 32x32 and 16x16, batch 32, Zen 3). Not where even A2_WG_SLOT_MIN tiles overflow L2 (A2_WG_SLOT_MAX:
 * C_in + C_out above 151 for F(4x4), above 341 for F(2x2)): NCSN++ CIFAR-10 at batch 8 was
 * 1.02-1.18x slower with them. Which thread takes which band changes no bit. */
#define A2_WG_SLOTS 4
#define A2_WG_SLOT_BYTES (384 * 1024)
#define A2_WG_SLOT_MIN 48
#define A2_WG_SLOT_MAX (1024 * 1024) /* A2_WG_SLOT_MIN tiles' V and M, at most */

/* bytes of V and M per tile of shape s for tile side m */
static size_t a2_wg_tile_bytes(const sde_nn_conv2d_shape *s, int m) {
  return (size_t)(m + 2) * (m + 2) * (s->C_in + s->C_out) * sizeof(float);
}

/* a thread's band of shape s for tile side m (rows, stride as a2_wg_band_of) */
static size_t a2_wg_slot_band(const sde_nn_conv2d_shape *s, int m, int *rows) {
  const int band = (int)(A2_WG_SLOT_BYTES / a2_wg_tile_bytes(s, m));
  return a2_wg_band_of(s, m, band > A2_WG_SLOT_MIN ? band : A2_WG_SLOT_MIN, rows);
}

/* bands of `rows` tile rows in the batch of s */
static int a2_wg_nband(const sde_nn_conv2d_shape *s, int m, int rows) {
  return ceil_div(s->B * ((s->H + m - 1) / m), rows);
}

/* the channels of s are few enough for bands per thread (A2_WG_SLOT_MAX) */
static int a2_wg_slot_shape(const sde_nn_conv2d_shape *s, int m) {
  return a2_wg_tile_bytes(s, m) * A2_WG_SLOT_MIN <= A2_WG_SLOT_MAX;
}

/* threads that take bands of their own for s, or 0: split each band by channels */
static int a2_wg_slots(const sde_nn_conv2d_shape *s, int m) {
  const int nt = sde_parallel_threads();
  if (!a2_wg_slot_shape(s, m)) return 0;
  int rows;
  a2_wg_slot_band(s, m, &rows);
  return nt >= 2 && nt <= A2_WG_SLOTS && a2_wg_nband(s, m, rows) >= 2 * nt ? nt : 0;
}

/* the scratch for tile side m: U, then V and M of the largest band, or A2_WG_SLOTS threads'
 * V and M of theirs, whichever is larger */
static size_t a2_wg_scratch(const sde_nn_conv2d_shape *s, int m) {
  const int nxi = (m + 2) * (m + 2);
  int rows;
  const size_t Ts = a2_wg_band(s, m, &rows);
  const size_t Tt = a2_wg_slot_shape(s, m) ? a2_wg_slot_band(s, m, &rows) : 0;
  const size_t vm = (size_t)nxi * (s->C_in + s->C_out);
  return (size_t)nxi * ceil_div(s->C_out, A2_R) * A2_R * s->C_in + 8 +
         vm * (Ts > A2_WG_SLOTS * Tt ? Ts : A2_WG_SLOTS * Tt);
}

/* either tile size (the choice may change between sizing and running) */
size_t sde_ops_wino_avx2_scratch_floats(const sde_nn_conv2d_shape *s) {
  const size_t a = a2_wg_scratch(s, 2), b = a2_wg_scratch(s, 4);
  return a > b ? a : b;
}

/* the band from tile row j->th0: at most `rows` of the batch's `all` */
static void a2_wg_band_at(a2_wg_job *j, int rows, int all) {
  j->nrow = all - j->th0 < rows ? all - j->th0 : rows;
  j->Tp = ceil_div(j->nrow * j->ntw, A2_V) * A2_V;
  j->Ts = a2_wg_stride(j->Tp);
  j->ntile = ceil_div(j->Tp / A2_V, A2_J);
}

typedef struct {
  const a2_wg_job *j;
  int rows, all;
  size_t vm;       /* floats of one thread's V and M (j's V and M are thread 0's) */
  atomic_int next; /* the next band to take */
} a2_wg_slots_job;

/* threads [s0, s1): each takes bands in turn until none is left, in V and M of its own */
static void a2_wg_slot(void *ctx, int64_t s0, int64_t s1) {
  a2_wg_slots_job *sj = ctx;
  for (int64_t slot = s0; slot < s1; slot++) {
    a2_wg_job b = *sj->j;
    b.V = sj->j->V + (size_t)slot * sj->vm;
    b.M = b.V + (sj->j->M - sj->j->V);
    for (;;) {
      const int k = atomic_fetch_add(&sj->next, 1);
      if ((int64_t)k * sj->rows >= sj->all) break;
      b.th0 = k * sj->rows;
      a2_wg_band_at(&b, sj->rows, sj->all);
      (b.m == 4 ? a2_wg4_input : a2_wg_input)(&b, 0, b.Ci);
      a2_wg_products(&b, 0, (int64_t)b.nxi * b.ntile);
      (b.m == 4 ? a2_wg4_output : a2_wg_output)(&b, 0, b.Co);
    }
  }
}

/* U for the tile side this shape takes (sde_ops_wino_avx2_prep_floats, 32-byte aligned);
 * returns the tile side, which a later call checks */
size_t sde_ops_wino_avx2_prep_floats(const sde_nn_conv2d_shape *s) {
  const int m = a2_wg_tile(s);
  return (size_t)(m + 2) * (m + 2) * ceil_div(s->C_out, A2_R) * A2_R * s->C_in;
}

int sde_ops_wino_avx2_prepare(float *U, const float *w, const sde_nn_conv2d_shape *s) {
  const int m = a2_wg_tile(s);
  a2_wg_job j = {.w = w, .U = U, .Ci = s->C_in, .Co = s->C_out, .m = m, .nxi = (m + 2) * (m + 2),
                 .ncb = ceil_div(s->C_out, A2_R)};
  sde_parallel_for(j.ncb, 1, m == 4 ? a2_wg_weights4 : a2_wg_weights2, &j);
  return m;
}

/* out = conv3x3(inp, pad 1) + bias, or out += conv3x3(inp, pad 1) (accum, bias unused), the
 * weights [C_out][C_in][3][3], transformed here or before (U made for tile side U_m:
 * sde_ops_wino_avx2_prepare; NULL: here), then ep's passes (NULL: none; not with accum);
 * scratch: sde_ops_wino_avx2_scratch_floats(s) */
int sde_ops_wino_avx2(float *out, const float *inp, const float *w, const float *bias,
                      const sde_nn_conv2d_shape *s, float *scratch, int accum,
                      const float *U, int U_m, const sde_ops_conv_epilogue *ep) {
  const int m = a2_wg_tile(s);
  if (U_m != m) U = NULL; /* made for the other tile size */
  a2_wg_job j = {.out = out, .inp = inp, .w = w, .bias = accum ? NULL : bias, .Ci = s->C_in,
                 .Co = s->C_out, .H = s->H, .W = s->W, .accum = accum, .m = m,
                 .nxi = (m + 2) * (m + 2)};
  if (ep && !accum) j.bias2 = ep->bias2, j.res = ep->residual, j.div = ep->div;
  j.nth = (s->H + m - 1) / m;
  j.ntw = (s->W + m - 1) / m;
  j.ncb = ceil_div(s->C_out, A2_R);
  j.U = scratch + (8 - ((uintptr_t)scratch / sizeof(float)) % 8) % 8;
  const int nslot = a2_wg_slots(s, m), all = s->B * j.nth; /* tile rows of the batch */
  int rows;
  const size_t Tmax = nslot ? a2_wg_slot_band(s, m, &rows) : a2_wg_band(s, m, &rows);
  j.V = j.U + (size_t)j.nxi * j.ncb * A2_R * s->C_in;
  j.M = j.V + (size_t)j.nxi * s->C_in * Tmax;
  if (U) j.U = (float *)U; /* (read only from here on) */
  else sde_parallel_for(j.ncb, 1, m == 4 ? a2_wg_weights4 : a2_wg_weights2, &j);
  if (nslot) {
    a2_wg_slots_job sj = {.j = &j, .rows = rows, .all = all,
                          .vm = (size_t)j.nxi * (s->C_in + s->C_out) * Tmax};
    atomic_init(&sj.next, 0);
    sde_parallel_for(nslot, 1, a2_wg_slot, &sj);
    return SDE_OK;
  }
  for (j.th0 = 0; j.th0 < all; j.th0 += rows) {
    a2_wg_band_at(&j, rows, all);
    sde_parallel_for(s->C_in, 1, m == 4 ? a2_wg4_input : a2_wg_input, &j);
    sde_parallel_for_dynamic((int64_t)j.nxi * j.ntile, 1, a2_wg_products, &j);
    sde_parallel_for(s->C_out, 1, m == 4 ? a2_wg4_output : a2_wg_output, &j);
  }
  return SDE_OK;
}

/* ---- Winograd weight gradient --------------------------------------------------------------
 * The forward y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is exact and linear in g, so its adjoint is the
 * weight gradient: for the output gradient dy of each tile,
 *   dg = Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B)] G.
 * Per band of tiles (as the forward): V = Bᵀ d B by the forward's input transform,
 * D[ξ][co][t] = (A dy Aᵀ)[ξ] (a2_wgdw_dout; dy zero outside the image), and per ξ the
 * products P[ξ][ci][co] += Σ_t D[ξ][co][t]·V[ξ][ci][t] (a2_wgdw_products: 8-lane float32
 * sums over the band's tiles, then into float64 P); at the end dg += Gᵀ P G in float64,
 * rounded once. A weight-gradient element is summed by one task in a fixed order: the bits do
 * not depend on the thread count. F(4x4) needs 2.25 multiplications per input and output
 * channel and output position (the direct kernel 9), F(2x2) 4. */
typedef struct {
  a2_wg_job w; /* the bands, V, and D in w.M ([ξ][Co rounded up to A2_R][Ts]) */
  const float *dout;
  float *dweight;
  double *P; /* [ξ][Ci][Co4] */
  int Co4;
} a2_wgdw_job;

/* A·(column of m values) for F(2x2): (y0, y0 + y1, y0 − y1, −y1); F(4x4): (y0, (y0 + y2) ±
 * (y1 + y3), (y0 + 4y2) ± (2y1 + 8y3), y3) — the transposes of A2_AT6's Aᵀ, exact in
 * powers of two but for the sums */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wgdw_a(int m, const __m256 *y, __m256 *o) {
  if (m == 2) {
    o[0] = y[0], o[1] = _mm256_add_ps(y[0], y[1]), o[2] = _mm256_sub_ps(y[0], y[1]);
    o[3] = _mm256_sub_ps(_mm256_setzero_ps(), y[1]);
    return;
  }
  const __m256 p = _mm256_add_ps(y[0], y[2]), q = _mm256_add_ps(y[1], y[3]);
  const __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(4), y[2], y[0]);
  const __m256 t = _mm256_fmadd_ps(_mm256_set1_ps(8), y[3], _mm256_add_ps(y[1], y[1]));
  o[0] = y[0], o[1] = _mm256_add_ps(p, q), o[2] = _mm256_sub_ps(p, q);
  o[3] = _mm256_add_ps(r, t), o[4] = _mm256_sub_ps(r, t), o[5] = y[3];
}

/* (A dy Aᵀ) of 8 tiles from the column phases c[i][k] (row i, column k) of their m x m
 * values, the first n of them stored at dt (ξ rows ds apart) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wgdw_dout8(const int m, __m256 c[4][4], float *dt, size_t ds, int n) {
  const int P = m + 2;
  __m256 e[6][4];
  for (int k = 0; k < m; k++) { /* column k of the tiles: A dy */
    __m256 col[4], o[6];
    for (int i = 0; i < m; i++) col[i] = c[i][k];
    a2_wgdw_a(m, col, o);
    for (int a = 0; a < P; a++) e[a][k] = o[a];
  }
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int a = 0; a < P; a++) { /* (A dy) Aᵀ: row a */
    __m256 o[6];
    a2_wgdw_a(m, e[a], o);
    for (int b = 0; b < P; b++) /* (a masked store is slow on AMD: only for the tail) */
      if (n == A2_V) _mm256_storeu_ps(dt + (P * a + b) * ds, o[b]);
      else if (n == 4) _mm_storeu_ps(dt + (P * a + b) * ds, _mm256_castps256_ps128(o[b]));
      else _mm256_maskstore_ps(dt + (P * a + b) * ds, mask, o[b]);
  }
}

/* D of the band for output channel co of Co4 (channels past C_out: zeros), 8 tiles of a
 * tile row at a time (of 2 tile rows on planes 7-8 wide, and for m = 4 of 4 on planes 5-8
 * and of 2 on planes 13-16 wide: a2_group_rows): the
 * tile row's m rows of dy (zero past the image) are copied into zero-padded rows, and each 8
 * tiles' m x m values split into column phases (lanes = tiles: a 4x8 transpose for m = 4,
 * even/odd for m = 2) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wgdw_dout_m(const a2_wgdw_job *jj, int co, const int m) {
  const a2_wg_job *j = &jj->w;
  const int H = j->H, W = j->W, ntw = j->ntw;
  const size_t ds = (size_t)jj->Co4 * j->Ts;
  float *d = j->M + (size_t)co * j->Ts;
  if (co >= j->Co) {
    for (int xi = 0; xi < j->nxi; xi++) memset(d + xi * ds, 0, (size_t)j->Tp * sizeof(float));
    return;
  }
  int tr = 0;
  const int G = ntw == 4 || (m == 4 && ntw == 2) ? 8 / ntw : 0; /* a2_group_rows */
  if (G) {
    float pad[4][6][16], zero[16] = {0};
    for (; tr < j->nrow; tr += G) {
      const float *rows[4][6];
      a2_group_rows(j, jj->dout, j->Co, co, tr, G, 0, m, rows, pad, zero);
      __m256 c[4][4];
      for (int i = 0; i < m; i++) {
        if (m == 2) { /* even and odd columns of the two rows */
          a2_evod2(rows[0][i], rows[1][i], &c[i][0], &c[i][1]);
          continue;
        }
        const float *q[4];
        a2_rows_q(G, rows, i, q);
        a2_phases4_q(q, c[i]);
      }
      a2_wgdw_dout8(m, c, d + (size_t)tr * ntw, ds, A2_V);
    }
  }
  const int nw = (ntw + A2_V - 1) / A2_V * A2_V * m; /* padded row length */
  float rows[4][1024 + 4 * A2_V];
  const float *src[4]; /* row i of the tile row: dy itself where it needs no padding */
  for (; tr < j->nrow; tr++) {
    const int img = (j->th0 + tr) / j->nth, th = (j->th0 + tr) % j->nth;
    const float *y = jj->dout + ((size_t)img * j->Co + co) * H * W;
    for (int i = 0; i < m; i++) {
      const int oh = m * th + i, n = oh < H ? W : 0;
      src[i] = rows[i];
      if (n == nw) {
        src[i] = y + (size_t)oh * W;
        continue;
      }
      a2_move(rows[i], y + (size_t)oh * W, (size_t)n);
      a2_move(rows[i] + n, NULL, (size_t)(nw - n));
    }
    float *dt = d + (size_t)tr * ntw;
    for (int tw = 0; tw < ntw; tw += A2_V) {
      __m256 c[4][4]; /* c[i][k]: row i, column k of the 8 tiles */
      for (int i = 0; i < m; i++) {
        const float *r = src[i] + m * tw;
        if (m == 2) {
          const __m256 q0 = _mm256_loadu_ps(r), q1 = _mm256_loadu_ps(r + 8);
          /* shuffles give tiles 0 1 4 5 2 3 6 7; the 64-bit permute puts them in order */
          c[i][0] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0x88)), 0xD8));
          c[i][1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0xDD)), 0xD8));
          continue;
        }
        a2_phases4(r, c[i]);
      }
      a2_wgdw_dout8(m, c, dt + tw, ds, ntw - tw < A2_V ? ntw - tw : A2_V);
    }
  }
  for (int xi = 0; j->Tp > j->nrow * ntw && xi < j->nxi; xi++) /* the padding tiles, if any */
    a2_move(d + xi * ds + (size_t)j->nrow * ntw, NULL, (size_t)(j->Tp - j->nrow * ntw));
}

__attribute__((target("avx2,fma"))) static void a2_wgdw_dout2(const a2_wgdw_job *jj, int co) {
  a2_wgdw_dout_m(jj, co, 2);
}
__attribute__((target("avx2,fma"))) static void a2_wgdw_dout4(const a2_wgdw_job *jj, int co) {
  a2_wgdw_dout_m(jj, co, 4);
}

/* transforms of the band: tasks [0, C_in) V (the forward's input transform), then D */
static void a2_wgdw_transforms(void *ctx, int64_t c0, int64_t c1) {
  const a2_wgdw_job *jj = ctx;
  for (int64_t c = c0; c < c1; c++) {
    if (c < jj->w.Ci) (jj->w.m == 4 ? a2_wg4_input : a2_wg_input)((void *)&jj->w, c, c + 1);
    else (jj->w.m == 4 ? a2_wgdw_dout4 : a2_wgdw_dout2)(jj, (int)(c - jj->w.Ci));
  }
}

#define A2_DWW_C 3 /* input channels per register tile (A2_R output channels x 3: 12 sums) */

/* P[c][r] += Σ over nvec vectors of D rows d + r·ts times V rows v + c·ts (P: float64,
 * row stride ps), each 8-lane sum added across in a fixed order ((l0 + l1) + (l2 + l3)) +
 * ((l4 + l5) + (l6 + l7)), 4 output channels at a time (three hadds and one add) */
__attribute__((target("avx2,fma"), always_inline)) static inline void
a2_wgdw_kernel(double *P, size_t ps, const float *d, const float *v, size_t ts, int nvec,
               const int NC) {
  __m256 acc[A2_R][A2_DWW_C];
#pragma GCC unroll 4
  for (int r = 0; r < A2_R; r++)
#pragma GCC unroll 3
    for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_ps();
  for (int t = 0; t < nvec * A2_V; t += A2_V) {
    __m256 vv[A2_DWW_C];
#pragma GCC unroll 3
    for (int c = 0; c < NC; c++) vv[c] = _mm256_loadu_ps(v + c * ts + t);
#pragma GCC unroll 4
    for (int r = 0; r < A2_R; r++) {
      const __m256 dv = _mm256_loadu_ps(d + r * ts + t);
#pragma GCC unroll 3
      for (int c = 0; c < NC; c++) acc[r][c] = _mm256_fmadd_ps(dv, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 3
  for (int c = 0; c < NC; c++) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0][c], acc[1][c]),
                                    _mm256_hadd_ps(acc[2][c], acc[3][c]));
    const __m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    double *p = P + c * ps;
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), _mm256_cvtps_pd(sum)));
  }
}

typedef void (*a2_wgdw_fn)(double *, size_t, const float *, const float *, size_t, int);
#define A2_WGDW_TILE(NC)                                                                        \
  __attribute__((target("avx2,fma"))) static void a2_wgdw_tile##NC(                             \
      double *P, size_t ps, const float *d, const float *v, size_t ts, int nvec) {              \
    a2_wgdw_kernel(P, ps, d, v, ts, nvec, NC);                                                  \
  }
A2_WGDW_TILE(1)
A2_WGDW_TILE(2)
A2_WGDW_TILE(3)

/* products, tasks: ξ in [t0, t1), every block of A2_R output channels in turn over all input
 * channels, so that one core reads V[ξ] from L3 and then from its L2 (split by output-channel
 * block as well, both cores fetched every ξ: F(4x4) 32 channels 32x32 B32 0.83-0.93x the
 * time, 2 threads, Zen 3) */
static void a2_wgdw_products(void *ctx, int64_t t0, int64_t t1) {
  static const a2_wgdw_fn fns[A2_DWW_C] = {a2_wgdw_tile1, a2_wgdw_tile2, a2_wgdw_tile3};
  const a2_wgdw_job *jj = ctx;
  const a2_wg_job *j = &jj->w;
  const int nb = jj->Co4 / A2_R, Ci = j->Ci;
  for (int64_t xi = t0; xi < t1; xi++)
    for (int co0 = 0; co0 < nb * A2_R; co0 += A2_R) {
      const float *d = j->M + ((size_t)xi * jj->Co4 + co0) * j->Ts;
      for (int ci0 = 0; ci0 < Ci; ci0 += A2_DWW_C) {
        const int nc = Ci - ci0 < A2_DWW_C ? Ci - ci0 : A2_DWW_C;
        fns[nc - 1](jj->P + ((size_t)xi * Ci + ci0) * jj->Co4 + co0, jj->Co4, d,
                    j->V + ((size_t)xi * Ci + ci0) * j->Ts, j->Ts, j->Tp / A2_V);
      }
    }
}

/* dweight[co] += Gᵀ P G in float64, output channels in blocks of A2_R [b0, b1): the block's
 * channels are P's 4 contiguous doubles, one vector (scalar, each channel's 36 values sat a
 * cache line apart and every line was read by 4 tasks) */
__attribute__((target("avx2,fma"))) static void a2_wgdw_finish(void *ctx, int64_t b0, int64_t b1) {
  const a2_wgdw_job *jj = ctx;
  const int m = jj->w.m, P = m + 2, Ci = jj->w.Ci, Co = jj->w.Co;
  __m256d G[6][3]; /* G[a][k] from a2_wg_g on the unit vectors */
  for (int k = 0; k < 3; k++) {
    __m256d o[6], e[3];
    for (int i = 0; i < 3; i++) e[i] = _mm256_set1_pd(i == k ? 1.0 : 0.0);
    a2_wg_g(m, e[0], e[1], e[2], o);
    for (int a = 0; a < P; a++) G[a][k] = _mm256_set1_pd(_mm256_cvtsd_f64(o[a]));
  }
  const size_t ps = (size_t)Ci * jj->Co4; /* ξ's stride */
  for (int64_t cb = b0; cb < b1; cb++) {
    const int co0 = (int)cb * A2_R, nr = Co - co0 < A2_R ? Co - co0 : A2_R;
    for (int ci = 0; ci < Ci; ci++) {
      const double *p = jj->P + (size_t)ci * jj->Co4 + co0;
      __m256d t[6][3]; /* P G, products and sums in the scalar order from 0 */
      for (int a = 0; a < P; a++)
        for (int kw = 0; kw < 3; kw++) {
          __m256d acc = _mm256_setzero_pd();
          for (int b = 0; b < P; b++)
            acc = _mm256_add_pd(acc,
                                _mm256_mul_pd(_mm256_loadu_pd(p + (a * P + b) * ps), G[b][kw]));
          t[a][kw] = acc;
        }
      for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
          __m256d acc = _mm256_setzero_pd();
          for (int a = 0; a < P; a++) acc = _mm256_add_pd(acc, _mm256_mul_pd(G[a][kh], t[a][kw]));
          double d[A2_R];
          _mm256_storeu_pd(d, acc);
          for (int r = 0; r < nr; r++) {
            float *dw = jj->dweight + ((size_t)(co0 + r) * Ci + ci) * 9 + kh * 3 + kw;
            *dw = (float)((double)*dw + d[r]);
          }
        }
    }
  }
}

/* Where the Winograd weight gradient beats the direct one (bench_ops --wino-dweight, Zen 3,
 * 2 threads; docs/BENCHMARKS.md), with the forward's tile size and the bands of
 * sde_ops_wino_avx2_dweight:
 *  F(4x4) with at least 512 tiles in the batch, from 16 channels: 32x32 at batch 8-32, 16
 *  channels 0.70-0.84x the time, 32 channels 0.54-0.57x, 64 channels at batch 32 0.46-0.47x
 *  (128: 0.40-0.73x with the forward's bands); not with few tiles (1.5-2.2x at batch 1,
 *  32x32: the 36·C_in·C_out sums per band outweigh the products) or 8 channels (1.1x).
 *  F(2x2) on planes 16 or more wide, from 64 channels with at least 1024 tiles of 2x2 (64
 *  channels 16x16 at batch 16: 0.81-0.86x; batch 8 0.95-1.0) or from 32 with 2048 (32
 *  channels at batch 32: 0.82-0.91x; batch 16 0.93-0.95, batch 8 1.1); 16 channels 1.1-1.2x.
 *  F(2x2) on planes 7-14 wide (rows of 4 tiles) from 64 channels with at least 256 tiles:
 *  8x8 at 64 channels batch 16 0.87x, batch 32 0.59x, 128 channels batch 32 0.69x; batch 8
 *  (128 tiles) 1.08-1.11x at 64-256 channels; 32 channels at batch 32 1.07x.
 *  F(4x4) on planes 16 wide (two tile rows a vector) from 128 tiles of 4x4 (steady state,
 *  repeated calls): 16x16 at 32 channels batch 16 0.5-0.65x the direct time (F(2x2)
 *  0.65-0.77x), 64 channels batch 8 0.63-0.65x (F(2x2) 0.67-0.71x), batch 16 0.44x,
 *  batch 4 0.86x (F(2x2) 0.82-0.95x), 128 channels batch 4 0.83x (F(2x2) 0.78x).
 *  F(4x4) on planes 8 wide by batch (four tile rows a vector) from batch 16: 32 channels
 *  0.86x at batch 16 (batch 8 1.16x), 64 channels 0.70-0.74x at batch 16, 0.53x at 32. */
int sde_ops_wino_avx2_dweight_pays(const sde_nn_conv2d_shape *s) {
  const int cmin = s->C_in < s->C_out ? s->C_in : s->C_out;
  if (!sde_ops_wino_avx2_usable(s) || cmin < 16) return 0;
  const int64_t tiles4 = (int64_t)s->B * ((s->H + 3) / 4) * ((s->W + 3) / 4);
  if (a2_wg4_w8(s)) return s->B >= 2 * A2_WG4_W8_B;
  if (a2_wg4_shape(s)) return tiles4 >= (s->W == 16 ? 128 : 512);
  const int64_t tiles = (int64_t)s->B * ((s->H + 1) / 2) * ((s->W + 1) / 2);
  if (s->W >= 7 && s->W < 15) return cmin >= 64 && s->H >= 7 && tiles >= 256;
  return s->W >= 15 && ((cmin >= 64 && tiles >= 1024) || (cmin >= 32 && tiles >= 2048));
}

/* dweight += the weight gradient of a 3x3 stride-1 pad-1 conv (sde_ops_wino_avx2_usable) by
 * Winograd, F(4x4) or F(2x2) as the forward takes. Its memory (P, then V and D of the
 * largest band) is its own, not the caller's scratch: training alone needs it, and counted
 * in sde_nn_conv2d_scratch_floats it would grow every sampler's workspace (by 21 MB for
 * the 256-channel layers of NCSN++). */
int sde_ops_wino_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s) {
  const int m = a2_wg_tile(s);
  a2_wgdw_job jj = {.dout = dout, .dweight = dweight, .Co4 = ceil_div(s->C_out, A2_R) * A2_R};
  a2_wg_job *j = &jj.w;
  *j = (a2_wg_job){.inp = inp, .Ci = s->C_in, .Co = s->C_out, .H = s->H, .W = s->W, .m = m,
                   .nxi = (m + 2) * (m + 2), .nth = (s->H + m - 1) / m, .ntw = (s->W + m - 1) / m};
  /* Bands as large as keep V and D of one ξ within 512 KB (L2) and all of them within 8 MB:
   * each band adds its products into the float64 P (read and written whole) and ends in two
   * barriers, and the ξ at a time is what has to stay in L2. Zen 3, B = 32 (bench_ops
   * --wino-dweight): F(2x2) 64 channels 16x16 0.84x the time of 256-tile bands (1024 tiles),
   * F(4x4) 32 channels 32x32 0.85-0.9x of 192 (910), 64 channels 0.95x (455). */
  const size_t per_tile = (size_t)(s->C_in + jj.Co4) * sizeof(float); /* V and D, one ξ */
  const size_t by_l2 = ((size_t)512 << 10) / per_tile, by_all = ((size_t)8 << 20) / (j->nxi * per_tile);
  const size_t band = by_l2 < by_all ? by_l2 : by_all, dflt = m == 4 ? A2_WG4_BAND : A2_WG_BAND;
  int rows;
  const size_t Tmax = a2_wg_band_of(s, m, (int)(band > dflt ? band : dflt), &rows);
  const int all = s->B * j->nth;
  const size_t np = (size_t)j->nxi * jj.Co4 * s->C_in;
  /* sde_malloc's 64-byte boundary, and np a multiple of 4 doubles (Co4), keep V and D on
   * 32 bytes: a block 16 bytes off split every other 8-float load across two cache lines
   * (measured: 1.18x the time) */
  double *mem = sde_malloc(np * sizeof(double) +
                           (size_t)j->nxi * (s->C_in + jj.Co4) * Tmax * sizeof(float));
  if (!mem) return sde_fail(SDE_ENOMEM, "conv2d: out of memory (Winograd weight gradient)");
  jj.P = mem;
  memset(jj.P, 0, np * sizeof(double));
  j->V = (float *)(mem + np);
  j->M = j->V + (size_t)j->nxi * s->C_in * Tmax;
  for (j->th0 = 0; j->th0 < all; j->th0 += rows) {
    j->nrow = all - j->th0 < rows ? all - j->th0 : rows;
    j->Tp = ceil_div(j->nrow * j->ntw, A2_V) * A2_V;
    j->Ts = a2_wg_stride(j->Tp);
    /* dynamic: the x and dy transforms differ in cost, and a static split gives each
     * thread one kind */
    sde_parallel_for_dynamic(s->C_in + jj.Co4, 1, a2_wgdw_transforms, &jj);
    sde_parallel_for_dynamic(j->nxi, 1, a2_wgdw_products, &jj);
  }
  sde_parallel_for(jj.Co4 / A2_R, 1, a2_wgdw_finish, &jj);
  free(mem);
  return SDE_OK;
}

#else /* no x86-64 SIMD: the usable checks say no, so ops_conv.c never calls the others */
int sde_ops_conv_avx2_usable(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_conv_avx2_dweight_usable(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_wino_avx2_usable(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_wino_avx2_pays(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
size_t sde_ops_conv_avx2_scratch_floats(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
size_t sde_ops_wino_avx2_scratch_floats(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_wino_avx2_dweight_pays(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_conv_avx2(float *out, const float *inp, const float *w, size_t so, size_t sc,
                      int flip, const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                      int accum, const float *packed) {
  (void)out, (void)inp, (void)w, (void)so, (void)sc, (void)flip, (void)bias, (void)s;
  (void)scratch, (void)accum, (void)packed;
  return sde_fail(SDE_EINVAL, "conv2d: no AVX2 kernels in this build");
}
int sde_ops_conv_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s, float *scratch) {
  (void)dweight, (void)dout, (void)inp, (void)s, (void)scratch;
  return sde_fail(SDE_EINVAL, "conv2d: no AVX2 kernels in this build");
}
int sde_ops_wino_avx2_dweight(float *dweight, const float *dout, const float *inp,
                              const sde_nn_conv2d_shape *s) {
  (void)dweight, (void)dout, (void)inp, (void)s;
  return sde_fail(SDE_EINVAL, "conv2d: no AVX2 kernels in this build");
}
int sde_ops_wino_avx2(float *out, const float *inp, const float *w, const float *bias,
                      const sde_nn_conv2d_shape *s, float *scratch, int accum,
                      const float *U, int U_m, const sde_ops_conv_epilogue *ep) {
  (void)out, (void)inp, (void)w, (void)bias, (void)s, (void)scratch, (void)accum;
  (void)U, (void)U_m, (void)ep;
  return sde_fail(SDE_EINVAL, "conv2d: no AVX2 kernels in this build");
}
size_t sde_ops_conv_avx2_prep_floats(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
void sde_ops_conv_avx2_prepare(float *wpk, const float *w, const sde_nn_conv2d_shape *s) {
  (void)wpk, (void)w, (void)s;
}
size_t sde_ops_wino_avx2_prep_floats(const sde_nn_conv2d_shape *s) { (void)s; return 0; }
int sde_ops_wino_avx2_prepare(float *U, const float *w, const sde_nn_conv2d_shape *s) {
  (void)U, (void)w, (void)s;
  return 0;
}
#endif

