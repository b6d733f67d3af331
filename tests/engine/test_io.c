/* I/O module: JSON parser/writer, .npy arrays, PNG images, and robustness against
 * malformed files (every failure must come with a message, never a crash). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scoresde/scoresde.h"
#include "tap.h"

// ----------------------------------------------------------------------------
// temp files

static char tmp_dir[256];

/* Path of `name` inside the temp dir (rotating static buffers: several may be live). */
static const char *tpath(const char *name) {
  static char bufs[8][512];
  static int next = 0;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", tmp_dir, name);
  return b;
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    TAP_CHECK(0, "cannot create %s", path);
    return;
  }
  if (len) fwrite(data, 1, len, f);
  fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void remove_tree(const char *path) {
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char child[1024];
      snprintf(child, sizeof child, "%s/%s", path, e->d_name);
      remove_tree(child);
    }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* The error message after a failure, "ok" after a success (diagnostics only). */
static const char *why(int rc) { return rc ? sde_errmsg() : "ok"; }

static int msg_has(const char *needle) { return strstr(sde_errmsg(), needle) != NULL; }
static void clear_error(void) { sde_fail(SDE_OK, "%s", ""); }

/* Deterministic xorshift64 for the fuzz loops. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

// ----------------------------------------------------------------------------
// JSON

static void test_json_valid(void) {
  const char *doc =
      " {\"a\": [1, -0.5e-3, 2.5E+2, 0, -0, 1e-400],\n"
      "  \"b\": {\"c\": {\"d\": [true, false, null, [], {}]}},\n"
      "  \"s\": \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0000x\",\n"
      "  \"utf8\": \"h\xc3\xa9llo \xe2\x82\xac\", \"a\": 7} ";
  sde_json *v = sde_json_parse(doc, strlen(doc));
  TAP_CHECK(v != NULL, "valid document parses (%s)", why(!v));
  if (!v) return;
  TAP_CHECK(v->type == SDE_JSON_OBJECT && v->count == 5, "object with 5 members");
  const sde_json *a = sde_json_get(v, "a");
  TAP_CHECK(a && a->type == SDE_JSON_ARRAY && a->count == 6, "first 'a' wins, 6 numbers");
  double nums[8];
  size_t n = 0;
  TAP_CHECK(sde_json_numbers(a, "a", nums, 8, &n) == 0 && n == 6, "numbers() reads the array");
  TAP_CHECK(nums[0] == 1 && nums[1] == -0.5e-3 && nums[2] == 250 && nums[3] == 0, "number values");
  TAP_CHECK(nums[4] == 0 && signbit(nums[4]) && nums[5] == 0, "-0 keeps its sign, 1e-400 -> 0");
  const sde_json *d = sde_json_get(sde_json_get(sde_json_get(v, "b"), "c"), "d");
  TAP_CHECK(d && d->count == 5, "nested lookup");
  TAP_CHECK(sde_json_at(d, 0)->type == SDE_JSON_BOOL && sde_json_at(d, 0)->boolean == 1 &&
                sde_json_at(d, 1)->boolean == 0 && sde_json_at(d, 2)->type == SDE_JSON_NULL,
            "true, false, null");
  TAP_CHECK(sde_json_at(d, 3)->type == SDE_JSON_ARRAY && sde_json_at(d, 3)->count == 0 &&
                sde_json_at(d, 4)->type == SDE_JSON_OBJECT && sde_json_at(d, 4)->count == 0,
            "empty containers");
  TAP_CHECK(sde_json_at(d, 5) == NULL && sde_json_get(d, "x") == NULL, "out-of-range lookups");
  const sde_json *s = sde_json_get(v, "s");
  const char want[] = "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\0x";
  TAP_CHECK(s && s->string_len == sizeof want - 1 && !memcmp(s->string, want, sizeof want),
            "escapes, \\u00e9, surrogate pair and \\u0000 decode to UTF-8 (len %zu)",
            s ? s->string_len : 0);
  const char *u = NULL;
  TAP_CHECK(sde_json_opt_str(v, "utf8", &u) == 0 && u && !strcmp(u, "h\xc3\xa9llo \xe2\x82\xac"),
            "raw UTF-8 passes through");
  sde_json_free(v);
}

static void test_json_depth(void) {
  char buf[5100];
  for (int depth = 64; depth <= 65; depth++) {
    memset(buf, '[', (size_t)depth);
    memset(buf + depth, ']', (size_t)depth);
    sde_json *v = sde_json_parse(buf, 2 * (size_t)depth);
    TAP_CHECK((v != NULL) == (depth == 64), "depth %d %s", depth, depth == 64 ? "accepted" : "rejected");
    sde_json_free(v);
  }
  memset(buf, '[', 1000);
  sde_json *v = sde_json_parse(buf, 1000);
  TAP_CHECK(!v && msg_has("nesting") && msg_has("at byte 64"), "1000-deep bomb rejected: %s",
            sde_errmsg());
  memset(buf, '{', 1);
  for (int i = 0; i < 1000; i++) memcpy(buf + 1 + 5 * i, "\"a\":{", 5);
  v = sde_json_parse(buf, 5001);
  TAP_CHECK(!v && msg_has("nesting"), "1000-deep object bomb rejected: %s", sde_errmsg());
}

static void test_json_errors(void) {
  static const struct { const char *text; const char *needle; } cases[] = {
      {"[1,2,]", "trailing comma"},
      {"{\"a\":1,}", "trailing comma"},
      {"\"abc", "unterminated string"},
      {"\"abc\\", "unterminated string"},
      {"\"a\\x\"", "invalid escape"},
      {"\"\\u12G4\"", "\\u escape"},
      {"\"\\ud800\"", "surrogate"},
      {"\"\\ud800\\u0041\"", "surrogate"},
      {"\"\\udc00\"", "surrogate"},
      {"01", "leading zeros"},
      {"-012", "leading zeros"},
      {"NaN", "unexpected character 'N'"},
      {"Infinity", "unexpected character 'I'"},
      {"-Infinity", "expected a digit"},
      {"", "empty document"},
      {"  \n ", "empty document"},
      {"{\"a\":1} x", "trailing characters"},
      {"[1] [2]", "trailing characters"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\":1 \"b\":2}", "expected ',' or '}' at byte 7"},
      {"{\"a\" 1}", "expected ':'"},
      {"{1:2}", "string key"},
      {"\"a\tb\"", "control character"},
      {"1.", "digit after '.'"},
      {".5", "unexpected character '.'"},
      {"+1", "unexpected character '+'"},
      {"1e", "exponent"},
      {"1e+", "exponent"},
      {"-", "expected a digit"},
      {"tru", "expected a value"},
      {"nul", "expected a value"},
      {"[", "end of input"},
      {"{", "end of input"},
      {"[1,", "end of input"},
      {"\"\xff\"", "invalid UTF-8"},
      {"\"\xc0\xaf\"", "invalid UTF-8"},
      {"\"\xed\xa0\x80\"", "invalid UTF-8"},
      {"1e999", "out of range"},
      {"'a'", "unexpected character"},
      {"[1,,2]", "expected a value"},
      {"\xef\xbb\xbf{}", "unexpected byte 0xef"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    clear_error();
    sde_json *v = sde_json_parse(cases[i].text, strlen(cases[i].text));
    char shown[32]; // the input with control and non-ASCII bytes as '?' (one TAP line)
    snprintf(shown, sizeof shown, "%s", cases[i].text);
    for (char *q = shown; *q; q++)
      if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f) *q = '?';
    TAP_CHECK(!v && msg_has(cases[i].needle) && msg_has("at byte ") && msg_has("JSON: "),
              "reject %-14s -> %s", shown, sde_errmsg());
    sde_json_free(v);
  }
  sde_json *v = sde_json_parse("[1]\0", 4);
  TAP_CHECK(!v && msg_has("trailing"), "NUL after the document is trailing garbage");
  v = sde_json_parse(NULL, 0);
  TAP_CHECK(!v && msg_has("empty"), "NULL text");
}

static void test_json_getters(void) {
  const char *doc = "{\"n\": 2.5, \"i\": 42, \"neg\": -3, \"big\": 1e30, \"b\": true, \"s\": \"x\","
                    " \"w\": [1, 2, \"3\"], \"arr\": [1, 2, 3]}";
  sde_json *v = sde_json_parse(doc, strlen(doc));
  TAP_CHECK(v != NULL, "getter document parses");
  if (!v) return;
  double x = 0;
  int64_t i = 0;
  int b = 0;
  const char *s = NULL;
  TAP_CHECK(sde_json_number(sde_json_get(v, "n"), "cfg.n", &x) == 0 && x == 2.5, "number");
  TAP_CHECK(sde_json_number(sde_json_get(v, "s"), "cfg.s", &x) == SDE_EFORMAT &&
                msg_has("cfg.s: expected a number"), "number of a string: %s", sde_errmsg());
  TAP_CHECK(sde_json_number(NULL, "cfg.missing", &x) == SDE_EFORMAT && msg_has("cfg.missing"),
            "missing number names it: %s", sde_errmsg());
  TAP_CHECK(sde_json_int(sde_json_get(v, "i"), "cfg.i", 0, 100, &i) == 0 && i == 42, "int");
  TAP_CHECK(sde_json_int(sde_json_get(v, "neg"), "cfg.neg", 0, 100, &i) == SDE_EFORMAT &&
                msg_has("cfg.neg") && msg_has("out of range"), "int range: %s", sde_errmsg());
  TAP_CHECK(sde_json_int(sde_json_get(v, "n"), "cfg.n", 0, 100, &i) == SDE_EFORMAT &&
                msg_has("expected an integer"), "int of 2.5: %s", sde_errmsg());
  TAP_CHECK(sde_json_int(sde_json_get(v, "big"), "cfg.big", INT64_MIN, INT64_MAX, &i) ==
                SDE_EFORMAT, "int of 1e30 rejected: %s", sde_errmsg());
  TAP_CHECK(sde_json_bool(sde_json_get(v, "b"), "cfg.b", &b) == 0 && b == 1, "bool");
  TAP_CHECK(sde_json_bool(sde_json_get(v, "i"), "cfg.i", &b) == SDE_EFORMAT &&
                msg_has("cfg.i: expected true or false"), "bool of number: %s", sde_errmsg());
  TAP_CHECK(sde_json_str(sde_json_get(v, "s"), "cfg.s", &s) == 0 && !strcmp(s, "x"), "str");
  TAP_CHECK(sde_json_str(sde_json_get(v, "b"), "cfg.b", &s) == SDE_EFORMAT &&
                msg_has("cfg.b: expected a string"), "str of bool: %s", sde_errmsg());
  double w[4];
  size_t n = 0;
  TAP_CHECK(sde_json_numbers(sde_json_get(v, "w"), "model.weights", w, 4, &n) == SDE_EFORMAT &&
                msg_has("model.weights: expected an array of numbers"), "mixed array: %s",
            sde_errmsg());
  TAP_CHECK(sde_json_numbers(sde_json_get(v, "n"), "model.weights", w, 4, &n) == SDE_EFORMAT &&
                msg_has("model.weights: expected an array of numbers"), "not an array: %s",
            sde_errmsg());
  TAP_CHECK(sde_json_numbers(sde_json_get(v, "arr"), "model.weights", w, 2, &n) == SDE_EFORMAT &&
                msg_has("too many"), "too many values: %s", sde_errmsg());
  x = -1, i = -1, b = -1, s = "untouched";
  TAP_CHECK(sde_json_opt_number(v, "nope", &x) == 0 && x == -1 &&
                sde_json_opt_int(v, "nope", 0, 1, &i) == 0 && i == -1 &&
                sde_json_opt_bool(v, "nope", &b) == 0 && b == -1 &&
                sde_json_opt_str(v, "nope", &s) == 0 && !strcmp(s, "untouched"),
            "absent optional members leave outputs untouched");
  TAP_CHECK(sde_json_opt_number(v, "n", &x) == 0 && x == 2.5 &&
                sde_json_opt_int(v, "i", 0, 50, &i) == 0 && i == 42 &&
                sde_json_opt_bool(v, "b", &b) == 0 && b == 1,
            "present optional members are read");
  TAP_CHECK(sde_json_opt_int(v, "i", 0, 10, &i) == SDE_EFORMAT && msg_has("i: 42 is out of range"),
            "optional member still validated: %s", sde_errmsg());
  TAP_CHECK(sde_json_opt_bool(v, "s", &b) == SDE_EFORMAT && msg_has("s: expected true or false"),
            "optional member type checked: %s", sde_errmsg());
  sde_json_free(v);
}

static void test_json_dump(void) {
  const char *doc = "{ \"a\" : [1, -0.0005, 250, 0.1, 1e300, -0, 0.30000000000000004],"
                    " \"s\": \"\\\"\\n\\u0001\\u00e9\\u0000z\", \"o\": {\"t\": true, \"f\": false,"
                    " \"z\": null}, \"e\": [], \"eo\": {} }";
  sde_json *v = sde_json_parse(doc, strlen(doc));
  char *out = v ? sde_json_dump(v) : NULL;
  const char *want = "{\"a\":[1,-0.0005,250,0.1,1e+300,-0,0.30000000000000004],"
                     "\"s\":\"\\\"\\n\\u0001\xc3\xa9\\u0000z\",\"o\":{\"t\":true,\"f\":false,"
                     "\"z\":null},\"e\":[],\"eo\":{}}";
  TAP_CHECK(out && !strcmp(out, want), "compact dump: %s", out ? out : "(null)");
  sde_json *again = out ? sde_json_parse(out, strlen(out)) : NULL;
  char *out2 = again ? sde_json_dump(again) : NULL;
  TAP_CHECK(out2 && !strcmp(out, out2), "dump -> parse -> dump is stable");
  const sde_json *a1 = sde_json_get(v, "a"), *a2 = sde_json_get(again, "a");
  int same = a1 && a2 && a1->count == a2->count;
  for (size_t i = 0; same && i < a1->count; i++)
    same = a1->items[i]->number == a2->items[i]->number;
  TAP_CHECK(same, "numbers round-trip exactly");
  free(out);
  free(out2);
  sde_json_free(again);
  sde_json_free(v);
}

/* A large array and object parse in linear time (safetensors headers are large). */
static void test_json_large(void) {
  size_t members = 100000;
  size_t cap = members * 40 + 16, n = 0;
  char *buf = malloc(cap);
  buf[n++] = '{';
  for (size_t i = 0; i < members; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s\"tensor.%zu\":[%zu,0.5,true]", i ? "," : "", i, i);
  buf[n++] = '}';
  double t0 = sde_now();
  sde_json *v = sde_json_parse(buf, n);
  double dt = sde_now() - t0;
  TAP_CHECK(v && v->count == members, "%zu members, %.1f MB parsed", members, n / 1e6);
  TAP_CHECK(dt < 5.0, "parse took %.3f s", dt);
  const sde_json *last = sde_json_get(v, "tensor.99999");
  TAP_CHECK(last && last->count == 3 && last->items[0]->number == 99999, "last member found");
  sde_json_free(v);
  n = 0;
  buf[n++] = '[';
  for (size_t i = 0; i < 300000; i++) {
    if (i) buf[n++] = ',';
    buf[n++] = '7';
  }
  buf[n++] = ']';
  v = sde_json_parse(buf, n);
  TAP_CHECK(v && v->count == 300000, "300k-element array");
  sde_json_free(v);
  free(buf);
}

