/* CPU reference ops (scoresde/nn.h): resampling by 2: FIR up/down (with and
 * without a conv), nearest upsampling and average pooling.
 * Determinism as in ops_conv.c: parallel loops over independent outputs, reductions
 * in a fixed order by one thread. */
#include <math.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../parallel.h"
#include "ops_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"

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
    for (int c = 0; c < W; c++) y0[2 * c] = y0[2 * c + 1] = y1[2 * c] = y1[2 * c + 1] = x[c];
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
 * FIR upsample with a 3x3 conv (up_or_down_sampling.Conv2d(up=True), upsample_conv_2d):
 * a stride-2 transposed conv with the flipped kernel, then the [1,3,3,1] blur (gain 4)
 * with one pixel of zero padding on each side. The transposed conv equals a zero-insert
 * (x at even positions, [2H-1, 2W-1]) correlated with the unflipped kernel, pad 2:
 *   t[o, y, x] = Σ_{i,a,b} z[i, y-2+a, x-2+b] w[o,i,a,b]      t [B, C_out, 2H+1, 2W+1]
 *   out[n] = Σ_{j=0..3} t[n-1+j] · k[j] per axis, k = [1,3,3,1]/4  ->  [B, C_out, 2H, 2W]
 * then + bias. (The PyTorch port slices with a negative step and cannot run this; the JAX
 * port computes the same thing.)
 *
 * Backward: db = Σ dout; the two blur passes transposed (dt = blurᵀ dout); the conv's
 * input and weight gradients on the recomputed zero-insert z; dx = dz at even positions.
 * The scratch size covers both directions (the backward also holds dz after the conv
 * scratch). */
static sde_nn_conv2d_shape upconv_shape(int B, int C_in, int H, int W, int C_out) {
  return sde_nn_conv2d_shape_make(B, C_in, 2 * H - 1, 2 * W - 1, C_out, 3, 1, 2);
}

static const float blur_k[4] = {0.25f, 0.75f, 0.75f, 0.25f};

/* The loops below run over planes (or channels); H, W are the input's. */
typedef struct {
  float *dst, *mid;         /* output planes; the row-blurred intermediate */
  const float *src, *bias;  /* input planes */
  int B, H, W, C_out;
} up_job;

/* z[p] = x[p] at even positions of a zero [2H-1, 2W-1] plane */
static void zero_insert_planes(void *ctx, int64_t p0, int64_t p1) {
  const up_job *j = ctx;
  const int H = j->H, W = j->W, Hz = 2 * H - 1, Wz = 2 * W - 1;
  for (int64_t p = p0; p < p1; p++) {
    float *zp = j->dst + (size_t)p * Hz * Wz;
    const float *xp = j->src + (size_t)p * H * W;
    memset(zp, 0, sizeof(float) * (size_t)Hz * Wz);
    for (int i = 0; i < H; i++)
      for (int k = 0; k < W; k++) zp[(size_t)(2 * i) * Wz + 2 * k] = xp[(size_t)i * W + k];
  }
}

/* dx[p] += dz[p] at even positions (the adjoint of zero_insert_planes) */
static void zero_insert_backward_planes(void *ctx, int64_t p0, int64_t p1) {
  const up_job *j = ctx;
  const int H = j->H, W = j->W, Wz = 2 * W - 1;
  for (int64_t p = p0; p < p1; p++) {
    const float *zp = j->src + (size_t)p * (2 * H - 1) * Wz;
    float *xp = j->dst + (size_t)p * H * W;
    for (int i = 0; i < H; i++)
      for (int k = 0; k < W; k++) xp[(size_t)i * W + k] += zp[(size_t)(2 * i) * Wz + 2 * k];
  }
}

/* out[p] = blur of t[p] along rows, then columns, + bias */
static void blur_planes(void *ctx, int64_t p0, int64_t p1) {
  const up_job *j = ctx;
  const int Ht = 2 * j->H + 1, Wt = 2 * j->W + 1, Ho = 2 * j->H, Wo = 2 * j->W;
  const float *k = blur_k;
  for (int64_t p = p0; p < p1; p++) {
    const float *tp = j->src + (size_t)p * Ht * Wt;
    float *rp = j->mid + (size_t)p * Ht * Wo;
    for (int y = 0; y < Ht; y++)
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int i = 0; i < 4; i++) {
          int xx = x - 1 + i;
          if (xx >= 0 && xx < Wt) acc += tp[(size_t)y * Wt + xx] * k[i];
        }
        rp[(size_t)y * Wo + x] = acc;
      }
    float *op = j->dst + (size_t)p * Ho * Wo;
    const float b = j->bias ? j->bias[p % j->C_out] : 0.0f;
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int i = 0; i < 4; i++) {
          int yy = y - 1 + i;
          if (yy >= 0 && yy < Ht) acc += rp[(size_t)yy * Wo + x] * k[i];
        }
        op[(size_t)y * Wo + x] = acc + b;
      }
  }
}

