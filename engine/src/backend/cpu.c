/* The CPU backend: the vtable of backend.h over host memory, each op a thin wrapper of
 * the nn.h / rng.h reference function of the same name. Static, always available, no
 * state: results are exactly those of calling nn.h directly. */
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../exact_math.h" /* sde_adam_elem: the optimizer math the CUDA kernel shares */
#include "../parallel.h"
#include "backend.h"
#include "scoresde/error.h"
#include "scoresde/rng.h"

/* ---- memory ---------------------------------------------------------------------------- */

static int cpu_alloc(const sde_backend *be, size_t bytes, void **ptr) {
  (void)be;
  *ptr = sde_malloc(bytes ? bytes : 1);
  return *ptr ? SDE_OK : SDE_ENOMEM;
}
static void cpu_free(const sde_backend *be, void *ptr) { (void)be; free(ptr); }
static int cpu_copy(const sde_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes && dst != src) memmove(dst, src, bytes);
  return SDE_OK;
}
/* zeroing in 256 KB pieces on the pool: training clears megabytes of gradients per step,
 * which one core's stores would do alone while the others wait */
#define ZERO_PIECE ((size_t)256 << 10)
typedef struct {
  char *dst;
  size_t bytes;
} zero_job;
static void zero_pieces(void *ctx, int64_t p0, int64_t p1) {
  const zero_job *z = ctx;
  const size_t a = (size_t)p0 * ZERO_PIECE, b = (size_t)p1 * ZERO_PIECE;
  memset(z->dst + a, 0, (b < z->bytes ? b : z->bytes) - a);
}
static int cpu_zero(const sde_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (bytes <= 2 * ZERO_PIECE) {
    if (bytes) memset(dst, 0, bytes);
    return SDE_OK;
  }
  zero_job z = {dst, bytes};
  sde_parallel_for((int64_t)((bytes + ZERO_PIECE - 1) / ZERO_PIECE), 1, zero_pieces, &z);
  return SDE_OK;
}
static int cpu_synchronize(const sde_backend *be) { (void)be; return SDE_OK; }

/* ---- nn ops: one wrapper per op, generated ----------------------------------------------
 * WRAP_INT / WRAP_VOID(name, (parameters after be), (arguments)) define cpu_<name>, which
 * calls sde_nn_<name>. */
#define WRAP_INT(name, params, args) \
  static int cpu_##name params { (void)be; return sde_nn_##name args; }
#define WRAP_VOID(name, params, args) \
  static void cpu_##name params { (void)be; sde_nn_##name args; }

WRAP_INT(conv2d_forward, (const sde_backend *be, float *out, const float *inp, const float *weight,
                          const float *bias, const sde_nn_conv2d_shape *s, float *scratch),
         (out, inp, weight, bias, s, scratch))
static int cpu_conv2d_prepare(const sde_backend *be, const float *weight,
                              const sde_nn_conv2d_shape *s, sde_nn_conv2d_prep **out,
                              size_t *bytes) {
  (void)be;
  const int rc = sde_nn_conv2d_prepare(weight, s, out);
  *bytes = sde_nn_conv2d_prep_bytes(*out);
  return rc;
}
WRAP_VOID(conv2d_prep_free, (const sde_backend *be, sde_nn_conv2d_prep *p), (p))
WRAP_INT(conv2d_forward_prepared, (const sde_backend *be, float *out, const float *inp,
                                   const float *weight, const float *bias,
                                   const sde_nn_conv2d_shape *s, float *scratch,
                                   const sde_nn_conv2d_prep *p),
         (out, inp, weight, bias, s, scratch, p))
WRAP_INT(conv2d_backward, (const sde_backend *be, float *dinp, float *dweight, float *dbias,
                           const float *dout, const float *inp, const float *weight,
                           const sde_nn_conv2d_shape *s, float *scratch),
         (dinp, dweight, dbias, dout, inp, weight, s, scratch))
WRAP_INT(conv2d_backward_store, (const sde_backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 const sde_nn_conv2d_shape *s, float *scratch),
         (dinp, dweight, dbias, dout, inp, weight, s, scratch))
WRAP_INT(linear_forward, (const sde_backend *be, float *out, const float *inp, const float *weight,
                          const float *bias, int B, int in_f, int out_f),
         (out, inp, weight, bias, B, in_f, out_f))
