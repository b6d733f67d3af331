/* NCSN++ / DDPM++ inference: one forward function per op kind, each with the size of its
 * temporaries beside it, and the interpreter that runs the plan (ncsnpp_internal.h) over a
 * workspace of [time embedding | slot arena | scratch of the largest op].
 *
 * Every op keeps the float operations of the reference forward (docs/math.md#net-graph):
 * operand order of sums and concatenations, the residual rescale by 1/sqrt(2), the fused
 * GroupNorm+SiLU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "../parallel.h"
#include "ncsnpp_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"

/* ---- helpers shared with training ---------------------------------------------------------- */

typedef struct {
  float *out;
  const float *a, *b;
} join_job;

static void join_rescaled(void *ctx, int64_t i0, int64_t i1) {
  const join_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] = (j->a[i] + j->b[i]) / SQRT2;
}

/* out = (a + b) / sqrt(2) or a + b, elementwise; out may alias a or b. The table has no
 * divide: a device backend multiplies by 1/sqrt(2) (within 1 ulp of the CPU's division). */
void ncsnpp_residual_join(fwd_ctx *ctx, float *out, const float *a, const float *b, size_t n,
                          int rescale) {
  if (!rescale) {
    BE(add_forward, out, a, b, 1.0f, n);
  } else if (!ctx->be->host_memory) {
    BE(add_forward, out, a, b, 1.0f / SQRT2, n);
  } else {
    join_job j = {out, a, b};
    sde_parallel_for((int64_t)n, 1, join_rescaled, &j);
  }
}

/* xc = 2x - 1 (data in [0,1] -> [-1,1]). On a device: 2x (exact), then + (-1) per channel
 * row through add_channel_bias: the same single rounding as the host expression.
 * Temporary: ws_round(B*C) floats. */
int ncsnpp_input_affine(fwd_ctx *ctx, float *xc, const float *x, int B, int C, int HW) {
  const size_t n = (size_t)B * C * HW, mark = ctx->top;
  float *dm = ws_alloc(ctx, (size_t)B * C); /* -1 per (b, c) on a device */
  int rc = SDE_OK;
  if (ctx->be->host_memory) {
    for (size_t i = 0; i < n; i++) xc[i] = 2.0f * x[i] - 1.0f;
  } else {
    float *mone = sde_malloc((size_t)B * C * sizeof(float));
    if (!mone) return SDE_ENOMEM;
    for (int i = 0; i < B * C; i++) mone[i] = -1.0f;
    rc = ctx->be->upload(ctx->be, dm, mone, (size_t)B * C * sizeof(float));
    free(mone);
    if (!rc) {
      BE(scale, xc, x, 2.0f, n);
      BE(add_channel_bias_forward, xc, dm, B, C, HW);
    }
  }
  ctx->top = mark;
  return rc;
}

/* dst[n] = host src[n] into backend memory (labels, log sigmas: a few floats per call) */
int ncsnpp_to_backend(fwd_ctx *ctx, float *dst, const float *src, size_t n) {
  return ctx->be->upload(ctx->be, dst, src, n * sizeof(float));
}

/* dst[n] = v in backend memory */
int ncsnpp_fill_const(fwd_ctx *ctx, float *dst, float v, size_t n) {
  float *h = sde_malloc(n * sizeof(float));
  if (!h) return SDE_ENOMEM;
  for (size_t i = 0; i < n; i++) h[i] = v;
  int rc = ncsnpp_to_backend(ctx, dst, h, n);
  free(h);
  return rc;
}

/* Positional embeddings with scale_by_sigma: *sig_d = sigmas[labels.long()] (the float64
 * table). Fourier: *sig_d = NULL (sigma is the label itself). */
int ncsnpp_sigmas(const sde_ncsnpp *net, int B, const float *labels, double **sig_d) {
  const sde_ncsnpp_config *c = &net->config;
  *sig_d = NULL;
  if (c->embedding_type == SDE_EMBED_FOURIER) return SDE_OK;
  double *sig = sde_malloc((size_t)B * sizeof(double));
  if (!sig) return SDE_ENOMEM;
  for (int b = 0; b < B; b++) {
    long idx = (long)labels[b];
    if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N) {
      free(sig);
      return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                      (double)labels[b], c->sde.N);
    }
    sig[b] = net->sigmas[idx];
  }
  *sig_d = sig;
  return SDE_OK;
}

