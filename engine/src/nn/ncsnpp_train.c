/* NCSN++ / DDPM++ training forward and backward (docs/math.md#network). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "../parallel.h"
#include "ncsnpp_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"
#include "scoresde/rng.h"
#include "scoresde/train.h"

/* ---- training: forward with saved activations, backward ---------------------------------
 *
 * The training forward walks the module list exactly like forward_walk (same ops, same
 * operand order, so the same numbers) but never reuses a buffer: every tensor of the
 * graph gets its own storage and a gradient buffer, and every op is recorded on a tape
 * with pointers to the intermediates its backward needs. The backward runs the tape in
 * reverse; a tensor's gradient is complete when its producer is reached because every
 * consumer comes later on the tape. Gradients are zeroed on first touch.
 *
 * Workspace layout (one float buffer): [forward: tensors + grads + saved intermediates |
 * backward temporaries]. Its size comes from two measuring walks (no arithmetic) at
 * max_batch; smaller batches take a prefix of every region. */

enum {
  TP_CONV,     /* conv k x k, stride 1, pad k/2 (conv_in, Combine.Conv_0): m, C, C2, H, k */
  TP_RES,      /* ResnetBlock: m */
  TP_ATTN,     /* AttnBlockpp: m */
  TP_NORMCONV, /* act(GroupNorm) + conv3x3 heads: m (GroupNorm), m2 (conv) */
  TP_DOWN,     /* layerspp.Downsample: m */
  TP_UP,       /* layerspp.Upsample: m */
  TP_RUP,      /* parameter-free x2 upsample (FIR or nearest): C, H (input) */
  TP_RDOWN,    /* parameter-free x2 downsample (FIR or mean): C, H (input) */
  TP_ADD,      /* out = in0 + in1, or (in0 + in1)/sqrt(2) when k = 1 */
  TP_CONCAT,   /* out = [in0 (C channels), in1 (C2 channels)] over H*H */
  TP_SCALE,    /* out = in0 / sigma[b] per sample (scale_by_sigma) */
  TP_HEAD,     /* classifier: Linear(mean_HW(act(GroupNorm(in0)))): m (GroupNorm), m2 (Linear) */
};

typedef struct {
  int kind;
  const net_module *m, *m2;
  int in0, in1, out;  /* tensor ids */
  int C, C2, H, k;
  float *s[16];       /* saved intermediates (per kind, see the train functions) */
} tape_op;

typedef struct {
  float *data, *grad;
  size_t n;
  int touched;        /* grad zeroed (backward) */
} tape_tensor;

struct sde_ncsnpp_train {
  const sde_ncsnpp *net;
  int max_batch, with_dropout;
  size_t floats;
  float *buf;
  tape_op *ops;
  tape_tensor *t;
  int cap_ops, cap_t;
  /* the last forward */
  int B, n_ops, n_t, valid;
  size_t fwd_top;
  int mod_fourier, mod_lin0;                 /* module indices (-1 if absent) */
  float *u, *emb, *t1, *t1a, *t2, *ta, *dta; /* time embedding chain */
  int x_id, out_id;
  size_t out_n;
  const sde_backend *be;                     /* buf, dgrad live there (the net's at creation) */
  float *sig_host;                           /* [max_batch] scale_by_sigma sigmas */
  float *dgrad;                              /* device backends: parameter gradients */
};

static int tt_new(fwd_ctx *ctx, size_t n) {
  struct sde_ncsnpp_train *tr = ctx->tr;
  int id = tr->n_t++;
  float *d = ws_alloc(ctx, n), *g = ws_alloc(ctx, n);
  if (tr->t && id < tr->cap_t) {
    tr->t[id].data = d;
    tr->t[id].grad = g;
    tr->t[id].n = n;
    tr->t[id].touched = 0;
  }
  return id;
}

static float *TD(fwd_ctx *ctx, int id) { return ctx->measure ? NULL : ctx->tr->t[id].data; }

/* The gradient of tensor id, zeroed on first use. */
static float *TG(fwd_ctx *ctx, int id) {
  if (ctx->measure || id < 0) return NULL;
  tape_tensor *t = &ctx->tr->t[id];
  if (!t->touched) {
    ctx->be->zero(ctx->be, t->grad, t->n * sizeof(float));
    t->touched = 1;
  }
  return t->grad;
}

static tape_op *tp_push(fwd_ctx *ctx, int kind, const net_module *m) {
  static _Thread_local tape_op dummy;
  struct sde_ncsnpp_train *tr = ctx->tr;
  int i = tr->n_ops++;
  tape_op *op = tr->ops && i < tr->cap_ops ? &tr->ops[i] : &dummy;
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->m = m;
  op->in0 = op->in1 = op->out = -1;
  return op;
}

/* parameter gradient k of module m, NULL when not wanted */
static float *GP(const fwd_ctx *ctx, const net_module *m, int k) {
  if (!ctx->dparams) return NULL;
  return ctx->dparams + ctx->net->params[m->first_param + k].offset;
}

static float *zalloc(fwd_ctx *ctx, size_t n) {
  float *p = ws_alloc(ctx, n);
  if (p) ctx->be->zero(ctx->be, p, n * sizeof(float));
  return p;
}

static int conv_same_bwd(fwd_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  RUN(BE(conv2d_backward, dinp, dw, db, dout, inp, w, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

static int resample_up_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_upsample2x_backward, dinp, dout, ctx->B, C, H, H));
  else RUN(BE(upsample_nearest2x_backward, dinp, dout, ctx->B, C, H, H));
  return SDE_OK;
}

static int resample_down_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_downsample2x_backward, dinp, dout, ctx->B, C, H, H));
  else RUN(BE(avgpool2x_backward, dinp, dout, ctx->B, C, H, H));
  return SDE_OK;
}

/* -- train forward of each module kind ----------------------------------------------------- */

