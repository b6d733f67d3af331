/* `scoresde`: the command-line face of libscoresde.
 *
 *   scoresde sample | encode | decode | likelihood | inpaint | colorize | noise-scales
 *   scoresde score | info | convert            (network models, engine/cli/cmd_net.c)
 *
 * Conventions (docs/cli.md): data files hold data space values ([0,1] for images); the
 * model's scaler (2x-1 when it is centred) is applied on the way in and undone on the way
 * out. Latents are written and read unscaled. Errors print "scoresde: message" and exit
 * 1; usage errors exit 2; Ctrl-C cancels between two steps and exits 130. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "scoresde/network.h"
#include "scoresde/scoresde.h"

/* ---- options ------------------------------------------------------------------------- */

typedef struct {
  const char *model, *in, *out, *mask, *logp_out;
  const char *sde_name, *sampler_name, *predictor_name, *corrector_name, *ode_name, *div_name;
  const char *schedule_name;                       /* few-step solvers' time grid */
  double churn;                                    /* NAN: not given */
  int no_lower_order_final;
  int clip_denoised, no_clip_denoised;             /* colorize: on unless --no-clip-denoised */
  int no_center_chroma;                            /* colorize: centred unless given */
  double t_start;                                  /* NAN: not given */
  double sigma_min, sigma_max, beta_min, beta_max; /* NAN: not given */
  int num_scales;                                  /* -1: not given */
  double snr, eps, rtol, atol;                     /* NAN: not given */
  int corrector_steps, steps;                      /* -1: not given */
  int64_t max_evals;                               /* 0: not given */
  int no_denoise, dequantize, quiet, centered, help_flag;
  int n;          /* -1: not given */
  uint64_t seed;  /* 0 */
  int64_t stream; /* 0 */
  int threads;    /* -1: leave the engine's default (OMP_NUM_THREADS or all cores) */
  int steps_per_scale;
  int64_t dim, max_points;
  double target;
  const char *classifier; /* classifier guidance (sample): network file, class, scale */
  int class_id;           /* -1: not given */
  double guidance;        /* NAN: 1 */
  const char *device_name, *precision_name; /* --device, --precision (NULL: auto, fp32) */
  int cuda_device_id;                       /* --cuda-device-id (0) */

  /* parsed names */
  sde_kind kind;
  sde_sampler sampler;
  sde_schedule schedule;
  sde_predictor predictor;
  sde_corrector corrector;
  sde_ode_method ode_method;
  sde_divergence divergence;
} cli_cfg;

enum {
  G_MODEL = 1u << 0,   /* --model --threads --quiet */
  G_SDE = 1u << 1,     /* --sde and its parameters */
  G_SAMPLER = 1u << 2, /* --sampler */
  G_PC = 1u << 3,      /* predictor, corrector, snr, corrector steps, denoise */
  G_STEPS = 1u << 4,   /* --steps */
  G_ODE = 1u << 5,     /* --ode-method */
  G_TOL = 1u << 6,     /* --rtol --atol */
  G_EPS = 1u << 7,     /* --eps */
  G_NSAMPLE = 1u << 8, /* --n for sample */
  G_NREUSE = 1u << 9,  /* --n for commands with inputs */
  G_SEED = 1u << 10,   /* --seed --stream */
  G_IN_DATA = 1u << 11,
  G_IN_LATENT = 1u << 12,
  G_IN_PRIOR = 1u << 13,
  G_OUT_DATA = 1u << 14,
  G_OUT_LATENT = 1u << 15,
  G_MASK = 1u << 16,
  G_LIK = 1u << 17,
  G_PLAN = 1u << 18,
  G_FEW = 1u << 19,    /* --schedule --churn --no-lower-order-final --[no-]clip-denoised */
};

#define OFF(f) offsetof(cli_cfg, f)
#define BIG 1e300

