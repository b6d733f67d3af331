/* End-to-end tests of the `scoresde` tool (TAP).
 *
 *   test_cli /path/to/scoresde
 *
 * Writes small models and data into a temporary folder (with libscoresde's own writers),
 * runs the tool with posix_spawn and checks exit statuses, messages and the shapes and
 * values of what it writes. Every run must end by exit(), never by a signal. */
#define _XOPEN_SOURCE 700 /* nftw, posix_openpt */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "png_bomb.h"
#include "scoresde/scoresde.h"
#include "scoresde/train.h"
#include "tap.h"

extern char **environ;

static const char *exe;
static char dir[256];

/* ---- running the tool ------------------------------------------------------------------ */

typedef struct {
  int status;     /* exit status, or -1 */
  int sig;        /* terminating signal, or 0 */
  long maxrss_kb; /* peak resident memory of the run */
  double seconds; /* its wall time */
  char out[16384], err[16384];
} result;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void slurp(const char *path, char *buf, size_t size) {
  buf[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f) return;
  size_t n = fread(buf, 1, size - 1, f);
  buf[n] = '\0';
  fclose(f);
}

/* Waits up to `limit_s` for pid; kills it after that. */
static void wait_child(pid_t pid, double limit_s, result *r) {
  int st = 0;
  double waited = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  for (;;) {
    pid_t w = wait4(pid, &st, WNOHANG, &ru);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      r->status = -1;
      return;
    }
    if (waited > limit_s) {
      kill(pid, SIGKILL);
      wait4(pid, &st, 0, &ru);
      break;
    }
    sleep_ms(2);
    waited += 0.002;
  }
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r->sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  r->maxrss_kb = ru.ru_maxrss;
}

/* Runs `scoresde args...` (NULL-terminated, relative paths inside the temp folder). */
static result *run_v(const char *const *args) {
  static result r;
  char outp[300], errp[300];
  const char *argv[64];
  int n = 0;
  argv[n++] = exe;
  for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
  snprintf(outp, sizeof outp, "%s/.stdout", dir);
  snprintf(errp, sizeof errp, "%s/.stderr", dir);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  memset(&r, 0, sizeof r);
  pid_t pid;
  if (posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, environ) != 0) {
    r.status = -1;
    snprintf(r.err, sizeof r.err, "posix_spawn failed: %s", strerror(errno));
  } else {
    double t0 = sde_now();
    wait_child(pid, 60.0, &r);
    r.seconds = sde_now() - t0;
    if (r.seconds > 2.0) TAP_DIAG("slow: %s %s took %.1f s", args[0], args[1] ? args[1] : "",
                                  r.seconds);
    slurp(outp, r.out, sizeof r.out);
    slurp(errp, r.err, sizeof r.err);
  }
  posix_spawn_file_actions_destroy(&fa);
  return &r;
}

#define RUN(...) run_v((const char *const[]){__VA_ARGS__, NULL})

static void show(const result *r) {
  if (r->status != 0 || r->sig) {
    TAP_DIAG("exit %d signal %d", r->status, r->sig);
    TAP_DIAG("stderr: %.600s", r->err);
  }
}

/* Exit 0 with the given summary prefix on stderr. */
static int ok_run(const result *r, const char *what) {
  int good = TAP_CHECK(r->status == 0 && !r->sig, "%s: exit 0", what);
  if (!good) show(r);
  return good;
}

/* A clean failure: exit `code`, "scoresde" message on stderr containing `needle`. */
static void check_error(const result *r, int code, const char *needle, const char *what) {
  int good = r->status == code && !r->sig && strncmp(r->err, "scoresde", 8) == 0 &&
             (!needle || strstr(r->err, needle) != NULL);
  if (!TAP_CHECK(good, "%s: exit %d with a message%s%s%s", what, code, needle ? " ('" : "",
                 needle ? needle : "", needle ? "')" : ""))
    TAP_DIAG("exit %d signal %d stderr: %.400s", r->status, r->sig, r->err);
}

/* ---- files ------------------------------------------------------------------------------ */