static void test_json_file(void) {
  write_text(tpath("doc.json"), "{\"x\": [1, 2]}");
  sde_json *v = sde_json_parse_file(tpath("doc.json"), 1 << 20);
  TAP_CHECK(v && sde_json_get(v, "x") && sde_json_get(v, "x")->count == 2, "parse_file");
  sde_json_free(v);
  v = sde_json_parse_file(tpath("doc.json"), 4);
  TAP_CHECK(!v && msg_has("limit"), "parse_file over max_bytes: %s", sde_errmsg());
  v = sde_json_parse_file(tpath("missing.json"), 1 << 20);
  TAP_CHECK(!v && msg_has("missing.json"), "missing file: %s", sde_errmsg());
  write_text(tpath("bad.json"), "{\"x\": [1, 2,]}");
  v = sde_json_parse_file(tpath("bad.json"), 1 << 20);
  TAP_CHECK(!v && msg_has("bad.json: JSON: trailing comma in array at byte 12"),
            "file errors name file and byte: %s", sde_errmsg());
}

// ----------------------------------------------------------------------------
// whole files and suffixes

static void test_read_file(void) {
  write_text(tpath("hello.txt"), "hello world");
  char *data = NULL;
  size_t len = 0;
  TAP_CHECK(sde_read_file(tpath("hello.txt"), 100, &data, &len) == 0 && len == 11 &&
                !strcmp(data, "hello world"), "read_file reads and NUL-terminates");
  free(data);
  TAP_CHECK(sde_read_file(tpath("hello.txt"), 11, &data, &len) == 0 && len == 11,
            "exactly max_bytes is fine");
  free(data);
  TAP_CHECK(sde_read_file(tpath("hello.txt"), 10, &data, &len) != 0 && !data &&
                msg_has("hello.txt") && msg_has("limit of 10 bytes"), "over max_bytes: %s",
            sde_errmsg());
  write_bytes(tpath("empty.bin"), "", 0);
  TAP_CHECK(sde_read_file(tpath("empty.bin"), 10, &data, &len) == 0 && len == 0 && data &&
                data[0] == 0, "empty file");
  free(data);
  TAP_CHECK(sde_read_file(tpath("nope.txt"), 10, &data, &len) == SDE_EIO && msg_has("nope.txt"),
            "missing file: %s", sde_errmsg());
  TAP_CHECK(sde_read_file(tmp_dir, 10, &data, &len) == SDE_EIO && msg_has("directory"),
            "directory: %s", sde_errmsg());
  TAP_CHECK(sde_has_suffix("a/b.PNG", ".png") && sde_has_suffix("x.npy", ".npy") &&
                !sde_has_suffix("png", ".png") && !sde_has_suffix("a.png.txt", ".png") &&
                sde_has_suffix("a", "") && !sde_has_suffix(NULL, ".png"),
            "has_suffix");
}

