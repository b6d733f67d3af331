/* The backend vtable: where tensors live and who runs the ops on them.
 *
 * A backend is a table of functions over float buffers in its own memory. The CPU
 * backend (backend/cpu.c) wraps the reference ops of nn.h and rng.h one to one; the CUDA
 * backend (backend/cuda/, built when nvcc is found) implements the same table with
 * kernels, cuBLAS and cuDNN, on device pointers. Everything above this header (the
 * networks, the samplers, training) calls ops only through a backend, so the same code
 * runs on either.
 *
 * Contract of every op entry: the backend itself as first argument, then the signature,
 * shapes, accumulate-vs-overwrite rules and NULL conventions of the nn.h function with
 * the same name (sde_nn_<name>); void nn.h functions stay void (they cannot fail on the
 * CPU; the CUDA backend records a launch failure and reports it at the next int-returning
 * call or synchronize()). Pointers are
 * memory of this backend. Entries that return int return SDE_OK or an sde_status with a
 * message. Work is ordered: an op sees the results of the ops issued before it on the
 * same backend (the CUDA backend issues everything on one stream per backend, under a
 * lock); download() and synchronize() wait for it.
 *
 * Scratch: ops that take `float *scratch` get backend memory of the nn.h *_scratch_floats
 * size, or NULL to let the backend allocate. */
#ifndef SCORESDE_BACKEND_H
#define SCORESDE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "scoresde/device_kind.h"
#include "scoresde/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sde_backend sde_backend;

/* adam_step's per-step scalars (train.c finish_step computes them) */
typedef struct {
  float clip, b1, b2, step_size, sbc2, eps, one_m_decay;
} sde_adam_coef;

struct sde_backend {
  const char *name;   /* "cpu", "cuda" */
  int device_id;      /* CUDA ordinal; 0 on the CPU */
  int host_memory;    /* 1: pointers are ordinary host memory (the CPU backend) */
  sde_precision precision; /* GEMM/conv math; the CPU is always fp32 */

  /* ---- memory ---------------------------------------------------------------------- */
  int (*alloc)(const sde_backend *be, size_t bytes, void **ptr); /* SDE_ENOMEM + message */
  void (*free)(const sde_backend *be, void *ptr);                 /* NULL is a no-op */
  int (*upload)(const sde_backend *be, void *dst, const void *host_src, size_t bytes);
  int (*download)(const sde_backend *be, void *host_dst, const void *src, size_t bytes);
  int (*copy)(const sde_backend *be, void *dst, const void *src, size_t bytes);
  int (*zero)(const sde_backend *be, void *dst, size_t bytes);
  int (*synchronize)(const sde_backend *be);

