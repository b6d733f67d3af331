/* gst-scoresde: scoresdecolorize tests
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Under the shipped default model (the exact score of 64 shape images) colorizing the
 * gray version of a training image must give that image back.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include "scoresdetestutil.h"

/* Settings where quality is not asserted. */
#define QUICK "steps=10"
/* Settings for the recovery assertions: the defaults (dpmpp-2m, 15 evaluations) and
 * the PC reference. Measured with the defaults at 15 and at 20 evaluations, seeds 0-9,
 * both modes: shapes 6 and 56 come back exactly (99 dB, the PSNR's cap) every time. */
#define QUALITY ""
#define PC_QUALITY "sampler=pc steps=400"

static GstHarness *
new_harness (const gchar * props, gint width, gint height,
    const gchar * out_format)
{
  gchar *launch = g_strdup_printf ("scoresdecolorize %s", props);
  GstHarness *h = gst_harness_new_parse (launch);
  gchar *caps = g_strdup_printf
      ("video/x-raw,format=GRAY8,width=%d,height=%d,framerate=10/1", width,
      height);

  if (out_format != NULL) {
    gchar *sink = g_strdup_printf ("video/x-raw,format=%s", out_format);
    gst_harness_set_sink_caps_str (h, sink);
    g_free (sink);
  }
  g_free (launch);
  gst_harness_play (h);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  return h;
}

/* The gray version (mean of R, G, B, rounded) of training image `index`, with the
 * original as RGB in *rgb. */
static guint8 *
gray_training_image (gint index, guint8 ** rgb)
{
  gint w, h, i;
  guint8 *img = scoresde_test_training_image (index, 3, &w, &h);
  guint8 *gray = g_malloc (w * h);

  for (i = 0; i < w * h; i++)
    gray[i] = (guint8) ((img[3 * i] + img[3 * i + 1] + img[3 * i + 2] + 1) / 3);
  if (rgb)
    *rgb = img;
  else
    g_free (img);
  return gray;
}

/* A gray test picture of any size: smooth gradients and a bright disc. */
static guint8 *
gray_picture (gint width, gint height)
{
  guint8 *g = g_malloc (width * height);
  gint x, y;

  for (y = 0; y < height; y++)
    for (x = 0; x < width; x++) {
      gdouble dx = x - width * 0.4, dy = y - height * 0.5;
      gdouble v = 60.0 + 100.0 * x / width + 40.0 * y / height;
      if (dx * dx + dy * dy < (height * 0.3) * (height * 0.3))
        v = 230.0;
      g[y * width + x] = (guint8) v;
    }
  return g;
}

GST_START_TEST (test_negotiate_process_eos)
{
  GstHarness *h = new_harness (QUICK, 32, 32,
      NULL);
  guint8 *in = gray_training_image (2, NULL);
  GstBuffer *out;
  GstCaps *caps, *want;
  GstEvent *ev;

  out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, 32 * 32,
          GST_SECOND, GST_SECOND / 10));
  fail_unless (out != NULL);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), GST_SECOND);
  fail_unless_equals_uint64 (GST_BUFFER_DURATION (out), GST_SECOND / 10);
  fail_unless_equals_int (gst_buffer_get_size (out), 32 * 32 * 3);
  gst_buffer_unref (out);

  caps = gst_pad_get_current_caps (h->sinkpad);
  want = gst_caps_from_string
      ("video/x-raw,format=RGB,width=32,height=32,framerate=10/1");
  fail_unless (gst_caps_can_intersect (caps, want), "output caps %"
      GST_PTR_FORMAT, caps);
  gst_caps_unref (caps);
  gst_caps_unref (want);

  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  while ((ev = gst_harness_try_pull_event (h)) != NULL) {
    gboolean eos = GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
    if (eos)
      break;
  }
  fail_unless (ev != NULL, "no EOS downstream");

  g_free (in);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_rgba_output)
{
  GstHarness *h = new_harness (QUICK, 32, 32,
      "RGBA");
  guint8 *in = gray_training_image (4, NULL);
  GstBuffer *out;
  GstMapInfo map;
  gint i;

  out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, 32 * 32, 0,
          GST_SECOND));
  fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
  fail_unless_equals_int (map.size, 32 * 32 * 4);
  for (i = 0; i < 32 * 32; i++)
    fail_unless_equals_int (map.data[4 * i + 3], 255);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  g_free (in);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Colorizing the gray version of a training image at native size recovers it, in both
 * modes (at native size they coincide up to rounding), with every sampler. */