/* out[b] = in[b] / sigma[b] per sample (scale_by_sigma); sig_d: float64 sigmas (positional),
 * else sig_f. On a device: one axpby_rows with a = 1/sigma (within 1 ulp). */
int ncsnpp_divide_rows(fwd_ctx *ctx, float *out, const float *in, const float *sig_f,
                       const double *sig_d, int B, size_t per) {
  if (ctx->be->host_memory) {
    for (int b = 0; b < B; b++) {
      if (sig_d) {
        const double sg = sig_d[b];
        for (size_t i = 0; i < per; i++) out[b * per + i] = (float)(in[b * per + i] / sg);
      } else {
        const float sg = sig_f[b];
        for (size_t i = 0; i < per; i++) out[b * per + i] = in[b * per + i] / sg;
      }
    }
    return SDE_OK;
  }
  double *a = sde_malloc((size_t)B * 2 * sizeof(double));
  if (!a) return SDE_ENOMEM;
  for (int b = 0; b < B; b++) {
    a[b] = 1.0 / (sig_d ? sig_d[b] : (double)sig_f[b]);
    a[B + b] = 0.0;
  }
  int rc = BE(axpby_rows, out, a, in, a + B, in, B, (int64_t)per);
  free(a);
  return rc;
}

/* conv k x k, stride 1, pad k/2: inp [B,Cin,H,H] -> out [B,Cout,H,H] */
/* out = conv_same(inp) + bias (k x k, pad k/2), then + bias2[b][c] (NULL: none), then the
 * residual join (residual + out) / sqrt(2) when rescale, + otherwise (residual NULL: none;
 * residual may be out). Inference on the CPU with prepared weights takes the prep. On the CPU
 * the passes run in the conv's output transform where it is a Winograd one (training too),
 * elsewhere as separate passes (the same bits either way). Temporaries:
 * ncsnpp_conv_same_scratch, and the output once more with a residual. */
sde_nn_conv2d_shape ncsnpp_conv_shape(const fwd_ctx *ctx, int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  s.by_batch = ctx->by_batch;
  return s;
}

int ncsnpp_conv_same_then(fwd_ctx *ctx, float *out, const float *inp, const float *w,
                          const float *bias, int Cin, int Cout, int H, int k, const float *bias2,
                          const float *residual, int rescale) {
  const sde_nn_conv2d_shape s = ncsnpp_conv_shape(ctx, Cin, Cout, H, k);
  const size_t mark = ctx->top, n = (size_t)ctx->B * Cout * H * H;
  /* inference of weights that no longer change: prepared once (training: never) */
  const sde_nn_conv2d_prep *prep = ctx->tr ? NULL : ncsnpp_conv_prep(ctx->net, w, &s);
  float *y = residual ? ws_alloc(ctx, n) : out; /* the conv's output when not fused */
  const size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  int fused = 0;
  if ((bias2 || residual) && ctx->be->host_memory)
    TRY(sde_nn_conv2d_forward_fused(out, inp, w, bias, &s, scratch, prep, bias2, residual,
                                    residual && rescale ? SQRT2 : 0.0f, &fused));
  if (!fused) {
    if (prep) TRY(BE(conv2d_forward_prepared, y, inp, w, bias, &s, scratch, prep));
    else TRY(BE(conv2d_forward, y, inp, w, bias, &s, scratch));
    if (bias2) BE(add_channel_bias_forward, y, bias2, ctx->B, Cout, H * H);
    if (residual) ncsnpp_residual_join(ctx, out, residual, y, n, rescale);
  }
  ctx->top = mark;
  return SDE_OK;
}

int ncsnpp_conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                     int Cin, int Cout, int H, int k) {
  return ncsnpp_conv_same_then(ctx, out, inp, w, bias, Cin, Cout, H, k, NULL, NULL, 0);
}

/* its temporary (forward and backward) */
size_t ncsnpp_conv_same_scratch(int B, int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Cin, H, H, Cout, k, 1, k / 2);
  return ws_round(sde_nn_conv2d_scratch_floats(&s));
}

