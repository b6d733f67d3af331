/* The NCSN++ / DDPM++ network behind the score-model interface (model.h): the labels and
 * output -> score maps of get_score_fn (docs/math.md#labels), pooled forward and training
 * workspaces, the move onto a device's backend, and the model id. Files: network_file.c,
 * network_diffusers.c; guidance: control_guidance.c.
 *
 * Model id: two 64-bit FNV-1a hashes (offset bases 0xcbf29ce484222325 and
 * 0x84222325cbf29ce4, prime 0x100000001b3) each run over the canonical config JSON
 * (sde_ncsnpp_config_to_json) followed by the float32 parameters in state_dict order, fed
 * as 8-byte little-endian words (a trailing partial word zero-padded); id = the two as
 * 16 hex digits each, 32 in all. Same weights + same config = same id. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "network_internal.h"
#include "scoresde/error.h"
#include "scoresde/model.h"
#include "scoresde/network.h"

#define WS_POOL 4

struct sde_net_workspace {
  const sde_ncsnpp *net;
  const sde_backend *be; /* buf is its memory (the network's backend at creation) */
  int max_batch;
  size_t floats;
  float *buf;
  float *io;  /* device backends: [2, max_batch, D] staging for host x in, out back */
};

typedef struct {
  sde_ncsnpp *net;
  pthread_mutex_t lock;           /* guards the workspace pool only */
  sde_net_workspace *pool[WS_POOL]; /* idle workspaces, reused by score calls */
  sde_ncsnpp_train *tpool[WS_POOL];  /* idle training workspaces (score_vjp) */
  int tpool_batch[WS_POOL];
  float *alphas_1m_sqrt;          /* [N] sqrt(1 - alphas_cumprod), float32 as torch (VP discrete) */
  const sde_backend *be;          /* where the network runs (owned; the CPU by default) */
  int fell_back;                  /* sde_model_device(): AUTO found no GPU */
  char reason[192];
} net_impl;

static const sde_model_ops network_ops;

int sde_network_is(const sde_model *m) { return m && m->ops == &network_ops; }

static net_impl *impl_of(const sde_model *m) { return (net_impl *)m->impl; }

const sde_ncsnpp_config *sde_network_config(const sde_model *m) {
  return sde_network_is(m) ? sde_ncsnpp_get_config(impl_of(m)->net) : NULL;
}

const sde_ncsnpp *sde_network_net(const sde_model *m) {
  return sde_network_is(m) ? impl_of(m)->net : NULL;
}

sde_ncsnpp *sde_network_ncsnpp(sde_model *m) {
  return sde_network_is(m) ? impl_of(m)->net : NULL;
}

const float *sde_network_params(const sde_model *m, int64_t *count) {
  if (!sde_network_is(m)) return NULL;
  return sde_ncsnpp_param_buffer_const(impl_of(m)->net, count);
}

/* ---- workspaces ------------------------------------------------------------------------ */

static int ws_create(const sde_ncsnpp *net, int max_batch, sde_net_workspace **out) {
  *out = NULL;
  sde_net_workspace *ws = sde_calloc(1, sizeof *ws);
  if (!ws) return SDE_ENOMEM;
  ws->net = net;
  ws->max_batch = max_batch;
  ws->be = sde_ncsnpp_backend(net);
  ws->floats = sde_ncsnpp_workspace_floats(net, max_batch);
  int rc = ws->be->alloc(ws->be, ws->floats * sizeof(float), (void **)&ws->buf);
  if (!rc && !ws->be->host_memory) {
    const sde_ncsnpp_config *c = sde_ncsnpp_get_config(net);
    const size_t D = (size_t)c->num_channels * c->image_size * c->image_size;
    rc = ws->be->alloc(ws->be, 2 * (size_t)max_batch * D * sizeof(float), (void **)&ws->io);
  }
  if (rc) {
    if (ws->buf) ws->be->free(ws->be, ws->buf);
    free(ws);
    return rc;
  }
  *out = ws;
  return SDE_OK;
}

