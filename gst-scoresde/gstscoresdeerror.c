/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

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
