/* Tests of scoresdesrc (and of the model cache of libgstscoresde).
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#include "common.c"
#include "scoresdetestutil.h"
#include <scoresde/network.h>

#define SRC_FAST "sampler=pc steps=20 corrector=none"

static GstHarness *
src_harness (const gchar * props)
{
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s %s", tiny_model_path (),
      props);
  GstHarness *h = gst_harness_new_parse (desc);

  g_free (desc);
  return h;
}

/* Pulls n buffers (new refs into out[]). */
static void
pull_n (GstHarness * h, gint n, GstBuffer ** out)
{
  gint i;

  for (i = 0; i < n; i++) {
    out[i] = gst_harness_pull (h);
    fail_unless (out[i] != NULL, "no buffer %d", i);
  }
}

static void
unref_n (GstBuffer ** b, gint n)
{
  gint i;

  for (i = 0; i < n; i++)
    gst_buffer_unref (b[i]);
}

static void
wait_for_eos (GstHarness * h)
{
  GstEvent *ev;
  gboolean eos = FALSE;

  while (!eos && (ev = gst_harness_pull_event (h)) != NULL) {
    eos = GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (eos, "no EOS");
}

GST_START_TEST (test_src_negotiation)
{
  GstHarness *h = src_harness (SRC_FAST " num-buffers=1");
  GstCaps *caps;
  GstStructure *s;
  GstBuffer *buf;
  gint w, hh, fn, fd;

  gst_harness_play (h);
  buf = gst_harness_pull (h);
  fail_unless (buf != NULL);
  caps = gst_pad_get_current_caps (h->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_get_int (s, "width", &w));
  fail_unless (gst_structure_get_int (s, "height", &hh));
  fail_unless_equals_int (w, TINY_SIZE);
  fail_unless_equals_int (hh, TINY_SIZE);
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  fail_unless (gst_structure_get_fraction (s, "framerate", &fn, &fd));
  fail_unless_equals_int (fn, 30);
  fail_unless_equals_int (fd, 1);
  gst_caps_unref (caps);

  fail_unless_equals_int (gst_buffer_get_size (buf), TINY_D);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), 0);
  fail_unless_equals_uint64 (GST_BUFFER_DURATION (buf), GST_SECOND / 30);
  fail_unless_equals_uint64 (GST_BUFFER_OFFSET (buf), 0);
  fail_unless (gst_buffer_get_scoresde_latent_meta (buf) != NULL);
  fail_unless (gst_buffer_get_scoresde_latent_meta (buf)->nfe > 0);
  gst_buffer_unref (buf);
  wait_for_eos (h);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* GRAY8 from a 3-channel model is the mean of R, G, B (rounded once). */
GST_START_TEST (test_src_gray_is_luma_mean)
{
  GstHarness *hrgb = src_harness (SRC_FAST " seed=5 num-buffers=1");
  GstHarness *hgray = src_harness (SRC_FAST " seed=5 num-buffers=1");
  GstBuffer *rgb, *gray;
  GstMapInfo mr, mg;
  gint p;

  gst_harness_set_sink_caps_str (hgray, "video/x-raw, format=GRAY8");
  gst_harness_play (hrgb);
  gst_harness_play (hgray);
  rgb = gst_harness_pull (hrgb);
  gray = gst_harness_pull (hgray);
  fail_unless (gst_buffer_map (rgb, &mr, GST_MAP_READ));
  fail_unless (gst_buffer_map (gray, &mg, GST_MAP_READ));
  fail_unless_equals_int (mg.size, TINY_SIZE * TINY_SIZE);
  for (p = 0; p < TINY_SIZE * TINY_SIZE; p++) {
    gdouble mean = (mr.data[3 * p] + mr.data[3 * p + 1] + mr.data[3 * p + 2])
        / 3.0;
    fail_unless (fabs (mg.data[p] - mean) <= 1.0, "pixel %d: %u vs %f", p,
        mg.data[p], mean);
  }
  gst_buffer_unmap (rgb, &mr);
  gst_buffer_unmap (gray, &mg);
  gst_buffer_unref (rgb);
  gst_buffer_unref (gray);
  gst_harness_teardown (hrgb);
  gst_harness_teardown (hgray);
}

GST_END_TEST;

/* A 1-channel model prefers GRAY8; RGB and RGBA replicate it, alpha opaque. */
GST_START_TEST (test_src_gray_model)
{
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s " SRC_FAST
      " seed=2 num-buffers=1", tiny_model_path_full (0, 1));
  GstHarness *hg = gst_harness_new_parse (desc);
  GstHarness *hrgba = gst_harness_new_parse (desc);
  GstBuffer *g, *rgba;
  GstMapInfo mg, mr;
  GstCaps *caps;
  gint p;

  gst_harness_set_sink_caps_str (hrgba, "video/x-raw, format=RGBA");
  gst_harness_play (hg);
  gst_harness_play (hrgba);
  g = gst_harness_pull (hg);
  rgba = gst_harness_pull (hrgba);
  caps = gst_pad_get_current_caps (hg->sinkpad);
  fail_unless_equals_string (gst_structure_get_string (gst_caps_get_structure
          (caps, 0), "format"), "GRAY8");
  gst_caps_unref (caps);
  gst_buffer_map (g, &mg, GST_MAP_READ);
  gst_buffer_map (rgba, &mr, GST_MAP_READ);
  fail_unless_equals_int (mg.size, TINY_SIZE * TINY_SIZE);
  for (p = 0; p < TINY_SIZE * TINY_SIZE; p++) {
    fail_unless_equals_int (mr.data[4 * p], mg.data[p]);
    fail_unless_equals_int (mr.data[4 * p + 1], mg.data[p]);
    fail_unless_equals_int (mr.data[4 * p + 2], mg.data[p]);
    fail_unless_equals_int (mr.data[4 * p + 3], 255);
  }
  gst_buffer_unmap (g, &mg);
  gst_buffer_unmap (rgba, &mr);
  gst_buffer_unref (g);
  gst_buffer_unref (rgba);
  gst_harness_teardown (hg);
  gst_harness_teardown (hrgba);
  g_free (desc);
}