WRAP_INT(linear_backward, (const sde_backend *be, float *dinp, float *dweight, float *dbias,
                           const float *dout, const float *inp, const float *weight, int B,
                           int in_f, int out_f),
         (dinp, dweight, dbias, dout, inp, weight, B, in_f, out_f))
WRAP_INT(nin_forward, (const sde_backend *be, float *out, const float *inp, const float *W,
                       const float *bias, int B, int C_in, int HW, int C_out),
         (out, inp, W, bias, B, C_in, HW, C_out))
WRAP_INT(nin_backward, (const sde_backend *be, float *dinp, float *dW, float *dbias,
                        const float *dout, const float *inp, const float *W, int B, int C_in,
                        int HW, int C_out),
         (dinp, dW, dbias, dout, inp, W, B, C_in, HW, C_out))
WRAP_INT(groupnorm_forward, (const sde_backend *be, float *out, float *mean, float *rstd,
                             const float *inp, const float *gamma, const float *beta, int B, int C,
                             int HW, int G, float eps),
         (out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps))
WRAP_INT(groupnorm_backward, (const sde_backend *be, float *dinp, float *dgamma, float *dbeta,
                              const float *dout, const float *inp, const float *mean,
                              const float *rstd, const float *gamma, int B, int C, int HW, int G),
         (dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma, B, C, HW, G))
WRAP_INT(groupnorm_silu_forward, (const sde_backend *be, float *out, const float *inp,
                                  const float *gamma, const float *beta, int B, int C, int HW,
                                  int G, float eps),
         (out, inp, gamma, beta, B, C, HW, G, eps))
WRAP_INT(groupnorm_silu_forward_train, (const sde_backend *be, float *out, float *mean,
                                        float *rstd, const float *inp, const float *gamma,
                                        const float *beta, int B, int C, int HW, int G, float eps),
         (out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps))
WRAP_INT(groupnorm_silu_backward, (const sde_backend *be, float *dinp, float *dgamma,
                                   float *dbeta, const float *dout, const float *inp,
                                   const float *mean, const float *rstd, const float *gamma,
                                   const float *beta, int B, int C, int HW, int G),
         (dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma, beta, B, C, HW, G))
WRAP_INT(groupnorm_silu_backward_store, (const sde_backend *be, float *dinp, float *dgamma,
                                         float *dbeta, float *dsum, const float *dout,
                                         const float *inp, const float *mean, const float *rstd,
                                         const float *gamma, const float *beta, int B, int C,
                                         int HW, int G),
         (dinp, dgamma, dbeta, dsum, dout, inp, mean, rstd, gamma, beta, B, C, HW, G))
WRAP_VOID(silu_forward, (const sde_backend *be, float *out, const float *inp, size_t n),
          (out, inp, n))
WRAP_VOID(silu_backward, (const sde_backend *be, float *dinp, const float *dout, const float *inp,
                          size_t n),
          (dinp, dout, inp, n))
WRAP_INT(attention_forward, (const sde_backend *be, float *out, float *att, const float *q,
                             const float *k, const float *v, int B, int C, int N),
         (out, att, q, k, v, B, C, N))
WRAP_INT(attention_backward, (const sde_backend *be, float *dq, float *dk, float *dv,
                              const float *dout, const float *att, const float *q, const float *k,
                              const float *v, int B, int C, int N, float *scratch),
         (dq, dk, dv, dout, att, q, k, v, B, C, N, scratch))
WRAP_INT(fir_upsample2x_forward, (const sde_backend *be, float *out, const float *inp, int B, int C,
                                  int H, int W),
         (out, inp, B, C, H, W))
WRAP_INT(fir_upsample2x_backward, (const sde_backend *be, float *dinp, const float *dout, int B,
                                   int C, int H, int W),
         (dinp, dout, B, C, H, W))
WRAP_INT(fir_downsample2x_forward, (const sde_backend *be, float *out, const float *inp, int B,
                                    int C, int H, int W),
         (out, inp, B, C, H, W))
WRAP_INT(fir_downsample2x_backward, (const sde_backend *be, float *dinp, const float *dout, int B,
                                     int C, int H, int W),
         (dinp, dout, B, C, H, W))
WRAP_INT(fir_conv_downsample2x_forward, (const sde_backend *be, float *out, const float *inp,
                                         const float *weight, const float *bias, int B, int C_in,
                                         int H, int W, int C_out, float *scratch),
         (out, inp, weight, bias, B, C_in, H, W, C_out, scratch))
