/* CPU reference ops (scoresde/nn.h): the core of spatial self-attention
 * (softmax(qᵀk/√C)·v over the H·W positions) on tiled GEMMs.
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
  sde_ops_gemm_batch(B, 0, 1, 0, N, N, C, scale, q, N, xs, k, N, xs, 0.0f, att, N, as);
  softmax_job j = {.att = att, .N = N};
  int64_t rows = (int64_t)B * N;
  sde_parallel_for(rows, grain(rows, (size_t)rows * N), softmax_rows, &j);
  /* out_b[C,N] = v_b[C,N] · att_b[N,N]ᵀ */
  sde_ops_gemm_batch(B, 0, 0, 1, C, N, N, 1.0f, v, N, xs, att, N, as, 0.0f, out, N, xs);
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
    if (dv) sde_ops_gemm_tiled(0, 0, C, N, N, 1.0f, g, N, a, N, 1.0f, dv + xo, N);
    if (!dq && !dk) continue;
    /* da[N,N] = g[C,N]ᵀ · v[C,N] */
    sde_ops_gemm_tiled(1, 0, N, N, C, 1.0f, g, N, v + xo, N, 0.0f, da, N);
    softmax_job j = {.da = da, .a = a, .scale = scale, .N = N};
    sde_parallel_for(N, grain(N, (size_t)N * N), softmax_backward_rows, &j);
    /* dq[C,N] += k[C,N] · dl[N,N]ᵀ ; dk[C,N] += q[C,N] · dl[N,N] */
    if (dq) sde_ops_gemm_tiled(0, 1, C, N, N, 1.0f, k + xo, N, da, N, 1.0f, dq + xo, N);
    if (dk) sde_ops_gemm_tiled(0, 0, C, N, N, 1.0f, q + xo, N, da, N, 1.0f, dk + xo, N);
  }
  free(owned);
  return SDE_OK;
}

