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
#include "scoresde/error.h"
#include "scoresde/nn.h"

static sde_nn_conv2d_shape upconv_shape(int B, int C_in, int H, int W, int C_out) {
  return sde_nn_conv2d_shape_make(B, C_in, 2 * H - 1, 2 * W - 1, C_out, 3, 1, 2);
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
  const int Hz = 2 * H - 1, Wz = 2 * W - 1, Ht = 2 * H + 1, Wt = 2 * W + 1, Ho = 2 * H, Wo = 2 * W;
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  float *z = scratch;
  float *t = z + (size_t)B * C_in * Hz * Wz;
  float *r = t + (size_t)B * C_out * Ht * Wt;
  float *cs = r + (size_t)B * C_out * Ht * Wo;
  const int planes_in = B * C_in, planes_out = B * C_out;
#pragma omp parallel for schedule(static)
  for (int p = 0; p < planes_in; p++) {
    float *zp = z + (size_t)p * Hz * Wz;
    const float *xp = inp + (size_t)p * H * W;
    memset(zp, 0, sizeof(float) * (size_t)Hz * Wz);
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++) zp[(size_t)(2 * i) * Wz + 2 * j] = xp[(size_t)i * W + j];
  }
  int rc = sde_nn_conv2d_forward(t, z, weight, NULL, &s, cs);
  if (rc) return rc;
  static const float k[4] = {0.25f, 0.75f, 0.75f, 0.25f};
#pragma omp parallel for schedule(static)
  for (int p = 0; p < planes_out; p++) {
    const float *tp = t + (size_t)p * Ht * Wt;
    float *rp = r + (size_t)p * Ht * Wo;
    for (int y = 0; y < Ht; y++)
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int j = 0; j < 4; j++) {
          int xx = x - 1 + j;
          if (xx >= 0 && xx < Wt) acc += tp[(size_t)y * Wt + xx] * k[j];
        }
        rp[(size_t)y * Wo + x] = acc;
      }
    float *op = out + (size_t)p * Ho * Wo;
    const float b = bias ? bias[p % C_out] : 0.0f;
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int j = 0; j < 4; j++) {
          int yy = y - 1 + j;
          if (yy >= 0 && yy < Ht) acc += rp[(size_t)yy * Wo + x] * k[j];
        }
        op[(size_t)y * Wo + x] = acc + b;
      }
  }
  return SDE_OK;
}

int sde_ncsnpp_fir_upsample_conv2x_backward(float *dinp, float *dweight, float *dbias,
                                            const float *dout, const float *inp,
                                            const float *weight, int B, int C_in, int H, int W,
                                            int C_out, float *scratch) {
  if (B < 1 || C_in < 1 || C_out < 1 || H < 1 || W < 1 || !scratch)
    return sde_fail(SDE_EINVAL, "fir_upsample_conv2x: bad shape or no scratch");
  const int Hz = 2 * H - 1, Wz = 2 * W - 1, Ht = 2 * H + 1, Wt = 2 * W + 1, Ho = 2 * H, Wo = 2 * W;
  sde_nn_conv2d_shape s = upconv_shape(B, C_in, H, W, C_out);
  const size_t nz = (size_t)B * C_in * Hz * Wz;
  float *z = scratch;
  float *dt = z + nz;
  float *dr = dt + (size_t)B * C_out * Ht * Wt;
  float *cs = dr + (size_t)B * C_out * Ht * Wo;
  float *dz = cs + sde_nn_conv2d_scratch_floats(&s);
  const int planes_in = B * C_in, planes_out = B * C_out;
  static const float k[4] = {0.25f, 0.75f, 0.75f, 0.25f};
  if (dbias) { /* one output channel per thread, batch in order */
#pragma omp parallel for schedule(static)
    for (int o = 0; o < C_out; o++) {
      double acc = 0.0;
      for (int b = 0; b < B; b++) {
        const float *g = dout + ((size_t)b * C_out + o) * Ho * Wo;
        for (size_t i = 0; i < (size_t)Ho * Wo; i++) acc += g[i];
      }
      dbias[o] += (float)acc;
    }
  }
  if (!dinp && !dweight) return SDE_OK;
#pragma omp parallel for schedule(static)
  for (int p = 0; p < planes_out; p++) {
    const float *gp = dout + (size_t)p * Ho * Wo;
    float *rp = dr + (size_t)p * Ht * Wo;
    for (int yy = 0; yy < Ht; yy++) /* column blur transposed: yy = y - 1 + j */
      for (int x = 0; x < Wo; x++) {
        float acc = 0.0f;
        for (int j = 0; j < 4; j++) {
          int y = yy + 1 - j;
          if (y >= 0 && y < Ho) acc += gp[(size_t)y * Wo + x] * k[j];
        }
        rp[(size_t)yy * Wo + x] = acc;
      }
    float *tp = dt + (size_t)p * Ht * Wt;
    for (int y = 0; y < Ht; y++) /* row blur transposed: xx = x - 1 + j */
      for (int xx = 0; xx < Wt; xx++) {
        float acc = 0.0f;
        for (int j = 0; j < 4; j++) {
          int x = xx + 1 - j;
          if (x >= 0 && x < Wo) acc += rp[(size_t)y * Wo + x] * k[j];
        }
        tp[(size_t)y * Wt + xx] = acc;
      }
  }
#pragma omp parallel for schedule(static)
  for (int p = 0; p < planes_in; p++) {
    float *zp = z + (size_t)p * Hz * Wz;
    const float *xp = inp + (size_t)p * H * W;
    memset(zp, 0, sizeof(float) * (size_t)Hz * Wz);
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++) zp[(size_t)(2 * i) * Wz + 2 * j] = xp[(size_t)i * W + j];
  }
  if (dinp) memset(dz, 0, sizeof(float) * nz);
  int rc = sde_nn_conv2d_backward(dinp ? dz : NULL, dweight, NULL, dt, z, weight, &s, cs);
  if (rc || !dinp) return rc;
#pragma omp parallel for schedule(static)
  for (int p = 0; p < planes_in; p++) {
    const float *zp = dz + (size_t)p * Hz * Wz;
    float *xp = dinp + (size_t)p * H * W;
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++) xp[(size_t)i * W + j] += zp[(size_t)(2 * i) * Wz + 2 * j];
  }
  return SDE_OK;
}
