/* safetensors reader (mmap, every entry validated) and float32 writer. Format: docs/math.md#safetensors.
 *
 *   [u64 LE n][n bytes of JSON header, maybe space-padded][data buffer]
 *   header = {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *             "__metadata__": {"key": "string", ...}}
 * Offsets are relative to the data buffer, end exclusive. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"

static const struct {
  const char *name;
  int size;
} dtype_info[SDE_ST_NUM_DTYPES] = {
  [SDE_ST_F32] = {"F32", 4}, [SDE_ST_F16] = {"F16", 2}, [SDE_ST_BF16] = {"BF16", 2},
  [SDE_ST_F64] = {"F64", 8}, [SDE_ST_I64] = {"I64", 8}, [SDE_ST_I32] = {"I32", 4},
  [SDE_ST_I16] = {"I16", 2}, [SDE_ST_I8] = {"I8", 1},   [SDE_ST_U8] = {"U8", 1},
  [SDE_ST_BOOL] = {"BOOL", 1}, [SDE_ST_U16] = {"U16", 2}, [SDE_ST_U32] = {"U32", 4},
  [SDE_ST_U64] = {"U64", 8},
};

const char *sde_st_dtype_name(sde_st_dtype dtype) {
  if ((int)dtype < 0 || dtype >= SDE_ST_NUM_DTYPES) return "?";
  return dtype_info[dtype].name;
}

static void st_free_parsed(sde_safetensors *st) {
  if (st->tensors)
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
  free(st->tensors);
  if (st->meta_keys)
    for (int i = 0; i < st->n_meta; i++) free(st->meta_keys[i]);
  if (st->meta_values)
    for (int i = 0; i < st->n_meta; i++) free(st->meta_values[i]);
  free(st->meta_keys);
  free(st->meta_values);
  st->tensors = NULL;
  st->meta_keys = st->meta_values = NULL;
  st->n_tensors = st->n_meta = 0;
}

void sde_st_close(sde_safetensors *st) {
  if (!st) return;
  st_free_parsed(st);
  if (st->map) munmap(st->map, st->map_len);
  free(st);
}

static char *st_strdup(const char *s, size_t len) {
  char *d = sde_malloc(len + 1);
  if (!d) return NULL;
  memcpy(d, s, len);
  d[len] = 0;
  return d;
}

/* A JSON number that is an integer in [0, 2^53]. */
static int st_uint(const sde_json *v, uint64_t *out) {
  if (!v || v->type != SDE_JSON_NUMBER) return 0;
  double d = v->number;
  if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
  *out = (uint64_t)d;
  return 1;
}

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const sde_st_tensor *)a)->name, ((const sde_st_tensor *)b)->name);
}

