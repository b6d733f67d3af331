/* safetensors reader/writer (docs/math.md#safetensors): round trip, F16/BF16 widening, and one clear
 * error for each kind of malformed file; the network loader's name/shape/dtype checks. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "tap.h"
#include "tiny_config.h"

/* [u64 len][header][data] in a malloc'd buffer */
static uint8_t *make_file(const char *header, const void *data, size_t data_len, size_t *len) {
  size_t h = strlen(header);
  *len = 8 + h + data_len;
  uint8_t *b = malloc(*len + 1);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
  memcpy(b + 8, header, h);
  if (data_len) memcpy(b + 8 + h, data, data_len);
  return b;
}

/* Opens bytes; expects failure with `needle` in the message (NULL: expects success). */
static void expect(const char *what, const uint8_t *bytes, size_t len, int code,
                   const char *needle) {
  sde_safetensors *st = NULL;
  int rc = sde_st_open_memory(bytes, len, &st);
  if (!needle) {
    TAP_CHECK(rc == 0 && st, "%s: accepted%s%s", what, rc ? ": " : "", rc ? sde_errmsg() : "");
  } else {
    TAP_CHECK(rc == code && !st && strstr(sde_errmsg(), needle),
              "%s: rejected with %s (\"%s\")", what, sde_status_name(rc), sde_errmsg());
  }
  sde_st_close(st);
}

static void expect_header(const char *what, const char *header, size_t data_len,
                          const char *needle) {
  uint8_t *data = calloc(data_len + 1, 1);
  size_t len;
  uint8_t *b = make_file(header, data, data_len, &len);
  expect(what, b, len, SDE_EFORMAT, needle);
  free(b);
  free(data);
}

static void test_round_trip(void) {
  float a[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 6}, s = 42.0f, z = 0;
  sde_st_entry e[3] = {
    {.name = "a.weight", .ndim = 2, .shape = {2, 3}, .data = a},
    {.name = "scalar", .ndim = 0, .data = &s},
    {.name = "empty \"quoted\" \\ name", .ndim = 2, .shape = {0, 5}, .data = &z},
  };
  const char *meta[] = {"scoresde", "{\"nf\": 16, \"x\": \"a\\\"b\"}\n\ttab", "format", "pt"};
  uint8_t *bytes;
  size_t len;
  int rc = sde_st_serialize(e, 3, meta, 2, &bytes, &len);
  TAP_CHECK(rc == 0 && (8 + (bytes[0] | bytes[1] << 8)) % 8 == 0,
            "serialize: data start 8-byte aligned");
  sde_safetensors *st = NULL;
  rc = sde_st_open_memory(bytes, len, &st);
  if (!TAP_CHECK(rc == 0, "open serialized (%s)", rc ? sde_errmsg() : "ok")) {
    free(bytes);
    return;
  }
  const sde_st_tensor *t = sde_st_find(st, "a.weight");
  float back[6] = {0};
  TAP_CHECK(t && t->dtype == SDE_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
                sde_st_read_f32(st, t, back) == 0 && !memcmp(a, back, sizeof a),
            "tensor a.weight round trip bit-exact");
  t = sde_st_find(st, "scalar");
  float sb = 0;
  TAP_CHECK(t && t->ndim == 0 && t->numel == 1 && sde_st_read_f32(st, t, &sb) == 0 && sb == 42.0f,
            "scalar tensor");
  t = sde_st_find(st, "empty \"quoted\" \\ name");
  TAP_CHECK(t && t->numel == 0 && t->begin == t->end, "empty tensor with an escaped name");
  TAP_CHECK(st->n_meta == 2 && sde_st_metadata(st, "scoresde") &&
                !strcmp(sde_st_metadata(st, "scoresde"), meta[1]) &&
                !strcmp(sde_st_metadata(st, "format"), "pt") && !sde_st_metadata(st, "nope"),
            "metadata strings round trip (quotes, newline, tab)");
  TAP_CHECK(sde_st_find(st, "missing") == NULL, "find of an absent name is NULL");
  sde_st_close(st);

  /* through a file (mmap) */
  char path[] = "/tmp/scoresde_st_XXXXXX";
  int fd = mkstemp(path);
  if (fd >= 0) close(fd);
  rc = sde_st_write(path, e, 3, meta, 2);
  if (!rc) rc = sde_st_open(path, &st);
  TAP_CHECK(rc == 0 && st->n_tensors == 3, "write + mmap open (%s)", rc ? sde_errmsg() : "ok");
  if (!rc) sde_st_close(st);
  rc = sde_st_open("/nonexistent/x.safetensors", &st);
  TAP_CHECK(rc == SDE_EIO && strstr(sde_errmsg(), "cannot open"), "missing file: %s", sde_errmsg());
  unlink(path);
  free(bytes);
}

