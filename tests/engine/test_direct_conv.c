/* The direct 1x1 / NIN / 3x3 stride-2 convolutions (ops_conv.c, pconv_*) against an im2col +
 * sgemm reference computed here, over odd shapes: channel counts that are not multiples of
 * 8 or 16, sides 1 .. 32 and 7, batches 1 and 3.
 *
 * Tolerance: the library and the reference compute the same K + 1 float32 terms (K products
 * and the bias) in different orders (one FMA chain per output here, OpenBLAS's blocked
 * sums there). Any such order is within γ(K+1)·A of the exact sum, A = Σ|w·x| + |bias| and
 * γ(n) = n·u / (1 − n·u), u = 2^-24, so the two are within 2·γ(K+1)·A of each other, and
 * the library is within γ(K+1)·A of the float64 sum. Both bounds are checked per element.
 *
 * Also: bit-identical results for 1, 2 and 3 threads, and image i of a batch of 3
 * bit-identical to the same image run alone. Under SDE_NN_NO_DIRECT_CONV=1 (or without
 * AVX-512) the same checks run on the im2col path; without AVX-512, or under
 * SDE_NN_ISA=avx2, the stride-1 KxK forward and input gradient, the 3x3 weight gradient and
 * Winograd on the AVX2 kernels (ops_conv_avx2.c: rows of 8 outputs where Wo is a multiple of
 * 8, the padded grid elsewhere). Which set runs: sde_cpu_kernels().
 *
 * The weight gradient of 3x3 stride-1 convs (the direct dweight kernel, dconv_dw_tasks, on
 * its row and lane-mask layouts; im2col + sgemm on the others): dweight += Σ_b Σ_p dout·x
 * against float64, within γ(n)·A (n = B·Ho·Wo products and the prior dweight, A = Σ|dout·x|
 * + |prior|) for any order of the sum, and bit-identical for 1, 2 and 3 threads. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/nn.h"
#include "scoresde/scoresde.h"
#include "tap.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { /* xorshift64* -> [-1, 1) */
  rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
  return (float)((double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-52 - 1.0);
}
/* the results at 1, 2 and 3 threads are the same bits */
static int same3(float *const v[3], size_t n) {
  return !memcmp(v[0], v[1], n * sizeof(float)) && !memcmp(v[0], v[2], n * sizeof(float));
}

static float *rand_f(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = frand();
  return p;
}

enum { K_CONV1, K_NIN, K_S2, K_S1 };
typedef struct {
  int kind, B, Ci, H, W, Co, pt, pb, pl, pr; /* pads: strides 2 and 1 */
  int k;                                     /* K_S1: kernel side (0: 3) */
} cv_case;

static sde_nn_conv2d_shape cv_shape(const cv_case *c) {
  sde_nn_conv2d_shape s = {c->B, c->Ci, c->H, c->W, c->Co, 1, 1, 1, 0, 0, 0, 0, 0};
  if (c->kind == K_S2 || c->kind == K_S1) {
    s.KH = s.KW = c->kind == K_S1 && c->k ? c->k : 3;
    s.stride = c->kind == K_S2 ? 2 : 1;
    s.pad_top = c->pt, s.pad_bottom = c->pb, s.pad_left = c->pl, s.pad_right = c->pr;
  }
  return s;
}

/* the library: conv2d (weight [Co,Ci,k,k]) or NIN (W [Ci,Co]) */
static int lib_forward(const cv_case *c, float *y, const float *x, const float *w, const float *b) {
  if (c->kind == K_NIN) return sde_nn_nin_forward(y, x, w, b, c->B, c->Ci, c->H * c->W, c->Co);
  sde_nn_conv2d_shape s = cv_shape(c);
  return sde_nn_conv2d_forward(y, x, w, b, &s, NULL);
}

/* im2col [K, Ho·Wo] of image x (the weight as a [Co, K] row-major matrix; NIN transposed) */
static void im2col(float *col, const float *x, const sde_nn_conv2d_shape *s) {
  const int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
  for (int ci = 0; ci < s->C_in; ci++)
    for (int kh = 0; kh < s->KH; kh++)
      for (int kw = 0; kw < s->KW; kw++) {
        float *d = col + (((size_t)ci * s->KH + kh) * s->KW + kw) * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
          for (int ow = 0; ow < Wo; ow++) {
            int ih = oh * s->stride - s->pad_top + kh, iw = ow * s->stride - s->pad_left + kw;
            d[oh * Wo + ow] = ih >= 0 && ih < s->H && iw >= 0 && iw < s->W
                                  ? x[((size_t)ci * s->H + ih) * s->W + iw]
                                  : 0.0f;
          }
      }
}

/* y = bias, then y_b[Co, HWo] += W[Co,K] · col_b[K, HWo] by sgemm (the portable path's
 * operation order); yd: the float64 sum, amag: Σ|w·x| + |bias| */
static void reference(const cv_case *c, float *y, double *yd, double *amag, const float *x,
                      const float *w, const float *b) {
  sde_nn_conv2d_shape s = cv_shape(c);
  const int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s), N = Ho * Wo;
  const int K = c->Ci * s.KH * s.KW, nin = c->kind == K_NIN;
  float *col = malloc((size_t)K * N * sizeof(float));
  for (int bi = 0; bi < c->B; bi++) {
    im2col(col, x + (size_t)bi * c->Ci * c->H * c->W, &s);
    float *yb = y + (size_t)bi * c->Co * N;
    for (int co = 0; co < c->Co; co++)
      for (int p = 0; p < N; p++) yb[(size_t)co * N + p] = b[co];
    cblas_sgemm(CblasRowMajor, nin ? CblasTrans : CblasNoTrans, CblasNoTrans, c->Co, N, K, 1.0f,
                w, nin ? c->Co : K, col, N, 1.0f, yb, N);
    for (int co = 0; co < c->Co; co++)
      for (int p = 0; p < N; p++) {
        double acc = b[co], mag = fabs((double)b[co]);
        for (int k = 0; k < K; k++) {
          double t = (double)(nin ? w[(size_t)k * c->Co + co] : w[(size_t)co * K + k]) *
                     col[(size_t)k * N + p];
          acc += t;
          mag += fabs(t);
        }
        yd[((size_t)bi * c->Co + co) * N + p] = acc;
        amag[((size_t)bi * c->Co + co) * N + p] = mag;
      }
  }
  free(col);
}

static void run_case(const cv_case *c) {
  sde_nn_conv2d_shape s = cv_shape(c);
  const int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  const int K = c->Ci * s.KH * s.KW;
  const size_t nx = (size_t)c->B * c->Ci * c->H * c->W, ny = (size_t)c->B * c->Co * Ho * Wo;
  const size_t img_x = nx / c->B, img_y = ny / c->B;
  float *x = rand_f(nx), *w = rand_f((size_t)c->Co * K), *b = rand_f(c->Co);
  float *y[3], *yr = malloc(ny * sizeof(float)), *y1 = malloc(img_y * sizeof(float));
  double *yd = malloc(ny * sizeof(double)), *amag = malloc(ny * sizeof(double));
  int rc = 0;
  for (int t = 0; t < 3; t++) {
    y[t] = malloc(ny * sizeof(float));
    sde_set_num_threads(t + 1);
    rc |= lib_forward(c, y[t], x, w, b);
  }
  reference(c, yr, yd, amag, x, w, b);
  const double u = 0x1.0p-24, gam = (K + 1) * u / (1 - (K + 1) * u);
  double worst_ref = 0, worst_exact = 0; /* error / bound, must stay <= 1 */
  for (size_t i = 0; i < ny; i++) {
    double bound = gam * amag[i] + 1e-30;
    double er = fabs((double)y[1][i] - yr[i]) / (2 * bound), ee = fabs(y[1][i] - yd[i]) / bound;
    worst_ref = er > worst_ref ? er : worst_ref;
    worst_exact = ee > worst_exact ? ee : worst_exact;
  }
  const char *kn = c->kind == K_CONV1 ? "conv1x1"
                   : c->kind == K_NIN   ? "nin"
                   : c->kind == K_S2    ? "conv3x3/2"
                   : s.KH == 3          ? "conv3x3/1"
                                        : "conv5x5/1";
  char name[128];
  if (c->kind == K_S2 || c->kind == K_S1)
    snprintf(name, sizeof name, "%s B=%d %d->%d %dx%d pad(%d,%d,%d,%d)", kn, c->B, c->Ci, c->Co,
             c->H, c->W, c->pt, c->pb, c->pl, c->pr);
  else
    snprintf(name, sizeof name, "%s B=%d %d->%d %dx%d", kn, c->B, c->Ci, c->Co, c->H, c->W);
  TAP_CHECK(rc == 0 && worst_ref <= 1 && worst_exact <= 1,
            "%s: vs im2col+sgemm %.3g, vs float64 %.3g of the bound", name, worst_ref, worst_exact);
  int same = same3(y, ny);
  /* the last image alone */
  cv_case one = *c;
  one.B = 1;
  sde_set_num_threads(2);
  rc = lib_forward(&one, y1, x + (c->B - 1) * img_x, w, b);
  int alone = rc == 0 && !memcmp(y1, y[1] + (c->B - 1) * img_y, img_y * sizeof(float));
  TAP_CHECK(same && alone, "%s: 1/2/3 threads bit-identical (%d), image %d alone (%d)", name,
            same, c->B - 1, alone);
  for (int t = 0; t < 3; t++) free(y[t]);
  free(x), free(w), free(b), free(yr), free(y1), free(yd), free(amag);
}