int sde_net_workspace_create(const sde_model *m, int max_batch, sde_net_workspace **out) {
  *out = NULL;
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "workspace: not a network model");
  if (max_batch < 1) return sde_fail(SDE_EINVAL, "workspace: max_batch %d < 1", max_batch);
  return ws_create(impl_of(m)->net, max_batch, out);
}

void sde_net_workspace_free(sde_net_workspace *ws) {
  if (!ws) return;
  ws->be->free(ws->be, ws->buf);
  ws->be->free(ws->be, ws->io);
  free(ws);
}

size_t sde_net_workspace_bytes(const sde_net_workspace *ws) {
  return ws ? ws->floats * sizeof(float) : 0;
}

/* Takes an idle pooled workspace for >= n samples, or makes one. */
static int ws_acquire(const sde_model *m, int n, sde_net_workspace **out) {
  net_impl *im = impl_of(m);
  sde_net_workspace *ws = NULL;
  pthread_mutex_lock(&im->lock);
  for (int i = 0; i < WS_POOL; i++)
    if (im->pool[i] && im->pool[i]->max_batch >= n) {
      ws = im->pool[i];
      im->pool[i] = NULL;
      break;
    }
  pthread_mutex_unlock(&im->lock);
  if (ws) {
    *out = ws;
    return SDE_OK;
  }
  return ws_create(im->net, n, out);
}

static void ws_release(const sde_model *m, sde_net_workspace *ws) {
  net_impl *im = impl_of(m);
  pthread_mutex_lock(&im->lock);
  int slot = -1;
  for (int i = 0; i < WS_POOL && slot < 0; i++)
    if (!im->pool[i]) slot = i;
  if (slot < 0) { /* pool full: replace the smallest if this one is larger */
    int small = 0;
    for (int i = 1; i < WS_POOL; i++)
      if (im->pool[i]->max_batch < im->pool[small]->max_batch) small = i;
    if (im->pool[small]->max_batch < ws->max_batch) {
      sde_net_workspace *old = im->pool[small];
      im->pool[small] = ws;
      ws = old;
    }
  } else {
    im->pool[slot] = ws;
    ws = NULL;
  }
  pthread_mutex_unlock(&im->lock);
  sde_net_workspace_free(ws);
}

/* ---- forward, labels, score ------------------------------------------------------------ */

int sde_network_forward_ws(const sde_model *m, sde_net_workspace *ws, int n, const float *x,
                           const float *labels, float *out) {
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "not a network model");
  if (!ws || ws->net != impl_of(m)->net)
    return sde_fail(SDE_EINVAL, "workspace does not belong to this model");
  if (n > ws->max_batch)
    return sde_fail(SDE_EINVAL, "batch of %d exceeds the workspace's %d", n, ws->max_batch);
  if (ws->be->host_memory) return sde_ncsnpp_forward(impl_of(m)->net, n, x, labels, out, ws->buf);
  /* device: host x and out through the workspace's staging buffers */
  const sde_backend *be = ws->be;
  const size_t D = (size_t)sde_model_dim(m), bytes = (size_t)n * D * sizeof(float);
  float *xd = ws->io, *od = ws->io + (size_t)ws->max_batch * D;
  int rc = be->upload(be, xd, x, bytes);
  if (!rc) rc = sde_ncsnpp_forward_dev(impl_of(m)->net, n, xd, labels, od, ws->buf);
  if (!rc) rc = be->download(be, out, od, bytes);
  return rc;
}

int sde_network_forward(const sde_model *m, int n, const float *x, const float *labels,
                        float *out) {
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "not a network model");
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  sde_net_workspace *ws;
  int rc = ws_acquire(m, n, &ws);
  if (rc) return rc;
  rc = sde_network_forward_ws(m, ws, n, x, labels, out);
  ws_release(m, ws);
  return rc;
}

/* VP/sub-VP log mean coefficient in float32, evaluated in the order of sde_lib.py:
 * -0.25 * t**2 * (beta_1 - beta_0) - 0.5 * t * beta_0 */
