/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_ENCODE_H__
#define __GST_SCORESDE_ENCODE_H__

#include <gst/gst.h>
#include <gst/base/gstbasetransform.h>
#include <gst/video/video.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_ENCODE (gst_scoresde_encode_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeEncode, gst_scoresde_encode, GST,
    SCORESDE_ENCODE, GstBaseTransform)

struct _GstScoreSdeEncode
{
  GstBaseTransform parent;

  /* properties (under the object lock) */
  GstScoreSdeModelSlot slot;    /* model and device properties, the model, cancel flag */
  GstScoreSdeSamplerSettings settings;  /* seed: the likelihood's noise */
  gboolean bits_per_dim;

  /*< private >*/
  GstVideoInfo in_info;
  guint64 frame_count;          /* buffers encoded since start or flush */
};

GST_ELEMENT_REGISTER_DECLARE (scoresdeencode);

G_END_DECLS

#endif /* __GST_SCORESDE_ENCODE_H__ */
