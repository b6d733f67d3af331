/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Sampler settings shared by the elements that sample (src, inpaint, colorize): the
 * defaults every element documents, and the conversion to engine parameters.
 */
#ifndef __GST_SCORESDE_PARAMS_H__
#define __GST_SCORESDE_PARAMS_H__

#include <gst/gst.h>
#include <scoresde/scoresde.h>
#include "gstscoresdeenums.h"
#include "gstscoresdeprogress.h"

G_BEGIN_DECLS

#define GST_SCORESDE_DEFAULT_MODEL NULL /* the shipped default */
#define GST_SCORESDE_DEFAULT_DEVICE GST_SCORESDE_DEVICE_AUTO
#define GST_SCORESDE_DEFAULT_CUDA_DEVICE_ID 0
#define GST_SCORESDE_MAX_CUDA_DEVICE_ID 255
#define GST_SCORESDE_DEFAULT_PRECISION GST_SCORESDE_PRECISION_FP32
#define GST_SCORESDE_DEFAULT_SEED 0
#define GST_SCORESDE_DEFAULT_SAMPLER GST_SCORESDE_SAMPLER_PC
#define GST_SCORESDE_DEFAULT_PREDICTOR GST_SCORESDE_PREDICTOR_REVERSE_DIFFUSION
#define GST_SCORESDE_DEFAULT_CORRECTOR GST_SCORESDE_CORRECTOR_LANGEVIN
#define GST_SCORESDE_DEFAULT_STEPS 0    /* 0 = the SDE's N (1000 for the references) */
#define GST_SCORESDE_MAX_STEPS SDE_MAX_STEPS /* the engine's range */
#define GST_SCORESDE_DEFAULT_SNR 0.16
#define GST_SCORESDE_MAX_SNR 10.0
#define GST_SCORESDE_DEFAULT_CORRECTOR_STEPS 1
#define GST_SCORESDE_MAX_CORRECTOR_STEPS 100
#define GST_SCORESDE_DEFAULT_ODE_METHOD GST_SCORESDE_ODE_METHOD_RK45
#define GST_SCORESDE_DEFAULT_RTOL 1e-5
#define GST_SCORESDE_DEFAULT_ATOL 1e-5
#define GST_SCORESDE_MIN_TOL SDE_ODE_MIN_TOL /* what float32 scores resolve */
#define GST_SCORESDE_MAX_TOL 1.0

typedef struct
{
  GstScoreSdeSampler sampler;
  GstScoreSdePredictor predictor;
  GstScoreSdeCorrector corrector;
  gint steps;
  gdouble snr;
  gint corrector_steps;
  GstScoreSdeOdeMethod ode_method;
  gdouble rtol, atol;
  guint64 seed;
} GstScoreSdeSamplerSettings;

/* Where an element's model runs: the `device`, `cuda-device-id` and `precision`
 * properties every model-loading element has. */
typedef struct
{
  GstScoreSdeDevice device;
  gint cuda_device_id;
  GstScoreSdePrecision precision;
} GstScoreSdeDeviceSettings;

/* The three device properties, in this order from `first_prop_id` on. */
enum
{
  GST_SCORESDE_DEVICE_PROP_DEVICE,
  GST_SCORESDE_DEVICE_PROP_CUDA_DEVICE_ID,
  GST_SCORESDE_DEVICE_PROP_PRECISION,
  GST_SCORESDE_N_DEVICE_PROPS
};

void gst_scoresde_device_settings_init (GstScoreSdeDeviceSettings * d);
/* Installs device, cuda-device-id and precision (mutable in READY) as property ids
 * first_prop_id .. first_prop_id + 2. */
void gst_scoresde_install_device_properties (GObjectClass * klass,
    guint first_prop_id);
/* Property `index` (GST_SCORESDE_DEVICE_PROP_*) from / into a GValue. */
void gst_scoresde_device_settings_set (GstScoreSdeDeviceSettings * d,
    guint index, const GValue * value);
void gst_scoresde_device_settings_get (const GstScoreSdeDeviceSettings * d,
    guint index, GValue * value);

/* Sets the GST_SCORESDE_DEFAULT_* values. */
void gst_scoresde_sampler_settings_init (GstScoreSdeSamplerSettings * s);

/* Checks the settings with the engine's rule (sde_sample_params_check) against the SDE
 * they will sample: a property range cannot say that the pc sampler needs 2 steps where
 * the others take 1. Sets GST_LIBRARY_ERROR_SETTINGS with the engine's message. */
gboolean gst_scoresde_sampler_settings_check (const GstScoreSdeSamplerSettings * s,
    const sde_sde * sde, GError ** error);

/* Fills engine parameters (sde_sample_params_init + the settings); `progress` may be
 * NULL, else it becomes the progress/cancel callback. */
void gst_scoresde_sampler_settings_to_params (const GstScoreSdeSamplerSettings *
    s, GstScoreSdeProgress * progress, sde_sample_params * p);

G_END_DECLS

#endif /* __GST_SCORESDE_PARAMS_H__ */
