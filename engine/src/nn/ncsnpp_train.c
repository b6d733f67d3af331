/* NCSN++ / DDPM++ training: the plan (ncsnpp_internal.h) run forward with every activation
 * kept, then backward in reverse. Per op kind: the training forward, which saves what its
 * backward needs, the backward beside it, and the sizes of both.
 *
 * The training forward computes the same ops with the same operand order as inference, so
 * the same numbers with dropout off; it never reuses a buffer: every slot of the plan gets
 * its own storage and a gradient buffer. The backward runs the ops in reverse; a slot's
 * gradient is complete when its producer is reached because every consumer comes later in
 * the plan. Gradients are zeroed on first touch.
 *
 * Workspace layout (one float buffer): [time embedding | forward: per op its saved
 * intermediates, its output slot and that slot's gradient | temporaries of the largest op,
 * forward or backward]. Its size follows from the plan at max_batch; smaller batches take a
 * prefix of every region. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "ncsnpp_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"
#include "scoresde/rng.h"
#include "scoresde/train.h"

typedef struct {
  float *s[16];       /* saved intermediates (per kind, see the train functions) */
} tape_op;

typedef struct {
  float *data, *grad;
  size_t n;
  int touched;        /* grad zeroed (backward) */
} tape_slot;

struct sde_ncsnpp_train {
  const sde_ncsnpp *net;
  int max_batch, with_dropout, by_batch; /* the flags of sde_ncsnpp_train_create */
  size_t floats;
  float *buf;
  tape_op *ops;                              /* [n_ops] of the plan */
  tape_slot *t;                              /* [n_slots] of the plan */
  /* the last forward */
  int B, valid;
  size_t fwd_top;
  float *u, *emb, *t1, *t1a, *t2, *ta, *dta; /* time embedding chain */
  const sde_backend *be;                     /* buf, dgrad live there (the net's at creation) */
  float *sig_host;                           /* [max_batch] scale_by_sigma sigmas */
  float *dgrad;                              /* device backends: parameter gradients */
};

/* data and gradient storage of slot s at this batch */
static void slot_alloc(fwd_ctx *ctx, int s) {
  tape_slot *t = &ctx->tr->t[s];
  t->n = (size_t)ctx->B * (size_t)slot_floats(&ctx->net->plan.slots[s]);
  t->data = ws_alloc(ctx, t->n);
  t->grad = ws_alloc(ctx, t->n);
  t->touched = 0;
}

static float *TD(fwd_ctx *ctx, int s) { return ctx->tr->t[s].data; }

/* The gradient of slot s for an op that can store instead of add: *store = 1 (and no
 * zeroing) on first use. */
static float *TG_or_store(fwd_ctx *ctx, int s, int *store) {
  tape_slot *t = &ctx->tr->t[s];
  *store = !t->touched;
  t->touched = 1;
  return t->grad;
}

/* The gradient of slot s, zeroed on first use. */
static float *TG(fwd_ctx *ctx, int s) {
  int first;
  float *g = TG_or_store(ctx, s, &first);
  if (first) ctx->be->zero(ctx->be, g, ctx->tr->t[s].n * sizeof(float));
  return g;
}

/* parameter gradient k of module mi, NULL when not wanted */
static float *GP(const fwd_ctx *ctx, int mi, int k) {
  if (!ctx->dparams) return NULL;
  return ctx->dparams + ctx->net->params[ctx->net->modules[mi].first_param + k].offset;
}

static float *zalloc(fwd_ctx *ctx, size_t n) {
  float *p = ws_alloc(ctx, n);
  ctx->be->zero(ctx->be, p, n * sizeof(float));
  return p;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* conv2d_backward with dinp added to (store = 0) or overwritten (store = 1: no zeroing
 * pass where the backend stores; the same bits) */
static int conv_bwd(fwd_ctx *ctx, int store, float *dinp, float *dw, float *db, const float *dout,
                    const float *inp, const float *w, const sde_nn_conv2d_shape *s,
                    float *scratch) {
  if (store && dinp && ctx->be->conv2d_backward_store)
    return BE(conv2d_backward_store, dinp, dw, db, dout, inp, w, s, scratch);
  if (store && dinp)
    TRY(ctx->be->zero(ctx->be, dinp, (size_t)s->B * s->C_in * s->H * s->W * sizeof(float)));
  return BE(conv2d_backward, dinp, dw, db, dout, inp, w, s, scratch);
}

static int conv_same_bwd(fwd_ctx *ctx, int store, float *dinp, float *dw, float *db,
                         const float *dout, const float *inp, const float *w, int Cin, int Cout,
                         int H, int k) {
  const sde_nn_conv2d_shape s = ncsnpp_conv_shape(ctx, Cin, Cout, H, k);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  TRY(conv_bwd(ctx, store, dinp, dw, db, dout, inp, w, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

/* a = silu(GN(x)) [B, C, HW] with mean, rstd [B, G] saved. Where the backend's fused backward
 * recomputes GN(x), one pass and *g = NULL; else g = GN(x) into the workspace, then SiLU. */
static int gn_silu_fwd(fwd_ctx *ctx, float **g, float *a, float *mean, float *rstd,
                       const float *x, const float *gamma, const float *beta, int C, int HW) {
  const int B = ctx->B, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * HW;
  if (ctx->be->groupnorm_silu_forward_train && ctx->be->groupnorm_silu_backward) {
    *g = NULL;
    return BE(groupnorm_silu_forward_train, a, mean, rstd, x, gamma, beta, B, C, HW, G,
              SDE_NN_GROUPNORM_EPS);
  }
  *g = ws_alloc(ctx, n);
  TRY(BE(groupnorm_forward, *g, mean, rstd, x, gamma, beta, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  BE(silu_forward, a, *g, n);
  return SDE_OK;
}

/* Backward of a = silu(GN(x)) [B, C, HW]: dx += (dgamma, dbeta too), from da and the saved
 * g = GN(x), mean, rstd. One fused op where the backend has it (it recomputes g from x and
 * reads neither g nor a dg plane), else SiLU backward into dg then GroupNorm backward. */
static int gn_silu_bwd(fwd_ctx *ctx, float *dx, float *dgamma, float *dbeta, const float *da,
                       const float *x, const float *g, const float *mean, const float *rstd,
                       const float *gamma, const float *beta, int C, int HW) {
  const int B = ctx->B, G = sde_nn_groupnorm_groups(C);
  if (ctx->be->groupnorm_silu_backward)
    return BE(groupnorm_silu_backward, dx, dgamma, dbeta, da, x, mean, rstd, gamma, beta, B, C,
              HW, G);
  const size_t n = (size_t)B * C * HW, mark = ctx->top;
  float *dg = zalloc(ctx, n);
  BE(silu_backward, dg, da, g, n);
  int rc = BE(groupnorm_backward, dx, dgamma, dbeta, dg, x, mean, rstd, gamma, B, C, HW, G);
  ctx->top = mark;
  return rc;
}

static int resample_up_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) return BE(fir_upsample2x_backward, dinp, dout, ctx->B, C, H, H);
  return BE(upsample_nearest2x_backward, dinp, dout, ctx->B, C, H, H);
}

static int resample_down_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) return BE(fir_downsample2x_backward, dinp, dout, ctx->B, C, H, H);
  return BE(avgpool2x_backward, dinp, dout, ctx->B, C, H, H);
}

/* ---- per op kind: train forward, backward, sizes ---------------------------------------------
 * forward(ctx, op, tp): slot op->out (allocated) from op->in0 (in1), saving into tp->s;
 * backward(ctx, op, tp): gradients of the inputs and parameters from that of op->out;
 * sizes(net, op, B, with_dropout, &saved, &temp): floats kept for the backward, and the most
 * temporaries either direction takes above ctx->top. */

typedef int (*op_train_fn)(fwd_ctx *ctx, const net_op *op, tape_op *tp);
typedef int (*op_backward_fn)(fwd_ctx *ctx, const net_op *op, const tape_op *tp);
typedef void (*op_sizes_fn)(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                            size_t *saved, size_t *temp);

/* OP_CONV: [B,C,H,H] -> [B,C2,H,H] */
static int conv_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  return ncsnpp_conv_same(ctx, TD(ctx, op->out), TD(ctx, op->in0), P(ctx, op->module, 0),
                          P(ctx, op->module, 1), op->C, op->C2, op->H, op->k);
}

static int conv_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  /* conv_in of a training step: the input gradient of the network input is not wanted */
  const int skip = ctx->no_dx && op->in0 == ctx->net->plan.input_slot;
  const float *gout = TG(ctx, op->out);
  int store = 0;
  float *dx = skip ? NULL : TG_or_store(ctx, op->in0, &store);
  return conv_same_bwd(ctx, store, dx, GP(ctx, op->module, 0), GP(ctx, op->module, 1), gout,
                       TD(ctx, op->in0), P(ctx, op->module, 0), op->C, op->C2, op->H, op->k);
}

