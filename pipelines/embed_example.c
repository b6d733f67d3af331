/* gst-scoresde: embedding the scoresde elements in an application
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Builds a pipeline from a launch string, sets element properties with g_object_set(),
 * pulls the frames through appsink and checks them:
 *
 *   scoresdesrc ! videoconvert ! GRAY8 ! scoresdecolorize ! RGBA ! appsink
 *
 * The source samples frames from the model, they are turned gray and colorized again.
 * The run is repeated with the same seed, which must give the same frames bit for bit
 * (every random number is keyed by seed, frame and step), and with another seed, which
 * must not.
 *
 *   embed_example [--frames N] [--steps S] [--seed S] [--model FILE]
 *
 * Needs the plugin on the plugin path: GST_PLUGIN_PATH=build/plugins. Exit status 0
 * when every check passes.
 */
#include <string.h>
#include <gst/gst.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>

typedef struct
{
  guint n_frames;
  gint width, height;
  guint32 checksum;             /* over all frames */
  gboolean alpha_opaque;        /* every alpha byte is 255 */
  gboolean coloured;            /* some pixel has R != G or G != B */
  gboolean pts_increasing;
} RunResult;

/* Runs the pipeline once; returns FALSE (with a message) on any pipeline error. */
static gboolean
run_once (const gchar * model, gint frames, gint steps, guint64 seed,
    RunResult * res)
{
  GstElement *pipeline, *src, *colorize, *sink;
  GstMessage *msg;
  GstBus *bus;
  GstSample *sample;
  GError *err = NULL;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  gboolean ok = TRUE;

  memset (res, 0, sizeof *res);
  res->alpha_opaque = TRUE;
  res->pts_increasing = TRUE;

  pipeline = gst_parse_launch ("scoresdesrc name=src ! videoconvert ! "
      "video/x-raw,format=GRAY8 ! scoresdecolorize name=colorize ! "
      "video/x-raw,format=RGBA ! appsink name=sink sync=false", &err);
  if (pipeline == NULL) {
    g_printerr ("cannot build the pipeline: %s\n", err->message);
    g_clear_error (&err);
    return FALSE;
  }

  /* Properties are ordinary GObject properties. */
  src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  colorize = gst_bin_get_by_name (GST_BIN (pipeline), "colorize");
  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  g_object_set (src, "num-buffers", frames, "seed", seed, "steps", steps, NULL);
  g_object_set (colorize, "seed", seed, "steps", steps, "temporal-seed", TRUE,
      NULL);
  if (model != NULL) {
    g_object_set (src, "model", model, NULL);
    g_object_set (colorize, "model", model, NULL);
  }

  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE) {
    ok = FALSE;                 /* the error is on the bus, read below */
  } else {
    /* Pull until EOS (NULL). */
    while ((sample = gst_app_sink_pull_sample (GST_APP_SINK (sink))) != NULL) {
      GstBuffer *buf = gst_sample_get_buffer (sample);
      GstVideoInfo info;
      GstVideoFrame frame;
      gint x, y;

      if (!gst_video_info_from_caps (&info, gst_sample_get_caps (sample))
          || !gst_video_frame_map (&frame, &info, buf, GST_MAP_READ)) {
        g_printerr ("cannot map frame %u\n", res->n_frames);
        gst_sample_unref (sample);
        ok = FALSE;
        break;
      }
      res->width = GST_VIDEO_INFO_WIDTH (&info);
      res->height = GST_VIDEO_INFO_HEIGHT (&info);
      for (y = 0; y < res->height; y++) {
        const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
            0) + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
        for (x = 0; x < res->width; x++) {
          const guint8 *p = row + 4 * x;
          res->alpha_opaque &= p[3] == 255;
          res->coloured |= p[0] != p[1] || p[1] != p[2];
        }
        /* a CRC-like running checksum of the visible bytes */
        for (x = 0; x < 4 * res->width; x++)
          res->checksum = res->checksum * 31u + row[x];
      }
      gst_video_frame_unmap (&frame);

      if (GST_CLOCK_TIME_IS_VALID (last_pts)
          && GST_BUFFER_PTS (buf) <= last_pts)
        res->pts_increasing = FALSE;
      last_pts = GST_BUFFER_PTS (buf);
      res->n_frames++;
      gst_sample_unref (sample);
    }
  }

  /* EOS or an error ends the stream. */
  bus = gst_element_get_bus (pipeline);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  if (msg != NULL) {
    gchar *dbg = NULL;
    gst_message_parse_error (msg, &err, &dbg);
    g_printerr ("error from %s: %s\n  %s\n", GST_OBJECT_NAME (msg->src),
        err->message, dbg ? dbg : "");
    g_clear_error (&err);
    g_free (dbg);
    gst_message_unref (msg);
    ok = FALSE;
  }
  gst_object_unref (bus);

  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (src);
  gst_object_unref (colorize);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  return ok;
}

static gboolean
expect (gboolean cond, const gchar * what)
{
  g_print ("%s %s\n", cond ? "ok    " : "FAILED", what);
  return cond;
}

int
main (int argc, char **argv)
{
  gint frames = 4, steps = 15;
  gint64 seed = 1;
  gchar *model = NULL;
  GOptionEntry entries[] = {
    {"frames", 'n', 0, G_OPTION_ARG_INT, &frames, "Frames per run (4)", "N"},
    {"steps", 's', 0, G_OPTION_ARG_INT, &steps,
        "Network evaluations per frame (15)", "S"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed (1)", "S"},
    {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
        "Model file (default: the shipped model)", "FILE"},
    {NULL}
  };
  GOptionContext *ctx;
  GError *err = NULL;
  RunResult a, b, c;
  gboolean ok = TRUE;

  ctx = g_option_context_new ("- scoresde elements in an application");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    g_printerr ("%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (frames < 1 || steps < 1) {
    g_printerr ("--frames and --steps must be positive\n");
    return 2;
  }

  if (!run_once (model, frames, steps, (guint64) seed, &a)
      || !run_once (model, frames, steps, (guint64) seed, &b)
      || !run_once (model, frames, steps, (guint64) seed + 1, &c)) {
    g_printerr ("embed_example: pipeline failed (is GST_PLUGIN_PATH set to "
        "the build's plugins folder?)\n");
    return 1;
  }

  g_print ("%u frames of %dx%d RGBA, checksum %08x\n", a.n_frames, a.width,
      a.height, a.checksum);
  ok &= expect (a.n_frames == (guint) frames, "frame count");
  ok &= expect (a.width > 0 && a.height > 0, "frame size");
  ok &= expect (a.alpha_opaque, "alpha is 255");
  ok &= expect (a.coloured, "the frames have colour");
  ok &= expect (a.pts_increasing, "timestamps increase");
  ok &= expect (a.n_frames == b.n_frames && a.checksum == b.checksum,
      "same seed, same frames");
  ok &= expect (a.checksum != c.checksum, "another seed, other frames");

  g_free (model);
  return ok ? 0 : 1;
}
