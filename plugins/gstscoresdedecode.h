/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_DECODE_H__
#define __GST_SCORESDE_DECODE_H__

#include <gst/gst.h>
#include <gst/base/gstbasetransform.h>
#include <gst/video/video.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_DECODE (gst_scoresde_decode_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeDecode, gst_scoresde_decode, GST,
    SCORESDE_DECODE, GstBaseTransform)

struct _GstScoreSdeDecode
{
  GstBaseTransform parent;

  /* properties (under the object lock) */
  GstScoreSdeModelSlot slot;    /* model and device properties, the model, cancel flag */
  GstScoreSdeSamplerSettings settings;

  /*< private >*/
  GstScoreSdeLatentInfo in_info;
  GstVideoInfo out_info;
};

GST_ELEMENT_REGISTER_DECLARE (scoresdedecode);

G_END_DECLS

#endif /* __GST_SCORESDE_DECODE_H__ */