/* Parameter-free resampling of the pyramid / biggan blocks: FIR [1,3,3,1] or nearest/mean. */
int ncsnpp_resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) return BE(fir_upsample2x_forward, out, inp, ctx->B, C, H, H);
  return BE(upsample_nearest2x_forward, out, inp, ctx->B, C, H, H);
}

int ncsnpp_resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) return BE(fir_downsample2x_forward, out, inp, ctx->B, C, H, H);
  return BE(avgpool2x_forward, out, inp, ctx->B, C, H, H);
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* ---- time embedding -------------------------------------------------------------------------- */

static int embed_dim(const sde_ncsnpp_config *c) {
  return c->embedding_type == SDE_EMBED_FOURIER ? 2 * c->nf : c->nf;
}

size_t ncsnpp_time_embedding_floats(const sde_ncsnpp *net, int B) {
  return ws_round((size_t)B * embed_dim(&net->config)) + ws_round((size_t)B);
}

int ncsnpp_time_embedding(fwd_ctx *ctx, float *u, float *emb, float *t1, float *t1a, float *t2,
                          float *ta) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_plan *pl = &ctx->net->plan;
  const int B = ctx->B, nf = c->nf, ed = embed_dim(c);
  const float *labels = ctx->labels;
  int rc;
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    float *lu = sde_malloc((size_t)B * sizeof(float)); /* ln sigma */
    if (!lu) return SDE_ENOMEM;
    for (int b = 0; b < B; b++) lu[b] = logf(labels[b]);
    rc = ncsnpp_to_backend(ctx, u, lu, (size_t)B);
    free(lu);
    if (rc) return rc;
    TRY(BE(fourier_embedding_forward, emb, u, P(ctx, pl->mod_fourier, 0), B, nf));
  } else {
    if ((rc = ncsnpp_to_backend(ctx, u, labels, (size_t)B))) return rc;
    TRY(BE(timestep_embedding_forward, emb, u, B, nf));
  }
  ctx->temb_act = NULL;
  if (!c->conditional) return SDE_OK;
  const size_t tn = (size_t)B * 4 * nf;
  const int l0 = pl->mod_temb, l1 = l0 + 1;
  TRY(BE(linear_forward, t1, emb, P(ctx, l0, 0), P(ctx, l0, 1), B, ed, 4 * nf));
  BE(silu_forward, t1a, t1, tn);
  TRY(BE(linear_forward, t2, t1a, P(ctx, l1, 0), P(ctx, l1, 1), B, 4 * nf, 4 * nf));
  BE(silu_forward, ta, t2, tn); /* every block applies act(temb) */
  ctx->temb_act = ta;
  return SDE_OK;
}

/* ---- one forward function per op kind -------------------------------------------------------
 * f(ctx, op, in0, in1, out) computes slot out from slots in0 (and in1); *_scratch gives the
 * most workspace floats it takes above ctx->top at batch B. */

typedef int (*op_forward_fn)(fwd_ctx *ctx, const net_op *op, const float *in0, const float *in1,
                             float *out);
typedef size_t (*op_scratch_fn)(const sde_ncsnpp *net, const net_op *op, int B);

/* OP_CONV: [B,C,H,H] -> [B,C2,H,H] */
static int conv_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                        float *out) {
  (void)unused;
  return ncsnpp_conv_same(ctx, out, x, P(ctx, op->module, 0), P(ctx, op->module, 1), op->C,
                          op->C2, op->H, op->k);
}

static size_t conv_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  (void)net;
  return ncsnpp_conv_same_scratch(B, op->C, op->C2, op->H, op->k);
}