static int tr_conv(fwd_ctx *ctx, const net_module *m, int in, int Cin, int Cout, int H, int k,
                   int *outp) {
  tape_op *op = tp_push(ctx, TP_CONV, m);
  op->in0 = in;
  op->C = Cin;
  op->C2 = Cout;
  op->H = H;
  op->k = k;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * Cout * H * H);
  *outp = out;
  return ncsnpp_conv_same(ctx, TD(ctx, out), TD(ctx, in), P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, H, k);
}

/* Saved: s0 g0 = GN_0(x), s1 a0 = act(g0), s2 mean0, s3 rstd0, s4 hr (resampled a0 or a0),
 * s5 xr (resampled x or x), s6 h1 = Conv_0 + Dense_0, s7 g1 = GN_1(h1), s8 mean1, s9 rstd1,
 * s10 a1 = act(g1), s11 d1 = dropout(a1) (the Conv_1 input), s12 mask (NULL: no dropout). */
static int tr_resblock(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const int G0 = sde_nn_groupnorm_groups(Cin), G1 = sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  const float *gn0_w = P(ctx, m, 0), *gn0_b = P(ctx, m, 1), *conv0_w = P(ctx, m, 2),
              *conv0_b = P(ctx, m, 3), *dense0_w = P(ctx, m, 4), *dense0_b = P(ctx, m, 5),
              *gn1_w = P(ctx, m, 6), *gn1_b = P(ctx, m, 7), *conv1_w = P(ctx, m, 8),
              *conv1_b = P(ctx, m, 9);
  const float *skip_w = m->shortcut ? P(ctx, m, 10) : NULL,
              *skip_b = m->shortcut ? P(ctx, m, 11) : NULL;
  tape_op *op = tp_push(ctx, TP_RES, m);
  op->in0 = in;
  const float *x = TD(ctx, in);
  float *g0 = ws_alloc(ctx, in_n), *a0 = ws_alloc(ctx, in_n);
  float *mean0 = ws_alloc(ctx, (size_t)B * G0), *rstd0 = ws_alloc(ctx, (size_t)B * G0);
  RUN(BE(groupnorm_forward, g0, mean0, rstd0, x, gn0_w, gn0_b, B, Cin, H * H, G0,
                               SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a0, g0, in_n));
  float *hr = a0;
  float *xr = (float *)x;
  if (m->up || m->down) {
    hr = ws_alloc(ctx, r_n);
    xr = ws_alloc(ctx, r_n);
    if (m->up) {
      if (ncsnpp_resample_up(ctx, hr, a0, Cin, H) || ncsnpp_resample_up(ctx, xr, x, Cin, H)) return SDE_EINVAL;
    } else {
      if (ncsnpp_resample_down(ctx, hr, a0, Cin, H) || ncsnpp_resample_down(ctx, xr, x, Cin, H))
        return SDE_EINVAL;
    }
  }
  float *h1 = ws_alloc(ctx, o_n);
  int rc = ncsnpp_conv_same(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3);
  if (rc) return rc;
  float *g1 = ws_alloc(ctx, o_n), *a1 = ws_alloc(ctx, o_n);
  float *mean1 = ws_alloc(ctx, (size_t)B * G1), *rstd1 = ws_alloc(ctx, (size_t)B * G1);
  float *d1 = a1, *mask = NULL;
  if (ctx->tr->with_dropout) {
    float *mk = ws_alloc(ctx, o_n), *dd = ws_alloc(ctx, o_n);
    if (ctx->dropout > 0.0f) {
      mask = mk;
      d1 = dd;
    }
  }
  int out = tt_new(ctx, o_n);
  *outp = out;
  op->out = out;
  float *save[13] = {g0, a0, mean0, rstd0, hr, xr, h1, g1, mean1, rstd1, a1, d1, mask};
  memcpy(op->s, save, sizeof save);
  size_t mark = ctx->top;
  if (c->conditional) {
    float *proj = ws_alloc(ctx, (size_t)B * Cout);
    RUN(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
    DO(BE(add_channel_bias_forward, h1, proj, B, Cout, (int)out_hw));
  }
  RUN(BE(groupnorm_forward, g1, mean1, rstd1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw, G1,
                               SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a1, g1, o_n));
  if (mask && !ctx->measure) {
    /* row b: uniforms of (drop_seed, drop_stream0 + b, 1000 + module) -> 0 or 1/(1-p) */
    const float p = ctx->dropout, keep = 1.0f / (1.0f - p);
    const size_t per = (size_t)Cout * out_hw;
    const uint32_t step = 1000u + (uint32_t)(m - ctx->net->modules);
    RUN(BE(randu_rows, mask, ctx->drop_seed, ctx->drop_stream0, step, B, (int64_t)per));
    BE(dropout_mask, mask, p, keep, o_n);
    BE(mul, d1, a1, mask, o_n);
  }
  float *h2 = ws_alloc(ctx, o_n);
  if ((rc = ncsnpp_conv_same(ctx, h2, d1, conv1_w, conv1_b, Cout, Cout, Ho, 3))) return rc;
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, o_n);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = ncsnpp_conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1))) return rc;
    } else {
      RUN(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    }
    xs = xc;
  }
  DO(ncsnpp_residual_join(ctx, TD(ctx, out), xs, h2, o_n, c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

static int tr_resblock_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const int G0 = sde_nn_groupnorm_groups(Cin), G1 = sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  float *const *s = op->s;
  const float *x = TD(ctx, op->in0), *gout = TG(ctx, op->out);
  size_t mark = ctx->top;
  const float js = c->skip_rescale ? 1.0f / SQRT2 : 1.0f;
  float *dj = ws_alloc(ctx, o_n);
  DO(BE(scale, dj, gout, js, o_n));
  /* h2 = Conv_1(d1) */
  float *dd1 = zalloc(ctx, o_n);
  int rc = conv_same_bwd(ctx, dd1, GP(ctx, m, 8), GP(ctx, m, 9), dj, s[11], P(ctx, m, 8), Cout,
                         Cout, Ho, 3);
  if (rc) return rc;
  if (s[12] && !ctx->measure) BE(mul, dd1, dd1, s[12], o_n);
  float *dg1 = zalloc(ctx, o_n);
  DO(BE(silu_backward, dg1, dd1, s[7], o_n));
  float *dh1 = zalloc(ctx, o_n);
  RUN(BE(groupnorm_backward, dh1, GP(ctx, m, 6), GP(ctx, m, 7), dg1, s[6], s[8], s[9],
                                P(ctx, m, 6), B, Cout, (int)out_hw, G1));
  if (c->conditional) {
    float *dproj = zalloc(ctx, (size_t)B * Cout);
    DO(BE(add_channel_bias_backward, dproj, dh1, B, Cout, (int)out_hw));
    RUN(BE(linear_backward, ctx->tr->dta, GP(ctx, m, 4), GP(ctx, m, 5), dproj,
                               ctx->temb_act, P(ctx, m, 4), B, 4 * c->nf, Cout));
  }
  float *dhr = zalloc(ctx, r_n);
  if ((rc = conv_same_bwd(ctx, dhr, GP(ctx, m, 2), GP(ctx, m, 3), dh1, s[4], P(ctx, m, 2), Cin,
                          Cout, Ho, 3)))
    return rc;
  float *dxr = dj; /* identity shortcut: same shape */
  if (m->shortcut) {
    dxr = zalloc(ctx, r_n);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = conv_same_bwd(ctx, dxr, GP(ctx, m, 10), GP(ctx, m, 11), dj, s[5],
                              P(ctx, m, 10), Cin, Cout, Ho, 1)))
        return rc;
    } else {
      RUN(BE(nin_backward, dxr, GP(ctx, m, 10), GP(ctx, m, 11), dj, s[5], P(ctx, m, 10), B,
                              Cin, (int)out_hw, Cout));
    }
  }
  float *dx = TG(ctx, op->in0);
  float *da0 = dhr;
  if (m->up || m->down) {
    da0 = zalloc(ctx, in_n);
    if (m->up) {
      if ((rc = resample_up_bwd(ctx, da0, dhr, Cin, H)) || (rc = resample_up_bwd(ctx, dx, dxr, Cin, H)))
        return rc;
    } else {
      if ((rc = resample_down_bwd(ctx, da0, dhr, Cin, H)) ||
          (rc = resample_down_bwd(ctx, dx, dxr, Cin, H)))
        return rc;
    }
  } else {
    DO(BE(accumulate, dx, dxr, in_n));
  }
  float *dg0 = zalloc(ctx, in_n);
  DO(BE(silu_backward, dg0, da0, s[0], in_n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), dg0, x, s[2], s[3],
                                P(ctx, m, 0), B, Cin, H * H, G0));
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 h = GN(x), s1 mean, s2 rstd, s3 q, s4 k, s5 v, s6 att, s7 o = attention. */
static int tr_attn(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  tape_op *op = tp_push(ctx, TP_ATTN, m);
  op->in0 = in;
  const float *x = TD(ctx, in);
  float *h = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G), *rstd = ws_alloc(ctx, (size_t)B * G);
  float *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n), *o = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  int out = op->out = tt_new(ctx, n);
  *outp = out;
  float *save[8] = {h, mean, rstd, q, k, v, att, o};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, h, mean, rstd, x, P(ctx, m, 0), P(ctx, m, 1), B, C, N, G,
                               SDE_NN_GROUPNORM_EPS));
  RUN(BE(nin_forward, q, h, P(ctx, m, 2), P(ctx, m, 3), B, C, N, C));
  RUN(BE(nin_forward, k, h, P(ctx, m, 4), P(ctx, m, 5), B, C, N, C));
  RUN(BE(nin_forward, v, h, P(ctx, m, 6), P(ctx, m, 7), B, C, N, C));
  RUN(BE(attention_forward, o, att, q, k, v, B, C, N));
  size_t mark = ctx->top;
  float *p = ws_alloc(ctx, n);
  RUN(BE(nin_forward, p, o, P(ctx, m, 8), P(ctx, m, 9), B, C, N, C));
  DO(ncsnpp_residual_join(ctx, TD(ctx, out), x, p, n, ctx->net->config.skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

static int tr_attn_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *m = op->m;
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  float *const *s = op->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  const float js = ctx->net->config.skip_rescale ? 1.0f / SQRT2 : 1.0f;
  float *dj = ws_alloc(ctx, n);
  DO(BE(scale, dj, gout, js, n));
  DO(BE(accumulate, dx, dj, n));
  float *dO = zalloc(ctx, n);
  RUN(BE(nin_backward, dO, GP(ctx, m, 8), GP(ctx, m, 9), dj, s[7], P(ctx, m, 8), B, C, N, C));
  float *dq = zalloc(ctx, n), *dk = zalloc(ctx, n), *dv = zalloc(ctx, n);
  float *scratch = ws_alloc(ctx, sde_nn_attention_scratch_floats(N));
  RUN(BE(attention_backward, dq, dk, dv, dO, s[6], s[3], s[4], s[5], B, C, N, scratch));
  float *dh = zalloc(ctx, n);
  RUN(BE(nin_backward, dh, GP(ctx, m, 2), GP(ctx, m, 3), dq, s[0], P(ctx, m, 2), B, C, N, C));
  RUN(BE(nin_backward, dh, GP(ctx, m, 4), GP(ctx, m, 5), dk, s[0], P(ctx, m, 4), B, C, N, C));
  RUN(BE(nin_backward, dh, GP(ctx, m, 6), GP(ctx, m, 7), dv, s[0], P(ctx, m, 6), B, C, N, C));
  RUN(BE(groupnorm_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), dh, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, m, 0), B, C, N, G));
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 g = GN(x), s1 mean, s2 rstd, s3 a = act(g). */
static int tr_normconv(fwd_ctx *ctx, const net_module *gn, const net_module *cv, int in,
                       int *outp) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * H * H;
  tape_op *op = tp_push(ctx, TP_NORMCONV, gn);
  op->m2 = cv;
  op->in0 = in;
  float *g = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G),
        *rstd = ws_alloc(ctx, (size_t)B * G), *a = ws_alloc(ctx, n);
  int out = op->out = tt_new(ctx, (size_t)B * cv->out_ch * H * H);
  *outp = out;
  float *save[4] = {g, mean, rstd, a};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, g, mean, rstd, TD(ctx, in), P(ctx, gn, 0), P(ctx, gn, 1), B, C,
                               H * H, G, SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a, g, n));
  return ncsnpp_conv_same(ctx, TD(ctx, out), a, P(ctx, cv, 0), P(ctx, cv, 1), C, cv->out_ch, H, 3);
}

