/* Strict RFC 8259 JSON: a recursive-descent parser into an sde_json tree, typed getters
 * and a compact writer. Hostile input is bounded: nesting depth <= 64, every pass is
 * linear in the input (safetensors headers can be ~100 MB), and errors name the byte. */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"

#define JSON_MAX_DEPTH 64

// ----------------------------------------------------------------------------
// small helpers

/* Grows *buf (of *cap elements of `elem` bytes) to hold at least `need` elements,
 * doubling so that n pushes cost O(n). Returns 0 or SDE_ENOMEM. */
static int grow_buffer(void **buf, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return SDE_OK;
  size_t new_cap = *cap ? *cap : 8;
  while (new_cap < need) {
    if (new_cap > SIZE_MAX / 2 / elem) return sde_fail(SDE_ENOMEM, "JSON: buffer too large");
    new_cap *= 2;
  }
  void *p = realloc(*buf, new_cap * elem);
  if (!p) return sde_fail(SDE_ENOMEM, "out of memory allocating %zu bytes", new_cap * elem);
  *buf = p;
  *cap = new_cap;
  return SDE_OK;
}

/* The current locale's decimal point, which strtod and printf use instead of '.'. */
static const char *locale_decimal_point(void) {
  const struct lconv *lc = localeconv();
  return (lc && lc->decimal_point && lc->decimal_point[0]) ? lc->decimal_point : ".";
}

// ----------------------------------------------------------------------------
// parser state

typedef struct {
  const unsigned char *text; // input, not NUL-terminated
  size_t len;                // bytes of input
  size_t pos;                // current byte offset
  int depth;                 // current container nesting
} json_parser;

static sde_json *parse_value(json_parser *p);

/* Sets "JSON: <what> at byte <at>"; returns SDE_EFORMAT (json_fail) or NULL (parse_error). */
static int json_fail(size_t at, const char *what) {
  return sde_fail(SDE_EFORMAT, "JSON: %s at byte %zu", what, at);
}

static sde_json *parse_error(size_t at, const char *what) {
  json_fail(at, what);
  return NULL;
}