/* OP_RESBLOCK, ResnetBlockBigGANpp / ResnetBlockDDPMpp: x [B,Cin,H,H] -> out [B,Cout,H',H'] */
static int resblock_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                            float *out) {
  (void)unused;
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho;
  const float *gn0_w = P(ctx, mi, 0), *gn0_b = P(ctx, mi, 1), *conv0_w = P(ctx, mi, 2),
              *conv0_b = P(ctx, mi, 3), *dense0_w = P(ctx, mi, 4), *dense0_b = P(ctx, mi, 5),
              *gn1_w = P(ctx, mi, 6), *gn1_b = P(ctx, mi, 7), *conv1_w = P(ctx, mi, 8),
              *conv1_b = P(ctx, mi, 9);
  const float *skip_w = m->shortcut ? P(ctx, mi, 10) : NULL,
              *skip_b = m->shortcut ? P(ctx, mi, 11) : NULL;
  size_t mark = ctx->top;
  /* h = act(GroupNorm_0(x)) */
  float *h0 = ws_alloc(ctx, in_n);
  TRY(BE(groupnorm_silu_forward, h0, x, gn0_w, gn0_b, B, Cin, H * H,
         sde_nn_groupnorm_groups(Cin), SDE_NN_GROUPNORM_EPS));
  /* up/down both h and the skip x */
  const float *hr = h0, *xr = x;
  if (m->up || m->down) {
    float *hu = ws_alloc(ctx, (size_t)B * Cin * out_hw), *xu = ws_alloc(ctx, (size_t)B * Cin * out_hw);
    if (m->up) {
      TRY(ncsnpp_resample_up(ctx, hu, h0, Cin, H));
      TRY(ncsnpp_resample_up(ctx, xu, x, Cin, H));
    } else {
      TRY(ncsnpp_resample_down(ctx, hu, h0, Cin, H));
      TRY(ncsnpp_resample_down(ctx, xu, x, Cin, H));
    }
    hr = hu;
    xr = xu;
  }
  /* h = Conv_0(h) + Dense_0(act(temb)) */
  float *h1 = ws_alloc(ctx, (size_t)B * Cout * out_hw), *proj = NULL;
  if (c->conditional) {
    proj = ws_alloc(ctx, (size_t)B * Cout);
    TRY(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
  }
  TRY(ncsnpp_conv_same_then(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3, proj, NULL, 0));
  /* h = act(GroupNorm_1(h)) (dropout inactive) */
  TRY(BE(groupnorm_silu_forward, h1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw,
         sde_nn_groupnorm_groups(Cout), SDE_NN_GROUPNORM_EPS));
  /* shortcut */
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, (size_t)B * Cout * out_hw);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN)
      TRY(ncsnpp_conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1));
    else
      TRY(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    xs = xc;
  }
  /* out = join(shortcut, Conv_1(h)) (out may be x, i.e. xs) */
  TRY(ncsnpp_conv_same_then(ctx, out, h1, conv1_w, conv1_b, Cout, Cout, Ho, 3, NULL, xs,
                            c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* h0, hu, xu, h1, proj, h2, xc and the largest conv scratch on top */
static size_t resblock_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  const net_module *m = &net->modules[op->module];
  const int Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t in_n = (size_t)B * Cin * H * H, o_n = (size_t)B * Cout * Ho * Ho,
               r_n = (size_t)B * Cin * Ho * Ho;
  size_t conv = max_size(ncsnpp_conv_same_scratch(B, Cin, Cout, Ho, 3),
                         ncsnpp_conv_same_scratch(B, Cout, Cout, Ho, 3));
  conv = max_size(conv, ncsnpp_conv_same_scratch(B, Cin, Cout, Ho, 1));
  return ws_round(in_n) + 2 * ws_round(r_n) + 3 * ws_round(o_n) + ws_round((size_t)B * Cout) +
         conv;
}

/* OP_ATTN, AttnBlockpp: x [B,C,H,H] -> out [B,C,H,H] */
static int attn_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                        float *out) {
  (void)unused;
  const int mi = op->module, B = ctx->B, C = op->C, N = op->H * op->H;
  const size_t n = (size_t)B * C * N;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, n), *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  TRY(BE(groupnorm_forward, h, NULL, NULL, x, P(ctx, mi, 0), P(ctx, mi, 1), B, C, N,
         sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  TRY(BE(nin_forward, q, h, P(ctx, mi, 2), P(ctx, mi, 3), B, C, N, C));
  TRY(BE(nin_forward, k, h, P(ctx, mi, 4), P(ctx, mi, 5), B, C, N, C));
  TRY(BE(nin_forward, v, h, P(ctx, mi, 6), P(ctx, mi, 7), B, C, N, C));
  TRY(BE(attention_forward, h, att, q, k, v, B, C, N));
  TRY(BE(nin_forward, q, h, P(ctx, mi, 8), P(ctx, mi, 9), B, C, N, C));
  ncsnpp_residual_join(ctx, out, x, q, n, ctx->net->config.skip_rescale);
  ctx->top = mark;
  return SDE_OK;
}

static size_t attn_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  (void)net;
  const size_t N = (size_t)op->H * op->H;
  return 4 * ws_round((size_t)B * op->C * N) + ws_round((size_t)B * N * N);
}

