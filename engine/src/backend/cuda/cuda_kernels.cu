/* The CUDA backend's own kernels: GroupNorm(+SiLU), SiLU, softmax, FIR and nearest/average
 * resampling, embeddings, and the elementwise helpers. One thread per output, with the
 * per-element math of cuda_math.cuh. Reductions are deterministic: each block sums a fixed
 * slice with a fixed thread-to-element map and a fixed shared-memory tree, partial sums
 * are combined in a fixed order, all in double, and no float atomics are used. */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_math.cuh"

#define NT SDE_CUDA_THREADS /* threads per block everywhere: a power of two */

/* grid-stride loop over n elements */
#define FOR_EACH(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static unsigned grid_for(size_t n) {
  size_t b = (n + NT - 1) / NT;
  if (b > (1u << 20)) b = 1u << 20; /* the loops stride over the rest */
  return (unsigned)(b ? b : 1);
}

/* Sum over the block, fixed tree order. Every thread gets the result. */
__device__ static double block_sum(double v) {
  __shared__ double sh[NT];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = NT / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

__device__ static float block_max(float v) {
  __shared__ float sh[NT];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = NT / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}


/* Void ops cannot fail on the CPU: here a failure is recorded and reported by the next
 * int-returning entry or synchronize(). */
static void void_begin(sde_cuda_impl *c) {
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
}
static void void_end(sde_cuda_impl *c, const char *what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    int code = sde_cuda_fail_cuda(e, what);
    sde_cuda_record(c, code, sde_errmsg());
  }
  sde_cuda_leave(c);
}

/* =======================================================================================
 * elementwise */

__global__ static void silu_forward_kernel(float *out, const float *inp, size_t n) {
  FOR_EACH(i, n) out[i] = sde_silu(inp[i]);
}
__global__ static void silu_backward_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
  FOR_EACH(i, n) dinp[i] += sde_silu_grad(dout[i], inp[i]);
}
__global__ static void add_forward_kernel(float *out, const float *a, const float *b, float scale, size_t n) {
  FOR_EACH(i, n) out[i] = (a[i] + b[i]) * scale;
}
/* da and db may be the same buffer: then it gets both terms, as on the CPU */
__global__ static void add_backward_kernel(float *da, float *db, const float *dout, float scale, size_t n) {
  FOR_EACH(i, n) {
    float g = scale * dout[i];
    if (da) da[i] += g;
    if (db) db[i] += g;
  }
}
__global__ static void scale_kernel(float *out, const float *inp, float scale, size_t n) {
  FOR_EACH(i, n) out[i] = inp[i] * scale;
}
__global__ static void accumulate_kernel(float *dst, const float *src, size_t n) {
  FOR_EACH(i, n) dst[i] += src[i];
}
__global__ static void mul_kernel(float *out, const float *a, const float *b, size_t n) {
  FOR_EACH(i, n) out[i] = a[i] * b[i];
}
__global__ static void dropout_mask_kernel(float *mask, float p, float keep, size_t n) {
  FOR_EACH(i, n) mask[i] = sde_dropout_elem(mask[i], p, keep);
}
/* x[rows, HW] += bias[rows] */
__global__ static void add_row_bias_kernel(float *x, const float *bias, size_t n, int HW) {
  FOR_EACH(i, n) x[i] += bias[i / HW];
}
/* out[B,C,HW] = bias[c] (or 0) */
__global__ static void fill_bias_kernel(float *out, const float *bias, size_t n, int C, int HW) {
  FOR_EACH(i, n) out[i] = bias ? bias[(i / HW) % C] : 0.0f;
}
/* out[B,C,HW] += bias[c] */
__global__ static void add_bias_kernel(float *out, const float *bias, size_t n, int C, int HW) {
  FOR_EACH(i, n) out[i] += bias[(i / HW) % C];
}
/* out[B, Ca+Cb, HW] from a[B,Ca,HW], b[B,Cb,HW] */
__global__ static void concat_forward_kernel(float *out, const float *a, const float *b, size_t n,
                                             size_t na, size_t nb) {
  FOR_EACH(i, n) {
    size_t img = i / (na + nb), r = i % (na + nb);
    out[i] = r < na ? a[img * na + r] : b[img * nb + (r - na)];
  }
}
__global__ static void concat_backward_kernel(float *da, float *db, const float *dout, size_t n,
                                              size_t na, size_t nb) {
  FOR_EACH(i, n) {
    size_t img = i / (na + nb), r = i % (na + nb);
    if (r < na) {
      if (da) da[img * na + r] += dout[i];
    } else if (db) {
      db[img * nb + (r - na)] += dout[i];
    }
  }
}