  /* ---- nn ops (nn.h) ---------------------------------------------------------------- */
  int (*conv2d_forward)(const sde_backend *be, float *out, const float *inp, const float *weight, const float *bias,
                        const sde_nn_conv2d_shape *s, float *scratch);
  int (*conv2d_backward)(const sde_backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, const sde_nn_conv2d_shape *s,
                         float *scratch);
  /* optional (NULL: conv2d_forward every time): a conv's weights prepared once for the
   * kernel its shape takes, for weights that no longer change (sde_nn_conv2d_prepare: *out
   * NULL where there is nothing to prepare; *bytes its memory), and the forward with them */
  int (*conv2d_prepare)(const sde_backend *be, const float *weight, const sde_nn_conv2d_shape *s,
                        sde_nn_conv2d_prep **out, size_t *bytes);
  void (*conv2d_prep_free)(const sde_backend *be, sde_nn_conv2d_prep *p);
  int (*conv2d_forward_prepared)(const sde_backend *be, float *out, const float *inp,
                                 const float *weight, const float *bias,
                                 const sde_nn_conv2d_shape *s, float *scratch,
                                 const sde_nn_conv2d_prep *p);
  /* optional: conv2d_backward with dinp stored, not added (NULL: the trainer zeroes dinp
   * and calls conv2d_backward) */
  int (*conv2d_backward_store)(const sde_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const sde_nn_conv2d_shape *s, float *scratch);
  int (*linear_forward)(const sde_backend *be, float *out, const float *inp, const float *weight, const float *bias,
                        int B, int in_f, int out_f);
  int (*linear_backward)(const sde_backend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int B, int in_f, int out_f);
  int (*nin_forward)(const sde_backend *be, float *out, const float *inp, const float *W, const float *bias, int B,
                     int C_in, int HW, int C_out);
  int (*nin_backward)(const sde_backend *be, float *dinp, float *dW, float *dbias, const float *dout, const float *inp,
                      const float *W, int B, int C_in, int HW, int C_out);
  int (*groupnorm_forward)(const sde_backend *be, float *out, float *mean, float *rstd, const float *inp,
                           const float *gamma, const float *beta, int B, int C, int HW, int G,
                           float eps);
  int (*groupnorm_backward)(const sde_backend *be, float *dinp, float *dgamma, float *dbeta, const float *dout,
                            const float *inp, const float *mean, const float *rstd,
                            const float *gamma, int B, int C, int HW, int G);
  int (*groupnorm_silu_forward)(const sde_backend *be, float *out, const float *inp, const float *gamma,
                                const float *beta, int B, int C, int HW, int G, float eps);
  /* optional, with groupnorm_silu_backward: silu(groupnorm) with its statistics in one pass
   * (NULL: the training forward runs groupnorm_forward then silu_forward) */
  int (*groupnorm_silu_forward_train)(const sde_backend *be, float *out, float *mean, float *rstd,
                                      const float *inp, const float *gamma, const float *beta,
                                      int B, int C, int HW, int G, float eps);
  /* optional (NULL: the training backward runs silu_backward then groupnorm_backward) */
  int (*groupnorm_silu_backward)(const sde_backend *be, float *dinp, float *dgamma, float *dbeta,
                                 const float *dout, const float *inp, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta, int B,
                                 int C, int HW, int G);
  /* optional: groupnorm_silu_backward with dinp stored and its per-(image, channel) sums
   * into dsum (NULL: the trainer zeroes dinp, then add_channel_bias_backward) */
  int (*groupnorm_silu_backward_store)(const sde_backend *be, float *dinp, float *dgamma,
                                       float *dbeta, float *dsum, const float *dout,
                                       const float *inp, const float *mean, const float *rstd,
                                       const float *gamma, const float *beta, int B, int C, int HW,
                                       int G);
  void (*silu_forward)(const sde_backend *be, float *out, const float *inp, size_t n);
  void (*silu_backward)(const sde_backend *be, float *dinp, const float *dout, const float *inp, size_t n);
  int (*attention_forward)(const sde_backend *be, float *out, float *att, const float *q, const float *k,
                           const float *v, int B, int C, int N);
  int (*attention_backward)(const sde_backend *be, float *dq, float *dk, float *dv, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int B, int C, int N, float *scratch);
  int (*fir_upsample2x_forward)(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W);
  int (*fir_upsample2x_backward)(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H, int W);
  int (*fir_downsample2x_forward)(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W);
  int (*fir_downsample2x_backward)(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H, int W);
  int (*fir_conv_downsample2x_forward)(const sde_backend *be, float *out, const float *inp, const float *weight,
                                       const float *bias, int B, int C_in, int H, int W,
                                       int C_out, float *scratch);
  int (*fir_conv_downsample2x_backward)(const sde_backend *be, float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp,
                                        const float *weight, int B, int C_in, int H, int W,
                                        int C_out, float *scratch);
  /* FIR upsample with a 3x3 conv (layerspp.Upsample fir=True, with_conv=True). */
  int (*fir_conv_upsample2x_forward)(const sde_backend *be, float *out, const float *inp, const float *weight,
                                     const float *bias, int B, int C_in, int H, int W, int C_out,
                                     float *scratch);
  int (*fir_conv_upsample2x_backward)(const sde_backend *be, float *dinp, float *dweight, float *dbias,
                                      const float *dout, const float *inp, const float *weight, int B,
                                      int C_in, int H, int W, int C_out, float *scratch);
  int (*upsample_nearest2x_forward)(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W);
  int (*upsample_nearest2x_backward)(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H,
                                     int W);
  int (*avgpool2x_forward)(const sde_backend *be, float *out, const float *inp, int B, int C, int H, int W);
  int (*avgpool2x_backward)(const sde_backend *be, float *dinp, const float *dout, int B, int C, int H, int W);
  int (*fourier_embedding_forward)(const sde_backend *be, float *out, const float *u, const float *W, int B, int E);
  int (*fourier_embedding_backward)(const sde_backend *be, float *du, float *dW, const float *dout, const float *u,
                                    const float *W, int B, int E);
  int (*timestep_embedding_forward)(const sde_backend *be, float *out, const float *t, int B, int dim);
  int (*timestep_embedding_backward)(const sde_backend *be, float *dt, const float *dout, const float *t, int B,
                                     int dim);
  void (*add_forward)(const sde_backend *be, float *out, const float *a, const float *b, float scale, size_t n);
  void (*add_backward)(const sde_backend *be, float *da, float *db, const float *dout, float scale, size_t n);
  void (*scale)(const sde_backend *be, float *out, const float *inp, float scale, size_t n);
  void (*accumulate)(const sde_backend *be, float *dst, const float *src, size_t n);
  /* not in nn.h (the training forward's dropout, nn/ncsnpp_train.c): out[i] = a[i]·b[i] (out may
   * alias a or b); mask[i] = mask[i] < p ? 0 : keep in place (uniforms from randu_rows) */
  void (*mul)(const sde_backend *be, float *out, const float *a, const float *b, size_t n);
  void (*dropout_mask)(const sde_backend *be, float *mask, float p, float keep, size_t n);
  void (*add_channel_bias_forward)(const sde_backend *be, float *x, const float *bias, int B, int C, int HW);
  void (*add_channel_bias_backward)(const sde_backend *be, float *dbias, const float *dx, int B, int C, int HW);
  void (*concat_channels_forward)(const sde_backend *be, float *out, const float *a, const float *b, int B, int Ca,
                                  int Cb, int HW);
  void (*concat_channels_backward)(const sde_backend *be, float *da, float *db, const float *dout, int B, int Ca,
                                   int Cb, int HW);
  /* optional: concat_channels_backward with da and/or db stored, not added (NULL: the trainer
   * zeroes them and calls concat_channels_backward) */
  void (*concat_channels_backward_store)(const sde_backend *be, float *da, float *db, const float *dout, int B,
                                         int Ca, int Cb, int HW, int store_a, int store_b);

