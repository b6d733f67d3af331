/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Latent caps: NNStreamer's `other/tensors` media type with one planar NCHW float32
 * tensor, plus a `scoresde` structure field naming the model that made the latent:
 *
 *   other/tensors, format=(string)static, num_tensors=(int)1, types=(string)float32,
 *       dimensions=(string)"W:H:C:1", framerate=(fraction)F,
 *       scoresde=(structure)"latent, model-id=(string)<id>, sde=(string)ve|vp|subvp,
 *                t-end=(double)1.0, layout=(string)nchw"
 *
 * NNStreamer lists dimensions innermost first, so a C x H x W latent reads "W:H:C:1".
 * A buffer holds one GstMemory of C*H*W floats in C order (channel planes).
 */
#ifndef __GST_SCORESDE_CAPS_H__
#define __GST_SCORESDE_CAPS_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include "gstscoresdemodel.h"

G_BEGIN_DECLS

#define GST_SCORESDE_LATENT_MEDIA_TYPE "other/tensors"
#define GST_SCORESDE_LATENT_FIELD "scoresde"
#define GST_SCORESDE_LATENT_FIELD_NAME "latent"

/* For pad templates: any latent. */
#define GST_SCORESDE_LATENT_CAPS_STR \
  "other/tensors, format=(string)static, num_tensors=(int)1, " \
  "types=(string)float32, framerate=(fraction)[ 0/1, 2147483647/1 ]"

/* The video formats every scoresde element converts to and from. */
#define GST_SCORESDE_VIDEO_FORMATS "{ GRAY8, RGB, RGBA }"

typedef struct
{
  gint width, height, channels;
  gint fps_n, fps_d;            /* 0/1 when absent */
  gboolean has_field;           /* the scoresde field was present */
  gchar model_id[65];           /* "" when unknown */
  gboolean has_sde;
  GstScoreSdeSdeKind sde;
  gdouble t_end;                /* 1.0 when absent */
} GstScoreSdeLatentInfo;

typedef enum
{
  GST_SCORESDE_LATENT_MATCH = 0,        /* tagged with this model, dimensions match */
  GST_SCORESDE_LATENT_UNTAGGED = 1,     /* no scoresde field, dimensions match: warn */
  GST_SCORESDE_LATENT_MISMATCH = 2,     /* another model or another shape: refuse */
} GstScoreSdeLatentMatch;

void gst_scoresde_latent_info_init (GstScoreSdeLatentInfo * info);

/* Bytes of one latent buffer (C*H*W*4). */
gsize gst_scoresde_latent_info_size (const GstScoreSdeLatentInfo * info);

/* "W:H:C:1"; free with g_free(). */
gchar *gst_scoresde_latent_dimensions_to_string (gint width, gint height,
    gint channels);
/* Parses NNStreamer dimensions (innermost first, up to 16, missing = 1, extra must be 1). */
gboolean gst_scoresde_latent_dimensions_parse (const gchar * dims, gint * width,
    gint * height, gint * channels);

/* The `scoresde` field value for `model` (new structure, caller owns). */
GstStructure *gst_scoresde_latent_field_new (const GstScoreSdeModel * model);

/* Fixed latent caps for `model`: dimensions, the scoresde field and the framerate
 * fps_n/fps_d (fps_n < 0: the full framerate range). */
GstCaps *gst_scoresde_latent_caps_new (const GstScoreSdeModel * model,
    gint fps_n, gint fps_d);

/* Sets dimensions and the scoresde field of `model` on every structure of `caps`
 * (writable). */
void gst_scoresde_latent_caps_set_model (GstCaps * caps,
    const GstScoreSdeModel * model);

/* Parses fixed latent caps. Returns FALSE (and sets a GST_STREAM_ERROR_FORMAT error)
 * when the caps are not float32 static single tensors with valid dimensions. */
gboolean gst_scoresde_latent_caps_parse (const GstCaps * caps,
    GstScoreSdeLatentInfo * info, GError ** error);

/* Compares a latent with a loaded model. Sets *message (g_free) to a human-readable
 * explanation for UNTAGGED and MISMATCH, e.g. "latent comes from model 1234abcd… but
 * this element loaded model 9876…". */
GstScoreSdeLatentMatch gst_scoresde_latent_info_check_model (const
    GstScoreSdeLatentInfo * info, const GstScoreSdeModel * model,
    gchar ** message);

/* Video caps (formats GST_SCORESDE_VIDEO_FORMATS) at the model's native size, with the
 * framerate fps_n/fps_d (fps_n < 0: any). */
GstCaps *gst_scoresde_video_caps_new (const GstScoreSdeModel * model, gint fps_n,
    gint fps_d);

/* The video format matching the model's channels: GRAY8 (1), RGB (3), RGBA (4). */
GstVideoFormat gst_scoresde_video_format_for_model (const GstScoreSdeModel *
    model);

G_END_DECLS

#endif /* __GST_SCORESDE_CAPS_H__ */