GST_END_TEST;

/* Caps at another size than the model's are refused: the element never rescales. */
GST_START_TEST (test_src_refuses_other_size)
{
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s num-buffers=1 ! "
      "video/x-raw,width=16,height=16 ! fakesink", tiny_model_path ());
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstBus *bus = gst_element_get_bus (pipeline);
  GError *err;

  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  err = expect_bus_error (bus, 20 * GST_SECOND);
  fail_unless (err->domain == GST_CORE_ERROR || err->domain ==
      GST_STREAM_ERROR, "%s", err->message);
  g_error_free (err);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
  g_free (desc);
}

GST_END_TEST;

GST_START_TEST (test_src_num_buffers_eos_duration)
{
  GstHarness *h = src_harness (SRC_FAST " num-buffers=3");
  GstBuffer *b[3];
  gint64 dur = -1;
  gint i;

  gst_harness_play (h);
  pull_n (h, 3, b);
  for (i = 0; i < 3; i++) {
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET (b[i]), i);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (b[i]),
        gst_util_uint64_scale (i, GST_SECOND, 30));
  }
  wait_for_eos (h);
  fail_unless (gst_element_query_duration (h->element, GST_FORMAT_TIME, &dur));
  fail_unless_equals_int64 (dur, GST_SECOND / 10);
  fail_unless (gst_element_query_duration (h->element, GST_FORMAT_DEFAULT,
          &dur));
  fail_unless_equals_int64 (dur, 3);
  unref_n (b, 3);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* start-frame S with num-buffers N: frames S .. S+N-1 of the full render, with their
 * timestamps, offsets and latent meta, then EOS; the duration ends at S+N. */
GST_START_TEST (test_src_start_frame)
{
  GstHarness *full = src_harness (SRC_FAST " seed=4 num-buffers=5");
  GstHarness *part = src_harness (SRC_FAST " seed=4 start-frame=3 "
      "num-buffers=2 name=part");
  GstElement *src = gst_bin_get_by_name (GST_BIN (part->element), "part");
  GstBuffer *a[5], *b[2];
  gint64 dur = -1, start = -1;
  gint i;

  g_object_get (src, "start-frame", &start, NULL);
  fail_unless_equals_int64 (start, 3);
  gst_object_unref (src);
  gst_harness_play (full);
  gst_harness_play (part);
  pull_n (full, 5, a);
  pull_n (part, 2, b);
  for (i = 0; i < 2; i++) {
    fail_unless (buffers_equal (b[i], a[3 + i]), "frame %d differs", 3 + i);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (b[i]), GST_BUFFER_PTS (a[3 + i]));
    fail_unless_equals_uint64 (GST_BUFFER_PTS (b[i]),
        gst_util_uint64_scale (3 + i, GST_SECOND, 30));
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET (b[i]), 3 + i);
    fail_unless_equals_uint64 (gst_buffer_get_scoresde_latent_meta (b[i])->frame,
        3 + i);
  }
  wait_for_eos (part);
  fail_unless (gst_element_query_duration (part->element, GST_FORMAT_DEFAULT,
          &dur));
  fail_unless_equals_int64 (dur, 5);
  fail_unless (gst_element_query_duration (part->element, GST_FORMAT_TIME,
          &dur));
  fail_unless_equals_int64 (dur, gst_util_uint64_scale (5, GST_SECOND, 30));
  unref_n (a, 5);
  unref_n (b, 2);
  gst_harness_teardown (full);
  gst_harness_teardown (part);
}

GST_END_TEST;

/* A shipped model (Fashion-MNIST and its guidance classifier). */
static gchar *
shipped_model (const gchar * file)
{
  return g_build_filename (scoresde_test_models_dir (), file, NULL);
}

static const gchar *const fewstep_samplers[] = {
  "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun"
};

/* n frames of scoresdesrc with `model` and `props`. */
static void
model_frames (const gchar * model, const gchar * props, gint n,
    GstBuffer ** out)
{
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s num-buffers=%d %s",
      model, n, props);
  GstHarness *h = gst_harness_new_parse (desc);

  gst_harness_play (h);
  pull_n (h, n, out);
  gst_harness_teardown (h);
  g_free (desc);
}

/* The best PSNR of an 8x8 RGB frame of the tiny model to one of its training images. */
static gdouble
psnr_to_training (GstBuffer * frame)
{
  GstMapInfo mo;
  gdouble best = 0.0;
  gint i;

  fail_unless (gst_buffer_map (frame, &mo, GST_MAP_READ));
  fail_unless_equals_int (mo.size, TINY_D);
  for (i = 0; i < TINY_IMAGES; i++) {
    GstBuffer *img = tiny_rgb_frame (0, i);
    GstMapInfo mi;

    gst_buffer_map (img, &mi, GST_MAP_READ);
    best = MAX (best, psnr_u8 (mi.data, mo.data, mi.size));
    gst_buffer_unmap (img, &mi);
    gst_buffer_unref (img);
  }
  gst_buffer_unmap (frame, &mo);
  return best;
}

/* Every few-step sampler: the same seed gives the same frames, another seed other
 * frames, and at the default 15 evaluations the exact score of the empirical model
 * lands every frame on a training image, under each of the three SDEs (exactly, at 15
 * and at 20, for seeds 1-9 and 42, four frames each). */
