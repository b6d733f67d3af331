/* Per-element math of the CUDA kernels, as __host__ __device__ inline functions.
 *
 * Each kernel of the CUDA backend is "one thread computes one output with one of these
 * functions" (or a fixed-order reduction around them), so test_cuda_host.cu can run the
 * very same code on the CPU over every index and compare it with the reference ops of
 * nn.h and rng.h without a GPU. The arithmetic follows engine/src/nn/ops_*.c operation by
 * operation; the random numbers and the Adam update are engine/src/exact_math.h itself. */
#ifndef SDE_CUDA_MATH_CUH
#define SDE_CUDA_MATH_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../exact_math.h" /* Philox, Box-Muller, Adam: shared with the CPU */

/* =======================================================================================
 * Sampler updates and dropout */

/* out = a·x + c·y in double, rounded once (the axpby_rows contract) */
SDE_HOST_DEVICE float sde_axpby_elem(double a, float x, double c, float y) {
  return (float)(a * (double)x + c * (double)y);
}

/* dropout: the mask value of a uniform u (0 with probability p, else keep = 1/(1-p)) */
SDE_HOST_DEVICE float sde_dropout_elem(float u, float p, float keep) { return u < p ? 0.0f : keep; }

/* =======================================================================================
 * Activations and normalisation */

SDE_HOST_DEVICE float sde_silu(float x) { return x / (1.0f + expf(-x)); }
/* dout · silu'(x) */
SDE_HOST_DEVICE float sde_silu_grad(float dout, float x) {
  float sg = 1.0f / (1.0f + expf(-x));
  return dout * sg * (1.0f + x * (1.0f - sg));
}

/* GroupNorm: rstd from the double sum of squared deviations of n values */
SDE_HOST_DEVICE float sde_gn_rstd(double ss, double n, float eps) { return (float)(1.0 / sqrt(ss / n + eps)); }
SDE_HOST_DEVICE float sde_gn_apply(float x, float mean, float scale, float shift) {
  return (x - mean) * scale + shift;
}
/* dx of one element: rstd·(dout·gamma − m1 − xhat·m2), m1 = mean(dxhat), m2 = mean(dxhat·xhat) */
SDE_HOST_DEVICE float sde_gn_dx(float dy, float x, float gm, float mu, float rs, float m1, float m2) {
  float xhat = (x - mu) * rs;
  return rs * (dy * gm - m1 - xhat * m2);
}

/* softmax backward times the logit scale: scale·a·(da − Σ a·da) */
SDE_HOST_DEVICE float sde_softmax_dlogit(float a, float da, float dot, float scale) {
  return scale * a * (da - dot);
}

/* =======================================================================================
 * FIR resampling (ops.c fir_build/fir_apply): separable, ≤ 4 taps per axis. */

/* UPCONV / UPCONV_T: the [1,3,3,1]/4 blur (gain 4, pad 1) after the stride-2 transposed
 * conv of the FIR upsample-conv (nn/ops_resample.c), t[2H+1] -> out[2H], and its transpose. */
enum { SDE_FIR_UP = 0, SDE_FIR_UP_T, SDE_FIR_DOWN, SDE_FIR_DOWN_T, SDE_FIR_BLUR2, SDE_FIR_BLUR2_T,
       SDE_FIR_UPCONV, SDE_FIR_UPCONV_T };

SDE_HOST_DEVICE void sde_fir_tap_add(int *n, int idx[4], float w[4], int i, float wi, int n_in) {
  if (i < 0 || i >= n_in) return;
  idx[*n] = i;
  w[*n] = wi;
  (*n)++;
}

/* The two taps of a parity-dependent 2-tap filter (x2 upsample, the downsample's
 * transpose): output o sits at m = o/2, even o takes (m-1, m), odd o (m, m+1). */
SDE_HOST_DEVICE void sde_fir_taps_pair(int *n, int idx[4], float w[4], int o, float outer, float inner,
                              int n_in) {
  const int m = o / 2;
  if (o % 2 == 0) {
    sde_fir_tap_add(n, idx, w, m - 1, outer, n_in);
    sde_fir_tap_add(n, idx, w, m, inner, n_in);
  } else {
    sde_fir_tap_add(n, idx, w, m, inner, n_in);
    sde_fir_tap_add(n, idx, w, m + 1, outer, n_in);
  }
}

/* Four symmetric taps (outer, inner, inner, outer) at first, first+step, ... (step ±1;
 * the order is the summation order of ops.c). */
SDE_HOST_DEVICE void sde_fir_taps_run(int *n, int idx[4], float w[4], int first, int step, float outer,
                             float inner, int n_in) {
  sde_fir_tap_add(n, idx, w, first, outer, n_in);
  sde_fir_tap_add(n, idx, w, first + step, inner, n_in);
  sde_fir_tap_add(n, idx, w, first + 2 * step, inner, n_in);
  sde_fir_tap_add(n, idx, w, first + 3 * step, outer, n_in);
}

