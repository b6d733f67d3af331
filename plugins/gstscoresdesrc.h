/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_SRC_H__
#define __GST_SCORESDE_SRC_H__

#include <gst/gst.h>
#include <gst/base/gstpushsrc.h>
#include <gst/video/video.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_SRC (gst_scoresde_src_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeSrc, gst_scoresde_src, GST, SCORESDE_SRC,
    GstPushSrc)

struct _GstScoreSdeSrc
{
  GstPushSrc parent;

  /* properties (under the object lock) */
  GstScoreSdeModelSlot slot;    /* model and device properties, the model, cancel flag */
  GstScoreSdeSamplerSettings settings;
  gint batch_size;
  gint walk_frames;
  gint64 start_frame;           /* first frame of the stream (split renders) */
  gboolean post_messages;
  gchar *classifier_path;       /* NULL: <model>-classifier.safetensors beside the model */
  gint class_label;             /* -1: unconditional */
  gdouble guidance_scale;
  guint settings_cookie;        /* bumped by every setting that changes frames */

  /*< private >*/
  GstScoreSdeModel *classifier; /* loaded when class-label is first >= 0 */

  /* negotiated format */
  GstVideoInfo info;

  /* running time and frames for the current segment */
  gint64 n_frames;              /* next frame index to produce (= noise stream) */
  GstClockTime running_time;    /* of frame n_frames, within the segment */
  GstClockTime accum_rtime;     /* running time accumulated over renegotiations */
  gint64 accum_frames;
  gboolean reverse;

  /* frames generated ahead by a batched engine call */
  gfloat *batch;                /* [batch_count, D] */
  gint64 batch_first;           /* frame index of batch[0], -1 when empty */
  gint batch_count;

  /* latent walk: the two keyframe latents around the current frame */
  gfloat *walk_keys;            /* [2, D] */
  gint64 walk_key_index;        /* keyframe index of walk_keys[0], -1 when none */
  guint64 walk_key_seed;

  /* latency */
  GstClockTime max_generation_time;     /* longest measured per frame */
  GstClockTime reported_latency;
};

GST_ELEMENT_REGISTER_DECLARE (scoresdesrc);

G_END_DECLS

#endif /* __GST_SCORESDE_SRC_H__ */
