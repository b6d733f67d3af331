/* NCSN++ / DDPM++ inference (docs/math.md#network). */
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
 * row through add_channel_bias: the same single rounding as the host expression. */
int ncsnpp_input_affine(fwd_ctx *ctx, float *xc, const float *x, int B, int C, int HW) {
  const size_t n = (size_t)B * C * HW, mark = ctx->top;
  float *dm = ws_alloc(ctx, (size_t)B * C); /* -1 per (b, c) on a device */
  int rc = SDE_OK;
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
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
  if (ctx->measure) return SDE_OK;
  return ctx->be->upload(ctx->be, dst, src, n * sizeof(float));
}

/* dst[n] = v in backend memory */
int ncsnpp_fill_const(fwd_ctx *ctx, float *dst, float v, size_t n) {
  if (ctx->measure) return SDE_OK;
  float *h = sde_malloc(n * sizeof(float));
  if (!h) return SDE_ENOMEM;
  for (size_t i = 0; i < n; i++) h[i] = v;
  int rc = ncsnpp_to_backend(ctx, dst, h, n);
  free(h);
  return rc;
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
int ncsnpp_conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                     int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  RUN(BE(conv2d_forward, out, inp, w, bias, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

/* Parameter-free resampling of the pyramid / biggan blocks: FIR [1,3,3,1] or nearest/mean. */
int ncsnpp_resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_upsample2x_forward, out, inp, ctx->B, C, H, H));
  else RUN(BE(upsample_nearest2x_forward, out, inp, ctx->B, C, H, H));
  return SDE_OK;
}

int ncsnpp_resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_downsample2x_forward, out, inp, ctx->B, C, H, H));
  else RUN(BE(avgpool2x_forward, out, inp, ctx->B, C, H, H));
  return SDE_OK;
}