WRAP_INT(fir_conv_downsample2x_backward, (const sde_backend *be, float *dinp, float *dweight,
                                          float *dbias, const float *dout, const float *inp,
                                          const float *weight, int B, int C_in, int H, int W,
                                          int C_out, float *scratch),
         (dinp, dweight, dbias, dout, inp, weight, B, C_in, H, W, C_out, scratch))
/* the FIR upsample-conv (nn/ops_resample.c) */
static int cpu_fir_conv_upsample2x_forward(const sde_backend *be, float *out, const float *inp,
                                           const float *weight, const float *bias, int B, int C_in,
                                           int H, int W, int C_out, float *scratch) {
  (void)be;
  float *own = NULL;
  if (!scratch) { /* NULL: the backend allocates (the table's scratch convention) */
    own = sde_malloc(sizeof(float) * sde_nn_fir_upsample_conv2x_scratch_floats(B, C_in, H, W, C_out));
    if (!own) return SDE_ENOMEM;
  }
  int rc = sde_nn_fir_upsample_conv2x_forward(out, inp, weight, bias, B, C_in, H, W, C_out,
                                              scratch ? scratch : own);
  free(own);
  return rc;
}
static int cpu_fir_conv_upsample2x_backward(const sde_backend *be, float *dinp, float *dweight,
                                            float *dbias, const float *dout, const float *inp,
                                            const float *weight, int B, int C_in, int H, int W,
                                            int C_out, float *scratch) {
  (void)be;
  float *own = NULL;
  if (!scratch) {
    own = sde_malloc(sizeof(float) * sde_nn_fir_upsample_conv2x_scratch_floats(B, C_in, H, W, C_out));
    if (!own) return SDE_ENOMEM;
  }
  int rc = sde_nn_fir_upsample_conv2x_backward(dinp, dweight, dbias, dout, inp, weight, B, C_in,
                                               H, W, C_out, scratch ? scratch : own);
  free(own);
  return rc;
}
WRAP_INT(upsample_nearest2x_forward, (const sde_backend *be, float *out, const float *inp, int B,
                                      int C, int H, int W),
         (out, inp, B, C, H, W))
WRAP_INT(upsample_nearest2x_backward, (const sde_backend *be, float *dinp, const float *dout,
                                       int B, int C, int H, int W),
         (dinp, dout, B, C, H, W))
WRAP_INT(avgpool2x_forward, (const sde_backend *be, float *out, const float *inp, int B, int C,
                             int H, int W),
         (out, inp, B, C, H, W))
WRAP_INT(avgpool2x_backward, (const sde_backend *be, float *dinp, const float *dout, int B, int C,
                              int H, int W),
         (dinp, dout, B, C, H, W))
WRAP_INT(fourier_embedding_forward, (const sde_backend *be, float *out, const float *u,
                                     const float *W, int B, int E),
         (out, u, W, B, E))
WRAP_INT(fourier_embedding_backward, (const sde_backend *be, float *du, float *dW,
                                      const float *dout, const float *u, const float *W, int B,
                                      int E),
         (du, dW, dout, u, W, B, E))
WRAP_INT(timestep_embedding_forward, (const sde_backend *be, float *out, const float *t, int B,
                                      int dim),
         (out, t, B, dim))
WRAP_INT(timestep_embedding_backward, (const sde_backend *be, float *dt, const float *dout,
                                       const float *t, int B, int dim),
         (dt, dout, t, B, dim))
WRAP_VOID(add_forward, (const sde_backend *be, float *out, const float *a, const float *b,
                        float scale, size_t n),
          (out, a, b, scale, n))
WRAP_VOID(add_backward, (const sde_backend *be, float *da, float *db, const float *dout,
                         float scale, size_t n),
          (da, db, dout, scale, n))
WRAP_VOID(scale, (const sde_backend *be, float *out, const float *inp, float scale, size_t n),
          (out, inp, scale, n))
WRAP_VOID(accumulate, (const sde_backend *be, float *dst, const float *src, size_t n),
          (dst, src, n))
WRAP_VOID(add_channel_bias_forward, (const sde_backend *be, float *x, const float *bias, int B,
                                     int C, int HW),
          (x, bias, B, C, HW))
WRAP_VOID(add_channel_bias_backward, (const sde_backend *be, float *dbias, const float *dx, int B,
                                      int C, int HW),
          (dbias, dx, B, C, HW))
