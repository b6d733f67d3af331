/* Private declarations of the NCSN++ / DDPM++ network (ncsnpp_*.c). Not installed.
 *
 * ncsnpp_config.c  presets, JSON reader, validation, JSON writer
 * ncsnpp_plan.c    the config compiled once into modules (parameter layout) and a plan:
 *                  the op list over activation slots, with the inference arena offsets;
 *                  create/free, parameter access, initialisation
 * ncsnpp_forward.c inference: one forward function per op kind, the plan interpreter
 * ncsnpp_train.c   training: forward with saved activations and backward per op kind,
 *                  the tape interpreter (backward = the plan in reverse)
 *
 * docs/math.md#net-graph gives the layer order the plan encodes. */
#ifndef SCORESDE_NCSNPP_INTERNAL_H
#define SCORESDE_NCSNPP_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "scoresde/network.h"

#pragma GCC visibility push(hidden)

/* ---- modules: the parameter layout (state_dict order of `all_modules`) ------------------ */

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

/* ---- the plan: ops over activation slots ---------------------------------------------------
 *
 * The network after its time embedding is a list of ops in execution order. Each op reads
 * one or two activation slots and writes a new one; a slot is one [C, H, H] tensor per
 * sample, written once. Skip connections, pyramids and concatenations are just slots read
 * by a later op. Inference places the slots in an arena by their lifetimes; training keeps
 * every slot (and its gradient) for the backward, which runs the list in reverse. */

typedef enum {
  OP_CONV,          /* conv k x k stride 1 pad k/2 (conv_in, Combine.Conv_0): [C,H,H] -> [C2,H,H] */
  OP_RESBLOCK,      /* ResnetBlockBigGANpp / DDPMpp (module): [C,H,H] -> [out_ch, H', H'] */
  OP_ATTN,          /* AttnBlockpp (module): [C,H,H] -> [C,H,H] */
  OP_NORM_CONV,     /* conv3x3(act(GroupNorm(x))), the heads: module GroupNorm, module2 conv */
  OP_DOWNSAMPLE,    /* layerspp.Downsample (module): [C,H,H] -> [out_ch,H/2,H/2] */
  OP_UPSAMPLE,      /* layerspp.Upsample (module): [C,H,H] -> [out_ch,2H,2H] */
  OP_RESAMPLE_UP,   /* parameter-free x2 (FIR [1,3,3,1] or nearest): [C,H,H] -> [C,2H,2H] */
  OP_RESAMPLE_DOWN, /* parameter-free /2 (FIR [1,3,3,1] or mean): [C,H,H] -> [C,H/2,H/2] */
  OP_ADD,           /* in0 + in1, or (in0 + in1) / sqrt(2) with rescale: [C,H,H] */
  OP_CONCAT,        /* [in0 (C channels), in1 (C2 channels)] over channels */
  OP_HEAD,          /* classifier: Linear(mean_HW(act(GroupNorm(x)))), module GN, module2 Linear */
  OP_SIGMA_SCALE,   /* x / sigma per sample (scale_by_sigma): [C,H,H] */
  OP_GLOBAL_POOL,   /* [sum_HW(in0)/H0, sum_HW(in1)/H1]: [C,H0,H0], [C2,H1,H1] -> [C+C2,1,1] */
  OP_GLOBAL_HEAD,   /* in0 + Linear_2(Linear_0(in1) * Linear_1(act(temb)))/H per channel:
                     * modules Linear_0, Linear_1 (= module + 1), module2 Linear_2;
                     * in0 [C,H,H], in1 [F,1,1] -> [C,H,H] */
  OP_KINDS
} op_kind;

typedef struct {
  op_kind kind;
  int module, module2; /* indices into the module list (-1: none) */
  int in0, in1, out;   /* activation slots (in1 = -1 unless ADD / CONCAT) */
  int C, H;            /* in0: channels, side */
  int C2;              /* CONV: output channels; CONCAT, GLOBAL_POOL, GLOBAL_HEAD: in1 channels */
  int H2;              /* GLOBAL_POOL: in1 side */
  int k;               /* CONV: kernel size */
  int rescale;         /* ADD: divide by sqrt(2) (skip_rescale) */
} net_op;

