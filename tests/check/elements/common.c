/* Shared helpers of the scoresde element tests: tiny analytic models written on the
 * fly, bus error checks, PSNR. Included by each test file (all static).
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/* Each test uses its own subset of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <math.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <gst-scoresde/gstscoresde.h>
#include <scoresde/scoresde.h>

#define TINY_SIZE 8
#define TINY_CHANNELS 3
#define TINY_IMAGES 4
#define TINY_D (TINY_CHANNELS * TINY_SIZE * TINY_SIZE)

static gchar *tmp_dir = NULL;
static pid_t tmp_owner = 0;

static void
remove_tmp_dir (void)
{
  GDir *dir;
  const gchar *name;

  if (tmp_dir == NULL || getpid () != tmp_owner)
    return;                     /* forked test children leave it to the parent */
  dir = g_dir_open (tmp_dir, 0, NULL);
  if (dir) {
    while ((name = g_dir_read_name (dir)) != NULL) {
      gchar *p = g_build_filename (tmp_dir, name, NULL);
      g_unlink (p);
      g_free (p);
    }
    g_dir_close (dir);
  }
  g_rmdir (tmp_dir);
  g_clear_pointer (&tmp_dir, g_free);
}

static const gchar *
test_tmp_dir (void)
{
  if (tmp_dir == NULL) {
    tmp_dir = g_dir_make_tmp ("scoresde-check-XXXXXX", NULL);
    g_assert (tmp_dir != NULL);
    tmp_owner = getpid ();
    atexit (remove_tmp_dir);
  }
  return tmp_dir;
}

/* Training image i of the tiny data set in [0,1], [C,H,W]: a coloured square on a
 * gradient, different for every (variant, i). */
static void
tiny_image (gint variant, gint i, gint channels, gfloat * out)
{
  gint c, y, x;

  for (c = 0; c < channels; c++)
    for (y = 0; y < TINY_SIZE; y++)
      for (x = 0; x < TINY_SIZE; x++) {
        /* multiples of 1/255, so 8-bit frames hold the training data exactly */
        gint v = 25 + 13 * ((x + y + c + i + variant) % 4);
        gboolean in_square = x >= 1 + i && x < 5 + i / 2 && y >= 2 && y < 6;
        if (in_square)
          v = 76 + 51 * ((c + i + variant) % 3);
        out[(c * TINY_SIZE + y) * TINY_SIZE + x] = v / 255.0f;
      }
}

/* Writes an empirical model over TINY_IMAGES 8x8 images under the SDE `kind` (VE:
 * sigma_max 20; VP and sub-VP: beta 0.1 .. 20) and returns its JSON path (owned by
 * the helper). variant selects another data set, hence another model id. */
static const gchar *
tiny_model_path_sde (gint variant, gint channels, sde_kind kind)
{
  static gchar *paths[4][5][3];
  gchar *base, *npy, *json, *npy_name, *text;
  gfloat *data;
  int64_t shape[4] = { TINY_IMAGES, channels, TINY_SIZE, TINY_SIZE };
  gint i;

  g_assert (variant >= 0 && variant < 4 && channels >= 1 && channels <= 4);
  g_assert ((guint) kind < 3);
  if (paths[variant][channels][kind])
    return paths[variant][channels][kind];

  base = g_strdup_printf ("tiny%d_c%d_%s", variant, channels,
      sde_kind_name (kind));
  npy_name = g_strdup_printf ("%s.npy", base);
  npy = g_build_filename (test_tmp_dir (), npy_name, NULL);
  data = g_new (gfloat, TINY_IMAGES * channels * TINY_SIZE * TINY_SIZE);
  for (i = 0; i < TINY_IMAGES; i++)
    tiny_image (variant, i, channels,
        data + i * channels * TINY_SIZE * TINY_SIZE);
  /* g_assert: this also runs at suite creation, outside any test */
  g_assert_cmpint (sde_npy_write (npy, data, 4, shape), ==, SDE_OK);
  g_free (data);

  text = g_strdup_printf ("{\"kind\": \"empirical\", \"data\": \"%s\", "
      "\"centered\": false, \"sde\": {\"kind\": \"%s\", %s, \"N\": 1000}}\n",
      npy_name, sde_kind_name (kind), kind == SDE_VE ?
      "\"sigma_min\": 0.01, \"sigma_max\": 20.0" :
      "\"beta_min\": 0.1, \"beta_max\": 20.0");
  json = g_strdup_printf ("%s/%s.json", test_tmp_dir (), base);
  g_assert (g_file_set_contents (json, text, -1, NULL));
  g_free (text);
  g_free (npy);
  g_free (npy_name);
  g_free (base);
  paths[variant][channels][kind] = json;
  return json;
}

