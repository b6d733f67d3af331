/* The NCSN++ / DDPM++ network behind the score-model interface (model.h), its file
 * loader/saver and the labels and output -> score maps of get_score_fn (docs/math.md#labels).
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
#include "../internal.h"
#include "scoresde/device.h"
#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/train.h"
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
static int tws_acquire(const sde_model *m, int n, sde_ncsnpp_train **out) {
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

static void tws_release(const sde_model *m, sde_ncsnpp_train *tw, int n) {
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
  if (!rc) rc = tws_acquire(m, n, &tw);
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
  if (tw) tws_release(m, tw, n);
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

/* ---- classifier guidance --------------------------------------------------------------- */

/* logits of a classifier network and, when grad_out is given, grad_out[n, D] +=
 * scale · ∇x log softmax(logits)[y] */
static int classifier_eval(const sde_model *clf, const sde_sde *sde, int n, const float *x,
                           const float *t, float *logits, int y, double scale,
                           float *grad_out) {
  const sde_ncsnpp_config *c = sde_network_config(clf);
  if (!c || c->num_classes < 1) return sde_fail(SDE_EINVAL, "not a classifier network");
  net_impl *im = impl_of(clf);
  const int K = c->num_classes;
  const size_t D = (size_t)sde_model_dim(clf);
  float *labels = sde_malloc((size_t)n * sizeof(float));
  float *dl = sde_malloc((size_t)n * K * sizeof(float));
  float *dx = grad_out ? sde_calloc((size_t)n * D, sizeof(float)) : NULL;
  sde_ncsnpp_train *tw = NULL;
  int rc = labels && dl && (dx || !grad_out) ? SDE_OK : SDE_ENOMEM;
  if (!rc) rc = sde_network_labels(clf, sde, n, t, labels);
  if (!rc) rc = tws_acquire(clf, n, &tw);
  if (!rc) rc = sde_ncsnpp_train_forward(im->net, tw, n, x, labels, 0.0f, 0, 0, logits);
  if (!rc && grad_out) {
    for (int i = 0; i < n; i++) { /* d log softmax[y] / d logits = onehot(y) - softmax */
      const float *lg = logits + (size_t)i * K;
      double mx = lg[0], se = 0;
      for (int k = 1; k < K; k++) mx = lg[k] > mx ? lg[k] : mx;
      for (int k = 0; k < K; k++) se += exp((double)lg[k] - mx);
      for (int k = 0; k < K; k++)
        dl[(size_t)i * K + k] = (float)((k == y ? 1.0 : 0.0) - exp((double)lg[k] - mx) / se);
    }
    rc = sde_ncsnpp_train_backward(im->net, tw, dl, NULL, dx);
    if (!rc)
      for (size_t i = 0; i < (size_t)n * D; i++) grad_out[i] += (float)(scale * dx[i]);
  }
  if (tw) tws_release(clf, tw, n);
  free(labels);
  free(dl);
  free(dx);
  return rc;
}

int sde_classifier_logp(const sde_model *classifier, const sde_sde *sde, int n, const float *x,
                        const float *t, float *logp) {
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  int rc = classifier_eval(classifier, sde, n, x, t, logp, 0, 0.0, NULL);
  if (rc) return rc;
  const int K = sde_network_config(classifier)->num_classes;
  for (int i = 0; i < n; i++) {
    float *lg = logp + (size_t)i * K;
    double mx = lg[0], se = 0;
    for (int k = 1; k < K; k++) mx = lg[k] > mx ? lg[k] : mx;
    for (int k = 0; k < K; k++) se += exp((double)lg[k] - mx);
    const double lse = mx + log(se);
    for (int k = 0; k < K; k++) lg[k] = (float)(lg[k] - lse);
  }
  return SDE_OK;
}

typedef struct {
  sde_model *base, *clf;
  int y;
  double scale;
  int owns; /* base and clf are freed with the guided model (sde_guided_create) */
} guided_impl;