static void
check_recover_training_image (const gchar * sampler)
{
  const gchar *modes[] = { "chroma-only=true", "chroma-only=false" };
  gint m, index;

  for (m = 0; m < 2; m++) {
    gchar *props = g_strdup_printf ("%s %s", sampler, modes[m]);
    GstHarness *h = new_harness (props, 32, 32, NULL);

    for (index = 6; index < 64; index += 50) {
      guint8 *orig = NULL;
      guint8 *in = gray_training_image (index, &orig);
      GstBuffer *out;
      GstMapInfo map;
      gdouble psnr;

      out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, 32 * 32,
              0, GST_SECOND));
      fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
      psnr = scoresde_test_psnr (map.data, 3, 32 * 3, orig, 3, 32 * 3, 32, 32);
      g_print ("colorize shape_%02d, '%s': PSNR %.2f dB\n", index, props,
          psnr);
      fail_unless (psnr > 30.0, "%s: PSNR %.2f dB <= 30 dB", props, psnr);
      gst_buffer_unmap (out, &map);
      gst_buffer_unref (out);
      g_free (orig);
      g_free (in);
    }
    gst_harness_teardown (h);
    g_free (props);
  }
}

GST_START_TEST (test_recover_training_image)
{
  check_recover_training_image (QUALITY);
  check_recover_training_image (PC_QUALITY);
  check_recover_training_image ("sampler=ddim");
  check_recover_training_image ("sampler=dpmpp-3m schedule=karras");
  check_recover_training_image ("sampler=dpmpp-2m-sde");
  check_recover_training_image ("sampler=heun schedule=time");
}

GST_END_TEST;

static void
push_twice (GstHarness * h, const guint8 * in, gsize size, GstBuffer ** a,
    GstBuffer ** b)
{
  *a = gst_harness_push_and_pull (h, scoresde_test_buffer (in, size, 0,
          GST_SECOND));
  *b = gst_harness_push_and_pull (h, scoresde_test_buffer (in, size,
          GST_SECOND, GST_SECOND));
  fail_unless (*a != NULL && *b != NULL);
}

/* The default solver at steps = 1 .. 20 under VE (the shapes) and VP (a small model),
 * seeds 1 and 2: a frame every time whose luminance is the input's; the same seed
 * gives the same frame, and over the step counts the two seeds differ. */
