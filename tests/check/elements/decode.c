/* Tests of scoresdedecode.
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#include "common.c"

#define DEC_PROPS "sampler=ode rtol=1e-5 atol=1e-5"

static GstHarness *
decode_harness (const gchar * model, const gchar * props)
{
  gchar *desc = g_strdup_printf ("scoresdedecode model=%s %s", model, props);
  GstHarness *h = gst_harness_new_parse (desc);

  g_free (desc);
  return h;
}

/* A prior draw of the tiny model's VE SDE (sigma_max 20), as a latent buffer. */
static GstBuffer *
prior_latent (guint64 stream)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, TINY_D * 4, NULL);
  GstMapInfo map;
  sde_sde sde;

  sde_init (&sde, SDE_VE);
  sde.sigma_max = 20.0;
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  sde_prior_sample (&sde, 1234, stream, 0, 1, TINY_D, (float *) map.data);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = stream * GST_SECOND;
  GST_BUFFER_DURATION (buf) = GST_SECOND;
  return buf;
}

GST_START_TEST (test_decode_negotiation_and_processing)
{
  GstHarness *h = decode_harness (tiny_model_path (), DEC_PROPS);
  gchar *id = model_id_of (tiny_model_path ());
  gchar *caps_str = latent_caps_str (id, 8, 8, 3, 1, 1);
  GstBuffer *in, *out, *out2;
  GstCaps *caps;
  GstStructure *s;
  gint w;

  gst_harness_set_src_caps_str (h, caps_str);
  in = prior_latent (2);
  gst_buffer_add_scoresde_latent_meta (in)->seed = 1234;
  out = gst_harness_push_and_pull (h, gst_buffer_ref (in));
  fail_unless (out != NULL);

  caps = gst_pad_get_current_caps (h->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_has_name (s, "video/x-raw"));
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  fail_unless (gst_structure_get_int (s, "width", &w));
  fail_unless_equals_int (w, TINY_SIZE);
  gst_caps_unref (caps);

  fail_unless_equals_int (gst_buffer_get_size (out), TINY_D);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), 2 * GST_SECOND);
  fail_unless_equals_uint64 (GST_BUFFER_DURATION (out), GST_SECOND);
  /* the latent's meta travels with the frame, updated by the decode */
  fail_unless (gst_buffer_get_scoresde_latent_meta (out) != NULL);
  fail_unless_equals_uint64 (gst_buffer_get_scoresde_latent_meta (out)->seed,
      1234);
  fail_unless (gst_buffer_get_scoresde_latent_meta (out)->nfe > 0);
  fail_unless (gst_buffer_get_scoresde_latent_meta (out)->t < 1e-3);

  /* deterministic */
  out2 = gst_harness_push_and_pull (h, in);
  fail_unless (buffers_equal (out, out2));
  gst_buffer_unref (out);
  gst_buffer_unref (out2);
  g_free (caps_str);
  g_free (id);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Decoding a prior draw under the empirical model lands on (near) a training image,
 * with the adaptive ODE and with each deterministic few-step solver. */
static void
check_lands_on_training_image (const gchar * props)
{
  GstHarness *h = decode_harness (tiny_model_path (), props);
  gchar *id = model_id_of (tiny_model_path ());
  gchar *caps_str = latent_caps_str (id, 8, 8, 3, 1, 1);
  GstBuffer *out;
  GstMapInfo mo;
  gdouble best = 0.0;
  gint i;

  gst_harness_set_src_caps_str (h, caps_str);
  out = gst_harness_push_and_pull (h, prior_latent (0));
  gst_buffer_map (out, &mo, GST_MAP_READ);
  for (i = 0; i < TINY_IMAGES; i++) {
    GstBuffer *img = tiny_rgb_frame (0, i);
    GstMapInfo mi;

    gst_buffer_map (img, &mi, GST_MAP_READ);
    best = MAX (best, psnr_u8 (mi.data, mo.data, mi.size));
    gst_buffer_unmap (img, &mi);
    gst_buffer_unref (img);
  }
  GST_INFO ("%s: best PSNR to a training image %.1f dB", props, best);
  fail_unless (best > 30.0, "%s: decoded latent is %.1f dB from the data",
      props, best);
  gst_buffer_unmap (out, &mo);
  gst_buffer_unref (out);
  g_free (caps_str);
  g_free (id);
  gst_harness_teardown (h);
}

