/* gst-scoresde: runs every script in pipelines/ with a few frames
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Each test runs one script (bash) into a temporary OUT_DIR with small FRAMES/STEPS,
 * then decodes what it wrote (PNG or H.264 MP4) back with GStreamer and counts the
 * frames and checks their size. Environment (set by meson):
 *   SCORESDE_SOURCE_ROOT  the source tree (scripts, models)
 *   SCORESDE_BUILD_ROOT   the build tree (BUILD_DIR of the scripts)
 * GST_CHECKS=test_<script> selects one script.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <glib/gstdio.h>
#include <gst/check/gstcheck.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>

static const gchar *
env_dir (const gchar * name)
{
  const gchar *v = g_getenv (name);
  fail_unless (v != NULL && v[0] != '\0', "%s is not set", name);
  return v;
}

static void
remove_tree (const gchar * path)
{
  GDir *dir = g_dir_open (path, 0, NULL);
  const gchar *name;

  if (dir != NULL) {
    while ((name = g_dir_read_name (dir)) != NULL) {
      gchar *p = g_build_filename (path, name, NULL);
      if (g_file_test (p, G_FILE_TEST_IS_DIR))
        remove_tree (p);
      else
        g_unlink (p);
      g_free (p);
    }
    g_dir_close (dir);
  }
  g_rmdir (path);
}

static const gchar *
next_string (va_list * ap)
{
  return va_arg (*ap, const gchar *);
}

/* Runs pipelines/<script> with the given extra environment (NULL-terminated
 * NAME, VALUE pairs) and returns the output folder (free with remove_tree + g_free). */
static gchar *
run_script (const gchar * script, ...)
{
  const gchar *src = env_dir ("SCORESDE_SOURCE_ROOT");
  const gchar *build = env_dir ("SCORESDE_BUILD_ROOT");
  gchar *out = g_dir_make_tmp ("scoresde-pipeline-XXXXXX", NULL);
  gchar *path = g_build_filename (src, "pipelines", script, NULL);
  gchar *plugins = g_build_filename (build, "plugins", NULL);
  gchar **envp = g_get_environ ();
  gchar *argv[] = { (gchar *) "bash", path, NULL };
  gchar *std_out = NULL, *std_err = NULL;
  GError *err = NULL;
  gint status = 0;
  gint64 t0 = g_get_monotonic_time ();
  const gchar *name;
  va_list ap;

  fail_unless (out != NULL);
  envp = g_environ_setenv (envp, "OUT_DIR", out, TRUE);
  envp = g_environ_setenv (envp, "BUILD_DIR", build, TRUE);
  envp = g_environ_setenv (envp, "GST_PLUGIN_PATH", plugins, TRUE);
  va_start (ap, script);
  while ((name = next_string (&ap)) != NULL) {
    const gchar *value = next_string (&ap);
    envp = g_environ_setenv (envp, name, value, TRUE);
  }
  va_end (ap);

  fail_unless (g_spawn_sync (NULL, argv, envp, G_SPAWN_SEARCH_PATH, NULL, NULL,
          &std_out, &std_err, &status, &err), "cannot run %s: %s", path,
      err ? err->message : "?");
  g_print ("%s: %.1f s, %s", script, (g_get_monotonic_time () - t0) / 1e6,
      std_out ? std_out : "\n");
  if (!g_spawn_check_wait_status (status, NULL))
    g_printerr ("%s failed:\n%s\n", script, std_err);
  fail_unless (g_spawn_check_wait_status (status, NULL), "%s failed", script);

  g_free (std_out);
  g_free (std_err);
  g_strfreev (envp);
  g_free (plugins);
  g_free (path);
  return out;
}

/* Decodes a file (any container GStreamer can read) to RGB and counts its frames.
 * Optionally returns the packed RGB of the first frame (g_free). */
