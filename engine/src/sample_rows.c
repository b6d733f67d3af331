/* Sampler rows: a batch in backend memory, the score model and the row ops (sample_internal.h).
 *
 * A network model on a device keeps the rows there for the whole run and evaluates the
 * score in place (sde_network_score_dev_ws, with one workspace for the run); every other
 * model (analytic, guided, a network on the CPU) gets host rows on the CPU backend and
 * the ordinary score call. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "nn/network_internal.h"
#include "sample_internal.h"
#include "scoresde/error.h"
#include "scoresde/network.h"

int sde_rows_open(sde_rows *r, const sde_model *m, const sde_sde *sde, int n, sde_stats *st) {
  memset(r, 0, sizeof *r);
  r->m = m;
  r->sde = sde;
  r->n = n;
  r->D = sde_model_dim(m);
  r->st = st;
  r->be = sde_network_backend(m);
  if (!r->be || r->be->host_memory) r->be = sde_backend_cpu();
  r->t = sde_malloc(sizeof(float) * (size_t)n);
  r->a = sde_malloc(sizeof(double) * 2 * (size_t)n);
  if (!r->t || !r->a) {
    sde_rows_close(r);
    return SDE_ENOMEM;
  }
  r->c = r->a + n;
  int rc = r->be->host_memory ? SDE_OK : sde_net_workspace_create(m, n, &r->ws);
  if (rc) sde_rows_close(r);
  return rc;
}

void sde_rows_close(sde_rows *r) {
  if (r->be) r->be->synchronize(r->be); /* nothing may still use what is freed next */
  sde_net_workspace_free(r->ws);
  free(r->t);
  free(r->a);
  free(r->chroma_host);
  r->chroma_host = NULL;
  r->chroma_hw = 0;
  r->ws = NULL;
  r->t = NULL;
  r->a = r->c = NULL;
}

int sde_rows_alloc(const sde_rows *r, float **buf) {
  *buf = NULL;
  return r->be->alloc(r->be, sizeof(float) * (size_t)r->n * (size_t)r->D, (void **)buf);
}

void sde_rows_free(const sde_rows *r, float *buf) {
  if (buf) r->be->free(r->be, buf);
}

int sde_rows_score(sde_rows *r, const float *x, float t, float *s) {
  for (int i = 0; i < r->n; i++) r->t[i] = t;
  r->st->evals++;
  r->st->nfe++;
  if (r->ws) return sde_network_score_dev_ws(r->m, r->sde, r->n, x, r->t, s, r->ws);
  return sde_model_score(r->m, r->sde, r->n, x, r->t, s);
}

int sde_rows_center_chroma(sde_rows *r, const sde_sample_params *p) {
  if (!p->center_chroma || r->m->channels != 3 || !r->m->is_image) return SDE_OK;
  r->chroma_host = sde_malloc(sizeof(float) * 2 * (size_t)r->n * (size_t)r->D);
  if (!r->chroma_host) return sde_fail(SDE_ENOMEM, "center-chroma: out of memory");
  r->chroma_hw = (int64_t)r->m->height * r->m->width;
  return SDE_OK;
}

int sde_rows_noise(const sde_rows *r, uint64_t seed, uint64_t stream0, uint32_t draw, float *z) {
  int rc = r->be->randn_rows(r->be, z, seed, stream0, draw, r->n, r->D);
  if (rc || !r->chroma_hw) return rc;
  float *host = r->be->host_memory ? z : r->chroma_host;
  float *tmp = r->chroma_host + (size_t)r->n * (size_t)r->D;
  if (!r->be->host_memory) rc = sde_rows_get(r, host, z);
  if (!rc) sde_center_chroma(r->n, r->chroma_hw, host, tmp);
  if (!rc && !r->be->host_memory) rc = sde_rows_put(r, z, host);
  return rc;
}

int sde_rows_axpby(sde_rows *r, float *out, double a, const float *x, double c, const float *y) {
  for (int i = 0; i < r->n; i++) {
    r->a[i] = a;
    r->c[i] = c;
  }
  return r->be->axpby_rows(r->be, out, r->a, x, r->c, y, r->n, r->D);
}

int sde_rows_get(const sde_rows *r, float *host, const float *buf) {
  return r->be->download(r->be, host, buf, sizeof(float) * (size_t)r->n * (size_t)r->D);
}

int sde_rows_put(const sde_rows *r, float *buf, const float *host) {
  return r->be->upload(r->be, buf, host, sizeof(float) * (size_t)r->n * (size_t)r->D);
}
