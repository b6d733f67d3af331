/* `scoresde train`: denoising score-matching training of an NCSN++ / DDPM++ network
 * (engine/src/train.c, docs/training.md).
 *
 *   scoresde train --data SRC --out RUNDIR [model options] [optimiser options]
 *                  [--steps N] [--resume] [--export FILE] ...
 *
 * RUNDIR receives checkpoint.safetensors (atomic, every --ckpt-every steps and every
 * --ckpt-minutes minutes, on Ctrl-C/SIGTERM and at the end), loss.csv (one row per step)
 * and samples/step_NNNNNNN.png grids drawn with the EMA weights. --resume continues from
 * RUNDIR/checkpoint.safetensors (or starts a new run when there is none), exactly as if
 * the run had never stopped.
 *
 * Started by mpirun (a build with MPI, cli_dist.h), the P processes are the ranks of one
 * data-parallel run: each trains on 1/P of every global --batch, the gradients are
 * summed over the ranks, and only rank 0 writes RUNDIR (docs/scale.md). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "cli_dist.h"
#include "cli_util.h"
#include "commands.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/network.h"
#include "scoresde/sample.h"
#include "scoresde/scoresde.h"
#include "scoresde/train.h"

static const char TRAIN_USAGE[] =
    "Usage: scoresde train --data SRC --out RUNDIR [OPTIONS]\n"
    "\n"
    "Trains an NCSN++/DDPM++ score network by denoising score matching (continuous time,\n"
    "VE/VP/sub-VP; Song et al. 2021, eq. 7) with Adam, warm-up, gradient clipping and an\n"
    "EMA of the weights. RUNDIR gets checkpoint.safetensors, loss.csv and samples/*.png.\n"
    "\n"
    "Data and model:\n"
    "  --data SRC            folder of PNGs, .npy [N,C,H,W] in [0,1], IDX file (.gz ok), or\n"
    "                        'fashion-mnist' (the Debian dataset-fashion-mnist training set)\n"
    "  --preset NAME         fashion-mnist-32 (default), tiny, ddpmpp-cifar10, ncsnpp-cifar10\n"
    "  --model-config FILE   network config JSON (the \"scoresde\" layout of docs/cli.md)\n"
    "  --nf N  --ch-mult 1,2,2  --res-blocks N  --attn 16[,8]  --dropout P\n"
    "  --image-size N  --channels N  --sde vp|subvp|ve  --sigma-max S  --dataset-name NAME\n"
    "                        override single fields of the preset / config\n"
    "  --global-head         add the global head (docs/math.md#global-head): predicts each\n"
    "                        channel's mean, which the convolutions all but cannot see\n"
    "  --init-from FILE      start a new run from a model .safetensors: tensors of the same\n"
    "                        name and shape are copied (e.g. a trained network, to add a head)\n"
    "  --num-classes K       train a time-dependent classifier (for `sample --classifier`)\n"
    "  --labels FILE         class labels: IDX label file or .npy [N] (IDX image files find\n"
    "                        their ...labels-idx1-ubyte[.gz] by themselves)\n"
    "Optimisation (defaults of the released configs):\n"
    "  --steps N             train until this many steps in all (required)\n"
    "  --batch N (128)  --lr X (2e-4)  --warmup N (5000)  --grad-clip X (1; <0 off)\n"
    "  --lr-decay-steps D    cosine decay of the learning rate to 0 at step D (0: constant)\n"
    "  --ema X (0.9999)  --ema-warmup (PyTorch (1+n)/(10+n) warm-up of the EMA decay)\n"
    "  --reduce-mean  --likelihood-weighting  --no-flip  --seed N (0)\n"
    "Run control:\n"
    "  --out RUNDIR          run folder (created)\n"
    "  --resume              continue RUNDIR/checkpoint.safetensors (new run if absent)\n"
    "  --ckpt-every N (1000) --ckpt-minutes M (10)   checkpoint frequency\n"
    "  --log-every N (50)    progress line on stderr every N steps\n"
    "  --sample-every N (0)  EMA sample grid every N steps (and at the end; 0: end only)\n"
    "  --sample-n N (16)  --sample-steps N (200)  --sample-seed N (0)\n"
    "  --max-minutes M       stop (with a checkpoint) after M minutes of this process\n"
    "  --export FILE         at the end, save the EMA weights as a model .safetensors\n"
    "  --quiet               no progress lines\n"
    "Device:\n"
    "  --device auto|cpu|cuda (auto: a GPU when there is one, else the CPU with a warning)\n"
    "  --cuda-device-id N (0; under mpirun: the rank's index on its host)\n"
    "  --precision fp32|tf32|bf16 (fp32)\n"
    "Several processes (a build with MPI; docs/scale.md):\n"
    "  mpirun -np P scoresde train ...   P ranks share every --batch (the same run as one\n"
    "                        process up to float rounding); rank 0 writes RUNDIR, which\n"
    "                        every rank must see at the same path to --resume\n";

#define FASHION_MNIST_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
#define FASHION_MNIST_TEST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int fail(const char *what) {
  fprintf(stderr, "scoresde train: %s%s%s\n", what ? what : "", what && *sde_errmsg() ? ": " : "",
          sde_errmsg());
  return CLI_EXIT_ERROR;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "scoresde train: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'scoresde train --help'.\n");
  return CLI_EXIT_USAGE;
}

static int mkdir_p(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0777) && errno != EEXIST) return -1;
      *p = '/';
    }
  if (mkdir(buf, 0777) && errno != EEXIST) return -1;
  return 0;
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The shipped small DDPM++ for 32x32 gray images (docs/training.md): nf 16 because of
 * the measured CPU budget (about 1 step/s at batch 32 on 2 shared cores). */
