/* State and helpers shared by the CUDA backend's translation units (C++ under nvcc). */
#ifndef SDE_CUDA_INTERNAL_H
#define SDE_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <pthread.h>

#include "../backend.h"
#include "scoresde/error.h"

/* One cached cuDNN convolution: descriptors and chosen algorithms for one shape. */
typedef struct {
  sde_nn_conv2d_shape s;
  int pad_h, pad_w;     /* symmetric padding given to cuDNN */
  int explicit_pad;     /* 1: asymmetric padding, the input is zero-padded into scratch */
  int Hp, Wp;           /* height/width cuDNN sees (padded when explicit_pad) */
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
  size_t fwd_ws, bwd_data_ws, bwd_filter_ws; /* bytes */
  int have_bwd;
} sde_cuda_conv;

#define SDE_CUDA_CONV_CACHE 96

typedef struct {
  int device;
  sde_precision precision;
  cudaStream_t stream;
  cublasHandle_t cublas;
  cudnnHandle_t cudnn;
  void *ws; /* growable workspace of the conv/GEMM ops, stream-ordered reuse */
  size_t ws_bytes;
  void *red; /* growable workspace of the reductions' partial sums (separate, so a helper
              * reduction never moves a workspace region its caller already holds) */
  size_t red_bytes;
  int pending;          /* first failure of a void op (sde_status), reported later */
  char pending_msg[256];
  pthread_mutex_t lock; /* workspace, handles and the pending error */
  sde_cuda_conv conv[SDE_CUDA_CONV_CACHE];
  int n_conv;
  int conv_find;        /* SDE_CUDA_CONV_FIND=1: time the algorithms (cudnnFind*) */
  int capturing;        /* a CUDA graph capture is open on the stream (sde_cuda_graph_begin) */
  void **pinned;        /* host staging buffers of uploads captured into graphs (kept until close) */
  int n_pinned, cap_pinned;
} sde_cuda_impl;

static inline sde_cuda_impl *sde_cuda_of(const sde_backend *be) { return (sde_cuda_impl *)be->impl; }

/* cuda_backend.cu */
/* Enters an op: sets the device, takes the lock, returns a pending failure (then unlocked). */
int sde_cuda_enter(sde_cuda_impl *c);
void sde_cuda_leave(sde_cuda_impl *c);
/* Checks the last launch; records it (first one wins) when `record`, else returns it. */
int sde_cuda_check_launch(sde_cuda_impl *c, const char *what);
void sde_cuda_record(sde_cuda_impl *c, int code, const char *msg);
int sde_cuda_fail_cuda(cudaError_t e, const char *what);
int sde_cuda_fail_cublas(cublasStatus_t e, const char *what);
int sde_cuda_fail_cudnn(cudnnStatus_t e, const char *what);
/* Workspace of at least `bytes` (grows, after the stream drains). NULL + SDE_ENOMEM message. */
void *sde_cuda_workspace(sde_cuda_impl *c, size_t bytes);
void *sde_cuda_red_workspace(sde_cuda_impl *c, size_t bytes);
/* cudaMalloc with the out-of-memory message */
int sde_cuda_malloc(sde_cuda_impl *c, size_t bytes, void **ptr);

/* Every op entry: OP_BEGIN(be) (device, lock, pending failure), then
 * `return op_end(c, rc, "name");` (launch check, unlock). */
#define OP_BEGIN(be)                  \
  sde_cuda_impl *c = sde_cuda_of(be); \
  do {                                \
    int rc_ = sde_cuda_enter(c);      \
    if (rc_) return rc_;              \
  } while (0)

static inline int op_end(sde_cuda_impl *c, int rc, const char *what) {
  if (!rc) rc = sde_cuda_check_launch(c, what);
  sde_cuda_leave(c);
  return rc;
}

/* Bytes rounded up so carved workspace regions stay 256-byte aligned. */
static inline size_t sde_cuda_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* cuda_blas.cu: row-major GEMM (the CPU gemm_batch convention) on the backend's stream:
 * C_i[M,N] = alpha·op(A_i)·op(B_i) + beta·C_i for i < batch, matrices at the given strides. */
int sde_cuda_gemm(sde_cuda_impl *c, int transA, int transB, int M, int N, int K, float alpha,
                  const float *A, int lda, long long strideA, const float *B, int ldb,
                  long long strideB, float beta, float *C, int ldc, long long strideC, int batch);
void sde_cuda_fill_table_blas(sde_backend *be);
void sde_cuda_conv_cache_free(sde_cuda_impl *c);

/* cuda_kernels.cu */
void sde_cuda_fill_table_kernels(sde_backend *be);
/* out[B,C,HW] = bias[C] broadcast (or 0); beta=1 GEMMs then accumulate on it */
int sde_cuda_fill_bias(sde_cuda_impl *c, float *out, const float *bias, int B, int C, int HW);
/* out[B,C,HW] += bias[C] */
int sde_cuda_add_bias(sde_cuda_impl *c, float *out, const float *bias, int B, int C, int HW);
/* dbias[C] += Σ_b Σ_p g[b,c,p] (double, fixed order) */
int sde_cuda_bias_grad(sde_cuda_impl *c, float *dbias, const float *g, int B, int C, int HW);
/* out[P,Ho,Wo] (= or +=) FIR(inp[P,H,W]) of the given sde_fir kind */
int sde_cuda_fir(sde_cuda_impl *c, float *out, const float *inp, int P, int H, int W, int Ho,
                 int Wo, int kind, int accumulate);
/* dst[B,C,H,W] += src[B,C,H+pt+pb,W+pl+pr] cropped; dst[B,C,Hp,Wp] = zero-padded src */
int sde_cuda_pad(sde_cuda_impl *c, float *dst, const float *src, int P, int H, int W, int pt, int pb,
                 int pl, int pr);
int sde_cuda_crop_add(sde_cuda_impl *c, float *dst, const float *src, int P, int H, int W, int pt,
                      int pb, int pl, int pr);
/* z[P,2H-1,2W-1] = x[P,H,W] at even positions (0 elsewhere); dx[P,H,W] += dz at them */
int sde_cuda_zero_insert(sde_cuda_impl *c, float *z, const float *x, int P, int H, int W);
int sde_cuda_zero_insert_grad(sde_cuda_impl *c, float *dx, const float *dz, int P, int H, int W);
/* attention: softmax over rows of x[rows, n] in place; softmax backward likewise */
int sde_cuda_softmax_rows(sde_cuda_impl *c, float *x, long long rows, int n);
int sde_cuda_softmax_backward_rows(sde_cuda_impl *c, float *da, const float *att, long long rows,
                                   int n, float scale);

/* cuda_exact.cu (compiled with --fmad=false) */
void sde_cuda_fill_table_exact(sde_backend *be);

#define SDE_CUDA_THREADS 256
static inline unsigned sde_cuda_blocks(size_t n, int threads) {
  size_t b = (n + threads - 1) / threads;
  return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

#endif