WRAP_VOID(concat_channels_forward, (const sde_backend *be, float *out, const float *a,
                                    const float *b, int B, int Ca, int Cb, int HW),
          (out, a, b, B, Ca, Cb, HW))
WRAP_VOID(concat_channels_backward, (const sde_backend *be, float *da, float *db,
                                     const float *dout, int B, int Ca, int Cb, int HW),
          (da, db, dout, B, Ca, Cb, HW))
WRAP_VOID(concat_channels_backward_store, (const sde_backend *be, float *da, float *db,
                                           const float *dout, int B, int Ca, int Cb, int HW,
                                           int store_a, int store_b),
          (da, db, dout, B, Ca, Cb, HW, store_a, store_b))

/* not in nn.h: dropout's elementwise ops (the arithmetic of nn/ncsnpp_train.c) */
typedef struct {
  float *out;
  const float *a, *b;
} mul_job;

static void mul_range(void *ctx, int64_t i0, int64_t i1) {
  const mul_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] = j->a[i] * j->b[i];
}

static void cpu_mul(const sde_backend *be, float *out, const float *a, const float *b, size_t n) {
  (void)be;
  mul_job j = {out, a, b};
  sde_parallel_for((int64_t)n, n >= 65536 ? 1 : (int64_t)n, mul_range, &j);
}
static void cpu_dropout_mask(const sde_backend *be, float *mask, float p, float keep, size_t n) {
  (void)be;
  for (size_t i = 0; i < n; i++) mask[i] = mask[i] < p ? 0.0f : keep;
}

#undef WRAP_INT
#undef WRAP_VOID

/* ---- random numbers: one (seed, stream0 + i, step) stream per row ---------------------- */

typedef void (*row_fn)(uint64_t seed, uint64_t stream, uint32_t step, float *out, int64_t n);

typedef struct {
  row_fn fn;
  float *out;
  uint64_t seed, stream0;
  uint32_t step;
  int64_t row_len;
} rows_job;

static void rows_range(void *ctx, int64_t i0, int64_t i1) {
  const rows_job *j = ctx;
  for (int64_t i = i0; i < i1; i++)
    j->fn(j->seed, j->stream0 + (uint64_t)i, j->step, j->out + i * j->row_len, j->row_len);
}

static int rows(row_fn fn, float *out, uint64_t seed, uint64_t stream0, uint32_t step,
                int n_rows, int64_t row_len) {
  if (n_rows < 0 || row_len < 0) return sde_fail(SDE_EINVAL, "random rows: negative shape");
  /* rows are independent streams: any thread order gives the same bits */
  rows_job j = {fn, out, seed, stream0, step, row_len};
  sde_parallel_for(n_rows, row_len >= 4096 ? 1 : n_rows, rows_range, &j);
  return SDE_OK;
}

static int cpu_randn_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0,
                          uint32_t step, int n_rows, int64_t row_len) {
  (void)be;
  if (n_rows >= 0 && row_len >= 0 && row_len < 16) { /* short rows: 4 streams per vector */
    sde_randn_rows(seed, stream0, step, out, n_rows, row_len);
    return SDE_OK;
  }
  return rows(sde_randn, out, seed, stream0, step, n_rows, row_len);
}
static int cpu_randu_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0,
                          uint32_t step, int n_rows, int64_t row_len) {
  (void)be;
  return rows(sde_randu, out, seed, stream0, step, n_rows, row_len);
}
static int cpu_rademacher_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0,
                               uint32_t step, int n_rows, int64_t row_len) {
  (void)be;
  return rows(sde_rand_rademacher, out, seed, stream0, step, n_rows, row_len);
}

/* ---- sampler row updates ---------------------------------------------------------------- */

/* out = a·x + c·y per row, computed in double and rounded once (the host samplers' rule:
 * float(a*x + c*y) with a, c double). y may be NULL when every c is 0. */
static int cpu_axpby_rows(const sde_backend *be, float *out, const double *a, const float *x,
                          const double *c, const float *y, int n_rows, int64_t row_len) {
  (void)be;
  for (int b = 0; b < n_rows; b++) {
    const double ab = a[b], cb = c[b];
    const float *xb = x + (int64_t)b * row_len;
    const float *yb = y ? y + (int64_t)b * row_len : NULL;
    float *ob = out + (int64_t)b * row_len;
    if (yb)
      for (int64_t j = 0; j < row_len; j++) ob[j] = (float)(ab * xb[j] + cb * yb[j]);
    else
      for (int64_t j = 0; j < row_len; j++) ob[j] = (float)(ab * xb[j]);
  }
  return SDE_OK;
}

