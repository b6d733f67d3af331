/* Denoising score-matching training of NCSN++ / DDPM++ networks (scoresde/train.h).
 *
 * One contiguous buffer each for the parameters (inside the network), the gradient, the
 * Adam moments and the EMA, all in state_dict order; a step is forward (training tape,
 * dropout keyed by (seed, step)), loss + its output gradient, backward, global-norm clip,
 * Adam, EMA. Every reduction runs in a fixed order (per-sample sums in double, then the
 * batch in index order), every elementwise update is independent per element, so results
 * do not depend on the OpenMP thread count. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "backend/backend.h"
#include "internal.h"
#include "parallel.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/network.h"
#include "scoresde/rng.h"
#include "scoresde/sde.h"
#include "scoresde/train.h"

#define BATCH_STREAM 0x7ba7c4u

/* ---- training configuration -------------------------------------------------------------- */

void sde_train_config_init(sde_train_config *tc) {
  memset(tc, 0, sizeof *tc);
  tc->batch = 128;
  tc->lr = 2e-4;
  tc->beta1 = 0.9;
  tc->beta2 = 0.999;
  tc->adam_eps = 1e-8;
  tc->warmup = 5000;
  tc->grad_clip = 1.0;
  tc->ema = 0.9999;
  tc->ema_warmup = 0;
  tc->reduce_mean = 0;
  tc->likelihood_weighting = 0;
  tc->eps = 1e-5;
  tc->random_flip = 1;
  tc->seed = 0;
}

double sde_train_lr(const sde_train_config *tc, int64_t step) {
  double lr = tc->warmup > 0 ? tc->lr * fmin((double)(step + 1) / tc->warmup, 1.0) : tc->lr;
  const int64_t D = tc->lr_decay_steps;
  /* from step D on the rate is exactly 0: the weights stay, the EMA goes on averaging */
  if (D > 0) lr *= step >= D ? 0.0 : 0.5 * (1.0 + cos(M_PI * (double)step / (double)D));
  return lr;
}

int sde_train_config_validate(const sde_train_config *tc) {
  if (tc->batch < 1 || tc->batch > 65536)
    return sde_fail(SDE_EINVAL, "training: batch %d outside 1..65536", tc->batch);
  if (!(tc->lr > 0) || !isfinite(tc->lr)) return sde_fail(SDE_EINVAL, "training: lr must be > 0");
  if (!(tc->beta1 >= 0 && tc->beta1 < 1) || !(tc->beta2 >= 0 && tc->beta2 < 1))
    return sde_fail(SDE_EINVAL, "training: Adam betas must lie in [0, 1)");
  if (!(tc->adam_eps > 0)) return sde_fail(SDE_EINVAL, "training: Adam eps must be > 0");
  if (tc->warmup < 0) return sde_fail(SDE_EINVAL, "training: warmup must be >= 0");
  if (tc->lr_decay_steps < 0) return sde_fail(SDE_EINVAL, "training: lr_decay_steps must be >= 0");
  if (!(tc->ema >= 0 && tc->ema < 1)) return sde_fail(SDE_EINVAL, "training: ema must lie in [0, 1)");
  if (!(tc->eps > 0 && tc->eps < 1)) return sde_fail(SDE_EINVAL, "training: eps must lie in (0, 1)");
  if (!isfinite(tc->grad_clip)) return sde_fail(SDE_EINVAL, "training: grad_clip not finite");
  return SDE_OK;
}

char *sde_train_config_to_json(const sde_train_config *tc) {
  char buf[1024];
  int n = snprintf(buf, sizeof buf,
                   "{\"batch\":%d,\"lr\":%.17g,\"beta1\":%.17g,\"beta2\":%.17g,\"adam_eps\":%.17g,"
                   "\"warmup\":%d,\"lr_decay_steps\":%d,\"grad_clip\":%.17g,\"ema\":%.17g,\"ema_warmup\":%s,"
                   "\"reduce_mean\":%s,\"likelihood_weighting\":%s,\"eps\":%.17g,"
                   "\"random_flip\":%s,\"seed\":\"%llu\"}",
                   tc->batch, tc->lr, tc->beta1, tc->beta2, tc->adam_eps, tc->warmup,
                   tc->lr_decay_steps, tc->grad_clip, tc->ema, tc->ema_warmup ? "true" : "false",
                   tc->reduce_mean ? "true" : "false", tc->likelihood_weighting ? "true" : "false",
                   tc->eps, tc->random_flip ? "true" : "false", (unsigned long long)tc->seed);
  char *s = sde_malloc((size_t)n + 1);
  if (s) memcpy(s, buf, (size_t)n + 1);
  return s;
}

int sde_train_config_from_json(const sde_json *j, sde_train_config *tc) {
  if (!j || j->type != SDE_JSON_OBJECT) return sde_fail(SDE_EFORMAT, "training config: not an object");
  int rc;
  int64_t v;
  v = tc->batch;
  if ((rc = sde_json_opt_int(j, "batch", 1, 65536, &v))) return rc;
  tc->batch = (int)v;
  v = tc->warmup;
  if ((rc = sde_json_opt_int(j, "warmup", 0, INT32_MAX, &v))) return rc;
  tc->warmup = (int)v;
  v = tc->lr_decay_steps;
  if ((rc = sde_json_opt_int(j, "lr_decay_steps", 0, INT32_MAX, &v))) return rc;
  tc->lr_decay_steps = (int)v;
  if ((rc = sde_json_opt_number(j, "lr", &tc->lr)) || (rc = sde_json_opt_number(j, "beta1", &tc->beta1)) ||
      (rc = sde_json_opt_number(j, "beta2", &tc->beta2)) ||
      (rc = sde_json_opt_number(j, "adam_eps", &tc->adam_eps)) ||
      (rc = sde_json_opt_number(j, "grad_clip", &tc->grad_clip)) ||
      (rc = sde_json_opt_number(j, "ema", &tc->ema)) || (rc = sde_json_opt_number(j, "eps", &tc->eps)) ||
      (rc = sde_json_opt_bool(j, "ema_warmup", &tc->ema_warmup)) ||
      (rc = sde_json_opt_bool(j, "reduce_mean", &tc->reduce_mean)) ||
      (rc = sde_json_opt_bool(j, "likelihood_weighting", &tc->likelihood_weighting)) ||
      (rc = sde_json_opt_bool(j, "random_flip", &tc->random_flip)))
    return sde_fail_context(rc, "training config");
  const sde_json *seed = sde_json_get(j, "seed");
  if (seed) {
    if (seed->type == SDE_JSON_STRING) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(seed->string, &end, 0);
      if (errno || *end || end == seed->string)
        return sde_fail(SDE_EFORMAT, "training config: seed \"%s\"", seed->string);
      tc->seed = s;
    } else {
      if ((rc = sde_json_int(seed, "training config: seed", 0, INT64_MAX, &v))) return rc;
      tc->seed = (uint64_t)v;
    }
  }
  return sde_train_config_validate(tc);
}