static guint
decode_frames (const gchar * dir, const gchar * file, gint * width,
    gint * height, guint8 ** first_rgb)
{
  gchar *path = g_build_filename (dir, file, NULL);
  gchar *launch;
  GstElement *pipe, *sink;
  GstSample *sample;
  GstMessage *msg;
  GstBus *bus;
  guint n = 0;

  fail_unless (g_file_test (path, G_FILE_TEST_IS_REGULAR), "%s missing", path);
  launch = g_strdup_printf ("filesrc location=\"%s\" ! decodebin ! "
      "videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
      path);
  pipe = gst_parse_launch (launch, NULL);
  fail_unless (pipe != NULL);
  sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  fail_unless (gst_element_set_state (pipe, GST_STATE_PLAYING) !=
      GST_STATE_CHANGE_FAILURE);
  while ((sample = gst_app_sink_pull_sample (GST_APP_SINK (sink))) != NULL) {
    GstVideoInfo info;
    fail_unless (gst_video_info_from_caps (&info,
            gst_sample_get_caps (sample)));
    *width = GST_VIDEO_INFO_WIDTH (&info);
    *height = GST_VIDEO_INFO_HEIGHT (&info);
    if (n == 0 && first_rgb != NULL) {
      GstVideoFrame frame;
      gint y;
      fail_unless (gst_video_frame_map (&frame, &info,
              gst_sample_get_buffer (sample), GST_MAP_READ));
      *first_rgb = g_malloc (*width * *height * 3);
      for (y = 0; y < *height; y++)
        memcpy (*first_rgb + y * *width * 3,
            (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0) +
            y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), *width * 3);
      gst_video_frame_unmap (&frame);
    }
    n++;
    gst_sample_unref (sample);
  }
  bus = gst_element_get_bus (pipe);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg == NULL, "decoding %s failed", path);
  gst_object_unref (bus);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  g_free (launch);
  g_free (path);
  GST_INFO ("%s: %u frames of %dx%d", file, n, *width, *height);
  return n;
}

/* The H.264 stream of an MP4 is 4:2:0 (the decoder gives I420): High 4:4:4 is refused
 * by many browsers and hardware players. */
static void
assert_mp4_chroma_420 (const gchar * dir, const gchar * file)
{
  gchar *path = g_build_filename (dir, file, NULL);
  gchar *launch = g_strdup_printf ("filesrc location=\"%s\" ! qtdemux ! "
      "avdec_h264 ! appsink name=sink sync=false", path);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch (launch, &err);
  GstElement *sink;
  GstSample *sample;
  const gchar *format;

  fail_unless (pipe != NULL && err == NULL, "%s: %s", launch,
      err ? err->message : "no pipeline");
  sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  fail_unless (gst_element_set_state (pipe, GST_STATE_PLAYING) !=
      GST_STATE_CHANGE_FAILURE);
  sample = gst_app_sink_pull_sample (GST_APP_SINK (sink));
  fail_unless (sample != NULL, "%s: no H.264 stream", path);
  format = gst_structure_get_string (gst_caps_get_structure (gst_sample_get_caps
          (sample), 0), "format");
  fail_unless (g_strcmp0 (format, "I420") == 0, "%s: decodes to %s, want I420",
      path, GST_STR_NULL (format));
  gst_sample_unref (sample);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  g_free (launch);
  g_free (path);
}

static void
assert_video (const gchar * dir, const gchar * file, guint frames, gint width,
    gint height)
{
  gint w = 0, h = 0;
  guint n = decode_frames (dir, file, &w, &h, NULL);

  if (g_str_has_suffix (file, ".mp4"))
    assert_mp4_chroma_420 (dir, file);
  fail_unless_equals_int (n, frames);
  fail_unless_equals_int (w, width);
  fail_unless_equals_int (h, height);
}

/* Decodes a file to packed RGB: every frame's bytes appended to *rgb (g_byte_array_unref)
 * and its PTS to *pts (g_array_unref of GstClockTime). Returns the frame count. */