/* dweight after sde_nn_conv2d_backward (or, nin, sde_nn_nin_backward over [B, C_in, H·W])
 * onto d0, at 1, 2 and 3 threads: dw[t] (malloc'd) */
static int dw_at_1_2_3_threads(float *dw[3], const float *d0, const float *g, const float *x,
                               const float *w, const sde_nn_conv2d_shape *s, size_t nw, int nin) {
  int rc = 0;
  for (int t = 0; t < 3; t++) {
    dw[t] = malloc(nw * sizeof(float));
    memcpy(dw[t], d0, nw * sizeof(float));
    sde_set_num_threads(t + 1);
    rc |= nin ? sde_nn_nin_backward(NULL, dw[t], NULL, g, x, w, s->B, s->C_in, s->H * s->W,
                                    s->C_out)
              : sde_nn_conv2d_backward(NULL, dw[t], NULL, g, x, w, s, NULL);
  }
  sde_set_num_threads(2);
  return rc;
}

/* dweight of a 3x3 stride-1 conv, pads (pt, pb, pl, pr) */
static void run_dw_case(int B, int Ci, int Co, int H, int W, int pt, int pb, int pl, int pr) {
  sde_nn_conv2d_shape s = {B, Ci, H, W, Co, 3, 3, 1, pt, pb, pl, pr, 0};
  const int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  const size_t nx = (size_t)B * Ci * H * W, ng = (size_t)B * Co * Ho * Wo, nw = (size_t)Co * Ci * 9;
  float *x = rand_f(nx), *g = rand_f(ng), *w = rand_f(nw), *d0 = rand_f(nw), *dw[3];
  int rc = dw_at_1_2_3_threads(dw, d0, g, x, w, &s, nw, 0);
  const double u = 0x1.0p-24, n = (double)B * Ho * Wo + 1, gam = n * u / (1 - n * u);
  double worst = 0;
  for (int co = 0; co < Co; co++)
    for (int ci = 0; ci < Ci; ci++)
      for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
          const size_t wi = ((size_t)(co * Ci + ci) * 3 + kh) * 3 + kw;
          double acc = d0[wi], mag = fabs(d0[wi]);
          for (int b = 0; b < B; b++)
            for (int oh = 0; oh < Ho; oh++) {
              const int ih = oh - pt + kh;
              if (ih < 0 || ih >= H) continue;
              for (int ow = 0; ow < Wo; ow++) {
                const int iw = ow - pl + kw;
                if (iw < 0 || iw >= W) continue;
                const double p = (double)g[(((size_t)b * Co + co) * Ho + oh) * Wo + ow] *
                                 x[(((size_t)b * Ci + ci) * H + ih) * W + iw];
                acc += p, mag += fabs(p);
              }
            }
          const double e = fabs(dw[1][wi] - acc) / (gam * mag + 1e-30);
          worst = e > worst ? e : worst;
        }
  const int same = same3(dw, nw);
  TAP_CHECK(rc == 0 && worst <= 1 && same,
            "dweight 3x3 B=%d %d->%d %dx%d pad(%d,%d,%d,%d): vs float64 %.3g of the bound, "
            "1/2/3 threads bit-identical (%d)", B, Ci, Co, H, W, pt, pb, pl, pr, worst, same);
  for (int t = 0; t < 3; t++) free(dw[t]);
  free(x), free(g), free(w), free(d0);
}

/* dbias += Σ_b Σ_p dout[b][co][p] (summed in float64 on every path, then rounded once onto
 * the prior dbias): within 2 float32 roundings of the float64 sum, 1/2/3 threads
 * bit-identical; lengths with and without a tail past the 16-lane vectors */
static void run_dbias_case(int B, int Co, int H, int W) {
  sde_nn_conv2d_shape s = {B, 2, H, W, Co, 3, 3, 1, 1, 1, 1, 1, 0};
  const size_t ng = (size_t)B * Co * H * W, nx = (size_t)B * 2 * H * W;
  float *g = rand_f(ng), *x = rand_f(nx), *w = rand_f((size_t)Co * 2 * 9), *d0 = rand_f(Co), *db[3];
  int rc = 0;
  for (int t = 0; t < 3; t++) {
    db[t] = malloc(Co * sizeof(float));
    memcpy(db[t], d0, Co * sizeof(float));
    sde_set_num_threads(t + 1);
    rc |= sde_nn_conv2d_backward(NULL, NULL, db[t], g, x, w, &s, NULL);
  }
  sde_set_num_threads(2);
  double worst = 0;
  for (int co = 0; co < Co; co++) {
    double acc = 0, mag = 0;
    for (int b = 0; b < B; b++)
      for (int p = 0; p < H * W; p++) {
        const double v = g[((size_t)b * Co + co) * H * W + p];
        acc += v, mag += fabs(v);
      }
    const double want = (double)d0[co] + (float)acc, bound = 0x1.0p-23 * (fabs(d0[co]) + mag) + 1e-30;
    const double e = fabs(db[1][co] - want) / bound;
    worst = e > worst ? e : worst;
  }
  const int same = same3(db, Co);
  TAP_CHECK(rc == 0 && worst <= 1 && same,
            "dbias B=%d %d channels %dx%d: vs float64 %.3g of the bound, 1/2/3 threads "
            "bit-identical (%d)", B, Co, H, W, worst, same);
  for (int t = 0; t < 3; t++) free(db[t]);
  free(g), free(x), free(w), free(d0);
}

/* dinp after sde_nn_conv2d_backward onto d0, at 1, 2 and 3 threads: dx[t] (malloc'd) */
static int dinp_at_1_2_3_threads(float *dx[3], const float *d0, const float *g, const float *x,
                                 const float *w, const sde_nn_conv2d_shape *s, size_t nx) {
  int rc = 0;
  for (int t = 0; t < 3; t++) {
    dx[t] = malloc(nx * sizeof(float));
    memcpy(dx[t], d0, nx * sizeof(float));
    sde_set_num_threads(t + 1);
    rc |= sde_nn_conv2d_backward(dx[t], NULL, NULL, g, x, w, s, NULL);
  }
  sde_set_num_threads(2);
  return rc;
}

/* The input gradient of a KxK stride-1 conv (the direct conv of dout with the flipped,
 * transposed weights, accumulating into dinp): dinp += Σ_{co,kh,kw} w·dout against float64
 * within γ(n)·A (n = C_out·K·K products and the prior dinp, A = Σ|w·dout| + |prior|),
 * bit-identical for 1, 2 and 3 threads, and the last image alone bit-identical to its
 * place in the batch. */
static void run_dinp_case(int B, int Ci, int Co, int H, int W, int k, int pt, int pb, int pl,
                          int pr) {
  sde_nn_conv2d_shape s = {B, Ci, H, W, Co, k, k, 1, pt, pb, pl, pr, 0};
  const int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  const size_t nx = (size_t)B * Ci * H * W, ng = (size_t)B * Co * Ho * Wo, nw = (size_t)Co * Ci * k * k;
  const size_t img_x = nx / B, img_g = ng / B;
  float *x = rand_f(nx), *g = rand_f(ng), *w = rand_f(nw), *d0 = rand_f(nx), *dx[3];
  int rc = dinp_at_1_2_3_threads(dx, d0, g, x, w, &s, nx);
  const double u = 0x1.0p-24, n = (double)Co * k * k + 1, gam = n * u / (1 - n * u);
  double worst = 0;
  for (int b = 0; b < B; b++)
    for (int ci = 0; ci < Ci; ci++)
      for (int ih = 0; ih < H; ih++)
        for (int iw = 0; iw < W; iw++) {
          const size_t xi = (((size_t)b * Ci + ci) * H + ih) * W + iw;
          double acc = d0[xi], mag = fabs(d0[xi]);
          for (int co = 0; co < Co; co++)
            for (int kh = 0; kh < k; kh++) {
              const int oh = ih + pt - kh;
              if (oh < 0 || oh >= Ho) continue;
              for (int kw = 0; kw < k; kw++) {
                const int ow = iw + pl - kw;
                if (ow < 0 || ow >= Wo) continue;
                const double p = (double)w[(((size_t)co * Ci + ci) * k + kh) * k + kw] *
                                 g[(((size_t)b * Co + co) * Ho + oh) * Wo + ow];
                acc += p, mag += fabs(p);
              }
            }
          const double e = fabs(dx[1][xi] - acc) / (gam * mag + 1e-30);
          worst = e > worst ? e : worst;
        }
  const int same = same3(dx, nx);
  sde_nn_conv2d_shape one = s;
  one.B = 1;
  float *d1 = malloc(img_x * sizeof(float));
  memcpy(d1, d0 + (B - 1) * img_x, img_x * sizeof(float));
  rc |= sde_nn_conv2d_backward(d1, NULL, NULL, g + (B - 1) * img_g, x + (B - 1) * img_x, w, &one, NULL);
  const int alone = !memcmp(d1, dx[1] + (B - 1) * img_x, img_x * sizeof(float));
  TAP_CHECK(rc == 0 && worst <= 1 && same && alone,
            "dinp %dx%d/1 B=%d %d->%d %dx%d pad(%d,%d,%d,%d): vs float64 %.3g of the bound, "
            "1/2/3 threads bit-identical (%d), image %d alone (%d)", k, k, B, Ci, Co, H, W, pt, pb,
            pl, pr, worst, same, B - 1, alone);
  for (int t = 0; t < 3; t++) free(dx[t]);
  free(x), free(g), free(w), free(d0), free(d1);
}

