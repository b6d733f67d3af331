/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Cancellation and progress of engine runs. The engine calls its sde_progress_fn
 * between solver steps; gst_scoresde_progress_func() returns non-zero once the
 * atomic cancel flag is set, so unlock(), a flush or a state change stops a
 * 1000-step sampler within one step (the engine then returns SDE_ECANCELLED).
 */
#ifndef __GST_SCORESDE_PROGRESS_H__
#define __GST_SCORESDE_PROGRESS_H__

#include <gst/gst.h>
#include <scoresde/scoresde.h>

G_BEGIN_DECLS

/* Name of the element messages posted when post_messages is TRUE. Fields:
 * done (int), total (int), pts (guint64 clock time), frame (guint64). */
#define GST_SCORESDE_PROGRESS_MESSAGE "scoresde-progress"

typedef struct
{
  /* set by the element */
  GstElement *element;          /* for messages; not reffed */
  gboolean post_messages;       /* post GST_SCORESDE_PROGRESS_MESSAGE element messages */
  GstClockTime pts;             /* of the buffer in progress (message field) */
  guint64 frame;                /* of the buffer in progress (message field) */

  /*< private >*/
  gint cancelled;               /* atomic */
  gint last_tick;
} GstScoreSdeProgress;

void gst_scoresde_progress_init (GstScoreSdeProgress * progress,
    GstElement * element);

/* Asks the current and following engine runs to stop (from any thread). */
void gst_scoresde_progress_cancel (GstScoreSdeProgress * progress);

/* Clears the cancel flag (unlock_stop, flush-stop, start). */
void gst_scoresde_progress_reset (GstScoreSdeProgress * progress);

gboolean gst_scoresde_progress_is_cancelled (GstScoreSdeProgress * progress);

/* The sde_progress_fn: `user` is a GstScoreSdeProgress. Posts at most ~20 messages per
 * run when post_messages is set. */
int gst_scoresde_progress_func (void *user, int done, int total);

/* Points p->progress/p->user at `progress`. */
void gst_scoresde_progress_attach (GstScoreSdeProgress * progress,
    sde_sample_params * p);

G_END_DECLS

#endif /* __GST_SCORESDE_PROGRESS_H__ */