/* dt[p] = blurᵀ dout[p]: the column blur transposed, then the row blur transposed */
static void blur_backward_planes(void *ctx, int64_t p0, int64_t p1) {
  const up_job *j = ctx;
  const int Ht = 2 * j->H + 1, Wt = 2 * j->W + 1, Ho = 2 * j->H, Wo = 2 * j->W;
  const float *k = blur_k;
  for (int64_t p = p0; p < p1; p++) {
    const float *gp = j->src + (size_t)p * Ho * Wo;
    float *rp = j->mid + (size_t)p * Ht * Wo;
    for (int yy = 0; yy < Ht; yy++) /* yy = y - 1 + i */
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int i = 0; i < 4; i++) {
          int y = yy + 1 - i;
          if (y >= 0 && y < Ho) acc += gp[(size_t)y * Wo + x] * k[i];
        }
        rp[(size_t)yy * Wo + x] = acc;
      }
    float *tp = j->dst + (size_t)p * Ht * Wt;
    for (int y = 0; y < Ht; y++) /* xx = x - 1 + i */
      for (int xx = 0; xx < Wt; xx++) {
        float acc = 0.0f;
        for (int i = 0; i < 4; i++) {
          int x = xx + 1 - i;
          if (x >= 0 && x < Wo) acc += rp[(size_t)y * Wo + x] * k[i];
        }
        tp[(size_t)y * Wt + xx] = acc;
      }
  }
}

/* dbias[o] += Σ dout[:, o], one output channel per thread, the batch in order */
static void dbias_channels(void *ctx, int64_t o0, int64_t o1) {
  const up_job *j = ctx;
  const size_t plane = (size_t)(2 * j->H) * (2 * j->W);
  for (int64_t o = o0; o < o1; o++) {
    double acc = 0.0;
    for (int b = 0; b < j->B; b++) {
      const float *g = j->src + ((size_t)b * j->C_out + o) * plane;
      for (size_t i = 0; i < plane; i++) acc += g[i];
    }
    j->dst[o] += (float)acc;
  }
}

size_t sde_nn_fir_upsample_conv2x_scratch_floats(int B, int C_in, int H, int W, int C_out) {
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  size_t z = (size_t)B * C_in * (2 * H - 1) * (2 * W - 1);      /* zero-inserted input */
  size_t t = (size_t)B * C_out * (2 * H + 1) * (2 * W + 1);     /* conv output */
  size_t r = (size_t)B * C_out * (2 * H + 1) * (2 * W);         /* after the row blur */
  return 2 * z + t + r + sde_nn_conv2d_scratch_floats(&s) + 64;
}

int sde_nn_fir_upsample_conv2x_forward(float *out, const float *inp, const float *weight,
                                           const float *bias, int B, int C_in, int H, int W,
                                           int C_out, float *scratch) {
  if (B < 1 || C_in < 1 || C_out < 1 || H < 1 || W < 1 || !scratch)
    return sde_fail(SDE_EINVAL, "fir_upsample_conv2x: bad shape or no scratch");
  const int Hz = 2 * H - 1, Wz = 2 * W - 1, Ht = 2 * H + 1, Wt = 2 * W + 1, Wo = 2 * W;
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  float *z = scratch;
  float *t = z + (size_t)B * C_in * Hz * Wz;
  float *r = t + (size_t)B * C_out * Ht * Wt;
  float *cs = r + (size_t)B * C_out * Ht * Wo;
  up_job zj = {.dst = z, .src = inp, .B = B, .H = H, .W = W, .C_out = C_out};
  sde_parallel_for(B * C_in, 1, zero_insert_planes, &zj);
  int rc = sde_nn_conv2d_forward(t, z, weight, NULL, &s, cs);
  if (rc) return rc;
  up_job bj = {.dst = out, .mid = r, .src = t, .bias = bias, .B = B, .H = H, .W = W, .C_out = C_out};
  sde_parallel_for(B * C_out, 1, blur_planes, &bj);
  return SDE_OK;
}

int sde_nn_fir_upsample_conv2x_backward(float *dinp, float *dweight, float *dbias,
                                            const float *dout, const float *inp,
                                            const float *weight, int B, int C_in, int H, int W,
                                            int C_out, float *scratch) {
  if (B < 1 || C_in < 1 || C_out < 1 || H < 1 || W < 1 || !scratch)
    return sde_fail(SDE_EINVAL, "fir_upsample_conv2x: bad shape or no scratch");
  const int Hz = 2 * H - 1, Wz = 2 * W - 1, Ht = 2 * H + 1, Wt = 2 * W + 1, Wo = 2 * W;
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  const size_t nz = (size_t)B * C_in * Hz * Wz;
  float *z = scratch;
  float *dt = z + nz;
  float *dr = dt + (size_t)B * C_out * Ht * Wt;
  float *cs = dr + (size_t)B * C_out * Ht * Wo;
  float *dz = cs + sde_nn_conv2d_scratch_floats(&s);
  if (dbias) {
    up_job j = {.dst = dbias, .src = dout, .B = B, .H = H, .W = W, .C_out = C_out};
    sde_parallel_for(C_out, 1, dbias_channels, &j);
  }
  if (!dinp && !dweight) return SDE_OK;
  up_job bj = {.dst = dt, .mid = dr, .src = dout, .B = B, .H = H, .W = W, .C_out = C_out};
  sde_parallel_for(B * C_out, 1, blur_backward_planes, &bj);
  up_job zj = {.dst = z, .src = inp, .B = B, .H = H, .W = W, .C_out = C_out};
  sde_parallel_for(B * C_in, 1, zero_insert_planes, &zj);
  if (dinp) memset(dz, 0, sizeof(float) * nz);
  int rc = sde_nn_conv2d_backward(dinp ? dz : NULL, dweight, NULL, dt, z, weight, &s, cs);
  if (rc || !dinp) return rc;
  up_job xj = {.dst = dinp, .src = dz, .B = B, .H = H, .W = W, .C_out = C_out};
  sde_parallel_for(B * C_in, 1, zero_insert_backward_planes, &xj);
  return SDE_OK;
}
