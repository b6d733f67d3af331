/* Neural-network ops of the CPU backend, used by the NCSN++ / DDPM++ score networks
 * (docs/math.md#net-blocks). One function per op, forward and backward side by side.
 *
 * Conventions
 *  - float32, NCHW, contiguous row-major. B = batch, HW = H*W.
 *  - Forward functions OVERWRITE their outputs. Backward functions ADD into every gradient
 *    they produce (inputs and parameters alike), so zero gradients before the first
 *    backward. Every gradient pointer may be NULL to skip that gradient. Biases may be NULL.
 *  - Outputs must not alias inputs unless a function says so.
 *  - Threads: the engine's pool over independent outputs; every result is bit-identical
 *    for any thread count. GEMMs are single-threaded OpenBLAS calls on tiles fixed by the
 *    shape alone (the first call sets OpenBLAS to one thread so its pool does not fight
 *    ours).
 *  - Functions returning int return SDE_OK or an sde_status with a message (sde_fail);
 *    they only fail on bad shapes/arguments or, when scratch is NULL, out of memory.
 *  - Scratch: ops that need work memory take `float *scratch` of the size given by their
 *    *_scratch_floats() query (depends on the shape only, not on the thread count), so a
 *    network can allocate one buffer of the maximum once. NULL = allocate internally. */
#ifndef SCORESDE_NN_H
#define SCORESDE_NN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------
 * conv2d: out[B,C_out,Ho,Wo] = Σ weight[C_out,C_in,KH,KW] ⋆ pad(inp[B,C_in,H,W]) + bias[C_out]
 * Ho = (H + pad_top + pad_bottom - KH)/stride + 1, Wo likewise. On CPUs with AVX-512F,
 * stride-1 non-pointwise convs are computed directly (zero-padded planes, register tiles of
 * 8 output channels x 48 positions, one fixed-order FMA chain per output; set
 * SDE_NN_NO_DIRECT_CONV=1 to disable it and the AVX-512 GroupNorm/SiLU), and so are 1x1
 * stride-1 unpadded convs, NIN and 3x3 stride-2 convs (the same tiles over a small
 * per-task copy of 48 input columns, or of their 9 taps from polyphase planes); otherwise
 * im2col + sgemm (no im2col for 1x1, stride 1, no padding). The backward on such CPUs
 * computes dinp of stride-1 convs as the direct conv of dout with the flipped weights and
 * dweight of 3x3 stride-1 convs directly from the padded planes; both split by shape only. */
typedef struct {
  int B, C_in, H, W;  /* input [B, C_in, H, W] */
  int C_out, KH, KW;  /* weight [C_out, C_in, KH, KW], bias [C_out] */
  int stride;         /* both directions, >= 1 */
  int pad_top, pad_bottom, pad_left, pad_right; /* zero padding, >= 0 */
  /* 0 (sde_nn_conv2d_shape_make): the kernel is chosen by the image shape alone, so that a
   * sample gives the same bits alone and in a batch (inference); 1: the batch may choose
   * too, where it is fixed and only speed counts (training: Winograd F(4x4, 3x3) on 8x8
   * planes from batch 8, AVX2 kernels) */
  int by_batch;
} sde_nn_conv2d_shape;

/* Square k x k kernel with the same padding on all four sides (3x3 pad 1, 1x1 pad 0, ...). */
sde_nn_conv2d_shape sde_nn_conv2d_shape_make(int B, int C_in, int H, int W, int C_out, int k,
                                             int stride, int pad);
int sde_nn_conv2d_out_h(const sde_nn_conv2d_shape *s);
int sde_nn_conv2d_out_w(const sde_nn_conv2d_shape *s);
/* Floats of scratch for both forward and backward (0 for 1x1 stride 1 unpadded). */
size_t sde_nn_conv2d_scratch_floats(const sde_nn_conv2d_shape *s);

int sde_nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const sde_nn_conv2d_shape *s, float *scratch);
/* Weights prepared once for the kernel a forward of shape s takes on this CPU (a Winograd
 * transform or a packing; the batch B plays no part unless the shape is by_batch, and then a
 * forward at another batch may not take it), for weights that no longer change.
 * *out stays NULL where that kernel takes nothing prepared. The forward with it gives the bits
 * of sde_nn_conv2d_forward; a prep made for another shape, or a kernel the call no longer
 * takes (environment overrides), is ignored. */
