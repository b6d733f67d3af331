/* NCSN++ / DDPM++ (`NCSNpp` of score_sde_pytorch models/ncsnpp.py; docs/math.md#network).
 *
 * The constructor logic is replayed on the config to build a flat module list in the exact
 * order of `all_modules`, so every tensor name `all_modules.<i>.<sub>` and shape follows
 * from the config. Parameters live in one contiguous float buffer in state_dict order; the
 * forward walks the module list with a counter exactly like NCSNpp.forward.
 *
 * Where the PyTorch port cannot run a combination (FIR upsample with conv: negative-step
 * slicing; fir=False Upsample: F.interpolate called with size and scale_factor), this file
 * follows the evident intent (the JAX port): upsample_conv_2d = transposed 3x3 conv
 * stride 2 then the [1,3,3,1] blur, and nearest x2 (+ 3x3 conv) for fir=False. */
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

/* Backend copy of the parameters, uploaded again after writable access to param_buf. */
int ncsnpp_sync_params(const sde_ncsnpp *cnet) {
  sde_ncsnpp *net = (sde_ncsnpp *)cnet;
  if (!net->be || net->be->host_memory || !net->dev_dirty) return SDE_OK;
  int rc = net->be->upload(net->be, net->dev_params, net->param_buf,
                           (size_t)net->num_floats * sizeof(float));
  if (!rc) net->dev_dirty = 0;
  return rc;
}

int sde_ncsnpp_backend_params_to_host(const sde_ncsnpp *cnet) {
  sde_ncsnpp *net = (sde_ncsnpp *)cnet;
  if (!net->host_stale || !net->be || net->be->host_memory) return SDE_OK;
  int rc = net->be->download(net->be, net->param_buf, net->dev_params,
                             (size_t)net->num_floats * sizeof(float));
  if (!rc) net->host_stale = 0;
  return rc;
}

float *sde_ncsnpp_backend_params(sde_ncsnpp *net) {
  if (!net->be || net->be->host_memory) return net->param_buf;
  if (ncsnpp_sync_params(net)) return NULL;
  net->host_stale = 1;
  return net->dev_params;
}

int sde_ncsnpp_set_backend(sde_ncsnpp *net, const sde_backend *be) {
  if (!be) be = sde_backend_cpu();
  int rs = sde_ncsnpp_backend_params_to_host(net); /* parameters trained on the old backend */
  if (rs) return rs;
  if (net->be && !net->be->host_memory) net->be->free(net->be, net->dev_params);
  net->dev_params = NULL;
  net->be = be;
  if (be->host_memory) return SDE_OK;
  int rc = be->alloc(be, (size_t)(net->num_floats > 0 ? net->num_floats : 1) * sizeof(float),
                     (void **)&net->dev_params);
  if (rc) {
    net->be = NULL;
    return sde_fail_context(rc, "network parameters on %s", be->name);
  }
  net->dev_dirty = 1;
  if ((rc = ncsnpp_sync_params(net))) {
    be->free(be, net->dev_params);
    net->dev_params = NULL;
    net->be = NULL;
  }
  return rc;
}

const sde_backend *sde_ncsnpp_backend(const sde_ncsnpp *net) { return net_be(net); }