static void conv_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                       size_t *saved, size_t *temp) {
  (void)net, (void)with_dropout;
  *saved = 0;
  *temp = ncsnpp_conv_same_scratch(B, op->C, op->C2, op->H, op->k);
}

/* OP_RESBLOCK. Saved: s0 g0 = GN_0(x), s1 a0 = act(g0), s2 mean0, s3 rstd0, s4 hr (resampled
 * a0 or a0), s5 xr (resampled x or x), s6 h1 = Conv_0 + Dense_0, s7 g1 = GN_1(h1), s8 mean1,
 * s9 rstd1, s10 a1 = act(g1), s11 d1 = dropout(a1) (the Conv_1 input), s12 mask (NULL: no
 * dropout); g0, g1 NULL where gn_silu_fwd keeps no GN output. */
static int resblock_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const int G0 = sde_nn_groupnorm_groups(Cin), G1 = sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  const float *gn0_w = P(ctx, mi, 0), *gn0_b = P(ctx, mi, 1), *conv0_w = P(ctx, mi, 2),
              *conv0_b = P(ctx, mi, 3), *dense0_w = P(ctx, mi, 4), *dense0_b = P(ctx, mi, 5),
              *gn1_w = P(ctx, mi, 6), *gn1_b = P(ctx, mi, 7), *conv1_w = P(ctx, mi, 8),
              *conv1_b = P(ctx, mi, 9);
  const float *skip_w = m->shortcut ? P(ctx, mi, 10) : NULL,
              *skip_b = m->shortcut ? P(ctx, mi, 11) : NULL;
  const float *x = TD(ctx, op->in0);
  float *g0, *a0 = ws_alloc(ctx, in_n);
  float *mean0 = ws_alloc(ctx, (size_t)B * G0), *rstd0 = ws_alloc(ctx, (size_t)B * G0);
  TRY(gn_silu_fwd(ctx, &g0, a0, mean0, rstd0, x, gn0_w, gn0_b, Cin, H * H));
  float *hr = a0;
  float *xr = (float *)x;
  if (m->up || m->down) {
    hr = ws_alloc(ctx, r_n);
    xr = ws_alloc(ctx, r_n);
    if (m->up) {
      TRY(ncsnpp_resample_up(ctx, hr, a0, Cin, H));
      TRY(ncsnpp_resample_up(ctx, xr, x, Cin, H));
    } else {
      TRY(ncsnpp_resample_down(ctx, hr, a0, Cin, H));
      TRY(ncsnpp_resample_down(ctx, xr, x, Cin, H));
    }
  }
  float *h1 = ws_alloc(ctx, o_n);
  float *g1 = NULL, *a1 = ws_alloc(ctx, o_n);
  float *mean1 = ws_alloc(ctx, (size_t)B * G1), *rstd1 = ws_alloc(ctx, (size_t)B * G1);
  float *d1 = a1, *mask = NULL;
  if (ctx->tr->with_dropout) {
    float *mk = ws_alloc(ctx, o_n), *dd = ws_alloc(ctx, o_n);
    if (ctx->dropout > 0.0f) {
      mask = mk;
      d1 = dd;
    }
  }
  float *save[13] = {g0, a0, mean0, rstd0, hr, xr, h1, g1, mean1, rstd1, a1, d1, mask};
  memcpy(tp->s, save, sizeof save);
  size_t mark = ctx->top;
  /* h1 = Conv_0(hr) + Dense_0(act(temb)) */
  float *proj = NULL;
  if (c->conditional) {
    proj = ws_alloc(ctx, (size_t)B * Cout);
    TRY(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
  }
  TRY(ncsnpp_conv_same_then(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3, proj, NULL, 0));
  TRY(gn_silu_fwd(ctx, &g1, a1, mean1, rstd1, h1, gn1_w, gn1_b, Cout, (int)out_hw));
  tp->s[7] = g1;
  if (mask) {
    /* row b: uniforms of (drop_seed, drop_stream0 + b, 1000 + module) -> 0 or 1/(1-p) */
    const float p = ctx->dropout, keep = 1.0f / (1.0f - p);
    const size_t per = (size_t)Cout * out_hw;
    const uint32_t step = 1000u + (uint32_t)mi;
    TRY(BE(randu_rows, mask, ctx->drop_seed, ctx->drop_stream0, step, B, (int64_t)per));
    BE(dropout_mask, mask, p, keep, o_n);
    BE(mul, d1, a1, mask, o_n);
  }
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, o_n);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN)
      TRY(ncsnpp_conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1));
    else
      TRY(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    xs = xc;
  }
  /* out = join(shortcut, Conv_1(d1)) */
  TRY(ncsnpp_conv_same_then(ctx, TD(ctx, op->out), d1, conv1_w, conv1_b, Cout, Cout, Ho, 3, NULL,
                            xs, c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

static int resblock_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  float *const *s = tp->s;
  const float *x = TD(ctx, op->in0), *gout = TG(ctx, op->out);
  size_t mark = ctx->top;
  const float js = c->skip_rescale ? 1.0f / SQRT2 : 1.0f;
  /* dj = gout·js. With an identity shortcut whose input gradient is stored here first, dj is
   * computed in that gradient itself (read by the convs' backward before GN_0's adds to it) */
  const int identity = !m->shortcut && !m->up && !m->down;
  int dx_store = 0;
  float *dx_identity = identity ? TG_or_store(ctx, op->in0, &dx_store) : NULL;
  float *dj = dx_store ? dx_identity : ws_alloc(ctx, o_n);
  BE(scale, dj, gout, js, o_n);
  /* Conv_1 and the shortcut conv have the same bias gradient, Σ dj: summed once into db1 */
  const int biggan_skip = m->shortcut && c->resblock_type == SDE_RESBLOCK_BIGGAN;
  float *db1 = GP(ctx, mi, 9) && biggan_skip ? zalloc(ctx, Cout) : GP(ctx, mi, 9);
  /* h2 = Conv_1(d1) */
  float *dd1 = ws_alloc(ctx, o_n);
  TRY(conv_same_bwd(ctx, 1, dd1, GP(ctx, mi, 8), db1, dj, s[11], P(ctx, mi, 8), Cout, Cout, Ho, 3));
  if (db1 != GP(ctx, mi, 9)) {
    BE(accumulate, GP(ctx, mi, 9), db1, Cout);
    BE(accumulate, GP(ctx, mi, 11), db1, Cout);
  }
  if (s[12]) BE(mul, dd1, dd1, s[12], o_n);
  /* dh1, and dproj = its sums over the plane (the time embedding's bias gradient) */
  float *dh1 = ws_alloc(ctx, o_n), *dproj = c->conditional ? ws_alloc(ctx, (size_t)B * Cout) : NULL;
  if (ctx->be->groupnorm_silu_backward_store) {
    TRY(BE(groupnorm_silu_backward_store, dh1, GP(ctx, mi, 6), GP(ctx, mi, 7), dproj, dd1, s[6],
           s[8], s[9], P(ctx, mi, 6), P(ctx, mi, 7), B, Cout, (int)out_hw,
           sde_nn_groupnorm_groups(Cout)));
  } else {
    TRY(ctx->be->zero(ctx->be, dh1, o_n * sizeof(float)));
    TRY(gn_silu_bwd(ctx, dh1, GP(ctx, mi, 6), GP(ctx, mi, 7), dd1, s[6], s[7], s[8], s[9],
                    P(ctx, mi, 6), P(ctx, mi, 7), Cout, (int)out_hw));
    if (dproj) {
      TRY(ctx->be->zero(ctx->be, dproj, (size_t)B * Cout * sizeof(float)));
      BE(add_channel_bias_backward, dproj, dh1, B, Cout, (int)out_hw);
    }
  }
  /* Conv_0's bias gradient is Σ_b dproj, Dense_0's: summed once into db0 */
  float *db0 = GP(ctx, mi, 3);
  if (c->conditional) {
    if (db0) db0 = zalloc(ctx, Cout);
    TRY(BE(linear_backward, ctx->tr->dta, GP(ctx, mi, 4), db0, dproj, ctx->temb_act,
           P(ctx, mi, 4), B, 4 * c->nf, Cout));
    if (db0) {
      BE(accumulate, GP(ctx, mi, 5), db0, Cout);
      BE(accumulate, GP(ctx, mi, 3), db0, Cout);
    }
  }
  float *dhr = ws_alloc(ctx, r_n);
  TRY(conv_same_bwd(ctx, 1, dhr, GP(ctx, mi, 2), c->conditional ? NULL : db0, dh1, s[4],
                    P(ctx, mi, 2), Cin, Cout, Ho, 3));
  float *dx, *da0 = dhr;
  if (m->up || m->down) {
    float *dxr = dj; /* identity shortcut: same shape */
    if (biggan_skip) {
      dxr = ws_alloc(ctx, r_n);
      TRY(conv_same_bwd(ctx, 1, dxr, GP(ctx, mi, 10), NULL, dj, s[5], P(ctx, mi, 10), Cin, Cout,
                        Ho, 1));
    } else if (m->shortcut) {
      dxr = zalloc(ctx, r_n);
      TRY(BE(nin_backward, dxr, GP(ctx, mi, 10), GP(ctx, mi, 11), dj, s[5], P(ctx, mi, 10), B,
             Cin, (int)out_hw, Cout));
    }
    dx = TG(ctx, op->in0);
    da0 = zalloc(ctx, in_n);
    if (m->up) {
      TRY(resample_up_bwd(ctx, da0, dhr, Cin, H));
      TRY(resample_up_bwd(ctx, dx, dxr, Cin, H));
    } else {
      TRY(resample_down_bwd(ctx, da0, dhr, Cin, H));
      TRY(resample_down_bwd(ctx, dx, dxr, Cin, H));
    }
  } else if (identity) { /* dx = dj (computed there when stored) or += dj */
    dx = dx_identity;
    if (!dx_store) BE(accumulate, dx, dj, in_n);
  } else { /* the shortcut's input gradient straight into dx: stored there if it is the first */
    int store;
    dx = TG_or_store(ctx, op->in0, &store);
    if (biggan_skip) {
      TRY(conv_same_bwd(ctx, store, dx, GP(ctx, mi, 10), NULL, dj, s[5], P(ctx, mi, 10), Cin,
                        Cout, Ho, 1));
    } else {
      if (store) TRY(ctx->be->zero(ctx->be, dx, in_n * sizeof(float)));
      TRY(BE(nin_backward, dx, GP(ctx, mi, 10), GP(ctx, mi, 11), dj, s[5], P(ctx, mi, 10), B,
             Cin, (int)out_hw, Cout));
    }
  }
  TRY(gn_silu_bwd(ctx, dx, GP(ctx, mi, 0), GP(ctx, mi, 1), da0, x, s[0], s[2], s[3],
                  P(ctx, mi, 0), P(ctx, mi, 1), Cin, H * H));
  ctx->top = mark;
  return SDE_OK;
}

static void resblock_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                           size_t *saved, size_t *temp) {
  const net_module *m = &net->modules[op->module];
  const int Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t G0 = (size_t)B * sde_nn_groupnorm_groups(Cin),
               G1 = (size_t)B * sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, o_n = (size_t)B * Cout * Ho * Ho,
               r_n = (size_t)B * Cin * Ho * Ho;
  const int resampled = m->up || m->down;
  *saved = 2 * ws_round(in_n) + 2 * ws_round(G0) + (resampled ? 2 * ws_round(r_n) : 0) +
           3 * ws_round(o_n) + 2 * ws_round(G1) + (with_dropout ? 2 * ws_round(o_n) : 0);
  const size_t conv0 = ncsnpp_conv_same_scratch(B, Cin, Cout, Ho, 3),
               conv1 = ncsnpp_conv_same_scratch(B, Cout, Cout, Ho, 3),
               conv2 = m->shortcut && net->config.resblock_type == SDE_RESBLOCK_BIGGAN
                           ? ncsnpp_conv_same_scratch(B, Cin, Cout, Ho, 1)
                           : 0;
  const size_t proj = net->config.conditional ? ws_round((size_t)B * Cout) : 0;
  /* forward: proj and Conv_0; xc and the shortcut conv; Conv_1's output before the join
   * (where not fused) and its scratch */
  size_t fwd = max_size(proj + conv0, proj + ws_round(o_n) + conv2);
  fwd = max_size(fwd, proj + 2 * ws_round(o_n) + conv1);
  /* backward: dj, db1, dd1 and Conv_1; dg1 dh1 dproj db0 dhr and Conv_0; dxr and the shortcut
   * conv; da0 dg0 */
  const size_t base = 4 * ws_round(o_n) + proj + ws_round(r_n) + 2 * ws_round(Cout);
  const size_t dxr = m->shortcut ? ws_round(r_n) : 0;
  size_t bwd = max_size(2 * ws_round(o_n) + ws_round(Cout) + conv1, base + conv0);
  bwd = max_size(bwd, base + dxr + conv2);
  bwd = max_size(bwd, base + dxr + (resampled ? ws_round(in_n) : 0) + ws_round(in_n));
  *temp = max_size(fwd, bwd);
}

