/* .npy arrays (format 1.0/2.0/3.0, C order, little-endian <f4 <f8 |u1 <i4 <i8) read into
 * float32, float32/float64 writers, and whole-file reads. Headers are hostile input: the
 * dict is parsed strictly, every size is checked against the file before allocating. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scoresde/error.h"
#include "scoresde/io.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_HEADER (1u << 20)  // numpy writes < 64 KiB; anything near this is hostile
#define NPY_CHUNK_BYTES (1u << 20) // staging buffer for converting data (multiple of 8)
#define NPY_ALIGN 64               // numpy pads the header so data starts 64-aligned

// ----------------------------------------------------------------------------
// whole files and suffixes

/* Grows buf to new_cap bytes; returns 0 or SDE_ENOMEM (buf untouched on failure). */
static int resize_bytes(char **buf, size_t new_cap) {
  char *p = realloc(*buf, new_cap);
  if (!p) return sde_fail(SDE_ENOMEM, "out of memory allocating %zu bytes", new_cap);
  *buf = p;
  return SDE_OK;
}

static int fail_too_large(const char *path, size_t max_bytes) {
  return sde_fail(SDE_EFORMAT, "%s: file is larger than the limit of %zu bytes", path, max_bytes);
}

/* Initial buffer size: the file's size for regular files (+2: the NUL and one byte to
 * see EOF), a small guess for pipes. Fails for directories and files over the limit. */
static int initial_capacity(FILE *f, const char *path, size_t max_bytes, size_t *cap) {
  struct stat st;
  *cap = 4096;
  if (fstat(fileno(f), &st) != 0) return SDE_OK;
  if (S_ISDIR(st.st_mode)) return sde_fail(SDE_EIO, "%s: is a directory", path);
  if (!S_ISREG(st.st_mode)) return SDE_OK;
  if ((unsigned long long)st.st_size > max_bytes) return fail_too_large(path, max_bytes);
  *cap = (size_t)st.st_size + 2;
  return SDE_OK;
}