static const char *P(const char *name) {
  static char buf[8][512];
  static int k = 0;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void write_text(const char *name, const char *text) {
  FILE *f = fopen(P(name), "wb");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

/* Parses the shape tuple out of a .npy header; checks the magic. Returns ndim or -1. */
static int npy_shape(const char *name, long long *shape, int max) {
  char hdr[512];
  FILE *f = fopen(P(name), "rb");
  if (!f) return -1;
  size_t n = fread(hdr, 1, sizeof hdr - 1, f);
  fclose(f);
  hdr[n] = '\0';
  if (n < 12 || memcmp(hdr, "\x93NUMPY", 6) != 0) return -1;
  const char *s = strstr(hdr + 10, "'shape':");
  if (!s || !(s = strchr(s, '('))) return -1;
  s++;
  int nd = 0;
  for (;;) {
    while (*s == ' ' || *s == ',') s++;
    if (*s == ')') break;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || nd >= max) return -1;
    shape[nd++] = v;
    s = end;
  }
  return nd;
}

static void check_shape(const char *name, const char *want, const char *what) {
  long long sh[8];
  char got[128] = "";
  int nd = npy_shape(name, sh, 8);
  size_t used = 0;
  used += (size_t)snprintf(got + used, sizeof got - used, "(");
  for (int i = 0; i < nd; i++)
    used += (size_t)snprintf(got + used, sizeof got - used, "%s%lld", i ? "," : "", sh[i]);
  snprintf(got + used, sizeof got - used, ")");
  if (!TAP_CHECK(nd >= 0 && strcmp(got, want) == 0, "%s: %s has shape %s", what, name, want))
    TAP_DIAG("got %s", nd < 0 ? "no .npy header" : got);
}

static float *load(const char *name, int64_t *count) {
  float *x = NULL;
  int nd = 0;
  int64_t sh[SDE_NPY_MAX_DIMS];
  *count = 0;
  if (sde_npy_read(P(name), &x, &nd, sh)) return NULL;
  int64_t c = 1;
  for (int i = 0; i < nd; i++) c *= sh[i];
  *count = c;
  return x;
}

static int same_file(const char *a, const char *b) {
  static char x[65536], y[65536];
  FILE *f = fopen(P(a), "rb"), *g = fopen(P(b), "rb");
  size_t n = f ? fread(x, 1, sizeof x, f) : 0, m = g ? fread(y, 1, sizeof y, g) : 0;
  if (f) fclose(f);
  if (g) fclose(g);
  return f && g && n == m && memcmp(x, y, n) == 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* ---- fixtures --------------------------------------------------------------------------- */

enum { IMG_N = 4, IMG_C = 3, IMG_H = 8, IMG_W = 8 };
static float images[IMG_N][IMG_C * IMG_H * IMG_W];

static void make_fixtures(void) {
  write_text("gmm.json", "{\"kind\":\"gmm\",\"weights\":[0.5,0.5],\"means\":[[-2,0],[2,0]],"
                         "\"stds\":[[0.3,0.3],[0.3,0.3]]}");
  write_text("gmm_vp.json", "{\"kind\":\"gmm\",\"weights\":[1,3],\"means\":[[-0.5,0.5],[0.5,0]],"
                            "\"stds\":0.2,\"sde\":{\"kind\":\"vp\",\"N\":200}}");
  write_text("broken.json", "{\"kind\":\"gmm\",\"weights\":[0.5,0.5],\"means\":[[-2,0],");
  write_text("notjson.json", "this is not JSON\n");
  write_text("empty.json", "{}");
  write_text("badkind.json", "{\"kind\":\"flow\"}");
  write_text("badgmm.json",
             "{\"kind\":\"gmm\",\"weights\":[1,1],\"means\":[[0,0],[1]],\"stds\":1}");
  write_text("fake.png", "definitely not a PNG file\n");
  write_text("bad.npy", "\x93NUMPY\x01\x00garbage garbage garbage");

  /* Colour training images with distinct patterns, a gray one, a mask. */
  mkdir(P("imgs"), 0755);
  for (int k = 0; k < IMG_N; k++) {
    for (int c = 0; c < IMG_C; c++)
      for (int y = 0; y < IMG_H; y++)
        for (int x = 0; x < IMG_W; x++) {
          float v;
          switch (k) {
            case 0: v = (float)x / (IMG_W - 1) * (c == 0 ? 1.0f : 0.3f); break;
            case 1: v = (float)y / (IMG_H - 1) * (c == 2 ? 1.0f : 0.5f); break;
            case 2: v = ((x / 2 + y / 2) % 2) ? 0.9f : 0.1f * (float)c; break;
            default: v = 0.2f + 0.2f * (float)c + 0.05f * (float)((x + y) % 3); break;
          }
          images[k][(c * IMG_H + y) * IMG_W + x] = v;
        }
    char name[64];
    snprintf(name, sizeof name, "imgs/img%d.png", k);
    sde_png_write(P(name), images[k], IMG_C, IMG_H, IMG_W);
  }
  /* Re-read what was stored (8-bit rounding) so comparisons use the same values. */
  for (int k = 0; k < IMG_N; k++) {
    char name[64];
    float *x = NULL;
    int c, h, w;
    snprintf(name, sizeof name, "imgs/img%d.png", k);
    if (sde_png_read(P(name), 3, &x, &c, &h, &w) == 0) {
      memcpy(images[k], x, sizeof images[k]);
      free(x);
    }
  }
  float gray[IMG_H * IMG_W], mask[IMG_H * IMG_W], small[3 * 6 * 6];
  for (int i = 0; i < IMG_H * IMG_W; i++) {
    gray[i] = (images[0][i] + images[0][IMG_H * IMG_W + i] + images[0][2 * IMG_H * IMG_W + i]) / 3;
    mask[i] = (i % IMG_W) < IMG_W / 2 ? 1.0f : 0.0f; /* left half known */
  }
  for (int i = 0; i < 3 * 6 * 6; i++) small[i] = 0.5f;
  sde_png_write(P("gray.png"), gray, 1, IMG_H, IMG_W);
  sde_png_write(P("mask.png"), mask, 1, IMG_H, IMG_W);
  sde_png_write(P("small.png"), small, 3, 6, 6);
  write_text("emp.json", "{\"kind\":\"empirical\",\"data\":\"imgs\"}");
  write_text("emp_c.json", "{\"kind\":\"empirical\",\"data\":\"imgs\",\"centered\":true,"
                           "\"sde\":{\"kind\":\"ve\",\"sigma_max\":5,\"N\":100}}");

  /* Vector data: wrong width, a truncated file. */
  float v[12] = {0};
  int64_t sh[2] = {4, 3};
  sde_npy_write(P("x3.npy"), v, 2, sh);
  sh[1] = 2;
  sde_npy_write(P("trunc.npy"), v, 2, sh);
  if (truncate(P("trunc.npy"), 100) != 0) TAP_DIAG("truncate failed");
  /* Images as .npy in [0,1]. */
  int64_t ish[4] = {IMG_N, IMG_C, IMG_H, IMG_W};
  sde_npy_write(P("imgs.npy"), &images[0][0], 4, ish);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_usage(void) {
  result *r = RUN("--help");
  TAP_CHECK(r->status == 0 && strstr(r->out, "Usage: scoresde COMMAND"), "--help prints usage");
  const char *cmds[] = {"sample", "encode", "decode", "likelihood", "inpaint", "colorize",
                        "noise-scales", "score", "info", "convert"};
  int all = 1;
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) all &= strstr(r->out, cmds[i]) != NULL;
  TAP_CHECK(all, "--help lists every command");
  r = RUN("--version");
  TAP_CHECK(r->status == 0 && strstr(r->out, SCORESDE_VERSION), "--version prints %s",
            SCORESDE_VERSION);
  { /* without OPENBLAS_CORETYPE the tool restarts itself on OpenBLAS's FMA kernels when
       the library does not know this CPU: it never runs on a set it calls slow */
    char *saved = getenv("OPENBLAS_CORETYPE") ? strdup(getenv("OPENBLAS_CORETYPE")) : NULL;
    unsetenv("OPENBLAS_CORETYPE");
    r = RUN("--version");
    TAP_CHECK(r->status == 0 && !strstr(r->out, "faster on this CPU"),
              "default environment: the tool runs on the best OpenBLAS kernels (%s)",
              strstr(r->out, "OpenBLAS") ? strstr(r->out, "OpenBLAS") : "no OpenBLAS");
    setenv("OPENBLAS_CORETYPE", "Prescott", 1);
    r = RUN("--version");
    TAP_CHECK(r->status == 0 && strstr(r->out, "kernels: Prescott"),
              "a user's OPENBLAS_CORETYPE is kept (%s)",
              strstr(r->out, "OpenBLAS") ? strstr(r->out, "OpenBLAS") : "no OpenBLAS");
    if (saved) setenv("OPENBLAS_CORETYPE", saved, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    free(saved);
  }
  { /* the conv / norm kernel set: the CPU's, or portable under SDE_NN_NO_DIRECT_CONV=1 */
    char *saved = getenv("SDE_NN_NO_DIRECT_CONV") ? strdup(getenv("SDE_NN_NO_DIRECT_CONV")) : NULL;
    unsetenv("SDE_NN_NO_DIRECT_CONV");
    r = RUN("--version");
    const char *want = "portable";
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
      want = getenv("SDE_NN_ISA") && !strcmp(getenv("SDE_NN_ISA"), "avx2") ? "avx2" : "avx512";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) want = "avx2";
#endif
    char line[64];
    snprintf(line, sizeof line, "CPU kernels: %s\n", want);
    TAP_CHECK(r->status == 0 && strstr(r->out, line), "--version names this CPU's kernels (%s)", want);
    setenv("SDE_NN_NO_DIRECT_CONV", "1", 1);
    r = RUN("--version");
    TAP_CHECK(r->status == 0 && strstr(r->out, "CPU kernels: portable\n"),
              "SDE_NN_NO_DIRECT_CONV=1: portable kernels");
    if (saved) setenv("SDE_NN_NO_DIRECT_CONV", saved, 1);
    else unsetenv("SDE_NN_NO_DIRECT_CONV");
    free(saved);
  }
  r = run_v((const char *const[]){NULL});
  TAP_CHECK(r->status == 2 && strstr(r->err, "Usage"), "no arguments: usage on stderr, exit 2");
  for (int i = 0; i < 7; i++) {
    r = RUN(cmds[i], "--help");
    char want[64];
    snprintf(want, sizeof want, "Usage: scoresde %s", cmds[i]);
    TAP_CHECK(r->status == 0 && strstr(r->out, want) && strstr(r->out, "--help"),
              "%s --help", cmds[i]);
  }
  r = RUN("help", "likelihood");
  TAP_CHECK(r->status == 0 && strstr(r->out, "--divergence"), "help likelihood");
  r = RUN("sample", "--help");
  TAP_CHECK(strstr(r->out, "--predictor") && strstr(r->out, "--ode-method") &&
                !strstr(r->out, "--mask"),
            "sample --help lists its own options only");

  r = RUN("frobnicate");
  check_error(r, 2, "unknown command", "unknown command");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--bogus");
  check_error(r, 2, "unknown option '--bogus'", "unknown option");
  TAP_CHECK(strstr(r->err, "Try 'scoresde sample --help'") != NULL, "usage errors give a hint");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "-x");
  check_error(r, 2, "unknown option", "short option");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--mask", "m.npy");
  check_error(r, 2, "does not apply", "option of another command");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--n");
  check_error(r, 2, "needs a value", "missing option value");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--n", "abc");
  check_error(r, 2, "--n must be", "non-numeric --n");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--n=0");
  check_error(r, 2, "--n must be", "--n=0");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--snr", "-1");
  check_error(r, 2, "--snr", "negative --snr");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--seed", "-3");
  check_error(r, 2, "--seed", "negative --seed");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--predictor", "leapfrog");
  check_error(r, 2, "unknown predictor 'leapfrog'", "unknown predictor");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--corrector", "hmc");
  check_error(r, 2, "unknown corrector", "unknown corrector");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--sde", "cld");
  check_error(r, 2, "unknown SDE", "unknown SDE");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--sampler", "dpm-fast");
  check_error(r, 2, "unknown sampler", "unknown sampler");
  r = RUN("encode", "--model", "gmm.json", "--in", "x.npy", "--out", "z.npy", "--ode-method",
          "rk4");
  check_error(r, 2, "unknown ODE method", "unknown ODE method");
  r = RUN("likelihood", "--model", "gmm.json", "--in", "x.npy", "--divergence", "magic");
  check_error(r, 2, "unknown divergence", "unknown divergence");
  r = RUN("sample", "--out", "o.npy");
  check_error(r, 2, "--model", "missing --model");
  r = RUN("sample", "--model", "gmm.json");
  check_error(r, 2, "--out", "missing --out");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.txt");
  check_error(r, 2, ".npy or .png", "unsupported --out suffix");
  r = RUN("encode", "--model", "gmm.json", "--in", "x.npy", "--out", "z.png");
  check_error(r, 2, ".npy", "latents cannot be PNG");
  r = RUN("inpaint", "--model", "gmm.json", "--in", "x.npy", "--out", "o.npy");
  check_error(r, 2, "--mask", "inpaint without --mask");
  r = RUN("noise-scales", "--dim", "10");
  check_error(r, 2, "--sigma-max", "noise-scales --dim without --sigma-max");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "stray");
  check_error(r, 2, "unexpected argument", "stray argument");
}