typedef struct {
  sde_ncsnpp_config c;
  net_module *mods;
  int n_mods, cap_mods;
  sde_net_param *params;
  int n_params, cap_params;
  int64_t offset;
  int hs_ch[4 * SDE_NET_MAX_LEVELS * 64 + 8], hs_res[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int n_hs, max_hs;
  int64_t max_act;
  double flops;
  int oom;
} planner;

static net_module *add_module(planner *p, module_kind kind, int in_ch, int out_ch, int res) {
  if (p->oom) return NULL;
  if (p->n_mods == p->cap_mods) {
    int cap = p->cap_mods ? 2 * p->cap_mods : 64;
    net_module *m = realloc(p->mods, (size_t)cap * sizeof *m);
    if (!m) { p->oom = 1; return NULL; }
    p->mods = m;
    p->cap_mods = cap;
  }
  net_module *m = &p->mods[p->n_mods++];
  memset(m, 0, sizeof *m);
  m->kind = kind;
  m->in_ch = in_ch;
  m->out_ch = out_ch;
  m->res = res;
  m->first_param = p->n_params;
  int64_t a = (int64_t)(in_ch > out_ch ? in_ch : out_ch) * res * res * 4; /* up x2 */
  if (a > p->max_act) p->max_act = a;
  return m;
}

static void add_param(planner *p, const char *sub, int trainable, int ndim, int64_t d0,
                      int64_t d1, int64_t d2, int64_t d3) {
  if (p->oom) return;
  if (p->n_params == p->cap_params) {
    int cap = p->cap_params ? 2 * p->cap_params : 256;
    sde_net_param *q = realloc(p->params, (size_t)cap * sizeof *q);
    if (!q) { p->oom = 1; return; }
    p->params = q;
    p->cap_params = cap;
  }
  sde_net_param *q = &p->params[p->n_params++];
  memset(q, 0, sizeof *q);
  snprintf(q->name, sizeof q->name, "all_modules.%d.%s", p->n_mods - 1, sub);
  q->ndim = ndim;
  int64_t d[4] = {d0, d1, d2, d3};
  q->numel = 1;
  for (int i = 0; i < ndim; i++) {
    q->shape[i] = d[i];
    q->numel *= d[i];
  }
  q->offset = p->offset;
  q->trainable = trainable;
  p->offset += q->numel;
  p->mods[p->n_mods - 1].n_params++;
}

static void conv_params(planner *p, const char *prefix, int out, int in, int k) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sweight", prefix);
  snprintf(b, sizeof b, "%sbias", prefix);
  add_param(p, a, 1, 4, out, in, k, k);
  add_param(p, b, 1, 1, out, 0, 0, 0);
}

static void gn_params(planner *p, const char *prefix, int ch) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sweight", prefix);
  snprintf(b, sizeof b, "%sbias", prefix);
  add_param(p, a, 1, 1, ch, 0, 0, 0);
  add_param(p, b, 1, 1, ch, 0, 0, 0);
}

static void nin_params(planner *p, const char *prefix, int in, int out) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sW", prefix);
  snprintf(b, sizeof b, "%sb", prefix);
  add_param(p, a, 1, 2, in, out, 0, 0);
  add_param(p, b, 1, 1, out, 0, 0, 0);
}

static double conv_flops(int in, int out, int k, int out_res) {
  return 2.0 * in * out * k * k * (double)out_res * out_res;
}

static void plan_resblock(planner *p, int in_ch, int out_ch, int res, int up, int down) {
  const sde_ncsnpp_config *c = &p->c;
  net_module *m = add_module(p, M_RESBLOCK, in_ch, out_ch, res);
  if (!m) return;
  m->up = up;
  m->down = down;
  int out_res = up ? 2 * res : down ? res / 2 : res;
  int temb_dim = 4 * c->nf;
  gn_params(p, "GroupNorm_0.", in_ch);
  conv_params(p, "Conv_0.", out_ch, in_ch, 3);
  add_param(p, "Dense_0.weight", 1, 2, out_ch, temb_dim, 0, 0);
  add_param(p, "Dense_0.bias", 1, 1, out_ch, 0, 0, 0);
  gn_params(p, "GroupNorm_1.", out_ch);
  conv_params(p, "Conv_1.", out_ch, out_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, out_res) + conv_flops(out_ch, out_ch, 3, out_res);
  if (c->conditional) p->flops += 2.0 * temb_dim * out_ch;
  if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
    if (in_ch != out_ch || up || down) {
      m->shortcut = 1;
      conv_params(p, "Conv_2.", out_ch, in_ch, 1);
      p->flops += conv_flops(in_ch, out_ch, 1, out_res);
    }
  } else if (in_ch != out_ch) {
    m->shortcut = 1;
    nin_params(p, "NIN_0.", in_ch, out_ch);
    p->flops += conv_flops(in_ch, out_ch, 1, out_res);
  }
}

static void plan_attn(planner *p, int ch, int res) {
  if (!add_module(p, M_ATTN, ch, ch, res)) return;
  gn_params(p, "GroupNorm_0.", ch);
  nin_params(p, "NIN_0.", ch, ch);
  nin_params(p, "NIN_1.", ch, ch);
  nin_params(p, "NIN_2.", ch, ch);
  nin_params(p, "NIN_3.", ch, ch);
  double N = (double)res * res;
  p->flops += 4 * conv_flops(ch, ch, 1, res) + 2.0 * 2.0 * ch * N * N;
}

