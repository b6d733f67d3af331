/* The CUDA backend's library ops: linear, NIN and attention through cuBLAS, conv2d and
 * the FIR conv-downsample through cuDNN.
 *
 * Precision: FP32 runs strict fp32 (cuBLAS COMPUTE_32F with pedantic math, cuDNN FMA-only
 * algorithms); TF32 lets both use TF32 tensor cores; BF16 runs GEMMs with bf16 tensor-core
 * inputs and fp32 accumulation (COMPUTE_32F_FAST_16BF) and convolutions in TF32 (cuDNN's
 * legacy API has no fp32-in/bf16-compute mode; a bf16 copy of every activation would cost
 * more than it saves). Algorithms are chosen by cuDNN's heuristics (reproducible run to
 * run), or timed with SDE_CUDA_CONV_FIND=1; only deterministic ones are accepted, and in
 * FP32 no FFT or Winograd. */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_math.cuh"

/* =======================================================================================
 * GEMM, row-major: C = alpha·op(A)·op(B) + beta·C is Cᵀ = alpha·op(B)ᵀ·op(A)ᵀ + beta·Cᵀ in
 * cuBLAS's column-major view, where a row-major matrix reads as its transpose. */

static cublasComputeType_t compute_type(sde_precision p) {
  switch (p) {
    case SDE_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case SDE_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    default: return CUBLAS_COMPUTE_32F;
  }
}

int sde_cuda_gemm(sde_cuda_impl *c, int transA, int transB, int M, int N, int K, float alpha, const float *A,
                  int lda, long long strideA, const float *B, int ldb, long long strideB, float beta, float *C,
                  int ldc, long long strideC, int batch) {
  cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N, opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t st;
  if (batch == 1)
    st = cublasGemmEx(c->cublas, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C,
                      CUDA_R_32F, ldc, compute_type(c->precision), CUBLAS_GEMM_DEFAULT);
  else
    st = cublasGemmStridedBatchedEx(c->cublas, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, strideB, A,
                                    CUDA_R_32F, lda, strideA, &beta, C, CUDA_R_32F, ldc, strideC, batch,
                                    compute_type(c->precision), CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) return sde_cuda_fail_cublas(st, "gemm");
  return SDE_OK;
}


/* =======================================================================================
 * linear and NIN */

/* out[B,out_f] = inp[B,in_f] · weight[out_f,in_f]ᵀ + bias */
static int cuda_linear_forward(const sde_backend *be, float *out, const float *inp, const float *weight,
                               const float *bias, int B, int in_f, int out_f) {
  if (B < 1 || in_f < 1 || out_f < 1) return sde_fail(SDE_EINVAL, "linear: bad shape");
  OP_BEGIN(be);
  int rc = sde_cuda_fill_bias(c, out, bias, B, out_f, 1);
  if (!rc) rc = sde_cuda_gemm(c, 0, 1, B, out_f, in_f, 1.0f, inp, in_f, 0, weight, in_f, 0, 1.0f, out, out_f, 0, 1);
  return op_end(c, rc, "linear_forward");
}

static int cuda_linear_backward(const sde_backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *weight, int B, int in_f, int out_f) {
  if (B < 1 || in_f < 1 || out_f < 1) return sde_fail(SDE_EINVAL, "linear: bad shape");
  OP_BEGIN(be);
  int rc = SDE_OK;
  /* dinp[B,in] += dout[B,out] · weight[out,in] */
  if (dinp) rc = sde_cuda_gemm(c, 0, 0, B, in_f, out_f, 1.0f, dout, out_f, 0, weight, in_f, 0, 1.0f, dinp, in_f, 0, 1);
  /* dweight[out,in] += dout[B,out]ᵀ · inp[B,in] */
  if (!rc && dweight)
    rc = sde_cuda_gemm(c, 1, 0, out_f, in_f, B, 1.0f, dout, out_f, 0, inp, in_f, 0, 1.0f, dweight, in_f, 0, 1);
  if (!rc && dbias) rc = sde_cuda_bias_grad(c, dbias, dout, B, out_f, 1);
  return op_end(c, rc, "linear_backward");
}

/* out_b[Co,HW] = W[Ci,Co]ᵀ · inp_b[Ci,HW] + bias */
static int cuda_nin_forward(const sde_backend *be, float *out, const float *inp, const float *W, const float *bias,
                            int B, int C_in, int HW, int C_out) {
  if (B < 1 || C_in < 1 || HW < 1 || C_out < 1) return sde_fail(SDE_EINVAL, "nin: bad shape");
  OP_BEGIN(be);
  int rc = sde_cuda_fill_bias(c, out, bias, B, C_out, HW);
  if (!rc)
    rc = sde_cuda_gemm(c, 1, 0, C_out, HW, C_in, 1.0f, W, C_out, 0, inp, HW, (long long)C_in * HW, 1.0f, out, HW,
                       (long long)C_out * HW, B);
  return op_end(c, rc, "nin_forward");
}

