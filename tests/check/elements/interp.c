/* Tests of scoresdeinterp.
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#include "common.c"

#define MODEL_ID "0123456789abcdef0123456789abcdef"

static GstBuffer *
latent (guint64 stream, GstClockTime pts, GstClockTime duration)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, TINY_D * 4, NULL);
  GstMapInfo map;
  sde_sde sde;

  sde_init (&sde, SDE_VE);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  sde_prior_sample (&sde, 77, stream, 0, 1, TINY_D, (float *) map.data);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = duration;
  GST_BUFFER_OFFSET (buf) = 100 + stream;
  gst_buffer_add_scoresde_latent_meta (buf)->frame = stream;
  return buf;
}

static GstHarness *
interp_harness (const gchar * props, gint fps_n)
{
  gchar *desc = g_strdup_printf ("scoresdeinterp %s", props);
  gchar *caps = latent_caps_str (MODEL_ID, 8, 8, 3, fps_n, 1);
  GstHarness *h = gst_harness_new_parse (desc);

  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  g_free (desc);
  return h;
}

static void
push_eos_and_check (GstHarness * h)
{
  GstEvent *ev;
  gboolean eos = FALSE;

  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  while ((ev = gst_harness_try_pull_event (h)) != NULL) {
    eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (eos);
}

/* max |a - b| over two latent buffers, or over a buffer and floats */
static gdouble
max_diff (GstBuffer * a, const gfloat * b)
{
  GstMapInfo m;
  gdouble d = 0.0;
  gint i;

  gst_buffer_map (a, &m, GST_MAP_READ);
  for (i = 0; i < TINY_D; i++)
    d = MAX (d, fabs (((gfloat *) m.data)[i] - b[i]));
  gst_buffer_unmap (a, &m);
  return d;
}

static void
read_latent (GstBuffer * b, gfloat * out)
{
  gst_buffer_extract (b, 0, out, TINY_D * 4);
}

/* k latents give (n+1)(k-1)+1 outputs whose timestamps subdivide each interval. */
GST_START_TEST (test_interp_count_and_timestamps)
{
  GstHarness *h = interp_harness ("n-frames=3", 1);
  GstBuffer *in[4];
  gfloat x[4][TINY_D], mid[TINY_D];
  GstCaps *caps;
  GstScoreSdeLatentInfo info;
  guint n, j;

  for (j = 0; j < 4; j++) {
    in[j] = latent (j, j * GST_SECOND, GST_SECOND);
    read_latent (in[j], x[j]);
    fail_unless_equals_int (gst_harness_push (h, in[j]), GST_FLOW_OK);
  }
  /* three intervals are complete, the last latent waits for EOS */
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 12);
  push_eos_and_check (h);
  n = gst_harness_buffers_in_queue (h);
  fail_unless_equals_int (n, 4 * (4 - 1) + 1);

  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_scoresde_latent_caps_parse (caps, &info, NULL));
  fail_unless_equals_int (info.fps_n, 4);
  fail_unless_equals_int (info.fps_d, 1);
  fail_unless_equals_string (info.model_id, MODEL_ID);
  gst_caps_unref (caps);

  for (j = 0; j < n; j++) {
    GstBuffer *out = gst_harness_pull (h);

    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), j * GST_SECOND / 4);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (out), GST_SECOND / 4);
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET (out), j);
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET_END (out), j + 1);
    fail_unless_equals_int (GST_BUFFER_FLAG_IS_SET (out,
            GST_BUFFER_FLAG_DISCONT), j == 0);
    fail_unless (gst_buffer_get_scoresde_latent_meta (out) != NULL);
    if (j % 4 == 0) {
      /* the inputs themselves */
      fail_unless (max_diff (out, x[j / 4]) == 0.0, "output %u", j);
    } else if (j % 4 == 2) {
      sde_slerp (x[j / 4], x[j / 4 + 1], TINY_D, 0.5, mid);
      fail_unless (max_diff (out, mid) < 1e-6, "output %u", j);
    }
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

/* n-frames is READY-only: set while PLAYING it is ignored with a warning on the bus, and
 * the stream keeps its frame count (never half applied to timestamps and counts). */