/* ---- data ---------------------------------------------------------------------------------- */

static int read_gz(const char *path, size_t max, unsigned char **data, size_t *len) {
  gzFile f = gzopen(path, "rb");
  if (!f) return sde_fail(SDE_EIO, "%s: cannot open", path);
  size_t cap = 1 << 20, n = 0;
  unsigned char *buf = sde_malloc(cap);
  int rc = buf ? SDE_OK : SDE_ENOMEM;
  while (!rc) {
    if (n == cap) {
      if (cap >= max) {
        rc = sde_fail(SDE_EFORMAT, "%s: larger than %zu bytes", path, max);
        break;
      }
      cap *= 2;
      unsigned char *nb = realloc(buf, cap);
      if (!nb) {
        rc = sde_fail(SDE_ENOMEM, "out of memory reading %s", path);
        break;
      }
      buf = nb;
    }
    int got = gzread(f, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
    if (got < 0) {
      rc = sde_fail(SDE_EIO, "%s: read error (corrupt gzip?)", path);
      break;
    }
    if (got == 0) break;
    n += (size_t)got;
  }
  gzclose(f);
  if (rc) {
    free(buf);
    return rc;
  }
  *data = buf;
  *len = n;
  return SDE_OK;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IDX unsigned-byte images [N, rows, cols] -> float [N,1,rows,cols] in [0,1] */
static int load_idx(const char *path, float **out, int *n, int *h, int *w) {
  unsigned char *d = NULL;
  size_t len = 0;
  int rc = read_gz(path, (size_t)4 << 30, &d, &len);
  if (rc) return rc;
  if (len < 16 || be32(d) != 0x00000803u) {
    free(d);
    return sde_fail(SDE_EFORMAT, "%s: not an IDX image file (magic 0x00000803, 3 dimensions)",
                    path);
  }
  uint32_t N = be32(d + 4), R = be32(d + 8), C = be32(d + 12);
  if (N == 0 || R == 0 || C == 0 || R > 65536 || C > 65536 || (uint64_t)N * R * C != len - 16) {
    free(d);
    return sde_fail(SDE_EFORMAT, "%s: IDX header [%u, %u, %u] does not match %zu data bytes",
                    path, N, R, C, len - 16);
  }
  float *f = sde_malloc((size_t)N * R * C * sizeof(float));
  if (!f) {
    free(d);
    return SDE_ENOMEM;
  }
  for (size_t i = 0; i < (size_t)N * R * C; i++) f[i] = d[16 + i] / 255.0f;
  free(d);
  *out = f;
  *n = (int)N;
  *h = (int)R;
  *w = (int)C;
  return SDE_OK;
}

/* IDX unsigned-byte labels [N] or .npy [N] integers */
int sde_dataset_load_labels(const char *path, sde_dataset *ds) {
  int *lab = NULL, n = 0, rc;
  if (sde_has_suffix(path, ".npy")) {
    float *v;
    int nd;
    int64_t shape[SDE_NPY_MAX_DIMS];
    if ((rc = sde_npy_read(path, &v, &nd, shape))) return rc;
    if (nd != 1) {
      free(v);
      return sde_fail(SDE_EFORMAT, "%s: labels must be a 1-D array", path);
    }
    n = (int)shape[0];
    lab = sde_malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int i = 0; lab && i < n; i++) lab[i] = (int)v[i];
    free(v);
    if (!lab) return SDE_ENOMEM;
  } else {
    unsigned char *d = NULL;
    size_t len = 0;
    if ((rc = read_gz(path, (size_t)1 << 30, &d, &len))) return rc;
    if (len < 8 || be32(d) != 0x00000801u || be32(d + 4) != len - 8) {
      free(d);
      return sde_fail(SDE_EFORMAT, "%s: not an IDX label file (magic 0x00000801)", path);
    }
    n = (int)(len - 8);
    lab = sde_malloc((size_t)n * sizeof(int));
    for (int i = 0; lab && i < n; i++) lab[i] = d[8 + i];
    free(d);
    if (!lab) return SDE_ENOMEM;
  }
  if (n != ds->n) {
    free(lab);
    return sde_fail(SDE_EFORMAT, "%s: %d labels for %d images", path, n, ds->n);
  }
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (lab[i] < 0) {
      free(lab);
      return sde_fail(SDE_EFORMAT, "%s: negative label", path);
    }
    if (lab[i] + 1 > k) k = lab[i] + 1;
  }
  free(ds->labels);
  ds->labels = lab;
  ds->num_classes = k;
  return SDE_OK;
}