static void plan_conv3(planner *p, int in_ch, int out_ch, int res) {
  if (!add_module(p, M_CONV3, in_ch, out_ch, res)) return;
  conv_params(p, "", out_ch, in_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, res);
}

static void plan_groupnorm(planner *p, int ch, int res) {
  if (!add_module(p, M_GROUPNORM, ch, ch, res)) return;
  gn_params(p, "", ch);
}

/* layerspp.Downsample / Upsample (with_conv decides whether weights exist) */
static void plan_resample(planner *p, module_kind kind, int in_ch, int out_ch, int res,
                          int with_conv) {
  net_module *m = add_module(p, kind, in_ch, out_ch, res);
  if (!m) return;
  m->with_conv = with_conv;
  if (!with_conv) return;
  int out_res = kind == M_UPSAMPLE ? 2 * res : res / 2;
  conv_params(p, p->c.fir ? "Conv2d_0." : "Conv_0.", out_ch, in_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, out_res);
}

static void push_hs(planner *p, int ch, int res) {
  if (p->n_hs >= p->max_hs) { p->oom = 1; return; }
  p->hs_ch[p->n_hs] = ch;
  p->hs_res[p->n_hs] = res;
  p->n_hs++;
}

/* Replays NCSNpp.__init__. Fills p (modules, params, hs shapes, flops). */
static int plan_network(const sde_ncsnpp_config *c, planner *p) {
  memset(p, 0, sizeof *p);
  p->c = *c;
  p->max_hs = (int)(sizeof p->hs_ch / sizeof p->hs_ch[0]);
  int rc = sde_ncsnpp_config_validate(c);
  if (rc) return rc;
  if ((int64_t)c->num_levels * (c->num_res_blocks + 1) + 1 > p->max_hs)
    return sde_fail(SDE_EUNSUPPORTED, "config: too many blocks (%d levels x %d)", c->num_levels,
                    c->num_res_blocks);
  const int nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  int embed_dim;
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    add_module(p, M_FOURIER, 1, 2 * nf, 1);
    add_param(p, "W", 0, 1, nf, 0, 0, 0);
    embed_dim = 2 * nf;
  } else {
    embed_dim = nf;
  }
  if (c->conditional) {
    add_module(p, M_LINEAR, embed_dim, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, embed_dim, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    add_module(p, M_LINEAR, 4 * nf, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, 4 * nf, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    p->flops += 2.0 * embed_dim * 4 * nf + 2.0 * 16 * nf * nf;
  }
  int res = c->image_size;
  int input_pyramid_ch = C0;
  plan_conv3(p, C0, nf, res);
  push_hs(p, nf, res);
  int in_ch = nf;
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      int out_ch = nf * c->ch_mult[l];
      plan_resblock(p, in_ch, out_ch, res, 0, 0);
      in_ch = out_ch;
      if (is_attn_res(c, res)) plan_attn(p, in_ch, res);
      push_hs(p, in_ch, res);
    }
    if (l != L - 1) {
      if (c->resblock_type == SDE_RESBLOCK_DDPM)
        plan_resample(p, M_DOWNSAMPLE, in_ch, in_ch, res, c->resamp_with_conv);
      else
        plan_resblock(p, in_ch, in_ch, res, 0, 1);
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        add_module(p, M_COMBINE, input_pyramid_ch, in_ch, res / 2);
        conv_params(p, "Conv_0.", in_ch, input_pyramid_ch, 1);
        p->flops += conv_flops(input_pyramid_ch, in_ch, 1, res / 2);
        if (c->progressive_combine == SDE_COMBINE_CAT) in_ch *= 2;
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        plan_resample(p, M_DOWNSAMPLE, input_pyramid_ch, in_ch, res, 1);
        input_pyramid_ch = in_ch;
      }
      res /= 2;
      push_hs(p, in_ch, res);
    }
  }
  in_ch = p->hs_ch[p->n_hs - 1];
  if (c->num_classes > 0) { /* classifier head: GroupNorm, act, mean over H, W, Linear */
    plan_groupnorm(p, in_ch, res);
    add_module(p, M_LINEAR, in_ch, c->num_classes, 1);
    add_param(p, "weight", 1, 2, c->num_classes, in_ch, 0, 0);
    add_param(p, "bias", 1, 1, c->num_classes, 0, 0, 0);
    p->flops += 2.0 * in_ch * c->num_classes;
    if (p->oom) return sde_fail(SDE_ENOMEM, "out of memory planning the network");
    return SDE_OK;
  }
  plan_resblock(p, in_ch, in_ch, res, 0, 0);
  plan_attn(p, in_ch, res);
  plan_resblock(p, in_ch, in_ch, res, 0, 0);
  int pyramid_ch = 0, hs_top = p->n_hs;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      int out_ch = nf * c->ch_mult[l];
      int skip = p->hs_ch[--hs_top];
      plan_resblock(p, in_ch + skip, out_ch, res, 0, 0);
      in_ch = out_ch;
    }
    if (is_attn_res(c, res)) plan_attn(p, in_ch, res);
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        plan_groupnorm(p, in_ch, res);
        if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
          plan_conv3(p, in_ch, C0, res);
          pyramid_ch = C0;
        } else {
          plan_conv3(p, in_ch, in_ch, res);
          pyramid_ch = in_ch;
        }
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        plan_groupnorm(p, in_ch, res);
        plan_conv3(p, in_ch, C0, res);
        pyramid_ch = C0;
      } else {
        plan_resample(p, M_UPSAMPLE, pyramid_ch, in_ch, res / 2, 1);
        pyramid_ch = in_ch;
      }
    }
    if (l != 0) {
      if (c->resblock_type == SDE_RESBLOCK_DDPM)
        plan_resample(p, M_UPSAMPLE, in_ch, in_ch, res, c->resamp_with_conv);
      else
        plan_resblock(p, in_ch, in_ch, res, 1, 0);
      res *= 2;
    }
  }
  if (c->progressive != SDE_PROG_OUTPUT_SKIP) {
    plan_groupnorm(p, in_ch, res);
    plan_conv3(p, in_ch, C0, res);
  }
  if (p->oom) return sde_fail(SDE_ENOMEM, "out of memory planning the network");
  return SDE_OK;
}