/* Rows from DOT_LONG floats (the training step's gradient norm over every parameter) are
 * summed in fixed chunks of DOT_CHUNK, each in 16 float64 lanes, on the pool, and the chunks
 * added in order: the same bits whatever the thread count (2^18: the nf 16 networks' 441,875
 * parameters take it). Shorter rows (the samplers' norms per image, up to 3x256x256 =
 * 196,608 floats) one float64 chain each, as always. */
#define DOT_LONG ((int64_t)1 << 18)
#define DOT_CHUNK ((int64_t)1 << 15)

typedef struct {
  const float *x, *y;
  int64_t n;
  double *part; /* [chunks] */
} dot_job;

static void dot_chunks(void *ctx, int64_t k0, int64_t k1) {
  const dot_job *j = ctx;
  for (int64_t k = k0; k < k1; k++) {
    const int64_t i1 = (k + 1) * DOT_CHUNK < j->n ? (k + 1) * DOT_CHUNK : j->n;
    double lane[16] = {0};
    int64_t i = k * DOT_CHUNK;
    for (; i + 16 <= i1; i += 16)
      for (int l = 0; l < 16; l++) lane[l] += (double)j->x[i + l] * j->y[i + l];
    double s = 0;
    for (int l = 0; l < 16; l++) s += lane[l];
    for (; i < i1; i++) s += (double)j->x[i] * j->y[i];
    j->part[k] = s;
  }
}

static int cpu_dot_rows(const sde_backend *be, double *out, const float *x, const float *y,
                        int n_rows, int64_t row_len) {
  (void)be;
  if (row_len >= DOT_LONG) {
    const int64_t chunks = (row_len + DOT_CHUNK - 1) / DOT_CHUNK;
    double *part = malloc((size_t)chunks * sizeof(double));
    if (!part) return sde_fail(SDE_ENOMEM, "dot_rows: out of memory");
    for (int b = 0; b < n_rows; b++) {
      dot_job j = {x + (int64_t)b * row_len, y + (int64_t)b * row_len, row_len, part};
      sde_parallel_for(chunks, 1, dot_chunks, &j);
      double s = 0;
      for (int64_t k = 0; k < chunks; k++) s += part[k];
      out[b] = s;
    }
    free(part);
    return SDE_OK;
  }
  for (int b = 0; b < n_rows; b++) {
    const float *xb = x + (int64_t)b * row_len, *yb = y + (int64_t)b * row_len;
    double s = 0;
    for (int64_t j = 0; j < row_len; j++) s += (double)xb[j] * yb[j];
    out[b] = s;
  }
  return SDE_OK;
}

/* ---- optimizer ------------------------------------------------------------------------- */

typedef struct {
  float *p, *m, *v, *ema;
  const float *grad, *trainable;
  sde_adam_coef c;
} adam_job;

static void adam_range(void *ctx, int64_t i0, int64_t i1) {
  const adam_job *j = ctx;
  const sde_adam_coef c = j->c;
#if defined(__SSE2__)
  /* sde_adam_elem's operations, 4 lanes at a time (SSE: no FMA to contract into, so the
   * same roundings and the same bits); frozen lanes (trainable 0) keep p, m, v and take
   * ema = p, as the scalar loop below */
  const __m128 clip = _mm_set1_ps(c.clip), b1 = _mm_set1_ps(c.b1), b2 = _mm_set1_ps(c.b2);
  const __m128 ob1 = _mm_set1_ps(1.0f - c.b1), ob2 = _mm_set1_ps(1.0f - c.b2);
  const __m128 step = _mm_set1_ps(c.step_size), sbc2 = _mm_set1_ps(c.sbc2);
  const __m128 aeps = _mm_set1_ps(c.eps), omd = _mm_set1_ps(c.one_m_decay);
  for (; i0 + 4 <= i1; i0 += 4) {
    const __m128 m0 = _mm_loadu_ps(j->m + i0), v0 = _mm_loadu_ps(j->v + i0);
    const __m128 p0 = _mm_loadu_ps(j->p + i0), e0 = _mm_loadu_ps(j->ema + i0);
    const __m128 g = _mm_mul_ps(_mm_loadu_ps(j->grad + i0), clip);
    __m128 m = _mm_add_ps(_mm_mul_ps(b1, m0), _mm_mul_ps(ob1, g));
    __m128 v = _mm_add_ps(_mm_mul_ps(b2, v0), _mm_mul_ps(_mm_mul_ps(ob2, g), g));
    const __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(v), sbc2), aeps);
    __m128 p = _mm_sub_ps(p0, _mm_mul_ps(step, _mm_div_ps(m, denom)));
    __m128 e = _mm_sub_ps(e0, _mm_mul_ps(omd, _mm_sub_ps(e0, p)));
    if (j->trainable) { /* lanes with trainable != 0 (NaN included, as `== 0.0f` is false) */
      const __m128 k = _mm_cmpneq_ps(_mm_loadu_ps(j->trainable + i0), _mm_setzero_ps());
      m = _mm_or_ps(_mm_and_ps(k, m), _mm_andnot_ps(k, m0));
      v = _mm_or_ps(_mm_and_ps(k, v), _mm_andnot_ps(k, v0));
      e = _mm_or_ps(_mm_and_ps(k, e), _mm_andnot_ps(k, p0));
      p = _mm_or_ps(_mm_and_ps(k, p), _mm_andnot_ps(k, p0));
    }
    _mm_storeu_ps(j->m + i0, m);
    _mm_storeu_ps(j->v + i0, v);
    _mm_storeu_ps(j->p + i0, p);
    _mm_storeu_ps(j->ema + i0, e);
  }