/* sde_nn_conv2d_backward_store (dinp overwritten, what training uses where a gradient is
 * first written) on a NaN-filled dinp against sde_nn_conv2d_backward onto zeros: the same
 * bits, the NaNs gone, dweight and dbias alike. */
static void run_dinp_store_case(const char *path, int B, int Ci, int Co, int H, int W, int k,
                                int stride, int pad) {
  sde_nn_conv2d_shape s = {B, Ci, H, W, Co, k, k, stride, pad, pad, pad, pad, 0};
  const int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  const size_t nx = (size_t)B * Ci * H * W, ng = (size_t)B * Co * Ho * Wo, nw = (size_t)Co * Ci * k * k;
  float *x = rand_f(nx), *g = rand_f(ng), *w = rand_f(nw);
  float *da = calloc(nx, sizeof(float)), *ds = malloc(nx * sizeof(float));
  float *wa = calloc(nw, sizeof(float)), *ws = calloc(nw, sizeof(float));
  float *ba = calloc((size_t)Co, sizeof(float)), *bs = calloc((size_t)Co, sizeof(float));
  for (size_t i = 0; i < nx; i++) ds[i] = NAN;
  int rc = sde_nn_conv2d_backward(da, wa, ba, g, x, w, &s, NULL);
  rc |= sde_nn_conv2d_backward_store(ds, ws, bs, g, x, w, &s, NULL);
  TAP_CHECK(rc == 0 && !memcmp(da, ds, nx * sizeof(float)) && !memcmp(wa, ws, nw * sizeof(float)) &&
                !memcmp(ba, bs, (size_t)Co * sizeof(float)),
            "dinp stored (%s, %dx%d/%d B=%d %d->%d %dx%d): the bits of the add onto zeros", path,
            k, k, stride, B, Ci, Co, H, W);
  free(x), free(g), free(w), free(da), free(ds), free(wa), free(ws), free(ba), free(bs);
}

/* Winograd F(2x2, 3x3) (ops_conv.c wino_* on AVX-512, ops_conv_avx2.c a2_wg_* on AVX2; forced
 * onto every shape here by SDE_NN_WINOGRAD=2) against float64. Its error is not bounded by
 * Σ|w·x| (the transforms add and subtract inputs and weights of different taps, which cancel
 * exactly only in exact arithmetic), but by the same sums taken in absolute value: with
 * Ũ = |G||g||Gᵀ| and Ṽ = |Bᵀ||d||B| per input channel (d the tile's 4x4 zero-padded patch),
 *   |ŷ − y| ≤ γ(C_in + 10)·(|Aᵀ|(Σ_ci Ũ ⊙ Ṽ)|A| + |bias|)
 * (roundings: 2 in each V, 1 in each U (float64, rounded once), C_in in the FMA chain of a
 * product, 4 in the output transform, 1 for the bias; 2 spare). Checked per element, with
 * max |ŷ − y| / (Σ|w·x| + |bias|) reported. Also: 1/2/3 threads bit-identical, and the last
 * image alone bit-identical to its place in the batch. Without AVX-512 or AVX2 (or under
 * SDE_NN_NO_DIRECT_CONV=1) these shapes run on the im2col path and are checked against its
 * own bound, γ(9·C_in + 1)·(Σ|w·x| + |bias|). */

/* the Winograd kernels run: AVX-512, or AVX2 + FMA (ops_conv_avx2.c) */
static int wino_paths_on(void) { return strcmp(sde_cpu_kernels(), "portable") != 0; }

/* the output tile side the Winograd kernels take: the AVX2 kernels F(2x2) or F(4x4) as
 * SDE_NN_WINOGRAD_TILE says (main sets it), the AVX-512 kernels F(2x2) always */
static int wino_tile(void) {
  const char *e = getenv("SDE_NN_WINOGRAD_TILE");
  return !strcmp(sde_cpu_kernels(), "avx2") && e && *e == '4' ? 4 : 2;
}

/* The weight gradient of a 1x1 conv (nin 0: W [Co][Ci]) or a NIN (nin 1: W [Ci][Co]) over
 * [B, Ci, HW], added onto d0: with few tiles, sde_ops_gemm_batch's reduction splits the images
 * into parts, summed apart and added in order. Against float64 under γ(B·HW + 1)·(Σ|g·x| +
 * |d0|), and 1/2/3 threads bit-identical. */
static void run_pointwise_dw_case(int B, int Ci, int Co, int HW, int nin) {
  const size_t nx = (size_t)B * Ci * HW, ng = (size_t)B * Co * HW, nw = (size_t)Co * Ci;
  float *x = rand_f(nx), *g = rand_f(ng), *w = rand_f(nw), *d0 = rand_f(nw), *dw[3];
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, 1, HW, Co, 1, 1, 0);
  const int rc = dw_at_1_2_3_threads(dw, d0, g, x, w, &s, nw, nin);
  const double u = 0x1.0p-24, n = (double)B * HW + 1, gam = n * u / (1 - n * u);
  double worst = 0;
  for (int co = 0; co < Co; co++)
    for (int ci = 0; ci < Ci; ci++) {
      const size_t wi = nin ? (size_t)ci * Co + co : (size_t)co * Ci + ci;
      double acc = d0[wi], mag = fabs(d0[wi]);
      for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
          const double t = (double)g[((size_t)b * Co + co) * HW + p] * x[((size_t)b * Ci + ci) * HW + p];
          acc += t, mag += fabs(t);
        }
      const double e = fabs(dw[1][wi] - acc) / (gam * mag + 1e-30);
      worst = e > worst ? e : worst;
    }
  const int same = same3(dw, nw);
  TAP_CHECK(rc == 0 && worst <= 1 && same,
            "dweight %s B=%d %d->%d HW %d: vs float64 %.3g of the bound, 1/2/3 threads "
            "bit-identical (%d)", nin ? "nin" : "conv1x1", B, Ci, Co, HW, worst, same);
  for (int t = 0; t < 3; t++) free(dw[t]);
  free(x), free(g), free(w), free(d0);
}

/* |G|, |Bᵀ|, |Aᵀ| of F(m x m, 3x3) (m = 2 or 4), row-major: (m + 2) x 3, (m + 2)², m x (m + 2) */
static void wino_abs_mats(int m, const double **G, const double **Bt, const double **At) {
  static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5}, {0, 0, 1}};
  static const double Bt2[4][4] = {{1, 0, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 0, 1}};
  static const double At2[2][4] = {{1, 1, 1, 0}, {0, 1, 1, 1}};
  static const double G4[6][3] = {{0.25, 0, 0},          {1.0 / 6, 1.0 / 6, 1.0 / 6},
                                  {1.0 / 6, 1.0 / 6, 1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  static const double Bt4[6][6] = {{4, 0, 5, 0, 1, 0}, {0, 4, 4, 1, 1, 0}, {0, 4, 4, 1, 1, 0},
                                   {0, 2, 1, 2, 1, 0}, {0, 2, 1, 2, 1, 0}, {0, 4, 0, 5, 0, 1}};
  static const double At4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, 1, 2, 2, 0}, {0, 1, 1, 4, 4, 0},
                                   {0, 1, 1, 8, 8, 1}};
  *G = m == 4 ? &G4[0][0] : &G2[0][0], *Bt = m == 4 ? &Bt4[0][0] : &Bt2[0][0];
  *At = m == 4 ? &At4[0][0] : &At2[0][0];
}

