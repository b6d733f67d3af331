/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * The model cache: one loaded engine model shared by every element that names the
 * same file (canonical path and identity: device, inode, mtime, size) and device. A
 * file replaced on disk is loaded afresh by the next element that starts.
 */
#ifndef __GST_SCORESDE_MODEL_H__
#define __GST_SCORESDE_MODEL_H__

#include <gst/gst.h>
#include <scoresde/scoresde.h>
#include "gstscoresdeenums.h"
#include "gstscoresdeparams.h"

G_BEGIN_DECLS

/**
 * GST_SCORESDE_MODEL_ENV:
 *
 * Environment variable naming the model used when an element's `model` property is
 * empty (for every element). When unset, the element's default file (below) is taken
 * from the installed `<datadir>/gst-scoresde/models/`, else from the source tree's
 * `models/` (uninstalled use).
 */
#define GST_SCORESDE_MODEL_ENV "SCORESDE_DEFAULT_MODEL"

/* The shipped default models: the trained Fashion-MNIST DDPM++ (scoresdesrc, encode,
 * decode, interp, inpaint) and the trained emoji model (scoresdecolorize, which needs
 * colour). */
#define GST_SCORESDE_DEFAULT_MODEL_FILE "fashion-mnist-32.safetensors"
#define GST_SCORESDE_DEFAULT_COLOR_MODEL_FILE "photo-global-32.safetensors"

typedef struct _GstScoreSdeModel GstScoreSdeModel;

/**
 * GstScoreSdeModel:
 * @model: the loaded engine model; shared read-only, every engine call on it is reentrant
 * @sde: the SDE to sample with: the model's own (model->has_sde) or the VE defaults
 * @path: canonical path of the model file
 * @id: model identity carried in latent caps (model->id, or a hash of @path when
 *   the model has none)
 * @device: the device the model runs on (never %GST_SCORESDE_DEVICE_AUTO)
 * @cuda_device_id: its CUDA ordinal (0 on the CPU)
 * @precision: GEMM/convolution precision in effect (fp32 on the CPU)
 *
 * A refcounted handle on a cached model. Every field is read-only and valid until the
 * handle is released.
 */
struct _GstScoreSdeModel
{
  const sde_model *model;
  sde_sde sde;
  const gchar *path;
  const gchar *id;
  GstScoreSdeDevice device;
  gint cuda_device_id;
  GstScoreSdePrecision precision;

  /*< private >*/
  gint refcount;
  gpointer _gst_reserved[GST_PADDING];
};

#define GST_TYPE_SCORESDE_MODEL (gst_scoresde_model_get_type ())
GType gst_scoresde_model_get_type (void);

/* Returns the canonical (realpath) file to load for `path`; NULL or "" selects the
 * shipped default `default_file` (NULL: GST_SCORESDE_DEFAULT_MODEL_FILE; see
 * GST_SCORESDE_MODEL_ENV). On failure returns NULL and sets
 * GST_RESOURCE_ERROR_NOT_FOUND. Free with g_free(). */
gchar *gst_scoresde_model_resolve_path (const gchar * path,
    const gchar * default_file, GError ** error);

/* Returns the handle of the model in `path` (NULL or "" = the shipped default) on
 * `device`, loading it on first use. device=auto takes CUDA device cuda-device-id when
 * one answers, else the CPU, logged as a warning against `element` (may be NULL).
 * Thread-safe. Errors (GStreamer error domains, ready for
 * GST_SCORESDE_ELEMENT_GERROR):
 *   GST_RESOURCE_ERROR_NOT_FOUND     the file does not exist or cannot be read
 *   GST_LIBRARY_ERROR_INIT           malformed model file; device=cuda without a
 *                                    usable GPU (no CUDA support, driver or device)
 *   GST_RESOURCE_ERROR_NO_SPACE_LEFT out of host or GPU memory while loading
 * Release with gst_scoresde_model_cache_release(). */
GstScoreSdeModel *gst_scoresde_model_cache_acquire (GstElement * element,
    const gchar * path, const GstScoreSdeDeviceSettings * device,
    GError ** error);
/* The same with another default file for an empty `path`. */
GstScoreSdeModel *gst_scoresde_model_cache_acquire_full (GstElement * element,
    const gchar * path, const gchar * default_file,
    const GstScoreSdeDeviceSettings * device, GError ** error);

/* Drops one reference; the model is unloaded when its last user releases it. */
void gst_scoresde_model_cache_release (GstScoreSdeModel * model);

/* Takes another reference on an acquired handle. */
GstScoreSdeModel *gst_scoresde_model_ref (GstScoreSdeModel * model);

/* Checks the model can exchange video frames: 1, 3 or 4 channels. Sets
 * GST_LIBRARY_ERROR_INIT otherwise. */
gboolean gst_scoresde_model_check_video (const GstScoreSdeModel * model,
    GError ** error);

/* Number of models currently loaded (for tests). */
guint gst_scoresde_model_cache_size (void);

/* Convenience accessors. */
static inline gint
gst_scoresde_model_channels (const GstScoreSdeModel * m)
{
  return m->model->channels;
}

static inline gint
gst_scoresde_model_width (const GstScoreSdeModel * m)
{
  return m->model->width;
}

static inline gint
gst_scoresde_model_height (const GstScoreSdeModel * m)
{
  return m->model->height;
}

/* C*H*W: floats in one sample. */
static inline gsize
gst_scoresde_model_dim (const GstScoreSdeModel * m)
{
  return (gsize) sde_model_dim (m->model);
}

G_END_DECLS

#endif /* __GST_SCORESDE_MODEL_H__ */