static void preset_fashion_mnist(sde_ncsnpp_config *c) {
  sde_ncsnpp_config_ddpmpp_cifar10(c);
  c->nf = 16;
  c->num_levels = 3;
  c->ch_mult[0] = 1;
  c->ch_mult[1] = 2;
  c->ch_mult[2] = 2;
  c->num_res_blocks = 2;
  c->num_attn = 1;
  c->attn_resolutions[0] = 8;
  c->dropout = 0.0;
  c->image_size = 32;
  c->num_channels = 1;
  c->centered = 1;
  snprintf(c->dataset, sizeof c->dataset, "fashion-mnist");
  sde_init(&c->sde, SDE_VP);
  c->has_sde = 1;
  c->continuous = 1;
}

static void preset_tiny(sde_ncsnpp_config *c) {
  preset_fashion_mnist(c);
  c->nf = 8;
  c->num_levels = 2;
  c->ch_mult[0] = 1;
  c->ch_mult[1] = 2;
  c->num_res_blocks = 1;
  c->attn_resolutions[0] = 8;
  c->image_size = 16;
  c->dropout = 0.0;
  snprintf(c->dataset, sizeof c->dataset, "tiny");
}

static int parse_int_list(const char *s, int *out, int max, int *n) {
  int k = 0;
  const char *p = s;
  while (*p) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 1 || v > 1 << 20 || k >= max) return -1;
    out[k++] = (int)v;
    p = end;
    if (*p == ',') p++;
    else if (*p) return -1;
  }
  *n = k;
  return k > 0 ? 0 : -1;
}

typedef struct {
  cli_device_args dev;
  const char *data, *out, *preset, *model_config, *export_path, *ch_mult, *attn, *sde_name,
      *dataset_name, *labels, *init_from;
  int global_head;
  int nf, res_blocks, image_size, channels, num_classes;
  double dropout, sigma_max;
  int64_t steps;
  int batch, warmup, lr_decay_steps, ema_warmup, reduce_mean, lw, no_flip;
  double lr, grad_clip, ema;
  int have_seed;
  uint64_t seed;
  int resume, quiet;
  int64_t ckpt_every, log_every, sample_every;
  double ckpt_minutes, max_minutes;
  int sample_n, sample_steps;
  uint64_t sample_seed;
} train_args;

static const char *take(int argc, char **argv, int *i, const char *name, const char **inline_val) {
  if (*inline_val) return *inline_val;
  if (*i + 1 >= argc) {
    usage_error("option --%s needs a value", name);
    return NULL;
  }
  return argv[++*i];
}