GST_START_TEST (test_decode_lands_on_training_image)
{
  check_lands_on_training_image (DEC_PROPS);
  /* the default, dpmpp-2m at 15 (prior streams 0-23: best PSNR 39.2-41.0 dB at 15
   * and at 20) */
  check_lands_on_training_image ("");
  check_lands_on_training_image ("sampler=ddim steps=50");
  check_lands_on_training_image ("sampler=dpmpp-3m steps=10");
  check_lands_on_training_image ("sampler=heun steps=20 schedule=karras");
}

GST_END_TEST;

/* GRAY8 output from a 3-channel model; RGBA with opaque alpha. */
GST_START_TEST (test_decode_output_formats)
{
  gchar *id = model_id_of (tiny_model_path ());
  gchar *caps_str = latent_caps_str (id, 8, 8, 3, 1, 1);
  const gchar *formats[] = { "RGB", "GRAY8", "RGBA" };
  GstBuffer *outs[3];
  GstMapInfo m[3];
  guint k;
  gint p;

  for (k = 0; k < 3; k++) {
    GstHarness *h = decode_harness (tiny_model_path (), DEC_PROPS);
    gchar *sink = g_strdup_printf ("video/x-raw, format=%s", formats[k]);

    gst_harness_set_src_caps_str (h, caps_str);
    gst_harness_set_sink_caps_str (h, sink);
    outs[k] = gst_harness_push_and_pull (h, prior_latent (1));
    fail_unless (outs[k] != NULL, "%s", formats[k]);
    gst_buffer_map (outs[k], &m[k], GST_MAP_READ);
    g_free (sink);
    gst_harness_teardown (h);
  }
  fail_unless_equals_int (m[1].size, TINY_SIZE * TINY_SIZE);
  fail_unless_equals_int (m[2].size, TINY_SIZE * TINY_SIZE * 4);
  for (p = 0; p < TINY_SIZE * TINY_SIZE; p++) {
    const guint8 *rgb = m[0].data + 3 * p;
    gdouble mean = (rgb[0] + rgb[1] + rgb[2]) / 3.0;

    fail_unless (fabs (m[1].data[p] - mean) <= 1.0);
    fail_unless_equals_int (m[2].data[4 * p + 0], rgb[0]);
    fail_unless_equals_int (m[2].data[4 * p + 1], rgb[1]);
    fail_unless_equals_int (m[2].data[4 * p + 2], rgb[2]);
    fail_unless_equals_int (m[2].data[4 * p + 3], 255);
  }
  for (k = 0; k < 3; k++) {
    gst_buffer_unmap (outs[k], &m[k]);
    gst_buffer_unref (outs[k]);
  }
  g_free (caps_str);
  g_free (id);
}

GST_END_TEST;

