/* Ops the NCSN++ graph needs beyond scoresde/nn.h.
 *
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
#include <stddef.h>
#include <string.h>

#include "../backend/backend.h" /* declares the three functions of this file */
#include "../parallel.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"

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

size_t sde_ncsnpp_fir_upsample_conv2x_scratch_floats(int B, int C_in, int H, int W, int C_out) {
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  size_t z = (size_t)B * C_in * (2 * H - 1) * (2 * W - 1);      /* zero-inserted input */
  size_t t = (size_t)B * C_out * (2 * H + 1) * (2 * W + 1);     /* conv output */
  size_t r = (size_t)B * C_out * (2 * H + 1) * (2 * W);         /* after the row blur */
  return 2 * z + t + r + sde_nn_conv2d_scratch_floats(&s) + 64;
}

int sde_ncsnpp_fir_upsample_conv2x_forward(float *out, const float *inp, const float *weight,
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

int sde_ncsnpp_fir_upsample_conv2x_backward(float *dinp, float *dweight, float *dbias,
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