static void test_gmm(void) {
  int64_t cnt;
  result *r = RUN("sample", "--model", "gmm.json", "--out", "s.npy", "--n", "64", "--sigma-max",
                  "5", "--num-scales", "200", "--seed", "7");
  if (ok_run(r, "sample gmm")) {
    check_shape("s.npy", "(64,2)", "sample gmm");
    TAP_CHECK(strstr(r->err, "sample: 64 samples, NFE ") && strstr(r->err, " s\n"),
              "sample prints 'sample: 64 samples, NFE .., .. s'");
    TAP_CHECK(!strchr(r->err, '\r'), "no progress bar when stderr is not a terminal");
    float *x = load("s.npy", &cnt);
    int near = 0;
    for (int i = 0; x && i < 64; i++)
      near += fabsf(fabsf(x[2 * i]) - 2.0f) < 1.0f && fabsf(x[2 * i + 1]) < 1.0f;
    TAP_CHECK(near >= 58, "samples sit near the mixture's modes (%d of 64)", near);
    free(x);
  }
  r = RUN("sample", "--model", "gmm.json", "--out", "s1.npy", "--n", "16", "--sigma-max", "5",
          "--num-scales", "40", "--seed", "7", "--threads", "1", "--quiet");
  TAP_CHECK(r->status == 0 && r->err[0] == '\0', "--quiet prints nothing");
  r = RUN("sample", "--model", "gmm.json", "--out", "s2.npy", "--n", "16", "--sigma-max", "5",
          "--num-scales", "40", "--seed", "7", "--threads", "2", "--quiet");
  TAP_CHECK(r->status == 0 && same_file("s1.npy", "s2.npy"),
            "same seed, other thread count: same samples");
  r = RUN("sample", "--model", "gmm.json", "--out", "s3.npy", "--n", "64", "--sigma-max", "5",
          "--num-scales", "200", "--seed", "8");
  TAP_CHECK(r->status == 0 && !same_file("s.npy", "s3.npy"), "another seed: other samples");

  /* Streams: with no batch-coupled corrector, sample i depends only on stream0 + i. */
  r = RUN("sample", "--model", "gmm.json", "--out", "a.npy", "--n", "4", "--sigma-max", "5",
          "--num-scales", "100", "--corrector", "none", "--predictor", "em");
  result ra = *r;
  r = RUN("sample", "--model", "gmm.json", "--out", "b.npy", "--n", "2", "--stream", "2",
          "--sigma-max", "5", "--num-scales", "100", "--corrector", "none", "--predictor", "em");
  {
    int64_t ca, cb;
    float *a = load("a.npy", &ca), *b = load("b.npy", &cb);
    TAP_CHECK(ra.status == 0 && r->status == 0 && a && b && ca == 8 && cb == 4 &&
                  memcmp(a + 4, b, 4 * sizeof(float)) == 0,
              "--stream 2 reproduces samples 2 and 3");
    free(a);
    free(b);
  }
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--n", "5", "--sampler", "ode",
          "--sigma-max", "5");
  if (ok_run(r, "sample --sampler ode")) check_shape("o.npy", "(5,2)", "ode sampler");
  r = RUN("sample", "--model", "gmm_vp.json", "--out", "v.npy", "--n", "3", "--predictor",
          "ancestral", "--corrector", "ald", "--snr", "0.1");
  if (ok_run(r, "sample with the model's own VP SDE")) check_shape("v.npy", "(3,2)", "vp");
  r = RUN("sample", "--model", "gmm_vp.json", "--out", "v.npy", "--n", "3", "--sde", "subvp",
          "--predictor", "em", "--corrector", "none", "--num-scales", "50", "--no-denoise");
  ok_run(r, "sample --sde subvp over the model's VP");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--n", "3", "--sampler", "ode",
          "--ode-method", "heun", "--steps", "20", "--sigma-max", "5");
  ok_run(r, "sample --ode-method heun --steps 20");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.png", "--n", "2", "--sigma-max", "5");
  check_error(r, 1, "PNG output needs an image model", "PNG output from a vector model");
  r = RUN("sample", "--model", "gmm.json", "--out", "o.npy", "--sigma-min", "9", "--sigma-max",
          "5");
  check_error(r, 1, NULL, "sigma-min above sigma-max");

  /* encode -> decode round trip */
  r = RUN("encode", "--model", "gmm.json", "--in", "s.npy", "--out", "z.npy", "--sigma-max", "5");
  if (ok_run(r, "encode")) {
    check_shape("z.npy", "(64,2)", "encode");
    TAP_CHECK(strstr(r->err, "encode: 64 samples, NFE") != NULL, "encode prints its summary");
  }
  r = RUN("decode", "--model", "gmm.json", "--in", "z.npy", "--out", "xr.npy", "--sigma-max", "5");
  if (ok_run(r, "decode")) {
    int64_t c1, c2;
    float *x = load("s.npy", &c1), *y = load("xr.npy", &c2), *z = load("z.npy", &cnt);
    double err = 0, zs = 0;
    for (int64_t i = 0; x && y && c1 == c2 && i < c1; i++) {
      err = fmax(err, fabs((double)x[i] - y[i]));
      zs += (double)z[i] * z[i];
    }
    TAP_CHECK(x && y && c1 == c2 && err < 1e-2, "decode(encode(x)) = x (max error %.2g)", err);
    zs = z ? sqrt(zs / (double)cnt) : 0;
    TAP_CHECK(zs > 2.5 && zs < 8, "latents have about the prior's spread (rms %.3g, prior 5)", zs);
    free(x);
    free(y);
    free(z);
  }
  r = RUN("decode", "--model", "gmm.json", "--in", "gray.png", "--out", "xr.npy");
  check_error(r, 1, ".npy", "decode refuses PNG latents");

  /* likelihood against the exact density of the noised mixture */
  /* sigma_max = 50 makes the prior N(0, 50^2 I) a close match to p_T, so the ODE value is
   * the exact log p_eps to about 1e-3. */
  r = RUN("likelihood", "--model", "gmm.json", "--data", "s.npy", "--logp-out", "lp.npy",
          "--n", "16");
  if (ok_run(r, "likelihood")) {
    double bpd = NAN, se = NAN;
    const char *s = strstr(r->out, "bits/dim");
    TAP_CHECK(s && sscanf(s, "bits/dim %lf +/- %lf", &bpd, &se) == 2 && isfinite(bpd) &&
                  isfinite(se) && se >= 0,
              "likelihood prints bits/dim with its standard error");
    TAP_CHECK(strstr(r->err, "likelihood: 16 samples, NFE") != NULL,
              "likelihood prints its summary");
    check_shape("lp.npy", "(16)", "--logp-out");
    sde_model *m = NULL;
    int64_t c1, c2;
    float *x = load("s.npy", &c1), *lp = load("lp.npy", &c2);
    double maxerr = -1, mean_bpd = 0;
    if (sde_model_load_json(P("gmm.json"), &m) == 0 && x && lp && c2 == 16) {
      sde_sde sde;
      sde_init(&sde, SDE_VE);
      float t[16];
      double exact[16];
      for (int i = 0; i < 16; i++) t[i] = 1e-5f;
      sde_gmm_logp(m, &sde, 16, x, t, exact);
      maxerr = 0;
      for (int i = 0; i < 16; i++) {
        maxerr = fmax(maxerr, fabs(exact[i] - lp[i]));
        mean_bpd += sde_bits_per_dim(lp[i], 2, 0.0) / 16;
      }
    }
    TAP_CHECK(maxerr >= 0 && maxerr < 2e-2, "log p matches the exact mixture density (max err %.2g)",
              maxerr);
    TAP_CHECK(fabs(mean_bpd - bpd) < 1e-4, "printed bits/dim is the mean of -log p/(D ln 2)");
    sde_model_free(m);
    free(x);
    free(lp);
  }
  r = RUN("likelihood", "--model", "gmm.json", "--in", "s.npy", "--sigma-max", "5", "--n", "4",
          "--divergence", "rademacher", "--seed", "3");
  TAP_CHECK(r->status == 0 && strstr(r->out, "bits/dim"), "likelihood --divergence rademacher");
  if (r->status) show(r);
  r = RUN("likelihood", "--model", "gmm.json", "--in", "s.npy", "--dequantize");
  check_error(r, 1, "--dequantize", "--dequantize on a vector model");

  /* inpaint on vectors: keep coordinate 0, fill coordinate 1 */
  {
    float mk[2] = {1, 0};
    int64_t sh[1] = {2};
    sde_npy_write(P("vmask.npy"), mk, 1, sh);
  }
  r = RUN("inpaint", "--model", "gmm.json", "--in", "s.npy", "--mask", "vmask.npy", "--out",
          "ip.npy", "--n", "8", "--sigma-max", "5", "--num-scales", "200");
  if (ok_run(r, "inpaint vectors")) {
    check_shape("ip.npy", "(8,2)", "inpaint vectors");
    int64_t c1, c2;
    float *x = load("s.npy", &c1), *y = load("ip.npy", &c2);
    double err = 0;
    for (int i = 0; x && y && i < 8; i++) err = fmax(err, fabs((double)x[2 * i] - y[2 * i]));
    TAP_CHECK(x && y && err < 0.05, "inpaint keeps the known coordinate (max change %.2g)", err);
    free(x);
    free(y);
  }
  r = RUN("colorize", "--model", "gmm.json", "--in", "s.npy", "--out", "c.npy");
  check_error(r, 1, "3-channel", "colorize with a vector model");

  /* malformed inputs */
  r = RUN("encode", "--model", "gmm.json", "--in", "x3.npy", "--out", "z.npy");
  check_error(r, 1, "input samples have 3 values but the model expects 2",
              "input of the wrong width");
  r = RUN("encode", "--model", "gmm.json", "--in", "bad.npy", "--out", "z.npy");
  check_error(r, 1, NULL, "malformed .npy");
  r = RUN("encode", "--model", "gmm.json", "--in", "trunc.npy", "--out", "z.npy");
  check_error(r, 1, NULL, "truncated .npy");
  r = RUN("encode", "--model", "gmm.json", "--in", "missing.npy", "--out", "z.npy");
  check_error(r, 1, "missing.npy", "missing input file");
  r = RUN("encode", "--model", "gmm.json", "--in", "gray.png", "--out", "z.npy");
  check_error(r, 1, "PNG", "PNG input to a vector model");
  r = RUN("encode", "--model", "gmm.json", "--in", "gmm.json", "--out", "z.npy");
  check_error(r, 1, "expected a .npy", "input of an unknown type");
  r = RUN("sample", "--model", "nothere.json", "--out", "o.npy");
  check_error(r, 1, "nothere.json", "missing model file");
  r = RUN("sample", "--model", "broken.json", "--out", "o.npy");
  check_error(r, 1, "broken.json", "truncated JSON model");
  r = RUN("sample", "--model", "notjson.json", "--out", "o.npy");
  check_error(r, 1, NULL, "model file that is not JSON");
  r = RUN("sample", "--model", "empty.json", "--out", "o.npy");
  check_error(r, 1, "kind", "JSON model without a kind");
  r = RUN("sample", "--model", "badkind.json", "--out", "o.npy");
  check_error(r, 1, "flow", "JSON model of an unknown kind");
  r = RUN("sample", "--model", "badgmm.json", "--out", "o.npy");
  check_error(r, 1, NULL, "GMM with ragged means");
  r = RUN("sample", "--model", "imgs", "--out", "o.npy");
  check_error(r, 1, NULL, "a folder as the model");
  r = RUN("sample", "--model", "gmm.json", "--out", "/nonexistent/dir/o.npy", "--n", "1",
          "--num-scales", "5");
  check_error(r, 1, NULL, "unwritable output");
}

