/* Classifier guidance (docs/math.md#guidance): a score model whose score adds
 * scale · ∇x log p(y | x, t) of a time-dependent classifier network to a base model's
 * (control.h). The classifier runs through its training forward and backward (the input
 * gradient), with the network model's pooled training workspaces. */
#include <math.h>
#include <stdlib.h>

#include "control_internal.h"
#include "nn/network_internal.h"
#include "scoresde/control.h"
#include "scoresde/error.h"
#include "scoresde/network.h"

/* logits of a classifier network and, when grad_out is given, grad_out[n, D] +=
 * scale · ∇x log softmax(logits)[y] */
static int classifier_eval(const sde_model *clf, const sde_sde *sde, int n, const float *x,
                           const float *t, float *logits, int y, double scale,
                           float *grad_out) {
  const sde_ncsnpp_config *c = sde_network_config(clf);
  if (!c || c->num_classes < 1) return sde_fail(SDE_EINVAL, "not a classifier network");
  const int K = c->num_classes;
  const size_t D = (size_t)sde_model_dim(clf);
  float *labels = sde_malloc((size_t)n * sizeof(float));
  float *dl = sde_malloc((size_t)n * K * sizeof(float));
  float *dx = grad_out ? sde_calloc((size_t)n * D, sizeof(float)) : NULL;
  sde_ncsnpp_train *tw = NULL;
  int rc = labels && dl && (dx || !grad_out) ? SDE_OK : SDE_ENOMEM;
  if (!rc) rc = sde_network_labels(clf, sde, n, t, labels);
  if (!rc) rc = sde_network_train_acquire(clf, n, &tw);
  if (!rc) rc = sde_ncsnpp_train_forward(sde_network_net(clf), tw, n, x, labels, 0.0f, 0, 0, logits);
  if (!rc && grad_out) {
    for (int i = 0; i < n; i++) { /* d log softmax[y] / d logits = onehot(y) - softmax */
      const float *lg = logits + (size_t)i * K;
      double mx = lg[0], se = 0;
      for (int k = 1; k < K; k++) mx = lg[k] > mx ? lg[k] : mx;
      for (int k = 0; k < K; k++) se += exp((double)lg[k] - mx);
      for (int k = 0; k < K; k++)
        dl[(size_t)i * K + k] = (float)((k == y ? 1.0 : 0.0) - exp((double)lg[k] - mx) / se);
    }
    rc = sde_ncsnpp_train_backward(sde_network_net(clf), tw, dl, NULL, dx);
    if (!rc)
      for (size_t i = 0; i < (size_t)n * D; i++) grad_out[i] += (float)(scale * dx[i]);
  }
  if (tw) sde_network_train_release(clf, tw, n);
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


/* The model a guided model wraps, else m itself (device.c: a guided model runs where its
 * base does). */
const sde_model *sde_guided_base(const sde_model *m) {
  return m && m->ops == &guided_ops ? ((const guided_impl *)m->impl)->base : m;
}