/* Ṽ = |Bᵀ||d||B| of every tile's (m + 2)² zero-padded patch of x [B][C][H][W]:
 * [b][c][th][tw][(m + 2)²] (malloc'd) */
static double *wino_abs_inputs(const float *x, int B, int Ci, int H, int W, int m) {
  const int P = m + 2, PP = P * P, nth = (H + m - 1) / m, ntw = (W + m - 1) / m;
  const double *G, *Bt, *At;
  wino_abs_mats(m, &G, &Bt, &At);
  double *Va = malloc((size_t)B * Ci * nth * ntw * PP * sizeof(double));
  for (int bi = 0; bi < B; bi++)
    for (int ci = 0; ci < Ci; ci++)
      for (int th = 0; th < nth; th++)
        for (int tw = 0; tw < ntw; tw++) {
          double *v = Va + ((((size_t)bi * Ci + ci) * nth + th) * ntw + tw) * PP;
          for (int a = 0; a < P; a++)
            for (int e = 0; e < P; e++) {
              double acc = 0;
              for (int r = 0; r < P; r++)
                for (int k = 0; k < P; k++) {
                  const int ih = m * th - 1 + r, iw = m * tw - 1 + k;
                  if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                    acc += Bt[a * P + r] * fabs(x[(((size_t)bi * Ci + ci) * H + ih) * W + iw]) * Bt[e * P + k];
                }
              v[a * P + e] = acc;
            }
        }
  return Va;
}

static void run_wino_case(int B, int Ci, int Co, int H, int W) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * 9;
  const size_t img_x = nx / B, img_y = ny / B;
  float *x = rand_f(nx), *w = rand_f(nw), *b = rand_f(Co), *y[3], *y1 = malloc(img_y * sizeof(float));
  int rc = 0;
  for (int t = 0; t < 3; t++) {
    y[t] = malloc(ny * sizeof(float));
    sde_set_num_threads(t + 1);
    rc |= sde_nn_conv2d_forward(y[t], x, w, b, &s, NULL);
  }
  sde_set_num_threads(2);
  const int m = wino_tile(), P = m + 2, PP = P * P, nth = (H + m - 1) / m, ntw = (W + m - 1) / m;
  const double *G, *Bt, *At;
  wino_abs_mats(m, &G, &Bt, &At);
  /* Ũ[co][ci][PP], Ṽ[b][ci][tile][PP] */
  double *Ua = malloc(nw / 9 * PP * sizeof(double)), *Va = wino_abs_inputs(x, B, Ci, H, W, m);
  for (size_t oc = 0; oc < nw / 9; oc++)
    for (int a = 0; a < P; a++)
      for (int e = 0; e < P; e++) {
        double acc = 0;
        for (int kh = 0; kh < 3; kh++)
          for (int kw = 0; kw < 3; kw++)
            acc += G[a * 3 + kh] * fabs(w[oc * 9 + kh * 3 + kw]) * G[e * 3 + kw];
        Ua[oc * PP + a * P + e] = acc;
      }
  const int avx = wino_paths_on();
  const double u = 0x1.0p-24, n = avx ? Ci + (m == 4 ? 14.0 : 10.0) : 9.0 * Ci + 1;
  const double gam = n * u / (1 - n * u);
  double worst = 0, rel = 0;
  for (int bi = 0; bi < B; bi++)
    for (int co = 0; co < Co; co++)
      for (int th = 0; th < nth; th++)
        for (int tw = 0; tw < ntw; tw++) {
          double S[36] = {0};
          for (int ci = 0; ci < Ci; ci++) {
            const double *uu = Ua + ((size_t)co * Ci + ci) * PP;
            const double *v = Va + ((((size_t)bi * Ci + ci) * nth + th) * ntw + tw) * PP;
            for (int k = 0; k < PP; k++) S[k] += uu[k] * v[k];
          }
          for (int dy = 0; dy < m; dy++)
            for (int dx = 0; dx < m; dx++) {
              const int oh = m * th + dy, ow = m * tw + dx;
              if (oh >= H || ow >= W) continue;
              double mw = fabs((double)b[co]), acc = b[co], mag = fabs((double)b[co]);
              for (int i = 0; i < P; i++)
                for (int k = 0; k < P; k++) mw += At[dy * P + i] * S[i * P + k] * At[dx * P + k];
              for (int ci = 0; ci < Ci; ci++)
                for (int kh = 0; kh < 3; kh++)
                  for (int kw = 0; kw < 3; kw++) {
                    const int ih = oh - 1 + kh, iw = ow - 1 + kw;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                    const double p = (double)w[(((size_t)co * Ci + ci) * 3 + kh) * 3 + kw] *
                                     x[(((size_t)bi * Ci + ci) * H + ih) * W + iw];
                    acc += p, mag += fabs(p);
                  }
              const double err = fabs(y[1][(((size_t)bi * Co + co) * H + oh) * W + ow] - acc);
              const double e = err / (gam * (avx ? mw : mag) + 1e-30), r = err / (mag + 1e-30);
              worst = e > worst ? e : worst;
              rel = r > rel ? r : rel;
            }
        }
  const int same = same3(y, ny);
  sde_nn_conv2d_shape one = s;
  one.B = 1;
  rc |= sde_nn_conv2d_forward(y1, x + (B - 1) * img_x, w, b, &one, NULL);
  const int alone = !memcmp(y1, y[1] + (B - 1) * img_y, img_y * sizeof(float));
  TAP_CHECK(rc == 0 && worst <= 1 && same && alone,
            "winograd F(%dx%d) B=%d %d->%d %dx%d: vs float64 %.3g of the bound (max err / "
            "Σ|w·x| %.3g), 1/2/3 threads bit-identical (%d), image %d alone (%d)",
            m, m, B, Ci, Co, H, W, worst, rel, same, B - 1, alone);
  for (int t = 0; t < 3; t++) free(y[t]);
  free(x), free(w), free(b), free(y1), free(Ua), free(Va);
}

/* The input gradient by Winograd (SDE_NN_WINOGRAD=2): dinp += the forward conv of dout with
 * the flipped, transposed weights, bit for bit the forward path (checked against float64 by
 * run_wino_case on the transposed shape) added onto what dinp held; 1/2/3 threads
 * bit-identical. */
static void run_wino_dinp_case(int B, int Ci, int Co, int H, int W) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  sde_nn_conv2d_shape t = sde_nn_conv2d_shape_make(B, Co, H, W, Ci, 3, 1, 1);
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * 9;
  float *x = rand_f(nx), *g = rand_f(ny), *w = rand_f(nw), *d0 = rand_f(nx), *wT = malloc(nw * sizeof(float));
  float *ref = malloc(nx * sizeof(float)), *dx[3];
  for (int co = 0; co < Co; co++)
    for (int ci = 0; ci < Ci; ci++)
      for (int k = 0; k < 9; k++) wT[((size_t)ci * Co + co) * 9 + k] = w[((size_t)co * Ci + ci) * 9 + 8 - k];
  int rc = sde_nn_conv2d_forward(ref, g, wT, NULL, &t, NULL);
  for (size_t i = 0; i < nx; i++) ref[i] = d0[i] + ref[i];
  rc |= dinp_at_1_2_3_threads(dx, d0, g, x, w, &s, nx);
  const int same = same3(dx, nx);
  /* without AVX-512 or AVX2 both sides take the im2col path, in different summation orders */
  const int avx = wino_paths_on();
  double diff = 0, mag = 0;
  for (size_t i = 0; i < nx; i++) {
    const double e = fabs((double)dx[1][i] - ref[i]), m = fabs((double)ref[i]);
    diff = e > diff ? e : diff, mag = m > mag ? m : mag;
  }
  const int exact = avx ? !memcmp(dx[1], ref, nx * sizeof(float)) : diff <= 1e-5 * (mag + 1);
  TAP_CHECK(rc == 0 && same && exact,
            "winograd F(%dx%d) dinp B=%d %d->%d %dx%d: = dinp + forward(dout, flipped wT) %s "
            "(max diff %.3g), 1/2/3 threads bit-identical (%d)", wino_tile(), wino_tile(), B, Ci, Co, H, W,
            avx ? "bitwise" : "within 1e-5", diff, same);
  for (int th = 0; th < 3; th++) free(dx[th]);
  free(x), free(g), free(w), free(d0), free(wT), free(ref);
}

/* The weight gradient by Winograd on AVX2 (ops_conv_avx2.c a2_wgdw_*, SDE_NN_WINOGRAD=2):
 * dg = Gᵀ[Σ_t (A dy_t Aᵀ) ⊙ (Bᵀ d_t B)]G over the tiles t, the adjoint of the forward.
 * Against float64 under the same sums in absolute value: with D̃ = |A||dy||Aᵀ| and
 * Ṽ = |Bᵀ||d||B| per tile,
 *   |dĝ − dg| ≤ γ(⌈T/8⌉ + 24)·(|Gᵀ|(Σ_t D̃ ⊙ Ṽ)|G| + |dweight before|)
 * (T the batch's tiles: a band's products are 8-lane float32 sums of at most ⌈T/8⌉ terms,
 * 3 more across the lanes, ≤ 6 roundings in each transform, 1 onto dweight; the bands are
 * added in float64). 1/2/3 threads bit-identical. Elsewhere (AVX-512: the direct dweight)
 * the direct bound of run_dw_case, γ(B·H·W + 1)·(Σ|dy·x| + |dweight before|). */
