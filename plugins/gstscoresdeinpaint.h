/* gst-scoresde: score-based generative modelling through SDEs for GStreamer
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_INPAINT_H__
#define __GST_SCORESDE_INPAINT_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_INPAINT (gst_scoresde_inpaint_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeInpaint, gst_scoresde_inpaint, GST,
    SCORESDE_INPAINT, GstVideoFilter)

struct _GstScoreSdeInpaint
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  GstScoreSdeModelSlot slot;    /* model and device properties, the model, cancel flag */
  gchar *mask_location;         /* NULL or "" = the alpha channel is the mask */
  GstScoreSdeSamplerSettings settings;

  /*< private >*/
  gfloat *static_mask;          /* [H*W] from mask-location: 1 = known; NULL = alpha */

  /* scratch, [C*H*W] at the model's size, allocated in set_info */
  gfloat *data;                 /* the frame in model space */
  gfloat *mask;                 /* 1 = known, per channel */
  gfloat *result;               /* the engine's output */

  guint64 frame;                /* frames processed since start: the noise stream */
  gint size_explained;          /* a frame size it cannot take was explained (atomic) */
};

GST_ELEMENT_REGISTER_DECLARE (scoresdeinpaint);

G_END_DECLS

#endif /* __GST_SCORESDE_INPAINT_H__ */