static guint
decode_all (const gchar * dir, const gchar * file, GByteArray ** rgb,
    GArray ** pts)
{
  gchar *path = g_build_filename (dir, file, NULL);
  gchar *launch = g_strdup_printf ("filesrc location=\"%s\" ! qtdemux ! "
      "avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink "
      "sync=false", path);
  GstElement *pipe = gst_parse_launch (launch, NULL);
  GstElement *sink;
  GstSample *sample;
  guint n = 0;

  fail_unless (pipe != NULL);
  *rgb = g_byte_array_new ();
  *pts = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  fail_unless (gst_element_set_state (pipe, GST_STATE_PLAYING) !=
      GST_STATE_CHANGE_FAILURE);
  while ((sample = gst_app_sink_pull_sample (GST_APP_SINK (sink))) != NULL) {
    GstBuffer *buf = gst_sample_get_buffer (sample);
    GstClockTime t = GST_BUFFER_PTS (buf);
    GstMapInfo map;

    fail_unless (gst_buffer_map (buf, &map, GST_MAP_READ));
    g_byte_array_append (*rgb, map.data, map.size);
    gst_buffer_unmap (buf, &map);
    g_array_append_val (*pts, t);
    n++;
    gst_sample_unref (sample);
  }
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  g_free (launch);
  g_free (path);
  return n;
}