static int parse_args(int argc, char **argv, train_args *a, int *help) {
  memset(a, 0, sizeof *a);
  a->nf = a->res_blocks = a->image_size = a->channels = -1;
  a->dropout = a->sigma_max = NAN;
  a->batch = a->warmup = a->lr_decay_steps = -1;
  a->lr = a->grad_clip = a->ema = NAN;
  a->ckpt_every = 1000;
  a->log_every = 50;
  a->ckpt_minutes = 10;
  a->max_minutes = 0;
  a->sample_n = 16;
  a->sample_steps = 200;
  a->steps = -1;
  cli_device_args_init(&a->dev);
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      *help = 1;
      return 0;
    }
    int took = cli_device_arg("train", argc, argv, &i, &a->dev);
    if (took < 0) return -took;
    if (took) continue;
    if (strncmp(arg, "--", 2)) return usage_error("unexpected argument '%s'", arg);
    char name[64];
    const char *eq = strchr(arg + 2, '='), *val = NULL;
    size_t nl = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    if (nl >= sizeof name) return usage_error("unknown option '%s'", arg);
    memcpy(name, arg + 2, nl);
    name[nl] = 0;
    if (eq) val = eq + 1;
#define FLAG(n, field)                                                     \
  if (!strcmp(name, n)) {                                                  \
    if (val) return usage_error("option --%s takes no value", name);       \
    a->field = 1;                                                          \
    continue;                                                              \
  }
#define STR(n, field)                                                      \
  if (!strcmp(name, n)) {                                                  \
    if (!(a->field = take(argc, argv, &i, name, &val))) return CLI_EXIT_USAGE; \
    continue;                                                              \
  }
#define NUM(n, field, lo, hi)                                              \
  if (!strcmp(name, n)) {                                                  \
    const char *v = take(argc, argv, &i, name, &val);                     \
    if (!v) return CLI_EXIT_USAGE;                                         \
    char *end;                                                             \
    errno = 0;                                                             \
    double d = strtod(v, &end);                                            \
    if (errno || *end || end == v || !(d >= (lo) && d <= (hi)))            \
      return usage_error("bad value for --%s", name);                     \
    a->field = d;                                                          \
    continue;                                                              \
  }
#define U64(n, field, have)                                                \
  if (!strcmp(name, n)) {                                                  \
    const char *v = take(argc, argv, &i, name, &val);                     \
    if (!v) return CLI_EXIT_USAGE;                                         \
    char *end;                                                             \
    errno = 0;                                                             \
    unsigned long long u = strtoull(v, &end, 0);                           \
    if (errno || *end || end == v || v[0] == '-')                          \
      return usage_error("bad value for --%s", name);                     \
    a->field = u;                                                          \
    have;                                                                  \
    continue;                                                              \
  }
    STR("data", data) STR("out", out) STR("preset", preset) STR("model-config", model_config)
    STR("export", export_path) STR("ch-mult", ch_mult) STR("attn", attn) STR("sde", sde_name)
    STR("dataset-name", dataset_name) STR("labels", labels) STR("init-from", init_from)
    FLAG("global-head", global_head)
    NUM("num-classes", num_classes, 1, 1 << 20)
    NUM("nf", nf, 4, 65536) NUM("res-blocks", res_blocks, 1, 1000)
    NUM("image-size", image_size, 1, 65536) NUM("channels", channels, 1, 4)
    NUM("dropout", dropout, 0, 0.99) NUM("sigma-max", sigma_max, 1e-6, 1e9)
    NUM("steps", steps, 0, 1e15) NUM("batch", batch, 1, 65536) NUM("lr", lr, 1e-12, 10)
    NUM("warmup", warmup, 0, 2e9) NUM("lr-decay-steps", lr_decay_steps, 0, 2e9)
    NUM("grad-clip", grad_clip, -1, 1e9) NUM("ema", ema, 0, 0.999999999)
    FLAG("ema-warmup", ema_warmup) FLAG("reduce-mean", reduce_mean)
    FLAG("likelihood-weighting", lw) FLAG("no-flip", no_flip)
    U64("seed", seed, a->have_seed = 1) FLAG("resume", resume) FLAG("quiet", quiet)
    NUM("ckpt-every", ckpt_every, 0, 1e15) NUM("ckpt-minutes", ckpt_minutes, 0, 1e9)
    NUM("log-every", log_every, 1, 1e15) NUM("sample-every", sample_every, 0, 1e15)
    NUM("sample-n", sample_n, 0, 1024) NUM("sample-steps", sample_steps, 1, 100000)
    U64("sample-seed", sample_seed, (void)0) NUM("max-minutes", max_minutes, 0, 1e9)
    return usage_error("unknown option '--%s'", name);