static const cli_option options[] = {
  /* model and machine */
  {"model", NULL, CLI_STR, OFF(model), 0, 0, 0, "FILE",
   "model: a JSON analytic model or a .safetensors network (required)", G_MODEL},
  {"threads", NULL, CLI_INT, OFF(threads), 0, 4096, 0, "N",
   "worker threads, 0 = all cores (default: OMP_NUM_THREADS, else all cores)",
   G_MODEL | G_PLAN},
  {"quiet", NULL, CLI_FLAG, OFF(quiet), 0, 0, 0, NULL,
   "no progress bar and no summary line", G_MODEL | G_PLAN},
  {"device", NULL, CLI_STR, OFF(device_name), 0, 0, 0, "KIND",
   "auto (a GPU when there is one, else the CPU with a warning), cpu or cuda (auto)", G_MODEL},
  {"cuda-device-id", NULL, CLI_INT, OFF(cuda_device_id), 0, 4096, 0, "N",
   "CUDA device ordinal (0)", G_MODEL},
  {"precision", NULL, CLI_STR, OFF(precision_name), 0, 0, 0, "P",
   "GPU GEMM/conv math: fp32, tf32 or bf16 (fp32; the CPU is always fp32)", G_MODEL},
  /* inputs and outputs */
  {"in", "data", CLI_STR, OFF(in), 0, 0, 0, "FILE",
   "input data: .npy, .png or a folder of PNGs, in data space (required)", G_IN_DATA},
  {"in", "data", CLI_STR, OFF(in), 0, 0, 0, "FILE",
   "input latents: a .npy file as written by `encode` (required)", G_IN_LATENT},
  {"in", NULL, CLI_STR, OFF(in), 0, 0, 0, "FILE",
   "start from these prior draws x(T) (.npy) instead of drawing them", G_IN_PRIOR},
  {"out", NULL, CLI_STR, OFF(out), 0, 0, 0, "FILE",
   "output: .npy, or .png (a grid of images; image models only) (required)", G_OUT_DATA},
  {"out", NULL, CLI_STR, OFF(out), 0, 0, 0, "FILE", "output latents, .npy (required)",
   G_OUT_LATENT},
  {"mask", NULL, CLI_STR, OFF(mask), 0, 0, 0, "FILE",
   "known region, .npy or .png: 1 (white) = keep, 0 (black) = fill (required)", G_MASK},
  {"n", NULL, CLI_INT, OFF(n), 1, 10000000, 0, "N", "number of samples (16)", G_NSAMPLE},
  {"classifier", NULL, CLI_STR, OFF(classifier), 0, 0, 0, "FILE",
   "classifier guidance: a time-dependent classifier network (docs/training.md)", G_NSAMPLE},
  {"class", NULL, CLI_INT, OFF(class_id), 0, 1000000, 0, "K",
   "class to guide towards (with --classifier)", G_NSAMPLE},
  {"guidance", NULL, CLI_DOUBLE, OFF(guidance), -BIG, BIG, 0, "S",
   "guidance scale: score + S grad log p(class | x, t) (1)", G_NSAMPLE},
  {"n", NULL, CLI_INT, OFF(n), 1, 10000000, 0, "N",
   "number of outputs; inputs are reused cyclically (one per input)", G_NREUSE},
  {"seed", NULL, CLI_U64, OFF(seed), 0, 0, 0, "S", "random seed (0)", G_SEED},
  {"stream", NULL, CLI_INT64, OFF(stream), 0, 9.0e15, 0, "K",
   "noise stream of the first sample; sample i uses K+i (0)", G_SEED},
  /* SDE */
  {"sde", NULL, CLI_STR, OFF(sde_name), 0, 0, 0, "KIND",
   "ve, vp or subvp (default: the model's own SDE, else ve)", G_SDE},
  {"sigma-min", NULL, CLI_DOUBLE, OFF(sigma_min), 0, BIG, 1, "X",
   "VE smallest noise level (model's, else 0.01)", G_SDE},
  {"sigma-max", NULL, CLI_DOUBLE, OFF(sigma_max), 0, BIG, 1, "X",
   "VE largest noise level (model's, else 50)", G_SDE},
  {"beta-min", NULL, CLI_DOUBLE, OFF(beta_min), 0, BIG, 0, "X",
   "VP/sub-VP beta(0) (model's, else 0.1)", G_SDE},
  {"beta-max", NULL, CLI_DOUBLE, OFF(beta_max), 0, BIG, 1, "X",
   "VP/sub-VP beta(1) (model's, else 20)", G_SDE},
  {"num-scales", NULL, CLI_INT, OFF(num_scales), 1, 100000000, 0, "N",
   "discretisation steps N of the SDE (model's, else 1000)", G_SDE},
  /* samplers */
  {"sampler", NULL, CLI_STR, OFF(sampler_name), 0, 0, 0, "NAME",
   "pc (predictor-corrector), ode (probability flow, adaptive) or a few-step solver: ddim, "
   "dpmpp-2m, dpmpp-3m, dpmpp-2m-sde, heun (pc; encode/decode: ode)", G_SAMPLER},
  {"schedule", NULL, CLI_STR, OFF(schedule_name), 0, 0, 0, "NAME",
   "few-step time grid: logsnr, time or karras (karras)", G_FEW},
  {"no-lower-order-final", NULL, CLI_FLAG, OFF(no_lower_order_final), 0, 0, 0, NULL,
   "dpmpp-*: keep the full order in the last steps of runs under 15 steps", G_FEW},
  {"churn", NULL, CLI_DOUBLE, OFF(churn), 0, BIG, 0, "S",
   "heun: stochastic churn S_churn, 0 = deterministic (0)", G_FEW},
  {"clip-denoised", NULL, CLI_FLAG, OFF(clip_denoised), 0, 0, 0, NULL,
   "few-step solvers: clamp every data prediction to the data range (colorize: on)", G_FEW},
  {"no-clip-denoised", NULL, CLI_FLAG, OFF(no_clip_denoised), 0, 0, 0, NULL,
   "colorize: leave the data predictions unclamped", G_FEW},
  {"no-center-chroma", NULL, CLI_FLAG, OFF(no_center_chroma), 0, 0, 0, NULL,
   "colorize: keep the chroma mean of the noise (default: removed from the start and from "
   "every fresh draw, so the overall tint comes from the model, not from the noise)", G_FEW},
  {"t-start", NULL, CLI_DOUBLE, OFF(t_start), 0, 1, CLI_OPEN_LO, "T",
   "colorize, few-step: start at time T from the gray image noised to it (SDEdit; 1 = the "
   "prior, the paper's method) (1)", G_FEW},
  {"predictor", NULL, CLI_STR, OFF(predictor_name), 0, 0, 0, "NAME",
   "euler_maruyama (em), reverse_diffusion (rd), ancestral_sampling (ancestral) or none "
   "(reverse_diffusion)",
   G_PC},
  {"corrector", NULL, CLI_STR, OFF(corrector_name), 0, 0, 0, "NAME",
   "langevin, ald or none (langevin)", G_PC},
  {"snr", NULL, CLI_DOUBLE, OFF(snr), 0, BIG, 1, "X", "corrector signal-to-noise ratio (0.16)",
   G_PC},
  {"corrector-steps", NULL, CLI_INT, OFF(corrector_steps), 0, SDE_MAX_CORRECTOR_STEPS, 0, "N",
   "corrector iterations per step (1)", G_PC},
  {"steps", NULL, CLI_INT, OFF(steps), 1, SDE_MAX_STEPS, 0, "N",
   "PC steps, fixed-step ODE steps (default: the SDE's N), or network "
   "evaluations of a few-step solver (15; heun: N/2 steps of two and a final one)", G_STEPS},
  {"eps", NULL, CLI_DOUBLE, OFF(eps), 0, SDE_T, CLI_OPEN_LO | CLI_OPEN_HI, "T",
   "smallest time (1e-5 for VE, 1e-3 for VP and sub-VP; likelihood: 1e-5)", G_EPS},
  {"no-denoise", NULL, CLI_FLAG, OFF(no_denoise), 0, 0, 0, NULL,
   "skip the final noise-removal (Tweedie) step", G_PC},
  {"ode-method", NULL, CLI_STR, OFF(ode_name), 0, 0, 0, "NAME",
   "rk45 (adaptive), euler or heun (fixed steps) (rk45)", G_ODE},
  {"rtol", NULL, CLI_DOUBLE, OFF(rtol), 0, 1, 1, "X", "RK45 relative tolerance (1e-5)", G_TOL},
  {"atol", NULL, CLI_DOUBLE, OFF(atol), 0, 1, 1, "X", "RK45 absolute tolerance (1e-5)", G_TOL},
  {"max-evals", NULL, CLI_INT64, OFF(max_evals), 1, 1e12, 0, "N",
   "RK45: stop with an error after N score evaluations (100000)", G_TOL},
  /* likelihood */
  {"divergence", NULL, CLI_STR, OFF(div_name), 0, 0, 0, "KIND",
   "auto (exact when the model has it, else rademacher), exact, rademacher or gaussian (auto)",
   G_LIK},
  {"dequantize", NULL, CLI_FLAG, OFF(dequantize), 0, 0, 0, NULL,
   "add uniform noise to 8-bit image data before evaluating (image models)", G_LIK},
  {"logp-out", NULL, CLI_STR, OFF(logp_out), 0, 0, 0, "FILE",
   "write the per-sample log p (nats, float64 .npy of shape [n])", G_LIK},
  /* noise-scales */
  {"data", "in", CLI_STR, OFF(in), 0, 0, 0, "FILE|DIR",
   "training data: .npy [n, ...], a .png or a folder of PNGs (values in [0,1])", G_PLAN},
  {"dim", NULL, CLI_INT64, OFF(dim), 1, 1e12, 0, "D", "data dimension, when no --data is given",
   G_PLAN},
  {"sigma-max", NULL, CLI_DOUBLE, OFF(sigma_max), 0, BIG, 1, "X",
   "sigma_1 (default: the largest pairwise distance in --data)", G_PLAN},
  {"sigma-min", NULL, CLI_DOUBLE, OFF(sigma_min), 0, BIG, 1, "X", "sigma_L (0.01)", G_PLAN},
  {"steps-per-scale", NULL, CLI_INT, OFF(steps_per_scale), 1, 1000000, 0, "T",
   "Langevin steps per noise scale (5)", G_PLAN},
  {"target", NULL, CLI_DOUBLE, OFF(target), 0, 1, 1, "P",
   "technique 2 overlap target for gamma, < 1 (0.5)", G_PLAN},
  {"centered", NULL, CLI_FLAG, OFF(centered), 0, 0, 0, NULL,
   "measure distances after mapping the data to [-1,1] (2x-1)", G_PLAN},
  {"max-points", NULL, CLI_INT64, OFF(max_points), 0, 1e12, 0, "M",
   "use at most M evenly spaced points for sigma_1, 0 = all (0)", G_PLAN},
  {"help", NULL, CLI_FLAG, OFF(help_flag), 0, 0, 0, NULL, "show this help and exit", ~0u},
};
#define NOPTIONS (sizeof options / sizeof options[0])

typedef struct cli_command cli_command;
struct cli_command {
  const char *name;
  int (*run)(cli_cfg *c, const cli_command *cmd);
  unsigned groups;
  const char *summary;  /* one line for the command list */
  const char *synopsis; /* usage line after "scoresde NAME" */
  const char *about;    /* paragraph(s) for NAME --help */
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Reports the engine's error message; 1, or 130 when the user cancelled. */
static int report(int rc) {
  if (rc == SDE_ECANCELLED && cli_interrupted) {
    fprintf(stderr, "scoresde: interrupted\n");
    return CLI_EXIT_CANCELLED;
  }
  const char *msg = sde_errmsg();
  fprintf(stderr, "scoresde: %s\n", msg && *msg ? msg : sde_status_name(rc));
  return CLI_EXIT_ERROR;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static float *alloc_floats(int64_t n, int64_t D) {
  if (n < 0 || D < 0 || (D > 0 && n > (int64_t)(SIZE_MAX / sizeof(float) / 2) / D)) {
    sde_fail(SDE_ENOMEM, "%lld x %lld values are too many to hold in memory", (long long)n,
             (long long)D);
    return NULL;
  }
  return sde_malloc((size_t)(n * D) * sizeof(float));
}

static void shape_text(const int64_t *dims, int nd, char *buf, size_t size) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < nd && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "x" : "", (long long)dims[i]);
}

static void model_shape_text(const sde_model *m, char *buf, size_t size) {
  if (m->is_image)
    snprintf(buf, size, "%dx%dx%d", m->channels, m->height, m->width);
  else
    snprintf(buf, size, "%lld", (long long)sde_model_dim(m));
}