GST_START_TEST (test_src_fewstep_samplers)
{
  const sde_kind kinds[] = { SDE_VE, SDE_VP, SDE_SUBVP };
  guint k, j;
  gint i;

  for (k = 0; k < G_N_ELEMENTS (kinds); k++) {
    const gchar *model = tiny_model_path_sde (0, 3, kinds[k]);

    for (j = 0; j < G_N_ELEMENTS (fewstep_samplers); j++) {
      gchar *p42 = g_strdup_printf ("sampler=%s seed=42", fewstep_samplers[j]);
      gchar *p43 = g_strdup_printf ("sampler=%s seed=43", fewstep_samplers[j]);
      GstBuffer *a[4], *b[4], *c[4];
      gboolean same_as_other_seed = TRUE;

      model_frames (model, p42, 4, a);
      model_frames (model, p42, 4, b);
      model_frames (model, p43, 4, c);
      for (i = 0; i < 4; i++) {
        gdouble psnr = psnr_to_training (a[i]);

        GST_INFO ("%s %s frame %d: %.1f dB from a training image",
            sde_kind_name (kinds[k]), fewstep_samplers[j], i, psnr);
        fail_unless (buffers_equal (a[i], b[i]), "%s %s: frame %d differs "
            "between runs", sde_kind_name (kinds[k]), fewstep_samplers[j], i);
        fail_unless (psnr > 30.0, "%s %s: frame %d is %.1f dB from the data",
            sde_kind_name (kinds[k]), fewstep_samplers[j], i, psnr);
        same_as_other_seed &= buffers_equal (a[i], c[i]);
      }
      /* four training images: the frames snap to them, so compare sequences */
      fail_if (same_as_other_seed, "%s %s: seed 43 gave the frames of seed 42",
          sde_kind_name (kinds[k]), fewstep_samplers[j]);
      unref_n (a, 4);
      unref_n (b, 4);
      unref_n (c, 4);
      g_free (p42);
      g_free (p43);
    }
  }
}

GST_END_TEST;

/* steps = 1 .. 20 give a frame (the engine refuses a non-finite sample with an error)
 * with every few-step sampler under each SDE, and the shipped VP network is not
 * black at any of them (the PC sampler's old failure below 20 steps). */
GST_START_TEST (test_src_fewstep_every_step_count)
{
  const sde_kind kinds[] = { SDE_VE, SDE_VP, SDE_SUBVP };
  gchar *fashion = shipped_model ("fashion-mnist-32.safetensors");
  guint k, j;
  gint steps;

  for (k = 0; k < G_N_ELEMENTS (kinds); k++)
    for (j = 0; j < G_N_ELEMENTS (fewstep_samplers); j++)
      for (steps = 1; steps <= 20; steps++) {
        gchar *props = g_strdup_printf ("sampler=%s steps=%d seed=%d",
            fewstep_samplers[j], steps, steps);
        GstBuffer *buf;

        model_frames (tiny_model_path_sde (0, 3, kinds[k]), props, 1, &buf);
        fail_unless (gst_buffer_get_scoresde_latent_meta (buf)->nfe > 0);
        fail_unless (gst_buffer_get_scoresde_latent_meta (buf)->nfe <=
            steps + 1, "%s: NFE %" G_GINT64_FORMAT, props,
            gst_buffer_get_scoresde_latent_meta (buf)->nfe);
        gst_buffer_unref (buf);
        g_free (props);
      }

  for (steps = 1; steps <= 20; steps++) {
    gchar *props = g_strdup_printf ("steps=%d", steps);
    GstBuffer *buf;
    GstMapInfo map;
    guint sum = 0;
    gsize p;

    model_frames (fashion, props, 1, &buf);
    fail_unless (gst_buffer_map (buf, &map, GST_MAP_READ));
    for (p = 0; p < map.size; p++)
      sum += map.data[p];
    GST_INFO ("fashion-mnist-32, dpmpp-2m, %d steps: mean %.1f", steps,
        (gdouble) sum / map.size);
    fail_unless (sum > 10 * map.size, "%d steps: a black frame", steps);
    gst_buffer_unmap (buf, &map);
    gst_buffer_unref (buf);
    g_free (props);
  }
  g_free (fashion);
}

GST_END_TEST;

GST_START_TEST (test_src_deterministic)
{
  /* few steps: samples stop short of the training images, so every seed gives a
   * frame of its own */
  GstHarness *h1 = src_harness ("sampler=pc steps=3 seed=42 num-buffers=3");
  GstHarness *h2 = src_harness ("sampler=pc steps=3 seed=42 num-buffers=3");
  GstHarness *h3 = src_harness ("sampler=pc steps=3 seed=43 num-buffers=1");
  GstBuffer *a[3], *b[3], *c;
  gint i;

  gst_harness_play (h1);
  gst_harness_play (h2);
  gst_harness_play (h3);
  pull_n (h1, 3, a);
  pull_n (h2, 3, b);
  c = gst_harness_pull (h3);
  for (i = 0; i < 3; i++)
    fail_unless (buffers_equal (a[i], b[i]), "frame %d differs", i);
  fail_if (buffers_equal (a[0], a[1]), "frames 0 and 1 are equal");
  fail_if (buffers_equal (a[0], c), "another seed gave the same frame");
  unref_n (a, 3);
  unref_n (b, 3);
  gst_buffer_unref (c);
  gst_harness_teardown (h1);
  gst_harness_teardown (h2);
  gst_harness_teardown (h3);
}

GST_END_TEST;

/* The prerolled frame of `pipeline` (PAUSED) from fakesink's last-sample. */
static GstBuffer *
preroll_buffer (GstElement * pipeline)
{
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstSample *sample = NULL;
  GstBuffer *buf;

  fail_unless_equals_int (gst_element_get_state (pipeline, NULL, NULL,
          GST_CLOCK_TIME_NONE), GST_STATE_CHANGE_SUCCESS);
  g_object_get (sink, "last-sample", &sample, NULL);
  fail_unless (sample != NULL);
  buf = gst_buffer_ref (gst_sample_get_buffer (sample));
  gst_sample_unref (sample);
  gst_object_unref (sink);
  return buf;
}