static void test_images(void) {
  int64_t cnt;
  result *r = RUN("sample", "--model", "emp.json", "--out", "grid.png", "--n", "4",
                  "--sigma-max", "3", "--num-scales", "100");
  if (ok_run(r, "sample empirical model to a PNG grid")) {
    float *g = NULL;
    int c = 0, h = 0, w = 0;
    int rc = sde_png_read(P("grid.png"), 0, &g, &c, &h, &w);
    TAP_CHECK(rc == 0 && c == 3 && w >= 2 * IMG_W && h >= 2 * IMG_H && w <= 4 * IMG_W + 6 &&
                  h <= 4 * IMG_H + 6,
              "grid.png is an RGB grid of 4 tiles (%dx%dx%d)", c, h, w);
    free(g);
  }
  r = RUN("sample", "--model", "emp_c.json", "--out", "ims.npy", "--n", "6", "--seed", "1");
  if (ok_run(r, "sample a centred empirical model")) {
    check_shape("ims.npy", "(6,3,8,8)", "image samples");
    float *x = load("ims.npy", &cnt);
    /* At small noise the exact score pulls samples onto training images, in [0,1]. */
    int close = 0;
    const int D = IMG_C * IMG_H * IMG_W;
    for (int i = 0; x && i < 6; i++) {
      double best = 1e9;
      for (int k = 0; k < IMG_N; k++) {
        double e = 0;
        for (int d = 0; d < D; d++) e = fmax(e, fabs((double)x[i * D + d] - images[k][d]));
        best = fmin(best, e);
      }
      close += best < 0.05;
    }
    TAP_CHECK(close == 6, "samples come back in [0,1] data space, on training images (%d of 6)",
              close);
    free(x);
  }
  r = RUN("encode", "--model", "emp_c.json", "--in", "imgs", "--out", "zi.npy");
  if (ok_run(r, "encode a folder of PNGs")) check_shape("zi.npy", "(4,3,8,8)", "encode folder");
  r = RUN("decode", "--model", "emp_c.json", "--in", "zi.npy", "--out", "xi.npy");
  if (ok_run(r, "decode to images")) {
    int64_t c2;
    float *a = load("imgs.npy", &cnt), *b = load("xi.npy", &c2);
    double err = 0;
    for (int64_t i = 0; a && b && cnt == c2 && i < cnt; i++) err = fmax(err, fabs(a[i] - b[i]));
    TAP_CHECK(a && b && cnt == c2 && err < 2e-2, "image round trip through latents (err %.2g)",
              err);
    free(a);
    free(b);
  }
  r = RUN("likelihood", "--model", "emp_c.json", "--in", "imgs.npy", "--dequantize", "--n", "2");
  if (ok_run(r, "likelihood --dequantize on images")) {
    double bpd = NAN;
    const char *s = strstr(r->out, "bits/dim");
    TAP_CHECK(s && sscanf(s, "bits/dim %lf", &bpd) == 1 && isfinite(bpd) &&
                  strstr(r->out, "offset 7"),
              "image bits/dim printed with the offset 7 of a centred model");
  }
  r = RUN("inpaint", "--model", "emp_c.json", "--in", "imgs/img2.png", "--mask", "mask.png",
          "--out", "ip.npy", "--n", "2");
  if (ok_run(r, "inpaint an image")) {
    check_shape("ip.npy", "(2,3,8,8)", "inpaint");
    float *x = load("ip.npy", &cnt);
    double known = 0, all = 0;
    for (int i = 0; x && i < 2; i++)
      for (int c = 0; c < 3; c++)
        for (int y = 0; y < IMG_H; y++)
          for (int xx = 0; xx < IMG_W; xx++) {
            int d = (c * IMG_H + y) * IMG_W + xx;
            double e = fabs((double)x[i * 192 + d] - images[2][d]);
            all = fmax(all, e);
            if (xx < IMG_W / 2) known = fmax(known, e);
          }
    TAP_CHECK(x && known < 0.05, "inpainting keeps the known half (err %.2g)", known);
    TAP_CHECK(x && all < 1.5, "inpainted values stay in data space (err %.2g)", all);
    free(x);
  }
  r = RUN("inpaint", "--model", "emp_c.json", "--in", "imgs/img2.png", "--mask", "small.png",
          "--out", "ip.png");
  check_error(r, 1, "--mask", "mask of the wrong size");
  r = RUN("colorize", "--model", "emp_c.json", "--in", "gray.png", "--out", "col.npy");
  if (ok_run(r, "colorize a gray PNG")) {
    check_shape("col.npy", "(1,3,8,8)", "colorize");
    float *x = load("col.npy", &cnt);
    /* The luminance (mean of R, G, B) is the known coordinate: it must come back as the
     * gray input, in [0,1] data space. */
    double err = 0;
    const int HW = IMG_H * IMG_W;
    for (int d = 0; x && d < HW; d++) {
      double g = (images[0][d] + images[0][HW + d] + images[0][2 * HW + d]) / 3.0;
      err = fmax(err, fabs((x[d] + x[HW + d] + x[2 * HW + d]) / 3.0 - g));
    }
    TAP_CHECK(x && err < 0.01, "colorize keeps the gray input's luminance (err %.2g)", err);
    free(x);
  }
  r = RUN("colorize", "--model", "emp_c.json", "--in", "imgs.npy", "--out", "col.png", "--n", "2");
  ok_run(r, "colorize RGB .npy inputs to a PNG grid");
  r = RUN("encode", "--model", "emp.json", "--in", "small.png", "--out", "z.npy");
  check_error(r, 1, "input is 3x6x6 but the model expects 3x8x8", "image of the wrong size");
  r = RUN("encode", "--model", "emp.json", "--in", "s.npy", "--out", "z.npy");
  check_error(r, 1, "but the model expects 3x8x8", ".npy of the wrong shape for an image model");
  r = RUN("encode", "--model", "emp.json", "--in", "fake.png", "--out", "z.npy");
  check_error(r, 1, "fake.png", "a text file named .png");
  r = RUN("sample", "--model", "emp.json", "--in", "fake.png", "--out", "z.npy");
  check_error(r, 2, ".npy", "sample --in must be .npy");
}