static int tr_normconv_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *gn = op->m, *cv = op->m2;
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * H * H;
  float *const *s = op->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *da = zalloc(ctx, n);
  int rc = conv_same_bwd(ctx, da, GP(ctx, cv, 0), GP(ctx, cv, 1), gout, s[3], P(ctx, cv, 0), C,
                         cv->out_ch, H, 3);
  if (rc) return rc;
  float *dg = zalloc(ctx, n);
  DO(BE(silu_backward, dg, da, s[0], n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), dg, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, gn, 0), B, C, H * H, G));
  ctx->top = mark;
  return SDE_OK;
}

static sde_nn_conv2d_shape pad_down_shape(int B, int Cin, int H, int Cout) {
  sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1};
  return s;
}

static int tr_downsample(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  tape_op *op = tp_push(ctx, TP_DOWN, m);
  op->in0 = in;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * m->out_ch * (m->res / 2) * (m->res / 2));
  *outp = out;
  return ncsnpp_run_downsample(ctx, m, TD(ctx, in), TD(ctx, out));
}

static int tr_downsample_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_down_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(fir_conv_downsample2x_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x,
                                              P(ctx, m, 0), B, Cin, H, H, Cout, scratch));
  } else {
    sde_nn_conv2d_shape s = pad_down_shape(B, Cin, H, Cout);
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(conv2d_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x, P(ctx, m, 0), &s,
                               scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 u = nearest x2 of the input (fir = false, with conv). */
static int tr_upsample(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  tape_op *op = tp_push(ctx, TP_UP, m);
  op->in0 = in;
  float *u = NULL;
  if (m->with_conv && !c->fir) u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
  op->s[0] = u;
  int out = op->out = tt_new(ctx, (size_t)B * Cout * 4 * H * H);
  *outp = out;
  if (!u) return ncsnpp_run_upsample(ctx, m, TD(ctx, in), TD(ctx, out));
  RUN(BE(upsample_nearest2x_forward, u, TD(ctx, in), B, Cin, H, H));
  return ncsnpp_conv_same(ctx, TD(ctx, out), u, P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, 2 * H, 3);
}

static int tr_upsample_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_up_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_ncsnpp_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    RUN(BE(fir_conv_upsample2x_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x, P(ctx, m, 0),
                                            B, Cin, H, H, Cout, scratch));
  } else {
    float *du = zalloc(ctx, (size_t)B * Cin * 4 * H * H);
    int rc = conv_same_bwd(ctx, du, GP(ctx, m, 0), GP(ctx, m, 1), gout, op->s[0], P(ctx, m, 0),
                           Cin, Cout, 2 * H, 3);
    if (rc) return rc;
    RUN(BE(upsample_nearest2x_backward, dx, du, B, Cin, H, H));
  }
  ctx->top = mark;
  return SDE_OK;
}