/* A flushing seek to frame k gives frame k, with its timestamp and offset. */
static void
check_seek_reproduces (const gchar * props)
{
  gchar *p6 = g_strdup_printf ("%s num-buffers=6", props);
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s %s ! fakesink name=sink",
      tiny_model_path (), props);
  GstHarness *h = src_harness (p6);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstBuffer *b[6], *s;
  gint k;

  gst_harness_play (h);
  pull_n (h, 6, b);

  gst_element_set_state (pipeline, GST_STATE_PAUSED);
  s = preroll_buffer (pipeline);
  fail_unless (buffers_equal (s, b[0]));
  gst_buffer_unref (s);
  for (k = 5; k >= 2; k -= 3) {
    fail_unless (gst_element_seek_simple (pipeline, GST_FORMAT_TIME,
            GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_ACCURATE,
            gst_util_uint64_scale (k, GST_SECOND, 30)));
    s = preroll_buffer (pipeline);
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET (s), k);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (s), gst_util_uint64_scale (k,
            GST_SECOND, 30));
    fail_unless (buffers_equal (s, b[k]), "frame %d after a seek differs", k);
    fail_unless_equals_uint64 (gst_buffer_get_scoresde_latent_meta (s)->frame,
        k);
    gst_buffer_unref (s);
  }

  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  unref_n (b, 6);
  gst_harness_teardown (h);
  g_free (p6);
  g_free (desc);
}

GST_START_TEST (test_src_seek_reproduces_frame)
{
  check_seek_reproduces ("sampler=pc steps=20 seed=9");
}

GST_END_TEST;

/* Frames are keyed by their own index: batching does not change ODE samples or PC
 * samples without the (batch-averaged) Langevin corrector. */
GST_START_TEST (test_src_batch_independent)
{
  const gchar *settings[] = {
    "sampler=ode rtol=1e-3 atol=1e-3 seed=3",
    "sampler=pc steps=20 corrector=none seed=3",
    "seed=3",
    "sampler=dpmpp-2m-sde steps=6 seed=3",
  };
  guint k;

  for (k = 0; k < G_N_ELEMENTS (settings); k++) {
    gchar *p1 = g_strdup_printf ("%s batch-size=1 num-buffers=4", settings[k]);
    gchar *p3 = g_strdup_printf ("%s batch-size=3 num-buffers=4", settings[k]);
    GstHarness *h1 = src_harness (p1), *h3 = src_harness (p3);
    GstBuffer *a[4], *b[4];
    gint i;

    gst_harness_play (h1);
    gst_harness_play (h3);
    pull_n (h1, 4, a);
    pull_n (h3, 4, b);
    for (i = 0; i < 4; i++) {
      fail_unless (buffers_equal (a[i], b[i]), "%s: frame %d depends on the "
          "batch size", settings[k], i);
      fail_unless_equals_uint64 (GST_BUFFER_PTS (a[i]), GST_BUFFER_PTS (b[i]));
    }
    unref_n (a, 4);
    unref_n (b, 4);
    gst_harness_teardown (h1);
    gst_harness_teardown (h3);
    g_free (p1);
    g_free (p3);
  }
}

GST_END_TEST;

/* The latent walk: frames morph, are reproducible and seekable, with the default
 * few-step solver and with the adaptive ODE. */
static void
check_walk (const gchar * props)
{
  gchar *pn = g_strdup_printf ("%s num-buffers=6", props);
  GstHarness *h1 = src_harness (pn), *h2 = src_harness (pn);
  GstBuffer *a[6], *b[6];
  gint i;

  gst_harness_play (h1);
  gst_harness_play (h2);
  pull_n (h1, 6, a);
  pull_n (h2, 6, b);
  for (i = 0; i < 6; i++)
    fail_unless (buffers_equal (a[i], b[i]), "walk frame %d differs", i);
  for (i = 0; i < 5; i++)
    fail_if (buffers_equal (a[i], a[i + 1]), "walk frames %d, %d are equal",
        i, i + 1);
  unref_n (a, 6);
  unref_n (b, 6);
  gst_harness_teardown (h1);
  gst_harness_teardown (h2);
  g_free (pn);

  check_seek_reproduces (props);
}

GST_START_TEST (test_src_walk)
{
  check_walk ("walk-frames=4 seed=11");
  check_walk ("walk-frames=4 sampler=ode rtol=1e-4 atol=1e-4 seed=11");
  /* the stochastic solver walks with its deterministic counterpart */
  {
    GstBuffer *sde[3], *det[3];
    gint i;

    model_frames (tiny_model_path (), "walk-frames=2 sampler=dpmpp-2m-sde "
        "seed=11", 3, sde);
    model_frames (tiny_model_path (), "walk-frames=2 seed=11", 3, det);
    for (i = 0; i < 3; i++)
      fail_unless (buffers_equal (sde[i], det[i]));
    unref_n (sde, 3);
    unref_n (det, 3);
  }
}

GST_END_TEST;

GST_START_TEST (test_src_live_latency)
{
  GstHarness *h = src_harness (SRC_FAST " is-live=true");
  GstQuery *q;
  GstBuffer *buf;
  gboolean live;
  GstClockTime min, max;

  gst_harness_use_systemclock (h);
  gst_harness_play (h);
  buf = gst_harness_pull (h);
  fail_unless (buf != NULL);
  gst_buffer_unref (buf);

  q = gst_query_new_latency ();
  fail_unless (gst_pad_peer_query (h->sinkpad, q));
  gst_query_parse_latency (q, &live, &min, &max);
  fail_unless (live);
  fail_unless (min >= GST_SECOND / 30, "latency %" GST_TIME_FORMAT,
      GST_TIME_ARGS (min));
  gst_query_unref (q);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Waits for the first scoresde-progress message: sampling is running. */
static void
wait_for_progress (GstBus * bus)
{
  GstMessage *msg;

  while ((msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
              GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR)) != NULL) {
    gboolean found;

    fail_if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR);
    found = gst_message_has_name (msg, GST_SCORESDE_PROGRESS_MESSAGE);
    gst_message_unref (msg);
    if (found)
      return;
  }
  fail ("sampling did not start");
}