int sde_read_file(const char *path, size_t max_bytes, char **data, size_t *len) {
  *data = NULL;
  *len = 0;
  if (!path) return sde_fail(SDE_EINVAL, "sde_read_file: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return sde_fail(SDE_EIO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap, n = 0;
  size_t cap_limit = max_bytes < SIZE_MAX - 2 ? max_bytes + 2 : SIZE_MAX; // room to see "too big"
  int rc = initial_capacity(f, path, max_bytes, &cap);
  char *buf = rc ? NULL : sde_malloc(cap);
  if (!rc && !buf) rc = SDE_ENOMEM;
  while (!rc) {
    if (n + 1 >= cap) { // keep one byte for the NUL
      if (cap >= cap_limit) {
        rc = fail_too_large(path, max_bytes);
        break;
      }
      size_t new_cap = cap > cap_limit / 2 ? cap_limit : cap * 2;
      rc = resize_bytes(&buf, new_cap);
      if (rc) break;
      cap = new_cap;
    }
    size_t got = fread(buf + n, 1, cap - 1 - n, f);
    n += got;
    if (n > max_bytes) rc = fail_too_large(path, max_bytes);
    else if (got == 0 && ferror(f)) rc = sde_fail(SDE_EIO, "%s: read error: %s", path, strerror(errno));
    else if (got == 0) break;
  }
  fclose(f);
  if (rc) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return SDE_OK;
}

static char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

int sde_has_suffix(const char *path, const char *suffix) {
  if (!path || !suffix) return 0;
  size_t n = strlen(path), k = strlen(suffix);
  if (k > n) return 0;
  for (size_t i = 0; i < k; i++)
    if (ascii_lower(path[n - k + i]) != ascii_lower(suffix[i])) return 0;
  return 1;
}

// ----------------------------------------------------------------------------
// little-endian loads and stores (independent of the host's byte order)

static uint32_t load_u32le(const unsigned char *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t load_u64le(const unsigned char *b) {
  return (uint64_t)load_u32le(b) | (uint64_t)load_u32le(b + 4) << 32;
}

static void store_u32le(unsigned char *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static void store_u64le(unsigned char *b, uint64_t v) {
  store_u32le(b, (uint32_t)v);
  store_u32le(b + 4, (uint32_t)(v >> 32));
}

// ----------------------------------------------------------------------------
// the header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }

typedef enum { NPY_F4, NPY_F8, NPY_U1, NPY_I4, NPY_I8 } npy_dtype;

typedef struct {
  npy_dtype dtype;
  size_t itemsize;
  int fortran_order;
  int ndim;
  int64_t shape[SDE_NPY_MAX_DIMS];
} npy_header;

typedef struct {
  const char *path; // for messages
  const char *s;    // header text
  size_t len, pos;
} header_cursor;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int header_fail(const header_cursor *c, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return sde_fail(SDE_EFORMAT, "%s: bad .npy header: %s at header offset %zu", c->path, msg,
                  c->pos);
}

static void header_skip_ws(header_cursor *c) {
  while (c->pos < c->len && (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' ||
                             c->s[c->pos] == '\n' || c->s[c->pos] == '\r'))
    c->pos++;
}

/* Skips whitespace and consumes `ch` if it is next; returns 1 if it was. */
static int header_accept(header_cursor *c, char ch) {
  header_skip_ws(c);
  if (c->pos < c->len && c->s[c->pos] == ch) {
    c->pos++;
    return 1;
  }
  return 0;
}

static int header_expect(header_cursor *c, char ch) {
  if (header_accept(c, ch)) return SDE_OK;
  return header_fail(c, "expected '%c'", ch);
}

/* A Python string literal without escapes ('...' or "..."), into out[cap]. */
static int header_string(header_cursor *c, char *out, size_t cap) {
  header_skip_ws(c);
  if (c->pos >= c->len || (c->s[c->pos] != '\'' && c->s[c->pos] != '"'))
    return header_fail(c, "expected a quoted string");
  char quote = c->s[c->pos++];
  size_t n = 0;
  while (c->pos < c->len && c->s[c->pos] != quote) {
    if (c->s[c->pos] == '\\' || n + 1 >= cap) return header_fail(c, "unsupported string");
    out[n++] = c->s[c->pos++];
  }
  if (c->pos >= c->len) return header_fail(c, "unterminated string");
  c->pos++;
  out[n] = '\0';
  return SDE_OK;
}

static int header_bool(header_cursor *c, int *out) {
  header_skip_ws(c);
  const char *rest = c->s + c->pos;
  size_t left = c->len - c->pos;
  if (left >= 4 && memcmp(rest, "True", 4) == 0) {
    *out = 1;
    c->pos += 4;
  } else if (left >= 5 && memcmp(rest, "False", 5) == 0) {
    *out = 0;
    c->pos += 5;
  } else {
    return header_fail(c, "expected True or False");
  }
  return SDE_OK;
}

/* A non-negative decimal integer (Python 2 files may append 'L'). */
static int header_dim(header_cursor *c, int64_t *out) {
  header_skip_ws(c);
  if (c->pos < c->len && c->s[c->pos] == '-') return header_fail(c, "negative dimension");
  if (c->pos >= c->len || c->s[c->pos] < '0' || c->s[c->pos] > '9')
    return header_fail(c, "expected a dimension");
  int64_t v = 0;
  while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
    int d = c->s[c->pos] - '0';
    if (v > (INT64_MAX - d) / 10) return header_fail(c, "dimension overflows 64 bits");
    v = v * 10 + d;
    c->pos++;
  }
  if (c->pos < c->len && c->s[c->pos] == 'L') c->pos++;
  *out = v;
  return SDE_OK;
}

/* A tuple of dimensions: (), (3,), (3, 4), (3, 4,). */
static int header_shape(header_cursor *c, npy_header *h) {
  int rc = header_expect(c, '(');
  h->ndim = 0;
  while (!rc && !header_accept(c, ')')) {
    if (h->ndim == SDE_NPY_MAX_DIMS)
      return header_fail(c, "more than %d dimensions", SDE_NPY_MAX_DIMS);
    rc = header_dim(c, &h->shape[h->ndim++]);
    if (rc || header_accept(c, ',')) continue;
    return header_expect(c, ')'); // last dimension without a trailing comma
  }
  return rc;
}

static int parse_descr(const header_cursor *c, const char *descr, npy_header *h) {
  static const struct { const char *name; npy_dtype dtype; size_t itemsize; } known[] = {
      {"<f4", NPY_F4, 4}, {"<f8", NPY_F8, 8}, {"|u1", NPY_U1, 1}, {"<u1", NPY_U1, 1},
      {"<i4", NPY_I4, 4}, {"<i8", NPY_I8, 8},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strcmp(descr, known[i].name) == 0) {
      h->dtype = known[i].dtype;
      h->itemsize = known[i].itemsize;
      return SDE_OK;
    }
  }
  if (descr[0] == '>')
    return sde_fail(SDE_EFORMAT, "%s: big-endian dtype '%s' is not supported", c->path, descr);
  return sde_fail(SDE_EFORMAT, "%s: unsupported dtype '%s' (expected <f4, <f8, |u1, <i4 or <i8)",
                  c->path, descr);
}

/* One `'key': value` entry; seen[] catches missing and repeated keys. */
static int header_entry(header_cursor *c, npy_header *h, int seen[3]) {
  char key[32], descr[64];
  int rc = header_string(c, key, sizeof key);
  if (!rc) rc = header_expect(c, ':');
  if (rc) return rc;
  int which = !strcmp(key, "descr") ? 0 : !strcmp(key, "fortran_order") ? 1
            : !strcmp(key, "shape") ? 2 : -1;
  if (which < 0) return header_fail(c, "unexpected key '%s'", key);
  if (seen[which]++) return header_fail(c, "repeated key '%s'", key);
  if (which == 1) return header_bool(c, &h->fortran_order);
  if (which == 2) return header_shape(c, h);
  header_skip_ws(c);
  if (c->pos < c->len && (c->s[c->pos] == '[' || c->s[c->pos] == '{'))
    return sde_fail(SDE_EFORMAT, "%s: unsupported dtype (structured arrays are not supported)",
                    c->path);
  rc = header_string(c, descr, sizeof descr);
  return rc ? rc : parse_descr(c, descr, h);
}

static int parse_header_dict(const char *path, const char *text, size_t len, npy_header *h) {
  header_cursor c = {path, text, len, 0};
  int seen[3] = {0, 0, 0};
  int rc = header_expect(&c, '{');
  while (!rc && !header_accept(&c, '}')) {
    rc = header_entry(&c, h, seen);
    if (rc || header_accept(&c, ',')) continue;
    rc = header_expect(&c, '}'); // last entry without a trailing comma
    break;
  }
  if (rc) return rc;
  header_skip_ws(&c);
  if (c.pos != c.len) return header_fail(&c, "unexpected text after the dict");
  static const char *const names[3] = {"descr", "fortran_order", "shape"};
  for (int i = 0; i < 3; i++)
    if (!seen[i]) return header_fail(&c, "missing key '%s'", names[i]);
  if (h->fortran_order)
    return sde_fail(SDE_EFORMAT, "%s: fortran_order arrays are not supported", path);
  return SDE_OK;
}

// ----------------------------------------------------------------------------
// reading

/* Number of elements of shape[ndim]; -1 when a dimension is negative or the count
 * (times 8 bytes) would overflow. */
static int count_elements(int ndim, const int64_t *shape, size_t *count) {
  const uint64_t limit = (uint64_t)(SIZE_MAX / 8) < (uint64_t)INT64_MAX ? SIZE_MAX / 8 : INT64_MAX;
  uint64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return -1;
    if (shape[i] == 0) n = 0;
  }
  for (int i = 0; i < ndim && n; i++) {
    if ((uint64_t)shape[i] > limit / n) return -1;
    n *= (uint64_t)shape[i];
  }
  *count = (size_t)n;
  return 0;
}