typedef struct sde_nn_conv2d_prep sde_nn_conv2d_prep;
int sde_nn_conv2d_prepare(const float *weight, const sde_nn_conv2d_shape *s,
                          sde_nn_conv2d_prep **out);
size_t sde_nn_conv2d_prep_bytes(const sde_nn_conv2d_prep *p); /* 0 for NULL */
void sde_nn_conv2d_prep_free(sde_nn_conv2d_prep *p);
int sde_nn_conv2d_forward_prepared(float *out, const float *inp, const float *weight,
                                   const float *bias, const sde_nn_conv2d_shape *s,
                                   float *scratch, const sde_nn_conv2d_prep *prep);
/* The same forward with the passes that follow a conv in a residual block done in its
 * output transform, where the kernel is a Winograd one (*fused = 1; elsewhere *fused = 0 and
 * nothing is written; prep may be NULL, a prep of another kind or shape is not taken):
 * out = conv + bias, then + bias2[b][co] (NULL: none),
 * then residual + out (NULL: none; residual [B,C_out,H,W] may be out itself), then / div (0:
 * none): the bits of sde_nn_conv2d_forward followed by those elementwise passes. */
int sde_nn_conv2d_forward_fused(float *out, const float *inp, const float *weight,
                                const float *bias, const sde_nn_conv2d_shape *s, float *scratch,
                                const sde_nn_conv2d_prep *prep, const float *bias2,
                                const float *residual, float div, int *fused);
/* dinp[B,C_in,H,W] += ..., dweight[C_out,C_in,KH,KW] += ..., dbias[C_out] += Σ dout */
int sde_nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const sde_nn_conv2d_shape *s,
                           float *scratch);
/* The same with dinp[B,C_in,H,W] = ... (not added; dinp need not be zeroed first): the bits
 * of conv2d_backward onto zeros */
int sde_nn_conv2d_backward_store(float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *weight,
                                 const sde_nn_conv2d_shape *s, float *scratch);

/* ---------------------------------------------------------------------------------------
 * linear (PyTorch nn.Linear): out[B,out_f] = inp[B,in_f] · weight[out_f,in_f]ᵀ + bias[out_f] */
int sde_nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                          int B, int in_f, int out_f);
int sde_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int B, int in_f, int out_f);

/* NIN (1x1 over channels, score_sde layout): out[b,:,p] = Wᵀ inp[b,:,p] + bias
 * inp [B,C_in,HW], W [C_in,C_out] (transpose of a Linear weight), bias [C_out], out [B,C_out,HW] */
int sde_nn_nin_forward(float *out, const float *inp, const float *W, const float *bias, int B,
                       int C_in, int HW, int C_out);
int sde_nn_nin_backward(float *dinp, float *dW, float *dbias, const float *dout,
                        const float *inp, const float *W, int B, int C_in, int HW, int C_out);

/* ---------------------------------------------------------------------------------------
 * GroupNorm over [B,C,HW] with G groups (C % G == 0), affine gamma/beta [C].
 * mean/rstd [B,G] are saved for backward (may be NULL in forward when not needed).
 * The NCSN++ networks use G = sde_nn_groupnorm_groups(C) = min(C/4, 32) and eps = 1e-6. */
#define SDE_NN_GROUPNORM_EPS 1e-6f
int sde_nn_groupnorm_groups(int C);
int sde_nn_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                             const float *gamma, const float *beta, int B, int C, int HW, int G,
                             float eps);
int sde_nn_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                              const float *inp, const float *mean, const float *rstd,
                              const float *gamma, int B, int C, int HW, int G);
/* Fused inference path: out = silu(groupnorm(inp)). out may equal inp. */
int sde_nn_groupnorm_silu_forward(float *out, const float *inp, const float *gamma,
                                  const float *beta, int B, int C, int HW, int G, float eps);
/* The same, with mean/rstd [B,G] saved for groupnorm_silu_backward (training). */
int sde_nn_groupnorm_silu_forward_train(float *out, float *mean, float *rstd, const float *inp,
                                        const float *gamma, const float *beta, int B, int C,
                                        int HW, int G, float eps);