#undef FLAG
#undef STR
#undef NUM
#undef U64
  }
  return 0;
}

/* a new run's weights from a model file (sde_trainer_init_from) */
static int init_from(sde_trainer *t, const char *path, int verbose) {
  sde_model *m = NULL;
  int copied = 0, total = 0;
  if (sde_network_load(path, &m)) return fail(path);
  int rc = sde_trainer_init_from(t, m, &copied, &total);
  sde_model_free(m);
  if (rc) return fail(path);
  if (verbose)
    fprintf(stderr, "scoresde train: --init-from %s: %d of the network's %d tensors copied, "
            "%d initialised\n", path, copied, total, total - copied);
  return 0;
}

static int build_net_config(const train_args *a, sde_ncsnpp_config *c) {
  const char *preset = a->preset ? a->preset : "fashion-mnist-32";
  if (a->model_config) {
    sde_json *j = sde_json_parse_file(a->model_config, 1 << 20);
    if (!j) return fail(a->model_config);
    int rc = sde_ncsnpp_config_from_json(j, c);
    sde_json_free(j);
    if (rc) return fail(a->model_config);
  } else if (!strcmp(preset, "fashion-mnist-32")) {
    preset_fashion_mnist(c);
  } else if (!strcmp(preset, "tiny")) {
    preset_tiny(c);
  } else if (!strcmp(preset, "ddpmpp-cifar10")) {
    sde_ncsnpp_config_ddpmpp_cifar10(c);
  } else if (!strcmp(preset, "ncsnpp-cifar10")) {
    sde_ncsnpp_config_ncsnpp_cifar10(c);
  } else {
    return usage_error("unknown --preset '%s'", preset);
  }
  if (a->nf > 0) c->nf = a->nf;
  if (a->global_head) c->global_head = 1;
  if (a->res_blocks > 0) c->num_res_blocks = a->res_blocks;
  if (a->image_size > 0) c->image_size = a->image_size;
  if (a->channels > 0) c->num_channels = a->channels;
  if (!isnan(a->dropout)) c->dropout = a->dropout;
  if (a->ch_mult && parse_int_list(a->ch_mult, c->ch_mult, SDE_NET_MAX_LEVELS, &c->num_levels))
    return usage_error("bad --ch-mult '%s' (e.g. 1,2,2)", a->ch_mult);
  if (a->attn) {
    if (!strcmp(a->attn, "none")) c->num_attn = 0;
    else if (parse_int_list(a->attn, c->attn_resolutions, SDE_NET_MAX_ATTN, &c->num_attn))
      return usage_error("bad --attn '%s' (e.g. 16 or 16,8)", a->attn);
  }
  if (a->sde_name) {
    sde_kind k;
    if (sde_kind_from_name(a->sde_name, &k)) return usage_error("unknown --sde '%s'", a->sde_name);
    sde_init(&c->sde, k);
    c->has_sde = 1;
  }
  if (!isnan(a->sigma_max)) c->sde.sigma_max = a->sigma_max;
  if (a->dataset_name) snprintf(c->dataset, sizeof c->dataset, "%s", a->dataset_name);
  if (a->num_classes > 0) { /* time-dependent classifier: the down path + a linear head */
    c->num_classes = a->num_classes;
    c->scale_by_sigma = 0;
  }
  c->continuous = 1;
  if (sde_ncsnpp_config_validate(c)) return fail("model config");
  return 0;
}

static void build_train_config(const train_args *a, sde_train_config *tc) {
  sde_train_config_init(tc);
  if (a->batch > 0) tc->batch = a->batch;
  if (!isnan(a->lr)) tc->lr = a->lr;
  if (a->warmup >= 0) tc->warmup = a->warmup;
  if (a->lr_decay_steps >= 0) tc->lr_decay_steps = a->lr_decay_steps;
  if (!isnan(a->grad_clip)) tc->grad_clip = a->grad_clip;
  if (!isnan(a->ema)) tc->ema = a->ema;
  tc->ema_warmup = a->ema_warmup;
  tc->reduce_mean = a->reduce_mean;
  tc->likelihood_weighting = a->lw;
  tc->random_flip = !a->no_flip;
  if (a->have_seed) tc->seed = a->seed;
}

