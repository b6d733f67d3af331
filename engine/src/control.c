/* Controllable generation: inpainting and colorization (docs/math.md#control).
 *
 * With the PC sampler both run the ordinary PC loop and, after every corrector and
 * predictor update, replace the known part of the state by the data noised to the current
 * time. Unlike the reference, x_mean keeps the predictor's mean in the unknown part (the
 * reference returns the noisy x there, docs/math.md#pitfall-xmean), so the final denoising step
 * really denoises; see docs/design.md.
 *
 * With a few-step solver the replacement happens in the data-prediction form: every
 * prediction x0 gets the data in its known part before the solver steps with it. The
 * known part of the state then stays alpha_t·data + sigma_t·noise along the whole
 * trajectory (the solvers' weights sum to the same factor as the data's), and the final
 * prediction holds the data exactly there (docs/sampling.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample_internal.h"
#include "scoresde/control.h"
#include "scoresde/error.h"
#include "scoresde/marginal.h"
#include "scoresde/rng.h"

/* Rows: input RGB channel i; columns: latent channel j (luminance first). */
const float sde_color_decouple[3][3] = {
    {0.57735014f, -0.81649649f, 4.7008697e-08f},
    {0.57735026f, 0.40824834f, 0.70710671f},
    {0.57735026f, 0.40824822f, -0.70710683f},
};

/* Inverse of sde_color_decouple, computed once in double (the matrix is orthogonal up to
 * float rounding, so this is ≈ its transpose). */
static void color_couple_matrix(double inv[3][3]) {
  double a[3][3];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) a[i][j] = sde_color_decouple[i][j];
  double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
               a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
               a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      /* cofactor of a[j][i] */
      int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
      inv[i][j] = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
    }
}

void sde_color_transform(int n, int64_t hw, const float *in, float *out, int inverse) {
  double mat[3][3];
  if (inverse) {
    color_couple_matrix(mat);
  } else {
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++) mat[i][j] = sde_color_decouple[i][j];
  }
#pragma omp parallel for schedule(static)
  for (int b = 0; b < n; b++) {
    const float *src = in + (size_t)b * 3 * hw;
    float *dst = out + (size_t)b * 3 * hw;
    for (int64_t p = 0; p < hw; p++) {
      double c[3] = {src[p], src[hw + p], src[2 * hw + p]};
      for (int j = 0; j < 3; j++)
        dst[j * hw + p] = (float)(c[0] * mat[0][j] + c[1] * mat[1][j] + c[2] * mat[2][j]);
    }
  }
}

/* The known part: data [n, D] with mask [n, D] (1 = known), both in the space where the
 * replacement happens (pixels for inpainting, decoupled colours for colorization). */
typedef struct {
  const sde_sde *sde;
  uint64_t seed, stream0;
  int64_t D, hw;
  const float *data, *mask;
  int colour;       /* work in the decoupled colour space */
  float *noise;     /* [n, D] */
  float *tmp;       /* [n, D] decoupled state (colour) */
} known_part;

/* x <- x(1-mask) + (m·data + std·z)·mask; x_mean <- x_mean(1-mask) + m·data·mask. */
static void replace_known(const known_part *k, int n, double m, double std, float *x,
                          float *x_mean) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < (int64_t)n * k->D; j++) {
    const float keep = 1.0f - k->mask[j], mean = (float)m * k->data[j];
    x[j] = x[j] * keep + (mean + (float)std * k->noise[j]) * k->mask[j];
    x_mean[j] = x_mean[j] * keep + mean * k->mask[j];
  }
}

static int constrain_known(void *ctx, int n, float t, uint32_t draw, float *x, float *x_mean) {
  known_part *k = ctx;
  double m, std;
  sde_marginal(k->sde, t, &m, &std);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++)
    sde_randn(k->seed, k->stream0 + (uint64_t)i, draw, k->noise + (size_t)i * k->D, k->D);
  if (!k->colour) {
    replace_known(k, n, m, std, x, x_mean);
    return SDE_OK;
  }
  float *dx = k->tmp;
  float *dmean = k->tmp + (size_t)n * k->D;
  sde_color_transform(n, k->hw, x, dx, 0);
  sde_color_transform(n, k->hw, x_mean, dmean, 0);
  replace_known(k, n, m, std, dx, dmean);
  sde_color_transform(n, k->hw, dx, x, 1);
  sde_color_transform(n, k->hw, dmean, x_mean, 1);
  return SDE_OK;
}

