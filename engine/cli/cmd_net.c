/* Network-model commands of `scoresde`:
 *
 *   scoresde info FILE|DIR
 *   scoresde score --model FILE --in x.npy --t t.npy --out s.npy [--raw] [--sde ve|vp|subvp]
 *   scoresde convert --from pth CHECKPOINT --out FILE [--preset NAME] [--config JSON]
 *                    [--set KEY=VALUE ...] [--weights ema|model] [--script PY] [--python EXE]
 *   scoresde convert --from diffusers DIR --out FILE
 *
 * `score` reads x [B, C,H,W] (or [B, D]) in model space (what the network sees before
 * its own 2x-1) and times t [B] (or one time for all), and writes the score s(x, t) as
 * get_score_fn computes it; with --raw the raw network output at the labels derived from
 * t (VE: sigma(t), VP/sub-VP: 999 t; docs/math.md#labels).
 *
 * `convert --from pth` runs tools/models/convert_pth.py (found with --script, the
 * SCORESDE_CONVERT_PTH environment variable, or next to the executable's source tree) with
 * --python (else SCORESDE_PYTHON, else /usr/bin/python3), then loads its output to check
 * every tensor against the config and rewrites it with the canonical metadata. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "scoresde/scoresde.h"
#include "scoresde/sde.h"
#include "scoresde/train.h"

static int fail(const char *cmd, const char *what) {
  fprintf(stderr, "scoresde %s: %s%s%s\n", cmd, what ? what : "", what && *sde_errmsg() ? ": " : "",
          sde_errmsg());
  return 1;
}

static int usage(const char *cmd, const char *msg, const char *text) {
  if (msg) fprintf(stderr, "scoresde %s: %s\n", cmd, msg);
  fprintf(msg ? stderr : stdout, "%s", text);
  return msg ? 2 : 0;
}

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ---- info ------------------------------------------------------------------------------ */

static const char INFO_USAGE[] =
    "Usage: scoresde info FILE\n"
    "Describes a model: a network .safetensors (config, parameter count, FLOPs per\n"
    "evaluation, SDE, id), a diffusers UNet2DModel folder, or a JSON analytic model.\n";

static void print_network(const sde_model *m) {
  const sde_ncsnpp_config *c = sde_network_config(m);
  static const char *const prog[] = {"none", "output_skip", "input_skip", "residual"};
  int64_t np = 0, nmod = 0;
  double flops = 0;
  sde_ncsnpp_count(c, &np, &nmod, &flops);
  int ntensors = 0;
  sde_net_param *params = NULL;
  int64_t trainable = 0;
  if (sde_ncsnpp_param_list(c, &params, &ntensors) == 0)
    for (int i = 0; i < ntensors; i++) trainable += params[i].trainable ? params[i].numel : 0;
  free(params);
  int is_ddpmpp = c->resblock_type == SDE_RESBLOCK_BIGGAN && !c->fir &&
                  c->progressive == SDE_PROG_NONE && c->progressive_input == SDE_PROG_NONE &&
                  c->embedding_type == SDE_EMBED_POSITIONAL;
  if (c->num_classes > 0)
    printf("network     time-dependent classifier, %d classes (%s down path + GroupNorm, "
           "mean, Linear)\n", c->num_classes, is_ddpmpp ? "DDPM++" : "NCSN++");
  else
    printf("network     %s (class NCSNpp)\n", is_ddpmpp ? "DDPM++" : "NCSN++");
  printf("id          %s\n", m->id);
  printf("data        %dx%dx%d (C x H x W), %s, dataset %s\n", c->num_channels, c->image_size,
         c->image_size, c->centered ? "centred [-1,1]" : "[0,1]", c->dataset[0] ? c->dataset : "?");
  printf("nf          %d, ch_mult [", c->nf);
  for (int l = 0; l < c->num_levels; l++) printf("%s%d", l ? "," : "", c->ch_mult[l]);
  printf("], num_res_blocks %d, attn_resolutions [", c->num_res_blocks);
  for (int a = 0; a < c->num_attn; a++) printf("%s%d", a ? "," : "", c->attn_resolutions[a]);
  printf("]\n");
  printf("blocks      resblock %s, fir %s, skip_rescale %s, resamp_with_conv %s\n",
         c->resblock_type == SDE_RESBLOCK_DDPM ? "ddpm" : "biggan", c->fir ? "yes" : "no",
         c->skip_rescale ? "yes" : "no", c->resamp_with_conv ? "yes" : "no");
  printf("progressive output %s, input %s, combine %s\n", prog[c->progressive],
         prog[c->progressive_input], c->progressive_combine == SDE_COMBINE_CAT ? "cat" : "sum");
  printf("embedding   %s%s, scale_by_sigma %s, conditional %s\n",
         c->embedding_type == SDE_EMBED_FOURIER ? "fourier" : "positional",
         c->embedding_type == SDE_EMBED_FOURIER ? "" : " (sinusoidal)",
         c->scale_by_sigma ? "yes" : "no", c->conditional ? "yes" : "no");
  if (c->global_head) printf("head        global (docs/math.md#global-head)\n");
  if (c->has_sde) {
    if (c->sde.kind == SDE_VE)
      printf("sde         ve, sigma %g..%g, N %d, %s\n", c->sde.sigma_min, c->sde.sigma_max,
             c->sde.N, c->continuous ? "continuous" : "discrete (SMLD)");
    else
      printf("sde         %s, beta %g..%g, N %d, %s\n", sde_kind_name(c->sde.kind), c->sde.beta_min,
             c->sde.beta_max, c->sde.N, c->continuous ? "continuous" : "discrete (DDPM)");
  } else {
    printf("sde         (none named in the file)\n");
  }
  printf("parameters  %lld (%lld trainable) in %d tensors, %lld modules\n", (long long)np,
         (long long)trainable, ntensors, (long long)nmod);
  printf("flops       %.3f GFLOP per evaluation of one sample (2 x multiply-adds of convs, "
         "linears, attention)\n", flops * 1e-9);
  char *json = sde_ncsnpp_config_to_json(c);
  if (json) printf("config      %s\n", json);
  free(json);
}

