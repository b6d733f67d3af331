/* Gradient checks of the whole NCSN++ / DDPM++ network (sde_ncsnpp_train_*).
 *
 * For tiny configurations covering every option of the forward (biggan/ddpm blocks,
 * FIR on/off, resamp_with_conv, progressive none/output_skip/residual, progressive_input
 * none/input_skip/residual, sum/cat combine, Fourier/positional embeddings,
 * scale_by_sigma, skip_rescale on/off, dropout, conditional on/off):
 *  - the training forward gives the inference forward's numbers bit for bit (dropout 0);
 *  - the backward's gradient of L = Σ w·out, projected on a random ±1 direction over a
 *    random subset of up to 16 elements of EVERY parameter tensor (and of the input),
 *    agrees with a central finite difference of L along that direction (Richardson-
 *    extrapolated, L accumulated in double; dropout masks fixed by their key): relative
 *    error < 1e-3;
 *  - the gradients are bit-identical with 1 and 2 threads.
 *
 *   test_grad [--verbose] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/error.h"
#include "scoresde/likelihood.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "scoresde/rng.h"
#include "scoresde/scoresde.h"
#include "compare.h"
#include "tap.h"
#include "tiny_config.h"

static int verbose = 0;

typedef struct {
  const char *name;
  sde_ncsnpp_config c;
  float dropout;
} grad_case;

static void tiny_base(sde_ncsnpp_config *c) {
  sde_ncsnpp_config_ncsnpp_cifar10(c);
  shrink_config(c, 8, 8);
  c->num_attn = 1;
  c->num_channels = 2;
}

static int make_cases(grad_case *cs) {
  int n = 0;
  grad_case *g;
  /* A: NCSN++ (VE): biggan + FIR, output_skip / input_skip (sum), Fourier, scale_by_sigma */
  g = &cs[n++];
  g->name = "ncsnpp fir output_skip/input_skip fourier sigma-scaled";
  tiny_base(&g->c);
  g->c.fir = 1;
  g->c.progressive = SDE_PROG_OUTPUT_SKIP;
  g->c.progressive_input = SDE_PROG_INPUT_SKIP;
  g->c.embedding_type = SDE_EMBED_FOURIER;
  g->c.scale_by_sigma = 1;
  g->c.centered = 0;
  g->dropout = 0.2f;
  /* B: ddpm blocks, no FIR, conv resampling, residual / residual, positional, VP */
  g = &cs[n++];
  g->name = "ddpm blocks nofir conv-resample residual/residual positional";
  tiny_base(&g->c);
  g->c.resblock_type = SDE_RESBLOCK_DDPM;
  g->c.fir = 0;
  g->c.resamp_with_conv = 1;
  g->c.progressive = SDE_PROG_RESIDUAL;
  g->c.progressive_input = SDE_PROG_RESIDUAL;
  g->c.embedding_type = SDE_EMBED_POSITIONAL;
  g->c.scale_by_sigma = 0;
  g->c.centered = 1;
  sde_init(&g->c.sde, SDE_VP);
  g->dropout = 0.1f;
  /* C: biggan + FIR, residual / residual (FIR upsample-conv), positional + scale_by_sigma
   * (VE discrete labels), no skip rescale */
  g = &cs[n++];
  g->name = "biggan fir residual/residual positional sigma-table no-rescale";
  tiny_base(&g->c);
  g->c.fir = 1;
  g->c.progressive = SDE_PROG_RESIDUAL;
  g->c.progressive_input = SDE_PROG_RESIDUAL;
  g->c.embedding_type = SDE_EMBED_POSITIONAL;
  g->c.scale_by_sigma = 1;
  g->c.continuous = 0;
  g->c.skip_rescale = 0;
  g->c.sde.N = 20;
  g->dropout = 0.0f;
  /* D: ddpm blocks + FIR conv resampling, none / input_skip with cat combine, Fourier */
  g = &cs[n++];
  g->name = "ddpm blocks fir conv-resample none/input_skip cat fourier";
  tiny_base(&g->c);
  g->c.resblock_type = SDE_RESBLOCK_DDPM;
  g->c.fir = 1;
  g->c.resamp_with_conv = 1;
  g->c.progressive = SDE_PROG_NONE;
  g->c.progressive_input = SDE_PROG_INPUT_SKIP;
  g->c.progressive_combine = SDE_COMBINE_CAT;
  g->c.embedding_type = SDE_EMBED_FOURIER;
  g->c.scale_by_sigma = 0;
  g->dropout = 0.3f;
  /* E: DDPM++ (VP): biggan without FIR, none / none, positional, 3 levels, 2 blocks */
  g = &cs[n++];
  g->name = "ddpm++ 3 levels R=2 positional";
  sde_ncsnpp_config_ddpmpp_cifar10(&g->c);
  g->c.nf = 8;
  g->c.num_levels = 3;
  g->c.ch_mult[0] = 1;
  g->c.ch_mult[1] = 2;
  g->c.ch_mult[2] = 1;
  g->c.num_res_blocks = 2;
  g->c.attn_resolutions[0] = 4;
  g->c.image_size = 8;
  g->c.num_channels = 1;
  g->dropout = 0.1f;
  /* F: ddpm blocks, plain resampling (no conv), unconditional, input_skip sum */
  g = &cs[n++];
  g->name = "ddpm blocks nofir no-conv-resample unconditional";
  tiny_base(&g->c);
  g->c.resblock_type = SDE_RESBLOCK_DDPM;
  g->c.fir = 0;
  g->c.resamp_with_conv = 0;
  g->c.conditional = 0;
  g->c.progressive = SDE_PROG_OUTPUT_SKIP;
  g->c.progressive_input = SDE_PROG_INPUT_SKIP;
  g->c.embedding_type = SDE_EMBED_POSITIONAL;
  g->c.scale_by_sigma = 0;
  g->dropout = 0.0f;
  /* G: time-dependent classifier (down path + GroupNorm/mean/Linear head), input residual */
  g = &cs[n++];
  g->name = "classifier (3 classes) fir input residual fourier";
  tiny_base(&g->c);
  g->c.fir = 1;
  g->c.progressive = SDE_PROG_NONE;
  g->c.progressive_input = SDE_PROG_RESIDUAL;
  g->c.embedding_type = SDE_EMBED_FOURIER;
  g->c.scale_by_sigma = 0;
  g->c.num_classes = 3;
  g->dropout = 0.1f;
  /* H: DDPM++ with the global head (pooled input and middle, time-modulated channel offset),
   * 3 channels, inputs in [0, 1] */
  g = &cs[n++];
  g->name = "ddpm++ global head 3 channels uncentred";
  sde_ncsnpp_config_ddpmpp_cifar10(&g->c);
  shrink_config(&g->c, 8, 8);
  g->c.num_channels = 3;
  g->c.centered = 0;
  g->c.global_head = 1;
  g->dropout = 0.1f;
  return n;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Well-scaled random parameters (every path of the graph matters). */