/* x0 <- x0·(1 - mask) + data·mask: the known part of a data prediction. */
static int constrain_x0(void *ctx, int n, float *x0) {
  known_part *k = ctx;
  float *y = k->colour ? k->tmp : x0;
  if (k->colour) sde_color_transform(n, k->hw, x0, y, 0);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < (int64_t)n * k->D; j++)
    y[j] = y[j] * (1.0f - k->mask[j]) + k->data[j] * k->mask[j];
  if (k->colour) sde_color_transform(n, k->hw, y, x0, 1);
  return SDE_OK;
}

/* A few-step solver from the prior x[n, D] whose known part gets alpha_T·data first: the
 * state is then on the marginal at T everywhere. */
static int run_fewstep(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                       uint64_t stream0, known_part *k, float *x, float *out, sde_stats *stats) {
  const double alpha_T = sde_marg_at(sde, SDE_T).alpha;
  float *y = k->colour ? k->tmp : x;
  if (k->colour) sde_color_transform(n, k->hw, x, y, 0);
  for (int64_t j = 0; j < (int64_t)n * k->D; j++) y[j] += (float)alpha_T * k->data[j] * k->mask[j];
  if (k->colour) sde_color_transform(n, k->hw, y, x, 1);
  const double eps = p->eps > 0.0 ? p->eps : sde_sampling_eps(sde);
  return sde_fewstep_run(m, sde, p, n, stream0, 1, SDE_T, eps, p->denoise, x, out, constrain_x0,
                         k, stats);
}

static int check_common(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                        const float *data, const float *out) {
  if (!m || !sde || !p || n < 0 || (n > 0 && (!data || !out)))
    return sde_fail(SDE_EINVAL, "missing model, SDE, parameters or data");
  if (p->sampler == SDE_SAMPLER_ODE)
    return sde_fail(SDE_EUNSUPPORTED, "inpainting and colorization use the PC sampler or a "
                                      "few-step solver (ddim, dpmpp-2m, ...), not ode");
  return sde_validate(sde);
}

int sde_inpaint(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                uint64_t stream0, const float *data, const float *mask, float *out,
                sde_stats *stats) {
  int status = check_common(m, sde, p, n, data, out);
  if (status) return sde_fail_context(status, "inpaint");
  if (n > 0 && !mask) return sde_fail(SDE_EINVAL, "inpaint: no mask");
  const int64_t D = sde_model_dim(m);
  const size_t nd = (size_t)n * (size_t)D;
  for (size_t j = 0; j < nd; j++)
    if (mask[j] != 0.0f && mask[j] != 1.0f)
      return sde_fail(SDE_EINVAL, "inpaint: mask entries must be 0 or 1 (entry %zu is %g)", j,
                      (double)mask[j]);
  known_part k = {.sde = sde, .seed = p->seed, .stream0 = stream0, .D = D, .data = data,
                  .mask = mask};
  float *x = sde_malloc(sizeof(float) * (nd ? nd : 1));
  k.noise = sde_malloc(sizeof(float) * (nd ? nd : 1));
  if (!x || !k.noise) {
    status = SDE_ENOMEM;
    goto done;
  }
  sde_prior_sample(sde, p->seed, stream0, 0, n, D, x);
  if (sde_sampler_is_fewstep(p->sampler)) {
    status = run_fewstep(m, sde, p, n, stream0, &k, x, out, stats);
    goto done;
  }
  /* x = data·mask + prior·(1 - mask) */
  for (size_t j = 0; j < nd; j++) x[j] = data[j] * mask[j] + x[j] * (1.0f - mask[j]);
  status = sde_pc_run(m, sde, p, n, stream0, 1, x, out, constrain_known, &k, stats);
done:
  free(x);
  free(k.noise);
  return status;
}

void sde_center_chroma(int n, int64_t hw, float *x, float *tmp) {
  sde_color_transform(n, hw, x, tmp, 0);
  for (int b = 0; b < n; b++)
    for (int c = 1; c < 3; c++) {
      float *r = tmp + ((size_t)b * 3 + c) * hw;
      double acc = 0.0;
      for (int64_t q = 0; q < hw; q++) acc += r[q];
      const float mu = (float)(acc / (double)hw);
      for (int64_t q = 0; q < hw; q++) r[q] -= mu;
    }
  sde_color_transform(n, hw, tmp, x, 1);
}