static const gchar *
tiny_model_path_full (gint variant, gint channels)
{
  return tiny_model_path_sde (variant, channels, SDE_VE);
}

static const gchar *
tiny_model_path (void)
{
  return tiny_model_path_full (0, TINY_CHANNELS);
}

/* A file that is not a model. */
static const gchar *
bad_model_path (void)
{
  static gchar *path = NULL;

  if (path == NULL) {
    path = g_build_filename (test_tmp_dir (), "bad.json", NULL);
    g_assert (g_file_set_contents (path, "{\"kind\": \"gmm\", \"weights\": ",
            -1, NULL));
  }
  return path;
}

/* The id of the model in `path`, as the caps carry it (g_free). */
static const GstScoreSdeDeviceSettings cpu_device = {
  GST_SCORESDE_DEVICE_CPU, 0, GST_SCORESDE_PRECISION_FP32
};

static gchar *
model_id_of (const gchar * path)
{
  GError *err = NULL;
  GstScoreSdeModel *m = gst_scoresde_model_cache_acquire (NULL, path,
      &cpu_device, &err);
  gchar *id;

  fail_unless (m != NULL, "%s", err ? err->message : "?");
  id = g_strdup (m->id);
  gst_scoresde_model_cache_release (m);
  return id;
}

/* Latent caps string for the tiny model with the given id (NULL: no scoresde field). */
static gchar *
latent_caps_str (const gchar * model_id, gint w, gint h, gint c, gint fps_n,
    gint fps_d)
{
  GString *s = g_string_new (NULL);

  g_string_append_printf (s, "other/tensors, format=(string)static, "
      "num_tensors=(int)1, types=(string)float32, dimensions=(string)%d:%d:%d:1, "
      "framerate=(fraction)%d/%d", w, h, c, fps_n, fps_d);
  if (model_id)
    g_string_append_printf (s, ", scoresde=(structure)\"latent\\,\\ "
        "model-id\\=\\(string\\)%s\\,\\ sde\\=\\(string\\)ve\\,\\ "
        "t-end\\=\\(double\\)1.0\\,\\ layout\\=\\(string\\)nchw\\;\"",
        model_id);
  return g_string_free (s, FALSE);
}

/* A bus attached to a stand-alone element (harness elements have none). */
static GstBus *
attach_bus (GstElement * element)
{
  GstBus *bus = gst_bus_new ();

  gst_element_set_bus (element, bus);
  return bus;
}

/* Pops the first ERROR message within `timeout`; fails when there is none. Returns the
 * error (g_error_free). */
static GError *
expect_bus_error (GstBus * bus, GstClockTime timeout)
{
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, timeout,
      GST_MESSAGE_ERROR);
  GError *err = NULL;
  gchar *debug = NULL;

  fail_unless (msg != NULL, "expected an error message on the bus");
  gst_message_parse_error (msg, &err, &debug);
  GST_INFO ("error: %s (%s)", err->message, GST_STR_NULL (debug));
  g_free (debug);
  gst_message_unref (msg);
  return err;
}

static gdouble
psnr_u8 (const guint8 * a, const guint8 * b, gsize n)
{
  gdouble se = 0.0;
  gsize i;

  for (i = 0; i < n; i++) {
    gdouble d = (gdouble) a[i] - (gdouble) b[i];
    se += d * d;
  }
  if (se == 0.0)
    return INFINITY;
  return 10.0 * log10 (255.0 * 255.0 / (se / n));
}

static gboolean
buffers_equal (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gboolean eq;

  fail_unless (gst_buffer_map (a, &ma, GST_MAP_READ));
  fail_unless (gst_buffer_map (b, &mb, GST_MAP_READ));
  eq = ma.size == mb.size && memcmp (ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return eq;
}

/* A packed RGB 8x8 buffer of training image i of the tiny model (stride 24 = 8*3,
 * GStreamer rounds RGB strides to 4 bytes: 24 already is). */
static GstBuffer *
tiny_rgb_frame (gint variant, gint i)
{
  gfloat img[TINY_D];
  GstBuffer *buf = gst_buffer_new_allocate (NULL, TINY_D, NULL);
  GstMapInfo map;
  gint c, p;

  tiny_image (variant, i, 3, img);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (p = 0; p < TINY_SIZE * TINY_SIZE; p++)
    for (c = 0; c < 3; c++)
      map.data[p * 3 + c] = (guint8) lrintf (img[c * TINY_SIZE * TINY_SIZE + p]
          * 255.0f);
  gst_buffer_unmap (buf, &map);
  return buf;
}

#define TINY_RGB_CAPS \
  "video/x-raw, format=(string)RGB, width=(int)8, height=(int)8, framerate=(fraction)30/1"