/* A flush (flushing seek) and a state change in the middle of a 1000-step sampler
 * return within 200 ms. Uses the shipped default model ($SCORESDE_DEFAULT_MODEL). */
GST_START_TEST (test_src_flush_cancels_sampling)
{
  GstElement *pipeline = gst_parse_launch ("scoresdesrc name=src steps=1000 "
      "post-messages=true ! fakesink", NULL);
  GstBus *bus = gst_element_get_bus (pipeline);
  gint64 t0, dt;

  fail_unless (pipeline != NULL);
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  wait_for_progress (bus);

  t0 = g_get_monotonic_time ();
  fail_unless (gst_element_seek_simple (pipeline, GST_FORMAT_TIME,
          GST_SEEK_FLAG_FLUSH, 0));
  dt = g_get_monotonic_time () - t0;
  GST_INFO ("flushing seek returned after %" G_GINT64_FORMAT " us", dt);
  fail_unless (dt < 200 * 1000, "flushing seek took %" G_GINT64_FORMAT " ms",
      dt / 1000);

  /* sampling restarts after the seek; a state change stops it as fast */
  gst_bus_set_flushing (bus, TRUE);
  gst_bus_set_flushing (bus, FALSE);
  wait_for_progress (bus);
  t0 = g_get_monotonic_time ();
  fail_unless (gst_element_set_state (pipeline, GST_STATE_NULL) ==
      GST_STATE_CHANGE_SUCCESS);
  dt = g_get_monotonic_time () - t0;
  GST_INFO ("state change to NULL took %" G_GINT64_FORMAT " us", dt);
  fail_unless (dt < 200 * 1000, "state change took %" G_GINT64_FORMAT " ms",
      dt / 1000);

  gst_object_unref (bus);
  gst_object_unref (pipeline);
}

GST_END_TEST;

static void
check_start_error (const gchar * props, GQuark domain, gint code,
    const gchar * text)
{
  GstElement *src = gst_element_factory_make ("scoresdesrc", NULL);
  GstBus *bus = attach_bus (src);
  GError *err;

  gst_util_set_object_arg (G_OBJECT (src), "model", props);
  fail_unless_equals_int (gst_element_set_state (src, GST_STATE_READY),
      GST_STATE_CHANGE_SUCCESS);
  fail_unless_equals_int (gst_element_set_state (src, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  err = expect_bus_error (bus, 0);
  fail_unless (g_error_matches (err, domain, code), "got %s %d: %s",
      g_quark_to_string (err->domain), err->code, err->message);
  fail_unless (strstr (err->message, text) != NULL, "'%s' not in '%s'", text,
      err->message);
  g_error_free (err);
  fail_unless_equals_int (gst_element_set_state (src, GST_STATE_NULL),
      GST_STATE_CHANGE_SUCCESS);
  gst_element_set_bus (src, NULL);
  gst_object_unref (bus);
  gst_object_unref (src);
}

GST_START_TEST (test_src_bad_model)
{
  GstElement *src;
  GstBus *bus;
  GError *err;

  check_start_error ("/nonexistent/model.json", GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_NOT_FOUND, "/nonexistent/model.json");
  check_start_error (bad_model_path (), GST_LIBRARY_ERROR,
      GST_LIBRARY_ERROR_INIT, "Could not load model");

  /* device=cuda without a GPU (CI, this machine) is an error, not a fallback */
  if (sde_cuda_device_count () > 0)
    return;
  src = gst_element_factory_make ("scoresdesrc", NULL);
  bus = attach_bus (src);
  g_object_set (src, "model", tiny_model_path (), NULL);
  gst_util_set_object_arg (G_OBJECT (src), "device", "cuda");
  fail_unless_equals_int (gst_element_set_state (src, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  err = expect_bus_error (bus, 0);
  fail_unless (g_error_matches (err, GST_LIBRARY_ERROR,
          GST_LIBRARY_ERROR_INIT));
  fail_unless (strstr (err->message, "on the GPU") != NULL, "%s", err->message);
  g_error_free (err);
  gst_element_set_state (src, GST_STATE_NULL);
  gst_element_set_bus (src, NULL);
  gst_object_unref (bus);
  gst_object_unref (src);
}

GST_END_TEST;

static gint
cycles (void)
{
  const gchar *env = g_getenv ("SCORESDE_TEST_CYCLES");
  return env ? atoi (env) : 200;
}

GST_START_TEST (test_src_state_cycle_with_model)
{
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s " SRC_FAST
      " ! fakesink", tiny_model_path ());
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  gint i, n = cycles ();

  for (i = 0; i < n; i++) {
    fail_unless (gst_element_set_state (pipeline, GST_STATE_PLAYING) !=
        GST_STATE_CHANGE_FAILURE);
    if (i % 2 == 0)             /* every other cycle runs until prerolled */
      fail_unless_equals_int (gst_element_get_state (pipeline, NULL, NULL,
              GST_CLOCK_TIME_NONE), GST_STATE_CHANGE_SUCCESS);
    fail_unless_equals_int (gst_element_set_state (pipeline, GST_STATE_NULL),
        GST_STATE_CHANGE_SUCCESS);
  }
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 0);
  gst_object_unref (pipeline);
  g_free (desc);
}

GST_END_TEST;

GST_START_TEST (test_src_state_cycle_without_model)
{
  GstElement *pipeline = gst_parse_launch ("scoresdesrc "
      "model=/nonexistent/model.json ! fakesink", NULL);
  GstBus *bus = gst_element_get_bus (pipeline);
  gint i, n = cycles ();

  for (i = 0; i < n; i++) {
    fail_unless_equals_int (gst_element_set_state (pipeline,
            GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
    fail_unless_equals_int (gst_element_set_state (pipeline, GST_STATE_NULL),
        GST_STATE_CHANGE_SUCCESS);
    gst_bus_set_flushing (bus, TRUE);
    gst_bus_set_flushing (bus, FALSE);
  }
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 0);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
}

GST_END_TEST;

/* libgstscoresde: elements naming one file share one loaded model. */
GST_START_TEST (test_model_cache_shares)
{
  const gchar *path = tiny_model_path ();
  gchar *dir = g_path_get_dirname (path), *base = g_path_get_basename (path);
  gchar *cwd = g_get_current_dir ();
  GstScoreSdeModel *a, *b, *c, *d;
  GstScoreSdeDeviceSettings auto_device;
  GError *err = NULL;

  /* auto without a GPU is the CPU entry */
  gst_scoresde_device_settings_init (&auto_device);
  a = gst_scoresde_model_cache_acquire (NULL, path, &auto_device, &err);
  fail_unless (a != NULL);
  if (sde_cuda_device_count () == 0)
    fail_unless_equals_int (a->device, GST_SCORESDE_DEVICE_CPU);
  fail_unless_equals_int (gst_scoresde_model_width (a), TINY_SIZE);
  fail_unless_equals_int (a->sde.kind, SDE_VE);
  fail_unless_equals_int (strlen (a->id), 32);
  /* the same file through another spelling of its path */
  fail_unless (g_chdir (dir) == 0);
  b = gst_scoresde_model_cache_acquire (NULL, base, &cpu_device, &err);
  fail_unless (g_chdir (cwd) == 0);
  fail_unless (a == b);
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 1);
  c = gst_scoresde_model_cache_acquire (NULL, tiny_model_path_full (1, 3),
      &cpu_device, &err);
  fail_unless (c != NULL && c != a);
  fail_if (g_str_equal (a->id, c->id));
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 2);
  /* empty = $SCORESDE_DEFAULT_MODEL */
  g_setenv (GST_SCORESDE_MODEL_ENV, path, TRUE);
  d = gst_scoresde_model_cache_acquire (NULL, "", &cpu_device, &err);
  fail_unless (d == a);

  gst_scoresde_model_cache_release (a);
  gst_scoresde_model_cache_release (b);
  gst_scoresde_model_cache_release (d);
  gst_scoresde_model_cache_release (c);
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 0);
  g_free (dir);
  g_free (base);
  g_free (cwd);
}