GST_START_TEST (test_every_step_count)
{
  gchar *vp = scoresde_test_write_model_sde (4, 3, 8, FALSE, SDE_VP);
  const gchar *models[] = { NULL, vp };
  guint8 *in = gray_picture (40, 30);
  guint m;
  gint steps, seed, i, seeds_differ = 0;

  for (m = 0; m < G_N_ELEMENTS (models); m++)
    for (steps = 1; steps <= 20; steps++) {
      GstBuffer *out[2];

      for (seed = 1; seed <= 2; seed++) {
        gchar *props = g_strdup_printf ("steps=%d seed=%d%s%s", steps, seed,
            models[m] ? " model=" : "", models[m] ? models[m] : "");
        GstHarness *h = new_harness (props, 40, 30, NULL);
        GstBuffer *again;
        GstMapInfo map;
        gdouble err = 0.0;

        push_twice (h, in, 40 * 30, &out[seed - 1], &again);
        fail_unless (gst_buffer_map (again, &map, GST_MAP_READ));
        fail_unless (gst_buffer_memcmp (out[seed - 1], 0, map.data,
                map.size) == 0, "%s: the same frame colorized twice differs",
            props);
        for (i = 0; i < 40 * 30; i++) {
          const guint8 *p = map.data + (i / 40) * GST_ROUND_UP_4 (40 * 3) +
              (i % 40) * 3;
          err = MAX (err, fabs ((p[0] + p[1] + p[2]) / 3.0 - in[i]));
        }
        fail_unless (err <= 1.0, "%s: luminance off by %.2f", props, err);
        gst_buffer_unmap (again, &map);
        gst_buffer_unref (again);
        gst_harness_teardown (h);
        g_free (props);
      }
      {
        GstMapInfo map;

        fail_unless (gst_buffer_map (out[0], &map, GST_MAP_READ));
        seeds_differ += gst_buffer_memcmp (out[1], 0, map.data, map.size) != 0;
        gst_buffer_unmap (out[0], &map);
      }
      gst_buffer_unref (out[0]);
      gst_buffer_unref (out[1]);
    }
  fail_unless (seeds_differ > 0, "seeds 1 and 2 always gave the same colours");
  scoresde_test_remove_model (vp);
  g_free (vp);
  g_free (in);
}

GST_END_TEST;

/* A 64x48 input gives a 64x48 colour output whose luminance (the mean of R, G, B) is
 * the input's gray value. */
