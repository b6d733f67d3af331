/* Controllable generation (docs/math.md#control): inpainting and colorization with the PC
 * sampler or a few-step solver (p->sampler; not ode), and classifier guidance, a score
 * model that any sampler runs. */
#ifndef SCORESDE_CONTROL_H
#define SCORESDE_CONTROL_H

#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Inpainting: data[n, D] in model space, mask[n, D] with 1 = known, 0 = fill.
 * PC: the known region is re-noised to the current time after every update. Few-step
 * solvers: every data prediction gets the data in the known region (docs/sampling.md). */
int sde_inpaint(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                uint64_t stream0, const float *data, const float *mask, float *out,
                sde_stats *stats);

/* Colorization of 3-channel images: gray[n, 3,H,W] in model space with R = G = B.
 * The luminance coordinate of the orthogonal colour transform is held known. */
int sde_colorize(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                 uint64_t stream0, const float *gray, float *out, sde_stats *stats);

/* The orthogonal colour transform of the reference: latent_j = Σ_i rgb_i M[i][j]. */
extern const float sde_color_decouple[3][3];
/* in/out [n,3,H,W]; inverse = 1 applies M⁻¹ (couple). May work in place. */
void sde_color_transform(int n, int64_t hw, const float *in, float *out, int inverse);

/* Classifier guidance (docs/math.md#guidance): a score model whose score is
 *   s(x, t) + scale · ∇x log p(y = class_id | x, t)
 * with p from a time-dependent classifier network (config num_classes > 0, trained by
 * `scoresde train --num-classes K`; labels from t as for the base model's SDE). Takes
 * ownership of base and classifier (freed with the result, or on failure). No score_vjp. */
int sde_guided_create(sde_model *base, sde_model *classifier, int class_id, double scale,
                      sde_model **out);
/* The same without ownership: base and classifier (shared, e.g. from a model cache) must
 * outlive the result; sde_model_free(result) frees only the wrapper. */
int sde_guided_wrap(const sde_model *base, const sde_model *classifier, int class_id,
                    double scale, sde_model **out);
/* log p(y | x, t) for all classes: logp[n, num_classes] (log-softmax of the logits). */
int sde_classifier_logp(const sde_model *classifier, const sde_sde *sde, int n, const float *x,
                        const float *t, float *logp);

#ifdef __cplusplus
}
#endif
#endif
