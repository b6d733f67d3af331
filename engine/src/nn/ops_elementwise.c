/* CPU reference ops (scoresde/nn.h): elementwise adds and scales, channel biases and
 * channel concatenation.
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
  const sde_ops_chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float bv = j->in[r], *xr = j->out + r * j->len;
    for (int p = 0; p < j->len; p++) xr[p] += bv;
  }
}

void sde_nn_add_channel_bias_forward(float *x, const float *bias, int B, int C, int HW) {
  sde_ops_chan_job j = {x, bias, B, C, HW};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), channel_bias_rows, &j);
}

static void channel_bias_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const sde_ops_chan_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) j->out[r] += (float)sde_ops_sum_row(j->in + r * j->len, j->len);
}

void sde_nn_add_channel_bias_backward(float *dbias, const float *dx, int B, int C, int HW) {
  if (!dbias) return;
  sde_ops_chan_job j = {dbias, dx, B, C, HW};
  int64_t rows = (int64_t)B * C;
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), channel_bias_backward_rows, &j);
}

typedef struct {
  float *out;
  const float *a, *b;
  int Ca, Cb, HW;
} concat_job;

/* row r of the [B·(Ca+Cb), HW] concatenation: *in_a = it comes from a (else b), and the
 * offset of that row there */
static size_t concat_row(int64_t r, int Ca, int Cb, int HW, int *in_a) {
  const int64_t i = r / (Ca + Cb);
  const int c = (int)(r % (Ca + Cb));
  *in_a = c < Ca;
  return (*in_a ? (size_t)i * Ca + c : (size_t)i * Cb + (c - Ca)) * HW;
}

/* output channel rows r in [r0, r1) of the concatenation */
static void concat_rows(void *ctx, int64_t r0, int64_t r1) {
  const concat_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    int in_a;
    const size_t off = concat_row(r, j->Ca, j->Cb, j->HW, &in_a);
    memcpy(j->out + (size_t)r * j->HW, (in_a ? j->a : j->b) + off, (size_t)j->HW * sizeof(float));
  }
}

/* a copy, in parallel: one thread's memcpy is the slower for the up path's large maps */
void sde_nn_concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca,
                                    int Cb, int HW) {
  concat_job j = {out, a, b, Ca, Cb, HW};
  const int64_t rows = (int64_t)B * (Ca + Cb);
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), concat_rows, &j);
}

typedef struct {
  float *da, *db;
  const float *dout;
  int Ca, Cb, HW, store_a, store_b;
  int skip_a, skip_b; /* rows of a (b) left out of this region */
} concat_bwd_job;

/* rows r in [r0, r1) of dout [B·(Ca+Cb), HW] into da's or db's row: copied or added */
static void concat_backward_rows(void *ctx, int64_t r0, int64_t r1) {
  const concat_bwd_job *j = ctx;
  for (int64_t r = r0; r < r1; r++) {
    int in_a;
    const size_t off = concat_row(r, j->Ca, j->Cb, j->HW, &in_a);
    float *dst = in_a ? j->da : j->db;
    if (!dst || (in_a ? j->skip_a : j->skip_b)) continue;
    dst += off;
    const float *src = j->dout + (size_t)r * j->HW;
    if (in_a ? j->store_a : j->store_b) {
      memcpy(dst, src, (size_t)j->HW * sizeof(float));
      continue;
    }
    for (int p = 0; p < j->HW; p++) dst[p] += src[p];
  }
}

void sde_nn_concat_channels_backward_store(float *da, float *db, const float *dout, int B, int Ca,
                                           int Cb, int HW, int store_a, int store_b) {
  concat_bwd_job j = {da, db, dout, Ca, Cb, HW, store_a, store_b, 0, 0};
  const int64_t rows = (int64_t)B * (Ca + Cb);
  if (da && da == db) { /* one tensor twice (Ca = Cb): a's rows, then b's onto them */
    j.skip_b = 1;
    sde_parallel_for(rows, grain(rows, (size_t)rows * HW), concat_backward_rows, &j);
    j.skip_a = 1, j.skip_b = 0;
  }
  sde_parallel_for(rows, grain(rows, (size_t)rows * HW), concat_backward_rows, &j);
}

void sde_nn_concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca,
                                     int Cb, int HW) {
  sde_nn_concat_channels_backward_store(da, db, dout, B, Ca, Cb, HW, 0, 0);
}