/* Backward of out = silu(groupnorm(inp)) in one op: dinp, dgamma, dbeta += (each may be
 * NULL). The GroupNorm output is recomputed from inp, mean, rstd (groupnorm_forward's),
 * gamma, beta, so neither it nor the SiLU input gradient is needed as a tensor. */
int sde_nn_groupnorm_silu_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                   const float *inp, const float *mean, const float *rstd,
                                   const float *gamma, const float *beta, int B, int C, int HW,
                                   int G);
/* The same with dinp overwritten (the bits of adding onto zeros), and dsum [B,C] (may be NULL)
 * set to the sums over the plane of what was stored (add_channel_bias_backward's sums):
 * training's first gradient of a GroupNorm input, and its time-embedding bias gradient. */
int sde_nn_groupnorm_silu_backward_store(float *dinp, float *dgamma, float *dbeta, float *dsum,
                                         const float *dout, const float *inp, const float *mean,
                                         const float *rstd, const float *gamma,
                                         const float *beta, int B, int C, int HW, int G);

/* SiLU (swish): out[n] = x·sigmoid(x). out may equal inp. */
void sde_nn_silu_forward(float *out, const float *inp, size_t n);
/* dinp[n] += dout · silu'(inp) */
void sde_nn_silu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* ---------------------------------------------------------------------------------------
 * Single-head spatial self-attention core (AttnBlockpp without GN/NIN), N = H*W:
 *   att[b,i,j] = softmax_j( Σ_c q[b,c,i] k[b,c,j] / sqrt(C) )     att [B,N,N] (saved)
 *   out[b,c,i] = Σ_j att[b,i,j] v[b,c,j]                         q,k,v,out [B,C,N]  */
int sde_nn_attention_forward(float *out, float *att, const float *q, const float *k,
                             const float *v, int B, int C, int N);
/* scratch: sde_nn_attention_scratch_floats(N) floats (N*N) or NULL */
size_t sde_nn_attention_scratch_floats(int N);
int sde_nn_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              int B, int C, int N, float *scratch);

/* ---------------------------------------------------------------------------------------
 * Resampling, all on [B,C,H,W] planes with zero padding (docs/math.md#fir).
 * FIR [1,3,3,1] upsample x2: inp [B,C,H,W] -> out [B,C,2H,2W]
 *   y[2i] = ¼x[i−1] + ¾x[i], y[2i+1] = ¾x[i] + ¼x[i+1] per axis, x outside = 0. */
int sde_nn_fir_upsample2x_forward(float *out, const float *inp, int B, int C, int H, int W);
int sde_nn_fir_upsample2x_backward(float *dinp, const float *dout, int B, int C, int H, int W);

/* FIR [1,3,3,1] downsample x2: inp [B,C,H,W] (H, W even) -> out [B,C,H/2,W/2]
 *   y[i] = (x[2i−1] + 3x[2i] + 3x[2i+1] + x[2i+2])/8 per axis, x outside = 0. */
int sde_nn_fir_downsample2x_forward(float *out, const float *inp, int B, int C, int H, int W);
int sde_nn_fir_downsample2x_backward(float *dinp, const float *dout, int B, int C, int H, int W);

/* FIR conv-downsample (up_or_down_sampling.Conv2d with down=True; conv_downsample_2d):
 * blur with pad 2 -> [B,C_in,H+1,W+1], then 3x3 stride-2 unpadded conv + bias:
 * inp [B,C_in,H,W] (H, W even), weight [C_out,C_in,3,3], bias [C_out] -> out [B,C_out,H/2,W/2] */
size_t sde_nn_fir_conv_downsample2x_scratch_floats(int B, int C_in, int H, int W, int C_out);
int sde_nn_fir_conv_downsample2x_forward(float *out, const float *inp, const float *weight,
                                         const float *bias, int B, int C_in, int H, int W,
                                         int C_out, float *scratch);
int sde_nn_fir_conv_downsample2x_backward(float *dinp, float *dweight, float *dbias,
                                          const float *dout, const float *inp,
                                          const float *weight, int B, int C_in, int H, int W,
                                          int C_out, float *scratch);

/* FIR conv-upsample (up_or_down_sampling.Conv2d with up=True; upsample_conv_2d): a
 * stride-2 transposed 3x3 conv, then the [1,3,3,1] blur with pad 1, + bias:
 * inp [B,C_in,H,W], weight [C_out,C_in,3,3], bias [C_out] -> out [B,C_out,2H,2W].
 * The scratch covers both directions; backward accumulates. */