static void init_params(sde_ncsnpp *net, uint64_t seed) {
  int np;
  const sde_net_param *ps = sde_ncsnpp_params(net, &np);
  float *buf = sde_ncsnpp_param_buffer(net, NULL);
  for (int i = 0; i < np; i++) {
    const sde_net_param *p = &ps[i];
    float *w = buf + p->offset;
    sde_randn(seed, (uint64_t)i, 0, w, p->numel);
    if (p->ndim == 1 && ends_with(p->name, ".W")) { /* Fourier W */
      for (int64_t k = 0; k < p->numel; k++) w[k] *= 2.0f;
    } else if (p->ndim == 1 && ends_with(p->name, "weight")) { /* GroupNorm gamma */
      for (int64_t k = 0; k < p->numel; k++) w[k] = 1.0f + 0.2f * w[k];
    } else if (p->ndim == 1) { /* biases */
      for (int64_t k = 0; k < p->numel; k++) w[k] *= 0.2f;
    } else {
      int64_t fan_in = ends_with(p->name, ".W") ? p->shape[0] : p->numel / p->shape[0];
      float sc = (float)sqrt(1.0 / (double)fan_in);
      for (int64_t k = 0; k < p->numel; k++) w[k] *= sc;
    }
  }
}

typedef struct {
  sde_ncsnpp *net;
  sde_ncsnpp_train *tw;
  int B;
  float *x, *labels, *w, *out;
  float dropout;
} loss_ctx;

