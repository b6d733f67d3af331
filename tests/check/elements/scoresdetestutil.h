/* gst-scoresde: helpers shared by the inpaint, colorize and pipeline tests
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Header-only: training images of the shipped default model as packed 8-bit frames,
 * PSNR, and waiting for bus errors.
 */
#ifndef __SCORESDE_TEST_UTIL_H__
#define __SCORESDE_TEST_UTIL_H__

#include <math.h>
#include <stdlib.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <gst/check/gstcheck.h>
#include <scoresde/scoresde.h>

/* The folder of the shipped default model: that of $SCORESDE_DEFAULT_MODEL (set by the
 * test environment, which also makes it the elements' default), else the compile-time
 * SCORESDE_MODELS_DIR. */
static inline const gchar *
scoresde_test_models_dir (void)
{
  static gchar *dir = NULL;
  const gchar *model = g_getenv ("SCORESDE_DEFAULT_MODEL");

  if (dir == NULL) {
    if (model != NULL && model[0] != '\0')
      dir = g_path_get_dirname (model);
#ifdef SCORESDE_MODELS_DIR
    else
      dir = g_strdup (SCORESDE_MODELS_DIR);
#endif
  }
  fail_unless (dir != NULL, "set SCORESDE_DEFAULT_MODEL to models/shapes-32.json");
  return dir;
}

/* Reads training image `index` of the default model (models/shapes32/shape_NN.png) as
 * packed RGB (3 bytes per pixel) or RGBA (alpha 255); returns a g_malloc'd buffer. */
static inline guint8 *
scoresde_test_training_image (gint index, gint bpp, gint * width, gint * height)
{
  gchar *path = g_strdup_printf ("%s/shapes32/shape_%02d.png",
      scoresde_test_models_dir (), index);
  gfloat *planar = NULL;
  gint c, h, w, x, y, k;
  guint8 *out;

  fail_unless (sde_png_read (path, 3, &planar, &c, &h, &w) == SDE_OK,
      "cannot read %s: %s", path, sde_errmsg ());
  out = g_malloc ((gsize) w * h * bpp);
  for (y = 0; y < h; y++)
    for (x = 0; x < w; x++) {
      guint8 *p = out + ((gsize) y * w + x) * bpp;
      for (k = 0; k < 3; k++)
        p[k] = (guint8) lrintf (planar[(gsize) k * h * w + (gsize) y * w + x] *
            255.0f);
      if (bpp == 4)
        p[3] = 255;
    }
  free (planar);
  g_free (path);
  *width = w;
  *height = h;
  return out;
}

/* Training image i (of n) of the small test data sets, [C, size, size] in [0,1], in
 * multiples of 1/255 so 8-bit frames hold it exactly: a coloured square on a
 * gradient, different for every i. */
static inline void
scoresde_test_small_image (gint i, gint channels, gint size, gfloat * out)
{
  gint c, x, y;

  for (c = 0; c < channels; c++)
    for (y = 0; y < size; y++)
      for (x = 0; x < size; x++) {
        gint v = 30 + 11 * ((x + 2 * y + c + i) % 5);
        if (x >= i % (size / 2) && x < i % (size / 2) + size / 2
            && y >= size / 4 && y < size / 4 + size / 2)
          v = 90 + 50 * ((c + i) % 3);
        out[((gsize) c * size + y) * size + x] = v / 255.0f;
      }
}

/* Writes an empirical model over n images of channels x size x size under the SDE
 * `kind` (VE: sigma_max 20; VP, sub-VP: beta 0.1 .. 20) into a new temporary folder
 * and returns the JSON path (g_free); remove it with scoresde_test_remove_model(). */