/* OP_NORM_CONV, act(GroupNorm(x)) then conv3x3: the output and pyramid heads */
static int norm_conv_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                             float *out) {
  (void)unused;
  const int gn = op->module, cv = op->module2, B = ctx->B, C = op->C, H = op->H;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, (size_t)B * C * H * H);
  TRY(BE(groupnorm_silu_forward, h, x, P(ctx, gn, 0), P(ctx, gn, 1), B, C, H * H,
         sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  int rc = ncsnpp_conv_same(ctx, out, h, P(ctx, cv, 0), P(ctx, cv, 1), C, MOD(ctx, cv)->out_ch,
                            H, 3);
  ctx->top = mark;
  return rc;
}

static size_t norm_conv_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  return ws_round((size_t)B * op->C * op->H * op->H) +
         ncsnpp_conv_same_scratch(B, op->C, net->modules[op->module2].out_ch, op->H, 3);
}

/* OP_DOWNSAMPLE, layerspp.Downsample: x [B,Cin,H,H] -> out [B,Cout,H/2,H/2] */
int ncsnpp_downsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return ncsnpp_resample_down(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    TRY(BE(fir_conv_downsample2x_forward, out, x, P(ctx, mi, 0), P(ctx, mi, 1), B, Cin, H, H,
           Cout, scratch));
  } else {
    /* F.pad(x, (0,1,0,1)) then 3x3 stride-2 unpadded conv */
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1, 0};
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    TRY(BE(conv2d_forward, out, x, P(ctx, mi, 0), P(ctx, mi, 1), &s, scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* OP_UPSAMPLE, layerspp.Upsample: x [B,Cin,H,H] -> out [B,Cout,2H,2H] */
int ncsnpp_upsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return ncsnpp_resample_up(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    TRY(BE(fir_conv_upsample2x_forward, out, x, P(ctx, mi, 0), P(ctx, mi, 1), B, Cin, H, H, Cout,
           scratch));
  } else {
    float *u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
    TRY(BE(upsample_nearest2x_forward, u, x, B, Cin, H, H));
    TRY(ncsnpp_conv_same(ctx, out, u, P(ctx, mi, 0), P(ctx, mi, 1), Cin, Cout, 2 * H, 3));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* the temporaries of both (forward and backward: the same scratch, u / du) */
size_t ncsnpp_resample_module_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  const net_module *m = &net->modules[op->module];
  const int Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return 0;
  if (op->kind == OP_DOWNSAMPLE) {
    if (net->config.fir)
      return ws_round(sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout));
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1, 0};
    return ws_round(sde_nn_conv2d_scratch_floats(&s));
  }
  if (net->config.fir)
    return ws_round(sde_nn_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout));
  return ws_round((size_t)B * Cin * 4 * H * H) + ncsnpp_conv_same_scratch(B, Cin, Cout, 2 * H, 3);
}

static int downsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                              float *out) {
  (void)unused;
  return ncsnpp_downsample_forward(ctx, op, x, out);
}

static int upsample_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                            float *out) {
  (void)unused;
  return ncsnpp_upsample_forward(ctx, op, x, out);
}

/* OP_RESAMPLE_UP / OP_RESAMPLE_DOWN: [B,C,H,H] -> [B,C,2H,2H] / [B,C,H/2,H/2] */
static int resample_up_forward(fwd_ctx *ctx, const net_op *op, const float *x,
                               const float *unused, float *out) {
  (void)unused;
  return ncsnpp_resample_up(ctx, out, x, op->C, op->H);
}

static int resample_down_forward(fwd_ctx *ctx, const net_op *op, const float *x,
                                 const float *unused, float *out) {
  (void)unused;
  return ncsnpp_resample_down(ctx, out, x, op->C, op->H);
}