#endif
  for (int64_t i = i0; i < i1; i++) {
    if (j->trainable && j->trainable[i] == 0.0f) {
      j->ema[i] = j->p[i];
      continue;
    }
    sde_adam_elem(&j->p[i], &j->m[i], &j->v[i], &j->ema[i], j->grad[i], c.clip, c.b1, c.b2,
                  c.step_size, c.sbc2, c.eps, c.one_m_decay);
  }
}

static int cpu_adam_step(const sde_backend *be, float *p, float *m, float *v, float *ema,
                         const float *grad, const float *trainable, size_t n,
                         const sde_adam_coef *k) {
  (void)be;
  adam_job j = {p, m, v, ema, grad, trainable, *k};
  sde_parallel_for((int64_t)n, 1, adam_range, &j);
  return SDE_OK;
}

/* ---- the table ------------------------------------------------------------------------- */

#define OP(name) .name = cpu_##name

static const sde_backend cpu_backend = {
  .name = "cpu",
  .device_id = 0,
  .host_memory = 1,
  .precision = SDE_PRECISION_FP32,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_copy,
  .download = cpu_copy,
  .copy = cpu_copy,
  .zero = cpu_zero,
  .synchronize = cpu_synchronize,
  OP(conv2d_forward), OP(conv2d_prepare), OP(conv2d_prep_free), OP(conv2d_forward_prepared),
  OP(conv2d_backward), OP(conv2d_backward_store), OP(linear_forward),
  OP(linear_backward),
  OP(nin_forward), OP(nin_backward), OP(groupnorm_forward), OP(groupnorm_backward),
  OP(groupnorm_silu_forward), OP(groupnorm_silu_forward_train), OP(groupnorm_silu_backward),
  OP(groupnorm_silu_backward_store),
  OP(silu_forward),
  OP(silu_backward), OP(attention_forward), OP(attention_backward), OP(fir_upsample2x_forward), OP(fir_upsample2x_backward),
  OP(fir_downsample2x_forward), OP(fir_downsample2x_backward),
  OP(fir_conv_downsample2x_forward), OP(fir_conv_downsample2x_backward),
  OP(fir_conv_upsample2x_forward), OP(fir_conv_upsample2x_backward),
  OP(upsample_nearest2x_forward), OP(upsample_nearest2x_backward), OP(avgpool2x_forward),
  OP(avgpool2x_backward), OP(fourier_embedding_forward), OP(fourier_embedding_backward),
  OP(timestep_embedding_forward), OP(timestep_embedding_backward), OP(add_forward),
  OP(add_backward), OP(scale), OP(accumulate), OP(mul), OP(dropout_mask), OP(add_channel_bias_forward),
  OP(add_channel_bias_backward), OP(concat_channels_forward), OP(concat_channels_backward),
  OP(concat_channels_backward_store),
  OP(randn_rows), OP(randu_rows), OP(rademacher_rows), OP(axpby_rows), OP(dot_rows),
  OP(adam_step),
  .impl = NULL,
};

#undef OP

const sde_backend *sde_backend_cpu(void) { return &cpu_backend; }