static int guided_score(const sde_model *m, const sde_sde *sde, int n, const float *x,
                        const float *t, float *out) {
  const guided_impl *g = m->impl;
  int rc = sde_model_score(g->base, sde, n, x, t, out);
  if (rc || n <= 0 || g->scale == 0.0) return rc;
  const int K = sde_network_config(g->clf)->num_classes;
  float *logits = sde_malloc((size_t)n * K * sizeof(float));
  if (!logits) return SDE_ENOMEM;
  rc = classifier_eval(g->clf, sde, n, x, t, logits, g->y, g->scale, out);
  free(logits);
  return rc;
}

static void guided_destroy(sde_model *m) {
  if (!m) return;
  guided_impl *g = m->impl;
  if (g && g->owns) {
    sde_model_free(g->base);
    sde_model_free(g->clf);
  }
  free(g);
  free(m);
}

static const sde_model_ops guided_ops = {
  .kind = "guided",
  .score = guided_score,
  .score_div = NULL,
  .score_vjp = NULL,
  .destroy = guided_destroy,
};

static int guided_new(const sde_model *base, const sde_model *classifier, int class_id,
                      double scale, int owns, sde_model **out) {
  *out = NULL;
  const sde_ncsnpp_config *c = sde_network_config(classifier);
  if (!base || !c || c->num_classes < 1)
    return sde_fail(SDE_EINVAL, "guidance needs a score model and a classifier network");
  if (class_id < 0 || class_id >= c->num_classes)
    return sde_fail(SDE_EINVAL, "class %d outside 0..%d of the classifier", class_id,
                    c->num_classes - 1);
  if (!isfinite(scale)) return sde_fail(SDE_EINVAL, "guidance scale is not finite");
  if (sde_model_dim(base) != sde_model_dim(classifier) ||
      base->channels != classifier->channels || base->height != classifier->height)
    return sde_fail(SDE_EINVAL, "classifier input %dx%dx%d differs from the model's %dx%dx%d",
                    classifier->channels, classifier->height, classifier->width,
                    base->channels, base->height, base->width);
  if (base->centered != classifier->centered)
    return sde_fail(SDE_EINVAL, "classifier and model scale the data differently (centered)");
  sde_model *m = sde_calloc(1, sizeof *m);
  guided_impl *g = sde_calloc(1, sizeof *g);
  if (!m || !g) {
    free(m);
    free(g);
    return SDE_ENOMEM;
  }
  *m = *base; /* shape, scaling, SDE */
  m->id[0] = 0;
  g->base = (sde_model *)base;
  g->clf = (sde_model *)classifier;
  g->y = class_id;
  g->scale = scale;
  g->owns = owns;
  m->ops = &guided_ops;
  m->impl = g;
  m->num_classes = c->num_classes;
  *out = m;
  return SDE_OK;
}

int sde_guided_create(sde_model *base, sde_model *classifier, int class_id, double scale,
                      sde_model **out) {
  int rc = guided_new(base, classifier, class_id, scale, 1, out);
  if (rc) {
    sde_model_free(base);
    sde_model_free(classifier);
  }
  return rc;
}

int sde_guided_wrap(const sde_model *base, const sde_model *classifier, int class_id,
                    double scale, sde_model **out) {
  return guided_new(base, classifier, class_id, scale, 0, out);
}

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