static void test_noise_scales(void) {
  result *r = RUN("noise-scales", "--dim", "3072", "--sigma-max", "50", "--sigma-min", "0.01",
                  "--steps-per-scale", "5");
  if (ok_run(r, "noise-scales CIFAR-10 size")) {
    int L = 0;
    double eps = 0, snr = 0;
    const char *s;
    if ((s = strstr(r->out, "\nL "))) sscanf(s, "\nL %d", &L);
    if ((s = strstr(r->out, "\nepsilon "))) sscanf(s, "\nepsilon %lf", &eps);
    if ((s = strstr(r->out, "\nsnr "))) sscanf(s, "\nsnr %lf", &snr);
    TAP_CHECK(fabs(L - 232.0) <= 23.2, "L = %d is within 10%% of NCSNv2's 232", L);
    TAP_CHECK(fabs(eps - 6.2e-6) <= 6.2e-7, "epsilon = %.3g is within 10%% of 6.2e-6", eps);
    TAP_CHECK(fabs(snr - sqrt(eps / 2e-4)) < 1e-4 * snr + 1e-6 && strstr(r->out, "--corrector ald"),
              "snr = sqrt(eps / (2 sigma_L^2)) = %.4g with the ALD settings", snr);
  }
  r = RUN("noise-scales", "--data", "imgs");
  if (ok_run(r, "noise-scales --data folder")) {
    double want = 0, got = 0;
    const int D = IMG_C * IMG_H * IMG_W;
    for (int a = 0; a < IMG_N; a++)
      for (int b = a + 1; b < IMG_N; b++) {
        double d2 = 0;
        for (int d = 0; d < D; d++) d2 += (images[a][d] - images[b][d]) * (images[a][d] - images[b][d]);
        want = fmax(want, sqrt(d2));
      }
    const char *s = strstr(r->out, "sigma_1 ");
    if (s) sscanf(s, "sigma_1 %lf", &got);
    TAP_CHECK(fabs(got - want) < 1e-3 * want, "sigma_1 = %.5g is the largest distance %.5g", got,
              want);
  }
  r = RUN("noise-scales", "--data", "imgs/img0.png");
  check_error(r, 1, "two", "one image is not enough for sigma_1");
  r = RUN("noise-scales", "--data", "bad.npy");
  check_error(r, 1, NULL, "noise-scales on a malformed .npy");
}

static int exists(const char *name) {
  struct stat st;
  return stat(P(name), &st) == 0;
}

/* A refusal that cost nothing: exit 1 naming `needle`, under 64 MB, no output file. */
static void check_refused_cheaply(const result *r, const char *needle, const char *out,
                                  const char *what) {
  check_error(r, 1, needle, what);
  TAP_CHECK(r->maxrss_kb < 64 * 1024 && !exists(out),
            "%s: refused in %.2f s at a peak of %ld KB, %s not written", what, r->seconds,
            r->maxrss_kb, out);
}

/* Decompression bombs: a 261 KB PNG declaring 16384x16384 pixels (before the header check:
 * 3.4 GB and 9 s through colorize --in, 1.3 GB through --mask). */
