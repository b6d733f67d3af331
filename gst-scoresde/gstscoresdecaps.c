/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <stdlib.h>
#include "gstscoresdecaps.h"

#define MAX_RANK 16

void
gst_scoresde_latent_info_init (GstScoreSdeLatentInfo * info)
{
  memset (info, 0, sizeof (*info));
  info->fps_d = 1;
  info->t_end = SDE_T;
  info->sde = GST_SCORESDE_SDE_VE;
}

gsize
gst_scoresde_latent_info_size (const GstScoreSdeLatentInfo * info)
{
  return (gsize) info->width * info->height * info->channels * sizeof (gfloat);
}

gchar *
gst_scoresde_latent_dimensions_to_string (gint width, gint height,
    gint channels)
{
  return g_strdup_printf ("%d:%d:%d:1", width, height, channels);
}

gboolean
gst_scoresde_latent_dimensions_parse (const gchar * dims, gint * width,
    gint * height, gint * channels)
{
  gchar **parts;
  gint64 d[MAX_RANK];
  guint n, i;
  gboolean ok = TRUE;

  if (dims == NULL || dims[0] == '\0')
    return FALSE;
  parts = g_strsplit (dims, ":", -1);
  n = g_strv_length (parts);
  if (n > MAX_RANK)
    ok = FALSE;
  for (i = 0; ok && i < MAX_RANK; i++) {
    if (i < n) {
      gchar *s = g_strstrip (parts[i]), *end = NULL;
      d[i] = g_ascii_strtoll (s, &end, 10);
      if (s[0] == '\0' || end == NULL || *end != '\0' || d[i] < 1
          || d[i] > G_MAXINT)
        ok = FALSE;
    } else {
      d[i] = 1;
    }
  }
  for (i = 3; ok && i < MAX_RANK; i++)
    if (d[i] != 1)
      ok = FALSE;               /* batched or higher-rank tensors are not latents */
  g_strfreev (parts);
  if (!ok)
    return FALSE;
  *width = (gint) d[0];
  *height = (gint) d[1];
  *channels = (gint) d[2];
  return TRUE;
}

GstStructure *
gst_scoresde_latent_field_new (const GstScoreSdeModel * model)
{
  return gst_structure_new (GST_SCORESDE_LATENT_FIELD_NAME,
      "model-id", G_TYPE_STRING, model->id,
      "sde", G_TYPE_STRING, sde_kind_name (model->sde.kind),
      "t-end", G_TYPE_DOUBLE, (gdouble) SDE_T,
      "layout", G_TYPE_STRING, "nchw", NULL);
}

void
gst_scoresde_latent_caps_set_model (GstCaps * caps,
    const GstScoreSdeModel * model)
{
  GstStructure *field = gst_scoresde_latent_field_new (model);
  gchar *dims = gst_scoresde_latent_dimensions_to_string (model->model->width,
      model->model->height, model->model->channels);

  gst_caps_set_simple (caps, "dimensions", G_TYPE_STRING, dims,
      GST_SCORESDE_LATENT_FIELD, GST_TYPE_STRUCTURE, field, NULL);
  g_free (dims);
  gst_structure_free (field);
}

GstCaps *
gst_scoresde_latent_caps_new (const GstScoreSdeModel * model, gint fps_n,
    gint fps_d)
{
  GstCaps *caps = gst_caps_new_simple (GST_SCORESDE_LATENT_MEDIA_TYPE,
      "format", G_TYPE_STRING, "static",
      "num_tensors", G_TYPE_INT, 1,
      "types", G_TYPE_STRING, "float32", NULL);

  if (fps_n >= 0)
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION, fps_n, fps_d,
        NULL);
  else
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1,
        G_MAXINT, 1, NULL);
  gst_scoresde_latent_caps_set_model (caps, model);
  return caps;
}