/* A latent of another model is refused at negotiation with a clear bus error. */
GST_START_TEST (test_decode_model_mismatch)
{
  GstHarness *h = decode_harness (tiny_model_path (), DEC_PROPS);
  GstBus *bus = attach_bus (h->element);
  gchar *other = model_id_of (tiny_model_path_full (1, 3));
  gchar *mine = model_id_of (tiny_model_path ());
  gchar *caps_str = latent_caps_str (other, 8, 8, 3, 1, 1);
  GstFlowReturn ret;
  GError *err;

  gst_harness_set_src_caps_str (h, caps_str);
  ret = gst_harness_push (h, prior_latent (0));
  fail_unless_equals_int (ret, GST_FLOW_NOT_NEGOTIATED);
  err = expect_bus_error (bus, 0);
  fail_unless (g_error_matches (err, GST_STREAM_ERROR,
          GST_STREAM_ERROR_WRONG_TYPE), "%s", err->message);
  fail_unless (strstr (err->message, "latent comes from model") != NULL,
      "%s", err->message);
  fail_unless (strstr (err->message, other) != NULL, "%s", err->message);
  fail_unless (strstr (err->message, mine) != NULL, "%s", err->message);
  g_error_free (err);

  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  g_free (caps_str);
  g_free (other);
  g_free (mine);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A latent whose shape does not fit the model is refused the same way. */
GST_START_TEST (test_decode_refuses_bad_caps)
{
  GstHarness *h = decode_harness (tiny_model_path (), DEC_PROPS);
  GstBus *bus = attach_bus (h->element);
  gchar *caps_str = latent_caps_str (NULL, 16, 16, 3, 1, 1);
  GstCaps *caps;
  GError *err;

  /* not float32: refused by the pad */
  caps = gst_caps_from_string ("other/tensors, format=static, num_tensors=1, "
      "types=uint8, dimensions=8:8:3:1, framerate=1/1");
  fail_if (gst_pad_peer_query_accept_caps (h->srcpad, caps));
  gst_caps_unref (caps);

  gst_harness_set_src_caps_str (h, caps_str);
  fail_unless_equals_int (gst_harness_push (h, gst_buffer_new_allocate (NULL,
              16 * 16 * 3 * 4, NULL)), GST_FLOW_NOT_NEGOTIATED);
  err = expect_bus_error (bus, 0);
  fail_unless (strstr (err->message, "expects 3x8x8") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  g_free (caps_str);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* No scoresde field (dropped by a foreign element): warn, decode anyway. */
GST_START_TEST (test_decode_untagged_latent_warns)
{
  GstHarness *h = decode_harness (tiny_model_path (), DEC_PROPS);
  GstBus *bus = attach_bus (h->element);
  gchar *caps_str = latent_caps_str (NULL, 8, 8, 3, 1, 1);
  GstMessage *msg;
  GstBuffer *out;

  gst_harness_set_src_caps_str (h, caps_str);
  out = gst_harness_push_and_pull (h, prior_latent (0));
  fail_unless (out != NULL);
  gst_buffer_unref (out);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING);
  {
    GError *err = NULL;
    gst_message_parse_warning (msg, &err, NULL);
    fail_unless (strstr (err->message, "no 'scoresde' model tag") != NULL,
        "%s", err->message);
    g_error_free (err);
  }
  gst_message_unref (msg);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  g_free (caps_str);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A flush cancels a running decode between two solver steps. */
typedef struct
{
  GstHarness *h;
  GstBuffer *buf;
  GstFlowReturn ret;
} PushJob;

static gpointer
push_thread (gpointer data)
{
  PushJob *job = data;

  job->ret = gst_harness_push (job->h, job->buf);
  return NULL;
}

GST_START_TEST (test_decode_flush_cancels)
{
  /* the default model with 20000 Heun steps: one decode takes seconds */
  GstHarness *h = gst_harness_new_parse ("scoresdedecode sampler=ode "
      "ode-method=heun steps=20000");
  GstScoreSdeModel *m = gst_scoresde_model_cache_acquire (NULL, NULL,
      &cpu_device, NULL);
  gchar *caps_str;
  PushJob job;
  GThread *t;
  gint64 t0, dt;

  fail_unless (m != NULL);
  caps_str = latent_caps_str (m->id, gst_scoresde_model_width (m),
      gst_scoresde_model_height (m), gst_scoresde_model_channels (m), 1, 1);
  gst_harness_set_src_caps_str (h, caps_str);
  job.h = h;
  job.buf = gst_buffer_new_allocate (NULL, gst_scoresde_model_dim (m) * 4,
      NULL);
  gst_buffer_memset (job.buf, 0, 0, gst_scoresde_model_dim (m) * 4);
  job.ret = GST_FLOW_OK;

  t0 = g_get_monotonic_time ();
  t = g_thread_new ("push", push_thread, &job);
  g_usleep (400 * 1000);
  t0 = g_get_monotonic_time ();
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  g_thread_join (t);
  dt = g_get_monotonic_time () - t0;
  GST_INFO ("decode returned %s %" G_GINT64_FORMAT " us after flush-start",
      gst_flow_get_name (job.ret), dt);
  fail_unless_equals_int (job.ret, GST_FLOW_FLUSHING);
  fail_unless (dt < 200 * 1000, "flush took %" G_GINT64_FORMAT " ms",
      dt / 1000);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));

  gst_scoresde_model_cache_release (m);
  g_free (caps_str);
  gst_harness_teardown (h);
}

GST_END_TEST;

static void
check_ready_error (const gchar * model, GQuark domain, gint code,
    const gchar * text)
{
  GstElement *el = gst_element_factory_make ("scoresdedecode", NULL);
  GstBus *bus = attach_bus (el);
  GError *err;

  g_object_set (el, "model", model, NULL);
  fail_unless_equals_int (gst_element_set_state (el, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  err = expect_bus_error (bus, 0);
  fail_unless (g_error_matches (err, domain, code), "%s", err->message);
  fail_unless (strstr (err->message, text) != NULL, "%s", err->message);
  g_error_free (err);
  gst_element_set_state (el, GST_STATE_NULL);
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  gst_object_unref (el);
}

GST_START_TEST (test_decode_bad_model)
{
  check_ready_error ("/nonexistent/dec.json", GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_NOT_FOUND, "/nonexistent/dec.json");
  check_ready_error (bad_model_path (), GST_LIBRARY_ERROR,
      GST_LIBRARY_ERROR_INIT, "Could not load model");
}

GST_END_TEST;

static gint
cycles (void)
{
  const gchar *env = g_getenv ("SCORESDE_TEST_CYCLES");
  return env ? atoi (env) : 200;
}

static void
state_cycles (const gchar * model, gboolean expect_failure)
{
  GstHarness *h = NULL;
  GstElement *el = gst_element_factory_make ("scoresdedecode", NULL);
  GstBus *bus = attach_bus (el);
  gint i, n = cycles ();

  g_object_set (el, "model", model, "rtol", 1e-2, "atol", 1e-2, NULL);
  if (!expect_failure) {
    /* the harness starts the element: only with a loadable model */
    gchar *id = model_id_of (model);
    gchar *caps_str = latent_caps_str (id, 8, 8, 3, 1, 1);
    h = gst_harness_new_with_element (el, "sink", "src");
    gst_harness_set_src_caps_str (h, caps_str);
    g_free (caps_str);
    g_free (id);
  }
  for (i = 0; i < n; i++) {
    GstStateChangeReturn ret = gst_element_set_state (el, GST_STATE_PLAYING);
    if (expect_failure) {
      fail_unless_equals_int (ret, GST_STATE_CHANGE_FAILURE);
      gst_bus_set_flushing (bus, TRUE);
      gst_bus_set_flushing (bus, FALSE);
    } else {
      fail_unless_equals_int (ret, GST_STATE_CHANGE_SUCCESS);
      if (i % 2 == 0) {
        GstBuffer *out;
        gst_harness_push_event (h, gst_event_new_stream_start ("s"));
        {
          gchar *id = model_id_of (model);
          gchar *caps_str = latent_caps_str (id, 8, 8, 3, 1, 1);
          GstCaps *caps = gst_caps_from_string (caps_str);
          gst_harness_push_event (h, gst_event_new_caps (caps));
          gst_caps_unref (caps);
          g_free (caps_str);
          g_free (id);
        }
        {
          GstSegment seg;
          gst_segment_init (&seg, GST_FORMAT_TIME);
          gst_harness_push_event (h, gst_event_new_segment (&seg));
        }
        out = gst_harness_push_and_pull (h, prior_latent (i));
        fail_unless (out != NULL);
        gst_buffer_unref (out);
      }
    }
    fail_unless_equals_int (gst_element_set_state (el, GST_STATE_NULL),
        GST_STATE_CHANGE_SUCCESS);
  }
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  if (h)
    gst_harness_teardown (h);
  gst_object_unref (el);
  fail_unless_equals_int (gst_scoresde_model_cache_size (), 0);
}

GST_START_TEST (test_decode_state_cycle_with_model)
{
  state_cycles (tiny_model_path (), FALSE);
}

GST_END_TEST;

GST_START_TEST (test_decode_state_cycle_without_model)
{
  state_cycles ("/nonexistent/dec.json", TRUE);
}

GST_END_TEST;

static Suite *
decode_suite (void)
{
  Suite *s = suite_create ("scoresdedecode");
  TCase *tc = tcase_create ("general");

  tiny_model_path ();
  tiny_model_path_full (1, 3);
  bad_model_path ();

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_decode_negotiation_and_processing);
  tcase_add_test (tc, test_decode_lands_on_training_image);
  tcase_add_test (tc, test_decode_output_formats);
  tcase_add_test (tc, test_decode_model_mismatch);
  tcase_add_test (tc, test_decode_refuses_bad_caps);
  tcase_add_test (tc, test_decode_untagged_latent_warns);
  tcase_add_test (tc, test_decode_flush_cancels);
  tcase_add_test (tc, test_decode_bad_model);
  tcase_add_test (tc, test_decode_state_cycle_with_model);
  tcase_add_test (tc, test_decode_state_cycle_without_model);
  return s;
}

GST_CHECK_MAIN (decode);
