/* NCSN++ / DDPM++ (`NCSNpp` of score_sde_pytorch models/ncsnpp.py; docs/math.md#network):
 * the config compiled into modules and a plan.
 *
 * One walk over the topology (plan_network) replays the constructor and the forward
 * together: it builds the flat module list in the exact order of `all_modules`, so every
 * tensor name `all_modules.<i>.<sub>` and shape follows from the config, and the op list
 * over activation slots (ncsnpp_internal.h) that inference and training interpret.
 * Parameters live in one contiguous float buffer in state_dict order.
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
#include "network_internal.h"
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

/* ---- prepared conv weights (ncsnpp_internal.h) ------------------------------------------ */

/* a slot's mark for "prepares per call": nothing to prepare, or over the budget */
static char per_call_mark;
#define PER_CALL ((sde_nn_conv2d_prep *)&per_call_mark)

static void drop_preps(sde_ncsnpp *net) {
  net_preps *c = net->preps;
  if (!c) return;
  for (int i = 0; i < net->n_params; i++) {
    sde_nn_conv2d_prep *p = atomic_load(&c->slot[i]);
    if (p && p != PER_CALL) c->be->conv2d_prep_free(c->be, p);
  }
  free(c);
  net->preps = NULL;
}

/* the parameters are handed out writable: prepared weights no longer kept */
static void thaw(sde_ncsnpp *net) {
  drop_preps(net);
  net->frozen = 0;
}

void sde_ncsnpp_freeze(sde_ncsnpp *net) {
  const sde_backend *be = net_be(net);
  const char *e = getenv("SDE_WEIGHT_CACHE_MB");
  const long long mb = e && *e ? atoll(e) : 1024;
  drop_preps(net);
  net->frozen = 1;
  if (mb <= 0 || !be->conv2d_prepare || !be->conv2d_forward_prepared || !be->conv2d_prep_free)
    return;
  net_preps *c = sde_malloc(sizeof *c + (size_t)net->n_params * sizeof c->slot[0]);
  if (!c) return; /* (no cache: the forwards prepare per call, as before) */
  c->be = be;
  c->budget = (unsigned long long)mb >= SIZE_MAX >> 20 ? SIZE_MAX : (size_t)mb << 20;
  atomic_init(&c->bytes, 0);
  for (int i = 0; i < net->n_params; i++) atomic_init(&c->slot[i], NULL);
  net->preps = c;
}

size_t sde_ncsnpp_prepared_bytes(const sde_ncsnpp *net) {
  return net->preps ? atomic_load(&net->preps->bytes) : 0;
}

const sde_nn_conv2d_prep *ncsnpp_conv_prep(const sde_ncsnpp *net, const float *w,
                                           const sde_nn_conv2d_shape *s) {
  net_preps *c = net->preps;
  if (!c || net_be(net) != c->be || w < net->param_buf || w >= net->param_buf + net->num_floats)
    return NULL;
  /* the parameter whose offset w is: params are in increasing offset order */
  const int64_t off = w - net->param_buf;
  int lo = 0, hi = net->n_params - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (net->params[mid].offset <= off) lo = mid;
    else hi = mid - 1;
  }
  if (net->params[lo].offset != off) return NULL;
  _Atomic(sde_nn_conv2d_prep *) *slot = &c->slot[lo];
  sde_nn_conv2d_prep *p = atomic_load_explicit(slot, memory_order_acquire);
  if (p) return p == PER_CALL ? NULL : p;
  /* made once; two threads may both make it, the second frees its own. Nothing to prepare,
   * over the budget or out of memory: marked, and prepared per call from then on. */
  size_t bytes = 0;
  sde_nn_conv2d_prep *none = NULL;
  if (atomic_load(&c->bytes) >= c->budget || c->be->conv2d_prepare(c->be, w, s, &p, &bytes) || !p) {
    atomic_compare_exchange_strong(slot, &none, PER_CALL);
    return NULL;
  }
  const size_t before = atomic_fetch_add(&c->bytes, bytes); /* reserved, or given back */
  if (before + bytes > c->budget) {
    atomic_fetch_sub(&c->bytes, bytes);
    c->be->conv2d_prep_free(c->be, p);
    atomic_compare_exchange_strong(slot, &none, PER_CALL);
    return NULL;
  }
  if (!atomic_compare_exchange_strong_explicit(slot, &none, p, memory_order_acq_rel,
                                               memory_order_acquire)) { /* another thread's */
    atomic_fetch_sub(&c->bytes, bytes);
    c->be->conv2d_prep_free(c->be, p);
    return none == PER_CALL ? NULL : none;
  }
  return p;
}