static int tr_resample(fwd_ctx *ctx, int up, int in, int C, int H, int *outp) {
  tape_op *op = tp_push(ctx, up ? TP_RUP : TP_RDOWN, NULL);
  op->in0 = in;
  op->C = C;
  op->H = H;
  int Ho = up ? 2 * H : H / 2;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * C * Ho * Ho);
  *outp = out;
  return up ? ncsnpp_resample_up(ctx, TD(ctx, out), TD(ctx, in), C, H)
            : ncsnpp_resample_down(ctx, TD(ctx, out), TD(ctx, in), C, H);
}

/* out = in0 + in1 (rescale 0) or (in0 + in1)/sqrt(2) (rescale 1) */
static int tr_add(fwd_ctx *ctx, int a, int b, size_t n, int rescale, int *outp) {
  tape_op *op = tp_push(ctx, TP_ADD, NULL);
  op->in0 = a;
  op->in1 = b;
  op->k = rescale;
  int out = op->out = tt_new(ctx, n);
  *outp = out;
  DO(if (rescale) ncsnpp_residual_join(ctx, TD(ctx, out), TD(ctx, a), TD(ctx, b), n, 1);
     else BE(add_forward, TD(ctx, out), TD(ctx, a), TD(ctx, b), 1.0f, n));
  return SDE_OK;
}

static int tr_concat(fwd_ctx *ctx, int a, int b, int Ca, int Cb, int H, int *outp) {
  tape_op *op = tp_push(ctx, TP_CONCAT, NULL);
  op->in0 = a;
  op->in1 = b;
  op->C = Ca;
  op->C2 = Cb;
  op->H = H;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * (Ca + Cb) * H * H);
  *outp = out;
  DO(BE(concat_channels_forward, TD(ctx, out), TD(ctx, a), TD(ctx, b), ctx->B, Ca, Cb, H * H));
  return SDE_OK;
}

/* Saved: s0 g = GN(x), s1 mean, s2 rstd, s3 a = act(g), s4 pooled [B, C]. */
static int tr_head(fwd_ctx *ctx, const net_module *gn, const net_module *lin, int in, int *outp) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C),
            K = lin->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  tape_op *op = tp_push(ctx, TP_HEAD, gn);
  op->m2 = lin;
  op->in0 = in;
  float *g = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G),
        *rstd = ws_alloc(ctx, (size_t)B * G), *a = ws_alloc(ctx, n),
        *pooled = ws_alloc(ctx, (size_t)B * C);
  float *w = ws_alloc(ctx, HW); /* device: the 1/HW weights of the mean */
  int out = op->out = tt_new(ctx, (size_t)B * K);
  *outp = out;
  float *save[5] = {g, mean, rstd, a, pooled};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, g, mean, rstd, TD(ctx, in), P(ctx, gn, 0), P(ctx, gn, 1), B, C,
                               (int)HW, G, SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a, g, n));
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      double acc = 0.0;
      for (size_t q = 0; q < HW; q++) acc += a[bc * HW + q];
      pooled[bc] = (float)(acc / (double)HW);
    }
  } else { /* device: the mean as a Linear [B*C, HW] -> [B*C, 1] with weights 1/HW */
    int rc = ncsnpp_fill_const(ctx, w, 1.0f / (float)HW, HW);
    if (!rc) rc = BE(linear_forward, pooled, a, w, NULL, B * C, (int)HW, 1);
    if (rc) return rc;
  }
  RUN(BE(linear_forward, TD(ctx, out), pooled, P(ctx, lin, 0), P(ctx, lin, 1), B, C, K));
  return SDE_OK;
}

