/* PNG images through libpng: single images as planar float [C,H,W] in [0,1], grids of
 * samples, and folders of training images. libpng reports errors by longjmp; every call
 * that may jump lives in one small function whose resources are owned by its caller, so
 * a bad file becomes an SDE_EFORMAT message and nothing leaks. */
#include <dirent.h>
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scoresde/error.h"
#include "scoresde/io.h"

#define PNG_READ_MAX_SIDE 16384   // refuse larger images: hostile or not a dataset image
#define PNG_WRITE_MAX_SIDE 1000000 // libpng's own default limit
#define PNG_CHUNK_MAX (1u << 20)   // ancillary chunks (iCCP, zTXt...) we never use
#define PNG_CHUNK_CACHE_MAX 128    // how many of them libpng keeps

// ----------------------------------------------------------------------------
// libpng error plumbing

typedef struct {
  char message[256]; // libpng's error, copied before the longjmp
  char warning[128]; // its first warning, which often explains the error
} png_error_state;

static void on_png_error(png_structp png, png_const_charp msg) {
  png_error_state *st = png_get_error_ptr(png);
  const char *text = msg ? msg : "libpng error";
  if (st->warning[0]) snprintf(st->message, sizeof st->message, "%s (%s)", text, st->warning);
  else snprintf(st->message, sizeof st->message, "%s", text);
  png_longjmp(png, 1);
}

/* The engine never prints: warnings are kept only to explain a later error. */
static void on_png_warning(png_structp png, png_const_charp msg) {
  png_error_state *st = png_get_error_ptr(png);
  if (!st->warning[0] && msg) snprintf(st->warning, sizeof st->warning, "%s", msg);
}

/* The file after its signature: the IHDR bytes already read to check the size first,
 * then the rest of the stream (no seek back, so pipes work too). */
typedef struct {
  FILE *f;
  unsigned char head[16]; // IHDR length, type, width, height
  size_t head_len, head_pos;
} png_source;

/* libpng read callback; a short read is a truncated file, said plainly. */
static void read_from_file(png_structp png, png_bytep out, size_t n) {
  png_source *src = png_get_io_ptr(png);
  size_t k = src->head_len - src->head_pos;
  if (k > n) k = n;
  memcpy(out, src->head + src->head_pos, k);
  src->head_pos += k;
  if (fread(out + k, 1, n - k, src->f) != n - k)
    png_error(png, "unexpected end of file (truncated PNG)");
}

// ----------------------------------------------------------------------------
// reading

typedef struct {
  png_structp png;
  png_infop info;
  png_error_state err;
  unsigned char *pixels; // [height, width, channels] 8-bit, interleaved
  png_bytep *rows;       // [height] pointers into pixels
  int width, height;
  int channels;          // after expansion: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
} png_reader;