/* OP_ADD: out = a + b or (a + b) / sqrt(2), [B,C,H,H] */
static int add_forward(fwd_ctx *ctx, const net_op *op, const float *a, const float *b,
                       float *out) {
  ncsnpp_residual_join(ctx, out, a, b, (size_t)ctx->B * op->C * op->H * op->H, op->rescale);
  return SDE_OK;
}

/* OP_CONCAT: out [B,C+C2,H,H] = [a, b] */
static int concat_forward(fwd_ctx *ctx, const net_op *op, const float *a, const float *b,
                          float *out) {
  BE(concat_channels_forward, out, a, b, ctx->B, op->C, op->C2, op->H * op->H);
  return SDE_OK;
}

/* OP_SIGMA_SCALE: out = x / sigma per sample */
static int sigma_scale_forward(fwd_ctx *ctx, const net_op *op, const float *x,
                               const float *unused, float *out) {
  (void)unused;
  double *sig = NULL;
  int rc = ncsnpp_sigmas(ctx->net, ctx->B, ctx->labels, &sig);
  if (rc) return rc;
  rc = ncsnpp_divide_rows(ctx, out, x, ctx->labels, sig, ctx->B, (size_t)op->C * op->H * op->H);
  free(sig);
  return rc;
}

/* OP_HEAD: classifiers run through the training forward only */
static int head_forward(fwd_ctx *ctx, const net_op *op, const float *x, const float *unused,
                        float *out) {
  (void)ctx, (void)op, (void)x, (void)unused, (void)out;
  return sde_fail(SDE_EUNSUPPORTED, "a classifier network runs through the training forward");
}

/* OP_GLOBAL_POOL: out [B, Ca+Cb] = [sum_HW(a)/Ha, sum_HW(b)/Hb], a [B,Ca,Ha,Ha], b [B,Cb,Hb,Hb] */
int ncsnpp_global_pool(fwd_ctx *ctx, const net_op *op, const float *a, const float *b, float *out) {
  const int B = ctx->B, Ca = op->C, Ha = op->H, Cb = op->C2, Hb = op->H2;
  size_t mark = ctx->top;
  float *pa = ws_alloc(ctx, (size_t)B * Ca), *pb = ws_alloc(ctx, (size_t)B * Cb);
  TRY(ctx->be->zero(ctx->be, pa, (size_t)B * Ca * sizeof(float)));
  TRY(ctx->be->zero(ctx->be, pb, (size_t)B * Cb * sizeof(float)));
  BE(add_channel_bias_backward, pa, a, B, Ca, Ha * Ha); /* += the sum over the plane */
  BE(add_channel_bias_backward, pb, b, B, Cb, Hb * Hb);
  BE(scale, pa, pa, 1.0f / (float)Ha, (size_t)B * Ca);
  BE(scale, pb, pb, 1.0f / (float)Hb, (size_t)B * Cb);
  BE(concat_channels_forward, out, pa, pb, B, Ca, Cb, 1);
  ctx->top = mark;
  return SDE_OK;
}

/* OP_GLOBAL_HEAD: out [B,C,H,H] = x + dc/H per channel, dc = Linear_2(u * g) [B,C],
 * u = Linear_0(pooled [B,F]), g = Linear_1(act(temb) [B,E]); u and g [B,hid] are the
 * caller's (saved by training), u becomes u * g */
int ncsnpp_global_head(fwd_ctx *ctx, const net_op *op, const float *x, const float *pooled,
                       float *u, float *g, float *out) {
  const int B = ctx->B, C = op->C, H = op->H, F = op->C2, E = 4 * ctx->net->config.nf;
  const int l0 = op->module, l2 = op->module2, hid = MOD(ctx, l0)->out_ch;
  size_t mark = ctx->top;
  float *ug = ws_alloc(ctx, (size_t)B * hid), *dc = ws_alloc(ctx, (size_t)B * C);
  TRY(BE(linear_forward, u, pooled, P(ctx, l0, 0), P(ctx, l0, 1), B, F, hid));
  TRY(BE(linear_forward, g, ctx->temb_act, P(ctx, l0 + 1, 0), P(ctx, l0 + 1, 1), B, E, hid));
  BE(mul, ug, u, g, (size_t)B * hid);
  TRY(BE(linear_forward, dc, ug, P(ctx, l2, 0), P(ctx, l2, 1), B, hid, C));
  BE(scale, dc, dc, 1.0f / (float)H, (size_t)B * C);
  if (out != x) TRY(ctx->be->copy(ctx->be, out, x, (size_t)B * C * H * H * sizeof(float)));
  BE(add_channel_bias_forward, out, dc, B, C, H * H);
  ctx->top = mark;
  return SDE_OK;
}

