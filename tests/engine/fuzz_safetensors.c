/* Deterministic mutation fuzzing of the safetensors reader and the network loader.
 *
 * A valid small network file (NCSN++, nf 8, 8x8x1, every module kind of the fixture
 * ve_ncsnpp_residual_gray family) is mutated thousands of ways: byte flips (header and
 * data), truncations, header-length edits, offsets out of range, overlapping data, a giant
 * header, shape overflows, renamed (missing) tensors, and textual JSON edits. Each mutant
 * goes through sde_st_open_memory and, when accepted, sde_network_from_safetensors and a
 * forward pass. Passing = never a crash (the suite also runs this under ASan + UBSan) and
 * every rejection carries a message. Argument or SCORESDE_FUZZ_N: number of mutants. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "tap.h"
#include "tiny_config.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(next_u64() % n) : 0; }

enum { K_FLIP_HEADER, K_FLIP_DATA, K_TRUNCATE, K_HEADER_LEN, K_OFFSETS, K_OVERLAP, K_SHAPE,
       K_RENAME, K_TEXT, K_DTYPE, NUM_KINDS };
static const char *const kind_names[NUM_KINDS] = {
  "byte flips in header", "byte flips in data", "truncation", "header length edit",
  "offsets out of range", "overlapping data", "shape overflow / edit", "missing tensor (rename)",
  "JSON text edits", "dtype edits"};

typedef struct {
  int total, rejected_st, rejected_net, accepted, no_message;
} stats;

static uint64_t get_u64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}
static void put_u64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* replaces the first occurrence at/after a random point of `from` (within the header) by
 * `to`, keeping the header length field consistent */
static uint8_t *replace_text(const uint8_t *src, size_t len, const char *from, const char *to,
                             size_t *out_len) {
  size_t h = (size_t)get_u64(src), fl = strlen(from), tl = strlen(to);
  size_t start = 8 + below(h), pos = SIZE_MAX;
  for (int pass = 0; pass < 2 && pos == SIZE_MAX; pass++) {
    for (size_t i = pass ? 8 : start; i + fl <= 8 + h; i++)
      if (!memcmp(src + i, from, fl)) { pos = i; break; }
  }
  if (pos == SIZE_MAX) return NULL;
  *out_len = len - fl + tl;
  uint8_t *d = malloc(*out_len + 1);
  memcpy(d, src, pos);
  memcpy(d + pos, to, tl);
  memcpy(d + pos + tl, src + pos + fl, len - pos - fl);
  put_u64(d, h - fl + tl);
  return d;
}

