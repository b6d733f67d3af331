/* The score-model interface and the analytic score models.
 *
 * A score model evaluates s(x, t) ≈ ∇x log p_t(x) for a batch: x is [n, D] row-major
 * float32 (D = channels·height·width, image samples in NCHW order), t is [n] (one
 * time per sample, so samples may sit at different times). The SDE is passed to every
 * call because the same weights or data give different scores under VE, VP or sub-VP.
 *
 * Optional capabilities (NULL when absent):
 *   score_div: the exact divergence ∇x·s(x,t) per sample (likelihood without noise);
 *   score_vjp: vᵀ ∂s/∂x per sample (Hutchinson-Skilling divergence estimates).
 *
 * Models are shared read-only between threads and elements; every call is reentrant. */
#ifndef SCORESDE_MODEL_H
#define SCORESDE_MODEL_H

#include <stdint.h>
#include "sde.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sde_model sde_model;

typedef struct {
  const char *kind;
  /* out[n,D] = s(x[n,D], t[n]) */
  int (*score)(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
               float *out);
  /* div[n] = ∇x·s(x, t), exact. */
  int (*score_div)(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
                   double *div);
  /* out[n,D] = v[n,D]ᵀ ∂s/∂x at (x, t). */
  int (*score_vjp)(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
                   const float *v, float *out);
  void (*destroy)(sde_model *m);
} sde_model_ops;

struct sde_model {
  const sde_model_ops *ops;
  int channels, height, width; /* sample shape; a flat vector model has 1 x 1 x D */
  int is_image;                /* samples are images (PNG output makes sense) */
  int centered;                /* image data live in [-1,1] (else [0,1]) */
  int num_classes;             /* 0 when unconditional */
  int has_sde;                 /* the model file names an SDE: `sde` is its default */
  sde_sde sde;
  char id[33];                 /* content hash (hex) identifying the model, "" if unknown */
  void *impl;
};

static inline int64_t sde_model_dim(const sde_model *m) {
  return (int64_t)m->channels * m->height * m->width;
}

int sde_model_score(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
                    float *out);
void sde_model_free(sde_model *m);

/* Gaussian mixture with diagonal covariances: K components in D dimensions.
 * weights[K] (normalised internally), means[K,D], stds[K,D] (>= 0). Under every SDE the
 * noised distribution is again such a mixture, so score, divergence and VJP are exact. */
int sde_gmm_create(int K, int64_t D, const double *weights, const double *means,
                   const double *stds, sde_model **out);

/* Exact log p_t(x) of the noised mixture at time t, per sample (for tests and tools). */
int sde_gmm_logp(const sde_model *m, const sde_sde *sde, int n, const float *x, const float *t,
                 double *logp);
/* Exact samples from the noised mixture p_t, keyed by (seed, stream0 + i). comp[n] may be NULL. */
int sde_gmm_sample(const sde_model *m, const sde_sde *sde, double t, int n, uint64_t seed,
                   uint64_t stream0, float *x, int *comp);
/* Index of the component with the highest posterior at time t, per sample. */
int sde_gmm_classify(const sde_model *m, const sde_sde *sde, int n, const float *x, double t,
                     int *comp);
int sde_gmm_num_components(const sde_model *m);
const double *sde_gmm_weights(const sde_model *m);  /* normalised [K] */
const double *sde_gmm_means(const sde_model *m);    /* [K,D] */
const double *sde_gmm_vars(const sde_model *m);     /* [K,D] variances at t=0; NULL: all 0 */

/* The empirical-data model: the exact score of (1/M) Σ_j N(mean_coef·y_j, std² I), the
 * training set y[M, C,H,W] noised by the SDE. Data are in model space (already scaled:
 * [0,1], or [-1,1] when centered). The model keeps its own copy. */
int sde_empirical_create(int M, int channels, int height, int width, const float *data,
                         int centered, sde_model **out);

/* Loads an analytic model from its JSON description (see docs/cli.md):
 *   {"kind":"gmm","weights":[...],"means":[[...],...],"stds":[[...],...]}
 *   {"kind":"empirical","data":"file.npy|folder of PNGs", "centered":false,
 *    "sde":{"kind":"ve","sigma_max":..}}
 * Relative data paths are resolved against the JSON file's folder. sde_model_load (device.h)
 * loads any model file. */
int sde_model_load_json(const char *path, sde_model **out);


#ifdef __cplusplus
}
#endif
#endif