static float vp_lmc_f32(const sde_sde *sde, float t) {
  float a = (-0.25f * (t * t)) * (float)(sde->beta_max - sde->beta_min);
  float b = (0.5f * t) * (float)sde->beta_min;
  return a - b;
}

int sde_network_labels(const sde_model *m, const sde_sde *sde, int n, const float *t,
                       float *labels) {
  const sde_ncsnpp_config *c = sde_network_config(m);
  if (!c) return sde_fail(SDE_EINVAL, "not a network model");
  for (int i = 0; i < n; i++) {
    float ti = t[i];
    if (!(ti >= 0.0f && ti <= (float)SDE_T))
      return sde_fail(SDE_EINVAL, "time t[%d] = %g must be in [0, %g]", i, (double)ti, SDE_T);
    switch (sde->kind) {
      case SDE_VE:
        if (c->continuous) {
          /* sigma_min * (sigma_max / sigma_min) ** t in float32 */
          labels[i] = (float)sde->sigma_min * powf((float)(sde->sigma_max / sde->sigma_min), ti);
        } else {
          /* round((T - t) * (N - 1)), round half to even like torch.round */
          labels[i] = nearbyintf((1.0f - ti) * (float)(sde->N - 1));
        }
        break;
      case SDE_VP:
        labels[i] = c->continuous ? ti * 999.0f : ti * (float)(sde->N - 1);
        break;
      case SDE_SUBVP:
        labels[i] = ti * 999.0f;
        break;
    }
  }
  return SDE_OK;
}

/* sqrt(1 - cumprod(1 - linspace(beta_min/N, beta_max/N, N))) in float32 as torch builds it */
static int vp_discrete_table(net_impl *im, const sde_sde *sde, float **table) {
  (void)im;
  int N = sde->N;
  float *tab = sde_malloc((size_t)N * sizeof(float));
  if (!tab) return SDE_ENOMEM;
  float start = (float)(sde->beta_min / N), end = (float)(sde->beta_max / N);
  float step = (end - start) / (float)(N - 1);
  float cum = 1.0f;
  for (int i = 0; i < N; i++) {
    /* torch.linspace fills the first half from start, the second half back from end */
    float beta = i < N / 2 ? start + step * (float)i : end - step * (float)(N - 1 - i);
    cum *= 1.0f - beta;
    tab[i] = sqrtf(1.0f - cum);
  }
  *table = tab;
  return SDE_OK;
}

/* Per-sample std of the output -> score map s = -out/std (VP, sub-VP; docs/math.md#labels), as
 * get_score_fn computes it in float32. Not called for VE (s = out). */
static int score_stds(const sde_model *m, const sde_sde *sde, int n, const float *t,
                      const float *labels, float *stds) {
  const sde_ncsnpp_config *c = sde_network_config(m);
  net_impl *im = impl_of(m);
  const float *table = NULL;
  float *owned = NULL;
  int rc = SDE_OK;
  if (sde->kind == SDE_VP && !c->continuous) {
    if (im->alphas_1m_sqrt && c->sde.N == sde->N && c->sde.beta_min == sde->beta_min &&
        c->sde.beta_max == sde->beta_max) {
      table = im->alphas_1m_sqrt;
    } else if ((rc = vp_discrete_table(im, sde, &owned))) {
      return rc;
    } else {
      table = owned;
    }
  }
  for (int i = 0; i < n && !rc; i++) {
    if (table) {
      long idx = (long)labels[i];
      if (idx < 0 || idx >= sde->N) {
        rc = sde_fail(SDE_EINVAL, "time t[%d] = %g outside [0, 1]", i, (double)t[i]);
        break;
      }
      stds[i] = table[idx];
    } else {
      float lmc = vp_lmc_f32(sde, t[i]);
      float v = 1.0f - expf(2.0f * lmc);
      stds[i] = sde->kind == SDE_VP ? sqrtf(v) : v;
    }
    if (!(stds[i] > 0.0f)) /* t = 0: the score -out/std does not exist */
      rc = sde_fail(SDE_EINVAL, "time t[%d] = %g: the %s marginal std is 0 there and the score "
                    "undefined; use t > 0", i, (double)t[i], sde_kind_name(sde->kind));
  }
  free(owned);
  return rc;
}