/* A training checkpoint is not a model: says what it is and how to export one. */
static int print_checkpoint(const char *path) {
  char *format = sde_checkpoint_metadata(path, "format");
  int is_ckpt = format && !strcmp(format, SDE_CHECKPOINT_FORMAT);
  free(format);
  if (!is_ckpt) return 0;
  char *step = sde_checkpoint_metadata(path, "step"), *net = sde_checkpoint_metadata(path, "scoresde");
  char *wall = sde_checkpoint_metadata(path, "wall_seconds"), *data = sde_checkpoint_metadata(path, "data");
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  int dir_len = slash ? (int)(slash - path) : 1;
  printf("file        %s\n", path);
  printf("kind        training checkpoint (%s), not a model\n", SDE_CHECKPOINT_FORMAT);
  printf("step        %s%s%s%s\n", step ? step : "?", wall ? ", " : "", wall ? wall : "",
         wall ? " s of training" : "");
  if (data) printf("data        %s\n", data);
  if (net) printf("config      %s\n", net);
  if (!strcmp(base, "checkpoint.safetensors"))
    printf("export      scoresde train --out %.*s --resume --steps %s --export MODEL.safetensors\n",
           dir_len, slash ? path : ".", step ? step : "N");
  else /* train --resume reads RUNDIR/checkpoint.safetensors */
    printf("export      copy it to RUNDIR/checkpoint.safetensors, then scoresde train --out RUNDIR "
           "--resume --steps %s --export MODEL.safetensors\n", step ? step : "N");
  free(step);
  free(net);
  free(wall);
  free(data);
  return 1;
}