static void test_png_bombs(void) {
  size_t len = write_bomb_png(P("bomb.png"), 16384, 16384);
  TAP_CHECK(len > 0 && len < 300000, "a %zu-byte PNG declaring 16384x16384 pixels", len);
  mkdir(P("bombdir"), 0755);
  if (symlink(P("imgs/img0.png"), P("bombdir/a.png")) || symlink(P("bomb.png"), P("bombdir/b.png")))
    TAP_DIAG("symlink failed");
  result *r = RUN("colorize", "--model", "emp.json", "--in", "bomb.png", "--out", "bomb1.npy");
  check_refused_cheaply(r, "bomb.png: the image is 16384x16384 pixels, larger than the 8x8",
                        "bomb1.npy", "colorize --in bomb");
  r = RUN("inpaint", "--model", "emp.json", "--in", "imgs/img0.png", "--mask", "bomb.png",
          "--out", "bomb2.npy");
  check_refused_cheaply(r, "--mask: ", "bomb2.npy", "inpaint --mask bomb");
  r = RUN("encode", "--model", "emp.json", "--in", "bombdir", "--out", "bomb3.npy");
  check_refused_cheaply(r, "b.png: the image is 16384x16384", "bomb3.npy",
                        "encode --in a folder whose 2nd image is a bomb");
  r = RUN("noise-scales", "--data", "bomb.png");
  check_refused_cheaply(r, "more than the limit of 16777216 pixels", "bomb4.npy",
                        "noise-scales --data bomb (no model: the global pixel limit)");
  r = RUN("train", "--data", "bombdir", "--out", "bombrun", "--preset", "tiny", "--image-size",
          "8", "--attn", "4", "--steps", "1", "--quiet");
  TAP_CHECK(r->status == 1 && strstr(r->err, "refused before decoding") &&
                r->maxrss_kb < 64 * 1024 && !exists("bombrun/checkpoint.safetensors"),
            "train --data with a bomb: refused at %ld KB, no checkpoint", r->maxrss_kb);
}

/* The ODE solvers always end: tolerances below float32 are raised, and --max-evals caps
 * every solve with a message naming it (before: --rtol/--atol 1e-14 never ended). */
static void test_bounded_solvers(void) {
  result *r = RUN("sample", "--model", "gmm.json", "--out", "tight.npy", "--n", "4", "--sampler",
                  "ode", "--sigma-max", "5", "--rtol", "1e-14", "--atol", "1e-14");
  long long nfe = -1;
  const char *s = strstr(r->err, "NFE ");
  if (s) nfe = atoll(s + 4);
  TAP_CHECK(r->status == 0 && strstr(r->err, "are raised to") && nfe > 0 && nfe < 10000 &&
                exists("tight.npy"),
            "sample --sampler ode --rtol 1e-14 --atol 1e-14 ends: NFE %lld in %.2f s, with a note",
            nfe, r->seconds);
  const char *const runs[][12] = {
      {"sample", "--model", "gmm.json", "--out", "cap.npy", "--sampler", "ode", "--sigma-max",
       "5", "--max-evals", "20", NULL},
      {"encode", "--model", "gmm.json", "--in", "s.npy", "--out", "cap.npy", "--sigma-max", "5",
       "--max-evals", "20", NULL},
      {"decode", "--model", "gmm.json", "--in", "z.npy", "--out", "cap.npy", "--sigma-max", "5",
       "--max-evals", "20", NULL},
      {"likelihood", "--model", "gmm.json", "--in", "s.npy", "--logp-out", "cap.npy",
       "--max-evals", "20", NULL},
  };
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    r = run_v(runs[i]);
    char what[64];
    snprintf(what, sizeof what, "%s --max-evals 20", runs[i][0]);
    check_error(r, 1, "reached max-evals = 20 score evaluations", what);
    TAP_CHECK(!exists("cap.npy") && strstr(r->err, "raise max-evals"),
              "%s: says how to go on, writes nothing", what);
  }
  r = RUN("sample", "--model", "gmm.json", "--out", "cap.npy", "--max-evals", "0");
  check_error(r, 2, "--max-evals", "--max-evals 0 is a usage error");
}

/* One rule for the sampler settings (sde_sample_params_check): what the engine refuses is
 * a usage error (exit 2) before anything runs; what it accepts runs. */
static void test_setting_ranges(void) {
  result *r = RUN("sample", "--model", "gmm.json", "--out", "one.npy", "--steps", "1", "--n", "4");
  TAP_CHECK(r->status == 0 && exists("one.npy"), "sample --steps 1 (pc, exact kernel) runs");
  remove(P("one.npy"));
  r = RUN("sample", "--model", "gmm.json", "--out", "refused.npy", "--steps", "-1");
  check_error(r, 2, "--steps", "sample --steps -1");
  r = RUN("sample", "--model", "gmm.json", "--out", "refused.npy", "--eps", "1");
  check_error(r, 2, "--eps must be a number in (0, 1)", "sample --eps 1");
  r = RUN("likelihood", "--model", "gmm.json", "--in", "s.npy", "--eps", "1");
  check_error(r, 2, "--eps must be a number in (0, 1)", "likelihood --eps 1");
  r = RUN("sample", "--model", "gmm.json", "--out", "refused.npy", "--steps", "1000001");
  check_error(r, 2, "--steps", "--steps above the engine's 1000000");
  TAP_CHECK(!exists("refused.npy"), "refused settings write nothing");
  r = RUN("sample", "--model", "gmm.json", "--out", "one.npy", "--n", "2", "--sampler", "ode",
          "--ode-method", "euler", "--steps", "1", "--sigma-max", "5");
  ok_run(r, "sample --sampler ode --ode-method euler --steps 1 runs (one step is enough there)");
  r = RUN("encode", "--model", "gmm.json", "--in", "s.npy", "--out", "one.npy", "--ode-method",
          "heun", "--steps", "1", "--sigma-max", "5");
  ok_run(r, "encode --ode-method heun --steps 1 runs");
}

/* Values the math divides by or thresholds are refused with a message, never turned into
 * NaN outputs: GMM weights whose sum overflows, dropout outside [0,1), masks and inputs
 * with NaN or out of range, times outside [0,1]. */
static void test_bad_values(void) {
  write_text("gmm_huge.json", "{\"kind\":\"gmm\",\"weights\":[1e308,1e308],"
                              "\"means\":[[-2,0],[2,0]],\"stds\":0.3}");
  result *r = RUN("sample", "--model", "gmm_huge.json", "--out", "bv.npy", "--n", "2");
  check_error(r, 1, "the weights sum to inf (overflow)", "GMM weights [1e308, 1e308]");
  write_text("dropout.json", "{\"dropout\": 1.5}");
  r = RUN("train", "--data", "imgs", "--out", "drun", "--model-config", "dropout.json",
          "--steps", "1", "--quiet");
  TAP_CHECK(r->status == 1 && strstr(r->err, "dropout = 1.5 must be in [0, 1)") && !exists("drun/checkpoint.safetensors"),
            "network config with dropout 1.5 refused: %.120s", r->err);
  float m[3 * IMG_H * IMG_W];
  int64_t msh[3] = {3, IMG_H, IMG_W};
  const float bad_values[] = {NAN, 1.5f, -0.25f};
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < 3 * IMG_H * IMG_W; i++) m[i] = i == 17 ? bad_values[k] : 1.0f;
    sde_npy_write(P("badmask.npy"), m, 3, msh);
    r = RUN("inpaint", "--model", "emp.json", "--in", "imgs/img0.png", "--mask", "badmask.npy",
            "--out", "bv.npy");
    char what[64];
    snprintf(what, sizeof what, "a mask holding %g", (double)bad_values[k]);
    check_error(r, 1, "at entry 17; mask values must be in [0, 1]", what);
  }
  float xin[4 * 2] = {0, 0, 1, 1, INFINITY, 0, 2, 2};
  int64_t xsh[2] = {4, 2};
  sde_npy_write(P("xinf.npy"), xin, 2, xsh);
  r = RUN("encode", "--model", "gmm.json", "--in", "xinf.npy", "--out", "bv.npy");
  check_error(r, 1, "holds inf (sample 2, value 0); inputs must be finite", "an input with Inf");
  float t_bad[2] = {0.5f, NAN};
  int64_t tsh[1] = {2};
  sde_npy_write(P("tnan.npy"), t_bad, 1, tsh);
  sde_npy_write(P("x2.npy"), xin, 2, (int64_t[]){2, 2});
  r = RUN("score", "--model", "gmm_vp.json", "--in", "x2.npy", "--t", "tnan.npy", "--out", "bv.npy");
  TAP_CHECK(r->status == 1 && strstr(r->err, "time t[1] = nan must be in [0, 1]"),
            "score with t = NaN refused: %.120s", r->err);
  t_bad[1] = 1.5f;
  sde_npy_write(P("tnan.npy"), t_bad, 1, tsh);
  r = RUN("score", "--model", "gmm_vp.json", "--in", "x2.npy", "--t", "tnan.npy", "--out", "bv.npy");
  TAP_CHECK(r->status == 1 && strstr(r->err, "time t[1] = 1.5 must be in [0, 1]"),
            "score with t = 1.5 refused: %.120s", r->err);
  TAP_CHECK(!exists("bv.npy"), "refused values write nothing");
}