// ----------------------------------------------------------------------------
// .npy

/* Writes a .npy file by hand: magic, version, header (padded to 64), data bytes. */
static void write_npy_raw(const char *path, int major, const char *dict, const void *data,
                          size_t data_len) {
  unsigned char buf[4096];
  size_t pre = major == 1 ? 10 : 12, dlen = strlen(dict);
  size_t hlen = (pre + dlen + 1 + 63) / 64 * 64 - pre;
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)major;
  buf[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
  memcpy(buf + pre, dict, dlen);
  memset(buf + pre + dlen, ' ', hlen - dlen - 1);
  buf[pre + hlen - 1] = '\n';
  memcpy(buf + pre + hlen, data, data_len);
  write_bytes(path, buf, pre + hlen + data_len);
}

static void test_npy_roundtrip(void) {
  static const int64_t shapes[][SDE_NPY_MAX_DIMS] = {
      {0}, {5}, {2, 3}, {2, 3, 4}, {1, 1, 1, 1, 1, 1, 1, 3}, {0, 3},
  };
  static const int ndims[] = {0, 1, 2, 3, 8, 2};
  for (int k = 0; k < 6; k++) {
    size_t count = 1;
    for (int d = 0; d < ndims[k]; d++) count *= (size_t)shapes[k][d];
    float *x = malloc((count + 1) * sizeof(float));
    double *xd = malloc((count + 1) * sizeof(double));
    for (size_t i = 0; i < count; i++) {
      x[i] = (float)i * 0.37f - 1.5f;
      xd[i] = 0.1 * (double)i - 1e-9;
    }
    float *y = NULL;
    int ndim = -1;
    int64_t shape[SDE_NPY_MAX_DIMS];
    int rc = sde_npy_write(tpath("rt.npy"), x, ndims[k], shapes[k]);
    rc = rc ? rc : sde_npy_read(tpath("rt.npy"), &y, &ndim, shape);
    int ok = rc == 0 && ndim == ndims[k];
    for (int d = 0; ok && d < ndim; d++) ok = shape[d] == shapes[k][d];
    for (size_t i = 0; ok && i < count; i++) ok = y[i] == x[i];
    TAP_CHECK(ok, "f32 round trip, ndim %d, %zu elements (%s)", ndims[k], count, why(rc));
    free(y);
    y = NULL;
    rc = sde_npy_write_f64(tpath("rt64.npy"), xd, ndims[k], shapes[k]);
    rc = rc ? rc : sde_npy_read(tpath("rt64.npy"), &y, &ndim, shape);
    ok = rc == 0 && ndim == ndims[k];
    for (size_t i = 0; ok && i < count; i++) ok = y[i] == (float)xd[i];
    TAP_CHECK(ok, "f64 round trip converts to float, ndim %d (%s)", ndims[k], why(rc));
    free(y);
    free(x);
    free(xd);
  }
  char *raw = NULL;
  size_t len = 0;
  sde_read_file(tpath("rt.npy"), 1 << 20, &raw, &len);
  size_t hlen = raw && len >= 10 ? (size_t)(unsigned char)raw[8] | (size_t)(unsigned char)raw[9] << 8 : 0;
  TAP_CHECK(raw && raw[6] == 1 && raw[7] == 0 && (10 + hlen) % 64 == 0 && raw[9 + hlen] == '\n' &&
                strstr(raw + 10, "'descr': '<f4'") && strstr(raw + 10, "'shape': (0, 3)"),
            "written header: version 1.0, 64-aligned, numpy dict");
  free(raw);
  int64_t shape1[1] = {3};
  float three[3] = {1, 2, 3};
  TAP_CHECK(sde_npy_write(tpath("x.npy"), three, 9, shape1) == SDE_EINVAL, "ndim 9 rejected");
  int64_t neg[1] = {-1};
  TAP_CHECK(sde_npy_write(tpath("x.npy"), three, 1, neg) == SDE_EINVAL, "negative dim rejected");
  TAP_CHECK(sde_npy_write("/nonexistent-dir/x.npy", three, 1, shape1) == SDE_EIO &&
                msg_has("/nonexistent-dir/x.npy"), "unwritable path: %s", sde_errmsg());
}