static int shape_mismatch(const char *what, const sde_model *m, const int64_t *dims, int nd) {
  char got[160], want[64];
  shape_text(dims, nd, got, sizeof got);
  model_shape_text(m, want, sizeof want);
  if (m->is_image)
    return sde_fail(SDE_EINVAL, "%s is %s but the model expects %s", what, got, want);
  if (nd == 1)
    return sde_fail(SDE_EINVAL, "%s samples have %s values but the model expects %s", what, got,
                    want);
  return sde_fail(SDE_EINVAL, "%s samples have shape %s but the model expects %s values", what,
                  got, want);
}

static int png_channels_for(const sde_model *m) {
  return (m->channels == 1 || m->channels == 3 || m->channels == 4) ? m->channels : 0;
}

static int64_t prod(const int64_t *d, int nd) {
  int64_t p = 1;
  for (int i = 0; i < nd; i++) p *= d[i];
  return p;
}

/* Expands gray images [n,1,H,W] to [n,3,H,W]. Frees src. */
static float *gray_to_rgb(float *src, int n, int64_t hw) {
  float *dst = alloc_floats((int64_t)n * 3, hw);
  if (!dst) {
    free(src);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) memcpy(dst + ((int64_t)i * 3 + c) * hw, src + (int64_t)i * hw,
                                       (size_t)hw * sizeof(float));
  free(src);
  return dst;
}

enum { LOAD_DATA = 0, LOAD_LATENT = 1 };

/* Whether ss[snd] is the shape of one sample of m: 1 if so, 2 if it is a 1-channel image
 * that gray_ok lets a 3-channel model take, 0 if not. Data for an image model must be
 * [C,H,W], [H,W] (1 channel) or flat [D]; latents and vector data only need D values. */
static int sample_shape_ok(const sde_model *m, int mode, int gray_ok, const int64_t *ss,
                           int snd) {
  const int64_t D = sde_model_dim(m);
  if (gray_ok && m->is_image && m->channels == 3) {
    if (snd == 3 && ss[0] == 1 && ss[1] == m->height && ss[2] == m->width) return 2;
    if (snd == 2 && ss[0] == m->height && ss[1] == m->width) return 2;
  }
  if (prod(ss, snd) != D) return 0;
  if (mode == LOAD_LATENT || !m->is_image || snd == 1) return 1;
  if (snd == 3) return ss[0] == m->channels && ss[1] == m->height && ss[2] == m->width;
  if (snd == 2) return m->channels == 1 && ss[0] == m->height && ss[1] == m->width;
  return 0;
}

/* Refuses an input holding NaN or Inf: the solvers would carry it into every output. */
static int check_finite_input(const char *what, const char *path, const float *x, int64_t n,
                              int64_t D) {
  for (int64_t i = 0; i < n * D; i++)
    if (!isfinite(x[i]))
      return sde_fail(SDE_EINVAL, "%s '%s' holds %g (sample %lld, value %lld); inputs must be "
                      "finite", what, path, (double)x[i], (long long)(i / D), (long long)(i % D));
  return SDE_OK;
}

/* Loads samples for model m from .npy, .png or a folder of PNGs into *out [count, D].
 * `what` names the input in messages. LOAD_LATENT accepts .npy only. gray_ok lets a
 * 3-channel image model take 1-channel inputs (expanded to R = G = B). No scaling here. */
static int load_samples(const char *what, const char *path, const sde_model *m, int mode,
                        int gray_ok, float **out, int *count) {
  const int64_t D = sde_model_dim(m);
  const int64_t HW = (int64_t)m->height * m->width;
  *out = NULL;
  *count = 0;
  int dir = is_dir(path);
  int png = !dir && sde_has_suffix(path, ".png");
  if (mode == LOAD_LATENT && (dir || png))
    return sde_fail(SDE_EINVAL, "%s: latents must be a .npy file ('%s')", what, path);

  if (dir || png) {
    float *x = NULL;
    int n = 1, c = 0, h = 0, w = 0, rc;
    if (!m->is_image)
      return sde_fail(SDE_EINVAL,
                      "%s '%s' is a PNG image, but the model's samples are vectors of %lld "
                      "values; use a .npy file",
                      what, path, (long long)D);
    int want = png_channels_for(m);
    if (gray_ok && m->channels == 3) want = 3;
    /* the model's size bounds what is decoded: a larger image is refused from its header */
    if (dir)
      rc = sde_png_read_dir_max(path, want, m->height, m->width, &x, &n, &c, &h, &w);
    else
      rc = sde_png_read_max(path, want, m->height, m->width, &x, &c, &h, &w);
    if (rc) return rc;
    if (c != m->channels || h != m->height || w != m->width) {
      int64_t dims[3] = {c, h, w};
      free(x);
      return shape_mismatch(what, m, dims, 3);
    }
    if (n <= 0) {
      free(x);
      return sde_fail(SDE_EINVAL, "%s '%s' holds no images", what, path);
    }
    *out = x;
    *count = n;
    return SDE_OK;
  }

  if (!sde_has_suffix(path, ".npy"))
    return sde_fail(SDE_EINVAL, "%s '%s': expected a .npy file%s", what, path,
                    mode == LOAD_LATENT ? "" : ", a .png image or a folder of PNGs");

  float *x = NULL;
  int nd = 0;
  int64_t sh[SDE_NPY_MAX_DIMS];
  int rc = sde_npy_read(path, &x, &nd, sh);
  if (rc) return rc;
  if (nd < 1 || nd > SDE_NPY_MAX_DIMS) {
    free(x);
    return sde_fail(SDE_EINVAL, "%s '%s' is a scalar; expected an array of samples", what, path);
  }
  /* Either a batch [n, <sample>] or one lone sample. A reading with the model's own channel
   * count beats a gray one; then the batch reading wins when both fit. */
  int64_t n64 = 0;
  int gray = 0, how = 0;
  int batch = nd >= 2 ? sample_shape_ok(m, mode, gray_ok, sh + 1, nd - 1) : 0;
  int lone = sample_shape_ok(m, mode, gray_ok, sh, nd);
  if (batch == 1 || (batch == 2 && lone != 1)) {
    n64 = sh[0];
    how = batch;
  } else if (lone) {
    n64 = 1;
    how = lone;
  } else {
    int single = nd == 1 || (m->is_image && nd == 3);
    free(x);
    return shape_mismatch(what, m, single ? sh : sh + 1, single ? nd : nd - 1);
  }
  gray = how == 2;
  if (n64 <= 0) {
    free(x);
    return sde_fail(SDE_EINVAL, "%s '%s' holds no samples (shape[0] = 0)", what, path);
  }
  if (n64 > 100000000) {
    free(x);
    return sde_fail(SDE_EINVAL, "%s '%s' holds too many samples (%lld)", what, path,
                    (long long)n64);
  }
  if ((rc = check_finite_input(what, path, x, n64, gray ? HW : D))) {
    free(x);
    return rc;
  }
  if (gray) {
    x = gray_to_rgb(x, (int)n64, HW);
    if (!x) return SDE_ENOMEM;
  }
  *out = x;
  *count = (int)n64;
  return SDE_OK;
}

/* Returns x[count, D] reused cyclically to n samples (x itself when n == count). Takes
 * ownership of x: on failure it is freed and NULL returned. */