static int tr_head_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *gn = op->m, *lin = op->m2;
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C),
            K = lin->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  float *const *s = op->s;
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *dp = zalloc(ctx, (size_t)B * C), *da = ws_alloc(ctx, n), *dg = zalloc(ctx, n);
  RUN(BE(linear_backward, dp, GP(ctx, lin, 0), GP(ctx, lin, 1), TG(ctx, op->out), s[4],
                             P(ctx, lin, 0), B, C, K));
  float *w = ws_alloc(ctx, HW);
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      const float v = (float)(dp[bc] / (double)HW);
      for (size_t q = 0; q < HW; q++) da[bc * HW + q] = v;
    }
  } else { /* device: da[B*C, HW] = dp[B*C, 1] · (1/HW)[HW, 1]ᵀ */
    int rc = ncsnpp_fill_const(ctx, w, 1.0f / (float)HW, HW);
    if (!rc) rc = BE(linear_forward, da, dp, w, NULL, B * C, 1, (int)HW);
    if (rc) return rc;
  }
  DO(BE(silu_backward, dg, da, s[0], n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), dg, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, gn, 0), B, C, (int)HW, G));
  ctx->top = mark;
  return SDE_OK;
}

static int tape_backward_op(fwd_ctx *ctx, const tape_op *op) {
  const int B = ctx->B;
  switch (op->kind) {
    case TP_CONV:
      return conv_same_bwd(ctx, TG(ctx, op->in0), GP(ctx, op->m, 0), GP(ctx, op->m, 1),
                           TG(ctx, op->out), TD(ctx, op->in0), P(ctx, op->m, 0), op->C, op->C2,
                           op->H, op->k);
    case TP_RES: return tr_resblock_bwd(ctx, op);
    case TP_HEAD: return tr_head_bwd(ctx, op);
    case TP_ATTN: return tr_attn_bwd(ctx, op);
    case TP_NORMCONV: return tr_normconv_bwd(ctx, op);
    case TP_DOWN: return tr_downsample_bwd(ctx, op);
    case TP_UP: return tr_upsample_bwd(ctx, op);
    case TP_RUP: return resample_up_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
    case TP_RDOWN:
      return resample_down_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
    case TP_ADD: {
      const size_t n = ctx->measure ? 0 : ctx->tr->t[op->out].n;
      float *ga = TG(ctx, op->in0), *gb = TG(ctx, op->in1);
      DO(BE(add_backward, ga, gb, TG(ctx, op->out), op->k ? 1.0f / SQRT2 : 1.0f, n));
      return SDE_OK;
    }
    case TP_CONCAT: {
      float *ga = TG(ctx, op->in0), *gb = TG(ctx, op->in1);
      DO(BE(concat_channels_backward, ga, gb, TG(ctx, op->out), B, op->C, op->C2,
                                         op->H * op->H));
      return SDE_OK;
    }
    case TP_SCALE: {
      /* s0: sigma per sample (float); out = in / sigma */
      if (ctx->measure) return SDE_OK;
      const size_t n = ctx->tr->t[op->out].n, per = n / (size_t)B;
      const float *g = TG(ctx, op->out), *sig = op->s[0];
      float *dx = TG(ctx, op->in0);
      if (!ctx->be->host_memory) { /* dx = 1·dx + (1/sigma)·g per row */
        double *a = sde_malloc((size_t)B * 2 * sizeof(double));
        if (!a) return SDE_ENOMEM;
        for (int b = 0; b < B; b++) {
          a[b] = 1.0;
          a[B + b] = 1.0 / (double)ctx->tr->sig_host[b];
        }
        int rc = BE(axpby_rows, dx, a, dx, a + B, g, B, (int64_t)per);
        free(a);
        return rc;
      }
      for (int b = 0; b < B; b++)
        for (size_t i = 0; i < per; i++) dx[b * per + i] += g[b * per + i] / sig[b];
      return SDE_OK;
    }
  }
  return sde_fail(SDE_EINVAL, "internal: tape op %d", op->kind);
}

