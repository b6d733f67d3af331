/* Kernels whose bits must equal the CPU's: the Philox noise (randn/randu/Rademacher rows)
 * and the sampler row updates. This file is compiled with --fmad=false, so no a·b + c is
 * contracted into a fused multiply-add: the double Box-Muller arithmetic of rng.c then
 * rounds exactly as on the CPU (IEEE +, −, ×, /, sqrt are correctly rounded on both). */
#include "cuda_internal.h"
#include "cuda_math.cuh"

#define NT SDE_CUDA_THREADS

#define FOR_EACH(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static unsigned grid_for(size_t n) {
  size_t b = (n + NT - 1) / NT;
  if (b > (1u << 20)) b = 1u << 20;
  return (unsigned)(b ? b : 1);
}


/* =======================================================================================
 * random rows: thread = one Philox block (4 elements) of one row; row i is stream0 + i */

enum { DIST_NORMAL, DIST_UNIFORM, DIST_RADEMACHER };

__global__ static void rand_rows_kernel(float *out, uint64_t seed, uint64_t stream0, uint32_t step, int n_rows,
                                        long long row_len, long long blocks_per_row, int dist) {
  FOR_EACH(t, (size_t)n_rows * blocks_per_row) {
    int row = (int)(t / blocks_per_row);
    long long blk = (long long)(t % blocks_per_row), base = blk * 4;
    float v[4];
    if (dist == DIST_NORMAL) {
      sde_randn_block(seed, stream0 + (uint64_t)row, step, (uint32_t)blk, v);
    } else {
      uint32_t r[4];
      sde_philox_block(seed, stream0 + (uint64_t)row, step, (uint32_t)blk, r);
      for (int j = 0; j < 4; j++) v[j] = dist == DIST_UNIFORM ? sde_randu_word(r[j]) : sde_rademacher_word(r[j]);
    }
    float *o = out + (size_t)row * row_len + base;
    for (int j = 0; j < 4 && base + j < row_len; j++) o[j] = v[j];
  }
}

static int rand_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step, int n_rows,
                     int64_t row_len, int dist) {
  if (n_rows < 0 || row_len < 0) return sde_fail(SDE_EINVAL, "random rows: bad shape %d x %lld", n_rows, (long long)row_len);
  if (n_rows == 0 || row_len == 0) return SDE_OK;
  OP_BEGIN(be);
  long long bpr = (row_len + 3) / 4;
  rand_rows_kernel<<<grid_for((size_t)n_rows * bpr), NT, 0, c->stream>>>(out, seed, stream0, step, n_rows, row_len,
                                                                        bpr, dist);
  return op_end(c, SDE_OK, "random rows");
}

static int cuda_randn_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step,
                           int n_rows, int64_t row_len) {
  return rand_rows(be, out, seed, stream0, step, n_rows, row_len, DIST_NORMAL);
}
static int cuda_randu_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step,
                           int n_rows, int64_t row_len) {
  return rand_rows(be, out, seed, stream0, step, n_rows, row_len, DIST_UNIFORM);
}
static int cuda_rademacher_rows(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step,
                                int n_rows, int64_t row_len) {
  return rand_rows(be, out, seed, stream0, step, n_rows, row_len, DIST_RADEMACHER);
}

/* =======================================================================================
 * axpby_rows: the per-row coefficients travel in the kernel's arguments, AXPBY_ROWS rows
 * per launch (no host-to-device copy, nothing to keep alive, capturable in a graph) */

#define AXPBY_ROWS 64
typedef struct {
  double a[AXPBY_ROWS], c[AXPBY_ROWS];
} axpby_coef;

/* out may alias x or y: each element is read then written by the same thread.
 * y may be NULL: out = a·x (as the CPU backend) */
__global__ static void axpby_kernel(float *out, axpby_coef k, const float *x, const float *y, int rows,
                                    long long row_len) {
  FOR_EACH(i, (size_t)rows * row_len) {
    int r = (int)(i / row_len);
    out[i] = y ? sde_axpby_elem(k.a[r], x[i], k.c[r], y[i]) : (float)(k.a[r] * (double)x[i]);
  }
}

static int cuda_axpby_rows(const sde_backend *be, float *out, const double *a, const float *x, const double *cc,
                           const float *y, int n_rows, int64_t row_len) {
  if (n_rows < 0 || row_len < 0) return sde_fail(SDE_EINVAL, "axpby_rows: bad shape");
  if (n_rows == 0 || row_len == 0) return SDE_OK;
  OP_BEGIN(be);
  for (int r0 = 0; r0 < n_rows; r0 += AXPBY_ROWS) {
    int rows = n_rows - r0 < AXPBY_ROWS ? n_rows - r0 : AXPBY_ROWS;
    axpby_coef k;
    for (int r = 0; r < rows; r++) {
      k.a[r] = a[r0 + r];
      k.c[r] = cc ? cc[r0 + r] : 0.0;
    }
    size_t off = (size_t)r0 * row_len;
    axpby_kernel<<<grid_for((size_t)rows * row_len), NT, 0, c->stream>>>(out + off, k, x + off,
                                                                         y ? y + off : NULL, rows, row_len);
  }
  return op_end(c, SDE_OK, "axpby_rows");
}