static int network_score(const sde_model *m, const sde_sde *sde, int n, const float *x,
                         const float *t, float *out) {
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  const sde_backend *be = impl_of(m)->be;
  if (!be->host_memory) {
    /* host x in, host score out, through the pooled workspace's staging buffers */
    const size_t bytes = (size_t)n * (size_t)sde_model_dim(m) * sizeof(float);
    sde_net_workspace *ws = NULL;
    int rc = ws_acquire(m, n, &ws);
    if (rc) return rc;
    float *xd = ws->io, *od = ws->io + (size_t)ws->max_batch * (size_t)sde_model_dim(m);
    rc = be->upload(be, xd, x, bytes);
    if (!rc) rc = sde_network_score_dev_ws(m, sde, n, xd, t, od, ws);
    if (!rc) rc = be->download(be, out, od, bytes); /* waits for the work */
    ws_release(m, ws);
    return rc;
  }
  float *labels = sde_malloc((size_t)n * 2 * sizeof(float));
  if (!labels) return SDE_ENOMEM;
  float *stds = labels + n;
  int rc = sde_network_labels(m, sde, n, t, labels);
  if (!rc) rc = sde_network_forward(m, n, x, labels, out);
  if (!rc && sde->kind != SDE_VE) rc = score_stds(m, sde, n, t, labels, stds);
  if (!rc && sde->kind != SDE_VE) {
    const size_t D = (size_t)sde_model_dim(m);
    for (int i = 0; i < n; i++) {
      float *o = out + (size_t)i * D;
      const float std = stds[i];
      for (size_t k = 0; k < D; k++) o[k] = -o[k] / std;
    }
  }
  free(labels);
  return rc;
}

/* The score in backend memory with the workspace ws (already taken). */
int sde_network_score_dev_ws(const sde_model *m, const sde_sde *sde, int n, const float *x,
                        const float *t, float *out, sde_net_workspace *ws) {
  const sde_backend *be = impl_of(m)->be;
  float *labels = sde_malloc((size_t)n * 2 * sizeof(float));
  double *a = sde_malloc((size_t)n * 2 * sizeof(double));
  int rc = labels && a ? SDE_OK : SDE_ENOMEM;
  float *stds = labels ? labels + n : NULL;
  if (!rc) rc = sde_network_labels(m, sde, n, t, labels);
  if (!rc) rc = sde_ncsnpp_forward_dev(impl_of(m)->net, n, x, labels, out, ws->buf);
  if (!rc && sde->kind != SDE_VE) rc = score_stds(m, sde, n, t, labels, stds);
  if (!rc && sde->kind != SDE_VE) {
    /* s = -out / std: the table has no divide, so -1/std per row (within 1 ulp) */
    for (int i = 0; i < n; i++) {
      a[i] = -1.0 / (double)stds[i];
      a[n + i] = 0.0;
    }
    rc = be->axpby_rows(be, out, a, out, a + n, out, n, sde_model_dim(m));
  }
  free(labels);
  free(a);
  return rc;
}

int sde_network_score_dev(const sde_model *m, const sde_sde *sde, int n, const float *x,
                          const float *t, float *out) {
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "not a network model");
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  const sde_backend *be = impl_of(m)->be;
  sde_net_workspace *ws = NULL;
  int rc = ws_acquire(m, n, &ws);
  if (rc) return rc;
  rc = sde_network_score_dev_ws(m, sde, n, x, t, out, ws);
  if (!be->host_memory) { /* the pooled workspace may be taken by the next call */
    int rs = be->synchronize(be);
    rc = rc ? rc : rs;
  }
  ws_release(m, ws);
  return rc;
}

