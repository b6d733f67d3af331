/* Private declarations of the NCSN++ / DDPM++ network (ncsnpp_*.c). Not installed.
 *
 * ncsnpp_config.c  presets, JSON reader, validation, JSON writer
 * ncsnpp_plan.c    the module list (parameter layout), create/free, parameter access, init
 * ncsnpp_forward.c inference
 * ncsnpp_train.c   training forward with saved activations, backward */
#ifndef SCORESDE_NCSNPP_INTERNAL_H
#define SCORESDE_NCSNPP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "scoresde/network.h"

#pragma GCC visibility push(hidden)

typedef enum {
  M_FOURIER,    /* GaussianFourierProjection: W[nf] */
  M_LINEAR,     /* nn.Linear: weight[out,in], bias[out] */
  M_CONV3,      /* conv3x3: weight[out,in,3,3], bias[out] */
  M_GROUPNORM,  /* nn.GroupNorm: weight[C], bias[C] */
  M_RESBLOCK,   /* ResnetBlockBigGANpp / ResnetBlockDDPMpp */
  M_ATTN,       /* AttnBlockpp */
  M_COMBINE,    /* Combine: Conv_0 1x1 [out,in,1,1] */
  M_DOWNSAMPLE, /* layerspp.Downsample (ddpm blocks; residual input pyramid) */
  M_UPSAMPLE,   /* layerspp.Upsample (ddpm blocks; residual output pyramid) */
} module_kind;

typedef struct {
  module_kind kind;
  int in_ch, out_ch;
  int res;        /* spatial size of the input */
  int up, down;   /* biggan resblock resampling */
  int shortcut;   /* resblock: Conv_2 (biggan, 1x1) or NIN_0 (ddpm) */
  int with_conv;  /* Downsample / Upsample */
  int first_param, n_params;
} net_module;

struct sde_ncsnpp {
  sde_ncsnpp_config config;
  int n_modules;
  net_module *modules;
  int n_params;
  sde_net_param *params;
  int64_t num_floats;
  float *param_buf;      /* [num_floats] contiguous, state_dict order */
  int n_hs;              /* skip connections stack */
  int hs_ch[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int hs_res[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int64_t max_act;       /* largest C*H*W of any activation (one sample) */
  double *sigmas;        /* [N] descending: get_sigmas(config), for positional scale_by_sigma */
  /* the backend every op runs on (NULL: the CPU). On a device backend dev_params is the
   * backend copy of param_buf, refreshed when param_buf was handed out writable. */
  const sde_backend *be;
  float *dev_params;
  int dev_dirty;
  int host_stale; /* dev_params were updated on the backend (training): download before use */
};


static inline int is_attn_res(const sde_ncsnpp_config *c, int res) {
  for (int i = 0; i < c->num_attn; i++)
    if (c->attn_resolutions[i] == res) return 1;
  return 0;
}

static inline const sde_backend *net_be(const sde_ncsnpp *net) {
  return net->be ? net->be : sde_backend_cpu();
}

/* A bump allocator over the workspace. In measure mode nothing is computed: the walk only
 * records the peak, which sizes the workspace. */
typedef struct {
  const sde_ncsnpp *net;
  const sde_backend *be; /* every op goes through it; base, the tape and params are its memory */
  int B;
  int measure;
  float *base;
  size_t top, peak;
  const float *temb_act; /* [B, 4nf] silu(temb), NULL when unconditional */
  /* training only (sde_ncsnpp_train_*; NULL / 0 for inference) */
  struct sde_ncsnpp_train *tr;
  float dropout;
  uint64_t drop_seed, drop_stream0;
  float *dparams;        /* backward: gradient buffer [num_floats] or NULL */
} fwd_ctx;

static inline float *ws_alloc(fwd_ctx *x, size_t n) {
  n = (n + 15) & ~(size_t)15; /* 64-byte granularity */
  float *p = x->measure ? NULL : x->base + x->top;
  x->top += n;
  if (x->top > x->peak) x->peak = x->top;
  return p;
}

#define RUN(call)                   \
  do {                              \
    if (!ctx->measure) {            \
      int rc_ = (call);             \
      if (rc_) return rc_;          \
    }                               \
  } while (0)
#define DO(stmt)                    \
  do {                              \
    if (!ctx->measure) { stmt; }    \
  } while (0)

/* op of the backend: BE(conv2d_forward, out, ...) = be->conv2d_forward(be, out, ...) */
#define BE(op, ...) ctx->be->op(ctx->be, __VA_ARGS__)

static inline const float *P(const fwd_ctx *ctx, const net_module *m, int k) {
  const float *base = ctx->net->dev_params ? ctx->net->dev_params : ctx->net->param_buf;
  return base + ctx->net->params[m->first_param + k].offset;
}

static const float SQRT2 = 1.41421356237309504880f; /* np.sqrt(2.) in float32 */

/* shared by inference and training (ncsnpp_forward.c) */
int ncsnpp_sync_params(const sde_ncsnpp *net);
int ncsnpp_check_labels(const sde_ncsnpp *net, int B, const float *labels);
void ncsnpp_residual_join(fwd_ctx *ctx, float *out, const float *a, const float *b, size_t n,
                          int rescale);
int ncsnpp_input_affine(fwd_ctx *ctx, float *xc, const float *x, int B, int C, int HW);
int ncsnpp_to_backend(fwd_ctx *ctx, float *dst, const float *src, size_t n);
int ncsnpp_fill_const(fwd_ctx *ctx, float *dst, float v, size_t n);
int ncsnpp_divide_rows(fwd_ctx *ctx, float *out, const float *in, const float *sig_f,
                       const double *sig_d, int B, size_t per);
int ncsnpp_conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w,
                     const float *bias, int Cin, int Cout, int H, int k);
int ncsnpp_resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H);
int ncsnpp_resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H);
int ncsnpp_run_downsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out);
int ncsnpp_run_upsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out);

#pragma GCC visibility pop

#endif
