/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Conversions between mapped video frames and the engine's planar float layout in
 * model space. Pixels u8 map to u/255 in [0,1], then 2x-1 when the model is centered;
 * the way back clamps and rounds. Channels adapt: a gray frame feeds a 3- or 4-channel
 * model by replication, a 3-channel model writes a GRAY8 frame as the mean of R, G, B,
 * alpha is ignored on input (unless the model has 4 channels) and written as 255.
 *
 * Supported formats: every packed 8-bit RGB(A) or gray format (GRAY8, RGB, BGR, RGBA,
 * BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR). The frame must have the model's size.
 */
#ifndef __GST_SCORESDE_VIDEO_H__
#define __GST_SCORESDE_VIDEO_H__

#include <gst/video/video.h>

G_BEGIN_DECLS

gboolean gst_scoresde_video_format_is_supported (GstVideoFormat format);

/* out[channels, H, W] (H, W of the frame) from a mapped frame. */
void gst_scoresde_video_frame_to_planar (const GstVideoFrame * frame,
    gint channels, gboolean centered, gfloat * out);

/* Writes in[channels, H, W] into a mapped (writable) frame. */
void gst_scoresde_video_frame_from_planar (GstVideoFrame * frame,
    const gfloat * in, gint channels, gboolean centered);

/* alpha[H, W] = A/255 for formats with alpha, else 1. */
void gst_scoresde_video_frame_get_alpha (const GstVideoFrame * frame,
    gfloat * alpha);

G_END_DECLS

#endif /* __GST_SCORESDE_VIDEO_H__ */