/* A result with NaN or Inf is written (it is the result) but never silently: every command
 * says so in one form. The trigger is natural: a VE prior of std 1e37 overflows float32. */
static void test_nonfinite_warnings(void) {
  const char *const runs[][14] = {
      {"sample", "--model", "gmm.json", "--out", "nf.npy", "--n", "4", "--sigma-max", "1e37",
       "--num-scales", "20", NULL},
      {"inpaint", "--model", "emp.json", "--in", "imgs/img0.png", "--mask", "mask.png", "--out",
       "nf.npy", "--sigma-max", "1e37", "--num-scales", "20", NULL},
      {"colorize", "--model", "emp.json", "--in", "gray.png", "--out", "nf.npy", "--sigma-max",
       "1e37", "--num-scales", "20", NULL},
  };
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    remove(P("nf.npy"));
    result *r = run_v(runs[i]);
    TAP_CHECK(r->status == 0 && strstr(r->err, "warning: ") &&
                  strstr(r->err, " NaN or Inf values (written as they are") && exists("nf.npy"),
              "%s with a diverging prior: written, with the warning: %.160s", runs[i][0], r->err);
  }
}

/* Starts `scoresde args...` without waiting (stdout, stderr to /dev/null). */
static pid_t spawn_quiet(const char *const *args) {
  const char *argv[64];
  int n = 0;
  argv[n++] = exe;
  for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

/* Files named checkpoint.safetensors.tmp.* in the run folder. */
static int count_temporaries(const char *run) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls '%s' 2>/dev/null | grep -c '^checkpoint.safetensors.tmp\\.'",
           P(run));
  FILE *f = popen(cmd, "r");
  int n = 0;
  if (f) {
    if (fscanf(f, "%d", &n) != 1) n = 0;
    pclose(f);
  }
  return n;
}

/* Training killed with SIGKILL while it checkpoints every step: the checkpoint is always
 * whole (it is replaced by a rename), --resume removes the temporaries of dead writers
 * (and only those), and --export writes atomically too. */
static void test_killed_training(void) {
  const char *train[] = {"train", "--data", "imgs", "--out", "krun", "--preset", "tiny",
                         "--image-size", "8", "--attn", "4", "--batch", "2", "--steps",
                         "1000000", "--ckpt-every", "1", "--sample-n", "0", "--quiet", NULL};
  const char *resume[] = {"train", "--out", "krun", "--resume", "--steps", "1000000",
                          "--ckpt-every", "1", "--sample-n", "0", "--quiet", NULL};
  char ckpt[600];
  snprintf(ckpt, sizeof ckpt, "%s", P("krun/checkpoint.safetensors"));
  int killed = 0, whole = 0, left = 0;
  for (int round = 0; round < 4; round++) {
    pid_t pid = spawn_quiet(round ? resume : train);
    struct stat st0, st;
    int changes = 0;
    /* let it write a few checkpoints, then kill it at a varying point of the next one */
    if (stat(ckpt, &st0) != 0) memset(&st0, 0, sizeof st0);
    for (int i = 0; pid > 0 && i < 20000 && changes < 3 + round; i++) {
      if (stat(ckpt, &st) == 0 && (st.st_ino != st0.st_ino || st.st_mtim.tv_nsec != st0.st_mtim.tv_nsec)) {
        st0 = st;
        changes++;
      }
      sleep_ms(1);
    }
    sleep_ms(3 * round);
    int status = 0;
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    killed += pid > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    sde_trainer *t = NULL;
    whole += sde_trainer_load(ckpt, &t) == 0;
    sde_trainer_free(t);
    left += count_temporaries("krun");
  }
  TAP_CHECK(killed == 4 && whole == 4,
            "train killed 4 times with SIGKILL while checkpointing every step: checkpoint loads "
            "after each kill (%d/4 killed, %d/4 whole; %d temporaries found after the kills)",
            killed, whole, left);

  /* temporaries of a writer that really died by SIGKILL, of a live one (us), and a name
   * that is not a temporary */
  pid_t dead = fork();
  if (dead == 0) {
    char mine[600];
    snprintf(mine, sizeof mine, "%s/krun/checkpoint.safetensors.tmp.%ld", dir, (long)getpid());
    FILE *f = fopen(mine, "wb");
    if (f) {
      fputs("half a checkpoint", f);
      fclose(f);
    }
    raise(SIGKILL);
    _exit(1);
  }
  int st = 0;
  waitpid(dead, &st, 0);
  char orphan[64], live[64];
  snprintf(orphan, sizeof orphan, "krun/checkpoint.safetensors.tmp.%ld", (long)dead);
  snprintf(live, sizeof live, "krun/checkpoint.safetensors.tmp.%ld", (long)getpid());
  write_text(live, "being written by a live process");
  write_text("krun/checkpoint.safetensors.tmp.notapid", "not ours");
  char *step_text = sde_checkpoint_metadata(ckpt, "step");
  long long step = step_text ? atoll(step_text) : -1;
  free(step_text);
  char target[32];
  snprintf(target, sizeof target, "%lld", step + 2);
  result *r = RUN("train", "--out", "krun", "--resume", "--steps", target, "--sample-n", "0",
                  "--export", "kexport.safetensors");
  int ok = r->status == 0 && WIFSIGNALED(st) && exists(live) &&
           exists("krun/checkpoint.safetensors.tmp.notapid") && !exists(orphan) &&
           strstr(r->err, "removed ") && strstr(r->err, "left by a killed run");
  if (!TAP_CHECK(ok, "--resume removes the temporaries of dead writers (one killed by SIGKILL), "
                     "keeps a live writer's and other names"))
    TAP_DIAG("exit %d, stderr: %.400s", r->status, r->err);
  step_text = sde_checkpoint_metadata(ckpt, "step");
  TAP_CHECK(step_text && atoll(step_text) == step + 2, "the resumed run went on from step %lld to %s",
            step, step_text ? step_text : "?");
  free(step_text);
  sde_model *m = NULL;
  int rc = sde_model_load(P("kexport.safetensors"), &m);
  sde_model_free(m);
  TAP_CHECK(rc == 0 && count_temporaries("krun") == 2 && !exists("kexport.safetensors.tmp.0"),
            "--export wrote a whole model atomically (%s)", rc ? sde_errmsg() : "loads");
  r = RUN("train", "--out", "krun", "--resume", "--steps", target, "--sample-n", "0", "--export",
          "nodir/kexport.safetensors", "--quiet");
  TAP_CHECK(r->status == 1 && strstr(r->err, "nodir/kexport.safetensors") && !exists("nodir"),
            "--export into a missing folder: exit 1 naming it, nothing written");
  remove(P(live));

  /* a checkpoint is not a model: info says what it is and how to export it */
  r = RUN("info", "krun/checkpoint.safetensors");
  TAP_CHECK(r->status == 0 && strstr(r->out, "training checkpoint") &&
                strstr(r->out, "scoresde train --out") && strstr(r->out, "--export"),
            "info on a checkpoint: says what it is and how to export it");
  r = RUN("sample", "--model", "krun/checkpoint.safetensors", "--out", "ck.npy");
  check_error(r, 1, "a training checkpoint (step", "a checkpoint given as --model");
}