void sde_model_device(const sde_model *m, sde_device_info *info) {
  memset(info, 0, sizeof *info);
  info->device = SDE_DEVICE_CPU;
  info->precision = SDE_PRECISION_FP32;
  if (m && m->ops == &guided_ops) m = ((const guided_impl *)m->impl)->base;
  if (!sde_network_is(m)) return;
  const net_impl *im = impl_of(m);
  info->device = im->be->host_memory ? SDE_DEVICE_CPU : SDE_DEVICE_CUDA;
  info->device_id = im->be->device_id;
  info->precision = im->be->precision;
  info->fell_back = im->fell_back;
  snprintf(info->reason, sizeof info->reason, "%s", im->reason);
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

/* Wraps a network (ownership taken) into a model. */
static int wrap_network(sde_ncsnpp *net, sde_model **out) {
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

int sde_network_create(const sde_ncsnpp_config *c, const float *params, sde_model **out) {
  *out = NULL;
  sde_ncsnpp *net;
  int rc = sde_ncsnpp_create(c, &net);
  if (rc) return rc;
  if (params) {
    int64_t count;
    float *buf = sde_ncsnpp_param_buffer(net, &count);
    memcpy(buf, params, (size_t)count * sizeof(float));
  }
  return wrap_network(net, out);
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, size - k, "[");
  for (int i = 0; i < ndim && k < size; i++)
    k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (k < size) snprintf(buf + k, size - k, "]");
}

int sde_network_from_safetensors(const sde_safetensors *st, sde_model **out) {
  *out = NULL;
  const char *format = sde_st_metadata(st, "format"), *step = sde_st_metadata(st, "step");
  if (format && !strcmp(format, SDE_CHECKPOINT_FORMAT)) /* its tensors are not a model's */
    return sde_fail(SDE_EFORMAT, "a training checkpoint (step %s), not a model: export its EMA "
                    "weights with 'scoresde train --out RUNDIR --resume --steps %s --export "
                    "MODEL.safetensors' (RUNDIR holding it as checkpoint.safetensors)",
                    step ? step : "?", step ? step : "N");
  const char *cfg_text = sde_st_metadata(st, "scoresde");
  const char *cfg_key = "scoresde";
  if (!cfg_text) {
    cfg_text = sde_st_metadata(st, "config");
    cfg_key = "config";
  }
  if (!cfg_text)
    return sde_fail(SDE_EFORMAT, "no network configuration: __metadata__ has neither a "
                    "\"scoresde\" nor a \"config\" entry");
  sde_json *j = sde_json_parse(cfg_text, strlen(cfg_text));
  if (!j) return sde_fail_context(SDE_EFORMAT, "__metadata__ \"%s\"", cfg_key);
  sde_ncsnpp_config c;
  int rc = sde_ncsnpp_config_from_json(j, &c);
  sde_json_free(j);
  if (rc) return sde_fail_context(rc, "__metadata__ \"%s\"", cfg_key);

  sde_ncsnpp *net;
  if ((rc = sde_ncsnpp_create(&c, &net))) return rc;
  int np;
  const sde_net_param *params = sde_ncsnpp_params(net, &np);
  float *buf = sde_ncsnpp_param_buffer(net, NULL);
  char want[128], got[128];
  int matched = 0;
  for (int i = 0; i < np && !rc; i++) {
    const sde_net_param *p = &params[i];
    const sde_st_tensor *t = sde_st_find(st, p->name);
    shape_str(want, sizeof want, p->ndim, p->shape);
    if (!t) {
      rc = sde_fail(SDE_EFORMAT, "missing tensor '%s' (shape %s) required by the config",
                    p->name, want);
      break;
    }
    matched++;
    int same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
    if (!same) {
      shape_str(got, sizeof got, t->ndim, t->shape);
      rc = sde_fail(SDE_EFORMAT, "tensor '%s' has shape %s, the config needs %s", p->name, got,
                    want);
      break;
    }
    if (t->dtype != SDE_ST_F32 && t->dtype != SDE_ST_F16 && t->dtype != SDE_ST_BF16 &&
        t->dtype != SDE_ST_F64) {
      rc = sde_fail(SDE_EFORMAT, "tensor '%s' has dtype %s (F32, F16 or BF16 needed)", p->name,
                    sde_st_dtype_name(t->dtype));
      break;
    }
    rc = sde_st_read_f32(st, t, buf + p->offset);
  }
  if (!rc) {
    const sde_st_tensor *s = sde_st_find(st, "sigmas");
    if (s && (s->ndim != 1 || s->shape[0] != c.sde.N))
      rc = sde_fail(SDE_EFORMAT, "tensor 'sigmas' must be 1-D of length num_scales = %d",
                    c.sde.N);
    int extra = st->n_tensors - matched - (s ? 1 : 0);
    if (!rc && extra > 0) {
      for (int i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        int known = strcmp(name, "sigmas") == 0;
        for (int k = 0; k < np && !known; k++) known = strcmp(params[k].name, name) == 0;
        if (!known) {
          rc = sde_fail(SDE_EFORMAT, "unexpected tensor '%s': not part of the configured "
                        "network (%d tensors expected, file has %d)", name, np, st->n_tensors);
          break;
        }
      }
    }
  }
  if (!rc) {
    int64_t count;
    const float *pb = sde_ncsnpp_param_buffer_const(net, &count);
    for (int64_t i = 0; i < count; i++)
      if (!isfinite(pb[i])) {
        rc = sde_fail(SDE_EFORMAT, "parameter %lld is not finite", (long long)i);
        break;
      }
  }
  if (rc) {
    sde_ncsnpp_free(net);
    return rc;
  }
  return wrap_network(net, out);
}

int sde_network_load(const char *path, sde_model **out) {
  *out = NULL;
  sde_safetensors *st;
  int rc = sde_st_open(path, &st);
  if (rc) return rc;
  rc = sde_network_from_safetensors(st, out);
  sde_st_close(st);
  if (rc) return sde_fail_context(rc, "%s", path);
  return SDE_OK;
}

int sde_network_save(const sde_model *m, const char *path, const char *const *extra_meta,
                     int n_extra) {
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "save: not a network model");
  const sde_ncsnpp *net = impl_of(m)->net;
  int np;
  const sde_net_param *params = sde_ncsnpp_params(net, &np);
  const float *buf = sde_ncsnpp_param_buffer_const(net, NULL);
  sde_st_entry *e = sde_calloc((size_t)np + 1, sizeof *e);
  const char **meta = sde_calloc(2 * ((size_t)n_extra + 2), sizeof *meta);
  char *json = sde_ncsnpp_config_to_json(sde_ncsnpp_get_config(net));
  int rc = SDE_OK;
  if (!e || !meta || !json) {
    rc = SDE_ENOMEM;
    goto done;
  }
  for (int i = 0; i < np; i++) {
    e[i].name = params[i].name;
    e[i].ndim = params[i].ndim;
    for (int d = 0; d < params[i].ndim; d++) e[i].shape[d] = params[i].shape[d];
    e[i].data = buf + params[i].offset;
  }
  int nm = 0;
  meta[2 * nm] = "format";
  meta[2 * nm + 1] = "pt";
  nm++;
  meta[2 * nm] = "scoresde";
  meta[2 * nm + 1] = json;
  nm++;
  for (int i = 0; i < n_extra; i++) {
    if (!strcmp(extra_meta[2 * i], "scoresde") || !strcmp(extra_meta[2 * i], "format")) continue;
    meta[2 * nm] = extra_meta[2 * i];
    meta[2 * nm + 1] = extra_meta[2 * i + 1];
    nm++;
  }
  rc = sde_st_write(path, e, np, meta, nm);
done:
  free(e);
  free(meta);
  free(json);
  return rc;
}