static double loss_eval(loss_ctx *lc) {
  const sde_ncsnpp_config *c = sde_ncsnpp_get_config(lc->net);
  size_t n = c->num_classes > 0 ? (size_t)lc->B * c->num_classes
                                : (size_t)lc->B * c->num_channels * c->image_size * c->image_size;
  int rc = sde_ncsnpp_train_forward(lc->net, lc->tw, lc->B, lc->x, lc->labels, lc->dropout, 77, 5,
                                    lc->out);
  if (rc) {
    TAP_DIAG("forward failed: %s", sde_errmsg());
    return NAN;
  }
  double L = 0.0;
  for (size_t i = 0; i < n; i++) L += (double)lc->w[i] * lc->out[i];
  return L;
}

static void run_case(const grad_case *gc) {
  sde_ncsnpp *net = NULL;
  sde_ncsnpp_train *tw = NULL;
  int rc = sde_ncsnpp_create(&gc->c, &net);
  if (!TAP_CHECK(rc == 0, "%s: create (%s)", gc->name, rc ? sde_errmsg() : "")) return;
  init_params(net, 1234);
  const sde_ncsnpp_config *c = sde_ncsnpp_get_config(net);
  const int B = 2;
  const size_t D = (size_t)c->num_channels * c->image_size * c->image_size, n = B * D;
  const size_t no = c->num_classes > 0 ? (size_t)B * c->num_classes : n; /* outputs */
  rc = sde_ncsnpp_train_create(net, B, gc->dropout > 0, &tw);
  if (!TAP_CHECK(rc == 0, "%s: train workspace (%s)", gc->name, rc ? sde_errmsg() : "")) {
    sde_ncsnpp_free(net);
    return;
  }
  int64_t P;
  float *params = sde_ncsnpp_param_buffer(net, &P);
  loss_ctx lc = {net, tw, B, malloc(n * 4), malloc(B * 4), malloc(no * 4), malloc(no * 4),
                 gc->dropout};
  sde_randn(99, 0, 0, lc.x, (int64_t)n);
  if (!c->centered)
    for (size_t i = 0; i < n; i++) lc.x[i] = 0.5f + 0.25f * lc.x[i];
  sde_randn(99, 1, 0, lc.w, (int64_t)no);
  for (int b = 0; b < B; b++) {
    if (c->embedding_type == SDE_EMBED_FOURIER) lc.labels[b] = b ? 3.7f : 0.42f;
    else if (c->scale_by_sigma) lc.labels[b] = b ? 13.0f : 2.0f; /* sigma-table indices */
    else lc.labels[b] = b ? 731.5f : 88.25f;
  }

  /* the training forward (dropout 0) equals the inference forward bit for bit */
  float *ref = malloc(n * 4), *o2 = malloc(no * 4);
  if (c->num_classes == 0) {
    rc = sde_ncsnpp_forward(net, B, lc.x, lc.labels, ref, NULL);
    int rc2 = sde_ncsnpp_train_forward(net, tw, B, lc.x, lc.labels, 0.0f, 0, 0, o2);
    TAP_CHECK(rc == 0 && rc2 == 0 && memcmp(ref, o2, n * 4) == 0,
              "%s: training forward == inference forward (bitwise)", gc->name);
  }

  /* backward */
  float *gp = calloc((size_t)P, 4), *gx = calloc(n, 4);
  double L0 = loss_eval(&lc);
  rc = sde_ncsnpp_train_backward(net, tw, lc.w, gp, gx);
  if (!TAP_CHECK(rc == 0 && isfinite(L0), "%s: backward runs (%s)", gc->name,
                 rc ? sde_errmsg() : "")) goto done;

  /* thread-count invariance of the gradients */
  {
    float *gp1 = calloc((size_t)P, 4), *gx1 = calloc(n, 4);
    int nt = sde_get_num_threads();
    sde_set_num_threads(1);
    loss_eval(&lc);
    sde_ncsnpp_train_backward(net, tw, lc.w, gp1, gx1);
    sde_set_num_threads(nt > 1 ? nt : 2);
    float *gp2 = calloc((size_t)P, 4), *gx2 = calloc(n, 4);
    loss_eval(&lc);
    sde_ncsnpp_train_backward(net, tw, lc.w, gp2, gx2);
    sde_set_num_threads(nt);
    TAP_CHECK(!memcmp(gp1, gp2, (size_t)P * 4) && !memcmp(gx1, gx2, n * 4) &&
                  !memcmp(gp1, gp, (size_t)P * 4),
              "%s: gradients bit-identical with 1 and 2 threads", gc->name);
    free(gp1); free(gx1); free(gp2); free(gx2);
  }

  /* input-only backward (dparams NULL) gives the same input gradient */
  {
    float *gx3 = calloc(n, 4);
    loss_eval(&lc);
    sde_ncsnpp_train_backward(net, tw, lc.w, NULL, gx3);
    TAP_CHECK(!memcmp(gx3, gx, n * 4), "%s: input-only backward == full backward's dx",
              gc->name);
    free(gx3);
  }

  /* finite differences along random directions d over random subsets of up to 16
   * elements: one subset in every parameter tensor, one (x2) in the input. The error of
   * the directional derivative is measured against the norm of the gradient on the subset
   * (the scale of g.d), floored at 1e-2 of the largest such norm so that exactly-zero
   * gradients (the key bias of attention) are checked to be zero within float noise. */
  {
    int np;
    const sde_net_param *ps = sde_ncsnpp_params(net, &np);
    const int nchk = np + 2, K = 16;
    int bad = 0;
    double *bp = malloc(nchk * sizeof(double)), *fd = malloc(nchk * sizeof(double)),
           *nrm = malloc(nchk * sizeof(double));
    const char **what = malloc(nchk * sizeof(char *));
    double nmax = 0;
    float **elem = malloc(K * sizeof(float *));
    float *save = malloc(K * sizeof(float)), *dir = malloc(K * sizeof(float));
    for (int i = 0; i < nchk; i++) {
      int64_t numel = i < np ? ps[i].numel : (int64_t)n;
      float *base = i < np ? params + ps[i].offset : lc.x;
      const float *gb = i < np ? gp + ps[i].offset : gx;
      what[i] = i < np ? ps[i].name : "input x";
      int k = numel < K ? (int)numel : K;
      double g_d = 0, g2 = 0;
      for (int j = 0; j < k; j++) {
        uint32_t r[4], ctr[4] = {(uint32_t)j, (uint32_t)i, 7, 0}, key[2] = {31337, 0};
        sde_philox4x32(ctr, key, r);
        int64_t e = numel <= K ? j : (int64_t)(r[0] % (uint32_t)numel);
        for (int q = 0; q < j; q++) /* distinct elements */
          if (elem[q] == base + e) { e = (e + 1) % numel; q = -1; }
        elem[j] = base + e;
        dir[j] = (r[1] & 1) ? 1.0f : -1.0f;
        g_d += (double)gb[e] * dir[j];
        g2 += (double)gb[e] * gb[e];
      }
      /* step: large enough that float32 rounding of L (~1e-5 absolute) stays far below
       * the signal, small enough for the O(h^4) truncation; steeper directions (large
       * |g_S|, e.g. the Fourier W: 2*pi*ln(sigma) radians per unit) get smaller steps */
      double h = 3e-2 / fmax(1.0, sqrt(g2));
      if (getenv("GRAD_H")) h *= atof(getenv("GRAD_H"));
      for (int j = 0; j < k; j++) save[j] = *elem[j];
      /* float32 rounding and truncation trade off differently per direction: when the
       * first step size misses, two more (h/4, 3h) are tried and the closest kept. A wrong
       * gradient fails at every step size. */
      const double hs[3] = {h, h / 4, 3 * h};
      for (int a = 0; a < 3; a++) {
        const double steps[4] = {hs[a], -hs[a], 2 * hs[a], -2 * hs[a]};
        double Lv[4];
        for (int st = 0; st < 4; st++) {
          for (int j = 0; j < k; j++) *elem[j] = (float)(save[j] + steps[st] * dir[j]);
          Lv[st] = loss_eval(&lc);
        }
        for (int j = 0; j < k; j++) *elem[j] = save[j];
        double d1 = (Lv[0] - Lv[1]) / (2 * hs[a]), d2 = (Lv[2] - Lv[3]) / (4 * hs[a]);
        double est = (4.0 * d1 - d2) / 3.0;
        if (a == 0 || fabs(est - g_d) < fabs(fd[i] - g_d)) fd[i] = est;
        if (fabs(fd[i] - g_d) <= 5e-4 * fmax(sqrt(g2), fabs(fd[i]))) break;
      }
      bp[i] = g_d;
      nrm[i] = sqrt(g2);
      if (nrm[i] > nmax) nmax = nrm[i];
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < nchk; i++) {
      double den = fmax(fmax(nrm[i], fabs(fd[i])), 1e-2 * nmax);
      double e = fabs(bp[i] - fd[i]) / den;
      if (e > worst) {
        worst = e;
        worst_name = what[i];
      }
      if (e > 1e-3) bad++;
      if (verbose || e > 1e-3)
        TAP_DIAG("  %-40s g.d % .6e fd % .6e |g_S| %.3e rel %.2e", what[i], bp[i], fd[i],
                 nrm[i], e);
    }
    TAP_CHECK(bad == 0, "%s: %d directional derivatives (every tensor + the input) vs finite "
              "differences, worst rel err %.2e (%s)", gc->name, nchk, worst, worst_name);
    free(bp); free(fd); free(nrm); free(what); free(elem); free(save); free(dir);
  }
done:
  free(gp); free(gx); free(ref); free(o2);
  free(lc.x); free(lc.labels); free(lc.w); free(lc.out);
  sde_ncsnpp_train_free(tw);
  sde_ncsnpp_free(net);
}