size_t ncsnpp_global_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  if (op->kind == OP_GLOBAL_POOL) return ws_round((size_t)B * op->C) + ws_round((size_t)B * op->C2);
  return ws_round((size_t)B * net->modules[op->module].out_ch) + ws_round((size_t)B * op->C);
}

/* u and g on top of the head's own scratch */
static int global_head_forward(fwd_ctx *ctx, const net_op *op, const float *x,
                               const float *pooled, float *out) {
  const size_t n = (size_t)ctx->B * MOD(ctx, op->module)->out_ch;
  float *u = ws_alloc(ctx, n), *g = ws_alloc(ctx, n);
  return ncsnpp_global_head(ctx, op, x, pooled, u, g, out);
}

static size_t global_head_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  return 2 * ws_round((size_t)B * net->modules[op->module].out_ch) +
         ncsnpp_global_scratch(net, op, B);
}

static size_t no_scratch(const sde_ncsnpp *net, const net_op *op, int B) {
  (void)net, (void)op, (void)B;
  return 0;
}

static const struct {
  op_forward_fn forward;
  op_scratch_fn scratch;
} op_table[OP_KINDS] = {
    [OP_CONV] = {conv_forward, conv_scratch},
    [OP_RESBLOCK] = {resblock_forward, resblock_scratch},
    [OP_ATTN] = {attn_forward, attn_scratch},
    [OP_NORM_CONV] = {norm_conv_forward, norm_conv_scratch},
    [OP_DOWNSAMPLE] = {downsample_forward, ncsnpp_resample_module_scratch},
    [OP_UPSAMPLE] = {upsample_forward, ncsnpp_resample_module_scratch},
    [OP_RESAMPLE_UP] = {resample_up_forward, no_scratch},
    [OP_RESAMPLE_DOWN] = {resample_down_forward, no_scratch},
    [OP_ADD] = {add_forward, no_scratch},
    [OP_CONCAT] = {concat_forward, no_scratch},
    [OP_HEAD] = {head_forward, no_scratch},
    [OP_SIGMA_SCALE] = {sigma_scale_forward, no_scratch},
    [OP_GLOBAL_POOL] = {ncsnpp_global_pool, ncsnpp_global_scratch},
    [OP_GLOBAL_HEAD] = {global_head_forward, global_head_scratch},
};

/* ---- the interpreter -------------------------------------------------------------------------- */

/* Workspace: [u, emb | t1, t2 | slot arena | scratch]. */
static size_t temb_floats(const sde_ncsnpp *net, int B) {
  size_t n = ncsnpp_time_embedding_floats(net, B);
  if (net->config.conditional) n += 2 * ws_round((size_t)B * 4 * net->config.nf);
  return n;
}

size_t sde_ncsnpp_workspace_floats(const sde_ncsnpp *net, int B) {
  const net_plan *pl = &net->plan;
  size_t scratch = ws_round((size_t)B * net->config.num_channels); /* input_affine */
  for (int i = 0; i < pl->n_ops; i++)
    scratch = max_size(scratch, op_table[pl->ops[i].kind].scratch(net, &pl->ops[i], B));
  return temb_floats(net, B) + (size_t)B * (size_t)pl->arena_per_sample + scratch;
}