float *sde_ncsnpp_backend_params(sde_ncsnpp *net) {
  thaw(net);
  if (!net->be || net->be->host_memory) return net->param_buf;
  if (ncsnpp_sync_params(net)) return NULL;
  net->host_stale = 1;
  return net->dev_params;
}

int sde_ncsnpp_set_backend(sde_ncsnpp *net, const sde_backend *be) {
  if (!be) be = sde_backend_cpu();
  int rs = sde_ncsnpp_backend_params_to_host(net); /* parameters trained on the old backend */
  if (rs) return rs;
  drop_preps(net); /* made by the old backend: the new one makes its own */
  if (net->be && !net->be->host_memory) net->be->free(net->be, net->dev_params);
  net->dev_params = NULL;
  net->be = be;
  if (net->frozen) sde_ncsnpp_freeze(net);
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
  double flops;
  net_plan plan;
  int cap_ops, cap_slots;
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

/* Each plan_<module> adds a module with its parameters and returns its index (-1: no memory). */
static int plan_resblock(planner *p, int in_ch, int out_ch, int res, int up, int down) {
  const sde_ncsnpp_config *c = &p->c;
  net_module *m = add_module(p, M_RESBLOCK, in_ch, out_ch, res);
  if (!m) return -1;
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
  return p->oom ? -1 : p->n_mods - 1;
}

static int plan_attn(planner *p, int ch, int res) {
  if (!add_module(p, M_ATTN, ch, ch, res)) return -1;
  gn_params(p, "GroupNorm_0.", ch);
  nin_params(p, "NIN_0.", ch, ch);
  nin_params(p, "NIN_1.", ch, ch);
  nin_params(p, "NIN_2.", ch, ch);
  nin_params(p, "NIN_3.", ch, ch);
  double N = (double)res * res;
  p->flops += 4 * conv_flops(ch, ch, 1, res) + 2.0 * 2.0 * ch * N * N;
  return p->oom ? -1 : p->n_mods - 1;
}

static int plan_conv3(planner *p, int in_ch, int out_ch, int res) {
  if (!add_module(p, M_CONV3, in_ch, out_ch, res)) return -1;
  conv_params(p, "", out_ch, in_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, res);
  return p->oom ? -1 : p->n_mods - 1;
}

static int plan_groupnorm(planner *p, int ch, int res) {
  if (!add_module(p, M_GROUPNORM, ch, ch, res)) return -1;
  gn_params(p, "", ch);
  return p->oom ? -1 : p->n_mods - 1;
}

/* layerspp.Downsample / Upsample (with_conv decides whether weights exist) */
static int plan_resample(planner *p, module_kind kind, int in_ch, int out_ch, int res,
                         int with_conv) {
  net_module *m = add_module(p, kind, in_ch, out_ch, res);
  if (!m) return -1;
  m->with_conv = with_conv;
  if (with_conv) {
    int out_res = kind == M_UPSAMPLE ? 2 * res : res / 2;
    conv_params(p, p->c.fir ? "Conv2d_0." : "Conv_0.", out_ch, in_ch, 3);
    p->flops += conv_flops(in_ch, out_ch, 3, out_res);
  }
  return p->oom ? -1 : p->n_mods - 1;
}

/* ---- the plan: ops over activation slots ------------------------------------------------ */

const char *const ncsnpp_op_names[OP_KINDS] = {
    "conv", "resblock", "attention", "norm_conv", "downsample", "upsample",
    "resample_up", "resample_down", "add", "concat", "head", "sigma_scale",
    "global_pool", "global_head",
};

/* A new slot [C, H, H], written by the next op (the input: before every op). */
static int new_slot(planner *p, int C, int H) {
  net_plan *pl = &p->plan;
  if (p->oom) return -1;
  if (pl->n_slots == p->cap_slots) {
    int cap = p->cap_slots ? 2 * p->cap_slots : 64;
    net_slot *s = realloc(pl->slots, (size_t)cap * sizeof *s);
    if (!s) { p->oom = 1; return -1; }
    pl->slots = s;
    p->cap_slots = cap;
  }
  net_slot *s = &pl->slots[pl->n_slots];
  s->C = C;
  s->H = H;
  s->producer = s->last_use = pl->n_ops;
  s->offset = 0;
  return pl->n_slots++;
}

/* An op reading in0 (and in1) into a new slot [C_out, H_out, H_out]; returns that slot. */
static int emit(planner *p, op_kind kind, int module, int module2, int in0, int in1, int C_out,
                int H_out) {
  net_plan *pl = &p->plan;
  if (p->oom || in0 < 0) return -1;
  if (pl->n_ops == p->cap_ops) {
    int cap = p->cap_ops ? 2 * p->cap_ops : 64;
    net_op *o = realloc(pl->ops, (size_t)cap * sizeof *o);
    if (!o) { p->oom = 1; return -1; }
    pl->ops = o;
    p->cap_ops = cap;
  }
  int out = new_slot(p, C_out, H_out);
  if (out < 0) return -1;
  net_op *op = &pl->ops[pl->n_ops];
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->module = module;
  op->module2 = module2;
  op->in0 = in0;
  op->in1 = in1;
  op->out = out;
  op->C = pl->slots[in0].C;
  op->H = pl->slots[in0].H;
  pl->slots[in0].last_use = pl->n_ops;
  if (in1 >= 0) pl->slots[in1].last_use = pl->n_ops;
  pl->n_ops++;
  return out;
}

static const net_slot *slot(const planner *p, int s) { return &p->plan.slots[s]; }

/* The emitters: one per op kind, given its modules (-1: planning ran out of memory) and
 * input slots; each returns the slot it writes. */

/* conv k x k of module mi: [C,H,H] -> [out_ch,H,H] */
static int conv_op(planner *p, int mi, int in, int k) {
  if (mi < 0 || in < 0) return -1;
  int out = emit(p, OP_CONV, mi, -1, in, -1, p->mods[mi].out_ch, slot(p, in)->H);
  if (out >= 0) {
    p->plan.ops[p->plan.n_ops - 1].C2 = p->mods[mi].out_ch;
    p->plan.ops[p->plan.n_ops - 1].k = k;
  }
  return out;
}

/* [in_ch,H,H] -> [out_ch,H',H'], H' = 2H (up), H/2 (down) or H */
static int resblock_op(planner *p, int mi, int in) {
  if (mi < 0) return -1;
  const net_module *m = &p->mods[mi];
  int H = m->up ? 2 * m->res : m->down ? m->res / 2 : m->res;
  return emit(p, OP_RESBLOCK, mi, -1, in, -1, m->out_ch, H);
}

/* [C,H,H] -> [C,H,H] */
static int attn_op(planner *p, int mi, int in) {
  if (mi < 0 || in < 0) return -1;
  return emit(p, OP_ATTN, mi, -1, in, -1, slot(p, in)->C, slot(p, in)->H);
}

/* conv3x3 cv of act(GroupNorm gn): [C,H,H] -> [cv.out_ch,H,H] */
static int norm_conv_op(planner *p, int gn, int cv, int in) {
  if (gn < 0 || cv < 0 || in < 0) return -1;
  return emit(p, OP_NORM_CONV, gn, cv, in, -1, p->mods[cv].out_ch, slot(p, in)->H);
}

/* layerspp.Downsample / Upsample: [in_ch,H,H] -> [out_ch,H/2,H/2] / [out_ch,2H,2H] */
static int downsample_op(planner *p, int mi, int in) {
  if (mi < 0) return -1;
  return emit(p, OP_DOWNSAMPLE, mi, -1, in, -1, p->mods[mi].out_ch, p->mods[mi].res / 2);
}

static int upsample_op(planner *p, int mi, int in) {
  if (mi < 0) return -1;
  return emit(p, OP_UPSAMPLE, mi, -1, in, -1, p->mods[mi].out_ch, 2 * p->mods[mi].res);
}

/* parameter-free: [C,H,H] -> [C,2H,2H] (up) or [C,H/2,H/2] */
static int resample_op(planner *p, int up, int in) {
  if (in < 0) return -1;
  int H = slot(p, in)->H;
  return emit(p, up ? OP_RESAMPLE_UP : OP_RESAMPLE_DOWN, -1, -1, in, -1, slot(p, in)->C,
              up ? 2 * H : H / 2);
}

/* a + b, or (a + b)/sqrt(2): [C,H,H] */
static int add_op(planner *p, int a, int b, int rescale) {
  if (a < 0 || b < 0) return -1;
  int out = emit(p, OP_ADD, -1, -1, a, b, slot(p, a)->C, slot(p, a)->H);
  if (out >= 0) p->plan.ops[p->plan.n_ops - 1].rescale = rescale;
  return out;
}

/* [a, b] over channels: [Ca+Cb,H,H] */
static int concat_op(planner *p, int a, int b) {
  if (a < 0 || b < 0) return -1;
  int out = emit(p, OP_CONCAT, -1, -1, a, b, slot(p, a)->C + slot(p, b)->C, slot(p, a)->H);
  if (out >= 0) p->plan.ops[p->plan.n_ops - 1].C2 = slot(p, b)->C;
  return out;
}

/* [sum_HW(a)/Ha, sum_HW(b)/Hb] per channel: [Ca,Ha,Ha], [Cb,Hb,Hb] -> [Ca+Cb,1,1]. Sums
 * over the side, not the area: the coefficient of the constant image in an orthonormal basis,
 * so white noise pools to unit variance at every resolution. */
static int global_pool_op(planner *p, int a, int b) {
  if (a < 0 || b < 0) return -1;
  int out = emit(p, OP_GLOBAL_POOL, -1, -1, a, b, slot(p, a)->C + slot(p, b)->C, 1);
  if (out >= 0) {
    p->plan.ops[p->plan.n_ops - 1].C2 = slot(p, b)->C;
    p->plan.ops[p->plan.n_ops - 1].H2 = slot(p, b)->H;
  }
  return out;
}

/* x + Linear_2(Linear_0(pooled) * Linear_1(act(temb))) / H per channel: [C,H,H] -> [C,H,H].
 * For a given time the offset is linear in the pooled means (a gain the time embedding sets,
 * e.g. eps's mean = the input's mean at t = T, and less as t falls); a plain MLP of [pooled,
 * temb] learns such a product slowly. The Linears are the last modules, so a network with
 * the head has the names and values of the one without it first (sde_trainer_init_from);
 * Linear_2 starts at zero. */
static int global_head_op(planner *p, int x, int pooled) {
  if (x < 0 || pooled < 0) return -1;
  const int C = slot(p, x)->C, F = slot(p, pooled)->C, E = 4 * p->c.nf, hid = 4 * p->c.nf;
  const int l0 = p->n_mods;
  const int in[3] = {F, E, hid}, out[3] = {hid, hid, C};
  for (int k = 0; k < 3; k++) {
    if (!add_module(p, M_LINEAR, in[k], out[k], 1)) return -1;
    add_param(p, "weight", 1, 2, out[k], in[k], 0, 0);
    add_param(p, "bias", 1, 1, out[k], 0, 0, 0);
    p->flops += 2.0 * in[k] * out[k];
  }
  int o = emit(p, OP_GLOBAL_HEAD, l0, l0 + 2, x, pooled, C, slot(p, x)->H);
  if (o >= 0) p->plan.ops[p->plan.n_ops - 1].C2 = F;
  return o;
}

/* Inference arena: slots in production order, each at the lowest offset free of the slots
 * alive when it is written (first fit; an op's inputs are alive, so never overwritten).
 * The output (and a centred input) live in the caller's memory. */
static int assign_arena(planner *p) {
  net_plan *pl = &p->plan;
  int64_t (*busy)[2] = malloc((size_t)pl->n_slots * sizeof *busy);
  if (!busy) return SDE_ENOMEM;
  pl->arena_per_sample = 0;
  for (int s = 0; s < pl->n_slots; s++) {
    net_slot *ns = &pl->slots[s];
    if (s == pl->output_slot || (s == pl->input_slot && p->c.centered)) {
      ns->offset = -1;
      continue;
    }
    int nb = 0;
    for (int t = 0; t < s; t++) {
      const net_slot *ts = &pl->slots[t];
      if (ts->offset < 0 || ts->last_use < ns->producer) continue;
      busy[nb][0] = ts->offset;
      busy[nb][1] = ts->offset + (int64_t)ws_round((size_t)slot_floats(ts));
      nb++;
    }
    /* lowest offset not inside a busy interval: try 0 and the end of each interval */
    const int64_t need = (int64_t)ws_round((size_t)slot_floats(ns));
    int64_t best = -1;
    for (int i = -1; i < nb; i++) {
      int64_t at = i < 0 ? 0 : busy[i][1];
      if (best >= 0 && at >= best) continue;
      int ok = 1;
      for (int j = 0; j < nb && ok; j++) ok = at + need <= busy[j][0] || at >= busy[j][1];
      if (ok) best = at;
    }
    ns->offset = best;
    if (best + need > pl->arena_per_sample) pl->arena_per_sample = best + need;
  }
  free(busy);
  return SDE_OK;
}

static int is_attn_res(const sde_ncsnpp_config *c, int res) {
  for (int i = 0; i < c->num_attn; i++)
    if (c->attn_resolutions[i] == res) return 1;
  return 0;
}

#define MAX_SKIPS (4 * SDE_NET_MAX_LEVELS * 64 + 8)

/* Replays NCSNpp.__init__ and NCSNpp.forward together: the modules in `all_modules` order
 * (their parameters, flops) and the ops in execution order (docs/math.md#net-graph). */
static int plan_network(const sde_ncsnpp_config *c, planner *p) {
  memset(p, 0, sizeof *p);
  p->c = *c;
  int rc = sde_ncsnpp_config_validate(c);
  if (rc) return rc;
  if ((int64_t)c->num_levels * (c->num_res_blocks + 1) + 1 > MAX_SKIPS)
    return sde_fail(SDE_EUNSUPPORTED, "config: too many blocks (%d levels x %d)", c->num_levels,
                    c->num_res_blocks);
  const int nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  const int ddpm = c->resblock_type == SDE_RESBLOCK_DDPM;
  net_plan *pl = &p->plan;
  /* time embedding (run before the op list, ncsnpp_time_embedding) */
  int embed_dim;
  pl->mod_fourier = pl->mod_temb = -1;
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    pl->mod_fourier = p->n_mods;
    add_module(p, M_FOURIER, 1, 2 * nf, 1);
    add_param(p, "W", 0, 1, nf, 0, 0, 0);
    embed_dim = 2 * nf;
  } else {
    embed_dim = nf;
  }
  if (c->conditional) {
    pl->mod_temb = p->n_mods;
    add_module(p, M_LINEAR, embed_dim, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, embed_dim, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    add_module(p, M_LINEAR, 4 * nf, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, 4 * nf, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    p->flops += 2.0 * embed_dim * 4 * nf + 2.0 * 16 * nf * nf;
  }
  int res = c->image_size;
  pl->input_slot = new_slot(p, C0, res);
  if (pl->input_slot >= 0) pl->slots[pl->input_slot].producer = -1;
  int hs[MAX_SKIPS], n_hs = 0; /* the skip connections: slots, pushed on the way down */
  int h = conv_op(p, plan_conv3(p, C0, nf, res), pl->input_slot, 3);
  hs[n_hs++] = h;
  int in_ch = nf, pyramid_in = pl->input_slot;
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      int out_ch = nf * c->ch_mult[l];
      h = resblock_op(p, plan_resblock(p, in_ch, out_ch, res, 0, 0), hs[n_hs - 1]);
      in_ch = out_ch;
      if (is_attn_res(c, res)) h = attn_op(p, plan_attn(p, in_ch, res), h);
      hs[n_hs++] = h;
    }
    if (l != L - 1) {
      if (ddpm)
        h = downsample_op(p, plan_resample(p, M_DOWNSAMPLE, in_ch, in_ch, res, c->resamp_with_conv),
                          hs[n_hs - 1]);
      else
        h = resblock_op(p, plan_resblock(p, in_ch, in_ch, res, 0, 1), hs[n_hs - 1]);
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        /* Combine: Conv_0(pyramid) then sum or cat [Conv_0(pyramid), h] */
        pyramid_in = resample_op(p, 0, pyramid_in);
        int cm = -1;
        if (add_module(p, M_COMBINE, C0, in_ch, res / 2)) {
          cm = p->n_mods - 1;
          conv_params(p, "Conv_0.", in_ch, C0, 1);
          p->flops += conv_flops(C0, in_ch, 1, res / 2);
        }
        int hc = conv_op(p, cm, pyramid_in, 1);
        if (c->progressive_combine == SDE_COMBINE_SUM) {
          h = add_op(p, hc, h, 0);
        } else {
          h = concat_op(p, hc, h);
          in_ch *= 2;
        }
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        int pc = pyramid_in >= 0 ? slot(p, pyramid_in)->C : 0;
        int d = downsample_op(p, plan_resample(p, M_DOWNSAMPLE, pc, in_ch, res, 1), pyramid_in);
        h = pyramid_in = add_op(p, d, h, c->skip_rescale);
      }
      res /= 2;
      hs[n_hs++] = h;
    }
  }
  if (c->num_classes > 0) { /* classifier head: GroupNorm, act, mean over H, W, Linear */
    int gn = plan_groupnorm(p, in_ch, res), lin = -1;
    if (add_module(p, M_LINEAR, in_ch, c->num_classes, 1)) {
      lin = p->n_mods - 1;
      add_param(p, "weight", 1, 2, c->num_classes, in_ch, 0, 0);
      add_param(p, "bias", 1, 1, c->num_classes, 0, 0, 0);
      p->flops += 2.0 * in_ch * c->num_classes;
    }
    if (gn >= 0 && lin >= 0) pl->output_slot = emit(p, OP_HEAD, gn, lin, hs[n_hs - 1], -1, c->num_classes, 1);
  } else {
    /* middle */
    h = resblock_op(p, plan_resblock(p, in_ch, in_ch, res, 0, 0), hs[n_hs - 1]);
    h = attn_op(p, plan_attn(p, in_ch, res), h);
    h = resblock_op(p, plan_resblock(p, in_ch, in_ch, res, 0, 0), h);
    /* global head, part 1: the input's and the middle's channel means, pooled here so that
     * neither slot lives longer than it does without the head */
    int pooled = c->global_head ? global_pool_op(p, pl->input_slot, h) : -1;
    /* up path */
    int pyramid = -1;
    for (int l = L - 1; l >= 0; l--) {
      for (int b = 0; b < R + 1; b++) {
        int out_ch = nf * c->ch_mult[l], skip = hs[--n_hs];
        int skip_ch = skip >= 0 ? slot(p, skip)->C : 0;
        int cat = concat_op(p, h, skip); /* current first */
        h = resblock_op(p, plan_resblock(p, in_ch + skip_ch, out_ch, res, 0, 0), cat);
        in_ch = out_ch;
      }
      if (is_attn_res(c, res)) h = attn_op(p, plan_attn(p, in_ch, res), h);
      if (c->progressive != SDE_PROG_NONE) {
        if (l == L - 1) {
          int gn = plan_groupnorm(p, in_ch, res);
          int cv = plan_conv3(p, in_ch, c->progressive == SDE_PROG_OUTPUT_SKIP ? C0 : in_ch, res);
          pyramid = norm_conv_op(p, gn, cv, h);
        } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
          int up = resample_op(p, 1, pyramid);
          int gn = plan_groupnorm(p, in_ch, res);
          int ph = norm_conv_op(p, gn, plan_conv3(p, in_ch, C0, res), h);
          pyramid = add_op(p, up, ph, 0);
        } else { /* residual: h = pyramid = (Upsample(pyramid) + h) / sqrt(2) */
          int pc = pyramid >= 0 ? slot(p, pyramid)->C : 0;
          int up = upsample_op(p, plan_resample(p, M_UPSAMPLE, pc, in_ch, res / 2, 1), pyramid);
          h = pyramid = add_op(p, up, h, c->skip_rescale);
        }
      }
      if (l != 0) {
        if (ddpm)
          h = upsample_op(p, plan_resample(p, M_UPSAMPLE, in_ch, in_ch, res, c->resamp_with_conv), h);
        else
          h = resblock_op(p, plan_resblock(p, in_ch, in_ch, res, 1, 0), h);
        res *= 2;
      }
    }
    int out;
    if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
      out = pyramid;
    } else {
      int gn = plan_groupnorm(p, in_ch, res);
      out = norm_conv_op(p, gn, plan_conv3(p, in_ch, C0, res), h);
    }
    if (c->global_head) out = global_head_op(p, out, pooled);
    if (c->scale_by_sigma && out >= 0) out = emit(p, OP_SIGMA_SCALE, -1, -1, out, -1, C0, res);
    pl->output_slot = out;
  }
  if (p->oom || pl->output_slot < 0) return sde_fail(SDE_ENOMEM, "out of memory planning the network");
  if ((rc = assign_arena(p))) return sde_fail(rc, "out of memory planning the network");
  return SDE_OK;
}