GST_START_TEST (test_interp_n_frames_while_playing)
{
  GstHarness *h = interp_harness ("n-frames=3", 1);
  GstElement *el = gst_harness_find_element (h, "scoresdeinterp");
  GstBus *bus = attach_bus (h->element);
  GstMessage *msg;
  GError *err = NULL;
  gint n_frames, j;

  gst_harness_play (h);
  fail_unless_equals_int (gst_harness_push (h, latent (0, 0, GST_SECOND)),
      GST_FLOW_OK);
  g_object_set (el, "n-frames", 7, NULL);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL, "no warning on the bus");
  gst_message_parse_warning (msg, &err, NULL);
  fail_unless (strstr (err->message, "'n-frames' can only be changed in the NULL or "
          "READY state") != NULL, "%s", err->message);
  g_clear_error (&err);
  gst_message_unref (msg);
  g_object_get (el, "n-frames", &n_frames, NULL);
  fail_unless_equals_int (n_frames, 3);
  for (j = 1; j < 3; j++)
    fail_unless_equals_int (gst_harness_push (h, latent (j, j * GST_SECOND,
                GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 2 * 4);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_object_unref (el);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_interp_lerp)
{
  GstHarness *h = interp_harness ("n-frames=1 method=lerp", 10);
  gfloat a[TINY_D], b[TINY_D], mid[TINY_D];
  GstBuffer *out;
  gint i;

  fail_unless_equals_int (gst_harness_push (h, latent (0, 0, GST_SECOND / 10)),
      GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, latent (1, GST_SECOND / 10,
              GST_SECOND / 10)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  read_latent (out, a);
  gst_buffer_unref (out);
  out = gst_harness_pull (h);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), GST_SECOND / 20);
  {
    GstBuffer *l1 = latent (1, 0, 0);
    read_latent (l1, b);
    gst_buffer_unref (l1);
  }
  for (i = 0; i < TINY_D; i++)
    mid[i] = 0.5f * a[i] + 0.5f * b[i];
  fail_unless (max_diff (out, mid) < 1e-6);
  gst_buffer_unref (out);
  push_eos_and_check (h);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 1);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Without timestamps' help the framerate gives the interval; n-frames=0 passes
 * latents through one by one. */
GST_START_TEST (test_interp_framerate_interval_and_n0)
{
  GstHarness *h = interp_harness ("n-frames=4", 2);
  GstBuffer *out;
  gint j;

  /* no durations: the intervals come from the PTS; the last from the framerate */
  fail_unless_equals_int (gst_harness_push (h, latent (0, 0,
              GST_CLOCK_TIME_NONE)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, latent (1, GST_SECOND,
              GST_CLOCK_TIME_NONE)), GST_FLOW_OK);
  for (j = 0; j < 5; j++) {
    out = gst_harness_pull (h);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), j * GST_SECOND / 5);
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);

  h = interp_harness ("n-frames=0", 2);
  for (j = 0; j < 3; j++)
    fail_unless_equals_int (gst_harness_push (h, latent (j, j * GST_SECOND / 2,
                GST_SECOND / 2)), GST_FLOW_OK);
  push_eos_and_check (h);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 3);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A flush forgets the waiting latent: nothing is interpolated across it. */