static void test_npy_dtypes(void) {
  unsigned char u1[6] = {0, 1, 2, 127, 128, 255};
  write_npy_raw(tpath("u1.npy"), 1,
                "{'shape': (2, 3), 'fortran_order': False, 'descr': '|u1', }", u1, 6);
  float *y = NULL;
  int ndim = 0;
  int64_t shape[SDE_NPY_MAX_DIMS];
  int rc = sde_npy_read(tpath("u1.npy"), &y, &ndim, shape);
  TAP_CHECK(rc == 0 && ndim == 2 && shape[0] == 2 && shape[1] == 3 && y[0] == 0 && y[3] == 127 &&
                y[5] == 255, "|u1 with keys in another order (%s)", why(rc));
  free(y);
  int32_t i4[3] = {-7, 0, 123456};
  write_npy_raw(tpath("i4.npy"), 2, "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": (3,)}",
                i4, sizeof i4);
  rc = sde_npy_read(tpath("i4.npy"), &y, &ndim, shape);
  TAP_CHECK(rc == 0 && ndim == 1 && shape[0] == 3 && y[0] == -7 && y[2] == 123456,
            "<i4, version 2.0, double quotes (%s)", why(rc));
  free(y);
  int64_t i8[2] = {-5000000000LL, 42};
  write_npy_raw(tpath("i8.npy"), 3, "{'descr':'<i8','fortran_order':False,'shape':(2L,)}", i8,
                sizeof i8);
  rc = sde_npy_read(tpath("i8.npy"), &y, &ndim, shape);
  TAP_CHECK(rc == 0 && ndim == 1 && y[0] == -5e9f && y[1] == 42, "<i8, version 3.0, 2L (%s)",
            why(rc));
  free(y);
}

/* Expects sde_npy_read of `name` to fail with SDE_EFORMAT naming the file and `needle`. */
static void expect_npy_error(const char *name, const char *needle, const char *what) {
  float *y = NULL;
  int ndim = 0;
  int64_t shape[SDE_NPY_MAX_DIMS];
  clear_error();
  int rc = sde_npy_read(tpath(name), &y, &ndim, shape);
  TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has(name) && msg_has(needle), "npy rejects %s: %s",
            what, sde_errmsg());
  free(y);
}