  /* ---- random numbers (rng.h): bit-identical to the CPU stream ----------------------
   * Row i of out[n_rows, row_len] = sde_randn(seed, stream0 + i, step, ., row_len). */
  int (*randn_rows)(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step, int n_rows,
                    int64_t row_len);
  int (*randu_rows)(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step, int n_rows,
                    int64_t row_len);
  int (*rademacher_rows)(const sde_backend *be, float *out, uint64_t seed, uint64_t stream0, uint32_t step,
                         int n_rows, int64_t row_len);

  /* ---- sampler updates, per sample row b of x[n_rows, row_len] ----------------------
   * axpby_rows: out[b,:] = a[b]·x[b,:] + c[b]·y[b,:]   (a, c: host arrays of n_rows;
   * out may alias x or y). This one op expresses every predictor/corrector update of
   * sample_pc.c and the RK stages of sample_ode.c (drift = f·x − ½g²·score etc.). */
  int (*axpby_rows)(const sde_backend *be, float *out, const double *a, const float *x, const double *c,
                    const float *y, int n_rows, int64_t row_len);
  /* dot_rows: out[b] = Σ x[b,:]·y[b,:] in double (host array; Langevin step sizes, norms) */
  int (*dot_rows)(const sde_backend *be, double *out, const float *x, const float *y, int n_rows, int64_t row_len);

  /* ---- optimizer (train.c), not in nn.h -------------------------------------------------
   * adam_step: for i < n with trainable == NULL or trainable[i] != 0 (a 0/1 float mask):
   *   g = grad·clip; m = b1·m + (1−b1)·g; v = b2·v + (1−b2)·g·g;
   *   p −= step_size·(m / (sqrt(v)/sbc2 + eps)); ema −= one_m_decay·(ema − p)
   * (torch.optim.Adam without weight decay, then the EMA), in float, in this order
   * (exact_math.h sde_adam_elem); elsewhere ema = p. k is host memory. */
  int (*adam_step)(const sde_backend *be, float *p, float *m, float *v, float *ema, const float *grad,
                   const float *trainable, size_t n, const sde_adam_coef *k);

  void *impl; /* backend state (CUDA: stream, cuBLAS/cuDNN handles, workspace) */
};

/* The CPU backend (a static table, always available). */
const sde_backend *sde_backend_cpu(void);

/* Opens a backend. AUTO picks CUDA when the build has it and a device answers, else the
 * CPU; `*fell_back` (may be NULL) is set to 1 when AUTO could not use a GPU, with the
 * reason in sde_errmsg(), so callers can warn. CUDA: SDE_ENODEV with a message when this
 * build has no CUDA, no driver or no such device. Release with sde_backend_close. */
int sde_backend_open(sde_device_kind kind, int device_id, sde_precision precision,
                     const sde_backend **out, int *fell_back);
void sde_backend_close(const sde_backend *be);

/* CUDA backend constructor (backend/cuda/); absent unless SDE_HAVE_CUDA. */
#ifdef SDE_HAVE_CUDA
int sde_backend_cuda_open(int device_id, sde_precision precision, const sde_backend **out);
void sde_backend_cuda_close(const sde_backend *be);
#endif
/* Number of CUDA devices: 0 without CUDA support (backend.c), driver or GPU (cuda_loader.c). */
int sde_backend_cuda_count(void);

#ifdef __cplusplus
}
#endif
#endif