int cmd_info(int argc, char **argv) {
  const char *cmd = "info";
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
    return usage(cmd, NULL, INFO_USAGE);
  if (argc != 2) return usage(cmd, "expected exactly one FILE", INFO_USAGE);
  const char *path = argv[1];
  sde_model *m = NULL;
  int rc;
  if (!is_dir(path) && sde_has_suffix(path, ".safetensors") && print_checkpoint(path)) return 0;
  if (is_dir(path)) {
    rc = sde_network_load_diffusers(path, &m);
  } else if (sde_has_suffix(path, ".safetensors")) {
    rc = sde_network_load(path, &m);
  } else {
    rc = sde_model_load(path, &m);
  }
  if (rc) return fail(cmd, NULL);
  printf("file        %s\n", path);
  if (sde_network_is(m)) {
    print_network(m);
    if (!is_dir(path)) {
      sde_safetensors *st;
      if (sde_st_open(path, &st) == 0) {
        for (int i = 0; i < st->n_meta; i++) {
          if (!strcmp(st->meta_keys[i], "scoresde") || !strcmp(st->meta_keys[i], "config")) continue;
          const char *v = st->meta_values[i];
          printf("metadata    %s = %.200s%s\n", st->meta_keys[i], v, strlen(v) > 200 ? "..." : "");
        }
        sde_st_close(st);
      }
    }
  } else {
    printf("model       %s, %d x %d x %d, %s\n", m->ops->kind, m->channels, m->height, m->width,
           m->is_image ? "image" : "vector");
    if (m->has_sde) printf("sde         %s\n", sde_kind_name(m->sde.kind));
    if (m->id[0]) printf("id          %s\n", m->id);
  }
  sde_model_free(m);
  return 0;
}

/* ---- score ----------------------------------------------------------------------------- */

static const char SCORE_USAGE[] =
    "Usage: scoresde score --model FILE --in x.npy --t t.npy --out s.npy [--raw]\n"
    "                      [--sde ve|vp|subvp] [--threads N]\n"
    "                      [--device auto|cpu|cuda] [--cuda-device-id N] [--precision P]\n"
    "Evaluates the score s(x, t) (get_score_fn of the reference) for x [B, C,H,W] in model\n"
    "space and t [B] (or a single time). With --raw, writes the raw network output at the\n"
    "labels derived from t (VE sigma(t), VP/sub-VP 999t). --sde overrides the model's SDE.\n";

int cmd_score(int argc, char **argv) {
  const char *cmd = "score";
  const char *model = NULL, *in = NULL, *tpath = NULL, *out = NULL, *sde_name = NULL;
  int raw = 0, threads = -1;
  cli_device_args dev;
  cli_device_args_init(&dev);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(cmd, NULL, SCORE_USAGE);
    int took = cli_device_arg(cmd, argc, argv, &i, &dev);
    if (took < 0) return -took;
    if (took) continue;
    if (!strcmp(a, "--raw")) { raw = 1; continue; }
    if (!strcmp(a, "--model")) dst = &model;
    else if (!strcmp(a, "--in")) dst = &in;
    else if (!strcmp(a, "--t")) dst = &tpath;
    else if (!strcmp(a, "--out")) dst = &out;
    else if (!strcmp(a, "--sde")) dst = &sde_name;
    else if (!strcmp(a, "--threads")) {
      if (i + 1 >= argc) return usage(cmd, "--threads needs a value", SCORE_USAGE);
      threads = atoi(argv[++i]);
      continue;
    } else {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown argument '%s'", a);
      return usage(cmd, msg, SCORE_USAGE);
    }
    if (i + 1 >= argc) return usage(cmd, "option needs a value", SCORE_USAGE);
    *dst = argv[++i];
  }
  if (!model || !in || !tpath || !out)
    return usage(cmd, "--model, --in, --t and --out are required", SCORE_USAGE);
  if (threads >= 0) sde_set_num_threads(threads);
  sde_load_options lo;
  if (cli_device_options(cmd, &dev, &lo)) return 2; /* usage */

  sde_model *m = NULL;
  int rc = cli_load_model(cmd, model, &lo, 0, &m);
  if (rc) return fail(cmd, NULL);
  float *x = NULL, *t = NULL, *s = NULL, *t_full = NULL;
  int xnd, tnd, status = 1;
  int64_t xs[SDE_NPY_MAX_DIMS], ts[SDE_NPY_MAX_DIMS];
  if (sde_npy_read(in, &x, &xnd, xs) || sde_npy_read(tpath, &t, &tnd, ts)) {
    fail(cmd, NULL);
    goto done;
  }
  const int64_t D = sde_model_dim(m);
  int64_t xn = 1, tn = 1;
  for (int i = 0; i < xnd; i++) xn *= xs[i];
  for (int i = 0; i < tnd; i++) tn *= ts[i];
  if (xnd < 1 || xn % D != 0 || xn / xs[0] != D) {
    fprintf(stderr, "scoresde score: %s: expected [B, %d,%d,%d] (or [B, %lld])\n", in, m->channels,
            m->height, m->width, (long long)D);
    goto done;
  }
  const int B = (int)xs[0];
  if (tn != B && tn != 1) {
    fprintf(stderr, "scoresde score: %s has %lld times for %d samples\n", tpath, (long long)tn, B);
    goto done;
  }
  t_full = malloc(sizeof(float) * (size_t)B);
  s = malloc(sizeof(float) * (size_t)xn);
  if (!t_full || !s) {
    fprintf(stderr, "scoresde score: out of memory\n");
    goto done;
  }
  for (int b = 0; b < B; b++) t_full[b] = t[tn == 1 ? 0 : b];
  sde_sde sde = m->sde;
  if (sde_name) {
    sde_kind k;
    if (sde_kind_from_name(sde_name, &k)) {
      fail(cmd, NULL);
      goto done;
    }
    if (!m->has_sde || m->sde.kind != k) sde_init(&sde, k);
  } else if (!m->has_sde) {
    fprintf(stderr, "scoresde score: the model names no SDE; give --sde\n");
    goto done;
  }
  if (raw) {
    if (!sde_network_is(m)) {
      fprintf(stderr, "scoresde score: --raw needs a network model\n");
      goto done;
    }
    if (sde_network_labels(m, &sde, B, t_full, t_full) ||
        sde_network_forward(m, B, x, t_full, s)) {
      fail(cmd, NULL);
      goto done;
    }
  } else if (sde_model_score(m, &sde, B, x, t_full, s)) {
    fail(cmd, NULL);
    goto done;
  }
  cli_warn_nonfinite(cmd, raw ? "output" : "score", s, B, D);
  if (sde_npy_write(out, s, xnd, xs)) {
    fail(cmd, NULL);
    goto done;
  }
  status = 0;