/* OP_ATTN. Saved: s0 h = GN(x), s1 mean, s2 rstd, s3 q, s4 k, s5 v, s6 att, s7 o = attention. */
static int attn_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const int mi = op->module, B = ctx->B, C = op->C, N = op->H * op->H;
  const int G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  const float *x = TD(ctx, op->in0);
  float *h = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G), *rstd = ws_alloc(ctx, (size_t)B * G);
  float *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n), *o = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  float *save[8] = {h, mean, rstd, q, k, v, att, o};
  memcpy(tp->s, save, sizeof save);
  TRY(BE(groupnorm_forward, h, mean, rstd, x, P(ctx, mi, 0), P(ctx, mi, 1), B, C, N, G,
         SDE_NN_GROUPNORM_EPS));
  TRY(BE(nin_forward, q, h, P(ctx, mi, 2), P(ctx, mi, 3), B, C, N, C));
  TRY(BE(nin_forward, k, h, P(ctx, mi, 4), P(ctx, mi, 5), B, C, N, C));
  TRY(BE(nin_forward, v, h, P(ctx, mi, 6), P(ctx, mi, 7), B, C, N, C));
  TRY(BE(attention_forward, o, att, q, k, v, B, C, N));
  size_t mark = ctx->top;
  float *p = ws_alloc(ctx, n);
  TRY(BE(nin_forward, p, o, P(ctx, mi, 8), P(ctx, mi, 9), B, C, N, C));
  ncsnpp_residual_join(ctx, TD(ctx, op->out), x, p, n, ctx->net->config.skip_rescale);
  ctx->top = mark;
  return SDE_OK;
}

