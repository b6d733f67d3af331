/* gst-scoresde: score-based generative modelling through SDEs for GStreamer
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_COLORIZE_H__
#define __GST_SCORESDE_COLORIZE_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_COLORIZE (gst_scoresde_colorize_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeColorize, gst_scoresde_colorize, GST,
    SCORESDE_COLORIZE, GstVideoFilter)

/* One axis of a separable resampling: dst samples, each a weighted sum of `ntaps`
 * source samples (area averaging when shrinking, bilinear when growing). */
typedef struct
{
  gint src, dst, ntaps;
  gint *index;                  /* [dst * ntaps] */
  gfloat *weight;               /* [dst * ntaps] */
} GstScoreSdeResampleAxis;

struct _GstScoreSdeColorize
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  GstScoreSdeModelSlot slot;    /* model and device properties, the model, cancel flag */
  GstScoreSdeSamplerSettings settings;
  gboolean temporal_seed;       /* every frame uses noise stream 0 */
  gboolean chroma_only;         /* keep the input's full-resolution luminance */
  gboolean clip_denoised;       /* few-step: clamp the data predictions to the data range */
  gboolean center_chroma;       /* noise without a chroma mean */
  gdouble t_start;              /* few-step: start time from the noised gray (1: prior) */

  /*< private >*/
  /* geometry, from set_info: the frame is width x height, the model w x h */
  gint width, height;
  GstScoreSdeResampleAxis down_x, down_y;       /* frame -> model */
  GstScoreSdeResampleAxis up_x, up_y;   /* model -> frame */

  /* scratch, allocated in set_info */
  gfloat *gray;                 /* [H*W] the input in [0,1] */
  gfloat *full;                 /* [3*H*W] the output planes */
  gfloat *tmp;                  /* resampling intermediate */
  gfloat *small;                /* [h*w] the input at the model's size */
  gfloat *model_in;             /* [3*h*w] model space, R = G = B */
  gfloat *model_out;            /* [3*h*w] model space */
  gfloat *rgb;                  /* [3*h*w] the result in [0,1] */
  gfloat *dec;                  /* [3*h*w] its decoupled colours */

  guint64 frame;                /* frames processed since start */
};

GST_ELEMENT_REGISTER_DECLARE (scoresdecolorize);

G_END_DECLS

#endif /* __GST_SCORESDE_COLORIZE_H__ */