static void skip_whitespace(json_parser *p) {
  while (p->pos < p->len) {
    unsigned char c = p->text[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int at_end(const json_parser *p) { return p->pos >= p->len; }
static unsigned char peek(const json_parser *p) { return p->text[p->pos]; }

/* "unexpected X" message for the byte at p->pos (or end of input). */
static sde_json *unexpected(const json_parser *p, const char *expected) {
  char msg[128];
  if (at_end(p)) {
    snprintf(msg, sizeof msg, "unexpected end of input, expected %s", expected);
  } else {
    unsigned char c = peek(p);
    if (c >= 0x20 && c < 0x7f)
      snprintf(msg, sizeof msg, "unexpected character '%c', expected %s", c, expected);
    else
      snprintf(msg, sizeof msg, "unexpected byte 0x%02x, expected %s", c, expected);
  }
  return parse_error(p->pos, msg);
}

static sde_json *new_node(sde_json_type type) {
  sde_json *v = sde_calloc(1, sizeof *v);
  if (v) v->type = type;
  return v;
}

/* Appends child to a container, growing items geometrically (cap tracked by caller). */
static int push_item(sde_json *container, size_t *cap, sde_json *child) {
  void *items = container->items;
  if (grow_buffer(&items, cap, container->count + 1, sizeof(sde_json *))) return SDE_ENOMEM;
  container->items = items;
  container->items[container->count++] = child;
  return SDE_OK;
}

// ----------------------------------------------------------------------------
// literals and numbers

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static sde_json *parse_literal(json_parser *p, const char *word, sde_json_type type, int b) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
    return unexpected(p, "a value");
  p->pos += n;
  sde_json *v = new_node(type);
  if (v) v->boolean = b;
  return v;
}

/* Converts the validated JSON number text[n] with strtod, in any locale. Plain integers
 * of up to 15 digits (all of a safetensors header) are exact in a double: no strtod. */
static int number_from_text(const char *text, size_t n, double *out) {
  size_t sign = text[0] == '-';
  if (n - sign <= 15) {
    long long v = 0;
    size_t i = sign;
    while (i < n && is_digit((unsigned char)text[i])) v = v * 10 + (text[i++] - '0');
    if (i == n) {
      *out = sign ? -(double)v : (double)v;
      return SDE_OK;
    }
  }
  const char *dp = locale_decimal_point();
  size_t dp_len = strlen(dp);
  char stack_buf[128];
  size_t cap = n + dp_len + 1;
  char *buf = cap <= sizeof stack_buf ? stack_buf : sde_malloc(cap);
  if (!buf) return SDE_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (text[i] == '.') {
      memcpy(buf + k, dp, dp_len);
      k += dp_len;
    } else {
      buf[k++] = text[i];
    }
  }
  buf[k] = '\0';
  *out = strtod(buf, NULL);
  if (buf != stack_buf) free(buf);
  return SDE_OK;
}

/* number = [ "-" ] ( "0" / [1-9] *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ] */
static sde_json *parse_number(json_parser *p) {
  size_t start = p->pos;
  if (!at_end(p) && peek(p) == '-') p->pos++;
  if (at_end(p) || !is_digit(peek(p))) return unexpected(p, "a digit");
  if (peek(p) == '0') {
    p->pos++;
    if (!at_end(p) && is_digit(peek(p)))
      return parse_error(start, "leading zeros are not allowed in numbers");
  } else {
    while (!at_end(p) && is_digit(peek(p))) p->pos++;
  }
  if (!at_end(p) && peek(p) == '.') {
    p->pos++;
    if (at_end(p) || !is_digit(peek(p))) return unexpected(p, "a digit after '.'");
    while (!at_end(p) && is_digit(peek(p))) p->pos++;
  }
  if (!at_end(p) && (peek(p) == 'e' || peek(p) == 'E')) {
    p->pos++;
    if (!at_end(p) && (peek(p) == '+' || peek(p) == '-')) p->pos++;
    if (at_end(p) || !is_digit(peek(p))) return unexpected(p, "a digit in the exponent");
    while (!at_end(p) && is_digit(peek(p))) p->pos++;
  }
  double x;
  if (number_from_text((const char *)p->text + start, p->pos - start, &x)) return NULL;
  if (!isfinite(x)) return parse_error(start, "number out of range");
  sde_json *v = new_node(SDE_JSON_NUMBER);
  if (v) v->number = x;
  return v;
}

// ----------------------------------------------------------------------------
// strings

/* Length of the valid UTF-8 sequence at s[avail] (1..4), or 0 if it is invalid
 * (overlong forms, surrogates and code points past U+10FFFF are rejected). */
static size_t utf8_sequence_length(const unsigned char *s, size_t avail) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if (c == 0xED) n = 3, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c == 0xF4) n = 4, hi = 0x8F;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else return 0;
  if (avail < n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

static size_t utf8_encode(unsigned cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Reads the 4 hex digits after "\u" at p->pos. Returns 0 and sets *cp, or -1. */
static int read_hex4(json_parser *p, unsigned *cp) {
  if (p->len - p->pos < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = p->text[p->pos + i];
    unsigned d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  p->pos += 4;
  *cp = v;
  return 0;
}

/* Decodes "\uXXXX" (p->pos just after the 'u'), combining a surrogate pair. */
static int parse_unicode_escape(json_parser *p, size_t esc_at, unsigned *cp) {
  if (read_hex4(p, cp)) return json_fail(esc_at, "bad \\u escape (need 4 hex digits)");
  if (*cp >= 0xDC00 && *cp <= 0xDFFF)
    return json_fail(esc_at, "unpaired low surrogate in \\u escape");
  if (*cp < 0xD800 || *cp > 0xDBFF) return 0;
  unsigned low;
  if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
    return json_fail(esc_at, "unpaired high surrogate in \\u escape");
  p->pos += 2;
  if (read_hex4(p, &low) || low < 0xDC00 || low > 0xDFFF)
    return json_fail(esc_at, "unpaired high surrogate in \\u escape");
  *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
  return 0;
}

/* Decodes one escape (p->pos at the backslash) into out; returns bytes written, or a
 * negative status. */
static int parse_escape(json_parser *p, char *out) {
  size_t esc_at = p->pos;
  p->pos++; // backslash
  if (at_end(p)) return json_fail(esc_at, "unterminated string");
  unsigned char c = p->text[p->pos++];
  switch (c) {
    case '"': *out = '"'; return 1;
    case '\\': *out = '\\'; return 1;
    case '/': *out = '/'; return 1;
    case 'b': *out = '\b'; return 1;
    case 'f': *out = '\f'; return 1;
    case 'n': *out = '\n'; return 1;
    case 'r': *out = '\r'; return 1;
    case 't': *out = '\t'; return 1;
    case 'u': {
      unsigned cp = 0;
      if (parse_unicode_escape(p, esc_at, &cp)) return -1;
      return (int)utf8_encode(cp, out);
    }
    default: return json_fail(esc_at, "invalid escape sequence in string");
  }
}

/* Parses a string (p->pos at the opening quote) into a malloc'd NUL-terminated buffer.
 * A first scan finds the closing quote, which bounds the decoded size: escapes only
 * shrink. */
static int parse_string_raw(json_parser *p, char **out, size_t *out_len) {
  size_t start = p->pos;
  size_t end = start + 1;
  while (end < p->len && p->text[end] != '"') end += p->text[end] == '\\' ? 2 : 1;
  if (end >= p->len) return json_fail(start, "unterminated string");
  char *buf = sde_malloc(end - start);
  if (!buf) return SDE_ENOMEM;
  size_t n = 0;
  p->pos = start + 1;
  while (p->pos < end) {
    unsigned char c = p->text[p->pos];
    if (c == '\\') {
      int k = parse_escape(p, buf + n);
      if (k < 0) goto fail;
      n += (size_t)k;
    } else if (c < 0x20) {
      parse_error(p->pos, "control character in string (must be escaped)");
      goto fail;
    } else {
      size_t k = utf8_sequence_length(p->text + p->pos, end - p->pos);
      if (!k) {
        parse_error(p->pos, "invalid UTF-8 in string");
        goto fail;
      }
      memcpy(buf + n, p->text + p->pos, k);
      n += k;
      p->pos += k;
    }
  }
  p->pos = end + 1;
  buf[n] = '\0';
  *out = buf;
  *out_len = n;
  return SDE_OK;
fail:
  free(buf);
  return SDE_EFORMAT;
}

static sde_json *parse_string(json_parser *p) {
  char *s;
  size_t n;
  if (parse_string_raw(p, &s, &n)) return NULL;
  sde_json *v = new_node(SDE_JSON_STRING);
  if (!v) {
    free(s);
    return NULL;
  }
  v->string = s;
  v->string_len = n;
  return v;
}

// ----------------------------------------------------------------------------
// containers

/* Enters a container at p->pos ('[' or '{'), enforcing the depth limit. */
static int enter_container(json_parser *p) {
  if (p->depth >= JSON_MAX_DEPTH) {
    char msg[64];
    snprintf(msg, sizeof msg, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    parse_error(p->pos, msg);
    return SDE_EFORMAT;
  }
  p->depth++;
  p->pos++;
  skip_whitespace(p);
  return SDE_OK;
}

static sde_json *parse_array(json_parser *p) {
  if (enter_container(p)) return NULL;
  sde_json *arr = new_node(SDE_JSON_ARRAY);
  if (!arr) return NULL;
  size_t cap = 0;
  if (!at_end(p) && peek(p) == ']') goto done;
  for (;;) {
    sde_json *item = parse_value(p);
    if (!item) goto fail;
    if (push_item(arr, &cap, item)) {
      sde_json_free(item);
      goto fail;
    }
    skip_whitespace(p);
    if (at_end(p) || (peek(p) != ',' && peek(p) != ']')) {
      unexpected(p, "',' or ']'");
      goto fail;
    }
    if (peek(p) == ']') break;
    p->pos++;
    skip_whitespace(p);
    if (!at_end(p) && peek(p) == ']') {
      parse_error(p->pos, "trailing comma in array");
      goto fail;
    }
  }
done:
  p->pos++;
  p->depth--;
  return arr;
fail:
  sde_json_free(arr);
  return NULL;
}

/* Parses one `"key": value` member (p->pos at the key). */
static sde_json *parse_member(json_parser *p) {
  if (at_end(p) || peek(p) != '"') return unexpected(p, "a string key");
  char *key;
  size_t key_len;
  if (parse_string_raw(p, &key, &key_len)) return NULL;
  skip_whitespace(p);
  if (at_end(p) || peek(p) != ':') {
    free(key);
    return unexpected(p, "':'");
  }
  p->pos++;
  sde_json *v = parse_value(p);
  if (!v) {
    free(key);
    return NULL;
  }
  v->key = key;
  return v;
}

static sde_json *parse_object(json_parser *p) {
  if (enter_container(p)) return NULL;
  sde_json *obj = new_node(SDE_JSON_OBJECT);
  if (!obj) return NULL;
  size_t cap = 0;
  if (!at_end(p) && peek(p) == '}') goto done;
  for (;;) {
    sde_json *member = parse_member(p);
    if (!member) goto fail;
    if (push_item(obj, &cap, member)) {
      sde_json_free(member);
      goto fail;
    }
    skip_whitespace(p);
    if (at_end(p) || (peek(p) != ',' && peek(p) != '}')) {
      unexpected(p, "',' or '}'");
      goto fail;
    }
    if (peek(p) == '}') break;
    p->pos++;
    skip_whitespace(p);
    if (!at_end(p) && peek(p) == '}') {
      parse_error(p->pos, "trailing comma in object");
      goto fail;
    }
  }
done:
  p->pos++;
  p->depth--;
  return obj;
fail:
  sde_json_free(obj);
  return NULL;
}

static sde_json *parse_value(json_parser *p) {
  skip_whitespace(p);
  if (at_end(p)) return unexpected(p, "a value");
  unsigned char c = peek(p);
  switch (c) {
    case '{': return parse_object(p);
    case '[': return parse_array(p);
    case '"': return parse_string(p);
    case 't': return parse_literal(p, "true", SDE_JSON_BOOL, 1);
    case 'f': return parse_literal(p, "false", SDE_JSON_BOOL, 0);
    case 'n': return parse_literal(p, "null", SDE_JSON_NULL, 0);
    default:
      if (c == '-' || is_digit(c)) return parse_number(p);
      return unexpected(p, "a value");
  }
}

// ----------------------------------------------------------------------------
// public: parse and free

sde_json *sde_json_parse(const char *text, size_t len) {
  json_parser p = {(const unsigned char *)text, text ? len : 0, 0, 0};
  skip_whitespace(&p);
  if (at_end(&p)) return parse_error(p.pos, "empty document");
  sde_json *root = parse_value(&p);
  if (!root) return NULL;
  skip_whitespace(&p);
  if (!at_end(&p)) {
    sde_json_free(root);
    return parse_error(p.pos, "trailing characters after the document");
  }
  return root;
}

sde_json *sde_json_parse_file(const char *path, size_t max_bytes) {
  char *text;
  size_t len;
  if (sde_read_file(path, max_bytes, &text, &len)) return NULL;
  sde_json *root = sde_json_parse(text, len);
  free(text);
  if (!root) sde_fail_context(SDE_EFORMAT, "%s", path);
  return root;
}

void sde_json_free(sde_json *v) {
  if (!v) return;
  for (size_t i = 0; i < v->count; i++) sde_json_free(v->items[i]);
  free(v->items);
  free(v->string);
  free(v->key);
  free(v);
}

// ----------------------------------------------------------------------------
// lookup and typed getters

const sde_json *sde_json_get(const sde_json *v, const char *key) {
  if (!v || v->type != SDE_JSON_OBJECT || !key) return NULL;
  for (size_t i = 0; i < v->count; i++)
    if (strcmp(v->items[i]->key, key) == 0) return v->items[i];
  return NULL;
}

const sde_json *sde_json_at(const sde_json *v, size_t i) {
  if (!v || (v->type != SDE_JSON_ARRAY && v->type != SDE_JSON_OBJECT) || i >= v->count)
    return NULL;
  return v->items[i];
}

static const char *what_or_value(const char *what) { return what ? what : "value"; }

int sde_json_number(const sde_json *v, const char *what, double *out) {
  if (!v) return sde_fail(SDE_EFORMAT, "%s: missing (expected a number)", what_or_value(what));
  if (v->type != SDE_JSON_NUMBER)
    return sde_fail(SDE_EFORMAT, "%s: expected a number", what_or_value(what));
  *out = v->number;
  return SDE_OK;
}

int sde_json_int(const sde_json *v, const char *what, int64_t lo, int64_t hi, int64_t *out) {
  double x;
  int rc = sde_json_number(v, what, &x);
  if (rc) return rc;
  // 2^63 is exactly representable; anything at or past it cannot be an int64
  if (x != floor(x) || x < -9223372036854775808.0 || x >= 9223372036854775808.0)
    return sde_fail(SDE_EFORMAT, "%s: expected an integer, got %.17g", what_or_value(what), x);
  int64_t i = (int64_t)x;
  if (i < lo || i > hi)
    return sde_fail(SDE_EFORMAT, "%s: %lld is out of range [%lld, %lld]", what_or_value(what),
                    (long long)i, (long long)lo, (long long)hi);
  *out = i;
  return SDE_OK;
}

int sde_json_bool(const sde_json *v, const char *what, int *out) {
  if (!v) return sde_fail(SDE_EFORMAT, "%s: missing (expected true or false)", what_or_value(what));
  if (v->type != SDE_JSON_BOOL)
    return sde_fail(SDE_EFORMAT, "%s: expected true or false", what_or_value(what));
  *out = v->boolean;
  return SDE_OK;
}

int sde_json_str(const sde_json *v, const char *what, const char **out) {
  if (!v) return sde_fail(SDE_EFORMAT, "%s: missing (expected a string)", what_or_value(what));
  if (v->type != SDE_JSON_STRING)
    return sde_fail(SDE_EFORMAT, "%s: expected a string", what_or_value(what));
  *out = v->string;
  return SDE_OK;
}

int sde_json_numbers(const sde_json *v, const char *what, double *out, size_t max, size_t *n) {
  if (!v || v->type != SDE_JSON_ARRAY)
    return sde_fail(SDE_EFORMAT, "%s: expected an array of numbers", what_or_value(what));
  if (v->count > max)
    return sde_fail(SDE_EFORMAT, "%s: too many values (%zu, at most %zu)", what_or_value(what),
                    v->count, max);
  for (size_t i = 0; i < v->count; i++)
    if (v->items[i]->type != SDE_JSON_NUMBER)
      return sde_fail(SDE_EFORMAT, "%s: expected an array of numbers (element %zu is not)",
                      what_or_value(what), i);
  for (size_t i = 0; i < v->count; i++) out[i] = v->items[i]->number;
  *n = v->count;
  return SDE_OK;
}

/* Shared front of the opt getters: *member = NULL when absent (not an error). */
static int opt_member(const sde_json *obj, const char *key, const sde_json **member) {
  *member = NULL;
  if (!obj) return SDE_OK;
  if (obj->type != SDE_JSON_OBJECT)
    return sde_fail(SDE_EFORMAT, "%s: expected an object containing it", key ? key : "member");
  *member = sde_json_get(obj, key);
  return SDE_OK;
}

int sde_json_opt_number(const sde_json *obj, const char *key, double *out) {
  const sde_json *m;
  int rc = opt_member(obj, key, &m);
  if (rc || !m) return rc;
  return sde_json_number(m, key, out);
}

int sde_json_opt_int(const sde_json *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  const sde_json *m;
  int rc = opt_member(obj, key, &m);
  if (rc || !m) return rc;
  return sde_json_int(m, key, lo, hi, out);
}

int sde_json_opt_bool(const sde_json *obj, const char *key, int *out) {
  const sde_json *m;
  int rc = opt_member(obj, key, &m);
  if (rc || !m) return rc;
  return sde_json_bool(m, key, out);
}

int sde_json_opt_str(const sde_json *obj, const char *key, const char **out) {
  const sde_json *m;
  int rc = opt_member(obj, key, &m);
  if (rc || !m) return rc;
  return sde_json_str(m, key, out);
}

// ----------------------------------------------------------------------------
// writer

typedef struct {
  char *buf;
  size_t len, cap;
  int failed; // set on ENOMEM; later appends are ignored
} str_builder;

static void sb_append(str_builder *sb, const char *s, size_t n) {
  if (sb->failed) return;
  void *buf = sb->buf;
  if (grow_buffer(&buf, &sb->cap, sb->len + n + 1, 1)) {
    sb->failed = 1;
    return;
  }
  sb->buf = buf;
  memcpy(sb->buf + sb->len, s, n);
  sb->len += n;
  sb->buf[sb->len] = '\0';
}

static void sb_puts(str_builder *sb, const char *s) { sb_append(sb, s, strlen(s)); }

static void dump_string(str_builder *sb, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sb_append(sb, "\"", 1);
  size_t run = 0; // start of the pending run of bytes that need no escaping
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sb_append(sb, s + run, i - run);
    run = i + 1;
    char esc[7] = {'\\', 0};
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
    }
    sb_puts(sb, esc);
  }
  sb_append(sb, s + run, n - run);
  sb_append(sb, "\"", 1);
}

/* Shortest of %.15g..%.17g that reads back exactly, with '.' whatever the locale. */
static void dump_number(str_builder *sb, double x) {
  if (!isfinite(x)) {
    sb_puts(sb, "null"); // JSON has no NaN or infinity
    return;
  }
  char tmp[64];
  if (x == floor(x) && fabs(x) < 1e15 && !(x == 0 && signbit(x))) {
    snprintf(tmp, sizeof tmp, "%lld", (long long)x); // integers: exact and fast
    sb_puts(sb, tmp);
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, x);
    if (strtod(tmp, NULL) == x) break;
  }
  const char *dp = locale_decimal_point();
  char *at = strcmp(dp, ".") ? strstr(tmp, dp) : NULL;
  if (at) {
    size_t dp_len = strlen(dp);
    *at = '.';
    memmove(at + 1, at + dp_len, strlen(at + dp_len) + 1);
  }
  sb_puts(sb, tmp);
}

static void dump_value(str_builder *sb, const sde_json *v) {
  switch (v->type) {
    case SDE_JSON_NULL: sb_puts(sb, "null"); return;
    case SDE_JSON_BOOL: sb_puts(sb, v->boolean ? "true" : "false"); return;
    case SDE_JSON_NUMBER: dump_number(sb, v->number); return;
    case SDE_JSON_STRING:
      dump_string(sb, v->string ? v->string : "", v->string ? v->string_len : 0);
      return;
    case SDE_JSON_ARRAY:
    case SDE_JSON_OBJECT: {
      int is_obj = v->type == SDE_JSON_OBJECT;
      sb_append(sb, is_obj ? "{" : "[", 1);
      for (size_t i = 0; i < v->count; i++) {
        if (i) sb_append(sb, ",", 1);
        if (is_obj) {
          const char *key = v->items[i]->key ? v->items[i]->key : "";
          dump_string(sb, key, strlen(key));
          sb_append(sb, ":", 1);
        }
        dump_value(sb, v->items[i]);
      }
      sb_append(sb, is_obj ? "}" : "]", 1);
      return;
    }
  }
  sb_puts(sb, "null");
}

char *sde_json_dump(const sde_json *v) {
  str_builder sb = {0};
  if (v) dump_value(&sb, v);
  else sb_puts(&sb, "null");
  if (sb.failed) {
    free(sb.buf);
    return NULL;
  }
  return sb.buf;
}