static void cuda_silu_forward(const sde_backend *be, float *out, const float *inp, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  silu_forward_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, inp, n);
  void_end(c, "silu_forward");
}
static void cuda_silu_backward(const sde_backend *be, float *dinp, const float *dout, const float *inp, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n || !dinp) return;
  void_begin(c);
  silu_backward_kernel<<<grid_for(n), NT, 0, c->stream>>>(dinp, dout, inp, n);
  void_end(c, "silu_backward");
}
static void cuda_add_forward(const sde_backend *be, float *out, const float *a, const float *b, float scale, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  add_forward_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, a, b, scale, n);
  void_end(c, "add_forward");
}
static void cuda_add_backward(const sde_backend *be, float *da, float *db, const float *dout, float scale, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n || (!da && !db)) return;
  void_begin(c);
  add_backward_kernel<<<grid_for(n), NT, 0, c->stream>>>(da, db, dout, scale, n);
  void_end(c, "add_backward");
}
static void cuda_scale(const sde_backend *be, float *out, const float *inp, float scale, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  scale_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, inp, scale, n);
  void_end(c, "scale");
}
static void cuda_accumulate(const sde_backend *be, float *dst, const float *src, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  accumulate_kernel<<<grid_for(n), NT, 0, c->stream>>>(dst, src, n);
  void_end(c, "accumulate");
}
static void cuda_mul(const sde_backend *be, float *out, const float *a, const float *b, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  mul_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, a, b, n);
  void_end(c, "mul");
}
static void cuda_dropout_mask(const sde_backend *be, float *mask, float p, float keep, size_t n) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!n) return;
  void_begin(c);
  dropout_mask_kernel<<<grid_for(n), NT, 0, c->stream>>>(mask, p, keep, n);
  void_end(c, "dropout_mask");
}
static void cuda_add_channel_bias_forward(const sde_backend *be, float *x, const float *bias, int B, int C, int HW) {
  sde_cuda_impl *c = sde_cuda_of(be);
  size_t n = (size_t)B * C * HW;
  if (!n || B < 1 || C < 1 || HW < 1) return;
  void_begin(c);
  add_row_bias_kernel<<<grid_for(n), NT, 0, c->stream>>>(x, bias, n, HW);
  void_end(c, "add_channel_bias_forward");
}
static void cuda_concat_channels_forward(const sde_backend *be, float *out, const float *a, const float *b, int B,
                                         int Ca, int Cb, int HW) {
  sde_cuda_impl *c = sde_cuda_of(be);
  size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW, n = (size_t)B * (na + nb);
  if (!n || B < 1) return;
  void_begin(c);
  concat_forward_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, a, b, n, na, nb);
  void_end(c, "concat_channels_forward");
}
static void cuda_concat_channels_backward(const sde_backend *be, float *da, float *db, const float *dout, int B,
                                          int Ca, int Cb, int HW) {
  sde_cuda_impl *c = sde_cuda_of(be);
  size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW, n = (size_t)B * (na + nb);
  if (!n || B < 1 || (!da && !db)) return;
  void_begin(c);
  concat_backward_kernel<<<grid_for(n), NT, 0, c->stream>>>(da, db, dout, n, na, nb);
  void_end(c, "concat_channels_backward");
}

/* =======================================================================================
 * row sums: the building block of every bias/affine gradient */

/* part[r] = Σ_p x[r, p] (and, with y, Σ_p x·y) for rows of length L; one block per row */
__global__ static void row_sums_kernel(double *part, const float *x, long long L) {
  const float *xr = x + (size_t)blockIdx.x * L;
  double s = 0.0;
  for (long long p = threadIdx.x; p < L; p += NT) s += xr[p];
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* dbias[c] += Σ_b part[b, c], b in order */
__global__ static void sum_over_batch_kernel(float *dbias, const double *part, int B, int C) {
  int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= C) return;
  double s = 0.0;
  for (int b = 0; b < B; b++) s += part[(size_t)b * C + ch];
  dbias[ch] += (float)s;
}

/* dbias[rows] += part[rows] */
__global__ static void add_part_kernel(float *dbias, const double *part, int rows) {
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) dbias[r] += (float)part[r];
}

int sde_cuda_fill_bias(sde_cuda_impl *c, float *out, const float *bias, int B, int C, int HW) {
  size_t n = (size_t)B * C * HW;
  fill_bias_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, bias, n, C, HW);
  return sde_cuda_check_launch(c, "bias");
}

int sde_cuda_add_bias(sde_cuda_impl *c, float *out, const float *bias, int B, int C, int HW) {
  size_t n = (size_t)B * C * HW;
  add_bias_kernel<<<grid_for(n), NT, 0, c->stream>>>(out, bias, n, C, HW);
  return sde_cuda_check_launch(c, "bias");
}

int sde_cuda_bias_grad(sde_cuda_impl *c, float *dbias, const float *g, int B, int C, int HW) {
  double *part = (double *)sde_cuda_red_workspace(c, (size_t)B * C * sizeof(double));
  if (!part) return SDE_ENOMEM;
  row_sums_kernel<<<(unsigned)((size_t)B * C), NT, 0, c->stream>>>(part, g, HW);
  sum_over_batch_kernel<<<(C + NT - 1) / NT, NT, 0, c->stream>>>(dbias, part, B, C);
  return sde_cuda_check_launch(c, "bias gradient");
}