/* Keeps the rows of loss.csv up to `step` (a resumed run rewrites what follows). */
static FILE *open_loss_csv(const char *path, int64_t step) {
  FILE *in = fopen(path, "r");
  char *kept = NULL;
  size_t klen = 0, kcap = 0;
  if (in) {
    char line[512];
    while (fgets(line, sizeof line, in)) {
      long long s;
      int is_header = !strncmp(line, "step,", 5);
      if (!is_header && (sscanf(line, "%lld,", &s) != 1 || s > step)) continue;
      size_t l = strlen(line);
      if (klen + l + 1 > kcap) {
        kcap = (klen + l + 1) * 2;
        char *nk = realloc(kept, kcap);
        if (!nk) break;
        kept = nk;
      }
      memcpy(kept + klen, line, l + 1);
      klen += l;
    }
    fclose(in);
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    free(kept);
    return NULL;
  }
  if (klen) fwrite(kept, 1, klen, f);
  else fprintf(f, "step,loss,grad_norm,lr,wall_seconds\n");
  free(kept);
  fflush(f);
  return f;
}

static int write_grid(const sde_trainer *t, const char *run, const train_args *a) {
  if (a->sample_n <= 0) return 0;
  sde_model *m;
  if (sde_trainer_ema_model(t, &m)) return fail("EMA model");
  sde_sample_params p;
  sde_sample_params_init(&p);
  p.sampler = SDE_SAMPLER_PC;
  p.predictor = SDE_PRED_EULER_MARUYAMA;
  p.corrector = SDE_CORR_NONE;
  p.steps = a->sample_steps;
  p.denoise = 1;
  p.seed = a->sample_seed;
  const int64_t D = sde_model_dim(m);
  float *x = malloc((size_t)a->sample_n * D * sizeof(float));
  int rc = x ? sde_sample(m, &m->sde, &p, a->sample_n, 0, x, NULL) : SDE_ENOMEM;
  if (!rc) {
    cli_warn_nonfinite("train", "EMA sample", x, a->sample_n, D);
    if (m->centered)
      for (int64_t i = 0; i < (int64_t)a->sample_n * D; i++) x[i] = 0.5f * (x[i] + 1.0f);
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/samples", run);
    mkdir_p(dir);
    snprintf(path, sizeof path, "%s/step_%07lld.png", dir, (long long)sde_trainer_step_count(t));
    rc = sde_png_write_grid(path, x, a->sample_n, m->channels, m->height, m->width, 0, 1);
    if (!rc && !a->quiet) fprintf(stderr, "scoresde train: sample grid %s\n", path);
  }
  free(x);
  sde_model_free(m);
  if (rc) return fail("sample grid");
  return 0;
}

static int save_ckpt(const sde_trainer *t, const char *path, const char *data, double wall,
                     const char *cmdline) {
  char wall_s[64];
  snprintf(wall_s, sizeof wall_s, "%.1f", wall);
  const char *meta[] = {"data", data, "wall_seconds", wall_s, "command", cmdline};
  if (sde_trainer_save(t, path, meta, 3)) return fail(path);
  return 0;
}

static char *join_args(int argc, char **argv) {
  size_t len = 32;
  for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 3;
  char *s = malloc(len);
  if (!s) return NULL;
  strcpy(s, "scoresde");
  for (int i = 0; i < argc; i++) {
    strcat(s, " ");
    strcat(s, argv[i]);
  }
  return s;
}

/* Bits of the per-step agreement of the ranks (cli_dist_or). */
enum { AGREE_CKPT = 1, AGREE_STOP = 2, AGREE_SIGNAL = 4 };

static int train_run(int argc, char **argv, train_args *ap, cli_dist *d);

int cmd_train(int argc, char **argv) {
  train_args a;
  int help = 0, rc = parse_args(argc, argv, &a, &help);
  if (rc) return rc;
  if (help) {
    fputs(TRAIN_USAGE, stdout);
    return CLI_EXIT_OK;
  }
  if (!a.out) return usage_error("%s", "--out RUNDIR is required");
  if (a.steps < 0) return usage_error("%s", "--steps N is required");
  cli_dist d;
  if ((rc = cli_dist_init(&d))) return rc;
  rc = train_run(argc, argv, &a, &d);
  /* a rank that failed alone would leave the others waiting in their next sum */
  if (rc != CLI_EXIT_OK && rc != CLI_EXIT_CANCELLED) cli_dist_abort(&d, rc);
  cli_dist_finish(&d);
  return rc;
}