done:
  free(x);
  free(t);
  free(s);
  free(t_full);
  sde_model_free(m);
  return status;
}

/* ---- convert --------------------------------------------------------------------------- */

static const char CONVERT_USAGE[] =
    "Usage: scoresde convert --from pth CHECKPOINT --out FILE.safetensors\n"
    "           [--preset NAME] [--config CONFIG.json] [--set KEY=VALUE ...]\n"
    "           [--weights ema|model] [--script convert_pth.py] [--python EXE]\n"
    "       scoresde convert --from diffusers DIR --out FILE.safetensors\n"
    "pth: an official score_sde_pytorch checkpoint_N.pth; EMA weights (what sampling uses)\n"
    "     unless --weights model. The architecture comes from --preset (a released config,\n"
    "     e.g. ve/cifar10_ncsnpp_continuous, vp/cifar10_ddpmpp_continuous), --config (a\n"
    "     config.json) and --set overrides (sde.sigma_max=348). Needs Python with torch.\n"
    "diffusers: a UNet2DModel NCSN++ folder (config.json + diffusion_pytorch_model.safetensors;\n"
    "     scheduler_config.json beside it or in ../scheduler gives the VE sigmas).\n";

/* Directory of the running executable (Linux). */
static int exe_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *slash = strrchr(buf, '/');
  if (!slash) return -1;
  *slash = 0;
  return 0;
}

static const char *find_script(const char *given, char *buf, size_t size) {
  if (given) return given;
  const char *env = getenv("SCORESDE_CONVERT_PTH");
  if (env && *env) return env;
  char dir[PATH_MAX];
  if (exe_dir(dir, sizeof dir) == 0) {
    const char *rel[] = {"/../../tools/models/convert_pth.py", "/../tools/models/convert_pth.py",
                         "/../share/scoresde/convert_pth.py", "/convert_pth.py"};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
      snprintf(buf, size, "%s%s", dir, rel[i]);
      if (file_exists(buf)) return buf;
    }
  }
  if (file_exists("tools/models/convert_pth.py")) return "tools/models/convert_pth.py";
  return NULL;
}