static void cuda_add_channel_bias_backward(const sde_backend *be, float *dbias, const float *dx, int B, int C, int HW) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (!dbias || B < 1 || C < 1 || HW < 1) return;
  void_begin(c);
  int rows = B * C;
  double *part = (double *)sde_cuda_red_workspace(c, (size_t)rows * sizeof(double));
  if (!part) {
    sde_cuda_record(c, SDE_ENOMEM, sde_errmsg());
    sde_cuda_leave(c);
    return;
  }
  row_sums_kernel<<<rows, NT, 0, c->stream>>>(part, dx, HW);
  add_part_kernel<<<(rows + NT - 1) / NT, NT, 0, c->stream>>>(dbias, part, rows);
  void_end(c, "add_channel_bias_backward");
}

/* =======================================================================================
 * GroupNorm: per group (b, g) of n = (C/G)·HW contiguous values, sums over fixed chunks
 * (one block each) of the values minus the group's first value (a shift that keeps
 * Σd² − (Σd)²/n well conditioned), combined in chunk order. */

#define GN_CHUNK (NT * 16)

/* part[bg, chunk] = (Σ d, Σ d²), d = x − x[group start] */
__global__ static void gn_stats_partial_kernel(double2 *part, const float *x, long long n, int chunks) {
  const float *xg = x + (size_t)blockIdx.y * n;
  float shift = xg[0];
  long long i0 = (long long)blockIdx.x * GN_CHUNK, i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n;
  double s = 0.0, q = 0.0;
  for (long long i = i0 + threadIdx.x; i < i1; i += NT) {
    double d = (double)xg[i] - shift;
    s += d;
    q += d * d;
  }
  s = block_sum(s);
  q = block_sum(q);
  if (threadIdx.x == 0) part[(size_t)blockIdx.y * chunks + blockIdx.x] = make_double2(s, q);
}

__global__ static void gn_stats_final_kernel(float *mean, float *rstd, const double2 *part, const float *x,
                                             long long n, int chunks, int BG, float eps) {
  int bg = blockIdx.x * blockDim.x + threadIdx.x;
  if (bg >= BG) return;
  double s = 0.0, q = 0.0;
  for (int k = 0; k < chunks; k++) {
    s += part[(size_t)bg * chunks + k].x;
    q += part[(size_t)bg * chunks + k].y;
  }
  double m = s / (double)n, ss = q - s * m; /* Σ (d − m)² */
  if (ss < 0.0) ss = 0.0;
  mean[bg] = (float)((double)x[(size_t)bg * n] + m);
  rstd[bg] = sde_gn_rstd(ss, (double)n, eps);
}

__global__ static void gn_apply_kernel(float *out, const float *inp, const float *mean, const float *rstd,
                                       const float *gamma, const float *beta, size_t total, int C, int HW,
                                       int cpg, int with_silu) {
  FOR_EACH(i, total) {
    size_t row = i / HW; /* b·C + c */
    int ch = (int)(row % C);
    size_t bg = row / cpg;
    float scale = rstd[bg] * (gamma ? gamma[ch] : 1.0f), shift = beta ? beta[ch] : 0.0f;
    float y = sde_gn_apply(inp[i], mean[bg], scale, shift);
    out[i] = with_silu ? sde_silu(y) : y;
  }
}

static int gn_check(int B, int C, int HW, int G) {
  if (B < 1 || C < 1 || HW < 1 || G < 1 || C % G)
    return sde_fail(SDE_EINVAL, "groupnorm: bad shape B=%d C=%d HW=%d groups=%d", B, C, HW, G);
  return SDE_OK;
}

static int gn_forward(sde_cuda_impl *c, float *out, float *mean, float *rstd, const float *inp, const float *gamma,
                      const float *beta, int B, int C, int HW, int G, float eps, int with_silu) {
  int BG = B * G, cpg = C / G;
  long long n = (long long)cpg * HW;
  int chunks = (int)((n + GN_CHUNK - 1) / GN_CHUNK);
  size_t part_bytes = sde_cuda_align((size_t)BG * chunks * sizeof(double2));
  char *red = (char *)sde_cuda_red_workspace(c, part_bytes + 2 * sde_cuda_align((size_t)BG * sizeof(float)));
  if (!red) return SDE_ENOMEM;
  double2 *part = (double2 *)red;
  float *m = mean ? mean : (float *)(red + part_bytes);
  float *r = rstd ? rstd : (float *)(red + part_bytes + sde_cuda_align((size_t)BG * sizeof(float)));
  gn_stats_partial_kernel<<<dim3(chunks, BG), NT, 0, c->stream>>>(part, inp, n, chunks);
  gn_stats_final_kernel<<<(BG + NT - 1) / NT, NT, 0, c->stream>>>(m, r, part, inp, n, chunks, BG, eps);
  size_t total = (size_t)B * C * HW;
  gn_apply_kernel<<<grid_for(total), NT, 0, c->stream>>>(out, inp, m, r, gamma, beta, total, C, HW, cpg,
                                                          with_silu);
  return SDE_OK;
}

static int cuda_groupnorm_forward(const sde_backend *be, float *out, float *mean, float *rstd, const float *inp,
                                  const float *gamma, const float *beta, int B, int C, int HW, int G, float eps) {
  int rc = gn_check(B, C, HW, G);
  if (rc) return rc;
  OP_BEGIN(be);
  rc = gn_forward(c, out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps, 0);
  return op_end(c, rc, "groupnorm_forward");
}