static int cuda_nin_backward(const sde_backend *be, float *dinp, float *dW, float *dbias, const float *dout,
                             const float *inp, const float *W, int B, int C_in, int HW, int C_out) {
  if (B < 1 || C_in < 1 || HW < 1 || C_out < 1) return sde_fail(SDE_EINVAL, "nin: bad shape");
  OP_BEGIN(be);
  int rc = SDE_OK;
  size_t xs = (size_t)C_in * HW, gs = (size_t)C_out * HW;
  /* dinp_b[Ci,HW] += W[Ci,Co] · g_b[Co,HW] */
  if (dinp)
    rc = sde_cuda_gemm(c, 0, 0, C_in, HW, C_out, 1.0f, W, C_out, 0, dout, HW, (long long)gs, 1.0f, dinp, HW,
                       (long long)xs, B);
  /* dW[Ci,Co] += Σ_b x_b[Ci,HW] · g_b[Co,HW]ᵀ, images in order (sequential on the stream) */
  for (int b = 0; !rc && dW && b < B; b++)
    rc = sde_cuda_gemm(c, 0, 1, C_in, C_out, HW, 1.0f, inp + b * xs, HW, 0, dout + b * gs, HW, 0, 1.0f, dW, C_out,
                       0, 1);
  if (!rc && dbias) rc = sde_cuda_bias_grad(c, dbias, dout, B, C_out, HW);
  return op_end(c, rc, "nin_backward");
}

/* =======================================================================================
 * attention: att_b = softmax(scale·q_bᵀk_b), out_b = v_b·att_bᵀ, all images in one
 * strided-batched GEMM each */

static int cuda_attention_forward(const sde_backend *be, float *out, float *att, const float *q, const float *k,
                                  const float *v, int B, int C, int N) {
  if (B < 1 || C < 1 || N < 1) return sde_fail(SDE_EINVAL, "attention: bad shape");
  OP_BEGIN(be);
  float scale = (float)pow((double)C, -0.5);
  long long xs = (long long)C * N, as = (long long)N * N;
  int rc = sde_cuda_gemm(c, 1, 0, N, N, C, scale, q, N, xs, k, N, xs, 0.0f, att, N, as, B);
  if (!rc) rc = sde_cuda_softmax_rows(c, att, (long long)B * N, N);
  if (!rc) rc = sde_cuda_gemm(c, 0, 1, C, N, N, 1.0f, v, N, xs, att, N, as, 0.0f, out, N, xs, B);
  return op_end(c, rc, "attention_forward");
}

static int cuda_attention_backward(const sde_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                   const float *att, const float *q, const float *k, const float *v, int B, int C,
                                   int N, float *scratch) {
  if (B < 1 || C < 1 || N < 1) return sde_fail(SDE_EINVAL, "attention: bad shape");
  OP_BEGIN(be);
  float scale = (float)pow((double)C, -0.5);
  long long xs = (long long)C * N, as = (long long)N * N;
  int rc = SDE_OK;
  /* dv[C,N] += g[C,N] · a[N,N] */
  if (dv) rc = sde_cuda_gemm(c, 0, 0, C, N, N, 1.0f, dout, N, xs, att, N, as, 1.0f, dv, N, xs, B);
  if (!rc && (dq || dk)) {
    /* every image at once: da needs B·N·N floats, more than the N·N of the scratch contract */
    float *da = (B == 1 && scratch) ? scratch : (float *)sde_cuda_workspace(c, (size_t)B * as * sizeof(float));
    if (!da) return op_end(c, SDE_ENOMEM, "attention_backward");
    /* da[N,N] = g[C,N]ᵀ · v[C,N], then dl = scale·a ⊙ (da − Σ_j a·da) in place */
    rc = sde_cuda_gemm(c, 1, 0, N, N, C, 1.0f, dout, N, xs, v, N, xs, 0.0f, da, N, as, B);
    if (!rc) rc = sde_cuda_softmax_backward_rows(c, da, att, (long long)B * N, N, scale);
    /* dq[C,N] += k · dlᵀ ; dk[C,N] += q · dl */
    if (!rc && dq) rc = sde_cuda_gemm(c, 0, 1, C, N, N, 1.0f, k, N, xs, da, N, as, 1.0f, dq, N, xs, B);
    if (!rc && dk) rc = sde_cuda_gemm(c, 0, 0, C, N, N, 1.0f, q, N, xs, da, N, as, 1.0f, dk, N, xs, B);
  }
  return op_end(c, rc, "attention_backward");
}