/* Training workspaces for VJPs (no dropout), pooled like the forward workspaces. */
int sde_network_train_acquire(const sde_model *m, int n, sde_ncsnpp_train **out) {
  net_impl *im = impl_of(m);
  sde_ncsnpp_train *tw = NULL;
  pthread_mutex_lock(&im->lock);
  for (int i = 0; i < WS_POOL; i++)
    if (im->tpool[i] && im->tpool_batch[i] >= n) {
      tw = im->tpool[i];
      im->tpool[i] = NULL;
      break;
    }
  pthread_mutex_unlock(&im->lock);
  if (tw) {
    *out = tw;
    return SDE_OK;
  }
  return sde_ncsnpp_train_create(im->net, n, 0, out);
}

void sde_network_train_release(const sde_model *m, sde_ncsnpp_train *tw, int n) {
  net_impl *im = impl_of(m);
  pthread_mutex_lock(&im->lock);
  for (int i = 0; i < WS_POOL && tw; i++)
    if (!im->tpool[i]) {
      im->tpool[i] = tw;
      im->tpool_batch[i] = n;
      tw = NULL;
    }
  pthread_mutex_unlock(&im->lock);
  sde_ncsnpp_train_free(tw);
}

/* out = vᵀ ∂s/∂x: one training forward, then the input gradient of Σ (∂s/∂out · v)·out. */
static int network_score_vjp(const sde_model *m, const sde_sde *sde, int n, const float *x,
                             const float *t, const float *v, float *out) {
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  net_impl *im = impl_of(m);
  const size_t D = (size_t)sde_model_dim(m), nd = (size_t)n * D;
  float *labels = sde_malloc((size_t)n * 2 * sizeof(float));
  float *buf = sde_malloc(nd * sizeof(float));
  sde_ncsnpp_train *tw = NULL;
  int rc = labels && buf ? SDE_OK : SDE_ENOMEM;
  float *stds = labels ? labels + n : NULL;
  if (!rc) rc = sde_network_labels(m, sde, n, t, labels);
  if (!rc && sde->kind != SDE_VE) rc = score_stds(m, sde, n, t, labels, stds);
  if (!rc) rc = sde_network_train_acquire(m, n, &tw);
  if (!rc) rc = sde_ncsnpp_train_forward(im->net, tw, n, x, labels, 0.0f, 0, 0, buf);
  if (!rc) {
    /* dL/dout = v · ∂s/∂out: 1 (VE) or -1/std */
    for (int i = 0; i < n; i++) {
      const float *vi = v + (size_t)i * D;
      float *g = buf + (size_t)i * D;
      if (sde->kind == SDE_VE) memcpy(g, vi, D * sizeof(float));
      else for (size_t k = 0; k < D; k++) g[k] = -vi[k] / stds[i];
    }
    memset(out, 0, nd * sizeof(float));
    rc = sde_ncsnpp_train_backward(im->net, tw, buf, NULL, out);
  }
  if (tw) sde_network_train_release(m, tw, n);
  free(labels);
  free(buf);
  return rc;
}

static void network_destroy(sde_model *m) {
  if (!m) return;
  net_impl *im = impl_of(m);
  if (im) {
    for (int i = 0; i < WS_POOL; i++) sde_net_workspace_free(im->pool[i]);
    for (int i = 0; i < WS_POOL; i++) sde_ncsnpp_train_free(im->tpool[i]);
    pthread_mutex_destroy(&im->lock);
    sde_ncsnpp_free(im->net);
    free(im->alphas_1m_sqrt);
    sde_backend_close(im->be);
    free(im);
  }
  free(m);
}

static const sde_model_ops network_ops = {
  .kind = "ncsnpp",
  .score = network_score,
  .score_div = NULL,
  .score_vjp = network_score_vjp,
  .destroy = network_destroy,
};

/* ---- device ---------------------------------------------------------------------------- */