static void run_wino_dw_case(int B, int Ci, int Co, int H, int W) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * 9;
  float *x = rand_f(nx), *g = rand_f(ny), *w = rand_f(nw), *d0 = rand_f(nw), *dw[3];
  int rc = dw_at_1_2_3_threads(dw, d0, g, x, w, &s, nw, 0);
  const int avx2 = !strcmp(sde_cpu_kernels(), "avx2");
  const int m = wino_tile(), P = m + 2, PP = P * P, nth = (H + m - 1) / m, ntw = (W + m - 1) / m;
  const double *G, *Bt, *At;
  wino_abs_mats(m, &G, &Bt, &At);
  const size_t T = (size_t)B * nth * ntw;
  /* Ṽ[b][ci][th][tw][PP], D̃[co][t][PP] (t = (b·nth + th)·ntw + tw) */
  double *Va = wino_abs_inputs(x, B, Ci, H, W, m), *Da = malloc((size_t)Co * T * PP * sizeof(double));
  for (int bi = 0; bi < B; bi++)
    for (int th = 0; th < nth; th++)
      for (int tw = 0; tw < ntw; tw++) {
        const size_t t = ((size_t)bi * nth + th) * ntw + tw;
        for (int co = 0; co < Co; co++)
          for (int a = 0; a < P; a++)
            for (int e = 0; e < P; e++) {
              double acc = 0;
              for (int i = 0; i < m; i++)
                for (int k = 0; k < m; k++) {
                  const int oh = m * th + i, ow = m * tw + k;
                  if (oh < H && ow < W)
                    acc += At[i * P + a] * fabs(g[(((size_t)bi * Co + co) * H + oh) * W + ow]) * At[k * P + e];
                }
              Da[((size_t)co * T + t) * PP + a * P + e] = acc;
            }
      }
  const double u = 0x1.0p-24, n = avx2 ? ceil(T / 8.0) + 24 : (double)B * H * W + 1;
  const double gam = n * u / (1 - n * u);
  double worst = 0, rel = 0;
  for (int co = 0; co < Co; co++)
    for (int ci = 0; ci < Ci; ci++) {
      double S[36] = {0};
      for (size_t t = 0; t < T; t++) {
        const size_t bi = t / ((size_t)nth * ntw), tt = t % ((size_t)nth * ntw);
        const double *v = Va + (((size_t)bi * Ci + ci) * nth * ntw + tt) * PP;
        const double *d = Da + ((size_t)co * T + t) * PP;
        for (int k = 0; k < PP; k++) S[k] += d[k] * v[k];
      }
      for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
          const size_t wi = ((size_t)(co * Ci + ci) * 3 + kh) * 3 + kw;
          double acc = d0[wi], mag = fabs(d0[wi]), mw = fabs(d0[wi]);
          for (int a = 0; a < P; a++)
            for (int e = 0; e < P; e++) mw += G[a * 3 + kh] * S[a * P + e] * G[e * 3 + kw];
          for (int bi = 0; bi < B; bi++)
            for (int oh = 0; oh < H; oh++) {
              const int ih = oh - 1 + kh;
              if (ih < 0 || ih >= H) continue;
              for (int ow = 0; ow < W; ow++) {
                const int iw = ow - 1 + kw;
                if (iw < 0 || iw >= W) continue;
                const double p = (double)g[(((size_t)bi * Co + co) * H + oh) * W + ow] *
                                 x[(((size_t)bi * Ci + ci) * H + ih) * W + iw];
                acc += p, mag += fabs(p);
              }
            }
          const double err = fabs(dw[1][wi] - acc);
          const double e = err / (gam * (avx2 ? mw : mag) + 1e-30), r = err / (mag + 1e-30);
          worst = e > worst ? e : worst;
          rel = r > rel ? r : rel;
        }
    }
  const int same = same3(dw, nw);
  TAP_CHECK(rc == 0 && worst <= 1 && same,
            "winograd F(%dx%d) dweight B=%d %d->%d %dx%d: vs float64 %.3g of the bound (max err / "
            "Σ|dy·x| %.3g), 1/2/3 threads bit-identical (%d)", m, m, B, Ci, Co, H, W, worst, rel, same);
  for (int t = 0; t < 3; t++) free(dw[t]);
  free(x), free(g), free(w), free(d0), free(Va), free(Da);
}

/* The shapes the networks' 3x3 convs take by default go through Winograd (they differ from
 * the direct conv), the others do not; shapes only, whatever the batch, unless by_batch
 * (training) lets the batch choose too. On AVX2, F(4x4, 3x3) from 64 tiles of 4x4 per image
 * and on planes 16 wide, F(2x2, 3x3) below (expect 4 or 2). */
static void run_wino_dispatch_by(int by_batch, int B, int Ci, int Co, int H, int W, int expect) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  s.by_batch = by_batch;
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W;
  float *x = rand_f(nx), *w = rand_f((size_t)Co * Ci * 9), *b = rand_f(Co);
  float *yd = malloc(ny * sizeof(float)), *yw = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
  int rc = 0;
  setenv("SDE_NN_WINOGRAD", "0", 1);
  rc |= sde_nn_conv2d_forward(yd, x, w, b, &s, NULL);
  setenv("SDE_NN_WINOGRAD", "2", 1);
  setenv("SDE_NN_WINOGRAD_TILE", expect == 4 ? "4" : "2", 1);
  rc |= sde_nn_conv2d_forward(yw, x, w, b, &s, NULL);
  unsetenv("SDE_NN_WINOGRAD");
  unsetenv("SDE_NN_WINOGRAD_TILE");
  rc |= sde_nn_conv2d_forward(y, x, w, b, &s, NULL);
  const int took = !memcmp(y, yw, ny * sizeof(float)), direct = !memcmp(y, yd, ny * sizeof(float));
  TAP_CHECK(rc == 0 && (expect ? took : direct),
            "winograd by default B=%d %d->%d %dx%d%s: %s (expected %s)", B, Ci, Co, H, W,
            by_batch ? " by batch" : "", took && !direct ? "winograd" : direct ? "direct" : "?",
            expect == 4 ? "winograd, F(4x4) on AVX2" : expect ? "winograd, F(2x2)" : "direct");
  free(x), free(w), free(b), free(yd), free(yw), free(y);
}
static void run_wino_dispatch(int B, int Ci, int Co, int H, int W, int expect) {
  run_wino_dispatch_by(0, B, Ci, Co, H, W, expect);
}

/* The weight gradient goes through Winograd by default where sde_ops_wino_avx2_dweight_pays
 * says (AVX2: F(4x4) shapes from 16 channels and 512 tiles in the batch, 128 on planes 16
 * wide, batch 16 on planes 8 wide by batch), the direct weight gradient elsewhere */
static void run_wino_dw_dispatch_by(int by_batch, int B, int Ci, int Co, int H, int W,
                                    const char *tile, int expect) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  s.by_batch = by_batch;
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * 9;
  float *x = rand_f(nx), *g = rand_f(ny), *w = rand_f(nw), *dw[3];
  static const char *mode[3] = {"0", "2", NULL};
  int rc = 0;
  for (int k = 0; k < 3; k++) {
    dw[k] = calloc(nw, sizeof(float));
    if (mode[k]) setenv("SDE_NN_WINOGRAD", mode[k], 1), setenv("SDE_NN_WINOGRAD_TILE", tile, 1);
    else unsetenv("SDE_NN_WINOGRAD"), unsetenv("SDE_NN_WINOGRAD_TILE");
    rc |= sde_nn_conv2d_backward(NULL, dw[k], NULL, g, x, w, &s, NULL);
  }
  const int direct = !memcmp(dw[2], dw[0], nw * sizeof(float));
  const int took = !memcmp(dw[2], dw[1], nw * sizeof(float)) && !direct;
  TAP_CHECK(rc == 0 && (expect ? took : direct),
            "winograd dweight by default B=%d %d->%d %dx%d%s: %s (expected %s, F(%sx%s))", B, Ci,
            Co, H, W, by_batch ? " by batch" : "", took ? "winograd" : direct ? "direct" : "?",
            expect ? "winograd" : "direct", tile, tile);
  for (int k = 0; k < 3; k++) free(dw[k]);
  free(x), free(g), free(w);
}
static void run_wino_dw_dispatch(int B, int Ci, int Co, int H, int W, const char *tile, int expect) {
  run_wino_dw_dispatch_by(0, B, Ci, Co, H, W, tile, expect);
}