/* ---- diffusers UNet2DModel (NCSN++) import ------------------------------------------------ */

static int file_exists(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  fclose(f);
  return 1;
}

static int int_array(const sde_json *a, const char *what, int *out, int max, int *n) {
  if (!a || a->type != SDE_JSON_ARRAY || (int)a->count > max || a->count == 0)
    return sde_fail(SDE_EFORMAT, "diffusers config: %s must be an array of 1..%d integers", what,
                    max);
  for (size_t i = 0; i < a->count; i++) {
    int64_t v;
    int rc = sde_json_int(a->items[i], what, 1, 1 << 20, &v);
    if (rc) return rc;
    out[i] = (int)v;
  }
  *n = (int)a->count;
  return SDE_OK;
}

/* diffusers config.json (+ scheduler) -> our config */
static int diffusers_config(const sde_json *j, const sde_json *sched, sde_ncsnpp_config *c) {
  int rc;
  const char *s = NULL;
  sde_ncsnpp_config_ncsnpp_cifar10(c);
  c->progressive = SDE_PROG_OUTPUT_SKIP;
  c->progressive_input = SDE_PROG_INPUT_SKIP;
  c->dropout = 0.0;
  snprintf(c->dataset, sizeof c->dataset, "diffusers");
  if ((rc = sde_json_opt_str(j, "_class_name", &s))) return rc;
  if (s && strcmp(s, "UNet2DModel") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: _class_name %s (only UNet2DModel)", s);
  s = "positional";
  if ((rc = sde_json_opt_str(j, "time_embedding_type", &s))) return rc;
  if (strcmp(s, "fourier") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: time_embedding_type \"%s\": only the NCSN++ "
                    "layout (fourier, Skip*Block2D) can be imported", s);
  int boc[SDE_NET_MAX_LEVELS] = {0}, L = 0;
  if ((rc = int_array(sde_json_get(j, "block_out_channels"), "block_out_channels", boc,
                      SDE_NET_MAX_LEVELS, &L)))
    return rc;
  c->nf = boc[0];
  c->num_levels = L;
  for (int l = 0; l < L; l++) {
    if (boc[l] % c->nf)
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: block_out_channels[%d] = %d is not a "
                      "multiple of %d", l, boc[l], c->nf);
    c->ch_mult[l] = boc[l] / c->nf;
  }
  int64_t v = 2;
  if ((rc = sde_json_opt_int(j, "layers_per_block", 1, 1000, &v))) return rc;
  c->num_res_blocks = (int)v;
  const sde_json *ss = sde_json_get(j, "sample_size");
  if (ss && ss->type == SDE_JSON_ARRAY) {
    int hw[2], n = 0;
    if ((rc = int_array(ss, "sample_size", hw, 2, &n))) return rc;
    if (n != 2 || hw[0] != hw[1])
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: only square sample_size");
    c->image_size = hw[0];
  } else {
    v = 0;
    if ((rc = sde_json_opt_int(j, "sample_size", 1, 1 << 16, &v))) return rc;
    if (!v) return sde_fail(SDE_EFORMAT, "diffusers config: no sample_size");
    c->image_size = (int)v;
  }
  v = 3;
  if ((rc = sde_json_opt_int(j, "in_channels", 1, 4096, &v))) return rc;
  c->num_channels = (int)v;
  int64_t oc = v;
  if ((rc = sde_json_opt_int(j, "out_channels", 1, 4096, &oc))) return rc;
  if (oc != c->num_channels)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: out_channels %lld != in_channels %d",
                    (long long)oc, c->num_channels);
  int center = 0;
  if ((rc = sde_json_opt_bool(j, "center_input_sample", &center))) return rc;
  c->centered = !center; /* 2x-1 inside the model = data in [0,1] */
  const sde_json *down = sde_json_get(j, "down_block_types"), *up = sde_json_get(j, "up_block_types");
  if (!down || down->type != SDE_JSON_ARRAY || (int)down->count != L || !up ||
      up->type != SDE_JSON_ARRAY || (int)up->count != L)
    return sde_fail(SDE_EFORMAT, "diffusers: down_block_types/up_block_types need %d entries", L);
  c->num_attn = 0;
  for (int l = 0; l < L; l++) {
    const sde_json *d = down->items[l], *u = up->items[L - 1 - l];
    if (d->type != SDE_JSON_STRING || u->type != SDE_JSON_STRING)
      return sde_fail(SDE_EFORMAT, "diffusers: block types must be strings");
    int attn_d = !strcmp(d->string, "AttnSkipDownBlock2D");
    int attn_u = !strcmp(u->string, "AttnSkipUpBlock2D");
    if (!attn_d && strcmp(d->string, "SkipDownBlock2D"))
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: down block %s (only SkipDownBlock2D / "
                      "AttnSkipDownBlock2D)", d->string);
    if (!attn_u && strcmp(u->string, "SkipUpBlock2D"))
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: up block %s (only SkipUpBlock2D / "
                      "AttnSkipUpBlock2D)", u->string);
    if (attn_d != attn_u)
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: attention at level %d only on one side", l);
    if (attn_d) {
      if (c->num_attn >= SDE_NET_MAX_ATTN) return sde_fail(SDE_EUNSUPPORTED, "too many attention levels");
      c->attn_resolutions[c->num_attn++] = c->image_size >> l;
    }
  }
  /* VE SDE from the scheduler config (ScoreSdeVeScheduler defaults otherwise) */
  sde_init(&c->sde, SDE_VE);
  c->sde.sigma_max = 1348.0;
  c->sde.N = 2000;
  c->has_sde = 1;
  if (sched) {
    int64_t n = c->sde.N;
    if ((rc = sde_json_opt_number(sched, "sigma_min", &c->sde.sigma_min)) ||
        (rc = sde_json_opt_number(sched, "sigma_max", &c->sde.sigma_max)) ||
        (rc = sde_json_opt_int(sched, "num_train_timesteps", 2, 1000000, &n)))
      return sde_fail_context(rc, "scheduler_config.json");
    c->sde.N = (int)n;
  }
  return sde_ncsnpp_config_validate(c);
}