GST_START_TEST (test_sample_grid)
{
  gchar *out = run_script ("sample-grid.sh", "FRAMES", "3", "STEPS", "20",
      NULL);

  /* 3 samples of 32x32 in a 2x2 grid with 2 pixels of padding */
  assert_video (out, "samples/sample_000.png", 1, 32, 32);
  assert_video (out, "samples/sample_002.png", 1, 32, 32);
  assert_video (out, "samples_grid.png", 1, 66, 66);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

GST_START_TEST (test_latent_walk)
{
  gchar *out = run_script ("latent-walk.sh", "FRAMES", "5", "WALK", "2",
      "SIZE", "64", NULL);

  assert_video (out, "latent_walk.mp4", 5, 64, 64);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

GST_START_TEST (test_interpolate)
{
  gchar *out = run_script ("interpolate.sh", "FRAMES", "2", "INTERP", "2",
      "SIZE", "64", NULL);

  /* 2 images and 2 in between */
  assert_video (out, "interpolation.mp4", 4, 64, 64);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

GST_START_TEST (test_inpaint)
{
  gchar *out = run_script ("inpaint.sh", "STEPS", "50", NULL);
  gchar *shapes = g_build_filename (env_dir ("SCORESDE_SOURCE_ROOT"), "models",
      "shapes32", NULL);
  guint8 *in = NULL, *res = NULL;
  gint w, h, y;

  assert_video (out, "inpaint_mask.png", 1, 32, 32);
  fail_unless_equals_int (decode_frames (shapes, "shape_03.png", &w, &h, &in),
      1);
  fail_unless_equals_int (decode_frames (out, "inpainted.png", &w, &h, &res),
      1);
  fail_unless_equals_int (w, 32);
  fail_unless_equals_int (h, 32);
  /* the mask keeps the left half: it passes through */
  for (y = 0; y < h; y++)
    fail_unless (memcmp (in + y * w * 3, res + y * w * 3, (w / 2) * 3) == 0,
        "row %d of the known half changed", y);

  g_free (in);
  g_free (res);
  g_free (shapes);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

GST_START_TEST (test_colorize)
{
  gchar *out = run_script ("colorize.sh", "FRAMES", "3", "STEPS", "20",
      "SIZE", "48", NULL);

  assert_video (out, "gray_input.mp4", 3, 48, 48);
  assert_video (out, "colorized.mp4", 3, 48, 48);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

/* A latent walk rendered as 3 segments in parallel processes and joined, against the
 * same clip rendered by one process: losslessly encoded, the decoded frames are equal
 * byte for byte, and the joined timestamps run on without a gap. */
GST_START_TEST (test_render_split)
{
  const guint frames = 7;
  gchar *split = run_script ("render-split.sh", "FRAMES", "7", "SEGMENTS", "3",
      "WALK", "3", "FPS", "10", "STEPS", "5", "SIZE", "48", "LOSSLESS", "1",
      NULL);
  gchar *one = run_script ("render-split.sh", "FRAMES", "7", "SEGMENTS", "1",
      "WALK", "3", "FPS", "10", "STEPS", "5", "SIZE", "48", "LOSSLESS", "1",
      NULL);
  GByteArray *a, *b;
  GArray *pa, *pb;
  guint i;

  assert_video (split, "segments/segment_002.mp4", 3, 48, 48);
  fail_unless_equals_int (decode_all (split, "render_split.mp4", &a, &pa),
      frames);
  fail_unless_equals_int (decode_all (one, "render_split.mp4", &b, &pb),
      frames);
  fail_unless_equals_int (a->len, frames * 48 * 48 * 3);
  fail_unless (a->len == b->len && memcmp (a->data, b->data, a->len) == 0,
      "the joined segments decode to other frames than the single render");
  for (i = 0; i < frames; i++)
    fail_unless_equals_uint64 (g_array_index (pa, GstClockTime, i),
        gst_util_uint64_scale (i, GST_SECOND, 10));

  g_byte_array_unref (a);
  g_byte_array_unref (b);
  g_array_unref (pa);
  g_array_unref (pb);
  remove_tree (split);
  remove_tree (one);
  g_free (split);
  g_free (one);
}

GST_END_TEST;

/* The pan-and-zoom clip of one photo (the shapes model's example image when the
 * wallpaper package is missing), colorized with temporal-seed. */
GST_START_TEST (test_colorize_photo_video)
{
  gchar *out = run_script ("colorize-photo-video.sh", "FRAMES", "3", "STEPS", "20",
      "WIDTH", "48", "HEIGHT", "32", NULL);

  assert_video (out, "gray_input.mp4", 3, 48, 32);
  assert_video (out, "colorized.mp4", 3, 48, 32);
  remove_tree (out);
  g_free (out);
}

GST_END_TEST;

/* A new script in pipelines/ needs a test here. */
GST_START_TEST (test_every_script_covered)
{
  const gchar *covered[] = { "sample-grid.sh", "latent-walk.sh",
    "interpolate.sh", "inpaint.sh", "colorize.sh", "render-split.sh",
    "colorize-photo-video.sh", NULL
  };
  gchar *dir = g_build_filename (env_dir ("SCORESDE_SOURCE_ROOT"), "pipelines",
      NULL);
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  guint n = 0;

  fail_unless (d != NULL);
  while ((name = g_dir_read_name (d)) != NULL) {
    if (!g_str_has_suffix (name, ".sh") || strcmp (name, "common.sh") == 0)
      continue;
    fail_unless (g_strv_contains (covered, name),
        "pipelines/%s has no test in tests/check/elements/pipelines.c", name);
    n++;
  }
  g_dir_close (d);
  fail_unless_equals_int (n, g_strv_length ((gchar **) covered));
  g_free (dir);
}

GST_END_TEST;

static Suite *
pipelines_suite (void)
{
  Suite *s = suite_create ("pipelines");
  TCase *tc = tcase_create ("scripts");

  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_every_script_covered);
  tcase_add_test (tc, test_sample_grid);
  tcase_add_test (tc, test_latent_walk);
  tcase_add_test (tc, test_interpolate);
  tcase_add_test (tc, test_inpaint);
  tcase_add_test (tc, test_colorize);
  tcase_add_test (tc, test_render_split);
  tcase_add_test (tc, test_colorize_photo_video);
  return s;
}

GST_CHECK_MAIN (pipelines);