GST_END_TEST;

/* libgstscoresde: a model file replaced on disk (new inode, mtime, size) is a new cache
 * entry, loaded fresh; users of the old one keep theirs. */
GST_START_TEST (test_model_cache_identity)
{
  gchar *path = g_build_filename (test_tmp_dir (), "replaced.json", NULL);
  gchar *tmp = g_build_filename (test_tmp_dir (), "replaced.json.new", NULL);
  gchar *text = NULL;
  GstScoreSdeModel *a, *b, *c;
  GError *err = NULL;

  fail_unless (g_file_get_contents (tiny_model_path (), &text, NULL, NULL));
  fail_unless (g_file_set_contents (path, text, -1, NULL));
  a = gst_scoresde_model_cache_acquire (NULL, path, &cpu_device, &err);
  fail_unless (a != NULL, "%s", err ? err->message : "");
  fail_unless (a->sde.sigma_max == 20.0);
  b = gst_scoresde_model_cache_acquire (NULL, path, &cpu_device, &err);
  fail_unless (b == a, "an unchanged file is shared");
  gst_scoresde_model_cache_release (b);

  /* replaced the way editors and installers do it: a new file renamed over it */
  g_free (text);
  text = g_strdup_printf ("{\"kind\": \"empirical\", \"data\": \"tiny0_c3_ve.npy\", "
      "\"centered\": false, \"sde\": {\"kind\": \"ve\", \"sigma_min\": 0.01, "
      "\"sigma_max\": 30.0, \"N\": 1000}}\n");
  fail_unless (g_file_set_contents (tmp, text, -1, NULL));
  fail_unless (g_rename (tmp, path) == 0);
  c = gst_scoresde_model_cache_acquire (NULL, path, &cpu_device, &err);
  fail_unless (c != NULL && c != a, "the replaced file was served from the cache");
  fail_unless (c->sde.sigma_max == 30.0, "stale model: sigma_max %g",
      c->sde.sigma_max);
  fail_unless (a->sde.sigma_max == 20.0, "the old user's model changed");
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 2);
  gst_scoresde_model_cache_release (a);
  gst_scoresde_model_cache_release (c);
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 0);
  g_unlink (path);
  g_free (path);
  g_free (tmp);
  g_free (text);
}

GST_END_TEST;

/* steps=1 is in the property's range and works for every sampler: pc takes its one
 * step with the exact kernel of the marginal, ode/euler one step, dpmpp-2m one
 * evaluation; the frames are not flat. */
GST_START_TEST (test_src_steps_rule_per_sampler)
{
  const gchar *configs[] = { "sampler=pc", "sampler=ode ode-method=euler",
    "sampler=dpmpp-2m"
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (configs); i++) {
    gchar *desc = g_strdup_printf ("%s steps=1 num-buffers=1", configs[i]);
    GstHarness *h = src_harness (desc);
    GstBuffer *out;
    GstMapInfo map;
    gsize k;

    gst_harness_play (h);
    out = gst_harness_pull (h);
    fail_unless (out != NULL, "%s: no frame", desc);
    fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
    for (k = 1; k < map.size && map.data[k] == map.data[0]; k++);
    fail_unless (k < map.size, "%s: a flat frame", desc);
    gst_buffer_unmap (out, &map);
    gst_buffer_unref (out);
    gst_harness_teardown (h);
    g_free (desc);
  }
}

