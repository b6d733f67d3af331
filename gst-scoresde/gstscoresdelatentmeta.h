/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_LATENT_META_H__
#define __GST_SCORESDE_LATENT_META_H__

#include <gst/gst.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

#define GST_SCORESDE_LATENT_META_API_TYPE (gst_scoresde_latent_meta_api_get_type ())
#define GST_SCORESDE_LATENT_META_INFO (gst_scoresde_latent_meta_get_info ())

typedef struct _GstScoreSdeLatentMeta GstScoreSdeLatentMeta;

/**
 * GstScoreSdeLatentMeta:
 * @meta: parent #GstMeta
 * @seed: the seed of the noise (0 when none was drawn)
 * @frame: frame index, which is also the engine noise stream
 * @nfe: score evaluations spent on this buffer (0 when unknown)
 * @t: diffusion time the data sits at: 1.0 (T) for a latent, the solver's eps for data
 * @bits_per_dim: bits/dim of the source frame (NaN when not computed)
 * @logp: log-likelihood in nats of the source frame in model space (NaN when not computed)
 * @video_width: width of the original video frame (0 when unknown)
 * @video_height: height of the original video frame (0 when unknown)
 * @video_format: format of the original video frame (%GST_VIDEO_FORMAT_UNKNOWN when unknown)
 *
 * Per-buffer facts of a latent (or of a frame generated from one). It is copied along
 * with buffers (copy transforms) and by GstBaseTransform elements.
 */
struct _GstScoreSdeLatentMeta
{
  GstMeta meta;

  guint64 seed;
  guint64 frame;
  gint64 nfe;
  gdouble t;
  gdouble bits_per_dim;
  gdouble logp;
  gint video_width;
  gint video_height;
  GstVideoFormat video_format;
};

GType gst_scoresde_latent_meta_api_get_type (void);
const GstMetaInfo *gst_scoresde_latent_meta_get_info (void);

/* Adds a meta with defaults (zeros, NaN likelihoods, t = 1.0, unknown format). */
GstScoreSdeLatentMeta *gst_buffer_add_scoresde_latent_meta (GstBuffer * buffer);

#define gst_buffer_get_scoresde_latent_meta(b) \
  ((GstScoreSdeLatentMeta *) gst_buffer_get_meta ((b), GST_SCORESDE_LATENT_META_API_TYPE))

G_END_DECLS

#endif /* __GST_SCORESDE_LATENT_META_H__ */