static void test_npy_errors(void) {
  float data[6] = {0};
  write_bytes(tpath("magic.npy"), "\x93NUMPX\x01\x00\x10\x00{}", 12);
  expect_npy_error("magic.npy", "bad magic", "bad magic");
  write_bytes(tpath("short.npy"), "\x93NUM", 4);
  expect_npy_error("short.npy", "bad magic", "a 4-byte file");
  write_bytes(tpath("hdr.npy"), "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'", 24);
  expect_npy_error("hdr.npy", "runs past the end", "header length past EOF");
  write_bytes(tpath("hdr2.npy"), "\x93NUMPY\x02\x00\x10", 9);
  expect_npy_error("hdr2.npy", "bad magic", "truncated preamble");
  write_bytes(tpath("ver.npy"), "\x93NUMPY\x04\x00\x10\x00{}", 12);
  expect_npy_error("ver.npy", "version 4.0", "unknown version");
  write_npy_raw(tpath("trunc.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                data, 20);
  expect_npy_error("trunc.npy", "truncated", "truncated data");
  write_npy_raw(tpath("fortran.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                data, 24);
  expect_npy_error("fortran.npy", "fortran_order", "fortran order");
  write_npy_raw(tpath("be.npy"), 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
                data, 24);
  expect_npy_error("be.npy", "big-endian", "big-endian");
  write_npy_raw(tpath("c8.npy"), 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }",
                data, 24);
  expect_npy_error("c8.npy", "unsupported dtype '<c8'", "complex dtype");
  write_npy_raw(tpath("struct.npy"), 1,
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", data, 12);
  expect_npy_error("struct.npy", "structured", "structured dtype");
  write_npy_raw(tpath("huge.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999), }",
                data, 24);
  expect_npy_error("huge.npy", "too large", "element-count overflow");
  write_npy_raw(tpath("huge2.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                data, 24);
  expect_npy_error("huge2.npy", "overflows", "64-bit dimension overflow");
  write_npy_raw(tpath("big.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000,), }",
                data, 24);
  expect_npy_error("big.npy", "truncated", "shape far larger than the file");
  write_npy_raw(tpath("neg.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                data, 24);
  expect_npy_error("neg.npy", "negative", "negative dimension");
  write_npy_raw(tpath("missing.npy"), 1, "{'descr': '<f4', 'shape': (3,), }", data, 12);
  expect_npy_error("missing.npy", "missing key 'fortran_order'", "missing key");
  write_npy_raw(tpath("extra.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}", data, 12);
  expect_npy_error("extra.npy", "unexpected key 'x'", "unknown key");
  write_npy_raw(tpath("dup.npy"), 1,
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", data, 12);
  expect_npy_error("dup.npy", "repeated key", "repeated key");
  write_npy_raw(tpath("tail.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} x",
                data, 12);
  expect_npy_error("tail.npy", "after the dict", "text after the dict");
  write_npy_raw(tpath("dims.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", data, 12);
  expect_npy_error("dims.npy", "more than 8 dimensions", "9 dimensions");
  write_npy_raw(tpath("bool.npy"), 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}", data,
                12);
  expect_npy_error("bool.npy", "True or False", "non-bool fortran_order");
  float *y = NULL;
  int ndim;
  int64_t shape[SDE_NPY_MAX_DIMS];
  TAP_CHECK(sde_npy_read(tpath("nothere.npy"), &y, &ndim, shape) == SDE_EIO && msg_has("nothere.npy"),
            "missing .npy: %s", sde_errmsg());
}

// ----------------------------------------------------------------------------
// PNG (hand-made files use stored deflate blocks, so the test needs no zlib)

static uint32_t crc32_of(const unsigned char *p, size_t n, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static void put_u32be(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
  b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

static void write_chunk(FILE *f, const char *type, const unsigned char *data, size_t n) {
  unsigned char len[4], crc[4];
  put_u32be(len, (uint32_t)n);
  fwrite(len, 1, 4, f);
  unsigned char *buf = malloc(n + 4);
  memcpy(buf, type, 4);
  if (n) memcpy(buf + 4, data, n);
  fwrite(buf, 1, n + 4, f);
  put_u32be(crc, crc32_of(buf, n + 4, 0));
  fwrite(crc, 1, 4, f);
  free(buf);
}

/* PNG with raw scanlines (each with its filter byte 0) as one stored zlib stream. */
static void write_raw_png(const char *path, uint32_t w, uint32_t h, int depth, int color,
                          const unsigned char *scan, size_t scan_len, const unsigned char *plte,
                          size_t plte_len, const unsigned char *trns, size_t trns_len) {
  FILE *f = fopen(path, "wb");
  fwrite("\x89PNG\r\n\x1a\n", 1, 8, f);
  unsigned char ihdr[13] = {0};
  put_u32be(ihdr, w);
  put_u32be(ihdr + 4, h);
  ihdr[8] = (unsigned char)depth, ihdr[9] = (unsigned char)color;
  write_chunk(f, "IHDR", ihdr, 13);
  if (plte) write_chunk(f, "PLTE", plte, plte_len);
  if (trns) write_chunk(f, "tRNS", trns, trns_len);
  size_t zlen = 2 + 5 + scan_len + 4; // scan_len < 65536 in these tests
  unsigned char *z = malloc(zlen);
  z[0] = 0x78, z[1] = 0x01, z[2] = 1; // final stored block
  z[3] = (unsigned char)scan_len, z[4] = (unsigned char)(scan_len >> 8);
  z[5] = (unsigned char)~z[3], z[6] = (unsigned char)~z[4];
  memcpy(z + 7, scan, scan_len);
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < scan_len; i++) a = (a + scan[i]) % 65521, b = (b + a) % 65521;
  put_u32be(z + 7 + scan_len, b << 16 | a);
  write_chunk(f, "IDAT", z, zlen);
  write_chunk(f, "IEND", NULL, 0);
  fclose(f);
  free(z);
}

static int read_png(const char *name, int want, float **y, int *c, int *h, int *w) {
  *y = NULL;
  return sde_png_read(tpath(name), want, y, c, h, w);
}

static void test_png_roundtrip(void) {
  const int H = 5, W = 7;
  for (int channels = 1; channels <= 4; channels++) {
    size_t count = (size_t)channels * H * W;
    float *x = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) x[i] = (float)((i * 37) % 256) / 255.0f;
    float *y = NULL;
    int c, h, w;
    int rc = sde_png_write(tpath("rt.png"), x, channels, H, W);
    rc = rc ? rc : read_png("rt.png", channels == 2 ? 4 : 0, &y, &c, &h, &w);
    int expect_c = channels == 2 ? 4 : channels;
    double max_err = 0;
    if (!rc && c == expect_c && h == H && w == W) {
      for (int k = 0; k < channels && channels != 2; k++)
        for (int i = 0; i < H * W; i++) max_err = fmax(max_err, fabs(y[k * H * W + i] - x[k * H * W + i]));
      if (channels == 2) // gray+alpha -> RGBA: R = G = B = gray, A = alpha
        for (int i = 0; i < H * W; i++)
          max_err = fmax(max_err, fmax(fabs(y[2 * H * W + i] - x[i]), fabs(y[3 * H * W + i] - x[H * W + i])));
    } else {
      max_err = 1;
    }
    TAP_CHECK(max_err < 1e-6, "PNG round trip with %d channels exact at k/255 (err %g, %s)",
              channels, max_err, why(rc));
    free(y);
    y = NULL;
    for (size_t i = 0; i < count; i++) x[i] = (float)(next_random() % 100000) / 99999.0f;
    rc = sde_png_write(tpath("rt.png"), x, channels, H, W);
    rc = rc ? rc : read_png("rt.png", 0, &y, &c, &h, &w);
    max_err = 0;
    for (int i = 0; !rc && channels != 2 && i < (int)count; i++)
      max_err = fmax(max_err, fabs(y[i] - x[i]));
    TAP_CHECK(!rc && max_err <= 0.5 / 255 + 1e-6, "arbitrary values within half a step (%g)", max_err);
    free(y);
    free(x);
  }
  float special[4] = {-1.0f, 2.0f, NAN, 0.5f};
  float *y;
  int c, h, w;
  int rc = sde_png_write(tpath("clamp.png"), special, 1, 1, 4);
  rc = rc ? rc : read_png("clamp.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && y[0] == 0 && y[1] == 1 && y[2] == 0 && y[3] == 128 / 255.0f,
            "clamps to [0,1], NaN -> 0, 0.5 rounds to 128");
  if (!rc) free(y);
  TAP_CHECK(sde_png_write(tpath("bad.png"), special, 5, 1, 4) == SDE_EINVAL &&
                sde_png_write(tpath("bad.png"), special, 1, 0, 4) == SDE_EINVAL,
            "bad channels or size rejected");
  TAP_CHECK(sde_png_write("/nonexistent-dir/x.png", special, 1, 1, 4) == SDE_EIO,
            "unwritable path: %s", sde_errmsg());
}

static void test_png_convert(void) {
  float rgba[4 * 2] = {0.2f, 1.0f, /* R */ 0.4f, 0.0f, /* G */ 0.6f, 0.5f, /* B */ 0.8f, 0.4f};
  float *y;
  int c, h, w;
  sde_png_write(tpath("rgba.png"), rgba, 4, 1, 2);
  sde_png_write(tpath("rgb.png"), rgba, 3, 1, 2);
  sde_png_write(tpath("gray.png"), rgba, 1, 1, 2);
  int rc = read_png("rgb.png", 1, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 1 && fabs(y[0] - (51 + 102 + 153) / 765.0) < 1e-6 &&
                fabs(y[1] - (255 + 0 + 128) / 765.0) < 1e-6, "RGB -> gray is the mean");
  if (!rc) free(y);
  rc = read_png("gray.png", 3, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 3 && y[0] == y[2] && y[2] == y[4] && y[1] == y[3] && y[3] == y[5] &&
                fabs(y[0] - 0.2) < 0.5 / 255, "gray -> RGB replicates");
  if (!rc) free(y);
  rc = read_png("gray.png", 4, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 4 && y[6] == 1 && y[7] == 1 && y[0] == y[4], "gray -> RGBA, alpha 1");
  if (!rc) free(y);
  rc = read_png("rgba.png", 3, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 3 && fabs(y[4] - 0.6) < 0.5 / 255, "RGBA -> RGB drops alpha");
  if (!rc) free(y);
  rc = read_png("rgb.png", 4, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 4 && y[6] == 1 && y[7] == 1, "RGB -> RGBA adds alpha 1");
  if (!rc) free(y);
  rc = read_png("rgba.png", 1, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 1 && fabs(y[0] - (51 + 102 + 153) / 765.0) < 1e-6, "RGBA -> gray");
  if (!rc) free(y);
  TAP_CHECK(read_png("rgb.png", 2, &y, &c, &h, &w) == SDE_EINVAL && !y, "want_channels 2 rejected");
}

/* Palette, tRNS, 16-bit, 1-bit and gray+alpha files made by hand. */
static void test_png_formats(void) {
  float *y;
  int c, h, w;
  unsigned char plte[6] = {255, 0, 0, 0, 0, 255}, trns[1] = {0};
  unsigned char pal_scan[2] = {0, 0x40}; // 1 row of 2 pixels at 2 bits: index 1, 0
  write_raw_png(tpath("pal.png"), 2, 1, 2, 3, pal_scan, 2, plte, 6, NULL, 0);
  int rc = read_png("pal.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 3 && w == 2 && y[0] == 0 && y[1] == 1 && y[4] == 1 && y[5] == 0,
            "2-bit palette expands to RGB (%s)", why(rc));
  if (!rc) free(y);
  write_raw_png(tpath("pal_t.png"), 2, 1, 2, 3, pal_scan, 2, plte, 6, trns, 1);
  rc = read_png("pal_t.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 4 && y[6] == 1 && y[7] == 0, "palette + tRNS -> RGBA (%s)", why(rc));
  if (!rc) free(y);
  unsigned char g16[5] = {0, 0xFF, 0xFF, 0x80, 0x80}; // 16-bit gray: 65535, 32896
  write_raw_png(tpath("g16.png"), 2, 1, 16, 0, g16, 5, NULL, 0, NULL, 0);
  rc = read_png("g16.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 1 && y[0] == 1 && y[1] == 128 / 255.0f, "16-bit gray -> 8 bits (%s)",
            why(rc));
  if (!rc) free(y);
  unsigned char g1[2] = {0, 0xA0}; // 1-bit gray: 1 0 1 0
  write_raw_png(tpath("g1.png"), 4, 1, 1, 0, g1, 2, NULL, 0, NULL, 0);
  rc = read_png("g1.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 1 && w == 4 && y[0] == 1 && y[1] == 0 && y[2] == 1 && y[3] == 0,
            "1-bit gray expands (%s)", why(rc));
  if (!rc) free(y);
  unsigned char ga[5] = {0, 10, 20, 30, 40}; // gray+alpha, 2 pixels
  write_raw_png(tpath("ga.png"), 2, 1, 8, 4, ga, 5, NULL, 0, NULL, 0);
  rc = read_png("ga.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 4 && y[0] == 10 / 255.0f && y[2] == 10 / 255.0f &&
                y[4] == 10 / 255.0f && y[6] == 20 / 255.0f && y[7] == 40 / 255.0f,
            "gray+alpha -> RGBA (%s)", why(rc));
  if (!rc) free(y);
  rc = read_png("ga.png", 1, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 1 && y[0] == 10 / 255.0f && y[1] == 30 / 255.0f, "gray+alpha -> gray");
  if (!rc) free(y);
  unsigned char tiny[2] = {0, 0};
  write_raw_png(tpath("huge.png"), 20000, 20000, 8, 0, tiny, 2, NULL, 0, NULL, 0);
  rc = read_png("huge.png", 0, &y, &c, &h, &w);
  TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("huge.png") && msg_has("limit"),
            "20000x20000 refused: %s", sde_errmsg());
  write_raw_png(tpath("short.png"), 2, 2, 8, 0, tiny, 2, NULL, 0, NULL, 0);
  rc = read_png("short.png", 0, &y, &c, &h, &w);
  TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("short.png"), "too little image data: %s",
            sde_errmsg());
}

static void test_png_bad_files(void) {
  float img[3 * 16 * 16];
  for (int i = 0; i < 3 * 256; i++) img[i] = (float)(next_random() % 256) / 255.0f;
  sde_png_write(tpath("good.png"), img, 3, 16, 16);
  char *raw = NULL;
  size_t len = 0;
  sde_read_file(tpath("good.png"), 1 << 20, &raw, &len);
  float *y;
  int c, h, w;
  size_t cuts[] = {len / 2, len - 13, 40, 33, 20, 8, 3, 0};
  for (size_t k = 0; raw && k < sizeof cuts / sizeof cuts[0]; k++) {
    write_bytes(tpath("cut.png"), raw, cuts[k]);
    clear_error();
    int rc = read_png("cut.png", 0, &y, &c, &h, &w);
    TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("cut.png") &&
                  (msg_has("truncated") || msg_has("not a PNG")),
              "PNG truncated to %zu of %zu bytes: %s", cuts[k], len, sde_errmsg());
  }
  if (raw) {
    raw[len / 2] ^= 0x55; // inside IDAT: CRC mismatch
    write_bytes(tpath("crc.png"), raw, len);
    int rc = read_png("crc.png", 0, &y, &c, &h, &w);
    TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("crc.png"), "corrupted PNG: %s", sde_errmsg());
  }
  free(raw);
  write_text(tpath("text.png"), "this is not a png file at all");
  TAP_CHECK(read_png("text.png", 0, &y, &c, &h, &w) == SDE_EFORMAT && msg_has("text.png: not a PNG"),
            "non-PNG: %s", sde_errmsg());
  TAP_CHECK(read_png("absent.png", 0, &y, &c, &h, &w) == SDE_EIO && msg_has("absent.png"),
            "missing PNG: %s", sde_errmsg());
}

static void test_png_grid(void) {
  const int n = 5, C = 3, H = 4, W = 5, pad = 2;
  float *images = malloc(sizeof(float) * n * C * H * W);
  for (int k = 0; k < n; k++)
    for (int i = 0; i < C * H * W; i++) images[k * C * H * W + i] = (float)(k * 40) / 255.0f;
  float *y;
  int c, h, w;
  int rc = sde_png_write_grid(tpath("grid.png"), images, n, C, H, W, 0, pad);
  rc = rc ? rc : read_png("grid.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && c == 3 && w == 3 * W + 2 * pad && h == 2 * H + pad, "grid of 5: 3x2 tiles, %dx%d",
            w, h);
  if (!rc) {
    // tile k at row k/3, col k%3; (y, x) of its top-left
    int ok = 1;
    for (int k = 0; k < n; k++) {
      int y0 = (k / 3) * (H + pad), x0 = (k % 3) * (W + pad);
      ok &= y[(y0 + 1) * w + x0 + 2] == (float)(k * 40) / 255.0f;
    }
    TAP_CHECK(ok, "tiles are placed in row-major order");
    TAP_CHECK(y[0 * w + W] == 1 && y[H * w + 0] == 1 && y[2 * h * w + (H + pad) * w + w - 1] == 1,
              "padding and the empty slot are white");
    free(y);
  }
  rc = sde_png_write_grid(tpath("grid2.png"), images, n, C, H, W, 2, 0);
  rc = rc ? rc : read_png("grid2.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && w == 2 * W && h == 3 * H, "cols=2, pad=0: %dx%d", w, h);
  if (!rc) free(y);
  rc = sde_png_write_grid(tpath("grid1.png"), images, 1, C, H, W, 0, 3);
  rc = rc ? rc : read_png("grid1.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && w == W && h == H, "grid of one image is the image");
  if (!rc) free(y);
  rc = sde_png_write_grid(tpath("grid4.png"), images, 4, C, H, W, 0, 1);
  rc = rc ? rc : read_png("grid4.png", 0, &y, &c, &h, &w);
  TAP_CHECK(!rc && w == 2 * W + 1 && h == 2 * H + 1, "grid of 4 is 2x2");
  if (!rc) free(y);
  TAP_CHECK(sde_png_write_grid(tpath("g.png"), images, 0, C, H, W, 0, 1) == SDE_EINVAL,
            "n = 0 rejected");
  free(images);
}

static void write_solid_png(const char *path, float value, int channels, int h, int w) {
  float *x = malloc(sizeof(float) * channels * h * w);
  for (int i = 0; i < channels * h * w; i++) x[i] = value;
  sde_png_write(path, x, channels, h, w);
  free(x);
}

static void test_png_dir(void) {
  mkdir(tpath("imgs"), 0700);
  mkdir(tpath("imgs/sub.png"), 0700); // a folder with a .png name is skipped
  write_solid_png(tpath("imgs/b.png"), 2 / 255.0f, 3, 3, 4);
  write_solid_png(tpath("imgs/a.png"), 1 / 255.0f, 1, 3, 4); // gray: converted to RGB
  write_solid_png(tpath("imgs/C.PNG"), 3 / 255.0f, 3, 3, 4); // sorts first: fixes 3 channels
  write_text(tpath("imgs/notes.txt"), "not an image");
  float *y;
  int n, c, h, w;
  int rc = sde_png_read_dir(tpath("imgs"), 0, &y, &n, &c, &h, &w);
  TAP_CHECK(!rc && n == 3 && c == 3 && h == 3 && w == 4, "read_dir: 3 images (%s)", why(rc));
  if (!rc) {
    int plane = c * h * w;
    TAP_CHECK(y[0] == 3 / 255.0f && y[plane] == 1 / 255.0f && y[2 * plane] == 2 / 255.0f &&
                  y[plane - 1] == 3 / 255.0f, "sorted by name: C.PNG, a.png, b.png");
    free(y);
  }
  rc = sde_png_read_dir(tpath("imgs"), 1, &y, &n, &c, &h, &w);
  TAP_CHECK(!rc && n == 3 && c == 1, "read_dir with want_channels 1");
  if (!rc) free(y);
  write_solid_png(tpath("imgs/d.png"), 0.5f, 3, 4, 4);
  rc = sde_png_read_dir(tpath("imgs"), 0, &y, &n, &c, &h, &w);
  TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("d.png") && msg_has("C.PNG"),
            "size mismatch names both files: %s", sde_errmsg());
  mkdir(tpath("empty"), 0700);
  write_text(tpath("empty/readme.txt"), "nothing");
  rc = sde_png_read_dir(tpath("empty"), 0, &y, &n, &c, &h, &w);
  TAP_CHECK(rc != 0 && !y && msg_has("no .png files"), "empty folder: %s", sde_errmsg());
  rc = sde_png_read_dir(tpath("nowhere"), 0, &y, &n, &c, &h, &w);
  TAP_CHECK(rc == SDE_EIO && msg_has("nowhere"), "missing folder: %s", sde_errmsg());
  mkdir(tpath("broken"), 0700);
  write_solid_png(tpath("broken/a.png"), 0.5f, 3, 4, 4);
  write_text(tpath("broken/b.png"), "garbage");
  rc = sde_png_read_dir(tpath("broken"), 0, &y, &n, &c, &h, &w);
  TAP_CHECK(rc == SDE_EFORMAT && !y && msg_has("b.png"), "broken file in folder: %s", sde_errmsg());
}

// ----------------------------------------------------------------------------
// mutation fuzzing: no crash, and a message whenever a call fails

/* Flips a few random bytes and/or truncates buf[*len] in place. */
static void mutate(unsigned char *buf, size_t *len) {
  int kind = (int)(next_random() % 4);
  if (kind != 1) {
    int flips = 1 + (int)(next_random() % 4);
    for (int i = 0; i < flips; i++) buf[next_random() % *len] ^= (unsigned char)(1 + next_random() % 255);
  }
  if (kind >= 1 && kind <= 2) *len = (size_t)(next_random() % *len);
}

static void fuzz_npy(void) {
  int64_t shape[2] = {3, 5};
  float x[15];
  for (int i = 0; i < 15; i++) x[i] = (float)i;
  sde_npy_write(tpath("seed.npy"), x, 2, shape);
  char *seed = NULL;
  size_t seed_len = 0;
  sde_read_file(tpath("seed.npy"), 1 << 16, &seed, &seed_len);
  int silent = 0, ok = 0;
  unsigned char buf[512];
  for (int it = 0; seed && it < 400; it++) {
    size_t len = seed_len;
    memcpy(buf, seed, len);
    mutate(buf, &len);
    write_bytes(tpath("fuzz.npy"), buf, len);
    float *y = NULL;
    int ndim;
    int64_t s[SDE_NPY_MAX_DIMS];
    clear_error();
    int rc = sde_npy_read(tpath("fuzz.npy"), &y, &ndim, s);
    if (rc && (!sde_errmsg()[0] || y)) silent++;
    if (!rc) ok++;
    free(y);
  }
  free(seed);
  TAP_CHECK(silent == 0, "npy fuzz: 400 mutations, %d read fine, %d failures without message", ok,
            silent);
}

static void fuzz_json(void) {
  const char *seed = "{\"model\": {\"type\": \"gmm\", \"weights\": [0.25, 0.75e0, -1E-2],"
                     " \"name\": \"a\\u00e9\\ud83d\\ude00\\n\", \"flags\": [true, false, null],"
                     " \"nested\": [[1], {\"k\": []}]}}";
  size_t seed_len = strlen(seed);
  int silent = 0, ok = 0, unstable = 0;
  unsigned char buf[512];
  for (int it = 0; it < 600; it++) {
    size_t len = seed_len;
    memcpy(buf, seed, len);
    mutate(buf, &len);
    clear_error();
    sde_json *v = sde_json_parse((const char *)buf, len);
    if (!v && !strstr(sde_errmsg(), "at byte ")) silent++;
    if (v) {
      ok++;
      char *out = sde_json_dump(v);
      sde_json *again = out ? sde_json_parse(out, strlen(out)) : NULL;
      char *out2 = again ? sde_json_dump(again) : NULL;
      if (!out2 || strcmp(out, out2)) unstable++;
      free(out);
      free(out2);
      sde_json_free(again);
    }
    sde_json_free(v);
  }
  TAP_CHECK(silent == 0 && unstable == 0,
            "json fuzz: 600 mutations, %d parsed, %d failures without offset, %d unstable dumps",
            ok, silent, unstable);
}

static void fuzz_png(void) {
  float img[3 * 8 * 8];
  for (int i = 0; i < 3 * 64; i++) img[i] = (float)(i % 7) / 6.0f;
  sde_png_write(tpath("seed.png"), img, 3, 8, 8);
  char *seed = NULL;
  size_t seed_len = 0;
  sde_read_file(tpath("seed.png"), 1 << 16, &seed, &seed_len);
  int silent = 0, ok = 0;
  unsigned char *buf = malloc(seed_len + 1);
  for (int it = 0; seed && it < 200; it++) {
    size_t len = seed_len;
    memcpy(buf, seed, len);
    mutate(buf, &len);
    write_bytes(tpath("fuzz.png"), buf, len);
    float *y = NULL;
    int c, h, w;
    clear_error();
    int rc = sde_png_read(tpath("fuzz.png"), 0, &y, &c, &h, &w);
    if (rc && (!sde_errmsg()[0] || y)) silent++;
    if (!rc) ok++;
    free(y);
  }
  free(buf);
  free(seed);
  TAP_CHECK(silent == 0, "png fuzz: 200 mutations, %d read fine, %d failures without message", ok,
            silent);
}

int main(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sde_test_io_XXXXXX");
  if (!mkdtemp(tmp_dir)) {
    TAP_CHECK(0, "mkdtemp");
    return tap_done();
  }
  test_json_valid();
  test_json_depth();
  test_json_errors();
  test_json_getters();
  test_json_dump();
  test_json_large();
  test_json_file();
  test_read_file();
  test_npy_roundtrip();
  test_npy_dtypes();
  test_npy_errors();
  test_png_roundtrip();
  test_png_convert();
  test_png_formats();
  test_png_bad_files();
  test_png_grid();
  test_png_dir();
  fuzz_npy();
  fuzz_json();
  fuzz_png();
  remove_tree(tmp_dir);
  return tap_done();
}
