/* Deterministic mutation fuzzing of the PNG and .npy readers, and their resource limits.
 *
 * Valid small files (PNG: gray, RGB, RGBA, 16-bit, palette, interlaced; .npy: every
 * dtype, versions 1 and 2) are mutated: byte flips, truncations, IHDR size edits with a
 * correct CRC, chunk-length edits, .npy shape and header-length edits. Every mutant goes
 * through the readers as the CLI uses them (PNG: with a model's size and without one;
 * .npy: from a regular file, and every 4th also through a pipe). Passing = never a crash (the suite also runs this
 * under ASan + UBSan), every rejection has a message, and nothing accepted breaks the
 * limits.
 *
 * Decompression bombs run in a forked child whose peak resident memory (getrusage
 * ru_maxrss, measured before and after) must stay under BOMB_MAX_KB: a 261 KB PNG that
 * declares 16384x16384 pixels (268 MB of pixels, 1 GB as float), the same as the second
 * image of a folder, and .npy headers that promise gigabytes the file (or pipe) does not
 * hold. Argument or SCORESDE_FUZZ_N: number of mutants per seed file. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "png_bomb.h"
#include "scoresde/scoresde.h"
#include "tap.h"

#define BOMB_MAX_KB (32 * 1024) /* a refused bomb may cost this much, no more */

static char dir[128];
static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t next_u64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(next_u64() % n) : 0; }

/* dir/name, one stable string per name (callers keep the pointers). */
static const char *tpath(const char *name) {
  static char paths[32][256];
  static int used;
  char want[256];
  snprintf(want, sizeof want, "%s/%s", dir, name);
  for (int i = 0; i < used; i++)
    if (!strcmp(paths[i], want)) return paths[i];
  if (used == 32) abort();
  snprintf(paths[used], sizeof paths[used], "%s", want);
  return paths[used++];
}

