/* Network models from parameters and from files: sde_network_create, and the safetensors
 * layout of docs/math.md#safetensors (load checks every tensor against the config; save
 * writes the canonical "scoresde" metadata). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "network_internal.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/network.h"

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
  return sde_network_wrap(net, out);
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
  return sde_network_wrap(net, out);
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
  const sde_ncsnpp *net = sde_network_net(m);
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