GST_START_TEST (test_interp_flush)
{
  GstHarness *h = interp_harness ("n-frames=3", 1);

  fail_unless_equals_int (gst_harness_push (h, latent (0, 0, GST_SECOND)),
      GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, latent (1, GST_SECOND,
              GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 4);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  {
    GstSegment seg;
    gst_segment_init (&seg, GST_FORMAT_TIME);
    fail_unless (gst_harness_push_event (h, gst_event_new_segment (&seg)));
  }
  fail_unless_equals_int (gst_harness_push (h, latent (5, 5 * GST_SECOND,
              GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 4);
  push_eos_and_check (h);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 5);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_interp_refuses_bad_caps)
{
  GstHarness *h = gst_harness_new ("scoresdeinterp");
  GstCaps *caps;

  caps = gst_caps_from_string ("other/tensors, format=static, num_tensors=1, "
      "types=uint8, dimensions=8:8:3:1, framerate=1/1");
  fail_if (gst_pad_peer_query_accept_caps (h->srcpad, caps));
  gst_caps_unref (caps);
  caps = gst_caps_from_string ("video/x-raw, format=RGB, width=8, height=8");
  fail_if (gst_pad_peer_query_accept_caps (h->srcpad, caps));
  gst_caps_unref (caps);
  caps = gst_caps_from_string ("other/tensors, format=static, num_tensors=1, "
      "types=float32, dimensions=8:8:3:1, framerate=1/1");
  fail_unless (gst_pad_peer_query_accept_caps (h->srcpad, caps));
  gst_caps_unref (caps);

  /* a buffer whose size does not match the caps */
  gst_harness_set_src_caps_str (h, "other/tensors, format=static, "
      "num_tensors=1, types=float32, dimensions=8:8:3:1, framerate=1/1");
  fail_unless_equals_int (gst_harness_push (h, gst_buffer_new_allocate (NULL,
              10, NULL)), GST_FLOW_ERROR);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* libgstscoresde: NNStreamer dimension strings. */
GST_START_TEST (test_latent_dimensions_parse)
{
  gint w, h, c;

  fail_unless (gst_scoresde_latent_dimensions_parse ("32:16:3:1", &w, &h, &c));
  fail_unless (w == 32 && h == 16 && c == 3);
  fail_unless (gst_scoresde_latent_dimensions_parse ("8:8:3", &w, &h, &c));
  fail_unless (gst_scoresde_latent_dimensions_parse ("8:8:3:1:1:1", &w, &h,
          &c));
  fail_unless (gst_scoresde_latent_dimensions_parse ("8", &w, &h, &c));
  fail_unless (w == 8 && h == 1 && c == 1);
  fail_if (gst_scoresde_latent_dimensions_parse ("8:8:3:2", &w, &h, &c));
  fail_if (gst_scoresde_latent_dimensions_parse ("8:x:3:1", &w, &h, &c));
  fail_if (gst_scoresde_latent_dimensions_parse ("8:0:3:1", &w, &h, &c));
  fail_if (gst_scoresde_latent_dimensions_parse ("", &w, &h, &c));
}

GST_END_TEST;

/* libgstscoresde: engine status -> GStreamer error domains. */
GST_START_TEST (test_error_mapping)
{
  GError *err;

  sde_fail (SDE_ENOMEM, "cannot allocate 12 GB");
  err = gst_scoresde_error_from_status (SDE_ENOMEM, "Sampling");
  fail_unless (g_error_matches (err, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_NO_SPACE_LEFT));
  fail_unless (strstr (err->message, "cannot allocate 12 GB") != NULL);
  g_error_free (err);

  sde_fail (SDE_ENUMERIC, "step size underflow");
  err = gst_scoresde_error_from_status (SDE_ENUMERIC, "Sampling");
  fail_unless (g_error_matches (err, GST_STREAM_ERROR,
          GST_STREAM_ERROR_FAILED));
  fail_unless (strstr (err->message, "step size underflow") != NULL);
  g_error_free (err);

  sde_fail (SDE_EFORMAT, "bad header");
  err = gst_scoresde_error_from_status (SDE_EFORMAT, "Loading");
  fail_unless (g_error_matches (err, GST_LIBRARY_ERROR,
          GST_LIBRARY_ERROR_INIT));
  g_error_free (err);
}

GST_END_TEST;

/* libgstscoresde: frame <-> planar float in model space, every format and channel
 * count, centered or not. */
GST_START_TEST (test_video_conversion)
{
  const GstVideoFormat formats[] = { GST_VIDEO_FORMAT_GRAY8,
    GST_VIDEO_FORMAT_RGB, GST_VIDEO_FORMAT_RGBA, GST_VIDEO_FORMAT_BGRx
  };
  const gint channels[] = { 1, 3, 4 };
  guint f, c, centered;

  fail_if (gst_scoresde_video_format_is_supported (GST_VIDEO_FORMAT_I420));
  fail_if (gst_scoresde_video_format_is_supported (GST_VIDEO_FORMAT_GRAY16_LE));
  for (f = 0; f < G_N_ELEMENTS (formats); f++) {
    GstVideoInfo info;
    GstBuffer *buf;
    GstVideoFrame frame;
    guint8 *ref;
    gint x, y, k;

    fail_unless (gst_scoresde_video_format_is_supported (formats[f]));
    gst_video_info_set_format (&info, formats[f], 5, 3);        /* odd: padded rows */
    buf = gst_buffer_new_allocate (NULL, info.size, NULL);
    fail_unless (gst_video_frame_map (&frame, &info, buf, GST_MAP_READWRITE));
    for (k = 0; k < (gint) GST_VIDEO_FRAME_N_COMPONENTS (&frame); k++)
      for (y = 0; y < 3; y++)
        for (x = 0; x < 5; x++)
          GST_VIDEO_FRAME_COMP_DATA (&frame, k)[y *
              GST_VIDEO_FRAME_COMP_STRIDE (&frame, k) +
              x * GST_VIDEO_FRAME_COMP_PSTRIDE (&frame, k)] =
              (guint8) (17 * k + 40 * y + 9 * x + (k == 3 ? 100 : 0));
    ref = g_memdup2 (GST_VIDEO_FRAME_PLANE_DATA (&frame, 0), info.size);

    for (c = 0; c < G_N_ELEMENTS (channels); c++) {
      for (centered = 0; centered < 2; centered++) {
        gfloat planar[4 * 15];
        gboolean gray = GST_VIDEO_INFO_IS_GRAY (&info);
        gboolean alpha = GST_VIDEO_INFO_HAS_ALPHA (&info);

        gst_scoresde_video_frame_to_planar (&frame, channels[c], centered,
            planar);
        if (centered)
          fail_unless (planar[0] >= -1.0f && planar[0] <= 1.0f);
        gst_scoresde_video_frame_from_planar (&frame, planar, channels[c],
            centered);
        /* exact whenever no information is lost */
        if ((channels[c] == 1 && gray) || (channels[c] >= 3 && !gray)) {
          for (y = 0; y < 3; y++)
            for (x = 0; x < 5; x++)
              for (k = 0; k < (gray ? 1 : 3); k++) {
                gsize o = y * GST_VIDEO_FRAME_COMP_STRIDE (&frame, k) +
                    GST_VIDEO_FRAME_COMP_OFFSET (&frame, k) +
                    x * GST_VIDEO_FRAME_COMP_PSTRIDE (&frame, k);
                fail_unless_equals_int (((guint8 *)
                        GST_VIDEO_FRAME_PLANE_DATA (&frame, 0))[o], ref[o]);
              }
          if (alpha && channels[c] == 3)
            fail_unless_equals_int (GST_VIDEO_FRAME_COMP_DATA (&frame, 3)[0],
                255);
        }
        memcpy (GST_VIDEO_FRAME_PLANE_DATA (&frame, 0), ref, info.size);
      }
    }
    gst_video_frame_unmap (&frame);
    gst_buffer_unref (buf);
    g_free (ref);
  }

  /* clamping and rounding on the way back */
  {
    GstVideoInfo info;
    GstBuffer *buf;
    GstVideoFrame frame;
    const gfloat v[4] = { -0.5f, 2.0f, NAN, 0.5f };

    gst_video_info_set_format (&info, GST_VIDEO_FORMAT_GRAY8, 4, 1);
    buf = gst_buffer_new_allocate (NULL, info.size, NULL);
    fail_unless (gst_video_frame_map (&frame, &info, buf, GST_MAP_WRITE));
    gst_scoresde_video_frame_from_planar (&frame, v, 1, FALSE);
    fail_unless_equals_int (((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
                0))[0], 0);
    fail_unless_equals_int (((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
                0))[1], 255);
    fail_unless_equals_int (((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
                0))[2], 0);
    fail_unless_equals_int (((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
                0))[3], 128);
    gst_video_frame_unmap (&frame);
    gst_buffer_unref (buf);
  }
}

GST_END_TEST;

static Suite *
interp_suite (void)
{
  Suite *s = suite_create ("scoresdeinterp");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_interp_count_and_timestamps);
  tcase_add_test (tc, test_interp_lerp);
  tcase_add_test (tc, test_interp_n_frames_while_playing);
  tcase_add_test (tc, test_interp_framerate_interval_and_n0);
  tcase_add_test (tc, test_interp_flush);
  tcase_add_test (tc, test_interp_refuses_bad_caps);
  tcase_add_test (tc, test_latent_dimensions_parse);
  tcase_add_test (tc, test_error_mapping);
  tcase_add_test (tc, test_video_conversion);
  return s;
}

GST_CHECK_MAIN (interp);