static int attn_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const int mi = op->module, B = ctx->B, C = op->C, N = op->H * op->H;
  const int G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  float *const *s = tp->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  const float js = ctx->net->config.skip_rescale ? 1.0f / SQRT2 : 1.0f;
  float *dj = ws_alloc(ctx, n);
  BE(scale, dj, gout, js, n);
  BE(accumulate, dx, dj, n);
  float *dO = zalloc(ctx, n);
  TRY(BE(nin_backward, dO, GP(ctx, mi, 8), GP(ctx, mi, 9), dj, s[7], P(ctx, mi, 8), B, C, N, C));
  float *dq = zalloc(ctx, n), *dk = zalloc(ctx, n), *dv = zalloc(ctx, n);
  float *scratch = ws_alloc(ctx, sde_nn_attention_scratch_floats(N));
  TRY(BE(attention_backward, dq, dk, dv, dO, s[6], s[3], s[4], s[5], B, C, N, scratch));
  float *dh = zalloc(ctx, n);
  TRY(BE(nin_backward, dh, GP(ctx, mi, 2), GP(ctx, mi, 3), dq, s[0], P(ctx, mi, 2), B, C, N, C));
  TRY(BE(nin_backward, dh, GP(ctx, mi, 4), GP(ctx, mi, 5), dk, s[0], P(ctx, mi, 4), B, C, N, C));
  TRY(BE(nin_backward, dh, GP(ctx, mi, 6), GP(ctx, mi, 7), dv, s[0], P(ctx, mi, 6), B, C, N, C));
  TRY(BE(groupnorm_backward, dx, GP(ctx, mi, 0), GP(ctx, mi, 1), dh, TD(ctx, op->in0), s[1],
         s[2], P(ctx, mi, 0), B, C, N, G));
  ctx->top = mark;
  return SDE_OK;
}

static void attn_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                       size_t *saved, size_t *temp) {
  (void)net, (void)with_dropout;
  const size_t N = (size_t)op->H * op->H, n = (size_t)B * op->C * N;
  const size_t G = (size_t)B * sde_nn_groupnorm_groups(op->C);
  *saved = 5 * ws_round(n) + 2 * ws_round(G) + ws_round((size_t)B * N * N);
  /* backward: dj dO dq dk dv dh and the attention scratch (the forward's p fits) */
  *temp = 6 * ws_round(n) + ws_round(sde_nn_attention_scratch_floats((int)N));
}