static uint8_t *mutate(int kind, const uint8_t *src, size_t len, size_t *out_len) {
  size_t h = (size_t)get_u64(src);
  uint8_t *d = NULL;
  char buf[128];
  switch (kind) {
    case K_FLIP_HEADER:
    case K_FLIP_DATA: {
      d = malloc(len);
      memcpy(d, src, len);
      *out_len = len;
      int n = 1 + (int)below(4);
      for (int i = 0; i < n; i++) {
        size_t p = kind == K_FLIP_HEADER ? 8 + below(h) : 8 + h + below(len - 8 - h);
        if (below(2)) d[p] ^= (uint8_t)(1u << below(8));
        else d[p] = (uint8_t)next_u64();
      }
      return d;
    }
    case K_TRUNCATE:
      *out_len = below(4) ? below(len) : 8 + h + below(len - 8 - h);
      d = malloc(*out_len + 1);
      memcpy(d, src, *out_len);
      return d;
    case K_HEADER_LEN: {
      d = malloc(len);
      memcpy(d, src, len);
      *out_len = len;
      uint64_t choices[] = {0, 1, 7, h - 1, h + 1, h + 8, len - 8, len - 7, len,
                            (uint64_t)SDE_ST_MAX_HEADER + 1, UINT64_MAX, 1ull << 63,
                            next_u64() % (2 * len)};
      uint64_t v = choices[below(sizeof choices / sizeof *choices)];
      put_u64(d, v == h ? h + 1 : v);
      return d;
    }
    case K_OFFSETS: {
      const char *vals[] = {"99999999999", "-4", "1e3", "18446744073709551616", "4.5", "0",
                            "9007199254740993", "null", "\"8\""};
      snprintf(buf, sizeof buf, "\"data_offsets\":[%s,", vals[below(9)]);
      d = replace_text(src, len, "\"data_offsets\":[", below(2) ? buf : "\"data_offsets\":[0,0,", out_len);
      if (d) return d;
      break;
    }
    case K_OVERLAP:
      /* move one tensor's range back by a few floats onto its neighbour */
      for (int tries = 0; tries < 8 && !d; tries++) {
        size_t hs = (size_t)get_u64(src);
        size_t p = 8 + below(hs);
        const char *hit = NULL;
        for (size_t i = p; i + 17 < 8 + hs; i++)
          if (!memcmp(src + i, "\"data_offsets\":[", 16)) { hit = (const char *)src + i + 16; break; }
        if (!hit) continue;
        unsigned long long a, b;
        if (sscanf(hit, "%llu,%llu", &a, &b) != 2 || a < 4) continue;
        unsigned long long shift = 4 * (1 + below(3));
        if (shift > a) shift = a;
        char from[64], to[64];
        snprintf(from, sizeof from, "[%llu,%llu]", a, b);
        snprintf(to, sizeof to, "[%llu,%llu]", a - shift, b - shift);
        d = replace_text(src, len, from, to, out_len);
      }
      if (d) return d;
      break;
    case K_SHAPE: {
      const char *vals[] = {"4294967296,4294967296,16", "0", "-1", "3.5", "1,1,1,1,1,1,1,1,1,1",
                            "9223372036854775807,2", "", "\"a\""};
      snprintf(buf, sizeof buf, "\"shape\":[%s,", vals[below(8)]);
      d = replace_text(src, len, "\"shape\":[", buf, out_len);
      if (d) return d;
      break;
    }
    case K_RENAME: {
      d = replace_text(src, len, "\"all_modules.", below(2) ? "\"all_modulez." : "\"all_modules.9", out_len);
      if (d) return d;
      break;
    }
    case K_TEXT: {
      const char *from[] = {":", ",", "{", "}", "[", "]", "\"", "F32", "true", "1"};
      const char *to[] = {"", ",,", "{{", "", "[[", "}", "\\", "F64", "1", "1e309"};
      int i = (int)below(10);
      d = replace_text(src, len, from[i], to[below(2) ? (size_t)i : below(10)], out_len);
      if (d) return d;
      break;
    }
    case K_DTYPE: {
      const char *to[] = {"\"F16\"", "\"BF16\"", "\"I32\"", "\"BOOL\"", "\"F64\"", "\"X\"", "1"};
      d = replace_text(src, len, "\"F32\"", to[below(7)], out_len);
      if (d) return d;
      break;
    }
  }
  /* fallback: a single flip */
  d = malloc(len);
  memcpy(d, src, len);
  d[below(len)] ^= 0x20;
  *out_len = len;
  return d;
}

static void run_one(const uint8_t *bytes, size_t len, stats *s, const float *x) {
  sde_safetensors *st = NULL;
  s->total++;
  int rc = sde_st_open_memory(bytes, len, &st);
  if (rc) {
    s->rejected_st++;
    if (!sde_errmsg()[0]) s->no_message++;
    return;
  }
  sde_model *m = NULL;
  rc = sde_network_from_safetensors(st, &m);
  sde_st_close(st);
  if (rc) {
    s->rejected_net++;
    if (!sde_errmsg()[0]) s->no_message++;
    return;
  }
  s->accepted++;
  float out[64], label = 0.5f;
  if (sde_network_forward(m, 1, x, &label, out) != 0 && !sde_errmsg()[0]) s->no_message++;
  sde_model_free(m);
}