static void test_widening(void) {
  /* F16: 1, -2, 0.5, smallest subnormal, 65504, +inf; BF16: 1, -3, 0.15625 */
  uint16_t f16[6] = {0x3C00, 0xC000, 0x3800, 0x0001, 0x7BFF, 0x7C00};
  uint16_t bf16[3] = {0x3F80, 0xC040, 0x3E20};
  uint8_t data[18];
  memcpy(data, f16, 12);
  memcpy(data + 12, bf16, 6);
  const char *h = "{\"h\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,12]},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[12,18]},"
                  "\"i\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[18,18]}}";
  size_t len;
  uint8_t *b = make_file(h, data, sizeof data, &len);
  sde_safetensors *st = NULL;
  int rc = sde_st_open_memory(b, len, &st);
  if (TAP_CHECK(rc == 0, "F16/BF16 file opens (%s)", rc ? sde_errmsg() : "ok")) {
    float o[6];
    rc = sde_st_read_f32(st, sde_st_find(st, "h"), o);
    TAP_CHECK(rc == 0 && o[0] == 1.0f && o[1] == -2.0f && o[2] == 0.5f &&
                  o[3] == ldexpf(1.0f, -24) && o[4] == 65504.0f && isinf(o[5]) && o[5] > 0,
              "F16 widened exactly (incl. subnormal, max, inf)");
    rc = sde_st_read_f32(st, sde_st_find(st, "b"), o);
    TAP_CHECK(rc == 0 && o[0] == 1.0f && o[1] == -3.0f && o[2] == 0.15625f, "BF16 widened exactly");
    rc = sde_st_read_f32(st, sde_st_find(st, "i"), o);
    TAP_CHECK(rc == SDE_EUNSUPPORTED && strstr(sde_errmsg(), "I32"), "I32 cannot be read as floats: %s",
              sde_errmsg());
  }
  sde_st_close(st);
  free(b);
}