/* OP_NORM_CONV. Saved: s0 g = GN(x) (or NULL: gn_silu_fwd), s1 mean, s2 rstd, s3 a = act(g). */
static int norm_conv_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const int gn = op->module, cv = op->module2, B = ctx->B, C = op->C, H = op->H;
  const int G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * H * H;
  float *g, *mean = ws_alloc(ctx, (size_t)B * G), *rstd = ws_alloc(ctx, (size_t)B * G),
        *a = ws_alloc(ctx, n);
  TRY(gn_silu_fwd(ctx, &g, a, mean, rstd, TD(ctx, op->in0), P(ctx, gn, 0), P(ctx, gn, 1), C,
                  H * H));
  float *save[4] = {g, mean, rstd, a};
  memcpy(tp->s, save, sizeof save);
  return ncsnpp_conv_same(ctx, TD(ctx, op->out), a, P(ctx, cv, 0), P(ctx, cv, 1), C,
                          MOD(ctx, cv)->out_ch, H, 3);
}

static int norm_conv_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const int gn = op->module, cv = op->module2, B = ctx->B, C = op->C, H = op->H;
  const size_t n = (size_t)B * C * H * H;
  float *const *s = tp->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *da = ws_alloc(ctx, n);
  TRY(conv_same_bwd(ctx, 1, da, GP(ctx, cv, 0), GP(ctx, cv, 1), gout, s[3], P(ctx, cv, 0), C,
                    MOD(ctx, cv)->out_ch, H, 3));
  TRY(gn_silu_bwd(ctx, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), da, TD(ctx, op->in0), s[0], s[1],
                  s[2], P(ctx, gn, 0), P(ctx, gn, 1), C, H * H));
  ctx->top = mark;
  return SDE_OK;
}

static void norm_conv_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                            size_t *saved, size_t *temp) {
  (void)with_dropout;
  const size_t n = (size_t)B * op->C * op->H * op->H;
  *saved = 2 * ws_round(n) + 2 * ws_round((size_t)B * sde_nn_groupnorm_groups(op->C));
  *temp = 2 * ws_round(n) +
          ncsnpp_conv_same_scratch(B, op->C, net->modules[op->module2].out_ch, op->H, 3);
}

/* OP_DOWNSAMPLE (layerspp.Downsample) */
static int downsample_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  return ncsnpp_downsample_forward(ctx, op, TD(ctx, op->in0), TD(ctx, op->out));
}

static int downsample_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_down_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    TRY(BE(fir_conv_downsample2x_backward, dx, GP(ctx, mi, 0), GP(ctx, mi, 1), gout, x,
           P(ctx, mi, 0), B, Cin, H, H, Cout, scratch));
  } else {
    /* F.pad(x, (0,1,0,1)) then 3x3 stride-2 unpadded conv */
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1, 0};
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    TRY(BE(conv2d_backward, dx, GP(ctx, mi, 0), GP(ctx, mi, 1), gout, x, P(ctx, mi, 0), &s,
           scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* both directions of OP_DOWNSAMPLE / OP_UPSAMPLE take the module's scratch (u / du) */
static void resample_module_sizes(const sde_ncsnpp *net, const net_op *op, int B,
                                  int with_dropout, size_t *saved, size_t *temp) {
  (void)with_dropout;
  const net_module *m = &net->modules[op->module];
  *saved = op->kind == OP_UPSAMPLE && m->with_conv && !net->config.fir
               ? ws_round((size_t)B * m->in_ch * 4 * m->res * m->res)
               : 0;
  *temp = ncsnpp_resample_module_scratch(net, op, B);
}

/* OP_UPSAMPLE (layerspp.Upsample). Saved: s0 u = nearest x2 of the input (fir = false, with
 * conv). */
static int upsample_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  float *u = NULL;
  if (m->with_conv && !c->fir) u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
  tp->s[0] = u;
  if (!u) return ncsnpp_upsample_forward(ctx, op, TD(ctx, op->in0), TD(ctx, op->out));
  TRY(BE(upsample_nearest2x_forward, u, TD(ctx, op->in0), B, Cin, H, H));
  return ncsnpp_conv_same(ctx, TD(ctx, op->out), u, P(ctx, mi, 0), P(ctx, mi, 1), Cin, Cout,
                          2 * H, 3);
}

static int upsample_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int mi = op->module;
  const net_module *m = MOD(ctx, mi);
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_up_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    TRY(BE(fir_conv_upsample2x_backward, dx, GP(ctx, mi, 0), GP(ctx, mi, 1), gout, x,
           P(ctx, mi, 0), B, Cin, H, H, Cout, scratch));
  } else {
    float *du = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
    TRY(conv_same_bwd(ctx, 1, du, GP(ctx, mi, 0), GP(ctx, mi, 1), gout, tp->s[0], P(ctx, mi, 0),
                      Cin, Cout, 2 * H, 3));
    TRY(BE(upsample_nearest2x_backward, dx, du, B, Cin, H, H));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* OP_RESAMPLE_UP / OP_RESAMPLE_DOWN (parameter-free) */
static int resample_up_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  return ncsnpp_resample_up(ctx, TD(ctx, op->out), TD(ctx, op->in0), op->C, op->H);
}

static int resample_up_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  return resample_up_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
}

static int resample_down_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  return ncsnpp_resample_down(ctx, TD(ctx, op->out), TD(ctx, op->in0), op->C, op->H);
}

static int resample_down_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  return resample_down_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
}

/* OP_ADD: out = in0 + in1 (rescale 0) or (in0 + in1)/sqrt(2) (rescale 1) */
static int add_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  const size_t n = ctx->tr->t[op->out].n;
  if (op->rescale)
    ncsnpp_residual_join(ctx, TD(ctx, op->out), TD(ctx, op->in0), TD(ctx, op->in1), n, 1);
  else
    BE(add_forward, TD(ctx, op->out), TD(ctx, op->in0), TD(ctx, op->in1), 1.0f, n);
  return SDE_OK;
}

static int add_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  const size_t n = ctx->tr->t[op->out].n;
  float *ga = TG(ctx, op->in0), *gb = TG(ctx, op->in1);
  BE(add_backward, ga, gb, TG(ctx, op->out), op->rescale ? 1.0f / SQRT2 : 1.0f, n);
  return SDE_OK;
}

/* OP_CONCAT: out = [in0, in1] over channels */
static int concat_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  BE(concat_channels_forward, TD(ctx, op->out), TD(ctx, op->in0), TD(ctx, op->in1), ctx->B,
     op->C, op->C2, op->H * op->H);
  return SDE_OK;
}