size_t sde_nn_fir_upsample_conv2x_scratch_floats(int B, int C_in, int H, int W, int C_out);
int sde_nn_fir_upsample_conv2x_forward(float *out, const float *inp, const float *weight,
                                       const float *bias, int B, int C_in, int H, int W,
                                       int C_out, float *scratch);
int sde_nn_fir_upsample_conv2x_backward(float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp,
                                        const float *weight, int B, int C_in, int H, int W,
                                        int C_out, float *scratch);

/* Nearest x2 upsampling (naive_upsample_2d): inp [B,C,H,W] -> out [B,C,2H,2W] */
int sde_nn_upsample_nearest2x_forward(float *out, const float *inp, int B, int C, int H, int W);
int sde_nn_upsample_nearest2x_backward(float *dinp, const float *dout, int B, int C, int H,
                                       int W);

/* 2x2 average pooling (naive_downsample_2d): inp [B,C,H,W] (H, W even) -> out [B,C,H/2,W/2] */
int sde_nn_avgpool2x_forward(float *out, const float *inp, int B, int C, int H, int W);
int sde_nn_avgpool2x_backward(float *dinp, const float *dout, int B, int C, int H, int W);

/* ---------------------------------------------------------------------------------------
 * Embeddings (docs/math.md#time-embedding).
 * Gaussian Fourier projection: u [B], W [E] -> out [B,2E] = [sin(u·W·2π), cos(u·W·2π)]
 * (NCSN++ feeds u = ln σ). Backward: du [B] += ..., dW [E] += ... */
int sde_nn_fourier_embedding_forward(float *out, const float *u, const float *W, int B, int E);
int sde_nn_fourier_embedding_backward(float *du, float *dW, const float *dout, const float *u,
                                      const float *W, int B, int E);

/* Sinusoidal timestep embedding (get_timestep_embedding, max_positions 10000):
 * t [B] -> out [B,dim], half = dim/2, freq_k = exp(−k·ln(10000)/(half−1)),
 * out = [sin(t·freq), cos(t·freq)] (+ one zero column if dim is odd). dim >= 4. */
int sde_nn_timestep_embedding_forward(float *out, const float *t, int B, int dim);
/* dt [B] += Σ dout · ∂out/∂t */
int sde_nn_timestep_embedding_backward(float *dt, const float *dout, const float *t, int B,
                                       int dim);

/* ---------------------------------------------------------------------------------------
 * Elementwise helpers. */
/* out[n] = (a[n] + b[n]) · scale   (residual joins: scale 1 or 1/√2). out may alias a or b. */
void sde_nn_add_forward(float *out, const float *a, const float *b, float scale, size_t n);
/* da[n] += scale·dout[n], db[n] += scale·dout[n] (either may be NULL; may alias each other) */
void sde_nn_add_backward(float *da, float *db, const float *dout, float scale, size_t n);
/* out[n] = inp[n] · scale; out may equal inp */
void sde_nn_scale(float *out, const float *inp, float scale, size_t n);
/* dst[n] += src[n] */
void sde_nn_accumulate(float *dst, const float *src, size_t n);

/* x[B,C,HW] += bias[B,C] broadcast over HW (time-embedding projection); in place */
void sde_nn_add_channel_bias_forward(float *x, const float *bias, int B, int C, int HW);
/* dbias[B,C] += Σ_p dx[b,c,p] */
void sde_nn_add_channel_bias_backward(float *dbias, const float *dx, int B, int C, int HW);

/* out[B,Ca+Cb,HW] = concat_channels(a[B,Ca,HW], b[B,Cb,HW]) (a first) */
void sde_nn_concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca,
                                    int Cb, int HW);
/* da[B,Ca,HW] += dout[:, :Ca], db[B,Cb,HW] += dout[:, Ca:] */
void sde_nn_concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca,
                                     int Cb, int HW);
/* the same with da stored (store_a = 1: overwritten, the bits of adding onto zeros) or added
 * (0), and db by store_b */
void sde_nn_concat_channels_backward_store(float *da, float *db, const float *dout, int B, int Ca,
                                           int Cb, int HW, int store_a, int store_b);

#ifdef __cplusplus
}
#endif
#endif
