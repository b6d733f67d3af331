/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include "gstscoresdevideo.h"

gboolean
gst_scoresde_video_format_is_supported (GstVideoFormat format)
{
  const GstVideoFormatInfo *finfo;

  if (format == GST_VIDEO_FORMAT_UNKNOWN || format == GST_VIDEO_FORMAT_ENCODED)
    return FALSE;
  finfo = gst_video_format_get_info (format);
  if (finfo == NULL || GST_VIDEO_FORMAT_INFO_N_PLANES (finfo) != 1
      || GST_VIDEO_FORMAT_INFO_BITS (finfo) != 8
      || GST_VIDEO_FORMAT_INFO_IS_COMPLEX (finfo)
      || GST_VIDEO_FORMAT_INFO_HAS_PALETTE (finfo)
      || GST_VIDEO_FORMAT_INFO_IS_TILED (finfo))
    return FALSE;
  if (GST_VIDEO_FORMAT_INFO_IS_GRAY (finfo))
    return GST_VIDEO_FORMAT_INFO_N_COMPONENTS (finfo) == 1;
  return GST_VIDEO_FORMAT_INFO_IS_RGB (finfo)
      && GST_VIDEO_FORMAT_INFO_W_SUB (finfo, 1) == 0
      && GST_VIDEO_FORMAT_INFO_H_SUB (finfo, 1) == 0;
}

/* Pointers to the components of a packed 8-bit frame: comp 0..2 = R,G,B (or gray for
 * all three), 3 = alpha (NULL if none). */
typedef struct
{
  guint8 *data[4];
  gint pstride;
  gint stride;
  gint n_color;                 /* 1 (gray) or 3 */
  gint width, height;
} PackedLayout;

static void
packed_layout (const GstVideoFrame * frame, PackedLayout * l)
{
  const GstVideoFormatInfo *finfo = frame->info.finfo;
  gint c;

  g_return_if_fail (gst_scoresde_video_format_is_supported
      (GST_VIDEO_FRAME_FORMAT (frame)));

  l->n_color = GST_VIDEO_FORMAT_INFO_IS_GRAY (finfo) ? 1 : 3;
  for (c = 0; c < 3; c++)
    l->data[c] = GST_VIDEO_FRAME_COMP_DATA (frame, l->n_color == 1 ? 0 : c);
  l->data[3] = GST_VIDEO_FORMAT_INFO_HAS_ALPHA (finfo) ?
      GST_VIDEO_FRAME_COMP_DATA (frame, 3) : NULL;
  l->pstride = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, 0);
  l->stride = GST_VIDEO_FRAME_COMP_STRIDE (frame, 0);
  l->width = GST_VIDEO_FRAME_WIDTH (frame);
  l->height = GST_VIDEO_FRAME_HEIGHT (frame);
}

static inline gfloat
to_model (guint8 u, gboolean centered)
{
  gfloat v = u / 255.0f;
  return centered ? 2.0f * v - 1.0f : v;
}

static inline guint8
from_model (gfloat v, gboolean centered)
{
  if (centered)
    v = (v + 1.0f) * 0.5f;
  if (!(v > 0.0f))              /* also NaN */
    return 0;
  if (v >= 1.0f)
    return 255;
  return (guint8) lrintf (v * 255.0f);
}

void
gst_scoresde_video_frame_to_planar (const GstVideoFrame * frame,
    gint channels, gboolean centered, gfloat * out)
{
  PackedLayout l;
  gsize hw;
  gint x, y, c;

  g_return_if_fail (channels >= 1 && channels <= 4);
  packed_layout (frame, &l);
  hw = (gsize) l.width * l.height;

  for (y = 0; y < l.height; y++) {
    for (x = 0; x < l.width; x++) {
      gsize off = (gsize) y * l.stride + (gsize) x * l.pstride;
      gsize i = (gsize) y * l.width + x;
      guint8 rgb[3];

      for (c = 0; c < 3; c++)
        rgb[c] = l.data[c][off];
      if (channels == 1) {
        if (l.n_color == 1)
          out[i] = to_model (rgb[0], centered);
        else {
          gfloat m = (rgb[0] + rgb[1] + rgb[2]) / (3.0f * 255.0f);
          out[i] = centered ? 2.0f * m - 1.0f : m;
        }
      } else {
        for (c = 0; c < 3; c++)
          out[c * hw + i] = to_model (rgb[c], centered);
        if (channels == 4)
          out[3 * hw + i] = to_model (l.data[3] ? l.data[3][off] : 255,
              centered);
      }
    }
  }
}

void
gst_scoresde_video_frame_from_planar (GstVideoFrame * frame,
    const gfloat * in, gint channels, gboolean centered)
{
  PackedLayout l;
  gsize hw;
  gint x, y, c;

  g_return_if_fail (channels >= 1 && channels <= 4);
  packed_layout (frame, &l);
  hw = (gsize) l.width * l.height;

  for (y = 0; y < l.height; y++) {
    for (x = 0; x < l.width; x++) {
      gsize off = (gsize) y * l.stride + (gsize) x * l.pstride;
      gsize i = (gsize) y * l.width + x;

      if (l.n_color == 1) {
        if (channels == 1)
          l.data[0][off] = from_model (in[i], centered);
        else {
          /* luma as the mean of R, G, B */
          gfloat m = (in[i] + in[hw + i] + in[2 * hw + i]) / 3.0f;
          l.data[0][off] = from_model (m, centered);
        }
      } else {
        for (c = 0; c < 3; c++)
          l.data[c][off] = from_model (in[(channels == 1 ? 0 : c) * hw + i],
              centered);
      }
      if (l.data[3] != NULL)
        l.data[3][off] = channels == 4 ? from_model (in[3 * hw + i],
            centered) : 255;
    }
  }
}

void
gst_scoresde_video_frame_get_alpha (const GstVideoFrame * frame, gfloat * alpha)
{
  PackedLayout l;
  gint x, y;

  packed_layout (frame, &l);
  for (y = 0; y < l.height; y++)
    for (x = 0; x < l.width; x++)
      alpha[(gsize) y * l.width + x] = l.data[3] ?
          l.data[3][(gsize) y * l.stride +
          (gsize) x * l.pstride] / 255.0f : 1.0f;
}
