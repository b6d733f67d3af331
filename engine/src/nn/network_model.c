/* The NCSN++ / DDPM++ network behind the score-model interface (model.h), its file
 * loader/saver and the labels and output -> score maps of get_score_fn (spec §2).
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

#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/network.h"

#define WS_POOL 4

struct sde_net_workspace {
  const sde_ncsnpp *net;
  int max_batch;
  size_t floats;
  float *buf;
};

typedef struct {
  sde_ncsnpp *net;
  pthread_mutex_t lock;           /* guards the workspace pool only */
  sde_net_workspace *pool[WS_POOL]; /* idle workspaces, reused by score calls */
  float *alphas_1m_sqrt;          /* [N] sqrt(1 - alphas_cumprod), float32 as torch (VP discrete) */
} net_impl;

static const sde_model_ops network_ops;

int sde_network_is(const sde_model *m) { return m && m->ops == &network_ops; }

static net_impl *impl_of(const sde_model *m) { return (net_impl *)m->impl; }

const sde_ncsnpp_config *sde_network_config(const sde_model *m) {
  return sde_network_is(m) ? sde_ncsnpp_get_config(impl_of(m)->net) : NULL;
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
  ws->floats = sde_ncsnpp_workspace_floats(net, max_batch);
  ws->buf = sde_malloc(ws->floats * sizeof(float));
  if (!ws->buf) {
    free(ws);
    return SDE_ENOMEM;
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
  free(ws->buf);
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
  return sde_ncsnpp_forward(impl_of(m)->net, n, x, labels, out, ws->buf);
}

int sde_network_forward(const sde_model *m, int n, const float *x, const float *labels,
                        float *out) {
  if (!sde_network_is(m)) return sde_fail(SDE_EINVAL, "not a network model");
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  sde_net_workspace *ws;
  int rc = ws_acquire(m, n, &ws);
  if (rc) return rc;
  rc = sde_ncsnpp_forward(impl_of(m)->net, n, x, labels, out, ws->buf);
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
    if (!isfinite(ti)) return sde_fail(SDE_EINVAL, "time t[%d] is not finite", i);
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

static int network_score(const sde_model *m, const sde_sde *sde, int n, const float *x,
                         const float *t, float *out) {
  if (n <= 0) return n == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", n);
  const sde_ncsnpp_config *c = sde_network_config(m);
  net_impl *im = impl_of(m);
  float *labels = sde_malloc((size_t)n * sizeof(float));
  if (!labels) return SDE_ENOMEM;
  int rc = sde_network_labels(m, sde, n, t, labels);
  if (!rc) rc = sde_network_forward(m, n, x, labels, out);
  if (rc) {
    free(labels);
    return rc;
  }
  const size_t D = (size_t)sde_model_dim(m);
  if (sde->kind != SDE_VE) {
    const float *table = NULL;
    float *owned = NULL;
    if (sde->kind == SDE_VP && !c->continuous) {
      if (im->alphas_1m_sqrt && c->sde.N == sde->N && c->sde.beta_min == sde->beta_min &&
          c->sde.beta_max == sde->beta_max) {
        table = im->alphas_1m_sqrt;
      } else if ((rc = vp_discrete_table(im, sde, &owned))) {
        free(labels);
        return rc;
      } else {
        table = owned;
      }
    }
    for (int i = 0; i < n && !rc; i++) {
      float std;
      if (table) {
        long idx = (long)labels[i];
        if (idx < 0 || idx >= sde->N) {
          rc = sde_fail(SDE_EINVAL, "time t[%d] = %g outside [0, 1]", i, (double)t[i]);
          break;
        }
        std = table[idx];
      } else {
        float lmc = vp_lmc_f32(sde, t[i]);
        float v = 1.0f - expf(2.0f * lmc);
        std = sde->kind == SDE_VP ? sqrtf(v) : v;
      }
      float *o = out + (size_t)i * D;
      for (size_t k = 0; k < D; k++) o[k] = -o[k] / std;
    }
    free(owned);
  }
  free(labels);
  return rc;
}

static void network_destroy(sde_model *m) {
  if (!m) return;
  net_impl *im = impl_of(m);
  if (im) {
    for (int i = 0; i < WS_POOL; i++) sde_net_workspace_free(im->pool[i]);
    pthread_mutex_destroy(&im->lock);
    sde_ncsnpp_free(im->net);
    free(im->alphas_1m_sqrt);
    free(im);
  }
  free(m);
}

static const sde_model_ops network_ops = {
  .kind = "ncsnpp",
  .score = network_score,
  .score_div = NULL,
  .score_vjp = NULL,
  .destroy = network_destroy,
};

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