/* The training forward (mirrors forward_walk). */
static int train_walk(fwd_ctx *ctx, const float *x, const float *labels, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_module *mods = net->modules;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  int mi = 0, rc;
  tr->n_ops = tr->n_t = 0;

  /* time embedding */
  const int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
  const size_t tn = (size_t)B * 4 * nf;
  tr->emb = ws_alloc(ctx, (size_t)B * embed_dim);
  tr->u = NULL;
  tr->mod_fourier = tr->mod_lin0 = -1;
  tr->u = ws_alloc(ctx, (size_t)B); /* ln sigma (Fourier) or the labels, backend memory */
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    if (!ctx->measure) {
      float *u = sde_malloc((size_t)B * sizeof(float));
      if (!u) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) u[b] = logf(labels[b]);
      rc = ncsnpp_to_backend(ctx, tr->u, u, (size_t)B);
      free(u);
      if (rc) return rc;
    }
    RUN(BE(fourier_embedding_forward, tr->emb, tr->u, P(ctx, &mods[mi], 0), B, nf));
    tr->mod_fourier = mi++;
  } else {
    if ((rc = ncsnpp_to_backend(ctx, tr->u, labels, (size_t)B))) return rc;
    RUN(BE(timestep_embedding_forward, tr->emb, tr->u, B, nf));
  }
  ctx->temb_act = NULL;
  tr->t1 = tr->t1a = tr->t2 = tr->ta = tr->dta = NULL;
  if (c->conditional) {
    tr->t1 = ws_alloc(ctx, tn);
    tr->t1a = ws_alloc(ctx, tn);
    tr->t2 = ws_alloc(ctx, tn);
    tr->ta = ws_alloc(ctx, tn);
    tr->dta = ws_alloc(ctx, tn);
    tr->mod_lin0 = mi;
    RUN(BE(linear_forward, tr->t1, tr->emb, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B,
                              embed_dim, 4 * nf));
    DO(BE(silu_forward, tr->t1a, tr->t1, tn));
    RUN(BE(linear_forward, tr->t2, tr->t1a, P(ctx, &mods[mi + 1], 0), P(ctx, &mods[mi + 1], 1),
                              B, 4 * nf, 4 * nf));
    DO(BE(silu_forward, tr->ta, tr->t2, tn));
    mi += 2;
    ctx->temb_act = tr->ta;
  }

  /* input */
  const int S = c->image_size;
  const size_t x_n = (size_t)B * C0 * S * S;
  const int xin = tt_new(ctx, x_n);
  tr->x_id = xin;
  if (!ctx->measure) {
    float *xi = TD(ctx, xin);
    if (c->centered || !ctx->be->host_memory) {
      if ((rc = ctx->be->upload(ctx->be, xi, x, x_n * sizeof(float)))) return rc;
      if (!c->centered && (rc = ncsnpp_input_affine(ctx, xi, xi, B, C0, S * S))) return rc;
    } else {
      for (size_t i = 0; i < x_n; i++) xi[i] = 2.0f * x[i] - 1.0f;
    }
  } else if ((rc = ncsnpp_input_affine(ctx, NULL, NULL, B, C0, S * S))) { /* its scratch */
    return rc;
  }

  int hs[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int n_hs = 0, h = -1, res = S;
  int input_pyramid = xin;
  if ((rc = tr_conv(ctx, &mods[mi], xin, C0, nf, S, 3, &hs[0]))) return rc;
  mi++;
  n_hs = 1;
  int ch = nf;
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      const net_module *m = &mods[mi++];
      if ((rc = tr_resblock(ctx, m, hs[n_hs - 1], &h))) return rc;
      ch = m->out_ch;
      if (mi < net->n_modules && mods[mi].kind == M_ATTN && mods[mi].res == res &&
          is_attn_res(c, res)) {
        if ((rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
      }
      hs[n_hs++] = h;
    }
    if (l != L - 1) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = tr_downsample(ctx, m, hs[n_hs - 1], &h);
      else rc = tr_resblock(ctx, m, hs[n_hs - 1], &h);
      if (rc) return rc;
      res /= 2;
      const size_t hn = (size_t)B * ch * res * res;
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        int ip;
        if ((rc = tr_resample(ctx, 0, input_pyramid, C0, 2 * res, &ip))) return rc;
        input_pyramid = ip;
        const net_module *cm = &mods[mi++];
        int hc;
        if ((rc = tr_conv(ctx, cm, ip, C0, ch, res, 1, &hc))) return rc;
        if (c->progressive_combine == SDE_COMBINE_SUM) {
          if ((rc = tr_add(ctx, hc, h, hn, 0, &hc))) return rc;
        } else {
          if ((rc = tr_concat(ctx, hc, h, ch, ch, res, &hc))) return rc;
          ch *= 2;
        }
        hs[n_hs++] = hc;
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        const net_module *pm = &mods[mi++];
        int ip;
        if ((rc = tr_downsample(ctx, pm, input_pyramid, &ip))) return rc;
        if ((rc = tr_add(ctx, ip, h, hn, c->skip_rescale, &ip))) return rc;
        input_pyramid = ip;
        hs[n_hs++] = ip;
      } else {
        hs[n_hs++] = h;
      }
    }
  }

  if (c->num_classes > 0) { /* classifier: head on the last down-path tensor */
    int logits;
    if ((rc = tr_head(ctx, &mods[mi], &mods[mi + 1], hs[n_hs - 1], &logits))) return rc;
    mi += 2;
    if (mi != net->n_modules)
      return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);
    tr->out_id = logits;
    tr->out_n = (size_t)B * c->num_classes;
    RUN(ctx->be->download(ctx->be, out, TD(ctx, logits), tr->out_n * sizeof(float)));
    return SDE_OK;
  }

  /* middle */
  if ((rc = tr_resblock(ctx, &mods[mi++], hs[n_hs - 1], &h))) return rc;
  if ((rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
  if ((rc = tr_resblock(ctx, &mods[mi++], h, &h))) return rc;

  /* up path */
  int pyramid = -1;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      const net_module *m = &mods[mi++];
      n_hs--;
      int cat;
      if ((rc = tr_concat(ctx, h, hs[n_hs], ch, net->hs_ch[n_hs], res, &cat))) return rc;
      if ((rc = tr_resblock(ctx, m, cat, &h))) return rc;
      ch = m->out_ch;
    }
    if (is_attn_res(c, res) && (rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &pyramid))) return rc;
        mi += 2;
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        int up, ph;
        if ((rc = tr_resample(ctx, 1, pyramid, C0, res / 2, &up))) return rc;
        if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &ph))) return rc;
        mi += 2;
        if ((rc = tr_add(ctx, up, ph, (size_t)B * C0 * res * res, 0, &pyramid))) return rc;
      } else { /* residual */
        int up;
        if ((rc = tr_upsample(ctx, &mods[mi++], pyramid, &up))) return rc;
        if ((rc = tr_add(ctx, up, h, (size_t)B * ch * res * res, c->skip_rescale, &pyramid)))
          return rc;
        h = pyramid;
      }
    }
    if (l != 0) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = tr_upsample(ctx, m, h, &h);
      else rc = tr_resblock(ctx, m, h, &h);
      if (rc) return rc;
      res *= 2;
    }
  }
  if (n_hs != 0) return sde_fail(SDE_EINVAL, "internal: %d skip tensors left", n_hs);
  int final;
  if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
    final = pyramid;
  } else {
    if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &final))) return rc;
    mi += 2;
  }
  if (mi != net->n_modules)
    return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);
  if (c->scale_by_sigma) {
    tape_op *op = tp_push(ctx, TP_SCALE, NULL);
    op->in0 = final;
    float *sig = ws_alloc(ctx, (size_t)B);
    op->s[0] = sig;
    int so = op->out = tt_new(ctx, x_n);
    if (!ctx->measure) {
      const size_t per = (size_t)C0 * S * S;
      const int fourier = c->embedding_type == SDE_EMBED_FOURIER;
      double *sd = fourier ? NULL : sde_malloc((size_t)B * sizeof(double));
      if (!fourier && !sd) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) {
        if (fourier) {
          tr->sig_host[b] = labels[b];
        } else {
          long idx = (long)labels[b];
          if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N) {
            free(sd);
            return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                            (double)labels[b], c->sde.N);
          }
          sd[b] = net->sigmas[idx];
          tr->sig_host[b] = (float)sd[b];
        }
      }
      if (ctx->be->host_memory) memcpy(sig, tr->sig_host, (size_t)B * sizeof(float));
      rc = ncsnpp_divide_rows(ctx, TD(ctx, so), TD(ctx, final), labels, sd, B, per);
      free(sd);
      if (rc) return rc;
    }
    final = so;
  }
  tr->out_id = final;
  tr->out_n = x_n;
  RUN(ctx->be->download(ctx->be, out, TD(ctx, final), x_n * sizeof(float)));
  return SDE_OK;
}

