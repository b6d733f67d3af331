/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include "gstscoresdeerror.h"

GError *
gst_scoresde_error_from_status (int status, const gchar * what)
{
  const gchar *msg = sde_errmsg ();
  const gchar *sep = (msg && msg[0]) ? ": " : "";

  if (msg == NULL || msg[0] == '\0')
    msg = "";
  if (what == NULL)
    what = "Engine failure";

  switch (status) {
    case SDE_ENOMEM:
      return g_error_new (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NO_SPACE_LEFT,
          "%s%s%s (out of memory: lower the resolution or the batch size)",
          what, sep, msg);
    case SDE_EIO:
      return g_error_new (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "%s%s%s", what, sep, msg);
    case SDE_EFORMAT:
    case SDE_ENODEV:
      return g_error_new (GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
          "%s%s%s", what, sep, msg);
    case SDE_ECANCELLED:
      return g_error_new (GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
          "%s: cancelled", what);
    default:
      return g_error_new (GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
          "%s%s%s (%s)", what, sep, msg, sde_status_name (status));
  }
}

void
gst_scoresde_element_post_gerror (GstElement * element, const GError * error,
    const gchar * debug, const gchar * file, const gchar * function, gint line)
{
  g_return_if_fail (GST_IS_ELEMENT (element));
  g_return_if_fail (error != NULL);

  GST_WARNING_OBJECT (element, "error: %s", error->message);
  gst_element_message_full (element, GST_MESSAGE_ERROR, error->domain,
      error->code, g_strdup (error->message), g_strdup (debug), file, function,
      line);
}

GstFlowReturn
gst_scoresde_element_post_engine_error (GstElement * element, int status,
    const gchar * what, const gchar * file, const gchar * function, gint line)
{
  GError *error;

  if (status == SDE_ECANCELLED) {
    GST_DEBUG_OBJECT (element, "engine run cancelled");
    return GST_FLOW_FLUSHING;
  }
  error = gst_scoresde_error_from_status (status, what);
  gst_scoresde_element_post_gerror (element, error, sde_status_name (status),
      file, function, line);
  g_error_free (error);
  return GST_FLOW_ERROR;
}

gsize
gst_scoresde_element_check_finite (GstElement * element, const gfloat * data,
    gsize n, guint64 frame, const gchar * what, const gchar * fate)
{
  gsize i, bad = 0;

  for (i = 0; i < n; i++)
    bad += !isfinite (data[i]);
  if (bad > 0)
    GST_ELEMENT_WARNING (element, STREAM, FAILED,
        ("Frame %" G_GUINT64_FORMAT ": %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
            " values of %s are NaN or Inf; %s.", frame, bad, n, what, fate),
        ("the sampler diverged: lower snr, raise steps or check the model"));
  return bad;
}

gboolean
gst_scoresde_property_settable (GstElement * element, GParamSpec * pspec)
{
  GstState state, next;

  if (!(pspec->flags & GST_PARAM_MUTABLE_READY))
    return TRUE;
  GST_OBJECT_LOCK (element);
  state = GST_STATE (element);
  next = GST_STATE_NEXT (element);
  GST_OBJECT_UNLOCK (element);
  if (state <= GST_STATE_READY && next <= GST_STATE_READY)
    return TRUE;
  GST_ELEMENT_WARNING (element, LIBRARY, SETTINGS,
      ("Property '%s' can only be changed in the NULL or READY state; the new "
          "value is ignored.", pspec->name), ("element is %s",
          gst_element_state_get_name (MAX (state, next))));
  return FALSE;
}