static int cuda_groupnorm_silu_forward(const sde_backend *be, float *out, const float *inp, const float *gamma,
                                       const float *beta, int B, int C, int HW, int G, float eps) {
  int rc = gn_check(B, C, HW, G);
  if (rc) return rc;
  OP_BEGIN(be);
  rc = gn_forward(c, out, NULL, NULL, inp, gamma, beta, B, C, HW, G, eps, 1);
  return op_end(c, rc, "groupnorm_silu_forward");
}

/* part[bg, chunk] = (Σ dxhat, Σ dxhat·xhat), dxhat = dout·gamma, xhat = (x − mean)·rstd */
__global__ static void gn_bwd_partial_kernel(double2 *part, const float *dout, const float *inp, const float *mean,
                                             const float *rstd, const float *gamma, long long n, int chunks,
                                             int G, int cpg, int HW) {
  int bg = blockIdx.y, g = bg % G;
  size_t off = (size_t)bg * n;
  float mu = mean[bg], rs = rstd[bg];
  long long i0 = (long long)blockIdx.x * GN_CHUNK, i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n;
  double s1 = 0.0, s2 = 0.0;
  for (long long i = i0 + threadIdx.x; i < i1; i += NT) {
    float gm = gamma ? gamma[g * cpg + (int)(i / HW)] : 1.0f;
    float dxhat = dout[off + i] * gm, xhat = (inp[off + i] - mu) * rs;
    s1 += dxhat;
    s2 += (double)dxhat * xhat;
  }
  s1 = block_sum(s1);
  s2 = block_sum(s2);
  if (threadIdx.x == 0) part[(size_t)bg * chunks + blockIdx.x] = make_double2(s1, s2);
}

__global__ static void gn_bwd_final_kernel(float2 *m12, const double2 *part, long long n, int chunks, int BG) {
  int bg = blockIdx.x * blockDim.x + threadIdx.x;
  if (bg >= BG) return;
  double s1 = 0.0, s2 = 0.0;
  for (int k = 0; k < chunks; k++) {
    s1 += part[(size_t)bg * chunks + k].x;
    s2 += part[(size_t)bg * chunks + k].y;
  }
  m12[bg] = make_float2((float)(s1 / (double)n), (float)(s2 / (double)n));
}

__global__ static void gn_bwd_apply_kernel(float *dinp, const float *dout, const float *inp, const float *mean,
                                           const float *rstd, const float *gamma, const float2 *m12, size_t total,
                                           int C, int HW, int cpg) {
  FOR_EACH(i, total) {
    size_t row = i / HW;
    int ch = (int)(row % C);
    size_t bg = row / cpg;
    dinp[i] += sde_gn_dx(dout[i], inp[i], gamma ? gamma[ch] : 1.0f, mean[bg], rstd[bg], m12[bg].x, m12[bg].y);
  }
}

/* part[b, c] = (Σ_p dout·xhat, Σ_p dout) over row (b, c); one block per row */
__global__ static void gn_affine_rows_kernel(double2 *part, const float *dout, const float *inp, const float *mean,
                                             const float *rstd, int C, int HW, int cpg) {
  size_t row = blockIdx.x;
  size_t bg = row / cpg; /* (b·C + c)/cpg = b·G + c/cpg */
  float mu = mean[bg], rs = rstd[bg];
  const float *g = dout + row * HW, *x = inp + row * HW;
  double sg = 0.0, sb = 0.0;
  for (int p = threadIdx.x; p < HW; p += NT) {
    sg += (double)g[p] * ((x[p] - mu) * rs);
    sb += g[p];
  }
  sg = block_sum(sg);
  sb = block_sum(sb);
  if (threadIdx.x == 0) part[row] = make_double2(sg, sb);
}

__global__ static void gn_affine_final_kernel(float *dgamma, float *dbeta, const double2 *part, int B, int C) {
  int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= C) return;
  double sg = 0.0, sb = 0.0;
  for (int b = 0; b < B; b++) {
    sg += part[(size_t)b * C + ch].x;
    sb += part[(size_t)b * C + ch].y;
  }
  if (dgamma) dgamma[ch] += (float)sg;
  if (dbeta) dbeta[ch] += (float)sb;
}

