/* A small, strict JSON reader and writer (RFC 8259) for model descriptions and
 * safetensors headers. Hostile input is bounded: nesting depth <= 64, and every error
 * names the byte offset. */
#ifndef SCORESDE_JSON_H
#define SCORESDE_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SDE_JSON_NULL, SDE_JSON_BOOL, SDE_JSON_NUMBER, SDE_JSON_STRING, SDE_JSON_ARRAY, SDE_JSON_OBJECT
} sde_json_type;

typedef struct sde_json sde_json;
struct sde_json {
  sde_json_type type;
  int boolean;
  double number;
  char *string;        /* STRING value (NUL-terminated, UTF-8); for members also see `key` */
  size_t string_len;   /* may contain NULs from \u0000 */
  char *key;           /* member name when this value is inside an object */
  sde_json **items;    /* ARRAY elements or OBJECT members, in document order */
  size_t count;
};

/* Parses text[len]. On failure returns NULL and sets the error message (sde_errmsg()),
 * which includes the byte offset. */
sde_json *sde_json_parse(const char *text, size_t len);
/* Reads and parses a whole file (at most max_bytes). */
sde_json *sde_json_parse_file(const char *path, size_t max_bytes);
void sde_json_free(sde_json *v);

/* Member lookup (first match); NULL if v is not an object or has no such key. */
const sde_json *sde_json_get(const sde_json *v, const char *key);
const sde_json *sde_json_at(const sde_json *v, size_t i);

/* Typed getters that fail with a clear message naming `what`. */
int sde_json_number(const sde_json *v, const char *what, double *out);
int sde_json_int(const sde_json *v, const char *what, int64_t lo, int64_t hi, int64_t *out);
int sde_json_bool(const sde_json *v, const char *what, int *out);
int sde_json_str(const sde_json *v, const char *what, const char **out);
/* Array of numbers into out[max]; *n receives the count. */
int sde_json_numbers(const sde_json *v, const char *what, double *out, size_t max, size_t *n);

/* Optional members: leave *out untouched when the key is absent. */
int sde_json_opt_number(const sde_json *obj, const char *key, double *out);
int sde_json_opt_int(const sde_json *obj, const char *key, int64_t lo, int64_t hi, int64_t *out);
int sde_json_opt_bool(const sde_json *obj, const char *key, int *out);
int sde_json_opt_str(const sde_json *obj, const char *key, const char **out);

/* Serialises v compactly into a malloc'd NUL-terminated string (NULL on ENOMEM). */
char *sde_json_dump(const sde_json *v);

#ifdef __cplusplus
}
#endif
#endif