/* ResnetBlockBigGANpp / ResnetBlockDDPMpp: x [B,Cin,H,H] -> out [B,Cout,H',H'] */
static int run_resblock(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho;
  const float *gn0_w = P(ctx, m, 0), *gn0_b = P(ctx, m, 1), *conv0_w = P(ctx, m, 2),
              *conv0_b = P(ctx, m, 3), *dense0_w = P(ctx, m, 4), *dense0_b = P(ctx, m, 5),
              *gn1_w = P(ctx, m, 6), *gn1_b = P(ctx, m, 7), *conv1_w = P(ctx, m, 8),
              *conv1_b = P(ctx, m, 9);
  const float *skip_w = m->shortcut ? P(ctx, m, 10) : NULL, *skip_b = m->shortcut ? P(ctx, m, 11) : NULL;
  size_t mark = ctx->top;
  /* h = act(GroupNorm_0(x)) */
  float *h0 = ws_alloc(ctx, in_n);
  RUN(BE(groupnorm_silu_forward, h0, x, gn0_w, gn0_b, B, Cin, H * H, sde_nn_groupnorm_groups(Cin),
                                    SDE_NN_GROUPNORM_EPS));
  /* up/down both h and the skip x */
  const float *hr = h0, *xr = x;
  if (m->up || m->down) {
    float *hu = ws_alloc(ctx, (size_t)B * Cin * out_hw), *xu = ws_alloc(ctx, (size_t)B * Cin * out_hw);
    if (m->up) {
      if (ncsnpp_resample_up(ctx, hu, h0, Cin, H) || ncsnpp_resample_up(ctx, xu, x, Cin, H)) return SDE_EINVAL;
    } else {
      if (ncsnpp_resample_down(ctx, hu, h0, Cin, H) || ncsnpp_resample_down(ctx, xu, x, Cin, H)) return SDE_EINVAL;
    }
    hr = hu;
    xr = xu;
  }
  /* h = Conv_0(h) + Dense_0(act(temb)) */
  float *h1 = ws_alloc(ctx, (size_t)B * Cout * out_hw);
  int rc = ncsnpp_conv_same(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3);
  if (rc) return rc;
  if (c->conditional) {
    float *proj = ws_alloc(ctx, (size_t)B * Cout);
    RUN(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
    DO(BE(add_channel_bias_forward, h1, proj, B, Cout, (int)out_hw));
  }
  /* h = Conv_1(act(GroupNorm_1(h))) (dropout inactive) */
  RUN(BE(groupnorm_silu_forward, h1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw,
                                    sde_nn_groupnorm_groups(Cout), SDE_NN_GROUPNORM_EPS));
  float *h2 = ws_alloc(ctx, (size_t)B * Cout * out_hw);
  if ((rc = ncsnpp_conv_same(ctx, h2, h1, conv1_w, conv1_b, Cout, Cout, Ho, 3))) return rc;
  /* shortcut */
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, (size_t)B * Cout * out_hw);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = ncsnpp_conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1))) return rc;
    } else {
      RUN(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    }
    xs = xc;
  }
  DO(ncsnpp_residual_join(ctx, out, xs, h2, (size_t)B * Cout * out_hw, c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* AttnBlockpp: x [B,C,H,H] -> out [B,C,H,H] */
static int run_attn(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res;
  const size_t n = (size_t)B * C * N;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, n), *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  RUN(BE(groupnorm_forward, h, NULL, NULL, x, P(ctx, m, 0), P(ctx, m, 1), B, C, N,
                               sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  RUN(BE(nin_forward, q, h, P(ctx, m, 2), P(ctx, m, 3), B, C, N, C));
  RUN(BE(nin_forward, k, h, P(ctx, m, 4), P(ctx, m, 5), B, C, N, C));
  RUN(BE(nin_forward, v, h, P(ctx, m, 6), P(ctx, m, 7), B, C, N, C));
  RUN(BE(attention_forward, h, att, q, k, v, B, C, N));
  RUN(BE(nin_forward, q, h, P(ctx, m, 8), P(ctx, m, 9), B, C, N, C));
  DO(ncsnpp_residual_join(ctx, out, x, q, n, ctx->net->config.skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* act(GroupNorm(x)) then conv3x3: the output heads and the progressive pyramid heads */
static int run_norm_conv(fwd_ctx *ctx, const net_module *gn, const net_module *cv, const float *x,
                         float *out) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, (size_t)B * C * H * H);
  RUN(BE(groupnorm_silu_forward, h, x, P(ctx, gn, 0), P(ctx, gn, 1), B, C, H * H,
                                    sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  int rc = ncsnpp_conv_same(ctx, out, h, P(ctx, cv, 0), P(ctx, cv, 1), C, cv->out_ch, H, 3);
  ctx->top = mark;
  return rc;
}

/* layerspp.Downsample: x [B,Cin,H,H] -> out [B,Cout,H/2,H/2] */
int ncsnpp_run_downsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return ncsnpp_resample_down(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(fir_conv_downsample2x_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H,
                                             Cout, scratch));
  } else {
    /* F.pad(x, (0,1,0,1)) then 3x3 stride-2 unpadded conv */
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1};
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(conv2d_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), &s, scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* layerspp.Upsample: x [B,Cin,H,H] -> out [B,Cout,2H,2H] */
int ncsnpp_run_upsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return ncsnpp_resample_up(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_ncsnpp_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    RUN(BE(fir_conv_upsample2x_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H, Cout,
                                           scratch));
  } else {
    float *u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
    RUN(BE(upsample_nearest2x_forward, u, x, B, Cin, H, H));
    int rc = ncsnpp_conv_same(ctx, out, u, P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, 2 * H, 3);
    if (rc) return rc;
  }
  ctx->top = mark;
  return SDE_OK;
}

static int forward_walk(fwd_ctx *ctx, const float *x, const float *labels, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  if (c->num_classes > 0)
    return sde_fail(SDE_EUNSUPPORTED, "a classifier network runs through the training forward");
  const net_module *mods = net->modules;
  const int B = ctx->B, nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  const size_t act_n = (size_t)B * (size_t)net->max_act;
  int mi = 0, rc;

  /* time embedding -> temb_act = act(Dense_1(act(Dense_0(emb)))) */
  int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
  float *emb = ws_alloc(ctx, (size_t)B * embed_dim);
  float *lab = ws_alloc(ctx, (size_t)B); /* ln sigma (Fourier) or the labels, backend memory */
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    if (!ctx->measure) {
      float *u = sde_malloc((size_t)B * sizeof(float));
      if (!u) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) u[b] = logf(labels[b]);
      rc = ncsnpp_to_backend(ctx, lab, u, (size_t)B);
      free(u);
      if (rc) return rc;
    }
    RUN(BE(fourier_embedding_forward, emb, lab, P(ctx, &mods[mi], 0), B, nf));
    mi++;
  } else {
    if ((rc = ncsnpp_to_backend(ctx, lab, labels, (size_t)B))) return rc;
    RUN(BE(timestep_embedding_forward, emb, lab, B, nf));
  }
  ctx->temb_act = NULL;
  if (c->conditional) {
    float *t1 = ws_alloc(ctx, (size_t)B * 4 * nf), *t2 = ws_alloc(ctx, (size_t)B * 4 * nf);
    RUN(BE(linear_forward, t1, emb, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, embed_dim, 4 * nf));
    mi++;
    DO(BE(silu_forward, t1, t1, (size_t)B * 4 * nf));
    RUN(BE(linear_forward, t2, t1, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, 4 * nf, 4 * nf));
    mi++;
    DO(BE(silu_forward, t2, t2, (size_t)B * 4 * nf)); /* every block applies act(temb) */
    ctx->temb_act = t2;
  }

  /* input: 2x - 1 unless centred */
  const int S = c->image_size;
  const size_t x_n = (size_t)B * C0 * S * S;
  const float *xin = x;
  if (!c->centered) {
    float *xc = ws_alloc(ctx, x_n);
    if ((rc = ncsnpp_input_affine(ctx, xc, x, B, C0, S * S))) return rc;
    xin = xc;
  }

  /* skip stack storage, ping-pong h buffers, pyramid buffers */
  float *hs[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  for (int i = 0; i < net->n_hs; i++)
    hs[i] = ws_alloc(ctx, (size_t)B * net->hs_ch[i] * net->hs_res[i] * net->hs_res[i]);
  float *hbuf[2] = {ws_alloc(ctx, act_n), ws_alloc(ctx, act_n)};
  float *cat = ws_alloc(ctx, act_n);
  int cur = 0;
  float *pyr[2] = {NULL, NULL};
  if (c->progressive != SDE_PROG_NONE || c->progressive_input != SDE_PROG_NONE) {
    pyr[0] = ws_alloc(ctx, act_n);
    pyr[1] = ws_alloc(ctx, act_n);
  }
  const float *input_pyramid = xin;
  int ip_cur = 0;
  int n_hs = 0;
#define HS_PUSH(src, ch, r)                                                               \
  do {                                                                                     \
    RUN(ctx->be->copy(ctx->be, hs[n_hs], (src), sizeof(float) * (size_t)B * (ch) * (r) * (r))); \
    n_hs++;                                                                                \
  } while (0)

  int res = S;
  if ((rc = ncsnpp_conv_same(ctx, hs[0], xin, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), C0, nf, S, 3)))
    return rc;
  mi++;
  n_hs = 1;
  int ch = nf; /* channels of hs[-1] / h */
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      const net_module *m = &mods[mi++];
      float *h = hbuf[cur];
      if ((rc = run_resblock(ctx, m, hs[n_hs - 1], h))) return rc;
      ch = m->out_ch;
      if (mi < net->n_modules && mods[mi].kind == M_ATTN && mods[mi].res == res &&
          is_attn_res(c, res)) {
        if ((rc = run_attn(ctx, &mods[mi++], h, hs[n_hs]))) return rc;
        n_hs++;
      } else {
        HS_PUSH(h, ch, res);
      }
    }
    if (l != L - 1) {
      const net_module *m = &mods[mi++];
      float *h = hbuf[cur];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = ncsnpp_run_downsample(ctx, m, hs[n_hs - 1], h);
      else rc = run_resblock(ctx, m, hs[n_hs - 1], h);
      if (rc) return rc;
      res /= 2;
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        float *ip = pyr[ip_cur];
        if ((rc = ncsnpp_resample_down(ctx, ip, input_pyramid, C0, 2 * res))) return rc;
        input_pyramid = ip;
        ip_cur ^= 1;
        const net_module *cm = &mods[mi++];
        /* Combine: Conv_0(pyramid) then sum or cat [Conv_0(pyramid), h] */
        float *hc = hbuf[cur ^ 1];
        if ((rc = ncsnpp_conv_same(ctx, hc, ip, P(ctx, cm, 0), P(ctx, cm, 1), C0, ch, res, 1))) return rc;
        if (c->progressive_combine == SDE_COMBINE_SUM) {
          DO(BE(add_forward, hc, hc, h, 1.0f, (size_t)B * ch * res * res));
        } else {
          DO(BE(concat_channels_forward, cat, hc, h, B, ch, ch, res * res));
          hc = cat;
          ch *= 2;
        }
        HS_PUSH(hc, ch, res);
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        const net_module *pm = &mods[mi++];
        float *ip = pyr[ip_cur];
        if ((rc = ncsnpp_run_downsample(ctx, pm, input_pyramid, ip))) return rc;
        DO(ncsnpp_residual_join(ctx, ip, ip, h, (size_t)B * ch * res * res, c->skip_rescale));
        input_pyramid = ip;
        ip_cur ^= 1;
        HS_PUSH(ip, ch, res);
      } else {
        HS_PUSH(h, ch, res);
      }
    }
  }

  /* middle */
  float *h = hbuf[cur];
  if ((rc = run_resblock(ctx, &mods[mi++], hs[n_hs - 1], h))) return rc;
  if ((rc = run_attn(ctx, &mods[mi++], h, hbuf[cur ^ 1]))) return rc;
  cur ^= 1;
  if ((rc = run_resblock(ctx, &mods[mi++], hbuf[cur], hbuf[cur ^ 1]))) return rc;
  cur ^= 1;

  /* up path */
  float *pyramid = NULL;
  int pyr_cur = 0;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      const net_module *m = &mods[mi++];
      n_hs--;
      int skip_ch = net->hs_ch[n_hs];
      DO(BE(concat_channels_forward, cat, hbuf[cur], hs[n_hs], B, ch, skip_ch, res * res));
      if ((rc = run_resblock(ctx, m, cat, hbuf[cur ^ 1]))) return rc;
      cur ^= 1;
      ch = m->out_ch;
    }
    if (is_attn_res(c, res)) {
      if ((rc = run_attn(ctx, &mods[mi++], hbuf[cur], hbuf[cur ^ 1]))) return rc;
      cur ^= 1;
    }
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        pyramid = pyr[pyr_cur];
        if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], pyramid))) return rc;
        mi += 2;
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        float *up = pyr[pyr_cur ^ 1];
        if ((rc = ncsnpp_resample_up(ctx, up, pyramid, C0, res / 2))) return rc;
        size_t mark = ctx->top;
        float *ph = ws_alloc(ctx, (size_t)B * C0 * res * res);
        if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], ph))) return rc;
        mi += 2;
        DO(BE(add_forward, up, up, ph, 1.0f, (size_t)B * C0 * res * res));
        ctx->top = mark;
        pyramid = up;
        pyr_cur ^= 1;
      } else { /* residual */
        float *up = pyr[pyr_cur ^ 1];
        if ((rc = ncsnpp_run_upsample(ctx, &mods[mi++], pyramid, up))) return rc;
        DO(ncsnpp_residual_join(ctx, up, up, hbuf[cur], (size_t)B * ch * res * res, c->skip_rescale));
        pyramid = up;
        pyr_cur ^= 1;
        RUN(ctx->be->copy(ctx->be, hbuf[cur], up, sizeof(float) * (size_t)B * ch * res * res)); /* h = pyramid */
      }
    }
    if (l != 0) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = ncsnpp_run_upsample(ctx, m, hbuf[cur], hbuf[cur ^ 1]);
      else rc = run_resblock(ctx, m, hbuf[cur], hbuf[cur ^ 1]);
      if (rc) return rc;
      cur ^= 1;
      res *= 2;
    }
  }
  if (n_hs != 0) return sde_fail(SDE_EINVAL, "internal: %d skip tensors left", n_hs);

  const size_t out_n = x_n;
  if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
    RUN(ctx->be->copy(ctx->be, out, pyramid, sizeof(float) * out_n));
  } else {
    if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], out))) return rc;
    mi += 2;
  }
  if (mi != net->n_modules)
    return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);

  if (c->scale_by_sigma && !ctx->measure) {
    const size_t per = (size_t)C0 * S * S;
    double *sig = NULL;
    if (c->embedding_type != SDE_EMBED_FOURIER) {
      /* used_sigmas = sigmas[labels.long()] (float64 buffer: the division is in double) */
      if (!(sig = sde_malloc((size_t)B * sizeof(double)))) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) {
        long idx = (long)labels[b];
        if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N) {
          free(sig);
          return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                          (double)labels[b], c->sde.N);
        }
        sig[b] = net->sigmas[idx];
      }
    }
    rc = ncsnpp_divide_rows(ctx, out, out, labels, sig, B, per); /* Fourier: out / sigma (float) */
    free(sig);
    if (rc) return rc;
  }
  return SDE_OK;
#undef HS_PUSH
}

size_t sde_ncsnpp_workspace_floats(const sde_ncsnpp *net, int B) {
  fwd_ctx ctx = {.net = net, .be = net_be(net), .B = B, .measure = 1};
  float dummy_labels[1] = {1.0f};
  (void)forward_walk(&ctx, NULL, dummy_labels, NULL);
  return ctx.peak + 16;
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
  float *owned = NULL;
  if (!workspace) {
    size_t n = sde_ncsnpp_workspace_floats(net, B);
    if ((rc = be->alloc(be, n * sizeof(float), (void **)&owned))) return rc;
    workspace = owned;
  }
  fwd_ctx ctx = {.net = net, .be = be, .B = B, .measure = 0, .base = workspace};
  rc = forward_walk(&ctx, x, labels, out);
  if (owned) {
    if (!be->host_memory) {
      int rs = be->synchronize(be); /* the walk's ops must finish before the free */
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
  /* host x, out around a device walk */
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