/* The activation table: one entry per slot. */
typedef struct {
  int C, H;            /* one sample holds C*H*H floats */
  int producer;        /* op writing it (-1: the network input) */
  int last_use;        /* last op reading it (= producer when nothing reads it) */
  int64_t offset;      /* inference arena offset in floats per sample; -1: caller memory */
} net_slot;

typedef struct {
  net_op *ops;
  int n_ops;
  net_slot *slots;
  int n_slots;
  int input_slot;          /* the input as the network sees it (2x - 1 unless centred) */
  int output_slot;         /* the score (or the logits of a classifier) */
  int mod_fourier;         /* time embedding modules (-1: absent) */
  int mod_temb;            /* Dense_0; Dense_1 follows it */
  int64_t arena_per_sample;
} net_plan;

extern const char *const ncsnpp_op_names[OP_KINDS];

static inline int64_t slot_floats(const net_slot *s) { return (int64_t)s->C * s->H * s->H; }

struct sde_ncsnpp {
  sde_ncsnpp_config config;
  int n_modules;
  net_module *modules;
  int n_params;
  sde_net_param *params;
  int64_t num_floats;
  float *param_buf;      /* [num_floats] contiguous, state_dict order */
  net_plan plan;
  double *sigmas;        /* [N] descending: get_sigmas(config), for positional scale_by_sigma */
  /* the backend every op runs on (NULL: the CPU). On a device backend dev_params is the
   * backend copy of param_buf, refreshed when param_buf was handed out writable. */
  const sde_backend *be;
  float *dev_params;
  int dev_dirty;
  int host_stale; /* dev_params were updated on the backend (training): download before use */
  int frozen;               /* sde_ncsnpp_freeze, until the parameters are handed out writable */
  struct net_preps *preps;  /* frozen on a backend that prepares weights */
};

/* Weights that no longer change (from sde_ncsnpp_freeze until they are handed out writable):
 * each conv weight's prepared form (backend conv2d_prepare), made by its first inference
 * forward, indexed like params; made by be, at most budget bytes in all. */
typedef struct net_preps {
  const sde_backend *be;
  size_t budget;
  _Atomic size_t bytes;
  _Atomic(sde_nn_conv2d_prep *) slot[];
} net_preps;

/* the prepared form of conv weight w (a parameter of net) for shape s, made on first use; NULL
 * where there is none (not frozen, nothing to prepare, over the budget, out of memory) */
const sde_nn_conv2d_prep *ncsnpp_conv_prep(const sde_ncsnpp *net, const float *w,
                                           const sde_nn_conv2d_shape *s);

static inline const sde_backend *net_be(const sde_ncsnpp *net) {
  return net->be ? net->be : sde_backend_cpu();
}

/* ---- execution context -------------------------------------------------------------------- */

/* A bump allocator over the workspace; cap is the size the plan gave it. */
typedef struct {
  const sde_ncsnpp *net;
  const sde_backend *be; /* every op goes through it; base, the tape and params are its memory */
  int B;
  float *base;
  size_t top, peak, cap;
  const float *labels;   /* host [B]: the network labels of this call */
  const float *temb_act; /* [B, 4nf] silu(temb), NULL when unconditional */
  /* training only (sde_ncsnpp_train_*; NULL / 0 for inference) */
  struct sde_ncsnpp_train *tr;
  float dropout;
  uint64_t drop_seed, drop_stream0;
  float *dparams;        /* backward: gradient buffer [num_floats] or NULL */
  int no_dx;             /* backward: the input's gradient is not wanted */
  int by_batch;          /* conv kernels chosen for the batch too (SDE_NCSNPP_TRAIN_BY_BATCH) */
} fwd_ctx;

/* 64-byte granularity of every workspace block */
static inline size_t ws_round(size_t n) { return (n + 15) & ~(size_t)15; }

static inline float *ws_alloc(fwd_ctx *x, size_t n) {
  float *p = x->base + x->top;
  x->top += ws_round(n);
  if (x->top > x->peak) x->peak = x->top;
  return p;
}