static int forward_run(fwd_ctx *ctx, const float *x, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_plan *pl = &net->plan;
  const int B = ctx->B, S = c->image_size, C0 = c->num_channels;
  if (c->num_classes > 0)
    return sde_fail(SDE_EUNSUPPORTED, "a classifier network runs through the training forward");

  /* time embedding -> temb_act = act(Dense_1(act(Dense_0(emb)))) */
  float *u = ws_alloc(ctx, (size_t)B), *emb = ws_alloc(ctx, (size_t)B * embed_dim(c));
  float *t1 = NULL, *t2 = NULL;
  if (c->conditional) {
    t1 = ws_alloc(ctx, (size_t)B * 4 * c->nf);
    t2 = ws_alloc(ctx, (size_t)B * 4 * c->nf);
  }
  TRY(ncsnpp_time_embedding(ctx, u, emb, t1, t1, t2, t2));

  /* slots: the arena, the caller's x (centred input) and out */
  float *arena = ws_alloc(ctx, (size_t)B * (size_t)pl->arena_per_sample);
  const size_t scratch_base = ctx->top;
#define SLOT(s)                                                                       \
  ((s) == pl->output_slot ? out                                                       \
   : pl->slots[s].offset < 0 ? (float *)x                                             \
                              : arena + (size_t)B * (size_t)pl->slots[s].offset)
  if (!c->centered) TRY(ncsnpp_input_affine(ctx, SLOT(pl->input_slot), x, B, C0, S * S));
  for (int i = 0; i < pl->n_ops; i++) {
    const net_op *op = &pl->ops[i];
    ctx->top = scratch_base;
    int rc = op_table[op->kind].forward(ctx, op, SLOT(op->in0), op->in1 >= 0 ? SLOT(op->in1) : NULL,
                                        SLOT(op->out));
    if (rc) return rc;
    if (ctx->peak > ctx->cap)
      return sde_fail(SDE_EINVAL, "internal: op %d (%s) outgrew its planned scratch", i,
                      ncsnpp_op_names[op->kind]);
  }
#undef SLOT
  return SDE_OK;
}

int ncsnpp_check_labels(const sde_ncsnpp *net, int B, const float *labels) {
  const sde_ncsnpp_config *c = &net->config;
  for (int b = 0; b < B; b++) {
    if (!isfinite(labels[b]))
      return sde_fail(SDE_EINVAL, "network label %d is not finite", b);
    if (c->embedding_type == SDE_EMBED_FOURIER && !(labels[b] > 0.0f))
      return sde_fail(SDE_EINVAL, "network label %d = %g: Fourier embeddings need sigma > 0", b,
                      (double)labels[b]);
  }
  return SDE_OK;
}

int sde_ncsnpp_forward_dev(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                           float *out, float *workspace) {
  if (B <= 0) return B == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", B);
  if (!x || !labels || !out) return sde_fail(SDE_EINVAL, "network forward: NULL argument");
  int rc = ncsnpp_check_labels(net, B, labels);
  if (!rc) rc = ncsnpp_sync_params(net);
  if (rc) return rc;
  const sde_backend *be = net_be(net);
  const size_t n = sde_ncsnpp_workspace_floats(net, B);
  float *owned = NULL;
  if (!workspace) {
    if ((rc = be->alloc(be, n * sizeof(float), (void **)&owned))) return rc;
    workspace = owned;
  }
  fwd_ctx ctx = {.net = net, .be = be, .B = B, .base = workspace, .cap = n, .labels = labels};
  rc = forward_run(&ctx, x, out);
  if (owned) {
    if (!be->host_memory) {
      int rs = be->synchronize(be); /* the ops must finish before the free */
      rc = rc ? rc : rs;
    }
    be->free(be, owned);
  }
  return rc;
}

int sde_ncsnpp_forward(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                       float *out, float *workspace) {
  const sde_backend *be = net_be(net);
  if (be->host_memory || B <= 0 || !x || !out)
    return sde_ncsnpp_forward_dev(net, B, x, labels, out, workspace);
  /* host x, out around a device run */
  const size_t bytes = (size_t)B * net->config.num_channels * net->config.image_size *
                       net->config.image_size * sizeof(float);
  float *dx = NULL, *dout = NULL;
  int rc = be->alloc(be, bytes, (void **)&dx);
  if (!rc) rc = be->alloc(be, bytes, (void **)&dout);
  if (!rc) rc = be->upload(be, dx, x, bytes);
  if (!rc) rc = sde_ncsnpp_forward_dev(net, B, dx, labels, dout, workspace);
  if (!rc) rc = be->download(be, out, dout, bytes);
  be->free(be, dx);
  be->free(be, dout);
  return rc;
}