/* Weights prepared once (sde_nn_conv2d_prepare) give the bits of the forward that prepares
 * them per call, at the batch they were made for and others; a prep made for another shape,
 * or for the other Winograd tile side, is ignored. `made` says whether this shape takes
 * prepared weights on this CPU (AVX2 kernels: Winograd and the direct conv). */
static void run_prep_case(const char *path, int Ci, int Co, int H, int k, int stride, int made) {
  const int pad = k / 2;
  sde_nn_conv2d_shape s1 = sde_nn_conv2d_shape_make(1, Ci, H, H, Co, k, stride, pad);
  const int Ho = sde_nn_conv2d_out_h(&s1), Bmax = 3;
  const size_t nx = (size_t)Bmax * Ci * H * H, ny = (size_t)Bmax * Co * Ho * Ho;
  float *x = rand_f(nx), *w = rand_f((size_t)Co * Ci * k * k), *b = rand_f(Co);
  float *y = malloc(ny * sizeof(float)), *yp = malloc(ny * sizeof(float));
  sde_nn_conv2d_prep *p = NULL, *other = NULL;
  int rc = sde_nn_conv2d_prepare(w, &s1, &p), same = 1;
  for (int B = 1; B <= Bmax; B += 2) {
    sde_nn_conv2d_shape s = s1;
    s.B = B;
    const size_t n = (size_t)B * Co * Ho * Ho;
    rc |= sde_nn_conv2d_forward(y, x, w, b, &s, NULL);
    rc |= sde_nn_conv2d_forward_prepared(yp, x, w, b, &s, NULL, p);
    same &= !memcmp(y, yp, n * sizeof(float));
  }
  /* a prep of a shape with one more output channel: ignored, not misread */
  sde_nn_conv2d_shape so = s1;
  so.C_out = Co + 1;
  float *wo = rand_f((size_t)(Co + 1) * Ci * k * k);
  rc |= sde_nn_conv2d_prepare(wo, &so, &other);
  rc |= sde_nn_conv2d_forward_prepared(yp, x, w, b, &s1, NULL, other);
  rc |= sde_nn_conv2d_forward(y, x, w, b, &s1, NULL);
  same &= !memcmp(y, yp, (size_t)Co * Ho * Ho * sizeof(float));
  /* on AVX2 a Winograd prep made for one tile side, run with the other forced */
  int sides = 1;
  if (p && k == 3 && stride == 1 && !strcmp(sde_cpu_kernels(), "avx2")) {
    setenv("SDE_NN_WINOGRAD", "2", 1);
    for (int tile = 2; tile <= 4; tile += 2) {
      setenv("SDE_NN_WINOGRAD_TILE", tile == 2 ? "2" : "4", 1);
      rc |= sde_nn_conv2d_forward(y, x, w, b, &s1, NULL);
      rc |= sde_nn_conv2d_forward_prepared(yp, x, w, b, &s1, NULL, p);
      sides &= !memcmp(y, yp, (size_t)Co * Ho * Ho * sizeof(float));
    }
    unsetenv("SDE_NN_WINOGRAD_TILE");
    unsetenv("SDE_NN_WINOGRAD");
  }
  TAP_CHECK(rc == 0 && same && sides && (p != NULL) == made,
            "prepared weights, %s %d->%d %dx%d k%d s%d: %s, bits of the forward at B 1 and 3%s%s",
            path, Ci, Co, H, H, k, stride, p ? "prepared" : "nothing to prepare",
            same ? "" : " (DIFFER)", sides ? "" : " (tile sides DIFFER)");
  sde_nn_conv2d_prep_free(p);
  sde_nn_conv2d_prep_free(other);
  free(x), free(w), free(wo), free(b), free(y), free(yp);
}

/* The residual block's passes in the Winograd output transform (sde_nn_conv2d_forward_fused):
 * the bits of the forward followed by + bias2[b][c], (residual + y) and / sqrt(2) as separate
 * passes, with the residual apart from the output and as the output itself; nothing written
 * where the kernel is not a Winograd one (`fuses`: on AVX2 kernels), with the weights
 * prepared (inference) and transformed per call (the training forward). Shapes: F(4x4)
 * with 8-tile, 4-tile and 1-tile rows, F(2x2) with a 1-tile tail and rows of 4 (+ 3) tiles. */
static void run_fused_case_by(int by_batch, int B, int Ci, int Co, int H, int W, int fuses) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, W, Co, 3, 1, 1);
  s.by_batch = by_batch;
  const size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W;
  float *x = rand_f(nx), *w = rand_f((size_t)Co * Ci * 9), *b = rand_f(Co);
  float *b2 = rand_f((size_t)B * Co), *res = rand_f(ny);
  float *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float));
  const float sqrt2 = 1.41421356237309504880f;
  sde_nn_conv2d_prep *p = NULL;
  int rc = sde_nn_conv2d_prepare(w, &s, &p), ok = 1, all_fused = 1, none = 1;
  for (int v = 0; v < 8; v++) { /* bias2; residual; residual / sqrt 2; all, residual = out;
                                 * with the prep, then without (weights transformed here) */
    const int with_b2 = v % 4 == 0 || v % 4 == 3, with_res = v % 4 >= 1, div = v % 4 >= 2;
    const int alias = v % 4 == 3;
    const sde_nn_conv2d_prep *pv = v < 4 ? p : NULL;
    rc |= sde_nn_conv2d_forward(ref, x, w, b, &s, NULL);
    for (size_t i = 0; i < ny; i++) {
      if (with_b2) ref[i] = ref[i] + b2[i / ((size_t)H * W)];
      if (with_res) ref[i] = res[i] + ref[i];
      if (div) ref[i] = ref[i] / sqrt2;
    }
    for (size_t i = 0; i < ny; i++) got[i] = alias ? res[i] : -7.0f;
    int fused = -1;
    rc |= sde_nn_conv2d_forward_fused(got, x, w, b, &s, NULL, pv, with_b2 ? b2 : NULL,
                                      with_res ? (alias ? got : res) : NULL, div ? sqrt2 : 0.0f,
                                      &fused);
    all_fused &= fused == 1;
    if (fused == 1) ok &= !memcmp(got, ref, ny * sizeof(float));
    else none &= fused == 0 && got[0] == (alias ? res[0] : -7.0f);
  }
  TAP_CHECK(rc == 0 && ok && (fuses ? all_fused : none),
            "fused residual passes B=%d %d->%d %dx%d%s: %s", B, Ci, Co, H, W,
            by_batch ? " by batch" : "", !fuses ? (none ? "not fused, nothing written" : "WRITTEN")
                   : all_fused && ok ? "the bits of the separate passes (4 variants, with and "
                                       "without prepared weights)"
                                     : "DIFFER");
  sde_nn_conv2d_prep_free(p);
  free(x), free(w), free(b), free(b2), free(res), free(ref), free(got);
}
static void run_fused_case(int B, int Ci, int Co, int H, int W, int fuses) {
  run_fused_case_by(0, B, Ci, Co, H, W, fuses);
}