gboolean
gst_scoresde_latent_caps_parse (const GstCaps * caps,
    GstScoreSdeLatentInfo * info, GError ** error)
{
  const GstStructure *s;
  const gchar *str;
  gint num = 1;
  const GValue *v;

  gst_scoresde_latent_info_init (info);

  if (caps == NULL || gst_caps_get_size (caps) < 1 || !gst_caps_is_fixed (caps))
    goto not_fixed;
  s = gst_caps_get_structure (caps, 0);
  if (!gst_structure_has_name (s, GST_SCORESDE_LATENT_MEDIA_TYPE))
    goto wrong_type;

  str = gst_structure_get_string (s, "format");
  if (str != NULL && strcmp (str, "static") != 0)
    goto wrong_format;
  if (gst_structure_get_int (s, "num_tensors", &num) && num != 1)
    goto wrong_count;
  str = gst_structure_get_string (s, "types");
  if (str == NULL || strcmp (str, "float32") != 0)
    goto wrong_dtype;
  str = gst_structure_get_string (s, "dimensions");
  if (!gst_scoresde_latent_dimensions_parse (str, &info->width, &info->height,
          &info->channels))
    goto wrong_dims;
  if (!gst_structure_get_fraction (s, "framerate", &info->fps_n, &info->fps_d)) {
    info->fps_n = 0;
    info->fps_d = 1;
  }

  v = gst_structure_get_value (s, GST_SCORESDE_LATENT_FIELD);
  if (v != NULL && G_VALUE_HOLDS (v, GST_TYPE_STRUCTURE)) {
    const GstStructure *f = gst_value_get_structure (v);
    const gchar *id = gst_structure_get_string (f, "model-id");
    const gchar *sde = gst_structure_get_string (f, "sde");
    gdouble t_end;
    sde_kind kind;

    info->has_field = TRUE;
    if (id != NULL)
      g_strlcpy (info->model_id, id, sizeof (info->model_id));
    if (sde != NULL && sde_kind_from_name (sde, &kind) == SDE_OK) {
      info->has_sde = TRUE;
      info->sde = (GstScoreSdeSdeKind) kind;
    }
    if (gst_structure_get_double (f, "t-end", &t_end))
      info->t_end = t_end;
    str = gst_structure_get_string (f, "layout");
    if (str != NULL && strcmp (str, "nchw") != 0) {
      g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
          "Latent layout '%s' is not supported (only nchw)", str);
      return FALSE;
    }
  }
  return TRUE;

  /* ERRORS */
not_fixed:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "Latent caps are not fixed");
    return FALSE;
  }
wrong_type:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "Expected " GST_SCORESDE_LATENT_MEDIA_TYPE " but got %s",
        gst_structure_get_name (s));
    return FALSE;
  }
wrong_format:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "Tensor format '%s' is not supported (only static)", str);
    return FALSE;
  }
wrong_count:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "A latent is one tensor but the caps carry %d", num);
    return FALSE;
  }
wrong_dtype:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "Latent tensors are float32, not '%s'", GST_STR_NULL (str));
    return FALSE;
  }
wrong_dims:
  {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "Bad latent dimensions '%s' (expected W:H:C:1)", GST_STR_NULL (str));
    return FALSE;
  }
}

GstScoreSdeLatentMatch
gst_scoresde_latent_info_check_model (const GstScoreSdeLatentInfo * info,
    const GstScoreSdeModel * model, gchar ** message)
{
  const sde_model *m = model->model;
  gboolean dims_ok = info->width == m->width && info->height == m->height
      && info->channels == m->channels;

  if (message)
    *message = NULL;

  if (info->has_field && info->model_id[0] != '\0'
      && strcmp (info->model_id, model->id) != 0) {
    if (message)
      *message = g_strdup_printf ("latent comes from model %s (%dx%dx%d) but "
          "this element loaded model %s (%dx%dx%d, %s)", info->model_id,
          info->channels, info->height, info->width, model->id, m->channels,
          m->height, m->width, model->path);
    return GST_SCORESDE_LATENT_MISMATCH;
  }
  if (!dims_ok) {
    if (message)
      *message = g_strdup_printf ("latent is %dx%dx%d (dimensions %d:%d:%d:1) "
          "but model %s expects %dx%dx%d", info->channels, info->height,
          info->width, info->width, info->height, info->channels, model->id,
          m->channels, m->height, m->width);
    return GST_SCORESDE_LATENT_MISMATCH;
  }
  if (info->has_field && info->has_sde
      && (sde_kind) info->sde != model->sde.kind) {
    if (message)
      *message = g_strdup_printf ("latent was made with the %s SDE but model "
          "%s uses %s", sde_kind_name ((sde_kind) info->sde), model->id,
          sde_kind_name (model->sde.kind));
    return GST_SCORESDE_LATENT_MISMATCH;
  }
  if (!info->has_field || info->model_id[0] == '\0') {
    if (message)
      *message = g_strdup_printf ("latent caps carry no '%s' model tag "
          "(dropped upstream?); assuming it comes from model %s since the "
          "dimensions match", GST_SCORESDE_LATENT_FIELD, model->id);
    return GST_SCORESDE_LATENT_UNTAGGED;
  }
  return GST_SCORESDE_LATENT_MATCH;
}

GstVideoFormat
gst_scoresde_video_format_for_model (const GstScoreSdeModel * model)
{
  switch (model->model->channels) {
    case 1:
      return GST_VIDEO_FORMAT_GRAY8;
    case 4:
      return GST_VIDEO_FORMAT_RGBA;
    default:
      return GST_VIDEO_FORMAT_RGB;
  }
}

GstCaps *
gst_scoresde_video_caps_new (const GstScoreSdeModel * model, gint fps_n,
    gint fps_d)
{
  GstCaps *caps =
      gst_caps_from_string ("video/x-raw, format=(string)"
      GST_SCORESDE_VIDEO_FORMATS);

  gst_caps_set_simple (caps, "width", G_TYPE_INT, model->model->width,
      "height", G_TYPE_INT, model->model->height, NULL);
  if (fps_n >= 0)
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION, fps_n, fps_d,
        NULL);
  else
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1,
        G_MAXINT, 1, NULL);
  return caps;
}