/* score_vjp of a network model: uᵀ(vᵀ ∂s/∂x) against a finite difference of v·s(x + h u),
 * for VE (s = net), VP and sub-VP (s = -net/std); then the Hutchinson likelihood runs. */
static double vs_dot(const sde_model *m, const sde_sde *sde, int n, const float *x,
                     const float *t, const float *v, float *s) {
  size_t nd = (size_t)n * sde_model_dim(m);
  if (sde_model_score(m, sde, n, x, t, s)) return NAN;
  double acc = 0;
  for (size_t i = 0; i < nd; i++) acc += (double)v[i] * s[i];
  return acc;
}

static void run_vjp(const grad_case *gc, sde_kind kind) {
  sde_ncsnpp_config c = gc->c;
  c.dropout = 0.1; /* the score ignores dropout */
  c.continuous = 1;
  sde_init(&c.sde, kind);
  c.has_sde = 1;
  sde_ncsnpp *net;
  if (sde_ncsnpp_create(&c, &net)) {
    TAP_CHECK(0, "vjp: create (%s)", sde_errmsg());
    return;
  }
  init_params(net, 4321);
  sde_model *m = NULL;
  int rc = sde_network_create(&c, sde_ncsnpp_param_buffer(net, NULL), &m);
  sde_ncsnpp_free(net);
  if (!TAP_CHECK(rc == 0 && m->ops->score_vjp, "vjp %s/%s: network model with score_vjp",
                 gc->name, sde_kind_name(kind)))
    return;
  const int n = 2;
  const size_t D = (size_t)sde_model_dim(m), nd = n * D;
  float *x = malloc(nd * 4), *v = malloc(nd * 4), *u = malloc(nd * 4), *j = malloc(nd * 4),
        *s = malloc(nd * 4), *xp = malloc(nd * 4);
  float t[2] = {0.3f, 0.8f};
  sde_randn(5, 0, 0, x, (int64_t)nd);
  sde_randn(5, 1, 0, v, (int64_t)nd);
  sde_randn(5, 2, 0, u, (int64_t)nd);
  rc = m->ops->score_vjp(m, &c.sde, n, x, t, v, j);
  double ju = 0, unorm = 0, jn = 0;
  for (size_t i = 0; i < nd; i++) {
    ju += (double)j[i] * u[i];
    jn += (double)j[i] * j[i];
    unorm += (double)u[i] * u[i];
  }
  double best = INFINITY, fdv = 0;
  const double h0 = 1e-2;
  for (int a = 0; a < 3 && !rc; a++) {
    double h = a == 0 ? h0 : a == 1 ? h0 / 4 : 3 * h0, Lv[4];
    const double st[4] = {h, -h, 2 * h, -2 * h};
    for (int k = 0; k < 4; k++) {
      for (size_t i = 0; i < nd; i++) xp[i] = (float)(x[i] + st[k] * u[i]);
      Lv[k] = vs_dot(m, &c.sde, n, xp, t, v, s);
    }
    double est = (4.0 * (Lv[0] - Lv[1]) / (2 * h) - (Lv[2] - Lv[3]) / (4 * h)) / 3.0;
    double e = fabs(est - ju) / fmax(fabs(ju), sqrt(jn * unorm / (double)nd));
    if (e < best) {
      best = e;
      fdv = est;
    }
    if (e < 5e-4) break;
  }
  TAP_CHECK(rc == 0 && best < 1e-3, "vjp %s/%s: u.(v^T ds/dx) %.6e vs finite difference %.6e "
            "(rel %.2e)", gc->name, sde_kind_name(kind), ju, fdv, best);
  /* the divergence estimate the likelihood uses: Hutchinson-Skilling through score_vjp */
  sde_likelihood_params lp;
  sde_likelihood_params_init(&lp);
  lp.divergence = SDE_DIV_RADEMACHER;
  lp.rtol = lp.atol = 1e-3;
  double logp[2];
  float *xd = malloc(nd * 4);
  for (size_t i = 0; i < nd; i++) xd[i] = c.centered ? 0.5f * tanhf(x[i]) : 0.5f + 0.3f * tanhf(x[i]);
  rc = sde_likelihood(m, &c.sde, &lp, n, 0, xd, logp, NULL, NULL);
  TAP_CHECK(rc == 0 && isfinite(logp[0]) && isfinite(logp[1]),
            "vjp %s/%s: sde_likelihood with Hutchinson on a network (logp %.4g, %.4g) %s",
            gc->name, sde_kind_name(kind), logp[0], logp[1], rc ? sde_errmsg() : "");
  free(xd);
  free(x); free(v); free(u); free(j); free(s); free(xp);
  sde_model_free(m);
}