static int write_bytes(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(b, 1, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

static unsigned char *slurp(const char *path, size_t *n) {
  char *d = NULL;
  if (sde_read_file(path, 1 << 24, &d, n)) return NULL;
  return (unsigned char *)d;
}

/* ---- PNG building blocks ---------------------------------------------------------- */

/* Sets the IHDR's width and height (bytes 16..23) and fixes its CRC. */
static void set_png_size(unsigned char *b, size_t len, uint32_t w, uint32_t h) {
  if (len < 33 || memcmp(b + 12, "IHDR", 4)) return;
  put_be32(b + 16, w);
  put_be32(b + 20, h);
  put_be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
}

/* ---- peak memory of one call, in a child process ------------------------------------ */

typedef int (*probe_fn)(void *arg);

/* Runs fn(arg) in a child; returns its status (or -1 on a crash) and the growth of its
 * peak resident set in *kb. The child starts with the parent's pages, so the peak is
 * taken before and after the call. */
static int peak_kb(probe_fn fn, void *arg, long *kb, char *msg, size_t msg_size) {
  int fds[2];
  if (pipe(fds)) return -1;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    struct rusage r0, r1;
    close(fds[0]);
    getrusage(RUSAGE_SELF, &r0);
    int rc = fn(arg);
    getrusage(RUSAGE_SELF, &r1);
    char out[600];
    int n = snprintf(out, sizeof out, "%ld %s", r1.ru_maxrss - r0.ru_maxrss, sde_errmsg());
    if (write(fds[1], out, (size_t)n) < 0) _exit(3);
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  char in[600] = "";
  ssize_t got = read(fds[0], in, sizeof in - 1);
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (got > 0) in[got] = '\0';
  char *sp = strchr(in, ' ');
  *kb = atol(in);
  snprintf(msg, msg_size, "%s", sp ? sp + 1 : "");
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct {
  const char *path;
  int max_side; /* 0: no caller limit */
  int folder;
} png_probe;

static int probe_png(void *arg) {
  const png_probe *p = arg;
  float *x = NULL;
  int n, c, h, w, rc;
  if (p->folder)
    rc = sde_png_read_dir_max(p->path, 0, p->max_side, p->max_side, &x, &n, &c, &h, &w);
  else
    rc = sde_png_read_max(p->path, 0, p->max_side, p->max_side, &x, &c, &h, &w);
  free(x);
  return rc;
}

static int probe_npy(void *arg) {
  float *x = NULL;
  int nd;
  int64_t sh[SDE_NPY_MAX_DIMS];
  int rc = sde_npy_read((const char *)arg, &x, &nd, sh);
  free(x);
  return rc;
}

/* A .npy file: version 1 header for `shape_text` ("(8000000000, 2)") and `dtype`, then
 * `data_bytes` zero bytes. */
static unsigned char *make_npy(const char *dtype, const char *shape_text, size_t data_bytes,
                               size_t *len) {
  char hdr[256];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                   dtype, shape_text);
  int padded = (10 + n + 1 + 63) / 64 * 64 - 10;
  unsigned char *b = calloc((size_t)padded + 10 + data_bytes, 1);
  memcpy(b, "\x93NUMPY\x01\x00", 8);
  b[8] = (unsigned char)(padded & 0xFF);
  b[9] = (unsigned char)(padded >> 8);
  memcpy(b + 10, hdr, (size_t)n);
  memset(b + 10 + n, ' ', (size_t)(padded - n - 1));
  b[10 + padded - 1] = '\n';
  *len = (size_t)padded + 10 + data_bytes;
  return b;
}

static void test_bombs(void) {
  size_t len;
  unsigned char *bomb = make_bomb_png(16384, 16384, &len);
  write_bytes(tpath("bomb.png"), bomb, len);
  free(bomb);
  struct {
    png_probe p;
    const char *what;
  } cases[] = {
      {{tpath("bomb.png"), 32, 0}, "a model's 32x32"},
      {{tpath("bomb.png"), 0, 0}, "no known size: the global pixel limit"},
      {{tpath("bombdir"), 32, 1}, "the 2nd image of a folder, training data of 32x32"},
      {{tpath("bombdir"), 0, 1}, "the 2nd image of a folder, no known size"},
  };
  mkdir(tpath("bombdir"), 0755);
  float small[64] = {0};
  sde_png_write(tpath("bombdir/a.png"), small, 1, 8, 8);
  if (symlink(tpath("bomb.png"), tpath("bombdir/b.png"))) TAP_DIAG("symlink failed");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    long kb = 0;
    char msg[600];
    double t0 = sde_now();
    int rc = peak_kb(probe_png, &cases[i].p, &kb, msg, sizeof msg);
    double secs = sde_now() - t0;
    TAP_CHECK(rc == 1 && kb < BOMB_MAX_KB && strstr(msg, "refused before decoding"),
              "PNG bomb (%zu bytes, 16384x16384) with %s: refused in %.3f s, peak +%ld KB (< %d): %s",
              len, cases[i].what, secs, kb, BOMB_MAX_KB, msg);
  }
  /* the global limit itself: one row more than 4096 x 4096 */
  bomb = make_bomb_png(4096, 4097, &len);
  write_bytes(tpath("cap.png"), bomb, len);
  free(bomb);
  {
    long kb = 0;
    char msg[600];
    png_probe p = {tpath("cap.png"), 0, 0};
    int rc = peak_kb(probe_png, &p, &kb, msg, sizeof msg);
    TAP_CHECK(rc == 1 && kb < BOMB_MAX_KB && strstr(msg, "more than the limit"),
              "4096x4097 (one row over %d pixels): refused, peak +%ld KB: %s", SDE_PNG_MAX_PIXELS,
              kb, msg);
  }

  /* .npy promising 64 GB: a regular file of 16 data bytes, and a pipe */
  unsigned char *npy = make_npy("<f4", "(8000000000, 2)", 16, &len);
  write_bytes(tpath("huge.npy"), npy, len);
  const char *fifo = tpath("pipe.npy");
  mkfifo(fifo, 0600);
  for (int via_pipe = 0; via_pipe < 2; via_pipe++) {
    pid_t writer = -1;
    if (via_pipe && (writer = fork()) == 0) {
      int fd = open(fifo, O_WRONLY);
      if (fd >= 0 && write(fd, npy, len) < 0) _exit(1);
      _exit(0);
    }
    long kb = 0;
    char msg[600];
    int rc = peak_kb(probe_npy, (void *)(via_pipe ? fifo : tpath("huge.npy")), &kb, msg, sizeof msg);
    if (writer > 0) waitpid(writer, NULL, 0);
    TAP_CHECK(rc == 1 && kb < BOMB_MAX_KB && strstr(msg, "truncated"),
              ".npy header promising 64 GB, 16 bytes of data, %s: refused, peak +%ld KB: %s",
              via_pipe ? "through a pipe" : "in a regular file", kb, msg);
  }
  free(npy);
}

/* ---- mutation fuzzing ------------------------------------------------------------- */

typedef struct {
  int total, accepted, no_message, over_limit;
} stats;

/* Byte flips, truncation, an IHDR size edit or a chunk-length edit. */
static void mutate_png(unsigned char *b, size_t *len) {
  switch (below(5)) {
    case 0:
      for (int k = 1 + (int)below(4); k > 0; k--) b[below(*len)] ^= (unsigned char)(1 + below(255));
      break;
    case 1:
      *len = below(*len);
      break;
    case 2: { /* a size from tiny to hostile, with a valid CRC */
      static const uint32_t sizes[] = {0, 1, 7, 8, 9, 33, 4096, 4097, 16384, 16385, 0x7FFFFFFF,
                                       0xFFFFFFFF};
      set_png_size(b, *len, sizes[below(12)], sizes[below(12)]);
      break;
    }
    case 3: { /* the length of a chunk after IHDR */
      size_t pos = 33;
      for (int k = (int)below(3); k > 0 && pos + 8 < *len; k--) pos += 12 + get_be32(b + pos);
      if (pos + 4 <= *len) put_be32(b + pos, (uint32_t)next_u64());
      break;
    }
    default: /* flips inside the compressed data */
      if (*len > 60) b[41 + below(*len - 60)] ^= (unsigned char)(1 + below(255));
      break;
  }
}

/* Byte flips, truncation, a shape edit or a header-length edit. */
static void mutate_npy(unsigned char *b, size_t *len) {
  switch (below(4)) {
    case 0:
      for (int k = 1 + (int)below(4); k > 0; k--) b[below(*len)] ^= (unsigned char)(1 + below(255));
      break;
    case 1:
      *len = below(*len);
      break;
    case 2: { /* digits of the shape */
      char *s = memchr(b, '(', *len);
      if (s)
        for (char *p = s + 1; p < (char *)b + *len && *p != ')'; p++)
          if (*p >= '0' && *p <= '9' && below(2)) *p = (char)('0' + below(10));
      break;
    }
    default:
      if (*len > 10) b[8 + below(2)] = (unsigned char)next_u64();
      break;
  }
}

static void run_png(const char *path, stats *s) {
  for (int limited = 0; limited < 2; limited++) {
    float *x = NULL;
    int c, h, w;
    sde_fail(SDE_OK, "%s", "");
    int rc = sde_png_read_max(path, 0, limited ? 8 : 0, limited ? 8 : 0, &x, &c, &h, &w);
    s->total++;
    if (rc) {
      s->no_message += !sde_errmsg()[0] || x != NULL;
    } else {
      s->accepted++;
      s->over_limit += (limited && (h > 8 || w > 8)) || (int64_t)h * w > SDE_PNG_MAX_PIXELS;
      double sum = 0; /* touch every value */
      for (int64_t i = 0; i < (int64_t)c * h * w; i++) sum += x[i];
      s->over_limit += !(sum >= 0);
    }
    free(x);
  }
}

static void run_npy(const char *path, stats *s) {
  float *x = NULL;
  int nd;
  int64_t sh[SDE_NPY_MAX_DIMS];
  sde_fail(SDE_OK, "%s", "");
  int rc = sde_npy_read(path, &x, &nd, sh);
  s->total++;
  if (rc) {
    s->no_message += !sde_errmsg()[0] || x != NULL;
  } else {
    s->accepted++;
    struct stat st;
    int64_t count = 1;
    for (int i = 0; i < nd; i++) count *= sh[i];
    s->over_limit += stat(path, &st) != 0 || count > (int64_t)st.st_size; /* >= 1 byte each */
    volatile float sink = 0;
    for (int64_t i = 0; i < count; i++) sink += x[i];
    (void)sink;
  }
  free(x);
}

/* Reads a .npy mutant through a pipe (size unknown to the reader), written by a child. */
static void run_npy_pipe(const unsigned char *buf, size_t len, stats *s) {
  const char *fifo = tpath("pipe.npy");
  fflush(stdout);
  pid_t writer = fork();
  if (writer < 0) {
    TAP_DIAG("fork: %s", strerror(errno));
    return;
  }
  if (writer == 0) {
    int fd = open(fifo, O_WRONLY);
    if (fd >= 0 && write(fd, buf, len) < 0) _exit(1);
    _exit(0);
  }
  float *x = NULL;
  int nd;
  int64_t sh[SDE_NPY_MAX_DIMS];
  sde_fail(SDE_OK, "%s", "");
  int rc = sde_npy_read(fifo, &x, &nd, sh);
  s->total++;
  if (rc) s->no_message += !sde_errmsg()[0] || x != NULL;
  else s->accepted++;
  free(x);
  kill(writer, SIGKILL); /* the reader may stop early; do not leave it blocked */
  waitpid(writer, NULL, 0);
}

/* Mutants of one seed file through the reader; every 4th .npy one also through a pipe. */
static void fuzz_seed(const char *seed, int npy, int n, stats *s) {
  size_t len0;
  unsigned char *base = slurp(seed, &len0), *buf = malloc(len0 + 1);
  const char *path = tpath(npy ? "m.npy" : "m.png");
  for (int i = 0; base && i < n; i++) {
    size_t len = len0;
    memcpy(buf, base, len0);
    if (npy) mutate_npy(buf, &len);
    else mutate_png(buf, &len);
    write_bytes(path, buf, len);
    if (npy) run_npy(path, s);
    else run_png(path, s);
    if (npy && i % 4 == 0) run_npy_pipe(buf, len, s);
  }
  free(base);
  free(buf);
}

static void test_fuzz(int n) {
  float img[4 * 8 * 8];
  for (int i = 0; i < 4 * 64; i++) img[i] = (float)(i % 11) / 10.0f;
  const char *png_seeds[] = {"g.png", "rgb.png", "rgba.png"};
  const int chans[] = {1, 3, 4};
  for (int k = 0; k < 3; k++) sde_png_write(tpath(png_seeds[k]), img, chans[k], 8, 8);
  stats sp = {0};
  for (int k = 0; k < 3; k++) fuzz_seed(tpath(png_seeds[k]), 0, n, &sp);
  TAP_CHECK(sp.no_message == 0 && sp.over_limit == 0,
            "PNG: %d reads of mutants (with and without a size limit), %d accepted, %d refusals "
            "without a message, %d over a limit", sp.total, sp.accepted, sp.no_message,
            sp.over_limit);

  int64_t shape[3] = {2, 3, 4};
  float v[24];
  for (int i = 0; i < 24; i++) v[i] = (float)i - 5.5f;
  sde_npy_write(tpath("f4.npy"), v, 3, shape);
  double dv[24];
  for (int i = 0; i < 24; i++) dv[i] = v[i];
  sde_npy_write_f64(tpath("f8.npy"), dv, 3, shape);
  size_t len;
  unsigned char *u1 = make_npy("|u1", "(4, 6)", 24, &len);
  for (int i = 0; i < 24; i++) u1[len - 24 + (size_t)i] = (unsigned char)(i * 10);
  write_bytes(tpath("u1.npy"), u1, len);
  free(u1);
  unsigned char *i8 = make_npy("<i8", "(3,)", 24, &len);
  write_bytes(tpath("i8.npy"), i8, len);
  free(i8);
  stats sn = {0};
  const char *npy_seeds[] = {"f4.npy", "f8.npy", "u1.npy", "i8.npy"};
  for (int k = 0; k < 4; k++) fuzz_seed(tpath(npy_seeds[k]), 1, n, &sn);
  TAP_CHECK(sn.no_message == 0 && sn.over_limit == 0,
            ".npy: %d mutants, %d accepted, %d refusals without a message, %d holding more "
            "elements than the file has bytes", sn.total, sn.accepted, sn.no_message,
            sn.over_limit);
}

static int remove_entry(const char *name) { return remove(tpath(name)); }

int main(int argc, char **argv) {
  int n = 400;
  const char *env = getenv("SCORESDE_FUZZ_N");
  if (argc > 1) n = atoi(argv[1]);
  else if (env) n = atoi(env);
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/scoresde_fuzz_io_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    printf("Bail out! mkdtemp: %s\n", strerror(errno));
    return 1;
  }
  test_bombs();
  test_fuzz(n);
  const char *names[] = {"bomb.png", "bombdir/a.png", "bombdir/b.png", "bombdir", "cap.png",
                         "huge.npy", "pipe.npy", "g.png", "rgb.png", "rgba.png", "m.png",
                         "f4.npy", "f8.npy", "u1.npy", "i8.npy", "m.npy"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) remove_entry(names[i]);
  rmdir(dir);
  return tap_done();
}
