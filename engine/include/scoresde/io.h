/* File I/O: .npy arrays and PNG images (single images, folders and grids).
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