static int cuda_groupnorm_backward(const sde_backend *be, float *dinp, float *dgamma, float *dbeta, const float *dout,
                                   const float *inp, const float *mean, const float *rstd, const float *gamma, int B,
                                   int C, int HW, int G) {
  int rc = gn_check(B, C, HW, G);
  if (rc) return rc;
  OP_BEGIN(be);
  int BG = B * G, cpg = C / G;
  long long n = (long long)cpg * HW;
  size_t total = (size_t)B * C * HW;
  if (dinp) {
    int chunks = (int)((n + GN_CHUNK - 1) / GN_CHUNK);
    size_t part_bytes = sde_cuda_align((size_t)BG * chunks * sizeof(double2));
    char *red = (char *)sde_cuda_red_workspace(c, part_bytes + (size_t)BG * sizeof(float2));
    if (!red) return op_end(c, SDE_ENOMEM, "groupnorm_backward");
    double2 *part = (double2 *)red;
    float2 *m12 = (float2 *)(red + part_bytes);
    gn_bwd_partial_kernel<<<dim3(chunks, BG), NT, 0, c->stream>>>(part, dout, inp, mean, rstd, gamma, n, chunks,
                                                                  G, cpg, HW);
    gn_bwd_final_kernel<<<(BG + NT - 1) / NT, NT, 0, c->stream>>>(m12, part, n, chunks, BG);
    gn_bwd_apply_kernel<<<grid_for(total), NT, 0, c->stream>>>(dinp, dout, inp, mean, rstd, gamma, m12, total, C,
                                                                HW, cpg);
  }
  if (dgamma || dbeta) {
    /* the region above is done with once its kernels ran: stream order makes reuse safe */
    double2 *part = (double2 *)sde_cuda_red_workspace(c, (size_t)B * C * sizeof(double2));
    if (!part) return op_end(c, SDE_ENOMEM, "groupnorm_backward");
    gn_affine_rows_kernel<<<(unsigned)((size_t)B * C), NT, 0, c->stream>>>(part, dout, inp, mean, rstd, C, HW, cpg);
    gn_affine_final_kernel<<<(C + NT - 1) / NT, NT, 0, c->stream>>>(dgamma, dbeta, part, B, C);
  }
  return op_end(c, SDE_OK, "groupnorm_backward");
}

/* =======================================================================================
 * softmax over rows (attention), one block per row */

__global__ static void softmax_rows_kernel(float *x, int n) {
  float *r = x + (size_t)blockIdx.x * n;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += NT) mx = fmaxf(mx, r[j]);
  mx = block_max(mx); /* max is exact in any order */
  double s = 0.0;
  for (int j = threadIdx.x; j < n; j += NT) {
    float e = expf(r[j] - mx);
    r[j] = e;
    s += e;
  }
  s = block_sum(s);
  float inv = (float)(1.0 / s);
  for (int j = threadIdx.x; j < n; j += NT) r[j] *= inv;
}

/* da[i,:] = scale·a ⊙ (da − Σ_j a·da) */
__global__ static void softmax_backward_rows_kernel(float *da, const float *att, int n, float scale) {
  float *d = da + (size_t)blockIdx.x * n;
  const float *a = att + (size_t)blockIdx.x * n;
  double dot = 0.0;
  for (int j = threadIdx.x; j < n; j += NT) dot += (double)a[j] * d[j];
  float dotf = (float)block_sum(dot);
  for (int j = threadIdx.x; j < n; j += NT) d[j] = sde_softmax_dlogit(a[j], d[j], dotf, scale);
}

int sde_cuda_softmax_rows(sde_cuda_impl *c, float *x, long long rows, int n) {
  for (long long r0 = 0; r0 < rows; r0 += 0x7fffffffLL) {
    long long nr = rows - r0 < 0x7fffffffLL ? rows - r0 : 0x7fffffffLL;
    softmax_rows_kernel<<<(unsigned)nr, NT, 0, c->stream>>>(x + r0 * n, n);
  }
  return sde_cuda_check_launch(c, "softmax");
}

int sde_cuda_softmax_backward_rows(sde_cuda_impl *c, float *da, const float *att, long long rows, int n,
                                   float scale) {
  for (long long r0 = 0; r0 < rows; r0 += 0x7fffffffLL) {
    long long nr = rows - r0 < 0x7fffffffLL ? rows - r0 : 0x7fffffffLL;
    softmax_backward_rows_kernel<<<(unsigned)nr, NT, 0, c->stream>>>(da + r0 * n, att + r0 * n, n, scale);
  }
  return sde_cuda_check_launch(c, "softmax backward");
}

/* =======================================================================================
 * resampling */

__global__ static void fir_kernel(float *out, const float *inp, size_t total, int H, int W, int Ho, int Wo,
                                  int kind, int accumulate) {
  FOR_EACH(i, total) {
    size_t p = i / ((size_t)Ho * Wo);
    int r = (int)(i % ((size_t)Ho * Wo)), oh = r / Wo, ow = r % Wo;
    float v = sde_fir_elem(inp + p * H * W, H, W, kind, oh, ow);
    if (accumulate) out[i] += v;
    else out[i] = v;
  }
}

int sde_cuda_fir(sde_cuda_impl *c, float *out, const float *inp, int P, int H, int W, int Ho, int Wo, int kind,
                 int accumulate) {
  size_t total = (size_t)P * Ho * Wo;
  fir_kernel<<<grid_for(total), NT, 0, c->stream>>>(out, inp, total, H, W, Ho, Wo, kind, accumulate);
  return sde_cuda_check_launch(c, "fir");
}