/* diffusers prefix of every all_modules entry, in module order (the walk of
 * convert_ncsnpp_original_checkpoint_to_diffusers.py) */
static int diffusers_prefixes(const sde_ncsnpp_config *c, char (*pref)[64], int max, int *n) {
  int k = 0;
  const int L = c->num_levels, R = c->num_res_blocks;
#define PUSH(...)                                            \
  do {                                                       \
    if (k >= max) return sde_fail(SDE_EINVAL, "too many modules"); \
    snprintf(pref[k++], 64, __VA_ARGS__);                    \
  } while (0)
  PUSH("time_proj");
  PUSH("time_embedding.linear_1");
  PUSH("time_embedding.linear_2");
  PUSH("conv_in");
  for (int l = 0; l < L; l++) {
    int attn = 0;
    for (int a = 0; a < c->num_attn; a++) attn |= c->attn_resolutions[a] == (c->image_size >> l);
    for (int j = 0; j < R; j++) {
      PUSH("down_blocks.%d.resnets.%d", l, j);
      if (attn) PUSH("down_blocks.%d.attentions.%d", l, j);
    }
    if (l != L - 1) {
      PUSH("down_blocks.%d.resnet_down", l);
      PUSH("down_blocks.%d.skip_conv", l);
    }
  }
  PUSH("mid_block.resnets.0");
  PUSH("mid_block.attentions.0");
  PUSH("mid_block.resnets.1");
  for (int u = 0; u < L; u++) {
    int l = L - 1 - u, attn = 0;
    for (int a = 0; a < c->num_attn; a++) attn |= c->attn_resolutions[a] == (c->image_size >> l);
    for (int j = 0; j < R + 1; j++) PUSH("up_blocks.%d.resnets.%d", u, j);
    if (attn) PUSH("up_blocks.%d.attentions.0", u);
    if (l != 0) {
      PUSH("up_blocks.%d.skip_norm", u);
      PUSH("up_blocks.%d.skip_conv", u);
      PUSH("up_blocks.%d.resnet_up", u);
    } else {
      PUSH("conv_norm_out");
      PUSH("conv_out");
    }
  }
#undef PUSH
  *n = k;
  return SDE_OK;
}