/* =======================================================================================
 * conv2d through cuDNN. cuDNN pads symmetrically only: a shape with pad_top != pad_bottom
 * or pad_left != pad_right (the (0,1,0,1) pad of the stride-2 downsampling conv) gets its
 * input zero-padded into the workspace and an unpadded convolution. */

#define CK(call, what)                                          \
  do {                                                          \
    cudnnStatus_t st_ = (call);                                 \
    if (st_ != CUDNN_STATUS_SUCCESS) return sde_cuda_fail_cudnn(st_, what); \
  } while (0)

/* memory cap for an algorithm's workspace: more is rarely faster */
#define CONV_WS_CAP ((size_t)1 << 30)

/* FP32: the heuristics may report FMA-capable algorithms under DEFAULT math (which would
 * permit TF32); those are run with the math type forced to FMA (as PyTorch does without
 * allow_tf32). Tensor-op-only results are skipped. */
static int conv_math_ok(const sde_cuda_impl *c, cudnnMathType_t m) {
  return c->precision != SDE_PRECISION_FP32 || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}
static cudnnMathType_t conv_math_used(const sde_cuda_impl *c, cudnnMathType_t m) {
  return c->precision == SDE_PRECISION_FP32 ? CUDNN_FMA_MATH : m;
}
static cudnnMathType_t conv_math(const sde_cuda_impl *c) {
  /* DEFAULT permits TF32 tensor cores for float data on Ampere and later */
  return c->precision == SDE_PRECISION_FP32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

static void conv_entry_destroy(sde_cuda_conv *e) {
  if (e->x) cudnnDestroyTensorDescriptor(e->x);
  if (e->y) cudnnDestroyTensorDescriptor(e->y);
  if (e->w) cudnnDestroyFilterDescriptor(e->w);
  if (e->conv) cudnnDestroyConvolutionDescriptor(e->conv);
  memset(e, 0, sizeof *e);
}

void sde_cuda_conv_cache_free(sde_cuda_impl *c) {
  for (int i = 0; i < c->n_conv; i++) conv_entry_destroy(&c->conv[i]);
  c->n_conv = 0;
}

/* FP32 keeps to GEMM-like algorithms: FFT and Winograd trade accuracy (errors near 1e-5
 * of the output's range) for speed, which the 1e-5 parity bound leaves no room for. */
static int fwd_algo_ok(const sde_cuda_impl *c, cudnnConvolutionFwdAlgo_t a) {
  return c->precision != SDE_PRECISION_FP32 ||
         (a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
          a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED);
}
static int bwd_data_algo_ok(const sde_cuda_impl *c, cudnnConvolutionBwdDataAlgo_t a) {
  return c->precision != SDE_PRECISION_FP32 ||
         (a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
          a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED);
}
static int bwd_filter_algo_ok(const sde_cuda_impl *c, cudnnConvolutionBwdFilterAlgo_t a) {
  return c->precision != SDE_PRECISION_FP32 ||
         (a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT && a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
          a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED);
}

/* Picks the first acceptable result: success, deterministic, the precision's math, and a
 * workspace under the cap (results arrive best first); else the plain algorithm. */
#define PICK(perf, n, algo_ok, fallback, out_algo, out_math, out_ws)                                   \
  do {                                                                                                 \
    int found_ = 0;                                                                                    \
    for (int pass_ = 0; pass_ < 2 && !found_; pass_++)                                                 \
      for (int i_ = 0; i_ < (n) && !found_; i_++) {                                                    \
        if ((perf)[i_].status != CUDNN_STATUS_SUCCESS || (perf)[i_].determinism != CUDNN_DETERMINISTIC) \
          continue;                                                                                    \
        if (!conv_math_ok(c, (perf)[i_].mathType) || !algo_ok(c, (perf)[i_].algo)) continue;           \
        if (pass_ == 0 && (perf)[i_].memory > CONV_WS_CAP) continue;                                   \
        out_algo = (perf)[i_].algo;                                                                    \
        out_math = conv_math_used(c, (perf)[i_].mathType);                                             \
        out_ws = (perf)[i_].memory;                                                                    \
        found_ = 1;                                                                                    \
      }                                                                                                \
    if (!found_) { /* the plain GEMM-like algorithm: deterministic, FMA, any shape */               \
      out_algo = fallback;                                                                             \
      out_math = conv_math(c);                                                                         \
      out_ws = 0; /* queried below */                                                                  \
    }                                                                                                  \
  } while (0)

static int conv_pick_fwd(sde_cuda_impl *c, sde_cuda_conv *e) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  if (c->conv_find)
    CK(cudnnFindConvolutionForwardAlgorithm(c->cudnn, e->x, e->w, e->conv, e->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                            &n, perf),
       "find forward algorithm");
  else
    CK(cudnnGetConvolutionForwardAlgorithm_v7(c->cudnn, e->x, e->w, e->conv, e->y,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf),
       "forward algorithm");
  PICK(perf, n, fwd_algo_ok, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, e->fwd, e->fwd_math, e->fwd_ws);
  /* the size for the math type actually used */
  size_t ws = 0;
  CK(cudnnSetConvolutionMathType(e->conv, e->fwd_math), "math type");
  CK(cudnnGetConvolutionForwardWorkspaceSize(c->cudnn, e->x, e->w, e->conv, e->y, e->fwd, &ws), "workspace size");
  if (ws > e->fwd_ws) e->fwd_ws = ws;
  return SDE_OK;
}