/* z[P,2H-1,2W-1] = x[P,H,W] at the even positions, 0 elsewhere */
__global__ static void zero_insert_kernel(float *z, const float *x, size_t total, int H, int W) {
  const int Hz = 2 * H - 1, Wz = 2 * W - 1;
  FOR_EACH(i, total) {
    size_t p = i / ((size_t)Hz * Wz);
    int r = (int)(i % ((size_t)Hz * Wz));
    z[i] = sde_zero_insert_elem(x + p * H * W, W, r / Wz, r % Wz);
  }
}
/* dx[P,H,W] += dz[P,2H-1,2W-1] at the even positions */
__global__ static void zero_insert_grad_kernel(float *dx, const float *dz, size_t total, int H, int W) {
  const int Hz = 2 * H - 1, Wz = 2 * W - 1;
  FOR_EACH(i, total) {
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W));
    dx[i] += sde_zero_insert_grad(dz + p * Hz * Wz, Wz, r / W, r % W);
  }
}

int sde_cuda_zero_insert(sde_cuda_impl *c, float *z, const float *x, int P, int H, int W) {
  size_t total = (size_t)P * (2 * H - 1) * (2 * W - 1);
  zero_insert_kernel<<<grid_for(total), NT, 0, c->stream>>>(z, x, total, H, W);
  return sde_cuda_check_launch(c, "zero insert");
}
int sde_cuda_zero_insert_grad(sde_cuda_impl *c, float *dx, const float *dz, int P, int H, int W) {
  size_t total = (size_t)P * H * W;
  zero_insert_grad_kernel<<<grid_for(total), NT, 0, c->stream>>>(dx, dz, total, H, W);
  return sde_cuda_check_launch(c, "zero insert backward");
}

/* dst[P,Hp,Wp] = src[P,H,W] zero-padded by (pt, pb, pl, pr) */
__global__ static void pad_kernel(float *dst, const float *src, size_t total, int H, int W, int Hp, int Wp, int pt,
                                  int pl) {
  FOR_EACH(i, total) {
    size_t p = i / ((size_t)Hp * Wp);
    int r = (int)(i % ((size_t)Hp * Wp));
    dst[i] = sde_pad_elem(src + p * H * W, H, W, pt, pl, r / Wp, r % Wp);
  }
}
/* dst[P,H,W] += the interior of src[P,Hp,Wp] */
__global__ static void crop_add_kernel(float *dst, const float *src, size_t total, int H, int W, int Hp, int Wp,
                                       int pt, int pl) {
  FOR_EACH(i, total) {
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W)), h = r / W, w = r % W;
    dst[i] += src[(p * Hp + h + pt) * Wp + w + pl];
  }
}

int sde_cuda_pad(sde_cuda_impl *c, float *dst, const float *src, int P, int H, int W, int pt, int pb, int pl,
                 int pr) {
  int Hp = H + pt + pb, Wp = W + pl + pr;
  size_t total = (size_t)P * Hp * Wp;
  pad_kernel<<<grid_for(total), NT, 0, c->stream>>>(dst, src, total, H, W, Hp, Wp, pt, pl);
  return sde_cuda_check_launch(c, "pad");
}

int sde_cuda_crop_add(sde_cuda_impl *c, float *dst, const float *src, int P, int H, int W, int pt, int pb, int pl,
                      int pr) {
  int Hp = H + pt + pb, Wp = W + pl + pr;
  size_t total = (size_t)P * H * W;
  crop_add_kernel<<<grid_for(total), NT, 0, c->stream>>>(dst, src, total, H, W, Hp, Wp, pt, pl);
  return sde_cuda_check_launch(c, "crop");
}

static int resample_check(const char *op, int B, int C, int H, int W, int need_even) {
  if (B < 1 || C < 1 || H < 1 || W < 1) return sde_fail(SDE_EINVAL, "%s: bad shape [%d,%d,%d,%d]", op, B, C, H, W);
  if (need_even && (H % 2 || W % 2))
    return sde_fail(SDE_EINVAL, "%s: height and width must be even (got %dx%d)", op, H, W);
  return SDE_OK;
}

static int fir_op(const sde_backend *be, const char *name, float *out, const float *inp, int B, int C, int H, int W,
                  int need_even, int Hi, int Wi, int Ho, int Wo, int kind, int accumulate) {
  int rc = resample_check(name, B, C, H, W, need_even);
  if (rc) return rc;
  OP_BEGIN(be);
  rc = sde_cuda_fir(c, out, inp, B * C, Hi, Wi, Ho, Wo, kind, accumulate);
  return op_end(c, rc, name);
}

static int cuda_fir_upsample2x_forward(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W) {
  return fir_op(be, "fir_upsample2x", out, inp, B, C, H, W, 0, H, W, 2 * H, 2 * W, SDE_FIR_UP, 0);
}
static int cuda_fir_upsample2x_backward(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H,
                                        int W) {
  if (!dinp) return resample_check("fir_upsample2x", B, C, H, W, 0);
  return fir_op(be, "fir_upsample2x", dinp, dout, B, C, H, W, 0, 2 * H, 2 * W, H, W, SDE_FIR_UP_T, 1);
}
static int cuda_fir_downsample2x_forward(const sde_backend *be, float *out, const float *inp, int B, int C, int H,
                                         int W) {
  return fir_op(be, "fir_downsample2x", out, inp, B, C, H, W, 1, H, W, H / 2, W / 2, SDE_FIR_DOWN, 0);
}
static int cuda_fir_downsample2x_backward(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H,
                                          int W) {
  if (!dinp) return resample_check("fir_downsample2x", B, C, H, W, 1);
  return fir_op(be, "fir_downsample2x", dinp, dout, B, C, H, W, 1, H / 2, W / 2, H, W, SDE_FIR_DOWN_T, 1);
}

