/* Score-model dispatch and the JSON descriptions of the analytic models (model.h). Loading
 * any model file, networks included, is device.c's (sde_model_load, device.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/sde.h"

#define MODEL_JSON_MAX_BYTES (256u << 20)

int sde_model_score(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
                    float *out) {
  if (!m || !m->ops || !m->ops->score) return sde_fail(SDE_EINVAL, "no score model");
  /* the models divide by the marginal std at t: a time outside [0, T] has none */
  for (int i = 0; i < n; i++)
    if (!(t[i] >= 0.0f && t[i] <= (float)SDE_T))
      return sde_fail(SDE_EINVAL, "time t[%d] = %g must be in [0, %g]", i, (double)t[i], SDE_T);
  return m->ops->score(m, sde, n, x, t, out);
}

void sde_model_free(sde_model *m) {
  if (m && m->ops && m->ops->destroy) m->ops->destroy(m);
}

/* Optional "sde": {"kind":"ve","sigma_min":..,"sigma_max":..,"beta_min":..,"beta_max":..,"N":..} */
static int parse_sde(const sde_json *obj, sde_model *m) {
  const sde_json *js = sde_json_get(obj, "sde");
  if (!js) return SDE_OK;
  const char *kind;
  int status = sde_json_str(sde_json_get(js, "kind"), "sde.kind", &kind);
  if (status) return status;
  sde_kind k;
  if ((status = sde_kind_from_name(kind, &k))) return status;
  sde_init(&m->sde, k);
  int64_t N = m->sde.N;
  if ((status = sde_json_opt_number(js, "sigma_min", &m->sde.sigma_min)) ||
      (status = sde_json_opt_number(js, "sigma_max", &m->sde.sigma_max)) ||
      (status = sde_json_opt_number(js, "beta_min", &m->sde.beta_min)) ||
      (status = sde_json_opt_number(js, "beta_max", &m->sde.beta_max)) ||
      (status = sde_json_opt_int(js, "N", 2, 1000000, &N)))
    return status;
  m->sde.N = (int)N;
  if ((status = sde_validate(&m->sde))) return status;
  m->has_sde = 1;
  return SDE_OK;
}

/* means: [[..D..] x K]; stds: same shape, or [s_k] per component, or one number. */
static int load_gmm(const sde_json *root, sde_model **out) {
  const sde_json *jw = sde_json_get(root, "weights"), *jm = sde_json_get(root, "means"),
                 *js = sde_json_get(root, "stds");
  if (!jw || jw->type != SDE_JSON_ARRAY || jw->count == 0)
    return sde_fail(SDE_EFORMAT, "gmm: \"weights\" must be a non-empty array of numbers");
  if (!jm || jm->type != SDE_JSON_ARRAY || jm->count != jw->count)
    return sde_fail(SDE_EFORMAT, "gmm: \"means\" must be an array of %zu arrays (one per weight)",
                    jw->count);
  if (!js) return sde_fail(SDE_EFORMAT, "gmm: \"stds\" is missing");
  const size_t K = jw->count;
  const sde_json *first = sde_json_at(jm, 0);
  if (!first || first->type != SDE_JSON_ARRAY || first->count == 0 || first->count > (1u << 24))
    return sde_fail(SDE_EFORMAT, "gmm: means[0] must be a non-empty array of numbers");
  const size_t D = first->count;
  if (K > 100000 || K * D > (size_t)1 << 28)
    return sde_fail(SDE_EFORMAT, "gmm: too large (%zu components x %zu dimensions)", K, D);
  double *w = sde_malloc(sizeof(double) * K), *mu = sde_malloc(sizeof(double) * K * D),
         *sd = sde_malloc(sizeof(double) * K * D);
  int status = (!w || !mu || !sd) ? SDE_ENOMEM : SDE_OK;
  size_t got;
  if (!status) status = sde_json_numbers(jw, "gmm.weights", w, K, &got);
  for (size_t k = 0; k < K && !status; k++) {
    char what[64];
    snprintf(what, sizeof what, "gmm.means[%zu]", k);
    status = sde_json_numbers(sde_json_at(jm, k), what, mu + k * D, D, &got);
    if (!status && got != D)
      status = sde_fail(SDE_EFORMAT, "gmm: means[%zu] has %zu entries, means[0] has %zu", k, got, D);
  }
  if (!status && js->type == SDE_JSON_NUMBER) {
    for (size_t i = 0; i < K * D; i++) sd[i] = js->number;
  } else if (!status && js->type == SDE_JSON_ARRAY && js->count == K) {
    for (size_t k = 0; k < K && !status; k++) {
      const sde_json *row = sde_json_at(js, k);
      char what[64];
      snprintf(what, sizeof what, "gmm.stds[%zu]", k);
      if (row->type == SDE_JSON_NUMBER) {
        for (size_t d = 0; d < D; d++) sd[k * D + d] = row->number;
      } else {
        status = sde_json_numbers(row, what, sd + k * D, D, &got);
        if (!status && got != D)
          status = sde_fail(SDE_EFORMAT, "gmm: stds[%zu] has %zu entries, expected %zu", k, got, D);
      }
    }
  } else if (!status) {
    status = sde_fail(SDE_EFORMAT, "gmm: \"stds\" must be a number, or an array of %zu numbers or arrays", K);
  }
  if (!status) status = sde_gmm_create((int)K, (int64_t)D, w, mu, sd, out);
  free(w);
  free(mu);
  free(sd);
  return status;
}