/* The states of all ranks are the same (their hashes agree); a message when not. */
static int ranks_agree(const cli_dist *d, const sde_trainer *t, const char *when) {
  if (d->world == 1) return 1;
  if (cli_dist_same_u64(d, sde_trainer_state_hash(t))) return 1;
  fprintf(stderr, "scoresde train: rank %d: the ranks' training states differ %s (a "
          "checkpoint that not every host sees at RUNDIR, or different data?)\n", d->rank, when);
  return 0;
}

static int train_run(int argc, char **argv, train_args *ap, cli_dist *d) {
  train_args a = *ap;
  int rc;
  const int root = d->rank == 0;
  if (!root) a.quiet = 1; /* rank 0 speaks for the run */
  if (root && mkdir_p(a.out)) {
    fprintf(stderr, "scoresde train: cannot create %s: %s\n", a.out, strerror(errno));
    return CLI_EXIT_ERROR;
  }
  char ckpt[4200], csv[4200];
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", a.out);
  snprintf(csv, sizeof csv, "%s/loss.csv", a.out);

  sde_trainer *t = NULL;
  double wall0 = 0;
  char *data_saved = NULL, *cmdline = join_args(argc, argv);
  int resumed = 0, stale = 0;
  /* a run killed while writing a checkpoint leaves checkpoint.safetensors.tmp.<pid> (the
   * checkpoint itself is whole: it is replaced by a rename) */
  if (root && a.resume && sde_remove_stale_temporaries(ckpt, &stale))
    fprintf(stderr, "scoresde train: warning: %s\n", sde_errmsg());
  if (stale && !a.quiet)
    fprintf(stderr, "scoresde train: removed %d temporary file%s left by a killed run in %s\n",
            stale, stale == 1 ? "" : "s", a.out);
  /* rank 0 decides whether there is a run to continue; every rank then reads it */
  if (cli_dist_bcast_int(d, root ? file_exists(ckpt) : 0)) {
    if (!a.resume) {
      if (root)
        fprintf(stderr, "scoresde train: %s exists; pass --resume to continue it (or choose "
                "another --out)\n", ckpt);
      return CLI_EXIT_USAGE;
    }
    if (sde_trainer_load(ckpt, &t)) return fail("resume");
    char *w = sde_checkpoint_metadata(ckpt, "wall_seconds");
    if (w) wall0 = atof(w);
    free(w);
    data_saved = sde_checkpoint_metadata(ckpt, "data");
    resumed = 1;
    if (a.preset || a.model_config || a.ch_mult || a.attn || a.sde_name || a.nf > 0 ||
        a.res_blocks > 0 || a.image_size > 0 || a.channels > 0 || !isnan(a.dropout) ||
        a.num_classes > 0 || a.global_head || a.init_from || a.batch > 0 || !isnan(a.lr) ||
        a.warmup >= 0 || a.lr_decay_steps >= 0 || !isnan(a.grad_clip) || !isnan(a.ema) || a.ema_warmup || a.reduce_mean || a.lw ||
        a.no_flip || a.have_seed)
      if (!a.quiet)
        fprintf(stderr, "scoresde train: note: resuming %s: the model and training settings "
                "come from the checkpoint; those on the command line are not used\n", ckpt);
  }
  const char *data = a.data ? a.data : data_saved;
  if (!data) return usage_error("%s", "--data SRC is required");
  const char *data_path = data;
  if (!strcmp(data, "fashion-mnist")) data_path = FASHION_MNIST_TRAIN;
  else if (!strcmp(data, "fashion-mnist:test")) data_path = FASHION_MNIST_TEST;
  if (!t) {
    sde_ncsnpp_config nc;
    sde_train_config tc;
    if ((rc = build_net_config(&a, &nc))) return rc;
    build_train_config(&a, &tc);
    if (sde_trainer_create(&nc, &tc, &t)) return fail("new run");
    if (a.init_from && (rc = init_from(t, a.init_from, root && !a.quiet))) {
      sde_trainer_free(t);
      return rc;
    }
  }
  {
    sde_load_options lo;
    sde_device_info info;
    if (cli_device_options("train", &a.dev, &lo)) {
      sde_trainer_free(t);
      return CLI_EXIT_USAGE;
    }
    /* one GPU per rank: the rank's index on its host, unless given */
    if (d->world > 1 && !a.dev.cuda_device_id_given) lo.device_id = d->local_rank;
    /* the local slice first: the device workspace then holds only its activations */
    if (d->world > 1 && sde_trainer_set_reduce(t, &d->reduce)) {
      sde_trainer_free(t);
      return fail("data-parallel training");
    }
    if (sde_trainer_set_device(t, &lo, &info)) {
      sde_trainer_free(t);
      return fail("device");
    }
    cli_device_warn("train", &info, a.quiet);
    /* every rank on the same kind of device (their updates must round alike); all on
     * GPUs: the sums move into NCCL when this build has it */
    const int kinds = cli_dist_or(d, info.device == SDE_DEVICE_CUDA ? 1 : 2);
    if (kinds == 3) {
      if (root)
        fprintf(stderr, "scoresde train: some ranks run on a GPU and some on the CPU; pass "
                "--device cuda or --device cpu\n");
      sde_trainer_free(t);
      return CLI_EXIT_ERROR;
    }
    if (d->world > 1 && kinds == 1 && cli_dist_use_nccl(d, info.device_id) == 0 &&
        sde_trainer_set_reduce(t, &d->reduce)) {
      sde_trainer_free(t);
      return fail("data-parallel training");
    }
    if (!ranks_agree(d, t, "at the start")) {
      sde_trainer_free(t);
      return CLI_EXIT_ERROR;
    }
  }
  const sde_ncsnpp_config *nc = sde_trainer_net_config(t);
  const sde_train_config *tc = sde_trainer_train_config(t);
  sde_dataset ds;
  if (sde_dataset_load(data_path, nc->image_size, nc->num_channels, &ds)) {
    sde_trainer_free(t);
    return fail(data_path);
  }
  if (a.labels && sde_dataset_load_labels(a.labels, &ds)) {
    sde_dataset_free(&ds);
    sde_trainer_free(t);
    return fail(a.labels);
  }
  if (nc->num_classes > 0 && a.sample_n > 0) a.sample_n = 0; /* a classifier draws nothing */
  int64_t nparams = sde_trainer_num_params(t);
  if (!a.quiet) {
    fprintf(stderr, "scoresde train: %s run in %s: %lld parameters, %s SDE, batch %d, data %s "
            "(%d images %dx%dx%d), step %lld -> %lld\n", resumed ? "resumed" : "new", a.out,
            (long long)nparams, sde_kind_name(nc->sde.kind), tc->batch, data, ds.n,
            ds.channels, ds.height, ds.width, (long long)sde_trainer_step_count(t),
            (long long)a.steps);
    if (d->world > 1) {
      int first, count;
      sde_trainer_local_batch(t, &first, &count);
      fprintf(stderr, "scoresde train: data-parallel over %d ranks, gradients summed by %s, "
              "%d samples of each batch per rank (rank 0: %d..%d)\n", d->world,
              cli_dist_transport(d), count, first, first + count - 1);
    }
  }
  FILE *lf = root ? open_loss_csv(csv, sde_trainer_step_count(t)) : NULL;
  if (root && !lf) fprintf(stderr, "scoresde train: warning: cannot write %s\n", csv);

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  const double t_start = sde_now();
  double last_ckpt = t_start, last_log = t_start;
  int64_t log_step0 = sde_trainer_step_count(t);
  const int64_t step_begin = log_step0;
  double loss_acc = 0;
  int loss_n = 0;
  int status = CLI_EXIT_OK;
  int saved_at_end = 0;
  while (sde_trainer_step_count(t) < a.steps) {
    sde_train_stats st;
    if (sde_trainer_step(t, &ds, &st)) {
      status = fail("step");
      break;
    }
    int64_t step = sde_trainer_step_count(t);
    double now = sde_now();
    loss_acc += st.loss;
    loss_n++;
    if (lf)
      fprintf(lf, "%lld,%.8g,%.6g,%.6g,%.1f\n", (long long)step, st.loss, st.grad_norm, st.lr,
              wall0 + now - t_start);
    if (!a.quiet && (step % a.log_every == 0 || step == a.steps)) {
      double rate = (double)(step - log_step0) / fmax(now - last_log, 1e-9);
      char eta[32];
      cli_format_duration((double)(a.steps - step) / fmax(rate, 1e-9), eta, sizeof eta);
      fprintf(stderr, "step %lld/%lld  loss %.5f (mean of %d)  |g| %.3g  lr %.3g  %.2f steps/s  "
              "ETA %s\n", (long long)step, (long long)a.steps, loss_acc / loss_n, loss_n,
              st.grad_norm, st.lr, rate, eta);
      if (lf) fflush(lf);
      last_log = now;
      log_step0 = step;
      loss_acc = 0;
      loss_n = 0;
    }
    /* the clocks are rank 0's; a signal to any rank stops them all */
    int agree = (root && a.ckpt_minutes > 0 && now - last_ckpt >= 60.0 * a.ckpt_minutes
                     ? AGREE_CKPT : 0) |
                (root && a.max_minutes > 0 && now - t_start >= 60.0 * a.max_minutes
                     ? AGREE_STOP : 0) |
                (stop_requested ? AGREE_SIGNAL : 0);
    agree = cli_dist_or(d, agree);
    int want_ckpt = (a.ckpt_every > 0 && step % a.ckpt_every == 0) || (agree & AGREE_CKPT);
    int stop = (agree & (AGREE_STOP | AGREE_SIGNAL)) != 0;
    if (want_ckpt || stop) {
      if (lf) fflush(lf);
      if (!ranks_agree(d, t, "at a checkpoint") ||
          (root && save_ckpt(t, ckpt, data, wall0 + now - t_start, cmdline))) {
        status = CLI_EXIT_ERROR;
        break;
      }
      last_ckpt = now;
      saved_at_end = 1;
    } else {
      saved_at_end = 0;
    }
    if (root && a.sample_every > 0 && step % a.sample_every == 0 && step < a.steps && !stop)
      write_grid(t, a.out, &a);
    if (stop) {
      if (!a.quiet)
        fprintf(stderr, "scoresde train: stopped at step %lld; checkpoint %s (continue with "
                "--resume)\n", (long long)step, ckpt);
      status = (agree & AGREE_SIGNAL) ? CLI_EXIT_CANCELLED : CLI_EXIT_OK;
      break;
    }
  }
  double wall = wall0 + sde_now() - t_start;
  if (d->world > 1 && d->sum_calls > 0 && !a.quiet) {
    const int64_t n = sde_trainer_step_count(t) - step_begin;
    fprintf(stderr, "scoresde train: %lld steps in %.1f s (%.3f s/step); gradient sums: %.1f ms "
            "per step, %.0f bytes summed over %d ranks each step (%s)\n", (long long)n,
            sde_now() - t_start, (sde_now() - t_start) / (double)(n > 0 ? n : 1),
            1e3 * d->sum_seconds / (double)d->sum_calls, d->sum_bytes / (double)d->sum_calls,
            d->world, cli_dist_transport(d));
  }
  if (status == CLI_EXIT_OK && sde_trainer_step_count(t) >= a.steps) {
    /* no steps taken here (an export of a finished or running run): leave the checkpoint
     * alone, another process may be writing it */
    if (!saved_at_end && sde_trainer_step_count(t) > step_begin &&
        (!ranks_agree(d, t, "at the end") || (root && save_ckpt(t, ckpt, data, wall, cmdline))))
      status = CLI_EXIT_ERROR;
    if (status == CLI_EXIT_OK && root && write_grid(t, a.out, &a)) status = CLI_EXIT_ERROR;
    if (status == CLI_EXIT_OK && root && a.export_path) {
      char *tj = sde_train_config_to_json(tc);
      char facts[4096];
      snprintf(facts, sizeof facts,
               "{\"steps\":%lld,\"wall_seconds\":%.1f,\"data\":\"%s\",\"weights\":\"ema\","
               "\"objective\":\"%s\",\"train\":%s}",
               (long long)sde_trainer_step_count(t), wall, data,
               nc->num_classes > 0 ? "cross-entropy of a time-dependent classifier on noised data"
                                   : "dsm continuous (score_sde eq. 7)",
               tj ? tj : "{}");
      free(tj);
      const char *meta[] = {"training", facts};
      if (sde_trainer_export(t, a.export_path, meta, 1)) status = fail(a.export_path);
      else if (!a.quiet) fprintf(stderr, "scoresde train: EMA model written to %s\n", a.export_path);
    }
  }
  if (lf) fclose(lf);
  sde_dataset_free(&ds);
  sde_trainer_free(t);
  free(data_saved);
  free(cmdline);
  return status;
}