__global__ static void nearest_up_kernel(float *out, const float *inp, size_t total, int H, int W) {
  FOR_EACH(i, total) { /* over out[P, 2H, 2W] */
    size_t p = i / ((size_t)4 * H * W);
    int r = (int)(i % ((size_t)4 * H * W)), oh = r / (2 * W), ow = r % (2 * W);
    out[i] = inp[(p * H + oh / 2) * W + ow / 2];
  }
}
__global__ static void nearest_up_backward_kernel(float *dinp, const float *dout, size_t total, int H, int W) {
  FOR_EACH(i, total) { /* over dinp[P, H, W] */
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W));
    dinp[i] += sde_nearest_up_grad(dout + p * 4 * H * W, W, r / W, r % W);
  }
}
__global__ static void avgpool_kernel(float *out, const float *inp, size_t total, int H, int W) {
  FOR_EACH(i, total) { /* over out[P, H/2, W/2] */
    int Ho = H / 2, Wo = W / 2;
    size_t p = i / ((size_t)Ho * Wo);
    int r = (int)(i % ((size_t)Ho * Wo));
    out[i] = sde_avgpool_elem(inp + p * H * W, W, r / Wo, r % Wo);
  }
}
__global__ static void avgpool_backward_kernel(float *dinp, const float *dout, size_t total, int H, int W) {
  FOR_EACH(i, total) { /* over dinp[P, H, W] */
    int Wo = W / 2;
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W)), h = r / W, w = r % W;
    dinp[i] += 0.25f * dout[(p * (H / 2) + h / 2) * Wo + w / 2];
  }
}

static int cuda_upsample_nearest2x_forward(const sde_backend *be, float *out, const float *inp, int B, int C, int H,
                                           int W) {
  int rc = resample_check("upsample_nearest2x", B, C, H, W, 0);
  if (rc) return rc;
  OP_BEGIN(be);
  size_t total = (size_t)B * C * 4 * H * W;
  nearest_up_kernel<<<grid_for(total), NT, 0, c->stream>>>(out, inp, total, H, W);
  return op_end(c, SDE_OK, "upsample_nearest2x_forward");
}
static int cuda_upsample_nearest2x_backward(const sde_backend *be, float *dinp, const float *dout, int B, int C,
                                            int H, int W) {
  int rc = resample_check("upsample_nearest2x", B, C, H, W, 0);
  if (rc || !dinp) return rc;
  OP_BEGIN(be);
  size_t total = (size_t)B * C * H * W;
  nearest_up_backward_kernel<<<grid_for(total), NT, 0, c->stream>>>(dinp, dout, total, H, W);
  return op_end(c, SDE_OK, "upsample_nearest2x_backward");
}
static int cuda_avgpool2x_forward(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W) {
  int rc = resample_check("avgpool2x", B, C, H, W, 1);
  if (rc) return rc;
  OP_BEGIN(be);
  size_t total = (size_t)B * C * (H / 2) * (W / 2);
  avgpool_kernel<<<grid_for(total), NT, 0, c->stream>>>(out, inp, total, H, W);
  return op_end(c, SDE_OK, "avgpool2x_forward");
}
static int cuda_avgpool2x_backward(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H, int W) {
  int rc = resample_check("avgpool2x", B, C, H, W, 1);
  if (rc || !dinp) return rc;
  OP_BEGIN(be);
  size_t total = (size_t)B * C * H * W;
  avgpool_backward_kernel<<<grid_for(total), NT, 0, c->stream>>>(dinp, dout, total, H, W);
  return op_end(c, SDE_OK, "avgpool2x_backward");
}

/* =======================================================================================
 * embeddings: tiny (B·E elements); reductions are one thread per output, in the CPU's order */

__global__ static void fourier_forward_kernel(float *out, const float *u, const float *W, int B, int E) {
  FOR_EACH(i, (size_t)B * E) {
    int b = (int)(i / E), e = (int)(i % E);
    float proj = sde_fourier_proj(u[b], W[e]);
    out[(size_t)b * 2 * E + e] = (float)sin((double)proj);
    out[(size_t)b * 2 * E + E + e] = (float)cos((double)proj);
  }
}
__global__ static void fourier_du_kernel(float *du, const float *dout, const float *u, const float *W, int B, int E) {
  int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const float *g = dout + (size_t)b * 2 * E;
  double acc = 0.0;
  for (int e = 0; e < E; e++) acc += sde_fourier_grad_term(g[e], g[E + e], sde_fourier_proj(u[b], W[e]), W[e]);
  du[b] += (float)acc;
}
__global__ static void fourier_dW_kernel(float *dW, const float *dout, const float *u, const float *W, int B, int E) {
  int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  double acc = 0.0;
  for (int b = 0; b < B; b++) {
    const float *g = dout + (size_t)b * 2 * E;
    acc += sde_fourier_grad_term(g[e], g[E + e], sde_fourier_proj(u[b], W[e]), u[b]);
  }
  dW[e] += (float)acc;
}