static int conv_pick_bwd(sde_cuda_impl *c, sde_cuda_conv *e) {
  cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  cudnnConvolutionBwdFilterAlgoPerf_t pf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int nd = 0, nf = 0;
  if (c->conv_find) {
    CK(cudnnFindConvolutionBackwardDataAlgorithm(c->cudnn, e->w, e->y, e->conv, e->x,
                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, pd),
       "find backward-data algorithm");
    CK(cudnnFindConvolutionBackwardFilterAlgorithm(c->cudnn, e->x, e->y, e->conv, e->w,
                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nf, pf),
       "find backward-filter algorithm");
  } else {
    CK(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->cudnn, e->w, e->y, e->conv, e->x,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, pd),
       "backward-data algorithm");
    CK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->cudnn, e->x, e->y, e->conv, e->w,
                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nf, pf),
       "backward-filter algorithm");
  }
  PICK(pd, nd, bwd_data_algo_ok, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, e->bwd_data, e->bwd_data_math, e->bwd_data_ws);
  PICK(pf, nf, bwd_filter_algo_ok, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, e->bwd_filter, e->bwd_filter_math, e->bwd_filter_ws);
  size_t ws = 0;
  CK(cudnnSetConvolutionMathType(e->conv, e->bwd_data_math), "math type");
  CK(cudnnGetConvolutionBackwardDataWorkspaceSize(c->cudnn, e->w, e->y, e->conv, e->x, e->bwd_data, &ws),
     "workspace size");
  if (ws > e->bwd_data_ws) e->bwd_data_ws = ws;
  CK(cudnnSetConvolutionMathType(e->conv, e->bwd_filter_math), "math type");
  CK(cudnnGetConvolutionBackwardFilterWorkspaceSize(c->cudnn, e->x, e->y, e->conv, e->w, e->bwd_filter, &ws),
     "workspace size");
  if (ws > e->bwd_filter_ws) e->bwd_filter_ws = ws;
  e->have_bwd = 1;
  return SDE_OK;
}

static int conv_check(const sde_nn_conv2d_shape *s) {
  if (!s || s->B < 1 || s->C_in < 1 || s->H < 1 || s->W < 1 || s->C_out < 1 || s->KH < 1 || s->KW < 1 ||
      s->stride < 1 || s->pad_top < 0 || s->pad_bottom < 0 || s->pad_left < 0 || s->pad_right < 0)
    return sde_fail(SDE_EINVAL, "conv2d: bad shape");
  if (s->H + s->pad_top + s->pad_bottom < s->KH || s->W + s->pad_left + s->pad_right < s->KW)
    return sde_fail(SDE_EINVAL, "conv2d: kernel %dx%d larger than padded input %dx%d", s->KH, s->KW,
                    s->H + s->pad_top + s->pad_bottom, s->W + s->pad_left + s->pad_right);
  return SDE_OK;
}