/* =======================================================================================
 * dot_rows: Σ x·y per row in double; fixed chunks (one block each, fixed tree), chunks
 * combined in order. The result is downloaded, so this entry waits for the stream. */

#define DOT_CHUNK (NT * 16)

__global__ static void dot_partial_kernel(double *part, const float *x, const float *y, long long row_len,
                                          int chunks) {
  __shared__ double sh[NT];
  const float *xr = x + (size_t)blockIdx.y * row_len, *yr = y + (size_t)blockIdx.y * row_len;
  long long i0 = (long long)blockIdx.x * DOT_CHUNK, i1 = i0 + DOT_CHUNK < row_len ? i0 + DOT_CHUNK : row_len;
  double s = 0.0;
  for (long long i = i0 + threadIdx.x; i < i1; i += NT) s += (double)xr[i] * (double)yr[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = NT / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[(size_t)blockIdx.y * chunks + blockIdx.x] = sh[0];
}

__global__ static void dot_final_kernel(double *res, const double *part, int chunks, int n_rows) {
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rows) return;
  double s = 0.0;
  for (int k = 0; k < chunks; k++) s += part[(size_t)r * chunks + k];
  res[r] = s;
}

static int cuda_dot_rows(const sde_backend *be, double *out, const float *x, const float *y, int n_rows,
                         int64_t row_len) {
  if (n_rows < 0 || row_len < 0) return sde_fail(SDE_EINVAL, "dot_rows: bad shape");
  if (n_rows == 0) return SDE_OK;
  if (row_len == 0) {
    for (int r = 0; r < n_rows; r++) out[r] = 0.0;
    return SDE_OK;
  }
  if (n_rows > 65535) return sde_fail(SDE_EUNSUPPORTED, "dot_rows: more than 65535 rows");
  if (sde_cuda_of(be)->capturing)
    return sde_fail(SDE_EUNSUPPORTED, "CUDA graph capture: dot_rows returns to the host and cannot be captured");
  OP_BEGIN(be);
  int chunks = (int)((row_len + DOT_CHUNK - 1) / DOT_CHUNK);
  size_t part_bytes = sde_cuda_align((size_t)n_rows * chunks * sizeof(double));
  char *red = (char *)sde_cuda_red_workspace(c, part_bytes + (size_t)n_rows * sizeof(double));
  if (!red) return op_end(c, SDE_ENOMEM, "dot_rows");
  double *part = (double *)red, *res = (double *)(red + part_bytes);
  dot_partial_kernel<<<dim3(chunks, n_rows), NT, 0, c->stream>>>(part, x, y, row_len, chunks);
  dot_final_kernel<<<(n_rows + NT - 1) / NT, NT, 0, c->stream>>>(res, part, chunks, n_rows);
  int rc = sde_cuda_check_launch(c, "dot_rows");
  if (!rc) {
    cudaError_t e = cudaMemcpyAsync(out, res, (size_t)n_rows * sizeof(double), cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, "dot_rows");
  }
  return op_end(c, rc, "dot_rows");
}

/* ======================================================================================= */

/* =======================================================================================
 * Adam + EMA (train.c), one thread per parameter, no contraction: the CPU's bits */

__global__ static void adam_kernel(float *p, float *m, float *v, float *ema, const float *grad, const float *trainable,
                                   size_t n, sde_adam_coef k) {
  FOR_EACH(i, n) {
    if (trainable && trainable[i] == 0.0f) {
      ema[i] = p[i];
      continue;
    }
    sde_adam_elem(&p[i], &m[i], &v[i], &ema[i], grad[i], k.clip, k.b1, k.b2, k.step_size, k.sbc2, k.eps,
                  k.one_m_decay);
  }
}

static int cuda_adam_step(const sde_backend *be, float *p, float *m, float *v, float *ema, const float *grad,
                          const float *trainable, size_t n, const sde_adam_coef *k) {
  if (!k) return sde_fail(SDE_EINVAL, "adam_step: no coefficients");
  if (!n) return SDE_OK;
  OP_BEGIN(be);
  adam_kernel<<<grid_for(n), NT, 0, c->stream>>>(p, m, v, ema, grad, trainable, n, *k);
  return op_end(c, SDE_OK, "adam_step");
}

void sde_cuda_fill_table_exact(sde_backend *be) {
  be->randn_rows = cuda_randn_rows;
  be->randu_rows = cuda_randu_rows;
  be->rademacher_rows = cuda_rademacher_rows;
  be->axpby_rows = cuda_axpby_rows;
  be->dot_rows = cuda_dot_rows;
  be->adam_step = cuda_adam_step;
}