static int train_backward_walk(fwd_ctx *ctx, const float *dout, float *dx) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf;
  const size_t x_n = (size_t)B * c->num_channels * c->image_size * c->image_size;
  int rc;
  if (!ctx->measure) {
    for (int i = 0; i < tr->n_t; i++) tr->t[i].touched = 0;
    if (tr->dta && (rc = ctx->be->zero(ctx->be, tr->dta, (size_t)B * 4 * nf * sizeof(float))))
      return rc;
    if ((rc = ctx->be->upload(ctx->be, TG(ctx, tr->out_id), dout, tr->out_n * sizeof(float))))
      return rc;
  }
  for (int i = tr->n_ops - 1; i >= 0; i--) {
    const tape_op *op = &tr->ops[i];
    if (!ctx->measure && !tr->t[op->out].touched) continue; /* no gradient reaches it */
    if ((rc = tape_backward_op(ctx, op))) return rc;
  }
  if (dx && !ctx->measure && tr->t[tr->x_id].touched) {
    const float *g = tr->t[tr->x_id].grad, k = c->centered ? 1.0f : 2.0f;
    float *gh = NULL;
    if (!ctx->be->host_memory) { /* dx is host memory */
      if (!(gh = sde_malloc(x_n * sizeof(float)))) return SDE_ENOMEM;
      if ((rc = ctx->be->download(ctx->be, gh, g, x_n * sizeof(float)))) {
        free(gh);
        return rc;
      }
      g = gh;
    }
    for (size_t i = 0; i < x_n; i++) dx[i] += k * g[i];
    free(gh);
  }
  /* time embedding: ta = act(t2), t2 = Dense_1(t1a), t1a = act(t1), t1 = Dense_0(emb) */
  if (c->conditional && ctx->dparams) {
    const size_t tn = (size_t)B * 4 * nf;
    const int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
    const net_module *l0 = &net->modules[tr->mod_lin0], *l1 = l0 + 1;
    size_t mark = ctx->top;
    float *d2 = zalloc(ctx, tn), *d1a = zalloc(ctx, tn), *d1 = zalloc(ctx, tn);
    float *demb = zalloc(ctx, (size_t)B * embed_dim);
    DO(BE(silu_backward, d2, tr->dta, tr->t2, tn));
    RUN(BE(linear_backward, d1a, GP(ctx, l1, 0), GP(ctx, l1, 1), d2, tr->t1a, P(ctx, l1, 0), B,
                               4 * nf, 4 * nf));
    DO(BE(silu_backward, d1, d1a, tr->t1, tn));
    RUN(BE(linear_backward, demb, GP(ctx, l0, 0), GP(ctx, l0, 1), d1, tr->emb, P(ctx, l0, 0),
                               B, embed_dim, 4 * nf));
    if (tr->mod_fourier >= 0) {
      const net_module *fm = &net->modules[tr->mod_fourier];
      RUN(BE(fourier_embedding_backward, NULL, GP(ctx, fm, 0), demb, tr->u, P(ctx, fm, 0), B,
                                            nf));
    }
    ctx->top = mark;
  }
  return SDE_OK;
}

static void train_ctx_init(fwd_ctx *ctx, const sde_ncsnpp *net, struct sde_ncsnpp_train *tr,
                           int B, int measure) {
  memset(ctx, 0, sizeof *ctx);
  ctx->net = net;
  ctx->be = net_be(net);
  ctx->B = B;
  ctx->measure = measure;
  ctx->base = measure ? NULL : tr->buf;
  ctx->tr = tr;
}