static void planner_free(planner *p) {
  free(p->mods);
  free(p->params);
}

int sde_ncsnpp_param_list(const sde_ncsnpp_config *c, sde_net_param **params, int *n) {
  planner p;
  *params = NULL;
  *n = 0;
  int rc = plan_network(c, &p);
  if (rc) {
    planner_free(&p);
    return rc;
  }
  free(p.mods);
  *params = p.params;
  *n = p.n_params;
  return SDE_OK;
}

int sde_ncsnpp_count(const sde_ncsnpp_config *c, int64_t *num_params, int64_t *num_modules,
                     double *flops) {
  planner p;
  int rc = plan_network(c, &p);
  if (!rc) {
    if (num_params) *num_params = p.offset;
    if (num_modules) *num_modules = p.n_mods;
    if (flops) *flops = p.flops;
  }
  planner_free(&p);
  return rc;
}

int sde_ncsnpp_create(const sde_ncsnpp_config *c, sde_ncsnpp **out) {
  *out = NULL;
  planner p;
  int rc = plan_network(c, &p);
  if (rc) {
    planner_free(&p);
    return rc;
  }
  sde_ncsnpp *net = sde_calloc(1, sizeof *net);
  if (!net) {
    planner_free(&p);
    return SDE_ENOMEM;
  }
  net->config = *c;
  net->modules = p.mods;
  net->n_modules = p.n_mods;
  net->params = p.params;
  net->n_params = p.n_params;
  net->num_floats = p.offset;
  net->n_hs = p.n_hs;
  memcpy(net->hs_ch, p.hs_ch, sizeof p.hs_ch);
  memcpy(net->hs_res, p.hs_res, sizeof p.hs_res);
  net->max_act = p.max_act;
  net->param_buf = sde_calloc((size_t)(p.offset > 0 ? p.offset : 1), sizeof(float));
  if (!net->param_buf) {
    sde_ncsnpp_free(net);
    return SDE_ENOMEM;
  }
  if (c->embedding_type == SDE_EMBED_POSITIONAL && c->scale_by_sigma) {
    /* utils.get_sigmas: exp(linspace(ln sigma_max, ln sigma_min, N)) in float64 */
    int N = c->sde.N;
    net->sigmas = sde_malloc((size_t)N * sizeof(double));
    if (!net->sigmas) {
      sde_ncsnpp_free(net);
      return SDE_ENOMEM;
    }
    double a = log(c->sde.sigma_max), b = log(c->sde.sigma_min), step = (b - a) / (N - 1);
    for (int i = 0; i < N; i++) net->sigmas[i] = exp(i == N - 1 ? b : a + i * step);
  }
  *out = net;
  return SDE_OK;
}