/* Reads magic, version and header length; leaves f at the header text. */
static int read_preamble(FILE *f, const char *path, uint32_t *header_len, long *data_offset) {
  unsigned char pre[12];
  if (fread(pre, 1, 10, f) != 10 || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    return sde_fail(SDE_EFORMAT, "%s: not a .npy file (bad magic)", path);
  int major = pre[6], minor = pre[7];
  if (major == 1 && minor == 0) {
    *header_len = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    *data_offset = 10;
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (fread(pre + 10, 1, 2, f) != 2)
      return sde_fail(SDE_EFORMAT, "%s: truncated .npy header", path);
    *header_len = load_u32le(pre + 8);
    *data_offset = 12;
  } else {
    return sde_fail(SDE_EFORMAT, "%s: unsupported .npy format version %d.%d", path, major, minor);
  }
  if (*header_len > NPY_MAX_HEADER)
    return sde_fail(SDE_EFORMAT, "%s: .npy header length %u is too large", path, *header_len);
  *data_offset += (long)*header_len;
  return SDE_OK;
}

static int read_header(FILE *f, const char *path, long long file_size, npy_header *h,
                       long *data_offset) {
  uint32_t header_len = 0;
  int rc = read_preamble(f, path, &header_len, data_offset);
  if (rc) return rc;
  if (file_size >= 0 && *data_offset > file_size)
    return sde_fail(SDE_EFORMAT, "%s: .npy header length %u runs past the end of the file "
                    "(%lld bytes)", path, header_len, file_size);
  char *text = sde_malloc(header_len + 1);
  if (!text) return SDE_ENOMEM;
  if (fread(text, 1, header_len, f) != header_len) {
    free(text);
    return sde_fail(SDE_EFORMAT, "%s: truncated .npy header", path);
  }
  text[header_len] = '\0';
  rc = parse_header_dict(path, text, header_len, h);
  free(text);
  return rc;
}

/* Converts count little-endian elements of dtype at src into float32 dst[count]. */
static void convert_to_f32(const unsigned char *src, npy_dtype dtype, size_t count, float *dst) {
  switch (dtype) {
    case NPY_F4:
      for (size_t i = 0; i < count; i++) {
        uint32_t u = load_u32le(src + 4 * i);
        memcpy(&dst[i], &u, 4);
      }
      break;
    case NPY_F8:
      for (size_t i = 0; i < count; i++) {
        uint64_t u = load_u64le(src + 8 * i);
        double d;
        memcpy(&d, &u, 8);
        dst[i] = (float)d;
      }
      break;
    case NPY_U1:
      for (size_t i = 0; i < count; i++) dst[i] = (float)src[i];
      break;
    case NPY_I4:
      for (size_t i = 0; i < count; i++) dst[i] = (float)(int32_t)load_u32le(src + 4 * i);
      break;
    case NPY_I8:
      for (size_t i = 0; i < count; i++) dst[i] = (float)(int64_t)load_u64le(src + 8 * i);
      break;
  }
}

/* Makes room for `need` floats in *out (capacity *cap): doubling, but never beyond
 * `count`, so memory follows the data that actually arrives. */
static int grow_output(float **out, size_t *cap, size_t need, size_t count) {
  if (need <= *cap) return SDE_OK;
  size_t new_cap = *cap > count / 2 ? count : *cap * 2;
  if (new_cap < need) new_cap = need;
  float *p = realloc(*out, new_cap * sizeof(float));
  if (!p) return sde_fail(SDE_ENOMEM, "out of memory reading %zu elements", new_cap);
  *out = p;
  *cap = new_cap;
  return SDE_OK;
}

/* Reads count elements through a bounded staging buffer into *out, allocated here. The
 * size of a pipe is unknown, so its header may promise more than ever comes: the output
 * grows with the data read instead of trusting the header. */
static int read_elements(FILE *f, const char *path, const npy_header *h, size_t count,
                         int size_known, float **out) {
  size_t per_chunk = NPY_CHUNK_BYTES / h->itemsize;
  size_t staging_bytes = (count < per_chunk ? count : per_chunk) * h->itemsize;
  size_t cap = size_known ? count : (count < per_chunk ? count : per_chunk);
  unsigned char *staging = sde_malloc(staging_bytes);
  *out = sde_malloc((cap ? cap : 1) * sizeof(float));
  int rc = staging && *out ? SDE_OK : SDE_ENOMEM;
  for (size_t done = 0; !rc && done < count;) {
    size_t n = count - done < per_chunk ? count - done : per_chunk;
    if (fread(staging, h->itemsize, n, f) != n) {
      rc = sde_fail(SDE_EFORMAT, "%s: truncated .npy data (expected %zu elements)", path, count);
      break;
    }
    if ((rc = grow_output(out, &cap, done + n, count))) break;
    convert_to_f32(staging, h->dtype, n, *out + done);
    done += n;
  }
  free(staging);
  return rc;
}

int sde_npy_read(const char *path, float **data, int *ndim, int64_t shape[SDE_NPY_MAX_DIMS]) {
  *data = NULL;
  *ndim = 0;
  if (!path) return sde_fail(SDE_EINVAL, "sde_npy_read: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return sde_fail(SDE_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  long long file_size = -1; // unknown for pipes
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) file_size = (long long)st.st_size;
  npy_header h = {0};
  long data_offset = 0;
  size_t count = 0;
  float *out = NULL;
  int rc = read_header(f, path, file_size, &h, &data_offset);
  if (!rc && count_elements(h.ndim, h.shape, &count))
    rc = sde_fail(SDE_EFORMAT, "%s: shape is too large (element count overflows)", path);
  // check the size against the file before allocating what a hostile header asks for
  if (!rc && file_size >= 0 && (unsigned long long)(file_size - data_offset) / h.itemsize < count)
    rc = sde_fail(SDE_EFORMAT, "%s: truncated .npy data: shape needs %zu bytes, file has %lld",
                  path, count * h.itemsize, file_size - (long long)data_offset);
  if (!rc) rc = read_elements(f, path, &h, count, file_size >= 0, &out);
  fclose(f);
  if (rc) {
    free(out);
    return rc;
  }
  *data = out;
  *ndim = h.ndim;
  for (int i = 0; i < SDE_NPY_MAX_DIMS; i++) shape[i] = i < h.ndim ? h.shape[i] : 0;
  return SDE_OK;
}

// ----------------------------------------------------------------------------
// writing

/* Formats the version-1.0 preamble and header dict, space-padded so the data starts on a
 * 64-byte boundary. Returns the total byte count written to out[cap]. */
static size_t format_header(char *out, size_t cap, const char *descr, int ndim,
                            const int64_t *shape) {
  char dims[SDE_NPY_MAX_DIMS * 24 + 4] = "";
  size_t k = 0;
  for (int i = 0; i < ndim; i++)
    k += (size_t)snprintf(dims + k, sizeof dims - k, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (ndim == 1) snprintf(dims + k, sizeof dims - k, ",");
  int n = snprintf(out + 10, cap - 10, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                   descr, dims);
  size_t total = 10 + (size_t)n + 1; // + the final '\n'
  size_t padded = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  memset(out + 10 + n, ' ', padded - total);
  out[padded - 1] = '\n';
  memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
  out[6] = 1; // version 1.0
  out[7] = 0;
  out[8] = (char)((padded - 10) & 0xFF);
  out[9] = (char)((padded - 10) >> 8);
  return padded;
}

/* Encodes count elements (float32 or float64 source) as little-endian <f4 / <f8. */
static void encode_elements(const void *src, int is_f64, size_t count, unsigned char *dst) {
  for (size_t i = 0; i < count; i++) {
    if (is_f64) {
      uint64_t u;
      memcpy(&u, (const double *)src + i, 8);
      store_u64le(dst + 8 * i, u);
    } else {
      uint32_t u;
      memcpy(&u, (const float *)src + i, 4);
      store_u32le(dst + 4 * i, u);
    }
  }
}

static int write_elements(FILE *f, const void *data, int is_f64, size_t count) {
  size_t itemsize = is_f64 ? 8 : 4;
  size_t per_chunk = NPY_CHUNK_BYTES / itemsize;
  unsigned char *staging = sde_malloc((count < per_chunk ? count : per_chunk) * itemsize);
  if (!staging) return SDE_ENOMEM;
  int rc = SDE_OK;
  for (size_t done = 0; done < count && !rc;) {
    size_t n = count - done < per_chunk ? count - done : per_chunk;
    encode_elements((const char *)data + done * itemsize, is_f64, n, staging);
    if (fwrite(staging, itemsize, n, f) != n) rc = SDE_EIO;
    done += n;
  }
  free(staging);
  return rc;
}

static int npy_write(const char *path, const void *data, int is_f64, int ndim,
                     const int64_t *shape) {
  if (!path) return sde_fail(SDE_EINVAL, "sde_npy_write: path is NULL");
  if (ndim < 0 || ndim > SDE_NPY_MAX_DIMS || (ndim > 0 && !shape))
    return sde_fail(SDE_EINVAL, "%s: ndim must be 0..%d with a shape", path, SDE_NPY_MAX_DIMS);
  size_t count;
  if (count_elements(ndim, shape, &count))
    return sde_fail(SDE_EINVAL, "%s: shape has a negative or too large dimension", path);
  if (count && !data) return sde_fail(SDE_EINVAL, "%s: data is NULL", path);
  char header[512];
  size_t header_bytes = format_header(header, sizeof header, is_f64 ? "<f8" : "<f4", ndim, shape);
  FILE *f = fopen(path, "wb");
  if (!f) return sde_fail(SDE_EIO, "%s: cannot create: %s", path, strerror(errno));
  int rc = fwrite(header, 1, header_bytes, f) == header_bytes ? SDE_OK : SDE_EIO;
  if (!rc) rc = write_elements(f, data, is_f64, count);
  if (fclose(f) != 0 && !rc) rc = SDE_EIO;
  if (rc == SDE_EIO) sde_fail(SDE_EIO, "%s: write failed: %s", path, strerror(errno));
  if (rc) remove(path); // no half-written arrays
  return rc;
}

int sde_npy_write(const char *path, const float *data, int ndim, const int64_t *shape) {
  return npy_write(path, data, 0, ndim, shape);
}

int sde_npy_write_f64(const char *path, const double *data, int ndim, const int64_t *shape) {
  return npy_write(path, data, 1, ndim, shape);
}