int main(int argc, char **argv) {
  int n = 3000;
  const char *env = getenv("SCORESDE_FUZZ_N");
  if (argc > 1) n = atoi(argv[1]);
  else if (env) n = atoi(env);

  /* the valid base file */
  sde_ncsnpp_config c;
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  shrink_config(&c, 8, 8);
  c.num_channels = 1;
  c.progressive = SDE_PROG_OUTPUT_SKIP;
  c.progressive_input = SDE_PROG_RESIDUAL;
  sde_net_param *p;
  int np;
  if (sde_ncsnpp_param_list(&c, &p, &np)) {
    TAP_CHECK(0, "plan: %s", sde_errmsg());
    return tap_done();
  }
  int64_t total = p[np - 1].offset + p[np - 1].numel;
  float *w = malloc(sizeof(float) * (size_t)total);
  for (int64_t i = 0; i < total; i++) w[i] = 0.05f * (float)((int64_t)(next_u64() % 201) - 100) / 100.0f;
  sde_st_entry *e = calloc((size_t)np, sizeof *e);
  for (int i = 0; i < np; i++) {
    e[i].name = p[i].name;
    e[i].ndim = p[i].ndim;
    for (int d = 0; d < p[i].ndim; d++) e[i].shape[d] = p[i].shape[d];
    e[i].data = w + p[i].offset;
  }
  char *json = sde_ncsnpp_config_to_json(&c);
  const char *meta[] = {"scoresde", json, "format", "pt"};
  uint8_t *base;
  size_t base_len;
  int rc = sde_st_serialize(e, np, meta, 2, &base, &base_len);
  float x[64];
  for (int i = 0; i < 64; i++) x[i] = (float)i / 64.0f;
  stats s0 = {0};
  run_one(base, base_len, &s0, x);
  TAP_CHECK(rc == 0 && s0.accepted == 1, "base file (%zu bytes, %d tensors) loads and runs",
            base_len, np);

  stats per[NUM_KINDS];
  memset(per, 0, sizeof per);
  for (int i = 0; i < n; i++) {
    int kind = i % NUM_KINDS;
    size_t len = 0;
    uint8_t *d = mutate(kind, base, base_len, &len);
    run_one(d, len, &per[kind], x);
    free(d);
  }
  /* a giant header: length field and real bytes past the 100 MB limit */
  {
    size_t len = 8 + (size_t)SDE_ST_MAX_HEADER + 16;
    uint8_t *g = malloc(len);
    memset(g + 8, ' ', len - 8);
    g[8] = '{';
    g[len - 1] = '}';
    put_u64(g, len - 8);
    sde_safetensors *st = NULL;
    rc = sde_st_open_memory(g, len, &st);
    TAP_CHECK(rc == SDE_EFORMAT && strstr(sde_errmsg(), "exceeds"), "giant (100 MB + 16) header: %s",
              sde_errmsg());
    sde_st_close(st);
    free(g);
  }
  /* truncations through the mmap path */
  {
    char path[] = "/tmp/scoresde_fuzz_XXXXXX";
    int fd = mkstemp(path);
    int bad = 0;
    for (int k = 0; k < 40 && fd >= 0; k++) {
      size_t cut = k < 20 ? (size_t)k : below(base_len);
      if (ftruncate(fd, 0) || pwrite(fd, base, cut, 0) != (ssize_t)cut) break;
      sde_model *m = NULL;
      rc = sde_network_load(path, &m);
      if (rc == 0 || !sde_errmsg()[0]) bad++;
      sde_model_free(m);
    }
    if (fd >= 0) close(fd);
    unlink(path);
    TAP_CHECK(bad == 0, "40 truncated files through mmap: all rejected with a message");
  }
  int no_msg = 0, all = 0;
  for (int k = 0; k < NUM_KINDS; k++) {
    TAP_DIAG("%-26s %5d mutants: %5d rejected by the reader, %5d by the network loader, %5d accepted",
             kind_names[k], per[k].total, per[k].rejected_st, per[k].rejected_net, per[k].accepted);
    no_msg += per[k].no_message;
    all += per[k].total;
  }
  TAP_CHECK(no_msg == 0, "%d mutants, no crash, every rejection has a message (%d without)", all,
            no_msg);
  TAP_CHECK(per[K_TRUNCATE].accepted == 0 && per[K_HEADER_LEN].accepted == 0 &&
                per[K_OVERLAP].accepted == 0 && per[K_RENAME].accepted == 0,
            "truncations, header-length edits, overlaps and renames are never accepted");
  free(base);
  free(json);
  free(e);
  free(w);
  free(p);
  return tap_done();
}
