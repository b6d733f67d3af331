/* File I/O: .npy arrays, PNG images (single images, folders and grids), the safetensors
 * container (docs/math.md#safetensors) and atomic file writes.
 * Every reader validates what it reads and reports a clear SDE_EFORMAT/SDE_EIO message. */
#ifndef SCORESDE_IO_H
#define SCORESDE_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDE_NPY_MAX_DIMS 8

/* Reads a C-order .npy file (format 1.0/2.0/3.0) of dtype <f4, <f8, |u1, <i4 or <i8
 * into a malloc'd float32 array. shape[ndim] gets the shape. */
int sde_npy_read(const char *path, float **data, int *ndim, int64_t shape[SDE_NPY_MAX_DIMS]);
/* Writes a float32 (<f4) or float64 (<f8) C-order .npy file. */
int sde_npy_write(const char *path, const float *data, int ndim, const int64_t *shape);
int sde_npy_write_f64(const char *path, const double *data, int ndim, const int64_t *shape);

/* The most pixels a PNG reader decodes (4096 x 4096: 64 MB of 8-bit RGBA, 256 MB as
 * float). Larger images are refused from their header, before any decoding. */
#define SDE_PNG_MAX_PIXELS (1 << 24)

/* Reads an 8-bit PNG as planar float [channels, H, W] in [0,1]. want_channels 1, 3 or 4
 * converts (gray<->RGB, alpha added as 1 or dropped); 0 keeps the file's own (1, 3, 4;
 * gray+alpha becomes 4). 16-bit files are reduced to 8 bits, palettes expanded. An image
 * of more than SDE_PNG_MAX_PIXELS pixels is refused (SDE_EFORMAT) before decoding. */
int sde_png_read(const char *path, int want_channels, float **data, int *channels, int *height,
                 int *width);
/* The same, refusing also an image wider than max_width or taller than max_height
 * (0: no bound beyond the global one), judged from its header: callers that know the
 * size they need (a model's) pass it, so a hostile file costs nothing to refuse. */
int sde_png_read_max(const char *path, int want_channels, int max_height, int max_width,
                     float **data, int *channels, int *height, int *width);
/* Writes planar float [channels, H, W] (values clamped to [0,1], rounded) as an 8-bit PNG. */
int sde_png_write(const char *path, const float *data, int channels, int height, int width);
/* Writes n images [n, C,H,W] as one grid PNG with `cols` columns (0 = about sqrt(n))
 * and `pad` pixels of white between tiles. */
int sde_png_write_grid(const char *path, const float *images, int n, int channels, int height,
                       int width, int cols, int pad);

/* Loads every *.png in a folder (sorted by name) as [n, C,H,W] in [0,1]; all must share
 * the size. want_channels as for sde_png_read (0: the first file's channels). */
int sde_png_read_dir(const char *dir, int want_channels, float **data, int *n, int *channels,
                     int *height, int *width);
/* The same with a size limit for every image, as sde_png_read_max (each file after the
 * first is also held to the first one's size before it is decoded). */
int sde_png_read_dir_max(const char *dir, int want_channels, int max_height, int max_width,
                         float **data, int *n, int *channels, int *height, int *width);

/* ---- safetensors ------------------------------------------------------------------- */

#define SDE_ST_MAX_DIMS 8
#define SDE_ST_MAX_HEADER (100u * 1024u * 1024u) /* larger headers are rejected */

typedef enum {
  SDE_ST_F32, SDE_ST_F16, SDE_ST_BF16, SDE_ST_F64, SDE_ST_I64, SDE_ST_I32, SDE_ST_I16,
  SDE_ST_I8, SDE_ST_U8, SDE_ST_BOOL, SDE_ST_U16, SDE_ST_U32, SDE_ST_U64,
  SDE_ST_NUM_DTYPES
} sde_st_dtype;

typedef struct {
  char *name;
  sde_st_dtype dtype;
  int ndim;
  int64_t shape[SDE_ST_MAX_DIMS];
  int64_t numel;          /* product of shape (1 for a scalar) */
  uint64_t begin, end;    /* byte range inside the data buffer, end exclusive */
} sde_st_tensor;

typedef struct {
  int n_tensors;
  sde_st_tensor *tensors; /* sorted by name */
  int n_meta;
  char **meta_keys, **meta_values; /* __metadata__ string pairs */
  const uint8_t *data;    /* the byte buffer after the header */
  uint64_t data_len;
  /* private */
  void *map;
  size_t map_len;
} sde_safetensors;

/* Maps and validates a file: header length sane (<= SDE_ST_MAX_HEADER and inside the
 * file), JSON object, every entry with a known dtype, a shape whose byte size does not
 * overflow and equals end - begin, offsets in range, no two tensors overlapping, no
 * duplicate names, __metadata__ string -> string. Errors are SDE_EIO / SDE_EFORMAT. */
int sde_st_open(const char *path, sde_safetensors **out);
/* The same over bytes[len] in memory (not copied: keep them alive until close). */
int sde_st_open_memory(const void *bytes, size_t len, sde_safetensors **out);
void sde_st_close(sde_safetensors *st);

const sde_st_tensor *sde_st_find(const sde_safetensors *st, const char *name);
const char *sde_st_metadata(const sde_safetensors *st, const char *key); /* NULL if absent */
const char *sde_st_dtype_name(sde_st_dtype dtype);                      /* "F32", ... */
/* Copies tensor t into out[numel] as float32 (F32 as is; F16, BF16, F64 converted). */
int sde_st_read_f32(const sde_safetensors *st, const sde_st_tensor *t, float *out);

/* One float32 tensor to write. */
typedef struct {
  const char *name;
  int ndim;
  int64_t shape[SDE_ST_MAX_DIMS];
  const float *data;
} sde_st_entry;

/* Serialises entries[n] (F32, in the given order) plus metadata pairs
 * meta[2*n_meta] = {key0, value0, key1, ...} into a malloc'd buffer; the header is
 * space-padded so the data start on an 8-byte boundary. */
int sde_st_serialize(const sde_st_entry *entries, int n, const char *const *meta, int n_meta,
                     uint8_t **bytes, size_t *len);
/* Writes the file atomically (sde_write_file_atomic): path is never half-written. */
int sde_st_write(const char *path, const sde_st_entry *entries, int n, const char *const *meta,
                 int n_meta);

/* Replaces path with data[len] atomically: written to path.tmp.<pid>, flushed to disk,
 * renamed over path, and the folder flushed, so path is the old file or the complete new
 * one even if the writer is killed. Stale temporaries of path are removed first. */
int sde_write_file_atomic(const char *path, const void *data, size_t len);
/* Removes path.tmp.<pid> files beside path whose writer process is no longer running (a
 * killed writer leaves one); *removed (may be NULL) gets their number. */
int sde_remove_stale_temporaries(const char *path, int *removed);

/* Reads a whole file into a malloc'd buffer of at most max_bytes (plus a NUL). */
int sde_read_file(const char *path, size_t max_bytes, char **data, size_t *len);

/* True when path ends with suffix (case-insensitive). */
int sde_has_suffix(const char *path, const char *suffix);

#ifdef __cplusplus
}
#endif
#endif