static void test_malformed(void) {
  uint8_t tiny[4] = {1, 2, 3, 4};
  expect("4-byte file", tiny, sizeof tiny, SDE_EFORMAT, "too short");
  uint8_t big[16] = {0};
  big[3] = 0x10; /* 256 MiB header */
  expect("256 MiB header length", big, sizeof big, SDE_EFORMAT, "exceeds");
  uint8_t past[16] = {0};
  past[0] = 100;
  memcpy(past + 8, "{}      ", 8);
  expect("header past EOF", past, sizeof past, SDE_EFORMAT, "past the end of the file");
  uint8_t huge[16];
  memset(huge, 0xff, 8);
  memcpy(huge + 8, "{}      ", 8);
  expect("header length 2^64-1", huge, sizeof huge, SDE_EFORMAT, "exceeds");
  expect_header("empty object, trailing spaces", "{}      ", 0, NULL);
  expect_header("not an object", "[1, 2]", 0, "JSON object");
  expect_header("broken JSON", "{\"a\": {\"dtype\": \"F32\", ", 0, "header");
  expect_header("unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                "unknown dtype");
  expect_header("shape overflow",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}",
                4, "overflows");
  expect_header("negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                "non-negative");
  expect_header("fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                4, "non-negative");
  expect_header("begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
                "begin");
  expect_header("offsets past data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                8, "past the end of the data buffer");
  expect_header("size != shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                "needs");
  expect_header("overlap",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12, "overlap");
  expect_header("duplicate name",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                8, "twice");
  expect_header("missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
  expect_header("three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
                8, "2 entries");
  expect_header("entry not an object", "{\"a\": 5}", 0, "not a JSON object");
  expect_header("metadata value not a string", "{\"__metadata__\":{\"k\": 1}}", 0, "not a string");
  expect_header("metadata not an object", "{\"__metadata__\": \"x\"}", 0, "not a JSON object");
  expect_header("unknown entry field",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
                "unknown field");
  expect_header("9 dimensions",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                "dimensions");
}

/* network loader: names, shapes and dtypes against the config */
static void test_network_checks(void) {
  sde_ncsnpp_config c;
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  shrink_config(&c, 8, 8);
  c.num_channels = 1;
  sde_net_param *p;
  int np;
  if (!TAP_CHECK(sde_ncsnpp_param_list(&c, &p, &np) == 0, "small config plans")) return;
  int64_t total = p[np - 1].offset + p[np - 1].numel;
  float *w = malloc(sizeof(float) * (size_t)total);
  for (int64_t i = 0; i < total; i++) w[i] = 0.01f * (float)((i * 7919) % 101 - 50);
  sde_st_entry *e = calloc((size_t)np + 1, sizeof *e);
  for (int i = 0; i < np; i++) {
    e[i].name = p[i].name;
    e[i].ndim = p[i].ndim;
    for (int d = 0; d < p[i].ndim; d++) e[i].shape[d] = p[i].shape[d];
    e[i].data = w + p[i].offset;
  }
  char *json = sde_ncsnpp_config_to_json(&c);
  const char *meta[] = {"scoresde", json};
  uint8_t *bytes;
  size_t len;
  sde_safetensors *st;
  sde_model *m;
  int rc;
#define TRY(what, n_entries, n_meta, needle)                                                     \
  do {                                                                                           \
    m = NULL;                                                                                    \
    rc = sde_st_serialize(e, n_entries, meta, n_meta, &bytes, &len);                             \
    if (!rc) rc = sde_st_open_memory(bytes, len, &st);                                           \
    if (!rc) {                                                                                   \
      rc = sde_network_from_safetensors(st, &m);                                                 \
      sde_st_close(st);                                                                          \
    }                                                                                            \
    if (needle) TAP_CHECK(rc != 0 && strstr(sde_errmsg(), needle ? needle : ""), "%s: %s", what, \
                          sde_errmsg());                                                         \
    else TAP_CHECK(rc == 0, "%s%s%s", what, rc ? ": " : "", rc ? sde_errmsg() : "");             \
    sde_model_free(m);                                                                           \
    free(bytes);                                                                                 \
  } while (0)
  TRY("complete small network loads", np, 1, (const char *)NULL);
  TRY("missing last tensor", np - 1, 1, "missing tensor 'all_modules.");
  TRY("no config in metadata", np, 0, "no network configuration");
  e[5].shape[0] += 1;
  TRY("wrong shape", np, 1, "has shape");
  e[5].shape[0] -= 1;
  const char *saved = e[3].name;
  e[3].name = "all_modules.999.weight";
  TRY("renamed tensor", np, 1, "missing tensor");
  e[3].name = saved;
  e[np].name = "extra.tensor";
  e[np].ndim = 1;
  e[np].shape[0] = 1;
  e[np].data = w;
  TRY("extra tensor", np + 1, 1, "unexpected tensor 'extra.tensor'");
  w[10] = NAN;
  TRY("NaN parameter", np, 1, "not finite");
  w[10] = 0;
  free(json);
  c.progressive = SDE_PROG_INPUT_SKIP;
  json = sde_ncsnpp_config_to_json(&c);
  meta[1] = json;
  TRY("invalid config value", np, 1, "progressive");
  free(json);
  meta[1] = "{\"nf\": 8, \"resblock_type\": \"resnet\"}";
  TRY("unknown resblock type", np, 1, "resblock_type");
  meta[1] = "{\"nf\": 8, \"fir\": true, \"fir_kernel\": [1, 2, 1]}";
  TRY("unsupported FIR kernel", np, 1, "fir_kernel");
  meta[1] = "not json";
  TRY("metadata config not JSON", np, 1, "scoresde");
#undef TRY
  free(e);
  free(w);
  free(p);
}

int main(void) {
  test_round_trip();
  test_widening();
  test_malformed();
  test_network_checks();
  return tap_done();
}