/* Runs argv[0] with argv; returns its exit status (or -1). */
static int run_process(char *const *argv) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execvp(argv[0], argv);
    fprintf(stderr, "scoresde convert: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Loads src (checked against its config) and writes it with canonical metadata. */
static int finish_convert(sde_model *m, const char *out, const char *source) {
  const char *meta[] = {"source", source};
  if (sde_network_save(m, out, meta, 1)) return 1;
  int64_t np = 0;
  sde_ncsnpp_count(sde_network_config(m), &np, NULL, NULL);
  printf("scoresde convert: wrote %s (%lld parameters, id %s)\n", out, (long long)np, m->id);
  return 0;
}

int cmd_convert(int argc, char **argv) {
  const char *cmd = "convert";
  const char *from = NULL, *src = NULL, *out = NULL, *script = NULL, *python = NULL;
  const char *preset = NULL, *config = NULL, *weights = NULL;
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0, status = 2;
  if (!sets) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      free(sets);
      return usage(cmd, NULL, CONVERT_USAGE);
    }
    if (!strcmp(a, "--from")) dst = &from;
    else if (!strcmp(a, "--out")) dst = &out;
    else if (!strcmp(a, "--script")) dst = &script;
    else if (!strcmp(a, "--python")) dst = &python;
    else if (!strcmp(a, "--preset")) dst = &preset;
    else if (!strcmp(a, "--config")) dst = &config;
    else if (!strcmp(a, "--weights")) dst = &weights;
    else if (!strcmp(a, "--set")) dst = &sets[n_sets++];
    else if (a[0] == '-' && a[1] == '-') {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown option '%s'", a);
      free(sets);
      return usage(cmd, msg, CONVERT_USAGE);
    } else if (!src) {
      src = a;
      continue;
    } else {
      free(sets);
      return usage(cmd, "more than one source given", CONVERT_USAGE);
    }
    if (i + 1 >= argc) {
      free(sets);
      return usage(cmd, "option needs a value", CONVERT_USAGE);
    }
    *dst = argv[++i];
  }
  if (!from || !src || !out) {
    free(sets);
    return usage(cmd, "--from, a source and --out are required", CONVERT_USAGE);
  }
  sde_model *m = NULL;
  if (!strcmp(from, "diffusers")) {
    if (preset || config || n_sets || weights) {
      free(sets);
      return usage(cmd, "--preset/--config/--set/--weights apply to --from pth", CONVERT_USAGE);
    }
    if (sde_network_load_diffusers(src, &m)) {
      status = fail(cmd, NULL);
    } else {
      char source[1200];
      snprintf(source, sizeof source, "diffusers UNet2DModel %s", src);
      status = finish_convert(m, out, source);
      if (status) fail(cmd, NULL);
    }
  } else if (!strcmp(from, "pth")) {
    char sbuf[PATH_MAX + 64];
    const char *sc = find_script(script, sbuf, sizeof sbuf);
    if (!sc) {
      fprintf(stderr, "scoresde convert: cannot find convert_pth.py; give --script or set "
              "SCORESDE_CONVERT_PTH\n");
      free(sets);
      return 1;
    }
    if (!python) python = getenv("SCORESDE_PYTHON");
    if (!python || !*python) python = file_exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid());
    const char **args = calloc((size_t)(16 + 2 * n_sets), sizeof *args);
    if (!args) {
      free(sets);
      return 1;
    }
    int k = 0;
    args[k++] = python;
    args[k++] = sc;
    args[k++] = src;
    args[k++] = "--out";
    args[k++] = tmp;
    if (preset) { args[k++] = "--preset"; args[k++] = preset; }
    if (config) { args[k++] = "--config"; args[k++] = config; }
    if (weights) { args[k++] = "--weights"; args[k++] = weights; }
    for (int i = 0; i < n_sets; i++) { args[k++] = "--set"; args[k++] = sets[i]; }
    args[k] = NULL;
    int ec = run_process((char *const *)args);
    free(args);
    if (ec != 0) {
      fprintf(stderr, "scoresde convert: %s %s failed (exit %d)\n", python, sc, ec);
      unlink(tmp);
      status = 1;
    } else if (sde_network_load(tmp, &m)) {
      status = fail(cmd, "the converted checkpoint does not match its config");
      unlink(tmp);
    } else {
      char source[1200];
      snprintf(source, sizeof source, "score_sde_pytorch checkpoint %s (%s weights)", src,
               weights ? weights : "ema");
      status = finish_convert(m, out, source);
      if (status) fail(cmd, NULL);
      unlink(tmp);
    }
  } else {
    free(sets);
    return usage(cmd, "--from must be pth or diffusers", CONVERT_USAGE);
  }
  sde_model_free(m);
  free(sets);
  return status;
}