/* Asks libpng for 8-bit gray/GA/RGB/RGBA whatever the file stores. */
static void set_read_transforms(png_structp png, png_infop info) {
  int bit_depth = png_get_bit_depth(png, info);
  int color = png_get_color_type(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
  if (bit_depth == 16) png_set_scale_16(png); // rounds, unlike strip_16
#else
  if (bit_depth == 16) png_set_strip_16(png);
#endif
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
}

/* Decodes the image after its 8 signature bytes, within max_w x max_h (libpng's own
 * check, behind the one on the header). May longjmp back here; everything it allocates
 * is stored in *r and freed by the caller. */
static int decode_png(png_reader *r, png_source *src, const char *path, int max_w, int max_h) {
  if (setjmp(png_jmpbuf(r->png)))
    return sde_fail(SDE_EFORMAT, "%s: PNG: %s", path, r->err.message);
  png_set_read_fn(r->png, src, read_from_file);
  png_set_sig_bytes(r->png, 8);
  png_set_user_limits(r->png, (png_uint_32)max_w, (png_uint_32)max_h);
  png_set_chunk_malloc_max(r->png, PNG_CHUNK_MAX);
  png_set_chunk_cache_max(r->png, PNG_CHUNK_CACHE_MAX);
  png_read_info(r->png, r->info);
  set_read_transforms(r->png, r->info);
  png_uint_32 width = png_get_image_width(r->png, r->info);
  png_uint_32 height = png_get_image_height(r->png, r->info);
  r->channels = png_get_channels(r->png, r->info);
  size_t rowbytes = png_get_rowbytes(r->png, r->info);
  if (width == 0 || height == 0 || width > (png_uint_32)max_w || height > (png_uint_32)max_h ||
      (uint64_t)width * height > SDE_PNG_MAX_PIXELS)
    return sde_fail(SDE_EFORMAT, "%s: image size %ux%u is outside 1x1..%dx%d", path,
                    (unsigned)width, (unsigned)height, max_w, max_h);
  if (r->channels < 1 || r->channels > 4 || rowbytes != (size_t)width * r->channels)
    return sde_fail(SDE_EFORMAT, "%s: unexpected pixel layout after conversion", path);
  r->width = (int)width;
  r->height = (int)height;
  r->pixels = sde_malloc(rowbytes * height);
  r->rows = sde_malloc(height * sizeof(png_bytep));
  if (!r->pixels || !r->rows) return SDE_ENOMEM;
  for (png_uint_32 y = 0; y < height; y++) r->rows[y] = r->pixels + y * rowbytes;
  png_read_image(r->png, r->rows);
  return SDE_OK;
}

/* Channels of the result: the request, or the file's own (gray+alpha becomes RGBA). */
static int output_channels(int file_channels, int want) {
  if (want) return want;
  return file_channels == 2 ? 4 : file_channels;
}

/* Interleaved 8-bit pixels[count, file_channels] -> planar out[out_channels, count]:
 * gray replicates to RGB, RGB averages to gray, alpha is dropped or added as 1.
 * Values are k / 255 exactly (divided, not multiplied by a rounded 1/255). */
static void pixels_to_planar(const unsigned char *pixels, int file_channels, size_t count,
                             int out_channels, float *out) {
  int has_color = file_channels >= 3, has_alpha = file_channels == 2 || file_channels == 4;
  for (size_t i = 0; i < count; i++) {
    const unsigned char *p = pixels + i * (size_t)file_channels;
    float r = p[0], g = has_color ? p[1] : p[0], b = has_color ? p[2] : p[0];
    float a = has_alpha ? p[file_channels - 1] : 255.0f;
    if (out_channels == 1) {
      out[i] = has_color ? (r + g + b) / 765.0f : r / 255.0f;
      continue;
    }
    out[i] = r / 255.0f;
    out[count + i] = g / 255.0f;
    out[2 * count + i] = b / 255.0f;
    if (out_channels == 4) out[3 * count + i] = a / 255.0f;
  }
}

static uint32_t load_u32be(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Refuses, from the IHDR's width and height alone, an image larger than max_w x max_h or
 * than SDE_PNG_MAX_PIXELS: a small file can declare gigabytes of pixels, so the size is
 * judged before anything is decoded or allocated. `bound` says where max_w x max_h comes
 * from, for the message. */
static int check_declared_size(const char *path, const png_source *src, int max_w, int max_h,
                               const char *bound) {
  if (src->head_len < 16 || memcmp(src->head + 4, "IHDR", 4) != 0)
    return SDE_OK; // not a valid header: libpng says why
  uint32_t w = load_u32be(src->head + 8), h = load_u32be(src->head + 12);
  if (w > (uint32_t)max_w || h > (uint32_t)max_h)
    return sde_fail(SDE_EFORMAT, "%s: the image is %ux%u pixels, larger than the %dx%d %s "
                    "(refused before decoding)", path, (unsigned)w, (unsigned)h, max_w, max_h,
                    bound);
  if ((uint64_t)w * h > SDE_PNG_MAX_PIXELS)
    return sde_fail(SDE_EFORMAT, "%s: the image is %ux%u pixels, more than the limit of %d "
                    "pixels (refused before decoding)", path, (unsigned)w, (unsigned)h,
                    SDE_PNG_MAX_PIXELS);
  return SDE_OK;
}

/* Opens path, checks the PNG signature (so non-PNG files get a plain message) and reads
 * the start of the IHDR chunk into src->head. */
static int open_png(const char *path, png_source *src) {
  unsigned char sig[8];
  src->f = fopen(path, "rb");
  if (!src->f) return sde_fail(SDE_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (fread(sig, 1, 8, src->f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
    fclose(src->f);
    src->f = NULL;
    return sde_fail(SDE_EFORMAT, "%s: not a PNG file", path);
  }
  src->head_len = fread(src->head, 1, sizeof src->head, src->f);
  src->head_pos = 0;
  return SDE_OK;
}

/* A side limit: the caller's, else the global one. */
static int side_limit(int max) { return max > 0 && max < PNG_READ_MAX_SIDE ? max : PNG_READ_MAX_SIDE; }

/* sde_png_read_max, with the origin of the size limit named in its message. */
static int png_read_limited(const char *path, int want_channels, int max_height, int max_width,
                            const char *bound, float **data, int *channels, int *height,
                            int *width) {
  *data = NULL;
  if (!path) return sde_fail(SDE_EINVAL, "sde_png_read: path is NULL");
  if (want_channels != 0 && want_channels != 1 && want_channels != 3 && want_channels != 4)
    return sde_fail(SDE_EINVAL, "%s: want_channels must be 0, 1, 3 or 4 (got %d)", path,
                    want_channels);
  const int max_w = side_limit(max_width), max_h = side_limit(max_height);
  png_source src;
  int rc = open_png(path, &src);
  if (rc) return rc;
  if ((rc = check_declared_size(path, &src, max_w, max_h, bound))) {
    fclose(src.f);
    return rc;
  }
  png_reader r = {0};
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r.err, on_png_error, on_png_warning);
  r.info = r.png ? png_create_info_struct(r.png) : NULL;
  rc = r.info ? decode_png(&r, &src, path, max_w, max_h)
              : sde_fail(SDE_ENOMEM, "%s: cannot create a PNG reader", path);
  float *out = NULL;
  int out_c = output_channels(r.channels, want_channels);
  size_t count = (size_t)r.width * (size_t)r.height;
  if (!rc && !(out = sde_malloc((size_t)out_c * count * sizeof(float)))) rc = SDE_ENOMEM;
  if (!rc) pixels_to_planar(r.pixels, r.channels, count, out_c, out);
  png_destroy_read_struct(&r.png, &r.info, NULL);
  free(r.rows);
  free(r.pixels);
  fclose(src.f);
  if (rc) return rc;
  *data = out;
  *channels = out_c;
  *height = r.height;
  *width = r.width;
  return SDE_OK;
}

int sde_png_read(const char *path, int want_channels, float **data, int *channels, int *height,
                 int *width) {
  return sde_png_read_max(path, want_channels, 0, 0, data, channels, height, width);
}

int sde_png_read_max(const char *path, int want_channels, int max_height, int max_width,
                     float **data, int *channels, int *height, int *width) {
  const char *bound = max_height > 0 || max_width > 0 ? "expected here" : "limit";
  return png_read_limited(path, want_channels, max_height, max_width, bound, data, channels,
                          height, width);
}

// ----------------------------------------------------------------------------
// writing

typedef struct {
  png_structp png;
  png_infop info;
  png_error_state err;
  unsigned char *row; // [width, channels] staging for one row
} png_writer;

static unsigned char to_byte(float x) {
  if (!(x > 0.0f)) return 0; // also NaN
  if (x >= 1.0f) return 255;
  return (unsigned char)(x * 255.0f + 0.5f);
}

static int color_type_for(int channels) {
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                               PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
  return types[channels];
}

/* Encodes planar data[channels, height, width]. May longjmp back here; w owns the row. */
static int encode_png(png_writer *w, FILE *f, const char *path, const float *data, int channels,
                      int height, int width) {
  if (setjmp(png_jmpbuf(w->png)))
    return sde_fail(SDE_EIO, "%s: PNG write: %s", path, w->err.message);
  png_init_io(w->png, f);
  png_set_IHDR(w->png, w->info, (png_uint_32)width, (png_uint_32)height, 8,
               color_type_for(channels), PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(w->png, w->info);
  size_t plane = (size_t)height * (size_t)width;
  for (int y = 0; y < height; y++) {
    const float *src = data + (size_t)y * width;
    for (int x = 0; x < width; x++)
      for (int c = 0; c < channels; c++)
        w->row[(size_t)x * channels + c] = to_byte(src[c * plane + x]);
    png_write_row(w->png, w->row);
  }
  png_write_end(w->png, NULL);
  return SDE_OK;
}

static int check_image_args(const char *path, const void *data, int channels, int height,
                            int width) {
  if (!path || !data) return sde_fail(SDE_EINVAL, "PNG write: path and data are required");
  if (channels < 1 || channels > 4)
    return sde_fail(SDE_EINVAL, "%s: channels must be 1..4 (got %d)", path, channels);
  if (height < 1 || width < 1 || height > PNG_WRITE_MAX_SIDE || width > PNG_WRITE_MAX_SIDE)
    return sde_fail(SDE_EINVAL, "%s: image size %dx%d is outside 1..%d", path, width, height,
                    PNG_WRITE_MAX_SIDE);
  return SDE_OK;
}

int sde_png_write(const char *path, const float *data, int channels, int height, int width) {
  int rc = check_image_args(path, data, channels, height, width);
  if (rc) return rc;
  FILE *f = fopen(path, "wb");
  if (!f) return sde_fail(SDE_EIO, "%s: cannot create: %s", path, strerror(errno));
  png_writer w = {0};
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w.err, on_png_error, on_png_warning);
  w.info = w.png ? png_create_info_struct(w.png) : NULL;
  w.row = sde_malloc((size_t)width * channels);
  if (!w.png || !w.info) rc = sde_fail(SDE_ENOMEM, "%s: cannot create a PNG writer", path);
  else if (!w.row) rc = SDE_ENOMEM;
  else rc = encode_png(&w, f, path, data, channels, height, width);
  png_destroy_write_struct(&w.png, &w.info);
  free(w.row);
  if (fclose(f) != 0 && !rc) rc = sde_fail(SDE_EIO, "%s: write failed: %s", path, strerror(errno));
  if (rc) remove(path); // no half-written images
  return rc;
}

/* Copies image[C, h, w] into grid[C, grid_h, grid_w] with its top-left corner at (y0, x0). */
static void place_tile(float *grid, int grid_h, int grid_w, const float *image, int channels,
                       int h, int w, int y0, int x0) {
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < h; y++)
      memcpy(grid + ((size_t)c * grid_h + (size_t)(y0 + y)) * grid_w + x0,
             image + ((size_t)c * h + y) * w, (size_t)w * sizeof(float));
}

int sde_png_write_grid(const char *path, const float *images, int n, int channels, int height,
                       int width, int cols, int pad) {
  int rc = check_image_args(path, images, channels, height, width);
  if (rc) return rc;
  if (n < 1 || cols < 0 || pad < 0)
    return sde_fail(SDE_EINVAL, "%s: grid needs n >= 1, cols >= 0, pad >= 0", path);
  if (cols == 0)
    for (cols = 1; (long long)cols * cols < n; cols++) {} // ceil(sqrt(n))
  if (cols > n) cols = n;
  int rows = (n + cols - 1) / cols;
  long long grid_w = (long long)cols * width + (long long)(cols - 1) * pad;
  long long grid_h = (long long)rows * height + (long long)(rows - 1) * pad;
  if (grid_w > PNG_WRITE_MAX_SIDE || grid_h > PNG_WRITE_MAX_SIDE)
    return sde_fail(SDE_EINVAL, "%s: grid of %lldx%lld pixels is too large", path, grid_w, grid_h);
  size_t grid_count = (size_t)channels * (size_t)grid_h * (size_t)grid_w;
  float *grid = sde_malloc(grid_count * sizeof(float));
  if (!grid) return SDE_ENOMEM;
  for (size_t i = 0; i < grid_count; i++) grid[i] = 1.0f; // white (and opaque) padding
  size_t image_size = (size_t)channels * height * width;
  for (int k = 0; k < n; k++)
    place_tile(grid, (int)grid_h, (int)grid_w, images + (size_t)k * image_size, channels, height,
               width, (k / cols) * (height + pad), (k % cols) * (width + pad));
  rc = sde_png_write(path, grid, channels, (int)grid_h, (int)grid_w);
  free(grid);
  return rc;
}

// ----------------------------------------------------------------------------
// folders

typedef struct {
  char **names; // file names (not paths), sorted after listing
  size_t count, cap;
} name_list;

static void free_names(name_list *list) {
  for (size_t i = 0; i < list->count; i++) free(list->names[i]);
  free(list->names);
}

/* "dir/name" in a malloc'd string. */
static char *join_path(const char *dir, const char *name) {
  size_t d = strlen(dir), n = strlen(name);
  int slash = d > 0 && dir[d - 1] != '/';
  char *path = sde_malloc(d + slash + n + 1);
  if (!path) return NULL;
  memcpy(path, dir, d);
  if (slash) path[d] = '/';
  memcpy(path + d + slash, name, n + 1);
  return path;
}

static int is_regular_file(const char *dir, const char *name) {
  char *path = join_path(dir, name);
  struct stat st;
  int ok = path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
  free(path);
  return ok;
}

static int push_name(name_list *list, const char *name) {
  if (list->count == list->cap) {
    size_t cap = list->cap ? list->cap * 2 : 64;
    char **names = realloc(list->names, cap * sizeof(char *));
    if (!names) return sde_fail(SDE_ENOMEM, "out of memory listing a folder");
    list->names = names;
    list->cap = cap;
  }
  size_t n = strlen(name);
  char *copy = sde_malloc(n + 1);
  if (!copy) return SDE_ENOMEM;
  memcpy(copy, name, n + 1);
  list->names[list->count++] = copy;
  return SDE_OK;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files named *.png (any case) in dir, sorted by name; hidden files are skipped
 * (e.g. macOS "._x.png" resource forks). */
static int list_png_files(const char *dir, name_list *list) {
  DIR *d = opendir(dir);
  if (!d) return sde_fail(SDE_EIO, "%s: cannot open folder: %s", dir, strerror(errno));
  int rc = SDE_OK;
  struct dirent *e;
  while (!rc && (e = readdir(d)) != NULL)
    if (e->d_name[0] != '.' && sde_has_suffix(e->d_name, ".png") && is_regular_file(dir, e->d_name))
      rc = push_name(list, e->d_name);
  closedir(d);
  if (!rc && list->count == 0) rc = sde_fail(SDE_EIO, "%s: no .png files in the folder", dir);
  if (!rc) qsort(list->names, list->count, sizeof(char *), compare_names);
  return rc;
}

/* The images of one folder as they are loaded. */
typedef struct {
  const char *dir;
  name_list files;
  float *all;        // [files.count, c, h, w]
  int c, h, w;       // fixed by the first file
  int max_h, max_w;  // the caller's limit (0: the global one)
} dir_images;

/* Reads file i into its slot (the first file fixes the size and allocates `all`; the
 * others may be no larger, checked on their headers). */
static int load_dir_image(dir_images *d, size_t i, int want) {
  char *path = join_path(d->dir, d->files.names[i]);
  if (!path) return SDE_ENOMEM;
  float *img;
  int c, h, w;
  char bound[600];
  if (i) snprintf(bound, sizeof bound, "of %s: all images must share the size", d->files.names[0]);
  else snprintf(bound, sizeof bound, "%s", d->max_h > 0 || d->max_w > 0 ? "expected here" : "limit");
  int rc = png_read_limited(path, i ? d->c : want, i ? d->h : d->max_h, i ? d->w : d->max_w,
                            bound, &img, &c, &h, &w);
  if (rc) {
    free(path);
    return rc;
  }
  size_t image_size = (size_t)c * h * w, n = d->files.count;
  if (i == 0) {
    d->c = c, d->h = h, d->w = w;
    if (n > SIZE_MAX / sizeof(float) / image_size)
      rc = sde_fail(SDE_ENOMEM, "%s: %zu images are too many to hold", d->dir, n);
    else if (!(d->all = sde_malloc(n * image_size * sizeof(float))))
      rc = SDE_ENOMEM;
  } else if (h != d->h || w != d->w) {
    rc = sde_fail(SDE_EFORMAT, "%s: image is %dx%d but %s is %dx%d; all images must share the size",
                  path, w, h, d->files.names[0], d->w, d->h);
  }
  if (!rc) memcpy(d->all + i * image_size, img, image_size * sizeof(float));
  free(img);
  free(path);
  return rc;
}

int sde_png_read_dir(const char *dir, int want_channels, float **data, int *n, int *channels,
                     int *height, int *width) {
  return sde_png_read_dir_max(dir, want_channels, 0, 0, data, n, channels, height, width);
}

int sde_png_read_dir_max(const char *dir, int want_channels, int max_height, int max_width,
                         float **data, int *n, int *channels, int *height, int *width) {
  *data = NULL;
  *n = 0;
  if (!dir) return sde_fail(SDE_EINVAL, "sde_png_read_dir: dir is NULL");
  if (want_channels != 0 && want_channels != 1 && want_channels != 3 && want_channels != 4)
    return sde_fail(SDE_EINVAL, "%s: want_channels must be 0, 1, 3 or 4 (got %d)", dir,
                    want_channels);
  dir_images d = {.dir = dir, .max_h = max_height, .max_w = max_width};
  int rc = list_png_files(dir, &d.files);
  if (!rc && d.files.count > (size_t)INT32_MAX) rc = sde_fail(SDE_EINVAL, "%s: too many images", dir);
  for (size_t i = 0; !rc && i < d.files.count; i++) rc = load_dir_image(&d, i, want_channels);
  if (!rc) {
    *data = d.all;
    *n = (int)d.files.count;
    *channels = d.c;
    *height = d.h;
    *width = d.w;
  } else {
    free(d.all);
  }
  free_names(&d.files);
  return rc;
}