/* op of the backend: BE(conv2d_forward, out, ...) = be->conv2d_forward(be, out, ...) */
#define BE(op, ...) ctx->be->op(ctx->be, __VA_ARGS__)
/* a backend op that returns a status */
#define TRY(call)          \
  do {                     \
    int rc_ = (call);      \
    if (rc_) return rc_;   \
  } while (0)

/* parameter k of module mi (backend memory) */
static inline const float *P(const fwd_ctx *ctx, int mi, int k) {
  const float *base = ctx->net->dev_params ? ctx->net->dev_params : ctx->net->param_buf;
  return base + ctx->net->params[ctx->net->modules[mi].first_param + k].offset;
}

static inline const net_module *MOD(const fwd_ctx *ctx, int mi) { return &ctx->net->modules[mi]; }

static const float SQRT2 = 1.41421356237309504880f; /* np.sqrt(2.) in float32 */

/* ---- shared by inference and training (ncsnpp_forward.c) ----------------------------------- */

int ncsnpp_sync_params(const sde_ncsnpp *net);
int ncsnpp_check_labels(const sde_ncsnpp *net, int B, const float *labels);
/* emb = embedding(labels); t1 = Dense_0(emb), t1a = act(t1), t2 = Dense_1(t1a), ta = act(t2)
 * (inference passes t1a = t1 and ta = t2); u [B] receives ln sigma or the labels. */
int ncsnpp_time_embedding(fwd_ctx *ctx, float *u, float *emb, float *t1, float *t1a, float *t2,
                          float *ta);
size_t ncsnpp_time_embedding_floats(const sde_ncsnpp *net, int B); /* emb + u, one block each */
void ncsnpp_residual_join(fwd_ctx *ctx, float *out, const float *a, const float *b, size_t n,
                          int rescale);
int ncsnpp_input_affine(fwd_ctx *ctx, float *xc, const float *x, int B, int C, int HW);
int ncsnpp_to_backend(fwd_ctx *ctx, float *dst, const float *src, size_t n);
int ncsnpp_fill_const(fwd_ctx *ctx, float *dst, float v, size_t n);
/* sigma per sample of scale_by_sigma: sig_f = the labels (Fourier) or sig_d[b] (float64
 * table of positional embeddings, sig_d NULL otherwise) */
int ncsnpp_sigmas(const sde_ncsnpp *net, int B, const float *labels, double **sig_d);
int ncsnpp_divide_rows(fwd_ctx *ctx, float *out, const float *in, const float *sig_f,
                       const double *sig_d, int B, size_t per);
/* the shape of a k x k "same" conv of the call's batch on H x H planes, by_batch as the
 * context says (every such conv of the forward and the backward takes it from here) */
sde_nn_conv2d_shape ncsnpp_conv_shape(const fwd_ctx *ctx, int Cin, int Cout, int H, int k);
int ncsnpp_conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w,
                     const float *bias, int Cin, int Cout, int H, int k);
/* the same, then + bias2[b][c] (NULL: none), then the residual join of residual (NULL:
 * none; may be out) as ncsnpp_residual_join: fused into the conv's output transform where
 * the CPU's Winograd kernel takes it (the bits of the separate passes) */
int ncsnpp_conv_same_then(fwd_ctx *ctx, float *out, const float *inp, const float *w,
                          const float *bias, int Cin, int Cout, int H, int k, const float *bias2,
                          const float *residual, int rescale);
size_t ncsnpp_conv_same_scratch(int B, int Cin, int Cout, int H, int k);
int ncsnpp_resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H);
int ncsnpp_resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H);
int ncsnpp_downsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, float *out);
int ncsnpp_upsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, float *out);
size_t ncsnpp_resample_module_scratch(const sde_ncsnpp *net, const net_op *op, int B);
int ncsnpp_global_pool(fwd_ctx *ctx, const net_op *op, const float *a, const float *b, float *out);
int ncsnpp_global_head(fwd_ctx *ctx, const net_op *op, const float *x, const float *pooled,
                       float *u, float *g, float *out);
/* the temporaries of ncsnpp_global_pool / ncsnpp_global_head above ctx->top */
size_t ncsnpp_global_scratch(const sde_ncsnpp *net, const net_op *op, int B);

#pragma GCC visibility pop

#endif
