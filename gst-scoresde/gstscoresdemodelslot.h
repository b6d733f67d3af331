/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * The model slot: what every model-running element does with its model, in one place.
 * It owns the `model`, `device`, `cuda-device-id` and `precision` properties, acquires
 * the model from the cache (at NULL->READY or at start, see the flags), reloads it when
 * a property changed in READY, posts the load errors, releases it, and holds the
 * cancel flag and progress messages of the element's engine runs. An element embeds a
 * GstScoreSdeModelSlot and keeps only what is particular to it.
 */
#ifndef __GST_SCORESDE_MODEL_SLOT_H__
#define __GST_SCORESDE_MODEL_SLOT_H__

#include <gst/gst.h>
#include "gstscoresdemodel.h"
#include "gstscoresdeparams.h"
#include "gstscoresdeprogress.h"

G_BEGIN_DECLS

typedef enum
{
  /* Acquire the model at NULL->READY, so a bad model fails early and caps queries
   * know its size; reload it at start when a property changed in READY; release it
   * at READY->NULL. Without it: acquired at start, released at stop. */
  GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY = 1 << 0,
  /* Refuse models that cannot exchange video frames (gst_scoresde_model_check_video). */
  GST_SCORESDE_MODEL_SLOT_VIDEO = 1 << 1,
} GstScoreSdeModelSlotFlags;

/* Called after the model is acquired (streaming or application thread, object lock
 * not held) for the element's own checks and set-up; posts its own error and returns
 * FALSE to refuse the model, which is then released. */
typedef gboolean (*GstScoreSdeModelSlotLoadedFunc) (GstElement * element,
    GstScoreSdeModel * model);

/* The model, device, cuda-device-id and precision properties, in this order from the
 * element's first id on. */
#define GST_SCORESDE_N_MODEL_PROPS (1 + GST_SCORESDE_N_DEVICE_PROPS)

typedef struct
{
  /* properties, under the element's object lock */
  gchar *path;                  /* NULL or "" = the shipped default */
  GstScoreSdeDeviceSettings device;
  gboolean reload;              /* a setting the model depends on changed since loading */

  /* the loaded model; set and cleared under the object lock (caps queries read it) */
  GstScoreSdeModel *model;
  /* cancel flag and progress messages of the element's engine runs */
  GstScoreSdeProgress progress;

  /*< private >*/
  GstElement *element;          /* not reffed: the slot lives in it */
  const gchar *default_file;
  GstScoreSdeModelSlotFlags flags;
  GstScoreSdeModelSlotLoadedFunc loaded;
} GstScoreSdeModelSlot;

/* Installs model (with `blurb`, default NULL) and the device properties, mutable in
 * READY, as ids first_prop_id .. first_prop_id + GST_SCORESDE_N_MODEL_PROPS - 1. */
void gst_scoresde_install_model_properties (GObjectClass * klass,
    guint first_prop_id, const gchar * blurb);

/* `default_file`: the shipped model an empty path selects (NULL:
 * GST_SCORESDE_DEFAULT_MODEL_FILE). `loaded` may be NULL. */
void gst_scoresde_model_slot_init (GstScoreSdeModelSlot * slot,
    GstElement * element, const gchar * default_file,
    GstScoreSdeModelSlotFlags flags, GstScoreSdeModelSlotLoadedFunc loaded);
/* Releases the model and frees the properties (finalize). */
void gst_scoresde_model_slot_clear (GstScoreSdeModelSlot * slot);

/* Property `index` (0 = model, then GST_SCORESDE_DEVICE_PROP_* + 1) from / into a
 * GValue; under the object lock. Setting one marks the model for reloading. */
void gst_scoresde_model_slot_set_property (GstScoreSdeModelSlot * slot,
    guint index, const GValue * value);
void gst_scoresde_model_slot_get_property (GstScoreSdeModelSlot * slot,
    guint index, GValue * value);

/* (Re)acquires the model from the current properties; posts an error and returns
 * FALSE (no model loaded) on failure. */
gboolean gst_scoresde_model_slot_load (GstScoreSdeModelSlot * slot);
void gst_scoresde_model_slot_unload (GstScoreSdeModelSlot * slot);

/* For the element's start(): loads the model when it is not loaded yet or a property
 * changed, and clears the cancel flag. FALSE: an error was posted. */
gboolean gst_scoresde_model_slot_start (GstScoreSdeModelSlot * slot);
/* For the element's stop(): releases a model acquired at start. */
void gst_scoresde_model_slot_stop (GstScoreSdeModelSlot * slot);

/* The element's change_state: loads at NULL->READY (LOAD_AT_READY), stops a running
 * engine call within one step at PAUSED->READY (before the base class waits for the
 * streaming thread), chains up to `parent_class` and releases the model at
 * READY->NULL. */
GstStateChangeReturn gst_scoresde_model_slot_change_state (GstScoreSdeModelSlot *
    slot, GstStateChange transition, GstElementClass * parent_class);

/* A reference on the loaded model (NULL when none), for threads other than the
 * streaming thread; release with gst_scoresde_model_cache_release(). */
GstScoreSdeModel *gst_scoresde_model_slot_ref_model (GstScoreSdeModelSlot * slot);

/* Refuses now what the first engine call would (steps=1 is in range but not for pc):
 * checks `settings` against the model's SDE and posts an error when they do not fit. */
gboolean gst_scoresde_model_slot_check_sampler (GstScoreSdeModelSlot * slot,
    const GstScoreSdeSamplerSettings * settings);

G_END_DECLS

#endif /* __GST_SCORESDE_MODEL_SLOT_H__ */
