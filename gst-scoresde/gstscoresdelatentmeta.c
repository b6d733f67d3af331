/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <scoresde/sde.h>
#include "gstscoresdelatentmeta.h"

GType
gst_scoresde_latent_meta_api_get_type (void)
{
  static GType type = 0;
  /* No tags: the meta describes the buffer contents as a whole and is kept by every
   * transform that copies metas (GstBaseTransform copies tag-less metas). */
  static const gchar *tags[] = { NULL };

  if (g_once_init_enter (&type)) {
    GType _type = gst_meta_api_type_register ("GstScoreSdeLatentMetaAPI", tags);
    g_once_init_leave (&type, _type);
  }
  return type;
}

static gboolean
gst_scoresde_latent_meta_init (GstMeta * meta, gpointer params,
    GstBuffer * buffer)
{
  GstScoreSdeLatentMeta *m = (GstScoreSdeLatentMeta *) meta;

  m->seed = 0;
  m->frame = 0;
  m->nfe = 0;
  m->t = SDE_T;
  m->bits_per_dim = NAN;
  m->logp = NAN;
  m->video_width = 0;
  m->video_height = 0;
  m->video_format = GST_VIDEO_FORMAT_UNKNOWN;
  return TRUE;
}

static gboolean
gst_scoresde_latent_meta_transform (GstBuffer * dest, GstMeta * meta,
    GstBuffer * buffer, GQuark type, gpointer data)
{
  GstScoreSdeLatentMeta *src = (GstScoreSdeLatentMeta *) meta, *dst;

  if (!GST_META_TRANSFORM_IS_COPY (type))
    return FALSE;               /* unknown transform: do not copy */

  dst = gst_buffer_get_scoresde_latent_meta (dest);
  if (dst == NULL)
    dst = gst_buffer_add_scoresde_latent_meta (dest);
  if (dst == NULL)
    return FALSE;

  dst->seed = src->seed;
  dst->frame = src->frame;
  dst->nfe = src->nfe;
  dst->t = src->t;
  dst->bits_per_dim = src->bits_per_dim;
  dst->logp = src->logp;
  dst->video_width = src->video_width;
  dst->video_height = src->video_height;
  dst->video_format = src->video_format;
  return TRUE;
}

const GstMetaInfo *
gst_scoresde_latent_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **) & info)) {
    const GstMetaInfo *mi =
        gst_meta_register (GST_SCORESDE_LATENT_META_API_TYPE,
        "GstScoreSdeLatentMeta", sizeof (GstScoreSdeLatentMeta),
        gst_scoresde_latent_meta_init, NULL,
        gst_scoresde_latent_meta_transform);
    g_once_init_leave ((GstMetaInfo **) & info, (GstMetaInfo *) mi);
  }
  return info;
}

GstScoreSdeLatentMeta *
gst_buffer_add_scoresde_latent_meta (GstBuffer * buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);

  return (GstScoreSdeLatentMeta *) gst_buffer_add_meta (buffer,
      GST_SCORESDE_LATENT_META_INFO, NULL);
}