GST_START_TEST (test_any_size_keeps_luma)
{
  GstHarness *h = new_harness (QUICK, 64, 48,
      NULL);
  guint8 *in = gray_picture (64, 48);
  GstBuffer *out;
  GstMapInfo map;
  GstVideoInfo info;
  GstCaps *caps;
  gint x, y, off = 0, colourful = 0;
  gdouble sum = 0.0;

  out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, 64 * 48, 0,
          GST_SECOND));
  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_video_info_from_caps (&info, caps));
  fail_unless_equals_int (GST_VIDEO_INFO_WIDTH (&info), 64);
  fail_unless_equals_int (GST_VIDEO_INFO_HEIGHT (&info), 48);
  fail_unless_equals_int (GST_VIDEO_INFO_FORMAT (&info), GST_VIDEO_FORMAT_RGB);
  gst_caps_unref (caps);

  fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
  for (y = 0; y < 48; y++)
    for (x = 0; x < 64; x++) {
      const guint8 *p = map.data + y * GST_VIDEO_INFO_PLANE_STRIDE (&info, 0)
          + x * 3;
      gdouble mean = (p[0] + p[1] + p[2]) / 3.0;
      gdouble d = fabs (mean - in[y * 64 + x]);
      sum += d;
      off += d > 1.0;
      colourful += MAX (MAX (p[0], p[1]), p[2]) - MIN (MIN (p[0], p[1]),
          p[2]) > 10;
    }
  gst_buffer_unmap (out, &map);
  GST_INFO ("mean |luma error| %.3f, %d pixels off by more than 1, %d "
      "colourful", sum / (64 * 48), off, colourful);
  /* out-of-gamut colours are desaturated, not clipped: only rounding remains */
  fail_unless (sum / (64 * 48) < 0.5, "mean luma error %.3f", sum / (64 * 48));
  fail_unless_equals_int (off, 0);
  fail_unless (colourful > 0, "no colour at all");

  gst_buffer_unref (out);
  g_free (in);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* t-start (SDEdit from the noised gray) and center-chroma=false (the paper's prior) keep
 * the luminance and change the colours; the defaults read back. */
GST_START_TEST (test_t_start)
{
  gchar *vp = scoresde_test_write_model_sde (4, 3, 8, FALSE, SDE_VP);
  gchar *modes[3] = { g_strdup_printf (QUICK " model=%s", vp),
    g_strdup_printf (QUICK " model=%s t-start=0.3", vp),
    g_strdup_printf (QUICK " model=%s center-chroma=false", vp)
  };
  gdouble chroma[3], t_start = 0.0;
  gboolean clip = FALSE, center = FALSE;
  guint8 *in = gray_picture (32, 32);
  GstElement *e = gst_element_factory_make ("scoresdecolorize", NULL);
  gint m, i;

  g_object_get (e, "t-start", &t_start, "clip-denoised", &clip,
      "center-chroma", &center, NULL);
  fail_unless (t_start == 1.0 && clip && center,
      "defaults: t-start %g, clip-denoised %d, center-chroma %d", t_start, clip,
      center);
  gst_object_unref (e);

  for (m = 0; m < 3; m++) {
    GstHarness *h = new_harness (modes[m], 32, 32, "RGB");
    GstBuffer *out = gst_harness_push_and_pull (h,
        scoresde_test_buffer (in, 32 * 32, 0, GST_SECOND));
    GstMapInfo map;
    gdouble luma_err = 0.0;

    fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
    chroma[m] = 0.0;
    for (i = 0; i < 32 * 32; i++) {
      const guint8 *p = map.data + 3 * i;
      luma_err = MAX (luma_err, fabs ((p[0] + p[1] + p[2]) / 3.0 - in[i]));
      chroma[m] += MAX (MAX (p[0], p[1]), p[2]) - MIN (MIN (p[0], p[1]), p[2]);
    }
    chroma[m] /= 32 * 32;
    gst_buffer_unmap (out, &map);
    GST_INFO ("%s: mean chroma spread %.2f, max luma error %.2f", modes[m],
        chroma[m], luma_err);
    fail_unless (luma_err <= 1.0, "%s: luma error %.2f", modes[m], luma_err);
    gst_buffer_unref (out);
    gst_harness_teardown (h);
  }
  fail_unless (chroma[1] != chroma[0], "t-start=0.3 changed nothing");
  fail_unless (chroma[2] != chroma[0], "center-chroma=false changed nothing");
  for (m = 0; m < 3; m++)
    g_free (modes[m]);
  scoresde_test_remove_model (vp);
  g_free (vp);
  g_free (in);
}

GST_END_TEST;

GST_START_TEST (test_any_size_rgb_mode)
{
  GstHarness *h = new_harness (QUICK " chroma-only=false", 20, 50, "RGBA");
  guint8 *in = gray_picture (20, 50);
  GstBuffer *out;

  out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, 20 * 50, 0,
          GST_SECOND));
  fail_unless_equals_int (gst_buffer_get_size (out), 20 * 50 * 4);
  gst_buffer_unref (out);
  g_free (in);
  gst_harness_teardown (h);
}

GST_END_TEST;


/* temporal-seed: identical frames get identical colours; without it, frame k draws
 * from stream k. */
GST_START_TEST (test_temporal_seed)
{
  guint8 *in = gray_picture (40, 30);
  GstHarness *h;
  GstBuffer *a, *b;
  GstMapInfo map;

  h = new_harness ("steps=20", 40, 30, NULL);
  push_twice (h, in, 40 * 30, &a, &b);
  fail_unless (gst_buffer_map (a, &map, GST_MAP_READ));
  fail_unless (gst_buffer_memcmp (b, 0, map.data, map.size) == 0,
      "temporal-seed=true: identical frames differ");
  gst_buffer_unmap (a, &map);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (h);

  /* 5 steps: from 20 on, the exact discretisation lands on the one image the shapes
   * model allows whatever the noise */
  h = new_harness ("steps=5 temporal-seed=false", 40, 30, NULL);
  push_twice (h, in, 40 * 30, &a, &b);
  fail_unless (gst_buffer_map (a, &map, GST_MAP_READ));
  fail_if (gst_buffer_memcmp (b, 0, map.data, map.size) == 0,
      "temporal-seed=false: frames 0 and 1 got the same noise");
  gst_buffer_unmap (a, &map);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (h);
  g_free (in);
}