static int is_directory(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

int sde_dataset_load(const char *path, int image_size, int channels, sde_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  if (!path) return sde_fail(SDE_EINVAL, "dataset: no path");
  float *raw = NULL;
  int n = 0, c = 0, h = 0, w = 0, rc;
  if (is_directory(path)) {
    /* images larger than the model are refused from their headers, before decoding */
    rc = sde_png_read_dir_max(path, channels, image_size, image_size, &raw, &n, &c, &h, &w);
    if (rc) return rc;
  } else if (sde_has_suffix(path, ".npy")) {
    int nd;
    int64_t shape[SDE_NPY_MAX_DIMS];
    if ((rc = sde_npy_read(path, &raw, &nd, shape))) return rc;
    if (nd == 3) {
      n = (int)shape[0]; c = 1; h = (int)shape[1]; w = (int)shape[2];
    } else if (nd == 4) {
      n = (int)shape[0]; c = (int)shape[1]; h = (int)shape[2]; w = (int)shape[3];
    } else {
      free(raw);
      return sde_fail(SDE_EFORMAT, "%s: expected [N,C,H,W] or [N,H,W], got %d dimensions", path, nd);
    }
    /* uint8 images are 0..255: bring them to [0,1] */
    float mx = 0;
    for (size_t i = 0; i < (size_t)n * c * h * w; i++) mx = raw[i] > mx ? raw[i] : mx;
    if (mx > 1.5f)
      for (size_t i = 0; i < (size_t)n * c * h * w; i++) raw[i] /= 255.0f;
  } else {
    if ((rc = load_idx(path, &raw, &n, &h, &w))) return rc;
    c = 1;
  }
  if (n < 1) {
    free(raw);
    return sde_fail(SDE_EFORMAT, "%s: no images", path);
  }
  int want_c = channels > 0 ? channels : c;
  if (c != want_c && !((c == 1 && want_c == 3) || (c == 3 && want_c == 1))) {
    free(raw);
    return sde_fail(SDE_EFORMAT, "%s: %d channels cannot become %d", path, c, want_c);
  }
  int S = image_size > 0 ? image_size : (h > w ? h : w);
  if (h > S || w > S) {
    free(raw);
    return sde_fail(SDE_EFORMAT, "%s: images of %dx%d are larger than the model's %d", path, h, w,
                    S);
  }
  float *data = sde_calloc((size_t)n * want_c * S * S, sizeof(float));
  if (!data) {
    free(raw);
    return SDE_ENOMEM;
  }
  const int top = (S - h) / 2, left = (S - w) / 2;
  for (int i = 0; i < n; i++)
    for (int oc = 0; oc < want_c; oc++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
          float v;
          const float *src = raw + (size_t)i * c * h * w;
          if (c == want_c) v = src[((size_t)oc * h + y) * w + x];
          else if (c == 1) v = src[(size_t)y * w + x];
          else /* RGB -> gray, ITU-R BT.601 */
            v = 0.299f * src[(size_t)y * w + x] + 0.587f * src[((size_t)h + y) * w + x] +
                0.114f * src[((size_t)2 * h + y) * w + x];
          data[(((size_t)i * want_c + oc) * S + top + y) * S + left + x] = v;
        }
  free(raw);
  ds->n = n;
  ds->channels = want_c;
  ds->height = ds->width = S;
  ds->data = data;
  const char *pos = strstr(path, "images-idx3");
  if (pos) { /* the matching label file, when present */
    size_t len = strlen(path);
    char *lp = sde_malloc(len + 1);
    if (lp) {
      memcpy(lp, path, len + 1);
      memcpy(lp + (pos - path), "labels-idx1", 11);
      if (access(lp, R_OK) == 0 && sde_dataset_load_labels(lp, ds)) {
        free(lp);
        sde_dataset_free(ds);
        return SDE_EFORMAT;
      }
      free(lp);
    }
  }
  return SDE_OK;
}

void sde_dataset_free(sde_dataset *ds) {
  if (!ds) return;
  free(ds->data);
  free(ds->labels);
  memset(ds, 0, sizeof *ds);
}

/* ---- the trainer --------------------------------------------------------------------------- */

struct sde_trainer {
  sde_ncsnpp_config nc;
  sde_train_config tc;
  sde_model *model;       /* training weights (the network inside is updated in place) */
  sde_ncsnpp *net;
  sde_ncsnpp_train *tw;
  int64_t P;              /* parameter floats */
  float *grad, *m, *v, *ema;
  float *trainable;       /* [P] 1 where the element belongs to a trainable tensor, else 0 */
  /* on a device backend: the optimizer state in backend memory (m, v, ema, the mask); the
   * host copies above are refreshed by trainer_to_host when host_stale */
  const sde_backend *dbe;
  float *d_m, *d_v, *d_ema, *d_mask;
  int host_stale;
  int64_t step;
  /* data parallelism: this rank trains on samples [b0, b1) of each global batch */
  sde_train_reduce red;
  int b0, b1;
  /* batch scratch */
  float *x0, *xt, *out, *dout, *t, *labels, *z;
  int *cls;               /* [B] class labels of the batch (classifiers) */
};

static int trainer_alloc(sde_trainer *t) {
  int rc = sde_network_create(&t->nc, NULL, &t->model);
  if (rc) return rc;
  t->net = sde_network_ncsnpp(t->model);
  sde_ncsnpp_param_buffer(t->net, &t->P);
  t->red.rank = 0;
  t->red.world = 1;
  t->b0 = 0;
  t->b1 = t->tc.batch;
  const size_t P = (size_t)t->P, B = (size_t)t->tc.batch,
               D = (size_t)t->nc.num_channels * t->nc.image_size * t->nc.image_size;
  t->grad = sde_malloc(P * sizeof(float));
  t->m = sde_calloc(P, sizeof(float));
  t->v = sde_calloc(P, sizeof(float));
  t->ema = sde_malloc(P * sizeof(float));
  t->trainable = sde_calloc(P, sizeof(float));
  t->x0 = sde_malloc(B * D * sizeof(float));
  t->xt = sde_malloc(B * D * sizeof(float));
  const size_t O = t->nc.num_classes > (int)D ? (size_t)t->nc.num_classes : D;
  t->out = sde_malloc(B * O * sizeof(float));
  t->dout = sde_malloc(B * O * sizeof(float));
  t->cls = sde_calloc(B, sizeof(int));
  t->z = sde_malloc(B * D * sizeof(float));
  t->t = sde_malloc(B * sizeof(float));
  t->labels = sde_malloc(B * sizeof(float));
  if (!t->grad || !t->m || !t->v || !t->ema || !t->trainable || !t->x0 || !t->xt || !t->out ||
      !t->dout || !t->z || !t->t || !t->labels || !t->cls)
    return SDE_ENOMEM;
  int np;
  const sde_net_param *ps = sde_ncsnpp_params(t->net, &np);
  for (int i = 0; i < np; i++)
    if (ps[i].trainable)
      for (int64_t k = 0; k < ps[i].numel; k++) t->trainable[ps[i].offset + k] = 1.0f;
  return SDE_OK;
}

static int check_net_config(const sde_ncsnpp_config *nc) {
  if (!nc->has_sde) return sde_fail(SDE_EINVAL, "training: the network config names no SDE");
  if (!nc->continuous)
    return sde_fail(SDE_EUNSUPPORTED, "training: only continuous-time training is implemented");
  return sde_ncsnpp_config_validate(nc);
}

int sde_trainer_create(const sde_ncsnpp_config *net, const sde_train_config *tc,
                       sde_trainer **out) {
  *out = NULL;
  int rc = check_net_config(net);
  if (!rc) rc = sde_train_config_validate(tc);
  if (rc) return rc;
  sde_trainer *t = sde_calloc(1, sizeof *t);
  if (!t) return SDE_ENOMEM;
  t->nc = *net;
  t->tc = *tc;
  if ((rc = trainer_alloc(t)) || (rc = sde_ncsnpp_init_params(t->net, tc->seed))) {
    sde_trainer_free(t);
    return rc;
  }
  memcpy(t->ema, sde_ncsnpp_param_buffer(t->net, NULL), (size_t)t->P * sizeof(float));
  *out = t;
  return SDE_OK;
}

int sde_trainer_init_from(sde_trainer *t, sde_model *src, int *copied, int *total) {
  if (!t || !src || !sde_network_is(src))
    return sde_fail(SDE_EINVAL, "init-from: needs a trainer and a network model");
  if (t->step != 0 || t->dbe)
    return sde_fail(SDE_EINVAL, "init-from: only a new run on the host (step %lld)",
                    (long long)t->step);
  int ns, nd;
  const sde_ncsnpp *snet = sde_network_ncsnpp(src);
  const sde_net_param *sp = sde_ncsnpp_params(snet, &ns), *dp = sde_ncsnpp_params(t->net, &nd);
  const float *sbuf = sde_network_params(src, NULL);
  float *dbuf = sde_ncsnpp_param_buffer(t->net, NULL);
  int n = 0;
  for (int i = 0; i < nd; i++) {
    const sde_net_param *d = &dp[i];
    for (int j = 0; j < ns; j++) {
      const sde_net_param *q = &sp[j];
      if (strcmp(q->name, d->name) || q->ndim != d->ndim ||
          memcmp(q->shape, d->shape, (size_t)d->ndim * sizeof d->shape[0]))
        continue;
      memcpy(dbuf + d->offset, sbuf + q->offset, (size_t)d->numel * sizeof(float));
      memcpy(t->ema + d->offset, sbuf + q->offset, (size_t)d->numel * sizeof(float));
      n++;
      break;
    }
  }
  if (copied) *copied = n;
  if (total) *total = nd;
  if (!n) return sde_fail(SDE_EINVAL, "init-from: no tensor of the source matches the network");
  return SDE_OK;
}

/* The optimizer state of a device backend back into the host arrays (parameters: the
 * network downloads its own when read). */
static int trainer_to_host(const sde_trainer *ct) {
  sde_trainer *t = (sde_trainer *)ct;
  if (!t->dbe || !t->host_stale) return SDE_OK;
  const size_t bytes = (size_t)t->P * sizeof(float);
  int rc = t->dbe->download(t->dbe, t->m, t->d_m, bytes);
  if (!rc) rc = t->dbe->download(t->dbe, t->v, t->d_v, bytes);
  if (!rc) rc = t->dbe->download(t->dbe, t->ema, t->d_ema, bytes);
  if (!rc) rc = sde_ncsnpp_backend_params_to_host(t->net);
  if (!rc) t->host_stale = 0;
  return rc;
}

static void trainer_free_dev(sde_trainer *t) {
  if (!t->dbe) return;
  t->dbe->free(t->dbe, t->d_m);
  t->dbe->free(t->dbe, t->d_v);
  t->dbe->free(t->dbe, t->d_ema);
  t->dbe->free(t->dbe, t->d_mask);
  t->d_m = t->d_v = t->d_ema = t->d_mask = NULL;
  t->dbe = NULL;
  t->host_stale = 0;
}

/* m, v, ema and the mask uploaded to the network's backend when it is not host memory */
static int trainer_to_dev(sde_trainer *t) {
  const sde_backend *be = sde_ncsnpp_backend(t->net);
  if (be->host_memory) return SDE_OK;
  const size_t bytes = (size_t)(t->P > 0 ? t->P : 1) * sizeof(float), pb = (size_t)t->P * sizeof(float);
  t->dbe = be;
  int rc = be->alloc(be, bytes, (void **)&t->d_m);
  if (!rc) rc = be->alloc(be, bytes, (void **)&t->d_v);
  if (!rc) rc = be->alloc(be, bytes, (void **)&t->d_ema);
  if (!rc) rc = be->alloc(be, bytes, (void **)&t->d_mask);
  if (!rc) rc = be->upload(be, t->d_m, t->m, pb);
  if (!rc) rc = be->upload(be, t->d_v, t->v, pb);
  if (!rc) rc = be->upload(be, t->d_ema, t->ema, pb);
  if (!rc) rc = be->upload(be, t->d_mask, t->trainable, pb);
  if (rc) trainer_free_dev(t);
  return rc;
}

void sde_trainer_free(sde_trainer *t) {
  if (!t) return;
  trainer_free_dev(t);
  sde_ncsnpp_train_free(t->tw);
  sde_model_free(t->model);
  free(t->grad); free(t->m); free(t->v); free(t->ema); free(t->trainable);
  free(t->x0); free(t->xt); free(t->out); free(t->dout); free(t->z); free(t->t); free(t->labels);
  free(t->cls);
  free(t);
}

int64_t sde_trainer_step_count(const sde_trainer *t) { return t->step; }
const sde_ncsnpp_config *sde_trainer_net_config(const sde_trainer *t) { return &t->nc; }
const sde_train_config *sde_trainer_train_config(const sde_trainer *t) { return &t->tc; }
int64_t sde_trainer_num_params(const sde_trainer *t) { return t->P; }
const float *sde_trainer_params(const sde_trainer *t) {
  return sde_ncsnpp_param_buffer_const(t->net, NULL);
}
const float *sde_trainer_ema(const sde_trainer *t) { return trainer_to_host(t) ? NULL : t->ema; }
const float *sde_trainer_adam_m(const sde_trainer *t) { return trainer_to_host(t) ? NULL : t->m; }
const float *sde_trainer_adam_v(const sde_trainer *t) { return trainer_to_host(t) ? NULL : t->v; }

static int finish_step(sde_trainer *t, double loss, sde_train_stats *st);

typedef struct {
  sde_trainer *t;
  const sde_dataset *ds;
  uint64_t step;
  const uint32_t *key;
  int b0;
  double *mc, *sd, *g2; /* [Bl] mean coefficient, std, g² at each sample's time */
} batch_job;

/* rows [r0, r1) of the batch: index, flip and time from one Philox draw per sample, noise z,
 * x_t = mean·x0 + std·z; all keyed by the global sample index gb, so the rows do not depend
 * on which thread makes them */
static void batch_rows(void *ctx, int64_t r0, int64_t r1) {
  const batch_job *j = ctx;
  sde_trainer *t = j->t;
  const sde_ncsnpp_config *nc = &t->nc;
  const sde_train_config *tc = &t->tc;
  const int C = nc->num_channels, S = nc->image_size;
  const size_t D = (size_t)C * S * S;
  for (int b = (int)r0; b < r1; b++) {
    const int gb = j->b0 + b;
    uint32_t r[4], ctr[4] = {(uint32_t)gb, (uint32_t)j->step, BATCH_STREAM,
                             (uint32_t)(j->step >> 32)};
    sde_philox4x32(ctr, j->key, r);
    uint64_t idx = (((uint64_t)r[0] << 32) | r[1]) % (uint64_t)j->ds->n;
    if (nc->num_classes > 0) t->cls[b] = j->ds->labels[idx];
    int flip = tc->random_flip && (r[3] & 1u);
    double u = ((double)r[2] + 0.5) * 0x1.0p-32;
    float tf = (float)(tc->eps + u * (1.0 - tc->eps));
    t->t[b] = tf;
    const float *src = j->ds->data + idx * D;
    float *dst = t->x0 + (size_t)b * D;
    for (int c = 0; c < C; c++)
      for (int y = 0; y < S; y++) {
        const float *sr = src + ((size_t)c * S + y) * S;
        float *dr = dst + ((size_t)c * S + y) * S;
        for (int x = 0; x < S; x++) {
          float v = sr[flip ? S - 1 - x : x];
          dr[x] = nc->centered ? 2.0f * v - 1.0f : v;
        }
      }
    float *z = t->z + (size_t)b * D;
    sde_randn(tc->seed + 1, j->step, (uint32_t)gb + 1u, z, (int64_t)D);
    double a, g;
    sde_marginal(&nc->sde, (double)tf, &j->mc[b], &j->sd[b]);
    sde_coefficients(&nc->sde, (double)tf, &a, &g);
    j->g2[b] = g * g;
    const float mb = (float)j->mc[b], sb = (float)j->sd[b];
    float *xt = t->xt + (size_t)b * D;
    for (size_t i = 0; i < D; i++) xt[i] = mb * dst[i] + sb * z[i];
  }
}

int sde_trainer_step(sde_trainer *t, const sde_dataset *ds, sde_train_stats *st) {
  const sde_ncsnpp_config *nc = &t->nc;
  const sde_train_config *tc = &t->tc;
  const sde_sde *sde = &nc->sde;
  /* B: the global batch (the normaliser); this rank draws samples b0 .. b0+Bl-1 of it
   * into its scratch rows 0 .. Bl-1 */
  const int B = tc->batch, b0 = t->b0, Bl = t->b1 - t->b0, C = nc->num_channels,
            S = nc->image_size;
  const size_t D = (size_t)C * S * S;
  if (nc->num_classes > 0 && (!ds || !ds->labels || ds->num_classes > nc->num_classes))
    return sde_fail(SDE_EINVAL, "training a %d-class classifier needs data with labels in "
                    "0..%d", nc->num_classes, nc->num_classes - 1);
  if (!ds || !ds->data || ds->n < 1 || ds->channels != C || ds->height != S || ds->width != S)
    return sde_fail(SDE_EINVAL, "training: dataset [%d, %d, %d, %d] does not fit the model's "
                    "[%d, %d, %d]", ds ? ds->n : 0, ds ? ds->channels : 0, ds ? ds->height : 0,
                    ds ? ds->width : 0, C, S, S);
  /* the workspace, made at the first step on the trainer's backend for this rank's slice
   * (never for the whole batch when the batch is split) */
  int rc = SDE_OK;
  /* kernels for the batch: a training step's numbers need not match a lone sample's */
  const int flags = SDE_NCSNPP_TRAIN_BY_BATCH | (nc->dropout > 0 ? SDE_NCSNPP_TRAIN_DROPOUT : 0);
  if (!t->tw && (rc = sde_ncsnpp_train_create(t->net, Bl, flags, &t->tw))) return rc;
  const uint64_t step = (uint64_t)t->step;
  const uint32_t key[2] = {(uint32_t)tc->seed, (uint32_t)(tc->seed >> 32)};
  double *mc = sde_malloc((size_t)Bl * 3 * sizeof(double));
  if (!mc) return SDE_ENOMEM;
  double *sd = mc + Bl, *g2 = mc + 2 * Bl;
  batch_job bj = {t, ds, step, key, b0, mc, sd, g2};
  sde_parallel_for(Bl, 1, batch_rows, &bj);
  rc = sde_network_labels(t->model, sde, Bl, t->t, t->labels);
  if (!rc)
    rc = sde_ncsnpp_train_forward(t->net, t->tw, Bl, t->xt, t->labels, (float)nc->dropout,
                                  tc->seed + 2, (step << 16) + (uint64_t)b0, t->out);
  if (rc) {
    free(mc);
    return rc;
  }
  double loss = 0.0;
  if (nc->num_classes > 0) {
    /* cross-entropy of log_softmax(logits)[y]; dL/dlogits = (softmax - onehot)/B */
    const int K = nc->num_classes;
    for (int b = 0; b < Bl; b++) {
      const float *lg = t->out + (size_t)b * K;
      float *d = t->dout + (size_t)b * K;
      int y = t->cls[b];
      double mx = lg[0], se = 0.0;
      for (int k = 1; k < K; k++) mx = lg[k] > mx ? lg[k] : mx;
      for (int k = 0; k < K; k++) se += exp((double)lg[k] - mx);
      double lse = mx + log(se);
      loss += lse - lg[y];
      for (int k = 0; k < K; k++)
        d[k] = (float)((exp((double)lg[k] - lse) - (k == y ? 1.0 : 0.0)) / (double)B);
    }
    free(mc);
    loss /= (double)B;
    return finish_step(t, loss, st);
  }
  /* loss and dL/dout; score s = k·out with k = 1 (VE) or -1/std (VP, sub-VP) */
  const double red = tc->reduce_mean ? 1.0 / (double)D : 0.5;
  for (int b = 0; b < Bl; b++) {
    const double std = sd[b];
    const float k = sde->kind == SDE_VE ? 1.0f : (float)(-1.0 / std);
    const float sf = (float)std, izs = (float)(1.0 / std);
    const double w = tc->likelihood_weighting ? g2[b] : 1.0;
    /* dL/dout = w·red·2r/B · dr/ds · k, dr/ds = std (λ = std²) or 1 (likelihood weighting) */
    const float drds = tc->likelihood_weighting ? 1.0f : sf;
    const float gscale = (float)(w * red * 2.0 / (double)B) * drds * k;
    const float *o = t->out + (size_t)b * D, *z = t->z + (size_t)b * D;
    float *d = t->dout + (size_t)b * D;
    double acc = 0.0;
    for (size_t i = 0; i < D; i++) {
      float s = o[i] * k;
      float r = tc->likelihood_weighting ? s + z[i] * izs : s * sf + z[i];
      acc += (double)r * r;
      d[i] = gscale * r;
    }
    loss += w * red * acc;
  }
  loss /= (double)B;
  free(mc);
  return finish_step(t, loss, st);
}

/* The gradient summed over the ranks (the local parts are already scaled by 1/batch). */
static int reduce_grad(sde_trainer *t, const sde_backend *be, float *grad, size_t P) {
  int rc = SDE_OK;
  const int dev = !be->host_memory;
  if (dev && (rc = be->synchronize(be))) return rc;
  if (!dev || t->red.device_buffers) {
    rc = t->red.sum_f32(grad, P, t->red.ctx);
  } else {
    rc = be->download(be, t->grad, grad, P * sizeof(float));
    if (!rc) rc = t->red.sum_f32(t->grad, P, t->red.ctx);
    if (!rc) rc = be->upload(be, grad, t->grad, P * sizeof(float));
  }
  if (rc) return sde_fail_context(rc, "training: summing the gradient over %d ranks",
                                  t->red.world);
  return SDE_OK;
}

/* backward of dout, clipping, Adam, EMA, step count */
static int finish_step(sde_trainer *t, double loss, sde_train_stats *st) {
  const sde_train_config *tc = &t->tc;
  const uint64_t step = (uint64_t)t->step;
  const int parallel = t->red.world > 1;
  int rc;
  /* every rank sees the global loss, so they all fail (or not) together */
  if (parallel && (rc = t->red.sum_f64(&loss, 1, t->red.ctx)))
    return sde_fail_context(rc, "training: summing the loss over %d ranks", t->red.world);
  if (!isfinite(loss)) return sde_fail(SDE_ENUMERIC, "training: loss is not finite at step %lld",
                                       (long long)t->step);
  const size_t P = (size_t)t->P;
  /* on the network's backend: the CPU works on the host arrays; a device on its own copies
   * of the parameters, gradient and optimizer state (no parameter crosses the bus) */
  const sde_backend *be = sde_ncsnpp_backend(t->net);
  const int dev = !be->host_memory;
  if (dev && t->dbe != be) return sde_fail(SDE_EINVAL, "internal: trainer state not on %s", be->name);
  float *grad = t->grad;
  if (dev) {
    rc = sde_ncsnpp_train_backward_dev(t->net, t->tw, t->dout, &grad);
  } else {
    rc = be->zero(be, t->grad, P * sizeof(float));
    if (!rc) rc = sde_ncsnpp_train_backward(t->net, t->tw, t->dout, t->grad, NULL);
  }
  if (rc) return rc;
  if (parallel && (rc = reduce_grad(t, be, grad, P))) return rc;
  /* global norm over the trainable elements (the others zeroed), in double */
  const float *mask = dev ? t->d_mask : t->trainable;
  be->mul(be, grad, grad, mask, P);
  double nn = 0.0;
  if (P && (rc = be->dot_rows(be, &nn, grad, grad, 1, (int64_t)P))) return rc;
  const double norm = sqrt(nn);
  if (!isfinite(norm)) return sde_fail(SDE_ENUMERIC, "training: gradient is not finite at step %lld",
                                       (long long)t->step);
  float clip = 1.0f;
  if (tc->grad_clip >= 0) {
    double coef = tc->grad_clip / (norm + 1e-6);
    if (coef < 1.0) clip = (float)coef;
  }
  const double lr = sde_train_lr(tc, step);
  /* Adam (torch.optim.Adam, weight decay 0) and EMA: the backend's adam_step */
  const double n_upd = (double)(step + 1);
  const double bc1 = 1.0 - pow(tc->beta1, n_upd), bc2 = 1.0 - pow(tc->beta2, n_upd);
  double decay = tc->ema;
  if (tc->ema_warmup) decay = fmin(decay, (1.0 + n_upd) / (10.0 + n_upd));
  sde_adam_coef k;
  k.clip = clip;
  k.b1 = (float)tc->beta1;
  k.b2 = (float)tc->beta2;
  k.step_size = (float)(lr / bc1);
  k.sbc2 = (float)sqrt(bc2);
  k.eps = (float)tc->adam_eps;
  k.one_m_decay = (float)(1.0 - decay);
  float *p = dev ? sde_ncsnpp_backend_params(t->net) : sde_ncsnpp_param_buffer(t->net, NULL);
  if (!p) return SDE_ENOMEM;
  if (dev) {
    rc = be->adam_step(be, p, t->d_m, t->d_v, t->d_ema, grad, t->d_mask, P, &k);
    t->host_stale = 1;
  } else {
    rc = be->adam_step(be, p, t->m, t->v, t->ema, grad, t->trainable, P, &k);
  }
  if (rc) return rc;
  t->step++;
  if (st) {
    st->loss = loss;
    st->grad_norm = norm;
    st->lr = lr;
  }
  return SDE_OK;
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

int sde_trainer_save(const sde_trainer *t, const char *path, const char *const *extra_meta,
                     int n_extra) {
  char *net_json = sde_ncsnpp_config_to_json(&t->nc);
  char *train_json = sde_train_config_to_json(&t->tc);
  const char **meta = sde_calloc(2 * ((size_t)n_extra + 4), sizeof *meta);
  char step[32];
  int rc = SDE_OK;
  if (!net_json || !train_json || !meta) {
    rc = SDE_ENOMEM;
    goto done;
  }
  if ((rc = trainer_to_host(t))) goto done;
  snprintf(step, sizeof step, "%lld", (long long)t->step);
  int nm = 0;
  meta[2 * nm] = "format"; meta[2 * nm + 1] = SDE_CHECKPOINT_FORMAT; nm++;
  meta[2 * nm] = "step"; meta[2 * nm + 1] = step; nm++;
  meta[2 * nm] = "scoresde"; meta[2 * nm + 1] = net_json; nm++;
  meta[2 * nm] = "scoresde_train"; meta[2 * nm + 1] = train_json; nm++;
  for (int i = 0; i < n_extra; i++) {
    const char *k = extra_meta[2 * i];
    if (!strcmp(k, "format") || !strcmp(k, "step") || !strcmp(k, "scoresde") ||
        !strcmp(k, "scoresde_train"))
      continue;
    meta[2 * nm] = k;
    meta[2 * nm + 1] = extra_meta[2 * i + 1];
    nm++;
  }
  sde_st_entry e[4] = {
    {"params", 1, {t->P}, sde_ncsnpp_param_buffer_const(t->net, NULL)},
    {"adam_m", 1, {t->P}, t->m},
    {"adam_v", 1, {t->P}, t->v},
    {"ema", 1, {t->P}, t->ema},
  };
  rc = sde_st_write(path, e, 4, meta, nm);
done:
  free(net_json);
  free(train_json);
  free(meta);
  return rc;
}

int sde_trainer_use_backend(sde_trainer *t, const sde_backend *be, int fell_back,
                            const char *reason) {
  int rc = trainer_to_host(t); /* the state of a previous device, before it goes */
  if (rc) {
    sde_backend_close(be);
    return rc;
  }
  trainer_free_dev(t);
  /* the training workspace is memory of the old backend (the next step makes a new one) */
  sde_ncsnpp_train_free(t->tw);
  t->tw = NULL;
  rc = sde_network_use_backend(t->model, be, fell_back, reason); /* takes be */
  if (!rc) rc = trainer_to_dev(t);
  return rc;
}

int sde_trainer_set_reduce(sde_trainer *t, const sde_train_reduce *r) {
  if (!t) return sde_fail(SDE_EINVAL, "trainer: none");
  const int B = t->tc.batch;
  sde_train_reduce one = {0, 1, NULL, NULL, 0, NULL};
  if (!r || r->world == 1) r = &one;
  if (r->world < 1 || r->rank < 0 || r->rank >= r->world)
    return sde_fail(SDE_EINVAL, "data-parallel training: rank %d of %d", r->rank, r->world);
  if (r->world > B)
    return sde_fail(SDE_EINVAL, "data-parallel training: %d ranks for a batch of %d (each "
                    "rank needs a sample; use at most %d ranks or a larger --batch)",
                    r->world, B, B);
  if (r->world > 1 && (!r->sum_f32 || !r->sum_f64))
    return sde_fail(SDE_EINVAL, "data-parallel training: no sum functions");
  const int b0 = (int)((int64_t)r->rank * B / r->world),
            b1 = (int)((int64_t)(r->rank + 1) * B / r->world);
  /* the next step makes a workspace for the activations of the local slice only */
  sde_ncsnpp_train_free(t->tw);
  t->tw = NULL;
  t->red = *r;
  t->b0 = b0;
  t->b1 = b1;
  return SDE_OK;
}

void sde_trainer_local_batch(const sde_trainer *t, int *first, int *count) {
  *first = t->b0;
  *count = t->b1 - t->b0;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
  return h;
}

uint64_t sde_trainer_state_hash(const sde_trainer *t) {
  uint64_t h = 0xcbf29ce484222325ull;
  if (trainer_to_host(t)) return 0;
  const size_t bytes = (size_t)t->P * sizeof(float);
  h = fnv1a(h, &t->step, sizeof t->step);
  h = fnv1a(h, sde_ncsnpp_param_buffer_const(t->net, NULL), bytes);
  h = fnv1a(h, t->m, bytes);
  h = fnv1a(h, t->v, bytes);
  return fnv1a(h, t->ema, bytes);
}

int sde_trainer_set_device(sde_trainer *t, const sde_load_options *o, sde_device_info *info) {
  static const sde_load_options defaults = SDE_LOAD_OPTIONS_INIT;
  if (!t) return sde_fail(SDE_EINVAL, "trainer: none");
  if (!o) o = &defaults;
  const sde_backend *be = NULL;
  int fell_back = 0;
  int rc = sde_backend_open(o->device, o->device_id, o->precision, &be, &fell_back);
  if (rc) return rc;
  char reason[192] = "";
  if (fell_back) snprintf(reason, sizeof reason, "%s", sde_errmsg());
  rc = sde_trainer_use_backend(t, be, fell_back, reason);
  if (info) sde_model_device(t->model, info);
  return rc;
}

int sde_trainer_load(const char *path, sde_trainer **out) {
  *out = NULL;
  sde_safetensors *st;
  int rc = sde_st_open(path, &st);
  if (rc) return rc;
  sde_trainer *t = NULL;
  sde_json *jn = NULL, *jt = NULL;
  const char *fmt = sde_st_metadata(st, "format"), *net_s = sde_st_metadata(st, "scoresde"),
             *train_s = sde_st_metadata(st, "scoresde_train"), *step_s = sde_st_metadata(st, "step");
  if (!fmt || strcmp(fmt, SDE_CHECKPOINT_FORMAT) || !net_s || !train_s || !step_s) {
    rc = sde_fail(SDE_EFORMAT, "%s: not a scoresde training checkpoint", path);
    goto done;
  }
  t = sde_calloc(1, sizeof *t);
  if (!t) {
    rc = SDE_ENOMEM;
    goto done;
  }
  jn = sde_json_parse(net_s, strlen(net_s));
  jt = sde_json_parse(train_s, strlen(train_s));
  if (!jn || !jt) {
    rc = sde_fail_context(SDE_EFORMAT, "%s: checkpoint metadata", path);
    goto done;
  }
  if ((rc = sde_ncsnpp_config_from_json(jn, &t->nc)) || (rc = check_net_config(&t->nc))) goto done;
  sde_train_config_init(&t->tc);
  if ((rc = sde_train_config_from_json(jt, &t->tc))) goto done;
  char *end;
  errno = 0;
  long long stp = strtoll(step_s, &end, 10);
  if (errno || *end || stp < 0) {
    rc = sde_fail(SDE_EFORMAT, "%s: bad step \"%s\"", path, step_s);
    goto done;
  }
  t->step = stp;
  if ((rc = trainer_alloc(t))) goto done;
  const char *names[4] = {"params", "adam_m", "adam_v", "ema"};
  float *dst[4] = {sde_ncsnpp_param_buffer(t->net, NULL), t->m, t->v, t->ema};
  for (int i = 0; i < 4 && !rc; i++) {
    const sde_st_tensor *te = sde_st_find(st, names[i]);
    if (!te || te->dtype != SDE_ST_F32 || te->ndim != 1 || te->shape[0] != t->P) {
      rc = sde_fail(SDE_EFORMAT, "%s: tensor %s missing or not F32 [%lld]", path, names[i],
                    (long long)t->P);
      break;
    }
    rc = sde_st_read_f32(st, te, dst[i]);
  }
done:
  sde_json_free(jn);
  sde_json_free(jt);
  sde_st_close(st);
  if (rc) {
    sde_trainer_free(t);
    return sde_fail_context(rc, "%s", path);
  }
  *out = t;
  return SDE_OK;
}

char *sde_checkpoint_metadata(const char *path, const char *key) {
  sde_safetensors *st;
  if (sde_st_open(path, &st)) return NULL;
  const char *v = sde_st_metadata(st, key);
  char *copy = NULL;
  if (v) {
    copy = sde_malloc(strlen(v) + 1);
    if (copy) strcpy(copy, v);
  }
  sde_st_close(st);
  return copy;
}

int sde_trainer_ema_model(const sde_trainer *t, sde_model **out) {
  int rc = trainer_to_host(t);
  if (rc) return rc;
  return sde_network_create(&t->nc, t->ema, out);
}

int sde_trainer_export(const sde_trainer *t, const char *path, const char *const *extra_meta,
                       int n_extra) {
  sde_model *m;
  int rc = sde_trainer_ema_model(t, &m);
  if (rc) return rc;
  rc = sde_network_save(m, path, extra_meta, n_extra); /* atomic, as every safetensors write */
  sde_model_free(m);
  return rc;
}