static int cmp_ptr_begin(const void *a, const void *b) {
  const sde_st_tensor *x = *(const sde_st_tensor *const *)a, *y = *(const sde_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int st_parse_entry(const sde_json *e, uint64_t data_len, sde_st_tensor *t) {
  const char *name = t->name;
  if (e->type != SDE_JSON_OBJECT)
    return sde_fail(SDE_EFORMAT, "tensor '%s': entry is not a JSON object", name);
  const sde_json *jd = sde_json_get(e, "dtype"), *js = sde_json_get(e, "shape"),
                 *jo = sde_json_get(e, "data_offsets");
  if (!jd || jd->type != SDE_JSON_STRING)
    return sde_fail(SDE_EFORMAT, "tensor '%s': missing or non-string \"dtype\"", name);
  if (!js || js->type != SDE_JSON_ARRAY)
    return sde_fail(SDE_EFORMAT, "tensor '%s': missing or non-array \"shape\"", name);
  if (!jo || jo->type != SDE_JSON_ARRAY)
    return sde_fail(SDE_EFORMAT, "tensor '%s': missing or non-array \"data_offsets\"", name);
  for (size_t i = 0; i < e->count; i++) {
    const char *k = e->items[i]->key;
    if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
      return sde_fail(SDE_EFORMAT, "tensor '%s': unknown field \"%s\"", name, k);
  }
  int dt = -1;
  for (int d = 0; d < SDE_ST_NUM_DTYPES; d++)
    if (strcmp(jd->string, dtype_info[d].name) == 0) dt = d;
  if (dt < 0) return sde_fail(SDE_EFORMAT, "tensor '%s': unknown dtype \"%s\"", name, jd->string);
  t->dtype = (sde_st_dtype)dt;
  if (js->count > SDE_ST_MAX_DIMS)
    return sde_fail(SDE_EFORMAT, "tensor '%s': %zu dimensions (at most %d supported)", name,
                    js->count, SDE_ST_MAX_DIMS);
  t->ndim = (int)js->count;
  uint64_t numel = 1, esize = (uint64_t)dtype_info[dt].size;
  for (int i = 0; i < t->ndim; i++) {
    uint64_t d;
    if (!st_uint(js->items[i], &d))
      return sde_fail(SDE_EFORMAT, "tensor '%s': shape[%d] is not a non-negative integer",
                      name, i);
    t->shape[i] = (int64_t)d;
    if (d != 0 && numel > (UINT64_MAX / 16) / d)
      return sde_fail(SDE_EFORMAT, "tensor '%s': shape product overflows", name);
    numel *= d;
  }
  if (numel > (uint64_t)INT64_MAX / esize)
    return sde_fail(SDE_EFORMAT, "tensor '%s': byte size overflows", name);
  t->numel = (int64_t)numel;
  if (jo->count != 2)
    return sde_fail(SDE_EFORMAT, "tensor '%s': data_offsets must have 2 entries, not %zu", name,
                    jo->count);
  if (!st_uint(jo->items[0], &t->begin) || !st_uint(jo->items[1], &t->end))
    return sde_fail(SDE_EFORMAT, "tensor '%s': data_offsets are not non-negative integers",
                    name);
  if (t->begin > t->end)
    return sde_fail(SDE_EFORMAT, "tensor '%s': data_offsets begin %llu > end %llu", name,
                    (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > data_len)
    return sde_fail(SDE_EFORMAT,
                    "tensor '%s': data_offsets [%llu, %llu) past the end of the data buffer "
                    "(%llu bytes; file truncated?)",
                    name, (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)data_len);
  if (t->end - t->begin != numel * esize)
    return sde_fail(SDE_EFORMAT,
                    "tensor '%s': data_offsets span %llu bytes but %s shape needs %llu", name,
                    (unsigned long long)(t->end - t->begin), dtype_info[dt].name,
                    (unsigned long long)(numel * esize));
  return SDE_OK;
}

static int st_parse(sde_safetensors *st, const uint8_t *bytes, size_t len) {
  if (len < 8)
    return sde_fail(SDE_EFORMAT, "file of %zu bytes is too short for a safetensors header",
                    len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
  if (n > SDE_ST_MAX_HEADER)
    return sde_fail(SDE_EFORMAT, "header length %llu exceeds the %u-byte limit (not a "
                    "safetensors file?)", (unsigned long long)n, SDE_ST_MAX_HEADER);
  if (n > len - 8)
    return sde_fail(SDE_EFORMAT, "header length %llu runs past the end of the file (%zu bytes)",
                    (unsigned long long)n, len);
  if (n < 2 || bytes[8] != '{')
    return sde_fail(SDE_EFORMAT, "header does not start with a JSON object");
  sde_json *root = sde_json_parse((const char *)bytes + 8, (size_t)n);
  if (!root) return sde_fail_context(SDE_EFORMAT, "safetensors header");
  int rc = SDE_OK;
  if (root->type != SDE_JSON_OBJECT) {
    rc = sde_fail(SDE_EFORMAT, "safetensors header is not a JSON object");
    goto done;
  }
  st->data = bytes + 8 + n;
  st->data_len = (uint64_t)(len - 8 - n);
  int n_t = 0;
  const sde_json *meta = NULL;
  for (size_t i = 0; i < root->count; i++) {
    if (strcmp(root->items[i]->key, "__metadata__") == 0) {
      if (meta) {
        rc = sde_fail(SDE_EFORMAT, "__metadata__ appears twice");
        goto done;
      }
      meta = root->items[i];
    } else {
      n_t++;
    }
  }
  st->tensors = sde_calloc((size_t)n_t + 1, sizeof *st->tensors);
  if (!st->tensors) { rc = SDE_ENOMEM; goto done; }
  for (size_t i = 0; i < root->count; i++) {
    const sde_json *e = root->items[i];
    if (e == meta) continue;
    sde_st_tensor *t = &st->tensors[st->n_tensors];
    if (strlen(e->key) == 0) { rc = sde_fail(SDE_EFORMAT, "tensor with an empty name"); goto done; }
    t->name = st_strdup(e->key, strlen(e->key));
    if (!t->name) { rc = SDE_ENOMEM; goto done; }
    st->n_tensors++;
    if ((rc = st_parse_entry(e, st->data_len, t)) != SDE_OK) goto done;
  }
  qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
  for (int i = 1; i < st->n_tensors; i++)
    if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
      rc = sde_fail(SDE_EFORMAT, "tensor '%s' appears twice in the header", st->tensors[i].name);
      goto done;
    }
  /* overlap check: sort non-empty ranges by begin */
  {
    sde_st_tensor **by = sde_malloc(((size_t)st->n_tensors + 1) * sizeof *by);
    if (!by) { rc = SDE_ENOMEM; goto done; }
    int m = 0;
    for (int i = 0; i < st->n_tensors; i++)
      if (st->tensors[i].end > st->tensors[i].begin) by[m++] = &st->tensors[i];
    qsort(by, (size_t)m, sizeof *by, cmp_ptr_begin);
    for (int i = 1; i < m && !rc; i++)
      if (by[i]->begin < by[i - 1]->end) {
        rc = sde_fail(SDE_EFORMAT, "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                      by[i - 1]->name, (unsigned long long)by[i - 1]->begin,
                      (unsigned long long)by[i - 1]->end, by[i]->name,
                      (unsigned long long)by[i]->begin, (unsigned long long)by[i]->end);
        break;
      }
    /* the tensors must tile the data buffer exactly (as the reference reader demands):
     * a gap or a tail would mean a misplaced header length or a damaged file */
    uint64_t covered = 0;
    for (int i = 0; i < m && !rc; i++) {
      if (by[i]->begin > covered)
        rc = sde_fail(SDE_EFORMAT, "data bytes [%llu, %llu) before tensor '%s' belong to no "
                      "tensor (header length or offsets wrong?)", (unsigned long long)covered,
                      (unsigned long long)by[i]->begin, by[i]->name);
      else if (by[i]->end > covered)
        covered = by[i]->end;
    }
    if (!rc && covered != st->data_len)
      rc = sde_fail(SDE_EFORMAT, "the data buffer has %llu bytes but the tensors cover %llu "
                    "(header length wrong or trailing bytes)", (unsigned long long)st->data_len,
                    (unsigned long long)covered);
    free(by);
    if (rc) goto done;
  }
  if (meta) {
    if (meta->type != SDE_JSON_OBJECT) {
      rc = sde_fail(SDE_EFORMAT, "__metadata__ is not a JSON object");
      goto done;
    }
    st->meta_keys = sde_calloc(meta->count + 1, sizeof(char *));
    st->meta_values = sde_calloc(meta->count + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_values) { rc = SDE_ENOMEM; goto done; }
    for (size_t i = 0; i < meta->count; i++) {
      const sde_json *e = meta->items[i];
      if (e->type != SDE_JSON_STRING) {
        rc = sde_fail(SDE_EFORMAT, "__metadata__ entry '%s' is not a string", e->key);
        goto done;
      }
      st->meta_keys[i] = st_strdup(e->key, strlen(e->key));
      st->meta_values[i] = st_strdup(e->string, e->string_len);
      st->n_meta = (int)i + 1;
      if (!st->meta_keys[i] || !st->meta_values[i]) { rc = SDE_ENOMEM; goto done; }
    }
  }
done:
  sde_json_free(root);
  return rc;
}

int sde_st_open_memory(const void *bytes, size_t len, sde_safetensors **out) {
  *out = NULL;
  sde_safetensors *st = sde_calloc(1, sizeof *st);
  if (!st) return SDE_ENOMEM;
  int rc = st_parse(st, (const uint8_t *)bytes, len);
  if (rc) {
    sde_st_close(st);
    return rc;
  }
  *out = st;
  return SDE_OK;
}

int sde_st_open(const char *path, sde_safetensors **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return sde_fail(SDE_EIO, "cannot open '%s': %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return sde_fail(SDE_EIO, "'%s' is not a regular file", path);
  }
  size_t len = (size_t)sb.st_size;
  if (len < 8) {
    close(fd);
    return sde_fail(SDE_EFORMAT, "'%s': file of %zu bytes is too short for safetensors", path,
                    len);
  }
  void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return sde_fail(SDE_EIO, "cannot map '%s': %s", path, strerror(errno));
  sde_safetensors *st = sde_calloc(1, sizeof *st);
  if (!st) {
    munmap(map, len);
    return SDE_ENOMEM;
  }
  st->map = map;
  st->map_len = len;
  int rc = st_parse(st, (const uint8_t *)map, len);
  if (rc) {
    sde_st_close(st);
    return sde_fail_context(rc, "%s", path);
  }
  *out = st;
  return SDE_OK;
}

const sde_st_tensor *sde_st_find(const sde_safetensors *st, const char *name) {
  int lo = 0, hi = st->n_tensors - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2, c = strcmp(st->tensors[mid].name, name);
    if (c == 0) return &st->tensors[mid];
    if (c < 0) lo = mid + 1; else hi = mid - 1;
  }
  return NULL;
}

const char *sde_st_metadata(const sde_safetensors *st, const char *key) {
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
  return NULL;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(man & 1024)) { man <<= 1; exp--; }
      bits = sign | (exp << 23) | ((man & 1023) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

int sde_st_read_f32(const sde_safetensors *st, const sde_st_tensor *t, float *out) {
  const uint8_t *p = st->data + t->begin;
  int64_t n = t->numel;
  switch (t->dtype) {
    case SDE_ST_F32:
      for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                     (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        memcpy(&out[i], &b, 4);
      }
      return SDE_OK;
    case SDE_ST_F16:
      for (int64_t i = 0; i < n; i++) out[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
      return SDE_OK;
    case SDE_ST_BF16:
      for (int64_t i = 0; i < n; i++) {
        uint32_t b = ((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8) << 16;
        memcpy(&out[i], &b, 4);
      }
      return SDE_OK;
    case SDE_ST_F64:
      for (int64_t i = 0; i < n; i++) {
        uint64_t b = 0;
        for (int k = 7; k >= 0; k--) b = (b << 8) | p[8 * i + k];
        double d;
        memcpy(&d, &b, 8);
        out[i] = (float)d;
      }
      return SDE_OK;
    default:
      return sde_fail(SDE_EUNSUPPORTED, "tensor '%s' has dtype %s; only F32, F16, BF16 and F64 "
                      "can be read as floats", t->name, sde_st_dtype_name(t->dtype));
  }
}

/* ---- writer --------------------------------------------------------------------------- */

typedef struct {
  char *s;
  size_t len, cap;
  int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) { b->oom = 1; return; }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(strbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char tmp[8];
    switch (*p) {
      case '"': sb_put(b, "\\\"", 2); break;
      case '\\': sb_put(b, "\\\\", 2); break;
      case '\n': sb_put(b, "\\n", 2); break;
      case '\r': sb_put(b, "\\r", 2); break;
      case '\t': sb_put(b, "\\t", 2); break;
      default:
        if (*p < 0x20) {
          snprintf(tmp, sizeof tmp, "\\u%04x", *p);
          sb_put(b, tmp, 6);
        } else {
          sb_put(b, (const char *)p, 1);
        }
    }
  }
  sb_put(b, "\"", 1);
}

int sde_st_serialize(const sde_st_entry *entries, int n, const char *const *meta, int n_meta,
                     uint8_t **bytes, size_t *len) {
  *bytes = NULL;
  *len = 0;
  strbuf h = {0};
  uint64_t offset = 0;
  char num[64];
  sb_str(&h, "{");
  if (n_meta > 0) {
    sb_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) sb_str(&h, ",");
      sb_json_string(&h, meta[2 * i]);
      sb_str(&h, ":");
      sb_json_string(&h, meta[2 * i + 1]);
    }
    sb_str(&h, "}");
  }
  for (int i = 0; i < n; i++) {
    const sde_st_entry *e = &entries[i];
    if (e->ndim < 0 || e->ndim > SDE_ST_MAX_DIMS) {
      free(h.s);
      return sde_fail(SDE_EINVAL, "tensor '%s': %d dimensions", e->name, e->ndim);
    }
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d];
    if (n_meta > 0 || i > 0) sb_str(&h, ",");
    sb_json_string(&h, e->name);
    sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < e->ndim; d++) {
      snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
      sb_str(&h, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
             (unsigned long long)(offset + 4 * numel));
    sb_str(&h, num);
    offset += 4 * numel;
  }
  sb_str(&h, "}");
  while (!h.oom && (8 + h.len) % 8) sb_str(&h, " ");
  if (h.oom) {
    free(h.s);
    return sde_fail(SDE_ENOMEM, "out of memory building a safetensors header");
  }
  size_t total = 8 + h.len + (size_t)offset;
  uint8_t *buf = sde_malloc(total);
  if (!buf) {
    free(h.s);
    return SDE_ENOMEM;
  }
  uint64_t hl = h.len;
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i));
  memcpy(buf + 8, h.s, h.len);
  free(h.s);
  uint8_t *p = buf + 8 + hl;
  for (int i = 0; i < n; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < entries[i].ndim; d++) numel *= (uint64_t)entries[i].shape[d];
    for (uint64_t k = 0; k < numel; k++) {
      uint32_t b;
      memcpy(&b, &entries[i].data[k], 4);
      p[0] = (uint8_t)b; p[1] = (uint8_t)(b >> 8); p[2] = (uint8_t)(b >> 16); p[3] = (uint8_t)(b >> 24);
      p += 4;
    }
  }
  *bytes = buf;
  *len = total;
  return SDE_OK;
}

int sde_st_write(const char *path, const sde_st_entry *entries, int n, const char *const *meta,
                 int n_meta) {
  uint8_t *bytes;
  size_t len;
  int rc = sde_st_serialize(entries, n, meta, n_meta, &bytes, &len);
  if (rc) return rc;
  rc = sde_write_file_atomic(path, bytes, len); /* checkpoints and models survive a kill */
  free(bytes);
  return rc;
}