static float *cycle_samples(float *x, int count, int n, int64_t D) {
  if (n == count) return x;
  float *y = alloc_floats(n, D);
  if (!y) {
    free(x);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    memcpy(y + (int64_t)i * D, x + (int64_t)(i % count) * D, (size_t)D * sizeof(float));
  free(x);
  return y;
}

static void scale_in(const sde_model *m, float *x, int64_t len) {
  if (!m->centered) return;
  for (int64_t i = 0; i < len; i++) x[i] = 2.0f * x[i] - 1.0f;
}

static void scale_out(const sde_model *m, float *x, int64_t len) {
  if (!m->centered) return;
  for (int64_t i = 0; i < len; i++) x[i] = 0.5f * (x[i] + 1.0f);
}

/* Checks --out before any work is done: a known suffix, and PNG only for image data. */
static int check_out(const cli_command *cmd, const char *out, int latent) {
  if (!out) return cli_usage_error(cmd->name, "--out FILE is required");
  if (sde_has_suffix(out, ".npy")) return 0;
  if (!latent && sde_has_suffix(out, ".png")) return 0;
  return cli_usage_error(cmd->name, "--out must name a %s file, not '%s'",
                         latent ? ".npy" : ".npy or .png", out);
}

/* A .png output needs an image model. */
static int check_png_out(const char *path, const sde_model *m) {
  if (m->is_image || !sde_has_suffix(path, ".png")) return SDE_OK;
  return sde_fail(SDE_EINVAL,
                  "cannot write '%s': PNG output needs an image model, but this model's "
                  "samples are vectors of %lld values; use .npy",
                  path, (long long)sde_model_dim(m));
}

/* Writes samples x[n, D] (model space; scaled back to data space when `data`). */
static int write_samples(const char *path, const sde_model *m, float *x, int n, int data) {
  const int64_t D = sde_model_dim(m);
  int rc = check_png_out(path, m);
  if (rc) return rc;
  if (data) scale_out(m, x, (int64_t)n * D);
  if (sde_has_suffix(path, ".png"))
    return sde_png_write_grid(path, x, n, m->channels, m->height, m->width, 0, 2);
  int64_t shape[4];
  if (m->is_image) {
    int64_t s[4] = {n, m->channels, m->height, m->width};
    memcpy(shape, s, sizeof s);
    return sde_npy_write(path, x, 4, shape);
  }
  shape[0] = n;
  shape[1] = D;
  return sde_npy_write(path, x, 2, shape);
}

static void load_options(const cli_cfg *c, sde_load_options *o) {
  sde_load_options def = SDE_LOAD_OPTIONS_INIT;
  *o = def;
  if (c->device_name) sde_device_parse(c->device_name, &o->device); /* checked in main */
  if (c->precision_name) sde_precision_parse(c->precision_name, &o->precision);
  o->device_id = c->cuda_device_id;
}

static int load_model(const cli_command *cmd, const cli_cfg *c, sde_model **m) {
  *m = NULL;
  if (c->threads >= 0) sde_set_num_threads(c->threads);
  sde_load_options o;
  load_options(c, &o);
  int rc = cli_load_model(cmd->name, c->model, &o, c->quiet, m);
  if (rc) return rc;
  if (!*m) return sde_fail(SDE_EFORMAT, "'%s' did not give a model", c->model);
  (void)cmd;
  return SDE_OK;
}

/* The SDE: the model's own unless --sde names another kind, then the overrides. */
static int make_sde(const cli_cfg *c, const sde_model *m, sde_sde *sde) {
  if (m->has_sde)
    *sde = m->sde;
  else
    sde_init(sde, SDE_VE);
  if (c->sde_name && (!m->has_sde || m->sde.kind != c->kind)) sde_init(sde, c->kind);
  if (!isnan(c->sigma_min)) sde->sigma_min = c->sigma_min;
  if (!isnan(c->sigma_max)) sde->sigma_max = c->sigma_max;
  if (!isnan(c->beta_min)) sde->beta_min = c->beta_min;
  if (!isnan(c->beta_max)) sde->beta_max = c->beta_max;
  if (c->num_scales > 0) sde->N = c->num_scales;
  return sde_validate(sde);
}

static void make_sample_params(const cli_cfg *c, sde_sample_params *p, cli_progress *bar) {
  sde_sample_params_init(p);
  if (c->sampler_name) p->sampler = c->sampler;
  if (c->schedule_name) p->schedule = c->schedule;
  if (c->no_lower_order_final) p->lower_order_final = 0;
  if (!isnan(c->churn)) p->churn = c->churn;
  p->clip_denoised = c->clip_denoised && !c->no_clip_denoised;
  if (!isnan(c->t_start)) p->t_start = c->t_start;
  if (c->predictor_name) p->predictor = c->predictor;
  if (c->corrector_name) p->corrector = c->corrector;
  if (!isnan(c->snr)) p->snr = c->snr;
  if (c->corrector_steps >= 0) p->corrector_steps = c->corrector_steps;
  if (c->steps > 0) p->steps = c->steps;
  if (!isnan(c->eps)) p->eps = c->eps;
  if (c->no_denoise) p->denoise = 0;
  if (c->ode_name) p->ode_method = c->ode_method;
  if (!isnan(c->rtol)) p->rtol = c->rtol;
  if (!isnan(c->atol)) p->atol = c->atol;
  if (c->max_evals > 0) p->max_evals = c->max_evals;
  p->seed = c->seed;
  p->progress = cli_progress_cb;
  p->user = bar;
}

/* Refuses, as a usage error before any work, sampler settings the engine would refuse:
 * one rule (sde_sample_params_check) for the CLI, the elements and the engine. */
static int check_sample_params(const cli_command *cmd, const cli_cfg *c) {
  if (!(cmd->groups & (G_PC | G_STEPS | G_ODE)) || (cmd->groups & G_LIK)) return 0;
  sde_sample_params p;
  make_sample_params(c, &p, NULL);
  if (!(cmd->groups & G_SAMPLER) && !(cmd->groups & G_PC)) p.sampler = SDE_SAMPLER_ODE;
  if (sde_sample_params_check(&p, NULL)) return cli_usage_error(cmd->name, "%s", sde_errmsg());
  return 0;
}

/* Tolerances below what float32 resolves are raised by the engine; say so. */
static void note_tolerances(const cli_command *cmd, const cli_cfg *c) {
  if (c->quiet) return;
  if ((!isnan(c->rtol) && c->rtol < SDE_ODE_MIN_TOL) || (!isnan(c->atol) && c->atol < SDE_ODE_MIN_TOL))
    fprintf(stderr, "scoresde %s: note: rtol and atol below %g (what float32 scores resolve) "
            "are raised to %g\n", cmd->name, SDE_ODE_MIN_TOL, SDE_ODE_MIN_TOL);
}

static void summary(const cli_cfg *c, const char *cmd, int n, const char *noun,
                    const sde_stats *st, double seconds) {
  if (c->quiet) return;
  if (st->seconds > 0) seconds = st->seconds;
  char how[64] = "";
  if (c->sampler_name && sde_sampler_is_fewstep(c->sampler)) {
    sde_sample_params p;
    sde_sample_params_init(&p);
    snprintf(how, sizeof how, " (%s, %s)", sde_sampler_name(c->sampler),
             sde_schedule_name(c->schedule_name ? c->schedule : p.schedule));
  }
  fprintf(stderr, "%s: %d %s%s, NFE %lld%s, %.2f s\n", cmd, n, noun, n == 1 ? "" : "s",
          (long long)st->nfe, how, seconds);
}

static int progress_enabled(const cli_cfg *c) { return !c->quiet; }

/* Parses the names given on the command line into enums (usage errors, exit 2). */
static int parse_names(const cli_command *cmd, cli_cfg *c) {
  sde_device_kind dk;
  sde_precision pr;
  if (c->device_name && sde_device_parse(c->device_name, &dk))
    return cli_usage_error(cmd->name, "%s", sde_errmsg());
  if (c->precision_name && sde_precision_parse(c->precision_name, &pr))
    return cli_usage_error(cmd->name, "%s", sde_errmsg());
  if (c->sde_name && sde_kind_from_name(c->sde_name, &c->kind))
    return cli_usage_error(cmd->name, "unknown SDE '%s' (use ve, vp or subvp)", c->sde_name);
  if (c->sampler_name && sde_sampler_from_name(c->sampler_name, &c->sampler))
    return cli_usage_error(cmd->name,
                           "unknown sampler '%s' (use pc, ode, ddim, dpmpp-2m, dpmpp-3m, "
                           "dpmpp-2m-sde or heun)",
                           c->sampler_name);
  if (c->sampler_name && c->sampler == SDE_SAMPLER_PC &&
      (cmd->groups & (G_IN_LATENT | G_OUT_LATENT)))
    return cli_usage_error(cmd->name, "--sampler pc has no inverse; use ode or a few-step solver");
  if (c->sampler_name && c->sampler == SDE_SAMPLER_ODE && (cmd->groups & G_PC) &&
      !(cmd->groups & G_ODE))
    return cli_usage_error(cmd->name, "--sampler ode cannot condition; use pc or a few-step "
                                      "solver");
  if (c->schedule_name && sde_schedule_from_name(c->schedule_name, &c->schedule))
    return cli_usage_error(cmd->name, "unknown schedule '%s' (use logsnr, time or karras)",
                           c->schedule_name);
  if (c->predictor_name && sde_predictor_from_name(c->predictor_name, &c->predictor))
    return cli_usage_error(cmd->name,
                           "unknown predictor '%s' (use euler_maruyama, reverse_diffusion, "
                           "ancestral_sampling or none)",
                           c->predictor_name);
  if (c->corrector_name && sde_corrector_from_name(c->corrector_name, &c->corrector))
    return cli_usage_error(cmd->name, "unknown corrector '%s' (use langevin, ald or none)",
                           c->corrector_name);
  if (c->ode_name && sde_ode_method_from_name(c->ode_name, &c->ode_method))
    return cli_usage_error(cmd->name, "unknown ODE method '%s' (use rk45, euler or heun)",
                           c->ode_name);
  if (c->div_name && sde_divergence_from_name(c->div_name, &c->divergence))
    return cli_usage_error(cmd->name,
                           "unknown divergence '%s' (use auto, exact, rademacher or gaussian)",
                           c->div_name);
  return 0;
}

/* ---- sample --------------------------------------------------------------------------- */

static int run_sample(cli_cfg *c, const cli_command *cmd) {
  int rc, status = CLI_EXIT_ERROR;
  sde_model *m = NULL;
  float *xT = NULL, *out = NULL;
  if ((rc = check_out(cmd, c->out, 0))) return rc;
  if (c->in && !sde_has_suffix(c->in, ".npy"))
    return cli_usage_error(cmd->name, "--in must be a .npy file of prior draws, not '%s'", c->in);

  if ((rc = load_model(cmd, c, &m))) return report(rc);
  if (c->classifier || c->class_id >= 0) {
    if (!c->classifier || c->class_id < 0) {
      sde_model_free(m);
      return cli_usage_error(cmd->name, "--classifier FILE and --class K go together");
    }
    sde_model *clf = NULL, *g = NULL;
    sde_load_options o;
    load_options(c, &o);
    if ((rc = sde_model_load_ex(c->classifier, &o, &clf)) ||
        (rc = sde_guided_create(m, clf, c->class_id, isnan(c->guidance) ? 1.0 : c->guidance, &g))) {
      if (!clf) sde_model_free(m);
      return report(rc);
    }
    m = g;
  }
  sde_sde sde;
  if ((rc = make_sde(c, m, &sde))) goto fail;
  if ((rc = check_png_out(c->out, m))) goto fail;
  const int64_t D = sde_model_dim(m);
  int n = c->n > 0 ? c->n : 16;
  if (c->in) {
    int count = 0;
    if ((rc = load_samples("input", c->in, m, LOAD_LATENT, 0, &xT, &count))) goto fail;
    if (c->n <= 0) n = count;
    if (!(xT = cycle_samples(xT, count, n, D))) {
      rc = SDE_ENOMEM;
      goto fail;
    }
  }
  if (!(out = alloc_floats(n, D))) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  cli_progress bar;
  sde_sample_params p;
  sde_stats st;
  memset(&st, 0, sizeof st);
  cli_progress_init(&bar, "sample", progress_enabled(c));
  make_sample_params(c, &p, &bar);
  double t0 = sde_now();
  if (xT)
    rc = sde_sample_from(m, &sde, &p, n, (uint64_t)c->stream, xT, out, &st);
  else
    rc = sde_sample(m, &sde, &p, n, (uint64_t)c->stream, out, &st);
  double secs = sde_now() - t0;
  cli_progress_finish(&bar);
  if (rc) goto fail;
  cli_warn_nonfinite(cmd->name, "sample", out, n, D);
  if ((rc = write_samples(c->out, m, out, n, 1))) goto fail;
  summary(c, cmd->name, n, "sample", &st, secs);
  status = CLI_EXIT_OK;
  goto done;
fail:
  status = report(rc);
done:
  free(xT);
  free(out);
  sde_model_free(m);
  return status;
}

/* ---- encode / decode ------------------------------------------------------------------ */

static int run_codec(cli_cfg *c, const cli_command *cmd, int encode) {
  int rc, status = CLI_EXIT_ERROR;
  sde_model *m = NULL;
  float *x = NULL, *y = NULL;
  if (!c->in) return cli_usage_error(cmd->name, "--in FILE is required");
  if ((rc = check_out(cmd, c->out, encode))) return rc;

  if ((rc = load_model(cmd, c, &m))) return report(rc);
  sde_sde sde;
  if ((rc = make_sde(c, m, &sde))) goto fail;
  if ((rc = check_png_out(c->out, m))) goto fail;
  const int64_t D = sde_model_dim(m);
  int count = 0;
  if ((rc = load_samples("input", c->in, m, encode ? LOAD_DATA : LOAD_LATENT, 0, &x, &count)))
    goto fail;
  int n = c->n > 0 ? c->n : count;
  if (!(x = cycle_samples(x, count, n, D)) || !(y = alloc_floats(n, D))) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  if (encode) scale_in(m, x, (int64_t)n * D);

  cli_progress bar;
  sde_sample_params p;
  sde_stats st;
  memset(&st, 0, sizeof st);
  cli_progress_init(&bar, cmd->name, progress_enabled(c));
  make_sample_params(c, &p, &bar);
  double t0 = sde_now();
  rc = encode ? sde_encode(m, &sde, &p, n, x, y, &st) : sde_decode(m, &sde, &p, n, x, y, &st);
  double secs = sde_now() - t0;
  cli_progress_finish(&bar);
  if (rc) goto fail;
  cli_warn_nonfinite(cmd->name, encode ? "latent" : "sample", y, n, D);
  if ((rc = write_samples(c->out, m, y, n, !encode))) goto fail;
  summary(c, cmd->name, n, "sample", &st, secs);
  status = CLI_EXIT_OK;
  goto done;
fail:
  status = report(rc);
done:
  free(x);
  free(y);
  sde_model_free(m);
  return status;
}

static int run_encode(cli_cfg *c, const cli_command *cmd) { return run_codec(c, cmd, 1); }
static int run_decode(cli_cfg *c, const cli_command *cmd) { return run_codec(c, cmd, 0); }

/* ---- likelihood ------------------------------------------------------------------------ */

static int run_likelihood(cli_cfg *c, const cli_command *cmd) {
  int rc, status = CLI_EXIT_ERROR;
  sde_model *m = NULL;
  float *x = NULL;
  double *logp = NULL;
  if (!c->in) return cli_usage_error(cmd->name, "--in FILE is required");
  if (c->logp_out && !sde_has_suffix(c->logp_out, ".npy"))
    return cli_usage_error(cmd->name, "--logp-out must name a .npy file, not '%s'", c->logp_out);

  if ((rc = load_model(cmd, c, &m))) return report(rc);
  sde_sde sde;
  if ((rc = make_sde(c, m, &sde))) goto fail;
  if (c->dequantize && !m->is_image) {
    rc = sde_fail(SDE_EINVAL, "--dequantize applies to 8-bit image data, but this model's "
                              "samples are not images");
    goto fail;
  }
  const int64_t D = sde_model_dim(m);
  int count = 0;
  if ((rc = load_samples("input", c->in, m, LOAD_DATA, 0, &x, &count))) goto fail;
  int n = c->n > 0 ? c->n : count;
  if (!(x = cycle_samples(x, count, n, D)) || !(logp = sde_calloc((size_t)n, sizeof(double)))) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  if (c->dequantize) /* applies the scaler itself; its own key so the noise differs from
                      * the Hutchinson noise of the same seed */
    sde_dequantize(m, c->seed ^ 0x9E3779B97F4A7C15ull, (uint64_t)c->stream, n, x);
  else
    scale_in(m, x, (int64_t)n * D);

  cli_progress bar;
  sde_likelihood_params lp;
  sde_stats st;
  memset(&st, 0, sizeof st);
  cli_progress_init(&bar, "likelihood", progress_enabled(c));
  sde_likelihood_params_init(&lp);
  if (!isnan(c->rtol)) lp.rtol = c->rtol;
  if (!isnan(c->atol)) lp.atol = c->atol;
  if (!isnan(c->eps)) lp.eps = c->eps;
  if (c->max_evals > 0) lp.max_evals = c->max_evals;
  if (c->div_name) lp.divergence = c->divergence;
  lp.seed = c->seed;
  lp.progress = cli_progress_cb;
  lp.user = &bar;
  double t0 = sde_now();
  rc = sde_likelihood(m, &sde, &lp, n, (uint64_t)c->stream, x, logp, NULL, &st);
  double secs = sde_now() - t0;
  cli_progress_finish(&bar);
  if (rc) goto fail;

  cli_warn_nonfinite_f64(cmd->name, "log-likelihood", logp, n);
  double offset = sde_dequant_offset(m), mean = 0, mlogp = 0, var = 0;
  for (int i = 0; i < n; i++) {
    mean += sde_bits_per_dim(logp[i], D, offset);
    mlogp += logp[i];
  }
  mean /= n;
  mlogp /= n;
  for (int i = 0; i < n; i++) {
    double d = sde_bits_per_dim(logp[i], D, offset) - mean;
    var += d * d;
  }
  double se = n > 1 ? sqrt(var / (n - 1) / n) : 0.0;
  if (c->logp_out) {
    int64_t shape[1] = {n};
    if ((rc = sde_npy_write_f64(c->logp_out, logp, 1, shape))) goto fail;
  }
  printf("bits/dim %.6f +/- %.6f (mean log p %.6g nats over %d sample%s of %lld dims, "
         "offset %g)\n",
         mean, se, mlogp, n, n == 1 ? "" : "s", (long long)D, offset);
  fflush(stdout);
  summary(c, cmd->name, n, "sample", &st, secs);
  status = CLI_EXIT_OK;
  goto done;
fail:
  status = report(rc);
done:
  free(x);
  free(logp);
  sde_model_free(m);
  return status;
}

/* ---- inpaint / colorize --------------------------------------------------------------- */

/* Loads the inpainting mask for `count` inputs as mask[mcount, D] with 0/1 entries, where
 * mcount is 1 (one mask for every input) or count. */
static int load_mask(const char *path, const sde_model *m, int count, float **out, int *mcount) {
  const int64_t D = sde_model_dim(m);
  const int64_t HW = (int64_t)m->height * m->width;
  float *raw = NULL, *mask = NULL;
  int64_t rawn = 0; /* elements in raw */
  int rawc = 0;     /* channels of a PNG mask */
  int rc;
  *out = NULL;
  *mcount = 1;
  if (sde_has_suffix(path, ".png")) {
    int h = 0, w = 0;
    if (!m->is_image)
      return sde_fail(SDE_EINVAL, "--mask '%s' is a PNG image, but the model's samples are "
                                  "vectors; use a .npy mask", path);
    if ((rc = sde_png_read_max(path, 0, m->height, m->width, &raw, &rawc, &h, &w)))
      return sde_fail_context(rc, "--mask");
    if (h != m->height || w != m->width) {
      free(raw);
      return sde_fail(SDE_EINVAL, "--mask is %dx%d pixels but the model's images are %dx%d", w,
                      h, m->width, m->height);
    }
    if (!(mask = alloc_floats(1, D))) {
      free(raw);
      return SDE_ENOMEM;
    }
    for (int c = 0; c < m->channels; c++)
      for (int64_t k = 0; k < HW; k++) {
        float v;
        if (rawc == m->channels)
          v = raw[c * HW + k];
        else if (rawc == 4) /* RGBA: alpha is the known region */
          v = raw[3 * HW + k];
        else if (rawc == 1)
          v = raw[k];
        else /* RGB mask for a gray model: mean */
          v = (raw[k] + raw[HW + k] + raw[2 * HW + k]) / 3.0f;
        mask[c * HW + k] = v;
      }
    free(raw);
    *out = mask;
  } else if (sde_has_suffix(path, ".npy")) {
    int nd = 0;
    int64_t sh[SDE_NPY_MAX_DIMS];
    if ((rc = sde_npy_read(path, &raw, &nd, sh))) return rc;
    rawn = prod(sh, nd);
    if (rawn == D) {
      *out = raw;
    } else if (rawn == (int64_t)count * D && count > 1) {
      *out = raw;
      *mcount = count;
    } else if (m->is_image && m->channels > 1 && rawn == HW) {
      if (!(mask = alloc_floats(1, D))) {
        free(raw);
        return SDE_ENOMEM;
      }
      for (int c = 0; c < m->channels; c++) memcpy(mask + c * HW, raw, (size_t)HW * sizeof(float));
      free(raw);
      *out = mask;
    } else {
      char got[160], want[64];
      shape_text(sh, nd, got, sizeof got);
      model_shape_text(m, want, sizeof want);
      free(raw);
      return sde_fail(SDE_EINVAL,
                      "--mask is %s but the model expects %s per sample (or %d of them)", got,
                      want, count);
    }
  } else {
    return sde_fail(SDE_EINVAL, "--mask '%s': expected a .npy or .png file", path);
  }
  int64_t total = (int64_t)*mcount * D;
  /* the mask is thresholded: a NaN or a value outside [0,1] is a broken mask, not a choice */
  for (int64_t i = 0; i < total; i++)
    if (!((*out)[i] >= 0.0f && (*out)[i] <= 1.0f)) {
      double v = (*out)[i];
      free(*out);
      *out = NULL;
      return sde_fail(SDE_EINVAL, "--mask '%s' holds %g at entry %lld; mask values must be in "
                      "[0, 1] (1 = known)", path, v, (long long)i);
    }
  for (int64_t i = 0; i < total; i++) (*out)[i] = (*out)[i] >= 0.5f ? 1.0f : 0.0f;
  return SDE_OK;
}

static int run_control(cli_cfg *c, const cli_command *cmd, int colorize) {
  int rc, status = CLI_EXIT_ERROR;
  sde_model *m = NULL;
  float *x = NULL, *mask = NULL, *fullmask = NULL, *y = NULL;
  if (!c->in) return cli_usage_error(cmd->name, "--in FILE is required");
  if (!colorize && !c->mask) return cli_usage_error(cmd->name, "--mask FILE is required");
  if ((rc = check_out(cmd, c->out, 0))) return rc;

  if ((rc = load_model(cmd, c, &m))) return report(rc);
  sde_sde sde;
  if ((rc = make_sde(c, m, &sde))) goto fail;
  if (colorize && !(m->is_image && m->channels == 3)) {
    char want[64];
    model_shape_text(m, want, sizeof want);
    rc = sde_fail(SDE_EINVAL, "colorize needs a model of 3-channel images; this model's samples "
                              "are %s", want);
    goto fail;
  }
  if ((rc = check_png_out(c->out, m))) goto fail;
  const int64_t D = sde_model_dim(m);
  const int64_t HW = (int64_t)m->height * m->width;
  int count = 0, mcount = 1;
  if ((rc = load_samples("input", c->in, m, LOAD_DATA, colorize, &x, &count))) goto fail;
  if (!colorize && (rc = load_mask(c->mask, m, count, &mask, &mcount))) goto fail;
  int n = c->n > 0 ? c->n : count;
  if (!(x = cycle_samples(x, count, n, D)) || !(y = alloc_floats(n, D))) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  if (colorize) { /* gray = mean of R, G, B, on every channel */
    for (int i = 0; i < n; i++) {
      float *im = x + (int64_t)i * D;
      for (int64_t k = 0; k < HW; k++) {
        float g = (im[k] + im[HW + k] + im[2 * HW + k]) / 3.0f;
        im[k] = im[HW + k] = im[2 * HW + k] = g;
      }
    }
  } else {
    if (!(fullmask = alloc_floats(n, D))) {
      rc = SDE_ENOMEM;
      goto fail;
    }
    for (int i = 0; i < n; i++)
      memcpy(fullmask + (int64_t)i * D, mask + (int64_t)(mcount == 1 ? 0 : i % mcount) * D,
             (size_t)D * sizeof(float));
  }
  scale_in(m, x, (int64_t)n * D);

  cli_progress bar;
  sde_sample_params p;
  sde_stats st;
  memset(&st, 0, sizeof st);
  cli_progress_init(&bar, cmd->name, progress_enabled(c));
  make_sample_params(c, &p, &bar);
  /* colorize clamps by default: an undertrained prior's global colour drifts far out of
   * range at high noise (docs/sampling.md#clip-denoised-and-t-start); pc ignores it */
  if (colorize && !c->no_clip_denoised) p.clip_denoised = 1;
  /* and starts from noise without a chroma mean (docs/sampling.md#center-chroma) */
  p.center_chroma = colorize && !c->no_center_chroma;
  double t0 = sde_now();
  if (colorize)
    rc = sde_colorize(m, &sde, &p, n, (uint64_t)c->stream, x, y, &st);
  else
    rc = sde_inpaint(m, &sde, &p, n, (uint64_t)c->stream, x, fullmask, y, &st);
  double secs = sde_now() - t0;
  cli_progress_finish(&bar);
  if (rc) goto fail;
  cli_warn_nonfinite(cmd->name, "sample", y, n, D);
  if ((rc = write_samples(c->out, m, y, n, 1))) goto fail;
  summary(c, cmd->name, n, "sample", &st, secs);
  status = CLI_EXIT_OK;
  goto done;
fail:
  status = report(rc);
done:
  free(x);
  free(mask);
  free(fullmask);
  free(y);
  sde_model_free(m);
  return status;
}

static int run_inpaint(cli_cfg *c, const cli_command *cmd) { return run_control(c, cmd, 0); }
static int run_colorize(cli_cfg *c, const cli_command *cmd) { return run_control(c, cmd, 1); }

/* ---- noise-scales ---------------------------------------------------------------------- */

/* Loads planner data: any .npy [n, ...] (a 1-D array is one point), a PNG or a folder. */
static int load_plan_data(const char *path, float **x, int *n, int64_t *D) {
  int rc;
  *x = NULL;
  if (is_dir(path) || sde_has_suffix(path, ".png")) {
    int c = 0, h = 0, w = 0;
    *n = 1;
    rc = is_dir(path) ? sde_png_read_dir(path, 0, x, n, &c, &h, &w)
                      : sde_png_read(path, 0, x, &c, &h, &w);
    if (rc) return rc;
    *D = (int64_t)c * h * w;
    return SDE_OK;
  }
  if (!sde_has_suffix(path, ".npy"))
    return sde_fail(SDE_EINVAL, "--data '%s': expected a .npy file, a .png or a folder of PNGs",
                    path);
  int nd = 0;
  int64_t sh[SDE_NPY_MAX_DIMS];
  if ((rc = sde_npy_read(path, x, &nd, sh))) return rc;
  if (nd < 1) {
    free(*x);
    *x = NULL;
    return sde_fail(SDE_EINVAL, "--data '%s' is a scalar", path);
  }
  int64_t n64 = nd == 1 ? 1 : sh[0];
  *D = nd == 1 ? sh[0] : prod(sh + 1, nd - 1);
  if (n64 > 2000000000 || *D <= 0 || n64 <= 0) {
    free(*x);
    *x = NULL;
    return sde_fail(SDE_EINVAL, "--data '%s' has an unusable shape", path);
  }
  *n = (int)n64;
  return SDE_OK;
}

static int run_noise_scales(cli_cfg *c, const cli_command *cmd) {
  int rc;
  float *x = NULL;
  int n = 0;
  int64_t D = c->dim > 0 ? c->dim : 0;
  double sigma_1 = c->sigma_max;
  const char *sigma_1_from = "given";
  char from[128];
  if (!c->in && c->dim <= 0)
    return cli_usage_error(cmd->name, "give --data FILE|DIR, or --dim D with --sigma-max X");
  if (!c->in && isnan(sigma_1))
    return cli_usage_error(cmd->name, "without --data, --sigma-max (sigma_1) is required");
  if (c->threads >= 0) sde_set_num_threads(c->threads);
  double t0 = sde_now();
  if (c->in) {
    int64_t dD = 0;
    if ((rc = load_plan_data(c->in, &x, &n, &dD))) return report(rc);
    if (c->dim > 0 && c->dim != dD) {
      free(x);
      sde_fail(SDE_EINVAL, "--dim %lld disagrees with --data, whose points have %lld values",
               (long long)c->dim, (long long)dD);
      return report(SDE_EINVAL);
    }
    D = dD;
    if (c->centered)
      for (int64_t i = 0; i < (int64_t)n * D; i++) x[i] = 2.0f * x[i] - 1.0f;
    if (isnan(sigma_1)) {
      int use = n;
      if (c->max_points > 0 && c->max_points < n) { /* evenly spaced subset, in place */
        use = (int)c->max_points;
        for (int i = 0; i < use; i++) {
          int64_t src = (int64_t)i * n / use;
          if (src != i) memmove(x + (int64_t)i * D, x + src * D, (size_t)D * sizeof(float));
        }
      }
      if (use < 2) {
        free(x);
        sde_fail(SDE_EINVAL, "--data holds %d point; sigma_1 needs at least two (or give "
                             "--sigma-max)", use);
        return report(SDE_EINVAL);
      }
      if ((rc = sde_plan_sigma_max(use, D, x, &sigma_1))) {
        free(x);
        return report(rc);
      }
      snprintf(from, sizeof from, "largest distance between %d points", use);
      sigma_1_from = from;
    }
    free(x);
    x = NULL;
  }
  double sigma_L = isnan(c->sigma_min) ? 0.01 : c->sigma_min;
  int T = c->steps_per_scale > 0 ? c->steps_per_scale : 5;
  double target = isnan(c->target) ? 0.5 : c->target;
  if (!(sigma_1 > sigma_L)) {
    sde_fail(SDE_EINVAL, "sigma_1 = %g must exceed sigma_L = %g", sigma_1, sigma_L);
    return report(SDE_EINVAL);
  }
  double gamma = sde_plan_gamma(D, target);
  if (!(gamma > 1.0) || !isfinite(gamma)) {
    sde_fail(SDE_ENUMERIC, "no noise-scale ratio gamma > 1 meets the target %g for D = %lld",
             target, (long long)D);
    return report(SDE_ENUMERIC);
  }
  int L = sde_plan_num_scales(sigma_1, sigma_L, gamma);
  if (L < 2) {
    sde_fail(SDE_ENUMERIC, "the planner gave %d noise scales", L);
    return report(SDE_ENUMERIC);
  }
  double gamma_L = pow(sigma_1 / sigma_L, 1.0 / (L - 1));
  double eps = sde_plan_step_size(T, gamma_L, sigma_L);
  double ratio = sde_plan_step_ratio(eps, T, gamma_L, sigma_L);
  double snr = sqrt(eps / (2.0 * sigma_L * sigma_L));
  printf("D          %lld\n", (long long)D);
  printf("sigma_1    %-12.6g (%s)\n", sigma_1, sigma_1_from);
  printf("sigma_L    %.6g\n", sigma_L);
  printf("gamma      %-12.6g (technique 2 with target %g gives %.6g; this is the ratio of %d "
         "geometric scales)\n",
         gamma_L, target, gamma, L);
  printf("L          %d\n", L);
  printf("T          %d\n", T);
  printf("epsilon    %-12.6g (s_T^2/sigma_i^2 = %.4f)\n", eps, ratio);
  printf("snr        %-12.6g (annealed Langevin: sqrt(epsilon / (2 sigma_L^2)))\n", snr);
  printf("\nscore-SDE equivalent (VE SDE, annealed Langevin dynamics):\n");
  printf("  --sde ve --sigma-min %.6g --sigma-max %.6g --num-scales %d --predictor none "
         "--corrector ald --snr %.6g --corrector-steps %d\n",
         sigma_L, sigma_1, L, snr, T);
  fflush(stdout);
  if (!c->quiet) {
    if (n > 0)
      fprintf(stderr, "noise-scales: %d points of %lld dims, NFE 0, %.2f s\n", n, (long long)D,
              sde_now() - t0);
    else
      fprintf(stderr, "noise-scales: NFE 0, %.2f s\n", sde_now() - t0);
  }
  return CLI_EXIT_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static const cli_command commands[] = {
  {"sample", run_sample,
   G_MODEL | G_SDE | G_SAMPLER | G_FEW | G_PC | G_STEPS | G_ODE | G_TOL | G_EPS | G_NSAMPLE |
       G_SEED | G_IN_PRIOR | G_OUT_DATA,
   "draw samples with the PC sampler, the probability-flow ODE or a few-step solver",
   "--model FILE --out FILE.npy|FILE.png [options]",
   "Draws --n samples from the model by solving the reverse-time SDE with a\n"
   "predictor-corrector sampler (--sampler pc), the probability-flow ODE (--sampler ode), or\n"
   "a few-step solver (ddim, dpmpp-2m, dpmpp-3m, dpmpp-2m-sde, heun) with --steps network\n"
   "evaluations (docs/sampling.md). Sample i uses noise stream --stream + i, so a sample\n"
   "depends only on the seed, its stream and the settings. Image samples are written in\n"
   "[0,1]; a .png output is a grid."},
  {"encode", run_encode,
   G_MODEL | G_SDE | G_SAMPLER | G_FEW | G_ODE | G_STEPS | G_TOL | G_EPS | G_NREUSE | G_IN_DATA |
       G_OUT_LATENT,
   "map data to latents x(T) with the probability-flow ODE",
   "--model FILE --in DATA --out LATENTS.npy [options]",
   "Integrates the probability-flow ODE forwards from t = eps to T: a deterministic,\n"
   "invertible map from data to latents. `decode` inverts it. --sampler ode (adaptive RK45,\n"
   "the default) or a deterministic few-step solver (ddim, dpmpp-2m, dpmpp-3m, heun) with\n"
   "--steps network evaluations."},
  {"decode", run_decode,
   G_MODEL | G_SDE | G_SAMPLER | G_FEW | G_ODE | G_STEPS | G_TOL | G_EPS | G_NREUSE |
       G_IN_LATENT | G_OUT_DATA,
   "map latents back to data with the probability-flow ODE",
   "--model FILE --in LATENTS.npy --out FILE.npy|FILE.png [options]",
   "Integrates the probability-flow ODE backwards from T to eps, without a denoising step,\n"
   "so decode(encode(x)) reproduces x to the ODE tolerance (with the same --sampler,\n"
   "--schedule and --steps as the encoding)."},
  {"likelihood", run_likelihood,
   G_MODEL | G_SDE | G_TOL | G_EPS | G_NREUSE | G_SEED | G_IN_DATA | G_LIK,
   "exact log-likelihood and bits/dim through the probability-flow ODE",
   "--model FILE --in DATA [--logp-out LOGP.npy] [options]",
   "Computes log p(x) of each input with the instantaneous change of variables along the\n"
   "probability-flow ODE (RK45 from eps to T) and prints the mean bits/dim with its\n"
   "standard error. Image models add the offset that turns a density of scaled data into\n"
   "one of 8-bit pixels (8 for [0,1] models, 7 for centred ones); other models add none."},
  {"inpaint", run_inpaint,
   G_MODEL | G_SDE | G_SAMPLER | G_FEW | G_PC | G_STEPS | G_EPS | G_NREUSE | G_SEED | G_IN_DATA |
       G_OUT_DATA | G_MASK,
   "fill the unknown region of the inputs (mask: 1 = known)",
   "--model FILE --in DATA --mask MASK --out FILE.npy|FILE.png [options]",
   "Runs the PC sampler while holding the known region (mask = 1) to the input, re-noised\n"
   "to the current time after every update; a few-step solver (--sampler) puts the input\n"
   "into the known region of every data prediction instead. The mask is one per input or one for all; a\n"
   "PNG mask is white where known (its alpha channel when it has one and the model does\n"
   "not have 4 channels); one channel is applied to every channel."},
  {"colorize", run_colorize,
   G_MODEL | G_SDE | G_SAMPLER | G_FEW | G_PC | G_STEPS | G_EPS | G_NREUSE | G_SEED | G_IN_DATA |
       G_OUT_DATA,
   "colour grayscale images with a 3-channel image model",
   "--model FILE --in GRAY --out FILE.npy|FILE.png [options]",
   "Runs the PC sampler (or a few-step solver, --sampler) while holding the luminance\n"
   "coordinate of the orthogonal colour transform to the input's. Inputs may be 1-channel or RGB (reduced to the mean of R, G\n"
   "and B)."},
  {"noise-scales", run_noise_scales, G_PLAN,
   "plan NCSNv2 noise scales (sigma_1, gamma, L, epsilon) for a data set",
   "(--data FILE|DIR | --dim D --sigma-max X) [options]",
   "Applies techniques 1, 2 and 4 of Song & Ermon (2020): sigma_1 is the largest Euclidean\n"
   "distance between two training points, gamma the ratio of consecutive noise scales for\n"
   "dimension D, L the number of scales from sigma_1 down to sigma_L, and epsilon the\n"
   "annealed-Langevin step size for T steps per scale. It prints the equivalent score-SDE\n"
   "settings (VE SDE, predictor none, corrector ald, snr = sqrt(epsilon / (2 sigma_L^2)))."},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} net_commands[] = {
  {"score", cmd_score, "evaluate a network's raw output or score on given inputs"},
  {"info", cmd_info, "describe a model file"},
  {"convert", cmd_convert, "import an official checkpoint as a .safetensors model"},
  {"train", cmd_train, "train a score network by denoising score matching"},
};
#define NNET (sizeof net_commands / sizeof net_commands[0])

static void print_usage(FILE *f) {
  fprintf(f,
          "Usage: scoresde COMMAND [OPTIONS]\n"
          "\n"
          "Score-based generative modelling through stochastic differential equations\n"
          "(Song et al. 2021) with analytic or network score models.\n"
          "\n"
          "Commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
  for (size_t i = 0; i < NNET; i++)
    fprintf(f, "  %-13s %s\n", net_commands[i].name, net_commands[i].summary);
  fprintf(f,
          "\n"
          "Run 'scoresde COMMAND --help' for the options of a command.\n"
          "Other options: --help, --version. See docs/cli.md for the model formats.\n");
}

static void print_command_help(const cli_command *cmd) {
  printf("Usage: scoresde %s %s\n\n%s\n\nOptions:\n", cmd->name, cmd->synopsis, cmd->about);
  cli_print_options(stdout, options, NOPTIONS, cmd->groups);
}

static void cfg_init(cli_cfg *c) {
  memset(c, 0, sizeof *c);
  c->sigma_min = c->sigma_max = c->beta_min = c->beta_max = NAN;
  c->snr = c->eps = c->rtol = c->atol = c->target = NAN;
  c->num_scales = c->corrector_steps = c->steps = c->n = c->threads = -1;
  c->steps_per_scale = -1;
  c->dim = -1;
  c->max_points = 0;
  c->class_id = -1;
  c->guidance = NAN;
  c->churn = NAN;
  c->t_start = NAN;
}

/* OpenBLAS picks its kernels when it loads and falls back to generic ones on a CPU it does
 * not know (1.3-1.4x slower GEMMs). Restart once with the variable that selects the FMA
 * kernels; a user's own OPENBLAS_CORETYPE always wins, and so does a failed exec. */
static void reexec_with_fast_blas(char **argv) {
  if (getenv("OPENBLAS_CORETYPE")) return;
  const char *core = sde_blas_better_coretype();
  const char *chosen = sde_blas_corename();
  if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
  setenv("SCORESDE_BLAS_FALLBACK", chosen ? chosen : "?", 1); /* for --version */
  execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
  reexec_with_fast_blas(argv);
  if (argc < 2) {
    print_usage(stderr);
    return CLI_EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
    if (strcmp(name, "help") == 0 && argc > 2) {
      for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[2], commands[i].name) == 0) {
          print_command_help(&commands[i]);
          return CLI_EXIT_OK;
        }
      for (size_t i = 0; i < NNET; i++)
        if (strcmp(argv[2], net_commands[i].name) == 0) {
          char help[] = "--help";
          char *args[2] = {argv[2], help};
          return net_commands[i].fn(2, args);
        }
      return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
    }
    print_usage(stdout);
    return CLI_EXIT_OK;
  }
  if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
    const char *core = sde_blas_corename(), *better = sde_blas_better_coretype();
    printf("scoresde %s\n", SCORESDE_VERSION);
    const char *fallback = getenv("SCORESDE_BLAS_FALLBACK");
    if (core && fallback)
      printf("OpenBLAS kernels: %s (the library chose %s; restarted with OPENBLAS_CORETYPE=%s)\n",
             core, fallback, core);
    else if (core)
      printf("OpenBLAS kernels: %s%s%s\n", core, better ? "; faster on this CPU: " : "",
             better ? better : "");
    printf("CPU kernels: %s\n", sde_cpu_kernels());
    return CLI_EXIT_OK;
  }
  for (size_t i = 0; i < NNET; i++)
    if (strcmp(name, net_commands[i].name) == 0) return net_commands[i].fn(argc - 1, argv + 1);

  const cli_command *cmd = NULL;
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(name, commands[i].name) == 0) cmd = &commands[i];
  if (!cmd) {
    if (name[0] == '-') return cli_usage_error(NULL, "unknown option '%s'", name);
    return cli_usage_error(NULL, "unknown command '%s'", name);
  }

  cli_cfg cfg;
  int help = 0;
  cfg_init(&cfg);
  int rc = cli_parse(cmd->name, argc - 2, argv + 2, options, NOPTIONS, cmd->groups, &cfg, &help);
  if (rc) return rc;
  if (help) {
    print_command_help(cmd);
    return CLI_EXIT_OK;
  }
  if ((cmd->groups & G_MODEL) && !cfg.model)
    return cli_usage_error(cmd->name, "--model FILE is required");
  if ((rc = parse_names(cmd, &cfg)) || (rc = check_sample_params(cmd, &cfg))) return rc;
  note_tolerances(cmd, &cfg);
  cli_install_sigint();
  return cmd->run(&cfg, cmd);
}