int sde_colorize(const sde_model *m, const sde_sde *sde, const sde_sample_params *p, int n,
                 uint64_t stream0, const float *gray, float *out, sde_stats *stats) {
  int status = check_common(m, sde, p, n, gray, out);
  if (status) return sde_fail_context(status, "colorize");
  if (m->channels != 3)
    return sde_fail(SDE_EINVAL, "colorize: the model must have 3 channels (it has %d)", m->channels);
  const int64_t hw = (int64_t)m->height * m->width, D = 3 * hw;
  const size_t nd = (size_t)n * (size_t)D;
  known_part k = {.sde = sde, .seed = p->seed, .stream0 = stream0, .D = D, .hw = hw, .colour = 1};
  float *x = sde_malloc(sizeof(float) * (nd ? nd : 1));
  float *latent = sde_malloc(sizeof(float) * (nd ? nd : 1));
  float *mask = sde_malloc(sizeof(float) * (nd ? nd : 1));
  k.noise = sde_malloc(sizeof(float) * (nd ? nd : 1));
  k.tmp = sde_malloc(sizeof(float) * 2 * (nd ? nd : 1));
  if (!x || !latent || !mask || !k.noise || !k.tmp) {
    status = SDE_ENOMEM;
    goto done;
  }
  /* Luminance (decoupled channel 0) known, the two chroma channels free. */
  for (int b = 0; b < n; b++)
    for (int64_t j = 0; j < D; j++) mask[(size_t)b * D + j] = j < hw ? 1.0f : 0.0f;
  sde_color_transform(n, hw, gray, latent, 0);
  k.data = latent;
  k.mask = mask;
  const double eps = p->eps > 0.0 ? p->eps : sde_sampling_eps(sde);
  if (p->t_start != 0.0 && !(p->t_start > eps && p->t_start <= SDE_T)) {
    status = sde_fail(SDE_EINVAL, "colorize: t_start = %g must lie in (%g, %g]", p->t_start, eps,
                      SDE_T);
    goto done;
  }
  if (p->t_start != 0.0 && p->t_start < SDE_T) {
    if (!sde_sampler_is_fewstep(p->sampler)) {
      status = sde_fail(SDE_EUNSUPPORTED, "colorize: t_start needs a few-step solver");
      goto done;
    }
    /* SDEdit: the gray image on the marginal at t_start; the solver goes on from there */
    const sde_marg mt = sde_marg_at(sde, p->t_start);
    for (int b = 0; b < n; b++) sde_randn(p->seed, stream0 + (uint64_t)b, 0, x + (size_t)b * D, D);
    if (p->center_chroma) sde_center_chroma(n, hw, x, k.tmp);
    for (size_t j = 0; j < nd; j++) x[j] = (float)(mt.alpha * gray[j] + mt.sigma * x[j]);
    status = sde_fewstep_run(m, sde, p, n, stream0, 1, p->t_start, eps, p->denoise, x, out,
                             constrain_x0, &k, stats);
    goto done;
  }
  sde_prior_sample(sde, p->seed, stream0, 0, n, D, x);
  if (p->center_chroma) sde_center_chroma(n, hw, x, k.tmp);
  if (sde_sampler_is_fewstep(p->sampler)) {
    status = run_fewstep(m, sde, p, n, stream0, &k, x, out, stats);
    goto done;
  }
  /* x = couple(decouple(gray)·mask + decouple(prior)·(1 - mask)); the reference masks the
   * RGB prior before decoupling (trap 8), which we do not reproduce. */
  sde_color_transform(n, hw, x, k.tmp, 0);
  for (size_t j = 0; j < nd; j++) k.tmp[j] = latent[j] * mask[j] + k.tmp[j] * (1.0f - mask[j]);
  sde_color_transform(n, hw, k.tmp, x, 1);
  status = sde_pc_run(m, sde, p, n, stream0, 1, x, out, constrain_known, &k, stats);
done:
  free(x);
  free(latent);
  free(mask);
  free(k.noise);
  free(k.tmp);
  return status;
}