GST_END_TEST;

/* A centered model at a size that is neither the input's nor a divisor of it. The PC
 * reference: on these four 8x8 images the deterministic few-step solvers settle on the
 * chroma of another image (16.6 dB at 20 to 200 evaluations, dpmpp-2m-sde recovers
 * it), a limit of holding the luminance in the data prediction. */
GST_START_TEST (test_centered_model)
{
  const gint size = 8, n = 4;
  gchar *model = scoresde_test_write_model (n, 3, size, TRUE);
  gchar *launch = g_strdup_printf ("scoresdecolorize model=%s " PC_QUALITY,
      model);
  GstHarness *h = gst_harness_new_parse (launch);
  gfloat img[3 * 8 * 8];
  guint8 gray[8 * 8], want[8 * 8 * 3];
  GstBuffer *out;
  GstMapInfo map;
  gdouble psnr;
  gint i, k;

  gst_harness_play (h);
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=GRAY8,width=8,height=8,framerate=1/1");
  scoresde_test_small_image (1, 3, size, img);
  for (i = 0; i < size * size; i++) {
    gint sum = 0;
    for (k = 0; k < 3; k++) {
      want[3 * i + k] = (guint8) lrintf (img[k * size * size + i] * 255.0f);
      sum += want[3 * i + k];
    }
    gray[i] = (guint8) ((sum + 1) / 3);
  }
  out = gst_harness_push_and_pull (h, scoresde_test_buffer (gray, sizeof gray,
          0, GST_SECOND));
  fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
  psnr = scoresde_test_psnr (map.data, 3, size * 3, want, 3, size * 3, size,
      size);
  g_print ("colorize, centered 8x8 model at native size: PSNR %.2f dB\n", psnr);
  fail_unless (psnr > 30.0, "PSNR %.2f dB", psnr);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  gst_harness_teardown (h);

  /* 13x11 input through the 8x8 model: output 13x11 */
  h = gst_harness_new_parse (launch);
  gst_harness_play (h);
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=GRAY8,width=13,height=11,framerate=1/1");
  {
    guint8 *pic = g_malloc (13 * 11);
    for (i = 0; i < 13 * 11; i++)
      pic[i] = (guint8) (40 + 3 * i % 150);
    out = gst_harness_push_and_pull (h, scoresde_test_buffer (pic, 13 * 11, 0,
            GST_SECOND));
    fail_unless (out != NULL);
    /* RGB rows of 39 bytes are padded to 40 */
    fail_unless_equals_int (gst_buffer_get_size (out), 40 * 11);
    gst_buffer_unref (out);
    g_free (pic);
  }
  gst_harness_teardown (h);

  scoresde_test_remove_model (model);
  g_free (model);
  g_free (launch);
}

GST_END_TEST;

static GstMessage *
ready_error (GstElement * el)
{
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;

  gst_element_set_bus (el, bus);
  fail_unless_equals_int (gst_element_set_state (el, GST_STATE_READY),
      GST_STATE_CHANGE_FAILURE);
  msg = scoresde_test_pop_error (bus, 0);
  gst_element_set_state (el, GST_STATE_NULL);
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  return msg;
}

static gchar *
write_tmp (const gchar * tmpl, const gchar * text)
{
  gchar *path = NULL;
  gint fd = g_file_open_tmp (tmpl, &path, NULL);
  gssize len = strlen (text);

  fail_unless (fd >= 0);
  fail_unless (write (fd, text, len) == len);
  close (fd);
  return path;
}