int sde_ncsnpp_train_create(const sde_ncsnpp *net, int max_batch, int with_dropout,
                            sde_ncsnpp_train **out) {
  *out = NULL;
  if (!net || max_batch < 1) return sde_fail(SDE_EINVAL, "train workspace: bad arguments");
  struct sde_ncsnpp_train *tr = sde_calloc(1, sizeof *tr);
  if (!tr) return SDE_ENOMEM;
  tr->net = net;
  tr->be = net_be(net);
  tr->max_batch = max_batch;
  tr->with_dropout = with_dropout != 0;
  float one = 1.0f;
  fwd_ctx ctx;
  /* pass 1 counts tape ops and tensors; pass 2 records them and measures the forward;
   * then the backward is measured on top of the forward region */
  train_ctx_init(&ctx, net, tr, max_batch, 1);
  ctx.dropout = tr->with_dropout ? 0.5f : 0.0f;
  int rc = train_walk(&ctx, NULL, &one, NULL);
  if (rc) goto fail;
  tr->cap_ops = tr->n_ops;
  tr->cap_t = tr->n_t;
  tr->ops = sde_calloc((size_t)tr->cap_ops + 1, sizeof *tr->ops);
  tr->t = sde_calloc((size_t)tr->cap_t + 1, sizeof *tr->t);
  if (!tr->ops || !tr->t) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  train_ctx_init(&ctx, net, tr, max_batch, 1);
  ctx.dropout = tr->with_dropout ? 0.5f : 0.0f;
  if ((rc = train_walk(&ctx, NULL, &one, NULL))) goto fail;
  ctx.dparams = (float *)&one; /* measure the weight-gradient path too */
  if ((rc = train_backward_walk(&ctx, NULL, NULL))) goto fail;
  tr->floats = ctx.peak + 16;
  tr->sig_host = sde_calloc((size_t)max_batch, sizeof(float));
  if (!tr->sig_host) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  if ((rc = tr->be->alloc(tr->be, tr->floats * sizeof(float), (void **)&tr->buf))) goto fail;
  *out = tr;
  return SDE_OK;
fail:
  sde_ncsnpp_train_free(tr);
  return rc;
}

void sde_ncsnpp_train_free(sde_ncsnpp_train *tw) {
  if (!tw) return;
  tw->be->free(tw->be, tw->buf);
  tw->be->free(tw->be, tw->dgrad);
  free(tw->sig_host);
  free(tw->ops);
  free(tw->t);
  free(tw);
}

size_t sde_ncsnpp_train_bytes(const sde_ncsnpp_train *tw) {
  return tw ? tw->floats * sizeof(float) : 0;
}

int sde_ncsnpp_train_forward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, int B, const float *x,
                             const float *labels, float dropout, uint64_t seed, uint64_t stream0,
                             float *out) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (B < 1 || B > tw->max_batch)
    return sde_fail(SDE_EINVAL, "train forward: batch %d outside 1..%d", B, tw->max_batch);
  if (!x || !labels || !out) return sde_fail(SDE_EINVAL, "train forward: NULL argument");
  if (!(dropout >= 0.0f && dropout < 1.0f))
    return sde_fail(SDE_EINVAL, "dropout %g outside [0, 1)", (double)dropout);
  if (dropout > 0.0f && !tw->with_dropout)
    return sde_fail(SDE_EINVAL, "dropout needs a workspace made with_dropout");
  if (tw->be != net_be(net))
    return sde_fail(SDE_EINVAL, "train workspace made for the %s backend", tw->be->name);
  int rc = ncsnpp_check_labels(net, B, labels);
  if (!rc) rc = ncsnpp_sync_params(net);
  if (rc) return rc;
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, B, 0);
  ctx.dropout = dropout;
  ctx.drop_seed = seed;
  ctx.drop_stream0 = stream0;
  tw->valid = 0;
  rc = train_walk(&ctx, x, labels, out);
  if (rc) return rc;
  if (tw->n_ops != tw->cap_ops || tw->n_t != tw->cap_t || ctx.peak > tw->floats)
    return sde_fail(SDE_EINVAL, "internal: training tape does not match its measure");
  tw->B = B;
  tw->fwd_top = ctx.top;
  tw->valid = 1;
  return SDE_OK;
}

int sde_ncsnpp_train_backward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, const float *dout,
                              float *dparams, float *dx) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (!tw->valid) return sde_fail(SDE_EINVAL, "train backward without a forward");
  if (!dout) return sde_fail(SDE_EINVAL, "train backward: NULL dout");
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, tw->B, 0);
  ctx.top = ctx.peak = tw->fwd_top;
  ctx.dparams = dparams;
  ctx.temb_act = tw->ta;
  const sde_backend *be = tw->be;
  const size_t pbytes = (size_t)net->num_floats * sizeof(float);
  int rc = SDE_OK;
  if (dparams && !be->host_memory) {
    /* device: gradients into a backend buffer, then added into the host dparams */
    if (!tw->dgrad) rc = be->alloc(be, pbytes ? pbytes : 4, (void **)&tw->dgrad);
    if (!rc) rc = be->zero(be, tw->dgrad, pbytes);
    if (rc) return rc;
    ctx.dparams = tw->dgrad;
  }
  rc = train_backward_walk(&ctx, dout, dx);
  if (!rc && ctx.peak > tw->floats)
    rc = sde_fail(SDE_EINVAL, "internal: backward outgrew its workspace");
  if (!rc && dparams && !be->host_memory) {
    float *g = sde_malloc(pbytes ? pbytes : 4);
    if (!g) return SDE_ENOMEM;
    rc = be->download(be, g, tw->dgrad, pbytes);
    for (int64_t i = 0; !rc && i < net->num_floats; i++) dparams[i] += g[i];
    free(g);
  }
  return rc;
}

int sde_ncsnpp_train_backward_dev(const sde_ncsnpp *net, sde_ncsnpp_train *tw, const float *dout,
                                  float **dgrad) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (!tw->valid) return sde_fail(SDE_EINVAL, "train backward without a forward");
  if (!dout || !dgrad) return sde_fail(SDE_EINVAL, "train backward: NULL dout or dgrad");
  const sde_backend *be = tw->be;
  if (be->host_memory) return sde_fail(SDE_EINVAL, "train_backward_dev on the %s backend", be->name);
  const size_t pbytes = (size_t)net->num_floats * sizeof(float);
  int rc = SDE_OK;
  if (!tw->dgrad) rc = be->alloc(be, pbytes ? pbytes : 4, (void **)&tw->dgrad);
  if (!rc) rc = be->zero(be, tw->dgrad, pbytes);
  if (rc) return rc;
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, tw->B, 0);
  ctx.top = ctx.peak = tw->fwd_top;
  ctx.dparams = tw->dgrad;
  ctx.temb_act = tw->ta;
  rc = train_backward_walk(&ctx, dout, NULL);
  if (!rc && ctx.peak > tw->floats)
    rc = sde_fail(SDE_EINVAL, "internal: backward outgrew its workspace");
  *dgrad = rc ? NULL : tw->dgrad;
  return rc;
}