static int concat_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  const int HW = op->H * op->H;
  int store_a, store_b;
  float *ga = TG_or_store(ctx, op->in0, &store_a), *gb = TG_or_store(ctx, op->in1, &store_b);
  if (ctx->be->concat_channels_backward_store) { /* (in0 = in1: a stored, then b added) */
    BE(concat_channels_backward_store, ga, gb, TG(ctx, op->out), ctx->B, op->C, op->C2, HW,
       store_a, store_b);
    return SDE_OK;
  }
  if (store_a) TRY(ctx->be->zero(ctx->be, ga, ctx->tr->t[op->in0].n * sizeof(float)));
  if (store_b) TRY(ctx->be->zero(ctx->be, gb, ctx->tr->t[op->in1].n * sizeof(float)));
  BE(concat_channels_backward, ga, gb, TG(ctx, op->out), ctx->B, op->C, op->C2, HW);
  return SDE_OK;
}

static void no_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                     size_t *saved, size_t *temp) {
  (void)net, (void)op, (void)B, (void)with_dropout;
  *saved = *temp = 0;
}

/* OP_HEAD. Saved: s0 g = GN(x) (or NULL: gn_silu_fwd), s1 mean, s2 rstd, s3 a = act(g),
 * s4 pooled [B, C]. */
static int head_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const int gn = op->module, lin = op->module2, B = ctx->B, C = op->C, H = op->H;
  const int G = sde_nn_groupnorm_groups(C), K = MOD(ctx, lin)->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  float *g, *mean = ws_alloc(ctx, (size_t)B * G), *rstd = ws_alloc(ctx, (size_t)B * G),
        *a = ws_alloc(ctx, n), *pooled = ws_alloc(ctx, (size_t)B * C);
  float *w = ws_alloc(ctx, HW); /* device: the 1/HW weights of the mean */
  TRY(gn_silu_fwd(ctx, &g, a, mean, rstd, TD(ctx, op->in0), P(ctx, gn, 0), P(ctx, gn, 1), C,
                  (int)HW));
  float *save[5] = {g, mean, rstd, a, pooled};
  memcpy(tp->s, save, sizeof save);
  if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      double acc = 0.0;
      for (size_t q = 0; q < HW; q++) acc += a[bc * HW + q];
      pooled[bc] = (float)(acc / (double)HW);
    }
  } else { /* device: the mean as a Linear [B*C, HW] -> [B*C, 1] with weights 1/HW */
    TRY(ncsnpp_fill_const(ctx, w, 1.0f / (float)HW, HW));
    TRY(BE(linear_forward, pooled, a, w, NULL, B * C, (int)HW, 1));
  }
  return BE(linear_forward, TD(ctx, op->out), pooled, P(ctx, lin, 0), P(ctx, lin, 1), B, C, K);
}

static int head_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const int gn = op->module, lin = op->module2, B = ctx->B, C = op->C, H = op->H;
  const int K = MOD(ctx, lin)->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  float *const *s = tp->s;
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *dp = zalloc(ctx, (size_t)B * C), *da = ws_alloc(ctx, n);
  TRY(BE(linear_backward, dp, GP(ctx, lin, 0), GP(ctx, lin, 1), TG(ctx, op->out), s[4],
         P(ctx, lin, 0), B, C, K));
  float *w = ws_alloc(ctx, HW);
  if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      const float v = (float)(dp[bc] / (double)HW);
      for (size_t q = 0; q < HW; q++) da[bc * HW + q] = v;
    }
  } else { /* device: da[B*C, HW] = dp[B*C, 1] · (1/HW)[HW, 1]ᵀ */
    TRY(ncsnpp_fill_const(ctx, w, 1.0f / (float)HW, HW));
    TRY(BE(linear_forward, da, dp, w, NULL, B * C, 1, (int)HW));
  }
  TRY(gn_silu_bwd(ctx, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), da, TD(ctx, op->in0), s[0], s[1],
                  s[2], P(ctx, gn, 0), P(ctx, gn, 1), C, (int)HW));
  ctx->top = mark;
  return SDE_OK;
}

static void head_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                       size_t *saved, size_t *temp) {
  (void)net, (void)with_dropout;
  const size_t HW = (size_t)op->H * op->H, n = (size_t)B * op->C * HW;
  const size_t G = (size_t)B * sde_nn_groupnorm_groups(op->C), BC = (size_t)B * op->C;
  *saved = 2 * ws_round(n) + 2 * ws_round(G) + ws_round(BC) + ws_round(HW);
  *temp = ws_round(BC) + 2 * ws_round(n) + ws_round(HW);
}

/* OP_SIGMA_SCALE: out = in / sigma per sample. Saved: s0 sigma [B] (host backend). */
static int sigma_scale_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const int B = ctx->B;
  float *sig = ws_alloc(ctx, (size_t)B);
  tp->s[0] = sig;
  double *sd = NULL;
  int rc = ncsnpp_sigmas(ctx->net, B, ctx->labels, &sd);
  if (rc) return rc;
  for (int b = 0; b < B; b++) ctx->tr->sig_host[b] = sd ? (float)sd[b] : ctx->labels[b];
  if (ctx->be->host_memory) memcpy(sig, ctx->tr->sig_host, (size_t)B * sizeof(float));
  rc = ncsnpp_divide_rows(ctx, TD(ctx, op->out), TD(ctx, op->in0), ctx->labels, sd, B,
                          (size_t)op->C * op->H * op->H);
  free(sd);
  return rc;
}

static int sigma_scale_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const int B = ctx->B;
  const size_t n = ctx->tr->t[op->out].n, per = n / (size_t)B;
  const float *g = TG(ctx, op->out), *sig = tp->s[0];
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

static void sigma_scale_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                              size_t *saved, size_t *temp) {
  (void)net, (void)op, (void)with_dropout;
  *saved = ws_round((size_t)B);
  *temp = 0;
}

/* OP_GLOBAL_POOL: out [B, C+C2] = [sum_HW(in0)/H, sum_HW(in1)/H2]; nothing saved */
static int global_pool_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  (void)tp;
  return ncsnpp_global_pool(ctx, op, TD(ctx, op->in0), TD(ctx, op->in1), TD(ctx, op->out));
}

/* every pixel of channel c gets d pooled[c] / side */
static int global_pool_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  (void)tp;
  const int B = ctx->B, Ca = op->C, Ha = op->H, Cb = op->C2, Hb = op->H2;
  size_t mark = ctx->top;
  float *da = zalloc(ctx, (size_t)B * Ca), *db = zalloc(ctx, (size_t)B * Cb);
  BE(concat_channels_backward, da, db, TG(ctx, op->out), B, Ca, Cb, 1);
  BE(scale, da, da, 1.0f / (float)Ha, (size_t)B * Ca);
  BE(scale, db, db, 1.0f / (float)Hb, (size_t)B * Cb);
  BE(add_channel_bias_forward, TG(ctx, op->in0), da, B, Ca, Ha * Ha);
  BE(add_channel_bias_forward, TG(ctx, op->in1), db, B, Cb, Hb * Hb);
  ctx->top = mark;
  return SDE_OK;
}