/* Joins a relative path onto the folder of `base`. */
static void resolve_path(const char *base, const char *rel, char *out, size_t size) {
  const char *slash = strrchr(base, '/');
  if (rel[0] == '/' || !slash) {
    snprintf(out, size, "%s", rel);
    return;
  }
  snprintf(out, size, "%.*s/%s", (int)(slash - base), base, rel);
}

static int load_empirical(const sde_json *root, const char *json_path, sde_model **out) {
  const char *rel;
  int status = sde_json_str(sde_json_get(root, "data"), "empirical.data", &rel);
  if (status) return status;
  int centered = 0;
  int64_t want_channels = 0;
  if ((status = sde_json_opt_bool(root, "centered", &centered)) ||
      (status = sde_json_opt_int(root, "channels", 0, 4, &want_channels)))
    return status;
  char path[PATH_MAX];
  resolve_path(json_path, rel, path, sizeof path);
  float *data = NULL;
  int M, C, H, W, is_image;
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    status = sde_png_read_dir(path, (int)want_channels, &data, &M, &C, &H, &W);
    is_image = 1;
  } else {
    int ndim;
    int64_t shape[SDE_NPY_MAX_DIMS];
    status = sde_npy_read(path, &data, &ndim, shape);
    if (!status && ndim != 2 && ndim != 4) {
      free(data);
      return sde_fail(SDE_EFORMAT, "%s: expected [M, D] or [M, C, H, W] data, got %d dimensions",
                      path, ndim);
    }
    if (!status) {
      if (shape[0] < 1 || shape[0] > INT32_MAX || shape[1] > INT32_MAX ||
          (ndim == 4 && (shape[2] > INT32_MAX || shape[3] > INT32_MAX))) {
        free(data);
        return sde_fail(SDE_EFORMAT, "%s: bad data shape", path);
      }
      M = (int)shape[0];
      is_image = ndim == 4;
      C = is_image ? (int)shape[1] : 1;
      H = is_image ? (int)shape[2] : 1;
      W = is_image ? (int)shape[3] : (int)shape[1];
    }
  }
  if (status) return sde_fail_context(status, "empirical model data");
  /* Image data are stored in [0,1]; centred models work in [-1,1]. */
  if (centered) {
    for (int64_t i = 0; i < (int64_t)M * C * H * W; i++) data[i] = 2.0f * data[i] - 1.0f;
  }
  status = sde_empirical_create(M, C, H, W, data, centered, out);
  free(data);
  if (!status) (*out)->is_image = is_image;
  return status;
}

int sde_model_load_json(const char *path, sde_model **out) {
  if (!path || !out) return sde_fail(SDE_EINVAL, "model: no path");
  *out = NULL;
  sde_json *root = sde_json_parse_file(path, MODEL_JSON_MAX_BYTES);
  if (!root) return SDE_EFORMAT; /* the message already names the file */
  int status;
  const char *kind = NULL;
  if (root->type != SDE_JSON_OBJECT) {
    status = sde_fail(SDE_EFORMAT, "top level must be an object");
  } else if ((status = sde_json_str(sde_json_get(root, "kind"), "kind", &kind)) == SDE_OK) {
    if (!strcmp(kind, "gmm")) status = load_gmm(root, out);
    else if (!strcmp(kind, "empirical")) status = load_empirical(root, path, out);
    else status = sde_fail(SDE_EFORMAT, "unknown model kind '%s' (expected gmm or empirical)", kind);
  }
  if (!status) {
    status = parse_sde(root, *out);
    if (status) {
      sde_model_free(*out);
      *out = NULL;
    }
  }
  sde_json_free(root);
  return status ? sde_fail_context(status, "%s", path) : SDE_OK;
}