static int conv_build(sde_cuda_impl *c, sde_cuda_conv *e, const sde_nn_conv2d_shape *s) {
  memset(e, 0, sizeof *e);
  e->s = *s;
  e->explicit_pad = s->pad_top != s->pad_bottom || s->pad_left != s->pad_right;
  e->pad_h = e->explicit_pad ? 0 : s->pad_top;
  e->pad_w = e->explicit_pad ? 0 : s->pad_left;
  e->Hp = e->explicit_pad ? s->H + s->pad_top + s->pad_bottom : s->H;
  e->Wp = e->explicit_pad ? s->W + s->pad_left + s->pad_right : s->W;
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s), n, ch, h, w;
  CK(cudnnCreateTensorDescriptor(&e->x), "descriptor");
  CK(cudnnCreateTensorDescriptor(&e->y), "descriptor");
  CK(cudnnCreateFilterDescriptor(&e->w), "descriptor");
  CK(cudnnCreateConvolutionDescriptor(&e->conv), "descriptor");
  CK(cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->B, s->C_in, e->Hp, e->Wp), "x");
  CK(cudnnSetFilter4dDescriptor(e->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s->C_out, s->C_in, s->KH, s->KW), "w");
  CK(cudnnSetConvolution2dDescriptor(e->conv, e->pad_h, e->pad_w, s->stride, s->stride, 1, 1,
                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
     "conv");
  CK(cudnnSetConvolutionMathType(e->conv, conv_math(c)), "math type");
  CK(cudnnGetConvolution2dForwardOutputDim(e->conv, e->x, e->w, &n, &ch, &h, &w), "output size");
  if (n != s->B || ch != s->C_out || h != Ho || w != Wo)
    return sde_fail(SDE_EUNSUPPORTED, "cuDNN: conv output %dx%d, expected %dx%d", h, w, Ho, Wo);
  CK(cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->B, s->C_out, Ho, Wo), "y");
  return conv_pick_fwd(c, e);
}

/* The cached entry of this shape (built on first use; the oldest half is dropped when full). */
static int conv_get(sde_cuda_impl *c, const sde_nn_conv2d_shape *s, int backward, sde_cuda_conv **out) {
  *out = NULL;
  for (int i = 0; i < c->n_conv; i++)
    if (!memcmp(&c->conv[i].s, s, sizeof *s)) {
      if (backward && !c->conv[i].have_bwd) {
        int rc = conv_pick_bwd(c, &c->conv[i]);
        if (rc) return rc;
      }
      *out = &c->conv[i];
      return SDE_OK;
    }
  if (c->n_conv == SDE_CUDA_CONV_CACHE) {
    int keep = SDE_CUDA_CONV_CACHE / 2;
    for (int i = 0; i < keep; i++) conv_entry_destroy(&c->conv[i]);
    memmove(c->conv, c->conv + keep, (size_t)(SDE_CUDA_CONV_CACHE - keep) * sizeof c->conv[0]);
    memset(c->conv + SDE_CUDA_CONV_CACHE - keep, 0, (size_t)keep * sizeof c->conv[0]);
    c->n_conv -= keep;
  }
  sde_cuda_conv *e = &c->conv[c->n_conv];
  int rc = conv_build(c, e, s);
  if (!rc && backward) rc = conv_pick_bwd(c, e);
  if (rc) {
    conv_entry_destroy(e);
    return rc;
  }
  c->n_conv++;
  *out = e;
  return SDE_OK;
}

static size_t conv_padded_bytes(const sde_cuda_conv *e) {
  return e->explicit_pad ? sde_cuda_align((size_t)e->s.B * e->s.C_in * e->Hp * e->Wp * sizeof(float)) : 0;
}

/* out = conv(inp) + bias; ws: conv_padded_bytes + e->fwd_ws bytes */
static int conv_fwd_run(sde_cuda_impl *c, sde_cuda_conv *e, float *out, const float *inp, const float *weight,
                        const float *bias, char *ws) {
  const sde_nn_conv2d_shape *s = &e->s;
  const float *x = inp;
  if (e->explicit_pad) {
    int rc = sde_cuda_pad(c, (float *)ws, inp, s->B * s->C_in, s->H, s->W, s->pad_top, s->pad_bottom, s->pad_left,
                          s->pad_right);
    if (rc) return rc;
    x = (const float *)ws;
    ws += conv_padded_bytes(e);
  }
  const float one = 1.0f, zero = 0.0f;
  CK(cudnnSetConvolutionMathType(e->conv, e->fwd_math), "math type");
  CK(cudnnConvolutionForward(c->cudnn, &one, e->x, x, e->w, weight, e->conv, e->fwd, ws, e->fwd_ws, &zero, e->y,
                             out),
     "convolution forward");
  if (bias) {
    int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
    return sde_cuda_add_bias(c, out, bias, s->B, s->C_out, Ho * Wo);
  }
  return SDE_OK;
}

static size_t conv_bwd_bytes(const sde_cuda_conv *e, int need_dinp) {
  size_t ws = e->bwd_data_ws > e->bwd_filter_ws ? e->bwd_data_ws : e->bwd_filter_ws;
  return conv_padded_bytes(e) * (need_dinp ? 2 : 1) + ws;
}