GST_END_TEST;

/* A frame with NaN is reported on the bus, not passed on silently: the PC sampler's
 * frame with a warning, the few-step solvers' (the default) with an error naming the
 * sample. A VE prior of std 1e37 overflows float32 draws (PC, heun); the multistep
 * solvers, whose coefficients are in double, stay finite there, and fail at 1e300. */
static void
check_nonfinite_reaches_bus (const gchar * sigma_max, const gchar * sampler,
    GstMessageType expected, const gchar * needle)
{
  gchar *path = g_build_filename (test_tmp_dir (), "diverging.json", NULL);
  gchar *json, *desc;
  GstElement *pipe;
  GstBus *bus;
  GstMessage *msg;
  gboolean seen = FALSE;

  tiny_model_path ();           /* writes tiny0_c3_ve.npy */
  json = g_strdup_printf ("{\"kind\": \"empirical\", \"data\": \"tiny0_c3_ve.npy\", "
      "\"sde\": {\"kind\": \"ve\", \"sigma_min\": 0.01, \"sigma_max\": %s, "
      "\"N\": 1000}}", sigma_max);
  fail_unless (g_file_set_contents (path, json, -1, NULL));
  desc = g_strdup_printf ("scoresdesrc model=%s sampler=%s steps=10 num-buffers=1 ! fakesink",
      path, sampler);
  pipe = gst_parse_launch (desc, NULL);
  bus = gst_element_get_bus (pipe);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  while ((msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
              GST_MESSAGE_WARNING | GST_MESSAGE_ERROR | GST_MESSAGE_EOS)) != NULL) {
    GstMessageType type = GST_MESSAGE_TYPE (msg);
    GError *err = NULL;

    if (type == GST_MESSAGE_WARNING)
      gst_message_parse_warning (msg, &err, NULL);
    else if (type == GST_MESSAGE_ERROR)
      gst_message_parse_error (msg, &err, NULL);
    if (err) {
      GST_INFO ("%s: %s", sampler, err->message);
      seen |= type == expected && strstr (err->message, needle) != NULL;
      g_clear_error (&err);
    }
    gst_message_unref (msg);
    if (type != GST_MESSAGE_WARNING)
      break;
  }
  fail_unless (seen, "%s: no %s about the non-finite frame on the bus", sampler,
      gst_message_type_get_name (expected));
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipe);
  g_unlink (path);
  g_free (path);
  g_free (json);
  g_free (desc);
}

GST_START_TEST (test_src_nonfinite_warns)
{
  check_nonfinite_reaches_bus ("1e37", "pc", GST_MESSAGE_WARNING,
      "of the sample are NaN or Inf");
  check_nonfinite_reaches_bus ("1e37", "heun", GST_MESSAGE_ERROR, "is not finite");
  check_nonfinite_reaches_bus ("1e300", "dpmpp-2m", GST_MESSAGE_ERROR, "is not finite");
  check_nonfinite_reaches_bus ("1e300", "dpmpp-2m-sde", GST_MESSAGE_ERROR, "is not finite");
}

GST_END_TEST;

/* Frames of scoresdesrc with the shipped Fashion-MNIST model and `props`. */
static void
fashion_frames (const gchar * props, gint n, GstBuffer ** out)
{
  gchar *model = shipped_model ("fashion-mnist-32.safetensors");
  gchar *desc = g_strdup_printf ("scoresdesrc model=%s seed=5 sampler=pc "
      "predictor=euler-maruyama corrector=none batch-size=%d num-buffers=%d %s",
      model, n, n, props);
  GstHarness *h = gst_harness_new_parse (desc);

  gst_harness_play (h);
  pull_n (h, n, out);
  gst_harness_teardown (h);
  g_free (desc);
  g_free (model);
}

/* Scale 0 is the unguided sampler bit for bit; a positive scale pulls every frame to
 * the class, as judged by the classifier itself at t = 1e-3. */
GST_START_TEST (test_src_class_guidance)
{
  gchar *clf_path = shipped_model ("fashion-mnist-32-classifier.safetensors");
  sde_model *clf = NULL;
  GstBuffer *plain[2], *zero[2], *guided[2];
  const gint label = 1;         /* trouser */
  gint i, p;

  fashion_frames ("steps=60", 2, plain);
  fashion_frames ("steps=60 class-label=1 guidance-scale=0", 2, zero);
  fashion_frames ("steps=60 class-label=1 guidance-scale=4", 2, guided);

  fail_unless (sde_model_load (clf_path, &clf) == SDE_OK, "%s", sde_errmsg ());
  for (i = 0; i < 2; i++) {
    GstMapInfo map;
    gfloat x[32 * 32], t = 1e-3f, logp[10];
    gint best = 0, k;

    fail_unless (buffers_equal (plain[i], zero[i]),
        "guidance-scale 0 changed frame %d", i);
    fail_if (buffers_equal (plain[i], guided[i]));
    fail_unless (gst_buffer_map (guided[i], &map, GST_MAP_READ));
    fail_unless_equals_int (map.size, 32 * 32);     /* GRAY8, stride 32 */
    for (p = 0; p < 32 * 32; p++)
      x[p] = map.data[p] / 127.5f - 1.0f;
    gst_buffer_unmap (guided[i], &map);
    fail_unless (sde_classifier_logp (clf, &clf->sde, 1, x, &t, logp) == SDE_OK);
    for (k = 1; k < 10; k++)
      if (logp[k] > logp[best])
        best = k;
    fail_unless_equals_int (best, label);
  }
  sde_model_free (clf);
  unref_n (plain, 2);
  unref_n (zero, 2);
  unref_n (guided, 2);
  g_free (clf_path);
}