/* Network models, when the fixtures of tests/fixtures are around (SCORESDE_FIXTURES). */
static void test_network(void) {
  const char *fx = getenv("SCORESDE_FIXTURES");
  char rgb[1024], gray[1024];
  struct stat st;
  snprintf(rgb, sizeof rgb, "%s/ncsnpp/ve_ncsnpp_tiny/model.safetensors", fx ? fx : "");
  snprintf(gray, sizeof gray, "%s/ncsnpp/ve_ncsnpp_residual_gray/model.safetensors", fx ? fx : "");
  if (!fx || stat(rgb, &st) != 0 || stat(gray, &st) != 0) {
    TAP_CHECK(1, "# SKIP network fixtures not found (SCORESDE_FIXTURES)");
    return;
  }
  result *r = RUN("info", rgb);
  TAP_CHECK(r->status == 0 && strstr(r->out, "3x16x16"), "info dispatches to the network tool");
  r = RUN("sample", "--model", rgb, "--n", "2", "--num-scales", "3", "--out", "net.npy");
  if (ok_run(r, "sample a network model")) check_shape("net.npy", "(2,3,16,16)", "network");
  r = RUN("sample", "--model", gray, "--n", "3", "--num-scales", "2", "--predictor", "em",
          "--corrector", "none", "--out", "netg.png");
  if (ok_run(r, "sample a gray network model to a PNG grid")) {
    float *g = NULL;
    int c = 0, h = 0, w = 0;
    TAP_CHECK(sde_png_read(P("netg.png"), 0, &g, &c, &h, &w) == 0 && c == 1 && h >= 16 &&
                  w >= 32,
              "gray grid (%dx%dx%d)", c, h, w);
    free(g);
  }
  r = RUN("encode", "--model", rgb, "--in", "net.npy", "--out", "netz.npy", "--ode-method",
          "euler", "--steps", "2");
  if (ok_run(r, "encode with a network (Euler, 2 steps)"))
    check_shape("netz.npy", "(2,3,16,16)", "network latents");
  r = RUN("colorize", "--model", gray, "--in", "net.npy", "--out", "x.npy");
  check_error(r, 1, "3-channel", "colorize with a gray network");
  r = RUN("likelihood", "--model", rgb, "--in", "net.npy", "--rtol", "1e-2", "--atol", "1e-2");
  TAP_CHECK((r->status == 0 && strstr(r->out, "bits/dim") && strstr(r->out, "offset 8")) ||
                (r->status == 1 && !r->sig && strncmp(r->err, "scoresde: ", 10) == 0),
            "network likelihood: bits/dim, or a clean error when the model lacks a VJP");
  r = RUN("sample", "--model", rgb, "--n", "1", "--num-scales", "2", "--in", "s.npy", "--out",
          "x.npy");
  check_error(r, 1, "but the model expects 3x16x16", "prior draws of the wrong shape");
}

/* Progress bar and Ctrl-C, with stderr on a pseudo-terminal. */
static void test_tty(void) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) || unlockpt(master) || !ptsname(master)) {
    TAP_CHECK(1, "# SKIP no pseudo-terminal");
    return;
  }
  char slave[256];
  snprintf(slave, sizeof slave, "%s", ptsname(master));
  /* Pass 0 runs to the end; pass 1 would take many seconds but is interrupted. */
  const char *argv0[] = {exe, "sample", "--model", P("gmm.json"), "--out", P("t.npy"), "--n", "4",
                         "--sigma-max", "5", "--num-scales", "3000", "--corrector", "none", NULL};
  const char *argv1[] = {exe, "sample", "--model", P("gmm.json"), "--out", P("t.npy"), "--n", "512",
                         "--sigma-max", "5", "--num-scales", "100000", "--corrector", "none", NULL};
  for (int pass = 0; pass < 2; pass++) {
    const char **argv = pass ? argv1 : argv0;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, slave, O_RDWR | O_NOCTTY, 0);
    pid_t pid;
    static char buf[65536];
    size_t used = 0;
    int st = 0, done = 0;
    if (posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, environ) != 0) {
      TAP_CHECK(0, "spawn with a terminal");
      posix_spawn_file_actions_destroy(&fa);
      break;
    }
    posix_spawn_file_actions_destroy(&fa);
    double t = 0;
    int sent = 0;
    while (t < 60) {
      struct pollfd pfd = {master, POLLIN, 0};
      int got = 0;
      if (poll(&pfd, 1, 5) > 0 && (pfd.revents & POLLIN)) {
        ssize_t k = read(master, buf + used, sizeof buf - 1 - used);
        if (k > 0) {
          used += (size_t)k;
          got = 1;
        }
        if (used >= sizeof buf - 1) used = 0; /* keep draining */
      }
      if (done && !got) break; /* exited and drained */
      if (!done && waitpid(pid, &st, WNOHANG) == pid) done = 1;
      t += 0.005;
      /* Pass 1: interrupt once the bar shows up. */
      if (pass == 1 && !sent && memchr(buf, '%', used)) {
        kill(pid, SIGINT);
        sent = 1;
      }
    }
    if (!done) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
    }
    buf[used] = '\0';
    if (pass == 0) {
      TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strchr(buf, '\r') && strstr(buf, "%") &&
                    strstr(buf, "ETA") && strstr(buf, "sample: 4 samples"),
                "progress bar (steps, %%, elapsed, ETA) on a terminal, then the summary");
    } else {
      int ok = WIFEXITED(st) && WEXITSTATUS(st) == 130 && strstr(buf, "interrupted");
      if (!TAP_CHECK(ok, "Ctrl-C cancels between steps: exit 130, 'interrupted'"))
        TAP_DIAG("status %d sent %d tail: %.200s", st, sent, used > 200 ? buf + used - 200 : buf);
    }
  }
  close(master);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_cli /path/to/scoresde\n");
    return 2;
  }
  static char exe_abs[4096];
  if (!realpath(argv[1], exe_abs)) {
    printf("Bail out! no executable at %s\n", argv[1]);
    return 1;
  }
  exe = exe_abs;
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/scoresde-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    printf("Bail out! cannot create a temporary folder\n");
    return 1;
  }
  if (chdir(dir) != 0) {
    printf("Bail out! cannot enter %s\n", dir);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  /* The problems here are tiny: one thread is fastest, and immune to a busy machine. The
   * thread-count test below asks for two threads explicitly. */
  setenv("OMP_NUM_THREADS", "1", 1);
  make_fixtures();
  double t0 = sde_now();
  test_usage();
  test_gmm();
  test_images();
  test_noise_scales();
  test_png_bombs();
  test_bounded_solvers();
  test_setting_ranges();
  test_killed_training();
  test_bad_values();
  test_nonfinite_warnings();
  test_network();
  test_tty();
  TAP_DIAG("%.1f s", sde_now() - t0);
  if (!getenv("SCORESDE_KEEP_TMP")) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return tap_done();
}
