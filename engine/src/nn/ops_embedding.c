/* CPU reference ops (scoresde/nn.h): the Fourier and sinusoidal time embeddings.
 * Determinism as in ops_conv.c: parallel loops over independent outputs, reductions
 * in a fixed order by one thread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../parallel.h"
#include "ops_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"

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