GST_START_TEST (test_bad_model)
{
  GstElement *el = gst_element_factory_make ("scoresdecolorize", NULL);
  GstMessage *msg;
  gchar *path;

  g_object_set (el, "model", "/nonexistent/model.json", NULL);
  msg = ready_error (el);
  scoresde_test_assert_error (msg, GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_NOT_FOUND);
  gst_message_unref (msg);

  path = write_tmp ("scoresde-junk-XXXXXX.json", "[1, 2");
  g_object_set (el, "model", path, NULL);
  msg = ready_error (el);
  scoresde_test_assert_error (msg, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT);
  gst_message_unref (msg);
  g_unlink (path);
  g_free (path);

  /* a valid model that is not of 3-channel images */
  path = write_tmp ("scoresde-gmm-XXXXXX.json",
      "{\"kind\": \"gmm\", \"weights\": [1], \"means\": [[0, 0]], "
      "\"stds\": [1]}");
  g_object_set (el, "model", path, NULL);
  msg = ready_error (el);
  scoresde_test_assert_error (msg, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT);
  gst_message_unref (msg);
  g_unlink (path);
  g_free (path);

  gst_object_unref (el);
}

GST_END_TEST;

/* A model whose result is NaN (its VE prior of std 1e37 overflows float32 draws): the
 * warning reaches the bus and every output pixel keeps the input's gray value, in both
 * modes, at the model's size and another. */
GST_START_TEST (test_nonfinite_keeps_luminance)
{
  gchar *text = g_strdup_printf ("{\"kind\": \"empirical\", \"data\": "
      "\"%s/shapes32\", \"sde\": {\"kind\": \"ve\", \"sigma_min\": 0.01, "
      "\"sigma_max\": 1e37, \"N\": 1000}}", scoresde_test_models_dir ());
  gchar *model = write_tmp ("scoresde-diverge-XXXXXX.json", text);
  const gchar *modes[2] = { "chroma-only=true", "chroma-only=false" };
  gint mode, size;

  for (mode = 0; mode < 2; mode++)
    for (size = 0; size < 2; size++) {
      gint w = size ? 48 : 32, hh = size ? 40 : 32, x, y, off = 0;
      gchar *props = g_strdup_printf ("sampler=pc steps=10 model=%s %s", model,
          modes[mode]);
      GstHarness *h = new_harness (props, w, hh, NULL);
      GstBus *bus = gst_bus_new ();
      guint8 *in = gray_picture (w, hh);
      GstMessage *msg;
      GError *err = NULL;
      GstBuffer *out;
      GstMapInfo map;

      gst_element_set_bus (h->element, bus);
      out = gst_harness_push_and_pull (h, scoresde_test_buffer (in, w * hh, 0,
              GST_SECOND));
      msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
      fail_unless (msg != NULL, "%s %dx%d: no warning", modes[mode], w, hh);
      gst_message_parse_warning (msg, &err, NULL);
      fail_unless (strstr (err->message, "are NaN or Inf; those pixels keep the "
              "input's gray") != NULL, "%s", err->message);
      g_clear_error (&err);
      gst_message_unref (msg);
      fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
      for (y = 0; y < hh; y++)
        for (x = 0; x < w; x++) {
          const guint8 *p = map.data + (gsize) y * GST_ROUND_UP_4 (w * 3) + x * 3;
          off += fabs ((p[0] + p[1] + p[2]) / 3.0 - in[y * w + x]) > 1.0;
        }
      gst_buffer_unmap (out, &map);
      GST_INFO ("%s %dx%d: %d pixels lost their luminance", modes[mode], w, hh,
          off);
      fail_unless_equals_int (off, 0);
      gst_buffer_unref (out);
      gst_element_set_bus (h->element, NULL);
      gst_object_unref (bus);
      gst_harness_teardown (h);
      g_free (in);
      g_free (props);
    }
  g_unlink (model);
  g_free (model);
  g_free (text);
}

GST_END_TEST;