/* dinp += ..., dweight += ... (beta = 1); ws: conv_bwd_bytes */
static int conv_bwd_run(sde_cuda_impl *c, sde_cuda_conv *e, float *dinp, float *dweight, const float *dout,
                        const float *inp, const float *weight, char *ws) {
  const sde_nn_conv2d_shape *s = &e->s;
  const float one = 1.0f, zero = 0.0f;
  const float *x = inp;
  float *dx = NULL;
  if (e->explicit_pad) {
    int rc = sde_cuda_pad(c, (float *)ws, inp, s->B * s->C_in, s->H, s->W, s->pad_top, s->pad_bottom, s->pad_left,
                          s->pad_right);
    if (rc) return rc;
    x = (const float *)ws;
    ws += conv_padded_bytes(e);
    if (dinp) {
      dx = (float *)ws;
      ws += conv_padded_bytes(e);
    }
  }
  size_t ws_bytes = e->bwd_data_ws > e->bwd_filter_ws ? e->bwd_data_ws : e->bwd_filter_ws;
  if (dweight) {
    CK(cudnnSetConvolutionMathType(e->conv, e->bwd_filter_math), "math type");
    CK(cudnnConvolutionBackwardFilter(c->cudnn, &one, e->x, x, e->y, dout, e->conv, e->bwd_filter, ws, ws_bytes,
                                      &one, e->w, dweight),
       "convolution backward filter");
  }
  if (dinp) {
    CK(cudnnSetConvolutionMathType(e->conv, e->bwd_data_math), "math type");
    CK(cudnnConvolutionBackwardData(c->cudnn, &one, e->w, weight, e->y, dout, e->conv, e->bwd_data, ws, ws_bytes,
                                    dx ? &zero : &one, e->x, dx ? dx : dinp),
       "convolution backward data");
    if (dx)
      return sde_cuda_crop_add(c, dinp, dx, s->B * s->C_in, s->H, s->W, s->pad_top, s->pad_bottom, s->pad_left,
                               s->pad_right);
  }
  return SDE_OK;
}

static int cuda_conv2d_forward(const sde_backend *be, float *out, const float *inp, const float *weight,
                               const float *bias, const sde_nn_conv2d_shape *s, float *scratch) {
  int rc = conv_check(s);
  if (rc) return rc;
  OP_BEGIN(be);
  sde_cuda_conv *e;
  rc = conv_get(c, s, 0, &e);
  if (!rc) {
    char *ws = (char *)sde_cuda_workspace(c, conv_padded_bytes(e) + e->fwd_ws);
    rc = ws ? conv_fwd_run(c, e, out, inp, weight, bias, ws) : SDE_ENOMEM;
  }
  return op_end(c, rc, "conv2d_forward");
}

static int cuda_conv2d_backward(const sde_backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *weight, const sde_nn_conv2d_shape *s, float *scratch) {
  int rc = conv_check(s);
  if (rc) return rc;
  OP_BEGIN(be);
  if (dbias) rc = sde_cuda_bias_grad(c, dbias, dout, s->B, s->C_out, sde_nn_conv2d_out_h(s) * sde_nn_conv2d_out_w(s));
  if (!rc && (dinp || dweight)) {
    sde_cuda_conv *e;
    rc = conv_get(c, s, 1, &e);
    if (!rc) {
      char *ws = (char *)sde_cuda_workspace(c, conv_bwd_bytes(e, dinp != NULL));
      rc = ws ? conv_bwd_run(c, e, dinp, dweight, dout, inp, weight, ws) : SDE_ENOMEM;
    }
  }
  return op_end(c, rc, "conv2d_backward");
}

/* =======================================================================================
 * FIR conv-downsample: blur (pad 2) to [B,C_in,H+1,W+1], then 3x3 stride-2 unpadded conv */

static int fcd_check(int B, int C_in, int H, int W, int C_out) {
  if (B < 1 || C_in < 1 || H < 1 || W < 1)
    return sde_fail(SDE_EINVAL, "fir_conv_downsample2x: bad shape [%d,%d,%d,%d]", B, C_in, H, W);
  if (H % 2 || W % 2)
    return sde_fail(SDE_EINVAL, "fir_conv_downsample2x: height and width must be even (got %dx%d)", H, W);
  if (C_out < 1) return sde_fail(SDE_EINVAL, "fir_conv_downsample2x: bad C_out %d", C_out);
  return SDE_OK;
}

