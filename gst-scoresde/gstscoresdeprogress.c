/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstscoresdeprogress.h"

#define PROGRESS_TICKS 20

void
gst_scoresde_progress_init (GstScoreSdeProgress * progress,
    GstElement * element)
{
  progress->element = element;
  progress->post_messages = FALSE;
  progress->pts = GST_CLOCK_TIME_NONE;
  progress->frame = 0;
  progress->last_tick = -1;
  g_atomic_int_set (&progress->cancelled, 0);
}

void
gst_scoresde_progress_cancel (GstScoreSdeProgress * progress)
{
  g_atomic_int_set (&progress->cancelled, 1);
}

void
gst_scoresde_progress_reset (GstScoreSdeProgress * progress)
{
  g_atomic_int_set (&progress->cancelled, 0);
}

gboolean
gst_scoresde_progress_is_cancelled (GstScoreSdeProgress * progress)
{
  return g_atomic_int_get (&progress->cancelled) != 0;
}

int
gst_scoresde_progress_func (void *user, int done, int total)
{
  GstScoreSdeProgress *progress = user;

  if (g_atomic_int_get (&progress->cancelled))
    return 1;

  if (progress->post_messages && progress->element != NULL && total > 0) {
    gint tick = (gint) ((gint64) done * PROGRESS_TICKS / total);

    if (done == 0)
      progress->last_tick = -1;
    if (tick != progress->last_tick) {
      GstStructure *s = gst_structure_new (GST_SCORESDE_PROGRESS_MESSAGE,
          "done", G_TYPE_INT, done, "total", G_TYPE_INT, total,
          "pts", G_TYPE_UINT64, (guint64) progress->pts,
          "frame", G_TYPE_UINT64, progress->frame, NULL);

      progress->last_tick = tick;
      gst_element_post_message (progress->element,
          gst_message_new_element (GST_OBJECT_CAST (progress->element), s));
    }
  }
  return 0;
}

void
gst_scoresde_progress_attach (GstScoreSdeProgress * progress,
    sde_sample_params * p)
{
  p->progress = gst_scoresde_progress_func;
  p->user = progress;
}
