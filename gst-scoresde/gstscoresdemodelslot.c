/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * The model slot: the model lifecycle shared by every model-running element
 * (gstscoresdemodelslot.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include "gstscoresdemodelslot.h"
#include "gstscoresdeerror.h"

void
gst_scoresde_install_model_properties (GObjectClass * klass,
    guint first_prop_id, const gchar * blurb)
{
  g_object_class_install_property (klass, first_prop_id,
      g_param_spec_string ("model", "Model", blurb, NULL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  gst_scoresde_install_device_properties (klass, first_prop_id + 1);
}

void
gst_scoresde_model_slot_init (GstScoreSdeModelSlot * slot,
    GstElement * element, const gchar * default_file,
    GstScoreSdeModelSlotFlags flags, GstScoreSdeModelSlotLoadedFunc loaded)
{
  memset (slot, 0, sizeof *slot);
  slot->element = element;
  slot->default_file = default_file ? default_file :
      GST_SCORESDE_DEFAULT_MODEL_FILE;
  slot->flags = flags;
  slot->loaded = loaded;
  gst_scoresde_device_settings_init (&slot->device);
  gst_scoresde_progress_init (&slot->progress, element);
}

void
gst_scoresde_model_slot_clear (GstScoreSdeModelSlot * slot)
{
  gst_scoresde_model_slot_unload (slot);
  g_clear_pointer (&slot->path, g_free);
}

void
gst_scoresde_model_slot_set_property (GstScoreSdeModelSlot * slot,
    guint index, const GValue * value)
{
  if (index == 0) {
    g_free (slot->path);
    slot->path = g_value_dup_string (value);
  } else {
    gst_scoresde_device_settings_set (&slot->device, index - 1, value);
  }
  slot->reload = TRUE;
}

void
gst_scoresde_model_slot_get_property (GstScoreSdeModelSlot * slot,
    guint index, GValue * value)
{
  if (index == 0)
    g_value_set_string (value, slot->path);
  else
    gst_scoresde_device_settings_get (&slot->device, index - 1, value);
}

void
gst_scoresde_model_slot_unload (GstScoreSdeModelSlot * slot)
{
  GstScoreSdeModel *model;

  GST_OBJECT_LOCK (slot->element);
  model = slot->model;
  slot->model = NULL;
  GST_OBJECT_UNLOCK (slot->element);
  if (model != NULL)
    gst_scoresde_model_cache_release (model);
}

gboolean
gst_scoresde_model_slot_load (GstScoreSdeModelSlot * slot)
{
  GstScoreSdeDeviceSettings device;
  GstScoreSdeModel *model;
  GError *err = NULL;
  gchar *path;

  GST_OBJECT_LOCK (slot->element);
  path = g_strdup (slot->path);
  device = slot->device;
  slot->reload = FALSE;
  GST_OBJECT_UNLOCK (slot->element);

  gst_scoresde_model_slot_unload (slot);

  model = gst_scoresde_model_cache_acquire_full (slot->element, path,
      slot->default_file, &device, &err);
  g_free (path);
  if (model == NULL)
    goto load_failed;
  GST_OBJECT_LOCK (slot->element);
  slot->model = model;
  GST_OBJECT_UNLOCK (slot->element);
  if ((slot->flags & GST_SCORESDE_MODEL_SLOT_VIDEO)
      && !gst_scoresde_model_check_video (model, &err))
    goto load_failed;
  if (slot->loaded != NULL && !slot->loaded (slot->element, model)) {
    gst_scoresde_model_slot_unload (slot);
    return FALSE;
  }
  return TRUE;

  /* ERRORS */
load_failed:
  {
    GST_SCORESDE_ELEMENT_GERROR (slot->element, err);
    g_clear_error (&err);
    gst_scoresde_model_slot_unload (slot);
    return FALSE;
  }
}

gboolean
gst_scoresde_model_slot_start (GstScoreSdeModelSlot * slot)
{
  gboolean load;

  GST_OBJECT_LOCK (slot->element);
  load = slot->reload || slot->model == NULL
      || !(slot->flags & GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY);
  GST_OBJECT_UNLOCK (slot->element);
  if (load && !gst_scoresde_model_slot_load (slot))
    return FALSE;
  gst_scoresde_progress_reset (&slot->progress);
  return TRUE;
}

void
gst_scoresde_model_slot_stop (GstScoreSdeModelSlot * slot)
{
  if (!(slot->flags & GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY))
    gst_scoresde_model_slot_unload (slot);
}

GstStateChangeReturn
gst_scoresde_model_slot_change_state (GstScoreSdeModelSlot * slot,
    GstStateChange transition, GstElementClass * parent_class)
{
  GstStateChangeReturn ret;

  switch (transition) {
    case GST_STATE_CHANGE_NULL_TO_READY:
      if ((slot->flags & GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY)
          && !gst_scoresde_model_slot_load (slot))
        return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      gst_scoresde_progress_reset (&slot->progress);
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* the streaming thread then returns FLUSHING and the pads can deactivate */
      gst_scoresde_progress_cancel (&slot->progress);
      break;
    default:
      break;
  }

  ret = parent_class->change_state (slot->element, transition);

  if (transition == GST_STATE_CHANGE_READY_TO_NULL)
    gst_scoresde_model_slot_unload (slot);
  return ret;
}

GstScoreSdeModel *
gst_scoresde_model_slot_ref_model (GstScoreSdeModelSlot * slot)
{
  GstScoreSdeModel *model = NULL;

  GST_OBJECT_LOCK (slot->element);
  if (slot->model != NULL)
    model = gst_scoresde_model_ref (slot->model);
  GST_OBJECT_UNLOCK (slot->element);
  return model;
}

gboolean
gst_scoresde_model_slot_check_sampler (GstScoreSdeModelSlot * slot,
    const GstScoreSdeSamplerSettings * settings)
{
  GError *err = NULL;

  if (gst_scoresde_sampler_settings_check (settings, &slot->model->sde, &err))
    return TRUE;
  GST_SCORESDE_ELEMENT_GERROR (slot->element, err);
  g_clear_error (&err);
  return FALSE;
}