int sde_network_use_backend(sde_model *m, const sde_backend *be, int fell_back,
                            const char *reason) {
  if (!sde_network_is(m)) {
    sde_backend_close(be);
    return sde_fail(SDE_EINVAL, "not a network model");
  }
  net_impl *im = impl_of(m);
  /* pooled workspaces are memory of the old backend */
  for (int i = 0; i < WS_POOL; i++) {
    sde_net_workspace_free(im->pool[i]);
    sde_ncsnpp_train_free(im->tpool[i]);
    im->pool[i] = NULL;
    im->tpool[i] = NULL;
  }
  int rc = sde_ncsnpp_set_backend(im->net, be); /* uploads the parameters */
  if (rc) {
    sde_backend_close(be);
    return rc;
  }
  sde_backend_close(im->be);
  im->be = be;
  im->fell_back = fell_back;
  snprintf(im->reason, sizeof im->reason, "%s", reason ? reason : "");
  return SDE_OK;
}

const sde_backend *sde_network_backend(const sde_model *m) {
  return sde_network_is(m) ? impl_of(m)->be : NULL;
}

int sde_network_fell_back(const sde_model *m, const char **reason) {
  const net_impl *im = impl_of(m);
  *reason = im->reason;
  return im->fell_back;
}

/* ---- construction --------------------------------------------------------------------- */

static uint64_t fnv1a_words(uint64_t h, const void *data, size_t len) {
  const uint8_t *p = data;
  const uint64_t prime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w = 0;
    for (int k = 7; k >= 0; k--) w = (w << 8) | p[i + k];
    h = (h ^ w) * prime;
  }
  if (i < len) {
    uint64_t w = 0;
    for (size_t k = len; k > i; k--) w = (w << 8) | p[k - 1];
    h = (h ^ w) * prime;
  }
  return h;
}

static int compute_id(const sde_ncsnpp *net, char id[33]) {
  char *json = sde_ncsnpp_config_to_json(sde_ncsnpp_get_config(net));
  if (!json) return SDE_ENOMEM;
  int64_t count;
  const float *p = sde_ncsnpp_param_buffer_const(net, &count);
  uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
  h1 = fnv1a_words(h1, json, strlen(json));
  h2 = fnv1a_words(h2, json, strlen(json));
  /* parameters as little-endian bytes (the machine is little-endian on every target;
   * convert explicitly to stay exact elsewhere) */
  uint8_t chunk[4096];
  for (int64_t i = 0; i < count;) {
    size_t k = 0;
    for (; k < sizeof chunk && i < count; k += 4, i++) {
      uint32_t b;
      memcpy(&b, &p[i], 4);
      chunk[k] = (uint8_t)b; chunk[k + 1] = (uint8_t)(b >> 8);
      chunk[k + 2] = (uint8_t)(b >> 16); chunk[k + 3] = (uint8_t)(b >> 24);
    }
    h1 = fnv1a_words(h1, chunk, k);
    h2 = fnv1a_words(h2, chunk, k);
  }
  free(json);
  snprintf(id, 33, "%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
  return SDE_OK;
}

/* Wraps a network (ownership taken) into a model (network_internal.h). */
int sde_network_wrap(sde_ncsnpp *net, sde_model **out) {
  *out = NULL;
  const sde_ncsnpp_config *c = sde_ncsnpp_get_config(net);
  sde_model *m = sde_calloc(1, sizeof *m);
  net_impl *im = sde_calloc(1, sizeof *im);
  if (!m || !im) {
    free(m);
    free(im);
    sde_ncsnpp_free(net);
    return SDE_ENOMEM;
  }
  im->net = net;
  im->be = sde_backend_cpu();
  sde_ncsnpp_freeze(net);
  pthread_mutex_init(&im->lock, NULL);
  m->ops = &network_ops;
  m->impl = im;
  m->channels = c->num_channels;
  m->height = m->width = c->image_size;
  m->is_image = 1;
  m->centered = c->centered;
  m->num_classes = 0;
  m->has_sde = c->has_sde;
  if (c->has_sde) m->sde = c->sde;
  else sde_init(&m->sde, SDE_VE);
  int rc = compute_id(net, m->id);
  if (!rc && c->has_sde && c->sde.kind == SDE_VP && !c->continuous)
    rc = vp_discrete_table(im, &c->sde, &im->alphas_1m_sqrt);
  if (rc) {
    network_destroy(m);
    return rc;
  }
  *out = m;
  return SDE_OK;
}