/* taps of output index o along one axis of length n_in; returns their count */
SDE_HOST_DEVICE int sde_fir_taps(int kind, int o, int n_in, int idx[4], float w[4]) {
  int n = 0;
  switch (kind) {
    case SDE_FIR_UP: sde_fir_taps_pair(&n, idx, w, o, 0.25f, 0.75f, n_in); break;
    case SDE_FIR_UP_T: sde_fir_taps_run(&n, idx, w, 2 * o - 1, 1, 0.25f, 0.75f, n_in); break;
    case SDE_FIR_DOWN: sde_fir_taps_run(&n, idx, w, 2 * o - 1, 1, 0.125f, 0.375f, n_in); break;
    case SDE_FIR_DOWN_T: sde_fir_taps_pair(&n, idx, w, o, 0.125f, 0.375f, n_in); break;
    case SDE_FIR_BLUR2: sde_fir_taps_run(&n, idx, w, o - 2, 1, 0.125f, 0.375f, n_in); break;
    case SDE_FIR_BLUR2_T: sde_fir_taps_run(&n, idx, w, o - 1, 1, 0.125f, 0.375f, n_in); break;
    /* out[o] = Σ_j t[o-1+j]·k[j], k = [1,3,3,1]/4 */
    case SDE_FIR_UPCONV: sde_fir_taps_run(&n, idx, w, o - 1, 1, 0.25f, 0.75f, n_in); break;
    /* SDE_FIR_UPCONV_T: dt[o] = Σ_j g[o+1-j]·k[j] */
    default: sde_fir_taps_run(&n, idx, w, o + 1, -1, 0.25f, 0.75f, n_in); break;
  }
  return n;
}

/* One output (oh, ow) of a plane x[H,W]: rows filtered along W first, then combined along
 * H, each sum in tap order from 0 (the order of ops.c fir_apply). */
SDE_HOST_DEVICE float sde_fir_elem(const float *x, int H, int W, int kind, int oh, int ow) {
  int ri[4], ci[4];
  float rw[4], cw[4];
  int nr = sde_fir_taps(kind, oh, H, ri, rw), nc = sde_fir_taps(kind, ow, W, ci, cw);
  float acc = 0.0f;
  for (int a = 0; a < nr; a++) {
    const float *xr = x + (size_t)ri[a] * W;
    float t = 0.0f;
    for (int e = 0; e < nc; e++) t += cw[e] * xr[ci[e]];
    acc += rw[a] * t;
  }
  return acc;
}

/* zero padding: element (h, w) of the padded plane of x[H,W] padded by (pt top, pl left) */
SDE_HOST_DEVICE float sde_pad_elem(const float *x, int H, int W, int pt, int pl, int h, int w) {
  h -= pt;
  w -= pl;
  return (h >= 0 && h < H && w >= 0 && w < W) ? x[(size_t)h * W + w] : 0.0f;
}

/* zero insert: element (h, w) of z[2H-1,2W-1] with x[H,W] at the even positions */
SDE_HOST_DEVICE float sde_zero_insert_elem(const float *x, int W, int h, int w) {
  return ((h | w) & 1) ? 0.0f : x[(size_t)(h >> 1) * W + (w >> 1)];
}
/* its transpose: the gradient of x at (i, j) from dz[2H-1, Wz] */
SDE_HOST_DEVICE float sde_zero_insert_grad(const float *dz, int Wz, int i, int j) {
  return dz[(size_t)(2 * i) * Wz + 2 * j];
}

/* nearest x2 backward: the sum of the 2x2 block of dout[2H,2W] over input (i, j) */
SDE_HOST_DEVICE float sde_nearest_up_grad(const float *g, int W, int i, int j) {
  const float *g0 = g + (size_t)(2 * i) * (2 * W), *g1 = g0 + 2 * W;
  return (g0[2 * j] + g0[2 * j + 1]) + (g1[2 * j] + g1[2 * j + 1]);
}
/* 2x2 average of x[H,W] at output (i, j) */
SDE_HOST_DEVICE float sde_avgpool_elem(const float *x, int W, int i, int j) {
  const float *x0 = x + (size_t)(2 * i) * W, *x1 = x0 + W;
  return ((x0[2 * j] + x0[2 * j + 1]) + (x1[2 * j] + x1[2 * j + 1])) * 0.25f;
}

/* =======================================================================================
 * Embeddings (float argument order as ops.c, sin/cos in double) */

#define SDE_PI_F 3.14159265358979323846f

/* proj = ((u·W)·2)·π in float */
SDE_HOST_DEVICE float sde_fourier_proj(float u, float w) { return u * w * 2.0f * SDE_PI_F; }
/* one term of du (times W) or dW (times u): (g_sin·cos − g_cos·sin)·2π·factor */
SDE_HOST_DEVICE double sde_fourier_grad_term(float g_sin, float g_cos, float proj, float factor) {
  const double two_pi = 2.0 * (double)SDE_PI_F;
  double p = (double)proj;
  return (g_sin * cos(p) - g_cos * sin(p)) * two_pi * factor;
}

/* freq_k = exp(k · (−ln(10000)/(half−1))) as the float32 PyTorch code */
SDE_HOST_DEVICE float sde_timestep_freq(int k, int half) {
  float neg = (float)(-log(10000.0) / (double)(half - 1));
  return (float)exp((double)((float)k * neg));
}
/* one term of dt: f·(g_sin·cos(t·f) − g_cos·sin(t·f)) */
SDE_HOST_DEVICE double sde_timestep_grad_term(float g_sin, float g_cos, float t, float f) {
  double arg = (double)(t * f);
  return f * (g_sin * cos(arg) - g_cos * sin(arg));
}

#endif