/* SDE_NCSNPP_TRAIN_BY_BATCH (the trainer's workspace): the batch may choose conv kernels
 * (on AVX2 Winograd F(4x4) on 8x8 planes from batch 8, where a workspace without it takes
 * F(2x2)). A shrunk NCSN++ with 32 and 64 channels (16x16 and 8x8 planes) at batch 8: the
 * forward and every gradient agree with the batch-independent kernels' to float rounding
 * (relative 1e-5 of the largest output, 1e-4 relative L2 of the gradients); on AVX2 the bits
 * differ (the other kernel ran), elsewhere the flag changes nothing. */
static void run_by_batch(void) {
  sde_ncsnpp_config c;
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  shrink_config(&c, 32, 16);
  c.num_channels = 1;
  sde_ncsnpp *net = NULL;
  sde_ncsnpp_train *tw[2] = {NULL, NULL};
  const int B = 8;
  int rc = sde_ncsnpp_create(&c, &net);
  if (!rc) init_params(net, 4321);
  if (!rc) rc = sde_ncsnpp_train_create(net, B, 0, &tw[0]);
  if (!rc) rc = sde_ncsnpp_train_create(net, B, SDE_NCSNPP_TRAIN_BY_BATCH, &tw[1]);
  if (!TAP_CHECK(rc == 0, "by batch: network and both workspaces made%s%s", rc ? ": " : "",
                 rc ? sde_errmsg() : "")) {
    for (int k = 0; k < 2; k++) sde_ncsnpp_train_free(tw[k]);
    sde_ncsnpp_free(net);
    return;
  }
  int64_t P;
  sde_ncsnpp_param_buffer(net, &P);
  const size_t n = (size_t)B * 16 * 16;
  float *x = malloc(n * 4), *w = malloc(n * 4), labels[8], *out[2], *gp[2], *gx[2];
  sde_randn(5, 0, 0, x, (int64_t)n);
  sde_randn(5, 1, 0, w, (int64_t)n);
  for (int b = 0; b < B; b++) labels[b] = 50.0f + 111.0f * b;
  for (int k = 0; k < 2; k++) {
    out[k] = malloc(n * 4), gp[k] = calloc((size_t)P, 4), gx[k] = calloc(n, 4);
    rc |= sde_ncsnpp_train_forward(net, tw[k], B, x, labels, 0.0f, 0, 0, out[k]);
    rc |= sde_ncsnpp_train_backward(net, tw[k], w, gp[k], gx[k]);
  }
  double ymax = 0, dmax = 0;
  for (size_t i = 0; i < n; i++) {
    ymax = fmax(ymax, fabs(out[0][i]));
    dmax = fmax(dmax, fabs((double)out[1][i] - out[0][i]));
  }
  const double rp = rel_l2(gp[1], gp[0], P), rx = rel_l2(gx[1], gx[0], (int64_t)n);
  const int differ = memcmp(out[0], out[1], n * 4) != 0;
  const int avx2 = !strcmp(sde_cpu_kernels(), "avx2");
  TAP_CHECK(rc == 0 && dmax <= 1e-5 * ymax && rp <= 1e-4 && rx <= 1e-4 && differ == avx2,
            "by batch, B=%d 32/64 channels: outputs within %.2g of the largest, parameter and "
            "input gradients %.2g / %.2g relative L2; bits %s (expected %s)", B, dmax / ymax, rp,
            rx, differ ? "differ" : "the same", avx2 ? "differ: F(4x4) on 8x8" : "the same");
  for (int k = 0; k < 2; k++) {
    free(out[k]), free(gp[k]), free(gx[k]);
    sde_ncsnpp_train_free(tw[k]);
  }
  free(x), free(w);
  sde_ncsnpp_free(net);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--verbose")) verbose = 1;
  grad_case cases[9];
  int n = make_cases(cases);
  for (int i = 0; i < n; i++) run_case(&cases[i]);
  run_vjp(&cases[0], SDE_VE);
  run_vjp(&cases[4], SDE_VP);
  run_vjp(&cases[1], SDE_SUBVP);
  run_vjp(&cases[7], SDE_VP);
  run_by_batch();
  return tap_done();
}