static int cuda_fourier_embedding_forward(const sde_backend *be, float *out, const float *u, const float *W, int B,
                                          int E) {
  if (B < 1 || E < 1) return sde_fail(SDE_EINVAL, "fourier_embedding: bad shape");
  OP_BEGIN(be);
  fourier_forward_kernel<<<grid_for((size_t)B * E), NT, 0, c->stream>>>(out, u, W, B, E);
  return op_end(c, SDE_OK, "fourier_embedding_forward");
}
static int cuda_fourier_embedding_backward(const sde_backend *be, float *du, float *dW, const float *dout,
                                           const float *u, const float *W, int B, int E) {
  if (B < 1 || E < 1) return sde_fail(SDE_EINVAL, "fourier_embedding: bad shape");
  OP_BEGIN(be);
  if (du) fourier_du_kernel<<<(B + NT - 1) / NT, NT, 0, c->stream>>>(du, dout, u, W, B, E);
  if (dW) fourier_dW_kernel<<<(E + NT - 1) / NT, NT, 0, c->stream>>>(dW, dout, u, W, B, E);
  return op_end(c, SDE_OK, "fourier_embedding_backward");
}

__global__ static void timestep_forward_kernel(float *out, const float *t, int B, int dim) {
  int half = dim / 2;
  FOR_EACH(i, (size_t)B * half) {
    int b = (int)(i / half), k = (int)(i % half);
    float arg = t[b] * sde_timestep_freq(k, half);
    float *o = out + (size_t)b * dim;
    o[k] = (float)sin((double)arg);
    o[half + k] = (float)cos((double)arg);
    if (k == 0 && dim % 2) o[dim - 1] = 0.0f;
  }
}
__global__ static void timestep_backward_kernel(float *dt, const float *dout, const float *t, int B, int dim) {
  int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  int half = dim / 2;
  const float *g = dout + (size_t)b * dim;
  double acc = 0.0;
  for (int k = 0; k < half; k++) acc += sde_timestep_grad_term(g[k], g[half + k], t[b], sde_timestep_freq(k, half));
  dt[b] += (float)acc;
}

static int cuda_timestep_embedding_forward(const sde_backend *be, float *out, const float *t, int B, int dim) {
  if (B < 1 || dim < 4) return sde_fail(SDE_EINVAL, "timestep_embedding: need dim >= 4 (got %d)", dim);
  OP_BEGIN(be);
  timestep_forward_kernel<<<grid_for((size_t)B * (dim / 2)), NT, 0, c->stream>>>(out, t, B, dim);
  return op_end(c, SDE_OK, "timestep_embedding_forward");
}
static int cuda_timestep_embedding_backward(const sde_backend *be, float *dt, const float *dout, const float *t,
                                            int B, int dim) {
  if (B < 1 || dim < 4) return sde_fail(SDE_EINVAL, "timestep_embedding: need dim >= 4 (got %d)", dim);
  if (!dt) return SDE_OK;
  OP_BEGIN(be);
  timestep_backward_kernel<<<(B + NT - 1) / NT, NT, 0, c->stream>>>(dt, dout, t, B, dim);
  return op_end(c, SDE_OK, "timestep_embedding_backward");
}

/* ======================================================================================= */

void sde_cuda_fill_table_kernels(sde_backend *be) {
  be->groupnorm_forward = cuda_groupnorm_forward;
  be->groupnorm_backward = cuda_groupnorm_backward;
  be->groupnorm_silu_forward = cuda_groupnorm_silu_forward;
  be->silu_forward = cuda_silu_forward;
  be->silu_backward = cuda_silu_backward;
  be->fir_upsample2x_forward = cuda_fir_upsample2x_forward;
  be->fir_upsample2x_backward = cuda_fir_upsample2x_backward;
  be->fir_downsample2x_forward = cuda_fir_downsample2x_forward;
  be->fir_downsample2x_backward = cuda_fir_downsample2x_backward;
  be->upsample_nearest2x_forward = cuda_upsample_nearest2x_forward;
  be->upsample_nearest2x_backward = cuda_upsample_nearest2x_backward;
  be->avgpool2x_forward = cuda_avgpool2x_forward;
  be->avgpool2x_backward = cuda_avgpool2x_backward;
  be->fourier_embedding_forward = cuda_fourier_embedding_forward;
  be->fourier_embedding_backward = cuda_fourier_embedding_backward;
  be->timestep_embedding_forward = cuda_timestep_embedding_forward;
  be->timestep_embedding_backward = cuda_timestep_embedding_backward;
  be->add_forward = cuda_add_forward;
  be->add_backward = cuda_add_backward;
  be->scale = cuda_scale;
  be->accumulate = cuda_accumulate;
  be->mul = cuda_mul;
  be->dropout_mask = cuda_dropout_mask;
  be->add_channel_bias_forward = cuda_add_channel_bias_forward;
  be->add_channel_bias_backward = cuda_add_channel_bias_backward;
  be->concat_channels_forward = cuda_concat_channels_forward;
  be->concat_channels_backward = cuda_concat_channels_backward;
}