static void plan_free(net_plan *pl) {
  free(pl->ops);
  free(pl->slots);
  memset(pl, 0, sizeof *pl);
}

static void planner_free(planner *p) {
  free(p->mods);
  free(p->params);
  plan_free(&p->plan);
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
  *params = p.params;
  *n = p.n_params;
  p.params = NULL;
  planner_free(&p);
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
  net->plan = p.plan;
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
  drop_preps(net);
  free(net->modules);
  free(net->params);
  plan_free(&net->plan);
  free(net->param_buf);
  free(net->sigmas);
  free(net);
}

const sde_ncsnpp_config *sde_ncsnpp_get_config(const sde_ncsnpp *net) { return &net->config; }

float *sde_ncsnpp_param_buffer(sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  if (sde_ncsnpp_backend_params_to_host(net)) return NULL;
  net->dev_dirty = 1; /* the caller may write: the backend copy is refreshed before use */
  thaw(net);
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

/* module index of the global head's output Linear (Linear_2), -1 without a head */
static int global_head_output(const sde_ncsnpp *net) {
  for (int i = net->plan.n_ops - 1; i >= 0; i--)
    if (net->plan.ops[i].kind == OP_GLOBAL_HEAD) return net->plan.ops[i].module2;
  return -1;
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
        } else if (m->kind == M_LINEAR && mi == global_head_output(net)) {
          memset(w, 0, (size_t)p->numel * sizeof(float)); /* the head starts as a no-op */
          continue;
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