void sde_ncsnpp_free(sde_ncsnpp *net) {
  if (!net) return;
  if (net->be && !net->be->host_memory) net->be->free(net->be, net->dev_params);
  free(net->modules);
  free(net->params);
  free(net->param_buf);
  free(net->sigmas);
  free(net);
}

const sde_ncsnpp_config *sde_ncsnpp_get_config(const sde_ncsnpp *net) { return &net->config; }

float *sde_ncsnpp_param_buffer(sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  if (sde_ncsnpp_backend_params_to_host(net)) return NULL;
  net->dev_dirty = 1; /* the caller may write: the backend copy is refreshed before use */
  return net->param_buf;
}

const float *sde_ncsnpp_param_buffer_const(const sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  if (sde_ncsnpp_backend_params_to_host(net)) return NULL;
  return net->param_buf;
}

const sde_net_param *sde_ncsnpp_params(const sde_ncsnpp *net, int *n) {
  if (n) *n = net->n_params;
  return net->params;
}

/* ---- initialisation (score_sde_pytorch default_init) -------------------------------------- */

/* variance_scaling(scale, 'fan_avg', 'uniform') of a [out, in, (k, k)] or NIN [in, out] tensor */
static void init_uniform(float *w, const sde_net_param *p, double scale, uint64_t seed, int idx) {
  if (scale == 0.0) scale = 1e-10;
  int64_t receptive = p->ndim == 4 ? p->shape[2] * p->shape[3] : 1;
  double fan_sum = (double)(p->shape[0] + p->shape[1]) * (double)receptive;
  double bound = sqrt(3.0 * scale / (fan_sum / 2.0));
  sde_randu(seed, (uint64_t)idx, 0, w, p->numel);
  for (int64_t i = 0; i < p->numel; i++) w[i] = (float)((2.0 * w[i] - 1.0) * bound);
}

int sde_ncsnpp_init_params(sde_ncsnpp *net, uint64_t seed) {
  if (!net) return sde_fail(SDE_EINVAL, "init: no network");
  const sde_ncsnpp_config *c = &net->config;
  for (int mi = 0; mi < net->n_modules; mi++) {
    const net_module *m = &net->modules[mi];
    for (int k = 0; k < m->n_params; k++) {
      const int idx = m->first_param + k;
      const sde_net_param *p = &net->params[idx];
      float *w = net->param_buf + p->offset;
      const char *sub = strrchr(p->name, '.');
      sub = sub ? sub + 1 : p->name;
      int is_weight = p->ndim >= 2;
      if (m->kind == M_FOURIER) {
        sde_randn(seed, (uint64_t)idx, 0, w, p->numel);
        for (int64_t i = 0; i < p->numel; i++) w[i] = (float)(w[i] * c->fourier_scale);
      } else if (!is_weight) {
        /* biases 0; GroupNorm weight 1 */
        float v = (p->ndim == 1 && !strcmp(sub, "weight")) ? 1.0f : 0.0f;
        for (int64_t i = 0; i < p->numel; i++) w[i] = v;
      } else {
        double scale = 1.0;
        if (m->kind == M_RESBLOCK) {
          if (strstr(p->name, ".Conv_1.")) scale = c->init_scale;
          else if (strstr(p->name, ".NIN_0.")) scale = 0.1;
        } else if (m->kind == M_ATTN) {
          scale = strstr(p->name, ".NIN_3.") ? c->init_scale : 0.1;
        } else if (m->kind == M_CONV3 && mi > 0 && net->modules[mi - 1].kind == M_GROUPNORM &&
                   m->out_ch == c->num_channels) {
          scale = c->init_scale; /* output heads (final and output_skip pyramid) */
        }
        init_uniform(w, p, scale, seed, idx);
      }
    }
  }
  return SDE_OK;
}