GST_END_TEST;

/* Sets `props` on a stand-alone scoresdesrc, plays it into a fakesink and returns the
 * first bus error (it must fail at start or at the first frame). */
static GError *
guidance_error (const gchar * props)
{
  gchar *desc = g_strdup_printf ("scoresdesrc num-buffers=1 steps=5 %s ! fakesink",
      props);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstBus *bus = gst_element_get_bus (pipeline);
  GError *err;

  fail_unless (pipeline != NULL);
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  err = expect_bus_error (bus, 60 * GST_SECOND);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
  g_free (desc);
  return err;
}

GST_START_TEST (test_src_class_guidance_errors)
{
  gchar *model = shipped_model ("fashion-mnist-32.safetensors");
  gchar *props;
  GError *err;

  /* a class the classifier does not have */
  props = g_strdup_printf ("model=%s class-label=12", model);
  err = guidance_error (props);
  fail_unless (strstr (err->message, "class 12 outside 0..9") != NULL, "%s",
      err->message);
  g_clear_error (&err);
  g_free (props);

  /* a score network is not a classifier */
  props = g_strdup_printf ("model=%s classifier=%s class-label=1", model, model);
  err = guidance_error (props);
  fail_unless (strstr (err->message, "is not a classifier") != NULL, "%s",
      err->message);
  g_clear_error (&err);
  g_free (props);

  /* the analytic model has no <model>-classifier.safetensors beside it */
  props = g_strdup_printf ("model=%s class-label=0", tiny_model_path ());
  err = guidance_error (props);
  fail_unless (g_error_matches (err, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_NOT_FOUND), "%s", err->message);
  fail_unless (strstr (err->message, "-classifier.safetensors") != NULL, "%s",
      err->message);
  g_clear_error (&err);
  g_free (props);
  g_free (model);
}

GST_END_TEST;

/* Without $SCORESDE_DEFAULT_MODEL the elements load the shipped trained models: the
 * Fashion-MNIST network (gray) and, for colorization, the emoji network (RGB). */
GST_START_TEST (test_shipped_default_models)
{
  const gchar *files[] = { GST_SCORESDE_DEFAULT_MODEL_FILE,
    GST_SCORESDE_DEFAULT_COLOR_MODEL_FILE
  };
  const gint channels[] = { 1, 3 };
  GstScoreSdeDeviceSettings device;
  gchar *saved = g_strdup (g_getenv (GST_SCORESDE_MODEL_ENV));
  gint i;

  gst_scoresde_device_settings_init (&device);
  g_unsetenv (GST_SCORESDE_MODEL_ENV);
  for (i = 0; i < 2; i++) {
    GError *err = NULL;
    gchar *path = gst_scoresde_model_resolve_path (NULL, files[i], &err);
    GstScoreSdeModel *m;

    fail_unless (path != NULL, "%s", err ? err->message : "?");
    fail_unless (g_str_has_suffix (path, files[i]), "%s", path);
    m = gst_scoresde_model_cache_acquire_full (NULL, NULL, files[i], &device,
        &err);
    fail_unless (m != NULL, "%s", err ? err->message : "?");
    fail_unless (sde_network_is (m->model));
    fail_unless_equals_int (gst_scoresde_model_channels (m), channels[i]);
    fail_unless_equals_int (gst_scoresde_model_width (m), 32);
    gst_scoresde_model_cache_release (m);
    g_free (path);
  }
  if (saved != NULL)
    g_setenv (GST_SCORESDE_MODEL_ENV, saved, TRUE);
  g_free (saved);
}

GST_END_TEST;

static Suite *
scoresdesrc_suite (void)
{
  Suite *s = suite_create ("scoresdesrc");
  TCase *tc = tcase_create ("general");

  /* create the tiny models before the tests fork */
  tiny_model_path ();
  tiny_model_path_full (1, 3);
  tiny_model_path_full (0, 1);
  tiny_model_path_sde (0, 3, SDE_VP);
  tiny_model_path_sde (0, 3, SDE_SUBVP);
  bad_model_path ();

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_src_negotiation);
  tcase_add_test (tc, test_src_start_frame);
  tcase_add_test (tc, test_src_gray_is_luma_mean);
  tcase_add_test (tc, test_src_gray_model);
  tcase_add_test (tc, test_src_refuses_other_size);
  tcase_add_test (tc, test_src_num_buffers_eos_duration);
  tcase_add_test (tc, test_src_fewstep_samplers);
  tcase_add_test (tc, test_src_fewstep_every_step_count);
  tcase_add_test (tc, test_src_deterministic);
  tcase_add_test (tc, test_src_seek_reproduces_frame);
  tcase_add_test (tc, test_src_batch_independent);
  tcase_add_test (tc, test_src_walk);
  tcase_add_test (tc, test_src_live_latency);
  tcase_add_test (tc, test_src_flush_cancels_sampling);
  tcase_add_test (tc, test_src_bad_model);
  tcase_add_test (tc, test_src_state_cycle_with_model);
  tcase_add_test (tc, test_src_state_cycle_without_model);
  tcase_add_test (tc, test_model_cache_shares);
  tcase_add_test (tc, test_model_cache_identity);
  tcase_add_test (tc, test_src_steps_rule_per_sampler);
  tcase_add_test (tc, test_src_nonfinite_warns);
  tcase_add_test (tc, test_src_class_guidance);
  tcase_add_test (tc, test_src_class_guidance_errors);
  tcase_add_test (tc, test_shipped_default_models);
  return s;
}

GST_CHECK_MAIN (scoresdesrc);