static int cuda_fir_conv_downsample2x_forward(const sde_backend *be, float *out, const float *inp,
                                              const float *weight, const float *bias, int B, int C_in, int H, int W,
                                              int C_out, float *scratch) {
  int rc = fcd_check(B, C_in, H, W, C_out);
  if (rc) return rc;
  OP_BEGIN(be);
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, C_in, H + 1, W + 1, C_out, 3, 2, 0);
  size_t blur_bytes = sde_cuda_align((size_t)B * C_in * (H + 1) * (W + 1) * sizeof(float));
  sde_cuda_conv *e;
  rc = conv_get(c, &s, 0, &e);
  if (!rc) {
    /* the caller's scratch (2 blurred images + im2col on the CPU) holds the blur */
    size_t front = scratch ? 0 : blur_bytes;
    char *ws = (char *)sde_cuda_workspace(c, front + conv_padded_bytes(e) + e->fwd_ws);
    if (!ws) rc = SDE_ENOMEM;
    float *blur = scratch ? scratch : (float *)ws;
    if (!rc) rc = sde_cuda_fir(c, blur, inp, B * C_in, H, W, H + 1, W + 1, SDE_FIR_BLUR2, 0);
    if (!rc) rc = conv_fwd_run(c, e, out, blur, weight, bias, ws + front);
  }
  return op_end(c, rc, "fir_conv_downsample2x_forward");
}

static int cuda_fir_conv_downsample2x_backward(const sde_backend *be, float *dinp, float *dweight, float *dbias,
                                               const float *dout, const float *inp, const float *weight, int B,
                                               int C_in, int H, int W, int C_out, float *scratch) {
  int rc = fcd_check(B, C_in, H, W, C_out);
  if (rc) return rc;
  OP_BEGIN(be);
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, C_in, H + 1, W + 1, C_out, 3, 2, 0);
  size_t blur_n = (size_t)B * C_in * (H + 1) * (W + 1), blur_bytes = sde_cuda_align(blur_n * sizeof(float));
  if (dbias) rc = sde_cuda_bias_grad(c, dbias, dout, B, C_out, (H / 2) * (W / 2));
  if (!rc && (dinp || dweight)) {
    sde_cuda_conv *e;
    rc = conv_get(c, &s, 1, &e);
    if (!rc) {
      size_t front = scratch ? 0 : 2 * blur_bytes;
      char *ws = (char *)sde_cuda_workspace(c, front + conv_bwd_bytes(e, dinp != NULL));
      if (!ws) rc = SDE_ENOMEM;
      float *blur = scratch ? scratch : (float *)ws;
      float *dblur = scratch ? scratch + blur_n : (float *)(ws + blur_bytes);
      if (!rc) rc = sde_cuda_fir(c, blur, inp, B * C_in, H, W, H + 1, W + 1, SDE_FIR_BLUR2, 0);
      if (!rc && dinp && cudaMemsetAsync(dblur, 0, blur_n * sizeof(float), c->stream) != cudaSuccess)
        rc = sde_cuda_check_launch(c, "memset");
      if (!rc) rc = conv_bwd_run(c, e, dinp ? dblur : NULL, dweight, dout, blur, weight, ws + front);
      if (!rc && dinp) rc = sde_cuda_fir(c, dinp, dblur, B * C_in, H + 1, W + 1, H, W, SDE_FIR_BLUR2_T, 1);
    }
  }
  return op_end(c, rc, "fir_conv_downsample2x_backward");
}

/* =======================================================================================
 * FIR conv-upsample (layerspp.Upsample fir=True with_conv=True; nn/ops_resample.c): zero-insert
 * x into z[B,C_in,2H-1,2W-1], 3x3 conv pad 2 -> t[B,C_out,2H+1,2W+1] (cuDNN), then the
 * [1,3,3,1]/4 blur (pad 1) -> out[B,C_out,2H,2W], + bias. Backward: the blur transposed,
 * the conv's data/filter gradients on the recomputed z, dx += dz at the even positions.
 * Scratch (caller's, or the workspace when NULL): z + t forward, z + dt + dz backward. */

static sde_nn_conv2d_shape fcu_shape(int B, int C_in, int H, int W, int C_out) {
  return sde_nn_conv2d_shape_make(B, C_in, 2 * H - 1, 2 * W - 1, C_out, 3, 1, 2);
}

static int fcu_check(int B, int C_in, int H, int W, int C_out) {
  if (B < 1 || C_in < 1 || H < 1 || W < 1 || C_out < 1)
    return sde_fail(SDE_EINVAL, "fir_conv_upsample2x: bad shape [%d,%d,%d,%d] -> %d", B, C_in, H, W, C_out);
  return SDE_OK;
}

