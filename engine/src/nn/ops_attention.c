/* CPU reference ops (scoresde/nn.h): the core of spatial self-attention
 * (softmax(qᵀk/√C)·v over the H·W positions) on tiled GEMMs.
 * Determinism as in ops_conv.c: parallel loops over independent outputs, reductions
 * in a fixed order by one thread. */
#include <math.h>
#include <stdatomic.h>
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

typedef struct {
  float *dq, *dk, *dv, *scratch; /* scratch: the [N,N] da of a single caller, else NULL */
  const float *dout, *att, *q, *k, *v;
  int C, N;
  atomic_int failed;
  float scale;
} attn_bwd_job;

/* images [b0, b1). Each image's gradients are its own, so images can go to any thread; the
 * GEMMs and the softmax inside, called from a worker, run serially over the same ranges,
 * which gives the same bits as calling them from outside. */
static void attention_backward_images(void *ctx, int64_t b0, int64_t b1) {
  attn_bwd_job *j = ctx;
  const int C = j->C, N = j->N;
  float *da = j->scratch ? j->scratch : malloc((size_t)N * N * sizeof(float));
  if (!da) {
    atomic_store(&j->failed, 1);
    return;
  }
  for (int64_t b = b0; b < b1; b++) {
    size_t xo = (size_t)b * C * N;
    const float *a = j->att + (size_t)b * N * N, *g = j->dout + xo;
    /* dv[C,N] += g[C,N] · a[N,N] */
    if (j->dv) sde_ops_gemm_tiled(0, 0, C, N, N, 1.0f, g, N, a, N, 1.0f, j->dv + xo, N);
    if (!j->dq && !j->dk) continue;
    /* da[N,N] = g[C,N]ᵀ · v[C,N] */
    sde_ops_gemm_tiled(1, 0, N, N, C, 1.0f, g, N, j->v + xo, N, 0.0f, da, N);
    softmax_job sj = {.da = da, .a = a, .scale = j->scale, .N = N};
    sde_parallel_for(N, grain(N, (size_t)N * N), softmax_backward_rows, &sj);
    /* dq[C,N] += k[C,N] · dl[N,N]ᵀ ; dk[C,N] += q[C,N] · dl[N,N] */
    if (j->dq) sde_ops_gemm_tiled(0, 1, C, N, N, 1.0f, j->k + xo, N, da, N, 1.0f, j->dq + xo, N);
    if (j->dk) sde_ops_gemm_tiled(0, 0, C, N, N, 1.0f, j->q + xo, N, da, N, 1.0f, j->dk + xo, N);
  }
  if (!j->scratch) free(da);
}

int sde_nn_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              int B, int C, int N, float *scratch) {
  if (B < 1 || C < 1 || N < 1) return sde_fail(SDE_EINVAL, "attention: bad shape");
  attn_bwd_job j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .att = att, .q = q, .k = k,
                    .v = v, .C = C, .N = N, .scale = (float)pow((double)C, -0.5)};
  atomic_init(&j.failed, 0);
  if (B > 1) { /* one image per task: the small GEMMs of one image would not split */
    sde_parallel_for(B, 1, attention_backward_images, &j);
    return atomic_load(&j.failed) ? sde_fail(SDE_ENOMEM, "attention: out of memory") : SDE_OK;
  }
  float *owned;
  j.scratch = scratch_get(scratch, sde_nn_attention_scratch_floats(N), &owned);
  if (!j.scratch) return SDE_ENOMEM;
  attention_backward_images(&j, 0, 1);
  free(owned);
  return SDE_OK;
}