static void global_pool_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                              size_t *saved, size_t *temp) {
  (void)with_dropout;
  *saved = 0;
  *temp = ncsnpp_global_scratch(net, op, B);
}

/* OP_GLOBAL_HEAD. Saved: s0 u = Linear_0(pooled), s1 g = Linear_1(act(temb)). */
static int global_head_train(fwd_ctx *ctx, const net_op *op, tape_op *tp) {
  const size_t n = (size_t)ctx->B * MOD(ctx, op->module)->out_ch;
  float *u = ws_alloc(ctx, n), *g = ws_alloc(ctx, n);
  tp->s[0] = u;
  tp->s[1] = g;
  return ncsnpp_global_head(ctx, op, TD(ctx, op->in0), TD(ctx, op->in1), u, g, TD(ctx, op->out));
}

static int global_head_backward(fwd_ctx *ctx, const net_op *op, const tape_op *tp) {
  const int B = ctx->B, C = op->C, H = op->H, F = op->C2, E = 4 * ctx->net->config.nf;
  const int l0 = op->module, l2 = op->module2, hid = MOD(ctx, l0)->out_ch;
  const size_t n = (size_t)B * hid;
  const float *u = tp->s[0], *g = tp->s[1], *dout = TG(ctx, op->out);
  BE(accumulate, TG(ctx, op->in0), dout, (size_t)B * C * H * H);
  size_t mark = ctx->top;
  float *ddc = zalloc(ctx, (size_t)B * C), *ug = ws_alloc(ctx, n), *dug = zalloc(ctx, n),
        *du = ws_alloc(ctx, n), *dg = ws_alloc(ctx, n);
  BE(add_channel_bias_backward, ddc, dout, B, C, H * H);
  BE(scale, ddc, ddc, 1.0f / (float)H, (size_t)B * C);
  BE(mul, ug, u, g, n);
  TRY(BE(linear_backward, dug, GP(ctx, l2, 0), GP(ctx, l2, 1), ddc, ug, P(ctx, l2, 0), B, hid, C));
  BE(mul, du, dug, g, n);
  BE(mul, dg, dug, u, n);
  TRY(BE(linear_backward, TG(ctx, op->in1), GP(ctx, l0, 0), GP(ctx, l0, 1), du, TD(ctx, op->in1),
         P(ctx, l0, 0), B, F, hid));
  TRY(BE(linear_backward, ctx->tr->dta, GP(ctx, l0 + 1, 0), GP(ctx, l0 + 1, 1), dg,
         ctx->temb_act, P(ctx, l0 + 1, 0), B, E, hid));
  ctx->top = mark;
  return SDE_OK;
}

static void global_head_sizes(const sde_ncsnpp *net, const net_op *op, int B, int with_dropout,
                              size_t *saved, size_t *temp) {
  (void)with_dropout;
  const size_t n = ws_round((size_t)B * net->modules[op->module].out_ch);
  *saved = 2 * n;
  *temp = max_size(ncsnpp_global_scratch(net, op, B), ws_round((size_t)B * op->C) + 4 * n);
}

static const struct {
  op_train_fn forward;
  op_backward_fn backward;
  op_sizes_fn sizes;
} op_table[OP_KINDS] = {
    [OP_CONV] = {conv_train, conv_backward, conv_sizes},
    [OP_RESBLOCK] = {resblock_train, resblock_backward, resblock_sizes},
    [OP_ATTN] = {attn_train, attn_backward, attn_sizes},
    [OP_NORM_CONV] = {norm_conv_train, norm_conv_backward, norm_conv_sizes},
    [OP_DOWNSAMPLE] = {downsample_train, downsample_backward, resample_module_sizes},
    [OP_UPSAMPLE] = {upsample_train, upsample_backward, resample_module_sizes},
    [OP_RESAMPLE_UP] = {resample_up_train, resample_up_backward, no_sizes},
    [OP_RESAMPLE_DOWN] = {resample_down_train, resample_down_backward, no_sizes},
    [OP_ADD] = {add_train, add_backward, no_sizes},
    [OP_CONCAT] = {concat_train, concat_backward, no_sizes},
    [OP_HEAD] = {head_train, head_backward, head_sizes},
    [OP_SIGMA_SCALE] = {sigma_scale_train, sigma_scale_backward, sigma_scale_sizes},
    [OP_GLOBAL_POOL] = {global_pool_train, global_pool_backward, global_pool_sizes},
    [OP_GLOBAL_HEAD] = {global_head_train, global_head_backward, global_head_sizes},
};

/* ---- the interpreter -------------------------------------------------------------------------- */

/* Workspace floats at batch B: time embedding, per op (saved, output slot and gradient), the
 * input slot, then the largest temporaries. */
static size_t train_floats(const sde_ncsnpp *net, int B, int with_dropout) {
  const sde_ncsnpp_config *c = &net->config;
  const net_plan *pl = &net->plan;
  const size_t tn = ws_round((size_t)B * 4 * c->nf);
  const size_t emb = ws_round((size_t)B * (c->embedding_type == SDE_EMBED_FOURIER ? 2 : 1) * c->nf);
  size_t kept = ncsnpp_time_embedding_floats(net, B) + (c->conditional ? 5 * tn : 0);
  kept += 2 * ws_round((size_t)B * (size_t)slot_floats(&pl->slots[pl->input_slot]));
  size_t temp = ws_round((size_t)B * c->num_channels); /* input_affine */
  temp = max_size(temp, 3 * tn + emb);                  /* time embedding backward */
  for (int i = 0; i < pl->n_ops; i++) {
    const net_op *op = &pl->ops[i];
    size_t saved, t;
    op_table[op->kind].sizes(net, op, B, with_dropout, &saved, &t);
    kept += saved + 2 * ws_round((size_t)B * (size_t)slot_floats(&pl->slots[op->out]));
    temp = max_size(temp, t);
  }
  return kept + temp;
}