static int cuda_fir_conv_upsample2x_forward(const sde_backend *be, float *out, const float *inp, const float *weight,
                                            const float *bias, int B, int C_in, int H, int W, int C_out,
                                            float *scratch) {
  int rc = fcu_check(B, C_in, H, W, C_out);
  if (rc) return rc;
  OP_BEGIN(be);
  sde_nn_conv2d_shape s = fcu_shape(B, C_in, H, W, C_out);
  const size_t nz = (size_t)B * C_in * (2 * H - 1) * (2 * W - 1), nt = (size_t)B * C_out * (2 * H + 1) * (2 * W + 1);
  sde_cuda_conv *e;
  rc = conv_get(c, &s, 0, &e);
  if (!rc) {
    size_t front = scratch ? 0 : sde_cuda_align(nz * sizeof(float)) + sde_cuda_align(nt * sizeof(float));
    char *ws = (char *)sde_cuda_workspace(c, front + conv_padded_bytes(e) + e->fwd_ws);
    if (!ws) rc = SDE_ENOMEM;
    float *z = scratch ? scratch : (float *)ws;
    float *t = scratch ? scratch + nz : (float *)(ws + sde_cuda_align(nz * sizeof(float)));
    if (!rc) rc = sde_cuda_zero_insert(c, z, inp, B * C_in, H, W);
    if (!rc) rc = conv_fwd_run(c, e, t, z, weight, NULL, ws + front);
    if (!rc) rc = sde_cuda_fir(c, out, t, B * C_out, 2 * H + 1, 2 * W + 1, 2 * H, 2 * W, SDE_FIR_UPCONV, 0);
    if (!rc && bias) rc = sde_cuda_add_bias(c, out, bias, B, C_out, 4 * H * W);
  }
  return op_end(c, rc, "fir_conv_upsample2x_forward");
}

static int cuda_fir_conv_upsample2x_backward(const sde_backend *be, float *dinp, float *dweight, float *dbias,
                                             const float *dout, const float *inp, const float *weight, int B,
                                             int C_in, int H, int W, int C_out, float *scratch) {
  int rc = fcu_check(B, C_in, H, W, C_out);
  if (rc) return rc;
  OP_BEGIN(be);
  sde_nn_conv2d_shape s = fcu_shape(B, C_in, H, W, C_out);
  const size_t nz = (size_t)B * C_in * (2 * H - 1) * (2 * W - 1), nt = (size_t)B * C_out * (2 * H + 1) * (2 * W + 1);
  const size_t bz = sde_cuda_align(nz * sizeof(float)), bt = sde_cuda_align(nt * sizeof(float));
  if (dbias) rc = sde_cuda_bias_grad(c, dbias, dout, B, C_out, 4 * H * W);
  if (!rc && (dinp || dweight)) {
    sde_cuda_conv *e;
    rc = conv_get(c, &s, 1, &e);
    if (!rc) {
      size_t front = scratch ? 0 : 2 * bz + bt;
      char *ws = (char *)sde_cuda_workspace(c, front + conv_bwd_bytes(e, dinp != NULL));
      if (!ws) rc = SDE_ENOMEM;
      float *z = scratch ? scratch : (float *)ws;
      float *dt = scratch ? scratch + nz : (float *)(ws + bz);
      float *dz = scratch ? scratch + nz + nt : (float *)(ws + bz + bt);
      if (!rc) rc = sde_cuda_zero_insert(c, z, inp, B * C_in, H, W);
      if (!rc) rc = sde_cuda_fir(c, dt, dout, B * C_out, 2 * H, 2 * W, 2 * H + 1, 2 * W + 1, SDE_FIR_UPCONV_T, 0);
      if (!rc && dinp && cudaMemsetAsync(dz, 0, nz * sizeof(float), c->stream) != cudaSuccess)
        rc = sde_cuda_check_launch(c, "memset");
      if (!rc) rc = conv_bwd_run(c, e, dinp ? dz : NULL, dweight, dt, z, weight, ws + front);
      if (!rc && dinp) rc = sde_cuda_zero_insert_grad(c, dinp, dz, B * C_in, H, W);
    }
  }
  return op_end(c, rc, "fir_conv_upsample2x_backward");
}

/* ======================================================================================= */

void sde_cuda_fill_table_blas(sde_backend *be) {
  be->conv2d_forward = cuda_conv2d_forward;
  be->conv2d_backward = cuda_conv2d_backward;
  be->linear_forward = cuda_linear_forward;
  be->linear_backward = cuda_linear_backward;
  be->nin_forward = cuda_nin_forward;
  be->nin_backward = cuda_nin_backward;
  be->attention_forward = cuda_attention_forward;
  be->attention_backward = cuda_attention_backward;
  be->fir_conv_downsample2x_forward = cuda_fir_conv_downsample2x_forward;
  be->fir_conv_downsample2x_backward = cuda_fir_conv_downsample2x_backward;
  be->fir_conv_upsample2x_forward = cuda_fir_conv_upsample2x_forward;
  be->fir_conv_upsample2x_backward = cuda_fir_conv_upsample2x_backward;
}