int main(void) {
  TAP_DIAG("CPU kernels: %s", sde_cpu_kernels());
  setenv("SDE_NN_WINOGRAD", "0", 1); /* the direct 3x3 kernels below; Winograd at the end */
  const int sides[] = {1, 2, 4, 7, 8, 16, 32};
  const int chans[][2] = {{3, 5}, {13, 17}, {37, 40}}; /* C_in, C_out */
  for (int kind = K_CONV1; kind <= K_NIN; kind++)
    for (int si = 0; si < 7; si++)
      for (int ci = 0; ci < 3; ci++)
        for (int B = 1; B <= 3; B += 2) {
          if (sides[si] == 32 && ci < 2 && B == 3) continue; /* keep the run short */
          cv_case c = {kind, B, chans[ci][0], sides[si], sides[si], chans[ci][1], 0, 0, 0, 0, 0};
          run_case(&c);
        }
  /* non-square, and wide channel counts (several channel blocks and task groups) */
  run_case(&(cv_case){K_CONV1, 3, 70, 7, 5, 137, 0, 0, 0, 0, 0});
  run_case(&(cv_case){K_NIN, 1, 129, 16, 16, 131, 0, 0, 0, 0, 0});
  /* 1x1 / NIN weight gradients: one tile, images in 4 parts (8 and 5 images: even and
   * uneven runs), 2 parts (3 images), and too little work to split (B=4, HW 64) */
  run_pointwise_dw_case(8, 64, 64, 1024, 0);
  run_pointwise_dw_case(5, 64, 48, 1024, 1);
  run_pointwise_dw_case(3, 40, 64, 1024, 0);
  run_pointwise_dw_case(4, 32, 32, 64, 1);
  /* stride 2: resamp_with_conv's pad (0,1,0,1), the FIR conv-downsample's unpadded odd sides,
   * pad 1 all round */
  const int pads[][4] = {{0, 1, 0, 1}, {0, 0, 0, 0}, {1, 1, 1, 1}};
  for (int pi = 0; pi < 3; pi++)
    for (int si = 0; si < 7; si++)
      for (int ci = 0; ci < 3; ci++)
        for (int B = 1; B <= 3; B += 2) {
          int H = sides[si] + (pi == 1); /* odd sides 2 .. 33 for the FIR case */
          if (H + pads[pi][0] + pads[pi][1] < 3) continue;
          if (H >= 32 && ci < 2 && B == 3) continue;
          cv_case c = {K_S2, B, chans[ci][0], H, H, chans[ci][1],
                       pads[pi][0], pads[pi][1], pads[pi][2], pads[pi][3], 0};
          run_case(&c);
        }
  run_case(&(cv_case){K_S2, 3, 21, 9, 14, 70, 0, 1, 0, 1, 0});
  run_case(&(cv_case){K_S2, 2, 130, 17, 17, 136, 0, 0, 0, 0, 0});
  /* dweight of 3x3 stride 1: the training shapes' layouts (rows of 16 at 16 and 32 wide,
   * lane masks at 8, 4, 2, 1 wide), channel counts 1 .. 40 that are not multiples of 3
   * (blocks of 1 and 2 output channels), batches that end in a short chunk of images
   * (37 at 8x8: chunks of 16), "valid" and one-sided pads, and widths no layout takes */
  const int dsides[][2] = {{32, 32}, {16, 16}, {8, 8}, {4, 4}, {16, 2}, {16, 1}, {7, 7}, {5, 9}};
  const int dch[][2] = {{1, 1}, {3, 16}, {16, 3}, {13, 17}, {37, 40}};
  for (int si = 0; si < 8; si++)
    for (int ci = 0; ci < 5; ci++)
      for (int B = 1; B <= 3; B += 2) {
        if (dsides[si][0] == 32 && ci == 4 && B == 3) continue; /* keep the run short */
        run_dw_case(B, dch[ci][0], dch[ci][1], dsides[si][0], dsides[si][1], 1, 1, 1, 1);
      }
  run_dbias_case(3, 5, 7, 7);
  run_dbias_case(2, 17, 32, 32);
  run_dbias_case(1, 3, 1, 1);
  run_dw_case(37, 5, 7, 8, 8, 1, 1, 1, 1);
  run_dw_case(37, 4, 2, 4, 4, 1, 1, 1, 1);
  run_dw_case(5, 11, 8, 16, 16, 1, 1, 1, 1);
  run_dw_case(3, 6, 5, 18, 18, 0, 0, 0, 0);  /* 16x16 out, rows, no padding */
  run_dw_case(3, 6, 5, 34, 18, 0, 0, 0, 0);  /* 32x16 out */
  run_dw_case(2, 4, 7, 17, 17, 0, 1, 0, 1);  /* 16x16 out, one-sided pads */
  run_dw_case(2, 9, 10, 48, 48, 1, 1, 1, 1); /* 3 vectors a row */
  run_dw_case(2, 5, 3, 14, 8, 1, 1, 1, 1);   /* lane masks, 7 vectors an image */
  run_dw_case(2, 5, 3, 14, 8, 0, 2, 1, 1);   /* lane masks, one-sided pads */
  run_dw_case(32, 16, 16, 16, 16, 1, 1, 1, 1);
  /* 3x3 stride 1 forward and input gradient (the direct conv: rows of 16 at 16, 32 and 48
   * wide, lane masks at 8, 4, 2, 1 wide, the padded grid at 7 and 5 wide; output channels
   * that leave a block of 8 partly empty; more than 32 input channels (partial sums kept
   * between passes); batches whose vectors end in 2 + 2; per-task padding of chunks of
   * images and, for planes too large for it (70 channels at 32x32), the whole-batch pass) */
  const int ssides[][2] = {{32, 32}, {16, 16}, {8, 8}, {4, 4}, {16, 2}, {2, 1}, {7, 7}, {5, 9}};
  for (int si = 0; si < 8; si++)
    for (int ci = 0; ci < 3; ci++)
      for (int B = 1; B <= 3; B += 2) {
        if (ssides[si][0] == 32 && ci == 2 && B == 3) continue; /* keep the run short */
        cv_case c = {K_S1, B, chans[ci][0], ssides[si][0], ssides[si][1], chans[ci][1], 1, 1, 1, 1, 3};
        run_case(&c);
        run_dinp_case(B, chans[ci][0], chans[ci][1], ssides[si][0], ssides[si][1], 3, 1, 1, 1, 1);
      }
  run_case(&(cv_case){K_S1, 2, 70, 32, 32, 9, 1, 1, 1, 1, 3});
  run_dinp_case(2, 9, 70, 32, 32, 3, 1, 1, 1, 1);
  run_case(&(cv_case){K_S1, 33, 6, 8, 8, 11, 1, 1, 1, 1, 3});
  run_dinp_case(33, 11, 6, 8, 8, 3, 1, 1, 1, 1);
  run_case(&(cv_case){K_S1, 5, 16, 16, 16, 3, 1, 1, 1, 1, 3});
  run_dinp_case(5, 3, 16, 16, 16, 3, 1, 1, 1, 1);
  run_case(&(cv_case){K_S1, 2, 5, 48, 48, 7, 1, 1, 1, 1, 3});
  run_dinp_case(2, 7, 5, 48, 48, 3, 1, 1, 1, 1);
  run_case(&(cv_case){K_S1, 3, 6, 18, 18, 5, 0, 0, 0, 0, 3}); /* 16x16 out, no padding */
  run_dinp_case(3, 6, 5, 18, 18, 3, 0, 0, 0, 0);
  run_case(&(cv_case){K_S1, 2, 4, 17, 17, 7, 0, 1, 0, 1, 3}); /* one-sided pads */
  run_dinp_case(2, 4, 7, 17, 17, 3, 0, 1, 0, 1);
  run_case(&(cv_case){K_S1, 3, 5, 16, 16, 9, 2, 2, 2, 2, 5}); /* 5x5 */
  run_dinp_case(3, 5, 9, 16, 16, 5, 2, 2, 2, 2);
  run_case(&(cv_case){K_S1, 2, 40, 8, 8, 12, 2, 2, 2, 2, 5});
  run_dinp_case(2, 40, 12, 8, 8, 5, 2, 2, 2, 2);
  /* Winograd: channel counts 1 .. 256 (blocks of 8 partly empty), odd sides (a last tile row
   * or column half outside), one tile row a vector (32, 47 wide: 16 + 8 tiles), two (16, 15,
   * 14 wide), part of one (8, 4, 2, 1), batches whose tiles span panels and images, the
   * widest rows the AVX2 kernels take (1024); batches of enough bands that on AVX2 each
   * thread takes bands of its own, the last one shorter (9 and 11 images) */
  setenv("SDE_NN_WINOGRAD", "2", 1);
  const int wc[][5] = {{1, 1, 1, 1, 1},    {2, 1, 5, 3, 3},     {3, 3, 17, 7, 5},
                       {2, 13, 9, 16, 16}, {3, 37, 40, 15, 17}, {1, 64, 64, 32, 32},
                       {2, 33, 70, 9, 33}, {2, 40, 12, 33, 47}, {5, 20, 24, 16, 15},
                       {4, 8, 8, 14, 14},  {3, 8, 8, 8, 8},     {2, 8, 8, 2, 2},
                       {1, 5, 3, 1, 7},    {37, 6, 11, 8, 8},   {1, 256, 256, 8, 8},
                       {2, 128, 256, 16, 16}, {1, 256, 3, 12, 11}, {8, 3, 256, 32, 32},
                       {1, 3, 5, 6, 1024},  {2, 4, 3, 9, 1021}, {9, 24, 20, 16, 16},
                       {11, 16, 16, 32, 32}};
  /* on AVX2 both tile sizes, F(2x2, 3x3) and F(4x4, 3x3) */
  for (int tile = 2; tile <= (strcmp(sde_cpu_kernels(), "avx2") ? 2 : 4); tile += 2) {
    setenv("SDE_NN_WINOGRAD_TILE", tile == 4 ? "4" : "2", 1);
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++)
      run_wino_case(wc[i][0], wc[i][1], wc[i][2], wc[i][3], wc[i][4]);
    /* the input gradient of every shape whose transpose (C_in and C_out swapped) is above */
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++)
      run_wino_dinp_case(wc[i][0], wc[i][2], wc[i][1], wc[i][3], wc[i][4]);
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++)
      run_wino_dw_case(wc[i][0], wc[i][1], wc[i][2], wc[i][3], wc[i][4]);
  }
  unsetenv("SDE_NN_WINOGRAD_TILE");
  unsetenv("SDE_NN_WINOGRAD");
  /* every input-gradient path in store mode (the path named is the one these shapes take
   * on AVX2; other kernel sets take their own for them) */
  run_dinp_store_case("Winograd F(4x4)", 2, 32, 40, 32, 32, 3, 1, 1);
  run_dinp_store_case("Winograd F(4x4), 16 wide", 3, 64, 96, 16, 16, 3, 1, 1);
  run_dinp_store_case("Winograd F(2x2)", 3, 64, 96, 14, 14, 3, 1, 1);
  run_dinp_store_case("direct 3x3", 2, 13, 17, 8, 8, 3, 1, 1);
  run_dinp_store_case("direct 5x5", 2, 5, 9, 16, 16, 5, 1, 2);
  run_dinp_store_case("1x1, GEMM", 3, 8, 12, 8, 8, 1, 1, 0);
  run_dinp_store_case("stride 2, im2col", 2, 6, 10, 16, 16, 3, 2, 1);
  const int wino = wino_paths_on();
  run_wino_dispatch(1, 128, 128, 32, 32, wino ? 4 : 0);
  run_wino_dispatch(3, 256, 256, 16, 16, wino ? 4 : 0); /* AVX2: 16 4x4 tiles from 128 channels */
  run_wino_dispatch(1, 128, 128, 16, 16, wino ? 4 : 0);
  run_wino_dispatch(2, 96, 128, 16, 16, wino ? 4 : 0); /* AVX2: planes 16 wide from 32 */
  run_wino_dispatch(1, 32, 32, 16, 16, wino ? 4 : 0);
  run_wino_dispatch(1, 64, 64, 29, 32, wino ? 4 : 0); /* 64 tiles of 4x4 */
  run_wino_dispatch(1, 64, 64, 28, 32, wino ? 2 : 0);
  run_wino_dispatch(1, 128, 128, 28, 32, wino ? 4 : 0);
  run_wino_dispatch(1, 32, 40, 15, 15, wino ? 2 : 0);
  run_wino_dispatch(2, 32, 40, 32, 32, wino ? 4 : 0);
  run_wino_dispatch(3, 64, 96, 16, 16, wino ? 4 : 0);
  const int avx2 = !strcmp(sde_cpu_kernels(), "avx2");
  run_wino_dispatch(2, 32, 48, 13, 16, avx2 ? 4 : 0); /* (AVX-512: 56 tiles of 2x2, direct) */
  run_wino_dispatch(1, 64, 64, 16, 14, avx2 ? 2 : 0); /* 14 wide: F(2x2) (AVX-512: direct) */
  run_wino_dispatch(2, 256, 256, 8, 8, avx2 ? 2 : 0); /* AVX2: planes 7-14 wide from 64 */
  run_wino_dispatch(1, 64, 96, 8, 8, avx2 ? 2 : 0);
  run_wino_dispatch(3, 64, 64, 12, 12, avx2 ? 2 : 0);
  run_wino_dispatch(32, 32, 64, 8, 8, 0);
  run_wino_dispatch(4, 64, 64, 4, 4, 0);
  /* by batch (training), AVX2: F(4x4) on 8x8 from batch 8 and 32 channels */
  run_wino_dispatch_by(1, 8, 32, 64, 8, 8, avx2 ? 4 : 0);
  run_wino_dispatch_by(1, 9, 64, 64, 8, 8, avx2 ? 4 : 0);
  run_wino_dispatch_by(1, 4, 64, 64, 8, 8, avx2 ? 2 : 0); /* batch 4 */
  run_wino_dispatch_by(1, 32, 16, 64, 8, 8, 0);           /* 16 channels */
  run_wino_dispatch(8, 16, 16, 16, 16, 0); /* AVX2: F(2x2) from 32 channels */
  run_wino_dispatch(2, 16, 128, 32, 32, avx2 ? 4 : 0); /* AVX2: F(4x4) from 16 channels */
  run_wino_dispatch(2, 128, 16, 32, 32, avx2 ? 4 : 0);
  run_wino_dispatch(2, 8, 128, 32, 32, 0);
  run_wino_dw_dispatch(2, 128, 128, 64, 64, "4", avx2);
  run_wino_dw_dispatch(8, 32, 40, 32, 32, "4", avx2);
  run_wino_dw_dispatch(8, 16, 64, 32, 32, "4", avx2); /* from 16 channels */
  run_wino_dw_dispatch(1, 128, 128, 32, 32, "4", 0);  /* 64 tiles */
  run_wino_dw_dispatch(32, 8, 64, 32, 32, "4", 0);    /* 8 channels in */
  /* F(2x2) shapes 15 or more wide: from 1024 tiles of 2x2 at 64 channels, 2048 at 32 */
  run_wino_dw_dispatch(32, 64, 96, 16, 16, "4", avx2); /* planes 16 wide: F(4x4) */
  run_wino_dw_dispatch(16, 64, 128, 16, 16, "4", avx2);
  run_wino_dw_dispatch(32, 128, 128, 16, 16, "4", avx2);
  run_wino_dw_dispatch(32, 48, 64, 16, 16, "4", avx2);
  run_wino_dw_dispatch(8, 64, 64, 16, 16, "4", avx2); /* 128 tiles of 4x4 */
  run_wino_dw_dispatch(4, 128, 128, 16, 16, "4", 0);  /* 64 */
  run_wino_dw_dispatch(16, 32, 48, 16, 16, "4", avx2); /* 32 channels */
  run_wino_dw_dispatch(32, 16, 32, 16, 16, "2", 0);  /* 16 channels */
  run_wino_dw_dispatch(32, 64, 64, 16, 14, "2", avx2); /* 14 wide: F(2x2), 2048 tiles */
  /* planes 7-14 wide: from 256 tiles at 64 channels */
  run_wino_dw_dispatch(32, 64, 64, 8, 8, "2", avx2);
  run_wino_dw_dispatch(16, 128, 64, 8, 8, "2", avx2);
  run_wino_dw_dispatch(8, 64, 64, 8, 8, "2", 0);   /* 128 tiles */
  run_wino_dw_dispatch(128, 32, 64, 8, 8, "2", 0); /* 32 channels */
  run_wino_dw_dispatch_by(1, 16, 32, 64, 8, 8, "4", avx2); /* by batch: F(4x4) from 16 */
  run_wino_dw_dispatch_by(1, 32, 64, 64, 8, 8, "4", avx2);
  run_wino_dw_dispatch_by(1, 8, 64, 64, 8, 8, "4", 0);
  /* prepared weights: made where the AVX2 kernels take them (the AVX-512 and GEMM paths
   * prepare per call), with the SIMD paths switched off never */
  const int prep = avx2 && !getenv("SDE_NN_NO_DIRECT_CONV");
  run_prep_case("Winograd F(4x4)", 32, 40, 32, 3, 1, prep);
  run_prep_case("Winograd F(4x4), 16 wide", 64, 48, 16, 3, 1, prep);
  run_prep_case("Winograd F(2x2)", 64, 64, 14, 3, 1, prep);
  run_prep_case("direct 3x3", 13, 17, 8, 3, 1, prep);
  run_prep_case("direct 5x5", 5, 9, 16, 5, 1, prep);
  run_prep_case("1x1, GEMM", 8, 12, 8, 1, 1, 0);
  run_prep_case("stride 2", 6, 10, 16, 3, 2, 0);
  run_fused_case(2, 32, 40, 48, 48, prep); /* F(4x4): rows of 8 + 4 tiles */
  run_fused_case(1, 16, 20, 34, 34, prep); /* F(4x4): 8 + 1 tiles, the last one cut */
  run_fused_case(3, 64, 36, 17, 17, prep); /* F(2x2): 8 + 1 tiles */
  run_fused_case(3, 32, 32, 16, 16, prep); /* F(4x4): 2 tile rows a vector */
  run_fused_case_by(1, 9, 32, 40, 8, 8, prep); /* by batch, F(4x4): 4 tile rows, 2 left */
  run_fused_case(2, 64, 64, 8, 8, prep);   /* F(2x2): 2 tile rows of 4 a vector */
  run_fused_case(1, 64, 64, 9, 8, prep);   /* F(2x2): 5 tile rows (a pair and a half), cut */
  run_fused_case(1, 96, 64, 13, 13, prep); /* F(2x2): 4 + 3 tiles, the last one cut */
  sde_nn_conv2d_shape bad = sde_nn_conv2d_shape_make(1, 0, 8, 8, 4, 3, 1, 1);
  sde_nn_conv2d_prep *none = (sde_nn_conv2d_prep *)&bad;
  const int brc = sde_nn_conv2d_prepare(NULL, &bad, &none);
  TAP_CHECK(brc == SDE_EINVAL && none == NULL, "prepare: a shape with 0 input channels: %s",
            brc ? sde_errmsg() : "accepted");
  return tap_done();
}
