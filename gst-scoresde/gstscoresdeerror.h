/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Engine status -> GStreamer error mapping:
 *   SDE_ENOMEM        RESOURCE/NO_SPACE_LEFT  (hint: lower the resolution or batch size)
 *   SDE_EIO           RESOURCE/NOT_FOUND
 *   SDE_EFORMAT       LIBRARY/INIT
 *   SDE_ENODEV        LIBRARY/INIT
 *   anything else     STREAM/FAILED with sde_errmsg()
 *   SDE_ECANCELLED    not an error: GST_FLOW_FLUSHING
 */
#ifndef __GST_SCORESDE_ERROR_H__
#define __GST_SCORESDE_ERROR_H__

#include <gst/gst.h>
#include <scoresde/scoresde.h>

G_BEGIN_DECLS

/* A GError in a GStreamer error domain for an engine status; the message is
 * "<what>: <sde_errmsg()>" (read on the calling thread). */
GError *gst_scoresde_error_from_status (int status, const gchar * what);

/* Posts `error` (a GStreamer-domain GError) as an element error, like GST_ELEMENT_ERROR. */
void gst_scoresde_element_post_gerror (GstElement * element,
    const GError * error, const gchar * debug, const gchar * file,
    const gchar * function, gint line);

/* Posts the element error for an engine status (none for SDE_ECANCELLED) and returns
 * the flow to return: GST_FLOW_FLUSHING for SDE_ECANCELLED, GST_FLOW_ERROR otherwise. */
GstFlowReturn gst_scoresde_element_post_engine_error (GstElement * element,
    int status, const gchar * what, const gchar * file,
    const gchar * function, gint line);

/* Counts the NaN/Inf values of an engine result data[n] for frame `frame`. When there
 * are any, posts a STREAM/FAILED warning on the bus saying how many, in `what` ("the
 * sample", "the latent"...), and what becomes of them (`fate`); a result is never passed
 * on silently. Returns their number. */
gsize gst_scoresde_element_check_finite (GstElement * element,
    const gfloat * data, gsize n, guint64 frame, const gchar * what,
    const gchar * fate);

/* For set_property: FALSE when `pspec` is flagged GST_PARAM_MUTABLE_READY and `element`
 * is in (or on its way to) PAUSED or PLAYING. The change is then ignored with a warning
 * on the bus: a model, mask or frame count swapped under a running stream would apply
 * half (the size negotiated, the state allocated for the old one). It can be set again
 * in NULL or READY. Call it without the object lock. */
gboolean gst_scoresde_property_settable (GstElement * element,
    GParamSpec * pspec);

#define GST_SCORESDE_ELEMENT_GERROR(el, err) \
  gst_scoresde_element_post_gerror (GST_ELEMENT_CAST (el), (err), NULL, \
      __FILE__, GST_FUNCTION, __LINE__)

#define GST_SCORESDE_ELEMENT_ENGINE_ERROR(el, status, what) \
  gst_scoresde_element_post_engine_error (GST_ELEMENT_CAST (el), (status), (what), \
      __FILE__, GST_FUNCTION, __LINE__)

G_END_DECLS

#endif /* __GST_SCORESDE_ERROR_H__ */