static inline gchar *
scoresde_test_write_model_sde (gint n, gint channels, gint size,
    gboolean centered, sde_kind kind)
{
  gchar *dir = g_dir_make_tmp ("scoresde-model-XXXXXX", NULL);
  gchar *npy = g_build_filename (dir, "data.npy", NULL);
  gchar *json = g_build_filename (dir, "model.json", NULL);
  gsize D = (gsize) channels * size * size;
  gfloat *data = g_new (gfloat, n * D);
  int64_t shape[4] = { n, channels, size, size };
  gchar *text;
  gint i;

  fail_unless (dir != NULL);
  /* data in [0,1]: the loader maps it with 2x-1 for a centered model */
  for (i = 0; i < n; i++)
    scoresde_test_small_image (i, channels, size, data + i * D);
  fail_unless (sde_npy_write (npy, data, 4, shape) == SDE_OK);
  text = g_strdup_printf ("{\"kind\": \"empirical\", \"data\": \"data.npy\", "
      "\"centered\": %s, \"sde\": {\"kind\": \"%s\", %s, \"N\": 1000}}\n",
      centered ? "true" : "false", sde_kind_name (kind), kind == SDE_VE ?
      "\"sigma_min\": 0.01, \"sigma_max\": 20.0" :
      "\"beta_min\": 0.1, \"beta_max\": 20.0");
  fail_unless (g_file_set_contents (json, text, -1, NULL));
  g_free (text);
  g_free (data);
  g_free (npy);
  g_free (dir);
  return json;
}

static inline gchar *
scoresde_test_write_model (gint n, gint channels, gint size, gboolean centered)
{
  return scoresde_test_write_model_sde (n, channels, size, centered, SDE_VE);
}

static inline void
scoresde_test_remove_model (const gchar * json)
{
  gchar *dir = g_path_get_dirname (json);
  gchar *npy = g_build_filename (dir, "data.npy", NULL);

  g_unlink (json);
  g_unlink (npy);
  g_rmdir (dir);
  g_free (npy);
  g_free (dir);
}

/* PSNR in dB over the first 3 bytes of every pixel of two packed images. */
static inline gdouble
scoresde_test_psnr (const guint8 * a, gint a_bpp, gsize a_stride,
    const guint8 * b, gint b_bpp, gsize b_stride, gint width, gint height)
{
  gdouble se = 0.0;
  gint x, y, k;

  for (y = 0; y < height; y++)
    for (x = 0; x < width; x++)
      for (k = 0; k < 3; k++) {
        gdouble d = (gdouble) a[y * a_stride + x * a_bpp + k] -
            b[y * b_stride + x * b_bpp + k];
        se += d * d;
      }
  se /= 3.0 * width * height;
  return se <= 0.0 ? 99.0 : 10.0 * log10 (255.0 * 255.0 / se);
}

/* Wraps `data` (copied) in a buffer with the given timestamps. */
static inline GstBuffer *
scoresde_test_buffer (const guint8 * data, gsize size, GstClockTime pts,
    GstClockTime duration)
{
  GstBuffer *buf = gst_buffer_new_memdup (data, size);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = duration;
  return buf;
}

/* Pops the first ERROR message from `bus` (waiting up to `timeout`), or NULL. */
static inline GstMessage *
scoresde_test_pop_error (GstBus * bus, GstClockTime timeout)
{
  return gst_bus_timed_pop_filtered (bus, timeout, GST_MESSAGE_ERROR);
}

/* Asserts that `msg` is an error in `domain`/`code` and prints its text. */
static inline void
scoresde_test_assert_error (GstMessage * msg, GQuark domain, gint code)
{
  GError *err = NULL;
  gchar *debug = NULL;

  fail_unless (msg != NULL, "expected an error message on the bus");
  gst_message_parse_error (msg, &err, &debug);
  GST_INFO ("error from %s: %s (%s)", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
      err->message, GST_STR_NULL (debug));
  fail_unless (g_error_matches (err, domain, code),
      "expected error %s/%d, got %s/%d: %s", g_quark_to_string (domain), code,
      g_quark_to_string (err->domain), err->code, err->message);
  g_clear_error (&err);
  g_free (debug);
}

#endif /* __SCORESDE_TEST_UTIL_H__ */