static int train_run(fwd_ctx *ctx, const float *x, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_plan *pl = &net->plan;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf, C0 = c->num_channels, S = c->image_size;
  int rc;

  /* time embedding */
  const size_t tn = (size_t)B * 4 * nf;
  tr->u = ws_alloc(ctx, (size_t)B); /* ln sigma (Fourier) or the labels, backend memory */
  tr->emb = ws_alloc(ctx, (size_t)B * (c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf));
  tr->t1 = tr->t1a = tr->t2 = tr->ta = tr->dta = NULL;
  if (c->conditional) {
    tr->t1 = ws_alloc(ctx, tn);
    tr->t1a = ws_alloc(ctx, tn);
    tr->t2 = ws_alloc(ctx, tn);
    tr->ta = ws_alloc(ctx, tn);
    tr->dta = ws_alloc(ctx, tn);
  }
  TRY(ncsnpp_time_embedding(ctx, tr->u, tr->emb, tr->t1, tr->t1a, tr->t2, tr->ta));

  /* input */
  const int xs = pl->input_slot;
  slot_alloc(ctx, xs);
  const size_t x_n = tr->t[xs].n;
  float *xi = TD(ctx, xs);
  if (c->centered || !ctx->be->host_memory) {
    if ((rc = ctx->be->upload(ctx->be, xi, x, x_n * sizeof(float)))) return rc;
    if (!c->centered && (rc = ncsnpp_input_affine(ctx, xi, xi, B, C0, S * S))) return rc;
  } else {
    for (size_t i = 0; i < x_n; i++) xi[i] = 2.0f * x[i] - 1.0f;
  }

  for (int i = 0; i < pl->n_ops; i++) {
    const net_op *op = &pl->ops[i];
    slot_alloc(ctx, op->out);
    if ((rc = op_table[op->kind].forward(ctx, op, &tr->ops[i]))) return rc;
    if (ctx->peak > ctx->cap)
      return sde_fail(SDE_EINVAL, "internal: op %d (%s) outgrew its planned training workspace",
                      i, ncsnpp_op_names[op->kind]);
  }
  const tape_slot *o = &tr->t[pl->output_slot];
  return ctx->be->download(ctx->be, out, o->data, o->n * sizeof(float));
}

static int train_backward_run(fwd_ctx *ctx, const float *dout, float *dx) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_plan *pl = &net->plan;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf;
  int rc;
  for (int i = 0; i < pl->n_slots; i++) tr->t[i].touched = 0;
  ctx->no_dx = !dx;
  if (tr->dta && (rc = ctx->be->zero(ctx->be, tr->dta, (size_t)B * 4 * nf * sizeof(float))))
    return rc;
  const tape_slot *o = &tr->t[pl->output_slot];
  if ((rc = ctx->be->upload(ctx->be, TG(ctx, pl->output_slot), dout, o->n * sizeof(float))))
    return rc;
  for (int i = pl->n_ops - 1; i >= 0; i--) {
    const net_op *op = &pl->ops[i];
    if (!tr->t[op->out].touched) continue; /* no gradient reaches it */
    if ((rc = op_table[op->kind].backward(ctx, op, &tr->ops[i]))) return rc;
    if (ctx->peak > ctx->cap)
      return sde_fail(SDE_EINVAL, "internal: op %d (%s) outgrew its planned backward workspace",
                      i, ncsnpp_op_names[op->kind]);
  }
  const tape_slot *xt = &tr->t[pl->input_slot];
  if (dx && xt->touched) {
    const size_t x_n = xt->n;
    const float *g = xt->grad, k = c->centered ? 1.0f : 2.0f;
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
    const int l0 = pl->mod_temb, l1 = l0 + 1;
    size_t mark = ctx->top;
    float *d2 = zalloc(ctx, tn), *d1a = zalloc(ctx, tn), *d1 = zalloc(ctx, tn);
    float *demb = zalloc(ctx, (size_t)B * embed_dim);
    BE(silu_backward, d2, tr->dta, tr->t2, tn);
    TRY(BE(linear_backward, d1a, GP(ctx, l1, 0), GP(ctx, l1, 1), d2, tr->t1a, P(ctx, l1, 0), B,
           4 * nf, 4 * nf));
    BE(silu_backward, d1, d1a, tr->t1, tn);
    TRY(BE(linear_backward, demb, GP(ctx, l0, 0), GP(ctx, l0, 1), d1, tr->emb, P(ctx, l0, 0), B,
           embed_dim, 4 * nf));
    if (pl->mod_fourier >= 0)
      TRY(BE(fourier_embedding_backward, NULL, GP(ctx, pl->mod_fourier, 0), demb, tr->u,
             P(ctx, pl->mod_fourier, 0), B, nf));
    ctx->top = mark;
  }
  return SDE_OK;
}

static void train_ctx_init(fwd_ctx *ctx, const sde_ncsnpp *net, struct sde_ncsnpp_train *tr,
                           int B) {
  memset(ctx, 0, sizeof *ctx);
  ctx->net = net;
  ctx->be = net_be(net);
  ctx->B = B;
  ctx->base = tr->buf;
  ctx->cap = tr->floats;
  ctx->tr = tr;
  ctx->by_batch = tr->by_batch;
}

int sde_ncsnpp_train_create(const sde_ncsnpp *net, int max_batch, int flags,
                            sde_ncsnpp_train **out) {
  *out = NULL;
  if (!net || max_batch < 1) return sde_fail(SDE_EINVAL, "train workspace: bad arguments");
  struct sde_ncsnpp_train *tr = sde_calloc(1, sizeof *tr);
  if (!tr) return SDE_ENOMEM;
  tr->net = net;
  tr->be = net_be(net);
  tr->max_batch = max_batch;
  tr->with_dropout = (flags & SDE_NCSNPP_TRAIN_DROPOUT) != 0;
  tr->by_batch = (flags & SDE_NCSNPP_TRAIN_BY_BATCH) != 0;
  tr->floats = train_floats(net, max_batch, tr->with_dropout);
  int rc = SDE_ENOMEM;
  tr->ops = sde_calloc((size_t)net->plan.n_ops + 1, sizeof *tr->ops);
  tr->t = sde_calloc((size_t)net->plan.n_slots + 1, sizeof *tr->t);
  tr->sig_host = sde_calloc((size_t)max_batch, sizeof(float));
  if (!tr->ops || !tr->t || !tr->sig_host) goto fail;
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
  train_ctx_init(&ctx, net, tw, B);
  ctx.labels = labels;
  ctx.dropout = dropout;
  ctx.drop_seed = seed;
  ctx.drop_stream0 = stream0;
  tw->valid = 0;
  rc = train_run(&ctx, x, out);
  if (rc) return rc;
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
  train_ctx_init(&ctx, net, tw, tw->B);
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
  rc = train_backward_run(&ctx, dout, dx);
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
  train_ctx_init(&ctx, net, tw, tw->B);
  ctx.top = ctx.peak = tw->fwd_top;
  ctx.dparams = tw->dgrad;
  ctx.temb_act = tw->ta;
  rc = train_backward_run(&ctx, dout, NULL);
  *dgrad = rc ? NULL : tw->dgrad;
  return rc;
}