/* our sub-name -> diffusers sub-names (new, old) and whether W is transposed */
static void diffusers_sub(const char *sub, const char **a, const char **b, int *transpose) {
  static const char *const map[][3] = {
    {"GroupNorm_0.weight", "norm1.weight", NULL}, {"GroupNorm_0.bias", "norm1.bias", NULL},
    {"Conv_0.weight", "conv1.weight", NULL},      {"Conv_0.bias", "conv1.bias", NULL},
    {"Dense_0.weight", "time_emb_proj.weight", NULL}, {"Dense_0.bias", "time_emb_proj.bias", NULL},
    {"GroupNorm_1.weight", "norm2.weight", NULL}, {"GroupNorm_1.bias", "norm2.bias", NULL},
    {"Conv_1.weight", "conv2.weight", NULL},      {"Conv_1.bias", "conv2.bias", NULL},
    {"Conv_2.weight", "conv_shortcut.weight", NULL}, {"Conv_2.bias", "conv_shortcut.bias", NULL},
    {"NIN_0.W", "to_q.weight", "query.weight"},   {"NIN_0.b", "to_q.bias", "query.bias"},
    {"NIN_1.W", "to_k.weight", "key.weight"},     {"NIN_1.b", "to_k.bias", "key.bias"},
    {"NIN_2.W", "to_v.weight", "value.weight"},   {"NIN_2.b", "to_v.bias", "value.bias"},
    {"NIN_3.W", "to_out.0.weight", "proj_attn.weight"}, {"NIN_3.b", "to_out.0.bias", "proj_attn.bias"},
  };
  *a = sub;
  *b = NULL;
  *transpose = 0;
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (!strcmp(sub, map[i][0])) {
      *a = map[i][1];
      *b = map[i][2];
      *transpose = sub[0] == 'N' && sub[strlen(sub) - 1] == 'W';
      return;
    }
  if (!strcmp(sub, "W")) *a = "weight"; /* time_proj.weight (older: time_proj.W) */
}