GST_START_TEST (test_bad_caps)
{
  GstHarness *h;
  GstElement *pipe;
  GstBus *bus;
  GstMessage *msg;
  guint8 *junk = g_malloc0 (32 * 32 * 3);

  /* RGB input is refused: the element colorizes gray frames */
  h = gst_harness_new_parse ("scoresdecolorize");
  gst_harness_play (h);
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=RGB,width=32,height=32,framerate=1/1");
  fail_unless_equals_int (gst_harness_push (h, scoresde_test_buffer (junk,
              32 * 32 * 3, 0, GST_SECOND)), GST_FLOW_NOT_NEGOTIATED);
  gst_harness_teardown (h);
  g_free (junk);

  pipe = gst_parse_launch ("videotestsrc num-buffers=2 ! "
      "video/x-raw,format=RGB,width=32,height=32 ! scoresdecolorize "
      "steps=10 ! fakesink", NULL);
  fail_unless (pipe != NULL);
  bus = gst_element_get_bus (pipe);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  msg = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND,
      GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR,
      "expected a negotiation error");
  gst_message_unref (msg);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipe);
}

GST_END_TEST;

/* A flush stops a long sampler within a step. */
typedef struct
{
  GstHarness *h;
  GstBuffer *buf;
  GstFlowReturn ret;
} PushData;

static gpointer
push_thread (gpointer user)
{
  PushData *d = user;
  d->ret = gst_harness_push (d->h, d->buf);
  return NULL;
}

GST_START_TEST (test_flush_cancels)
{
  GstHarness *h = new_harness ("steps=100000", 32, 32, NULL);
  guint8 *in = gray_training_image (1, NULL);
  PushData d = { h, NULL, GST_FLOW_OK };
  GThread *t;
  gint64 t0;

  d.buf = scoresde_test_buffer (in, 32 * 32, 0, GST_SECOND);
  t = g_thread_new ("push", push_thread, &d);
  g_usleep (300 * 1000);
  t0 = g_get_monotonic_time ();
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  g_thread_join (t);
  GST_INFO ("cancelled after %.3f s", (g_get_monotonic_time () - t0) / 1e6);
  fail_unless ((g_get_monotonic_time () - t0) < 2 * G_USEC_PER_SEC);
  fail_unless_equals_int (d.ret, GST_FLOW_FLUSHING);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));

  /* and it works again after the flush */
  gst_harness_set (h, "scoresdecolorize", "steps", 10, NULL);
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=GRAY8,width=32,height=32,framerate=10/1");
  {
    GstBuffer *out = gst_harness_push_and_pull (h, scoresde_test_buffer (in,
            32 * 32, 0, GST_SECOND));
    fail_unless (out != NULL);
    gst_buffer_unref (out);
  }
  g_free (in);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_state_cycles)
{
  GstElement *el = gst_element_factory_make ("scoresdecolorize", NULL);
  gint i;

  for (i = 0; i < 3; i++) {
    fail_unless (gst_element_set_state (el, GST_STATE_PAUSED) !=
        GST_STATE_CHANGE_FAILURE);
    fail_unless (gst_element_set_state (el, GST_STATE_NULL) ==
        GST_STATE_CHANGE_SUCCESS);
  }
  gst_object_unref (el);
}

GST_END_TEST;

static Suite *
scoresdecolorize_suite (void)
{
  Suite *s = suite_create ("scoresdecolorize");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 120);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_negotiate_process_eos);
  tcase_add_test (tc, test_rgba_output);
  tcase_add_test (tc, test_recover_training_image);
  tcase_add_test (tc, test_every_step_count);
  tcase_add_test (tc, test_any_size_keeps_luma);
  tcase_add_test (tc, test_any_size_rgb_mode);
  tcase_add_test (tc, test_t_start);
  tcase_add_test (tc, test_temporal_seed);
  tcase_add_test (tc, test_centered_model);
  tcase_add_test (tc, test_bad_model);
  tcase_add_test (tc, test_bad_caps);
  tcase_add_test (tc, test_flush_cancels);
  tcase_add_test (tc, test_state_cycles);
  tcase_add_test (tc, test_nonfinite_keeps_luminance);
  return s;
}

GST_CHECK_MAIN (scoresdecolorize);