int sde_network_load_diffusers(const char *dir, sde_model **out) {
  *out = NULL;
  char base[2048], path[2300];
  snprintf(base, sizeof base, "%s", dir);
  snprintf(path, sizeof path, "%s/config.json", base);
  if (!file_exists(path)) {
    snprintf(base, sizeof base, "%s/unet", dir);
    snprintf(path, sizeof path, "%s/config.json", base);
    if (!file_exists(path))
      return sde_fail(SDE_EIO, "%s: no config.json (a diffusers UNet2DModel folder?)", dir);
  }
  sde_json *j = sde_json_parse_file(path, 1 << 20);
  if (!j) return sde_fail_context(SDE_EFORMAT, "%s", path);
  sde_json *sched = NULL;
  const char *sched_paths[] = {"%s/scheduler_config.json", "%s/scheduler/scheduler_config.json",
                               "%s/../scheduler/scheduler_config.json"};
  for (int i = 0; i < 3 && !sched; i++) {
    snprintf(path, sizeof path, sched_paths[i], base);
    if (file_exists(path)) {
      sched = sde_json_parse_file(path, 1 << 20);
      if (!sched) {
        sde_json_free(j);
        return sde_fail_context(SDE_EFORMAT, "%s", path);
      }
    }
  }
  sde_ncsnpp_config c;
  int rc = diffusers_config(j, sched, &c);
  sde_json_free(j);
  sde_json_free(sched);
  if (rc) return sde_fail_context(rc, "%s", dir);

  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", base);
  if (!file_exists(path))
    return sde_fail(SDE_EIO, "%s: no diffusion_pytorch_model.safetensors (convert .bin weights "
                    "to safetensors first)", base);
  sde_safetensors *st;
  if ((rc = sde_st_open(path, &st))) return rc;
  sde_ncsnpp *net = NULL;
  char(*pref)[64] = NULL;
  float *tmp = NULL;
  int n_pref = 0;
  if ((rc = sde_ncsnpp_create(&c, &net))) goto done;
  int64_t n_mod;
  sde_ncsnpp_count(&c, NULL, &n_mod, NULL);
  pref = sde_calloc((size_t)n_mod + 1, sizeof *pref);
  if (!pref) { rc = SDE_ENOMEM; goto done; }
  if ((rc = diffusers_prefixes(&c, pref, (int)n_mod, &n_pref))) goto done;
  if (n_pref != n_mod) {
    rc = sde_fail(SDE_EINVAL, "internal: %d diffusers modules for %lld", n_pref, (long long)n_mod);
    goto done;
  }
  int np;
  const sde_net_param *params = sde_ncsnpp_params(net, &np);
  float *buf = sde_ncsnpp_param_buffer(net, NULL);
  int used = 0;
  for (int i = 0; i < np && !rc; i++) {
    const sde_net_param *p = &params[i];
    int mi;
    char sub[96];
    if (sscanf(p->name, "all_modules.%d.%95s", &mi, sub) != 2 || mi < 0 || mi >= n_pref) {
      rc = sde_fail(SDE_EINVAL, "internal: parameter name %s", p->name);
      break;
    }
    const char *na, *nb;
    int transpose;
    diffusers_sub(sub, &na, &nb, &transpose);
    if (strstr(pref[mi], ".attentions.") && !strncmp(sub, "GroupNorm_0.", 12))
      na = sub[12] == 'w' ? "group_norm.weight" : "group_norm.bias";
    char name[192];
    snprintf(name, sizeof name, "%s.%s", pref[mi], na);
    const sde_st_tensor *t = sde_st_find(st, name);
    if (!t && nb) {
      snprintf(name, sizeof name, "%s.%s", pref[mi], nb);
      t = sde_st_find(st, name);
    }
    if (!t && !strcmp(sub, "W")) {
      snprintf(name, sizeof name, "%s.W", pref[mi]);
      t = sde_st_find(st, name);
    }
    if (!t) {
      snprintf(name, sizeof name, "%s.%s", pref[mi], na);
      rc = sde_fail(SDE_EFORMAT, "%s: missing tensor '%s' (for %s)", path, name, p->name);
      break;
    }
    used++;
    /* expected diffusers shape: NIN W [in,out] is a Linear [out,in] (or a 1x1 conv) */
    int ok = t->numel == p->numel;
    if (ok && transpose) {
      ok = (t->ndim == 2 || (t->ndim == 4 && t->shape[2] == 1 && t->shape[3] == 1)) &&
           t->shape[0] == p->shape[1] && t->shape[1] == p->shape[0];
    } else if (ok) {
      ok = t->ndim == p->ndim;
      for (int d = 0; ok && d < p->ndim; d++) ok = t->shape[d] == p->shape[d];
    }
    if (!ok) {
      rc = sde_fail(SDE_EFORMAT, "%s: tensor '%s' has the wrong shape for %s", path, name, p->name);
      break;
    }
    if (!transpose) {
      rc = sde_st_read_f32(st, t, buf + p->offset);
    } else {
      free(tmp);
      tmp = sde_malloc((size_t)p->numel * sizeof(float));
      if (!tmp) { rc = SDE_ENOMEM; break; }
      if ((rc = sde_st_read_f32(st, t, tmp))) break;
      int64_t in = p->shape[0], outc = p->shape[1];
      for (int64_t a = 0; a < in; a++)
        for (int64_t b = 0; b < outc; b++) buf[p->offset + a * outc + b] = tmp[b * in + a];
    }
  }
  if (!rc && used != st->n_tensors) {
    for (int i = 0; i < st->n_tensors && !rc; i++) {
      /* find the first file tensor no parameter claimed */
      const char *name = st->tensors[i].name;
      int claimed = 0;
      for (int k = 0; k < n_pref && !claimed; k++) {
        size_t lp = strlen(pref[k]);
        claimed = !strncmp(name, pref[k], lp) && name[lp] == '.';
      }
      if (!claimed)
        rc = sde_fail(SDE_EFORMAT, "%s: unexpected tensor '%s' for this UNet2DModel config", path,
                      name);
    }
    if (!rc)
      rc = sde_fail(SDE_EFORMAT, "%s: %d tensors, the config maps %d", path, st->n_tensors, used);
  }
done:
  free(tmp);
  free(pref);
  sde_st_close(st);
  if (rc) {
    sde_ncsnpp_free(net);
    return rc;
  }
  return wrap_network(net, out);
}
