/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Settings shared by the elements that run the model: the device and sampler property
 * groups (installers, get/set), the defaults every element documents, and the
 * conversion to engine parameters.
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
/* the fast path: a multistep solver of the probability-flow ODE at 15 evaluations */
#define GST_SCORESDE_DEFAULT_SAMPLER GST_SCORESDE_SAMPLER_DPMPP_2M
#define GST_SCORESDE_DEFAULT_SCHEDULE GST_SCORESDE_SCHEDULE_KARRAS
#define GST_SCORESDE_DEFAULT_PREDICTOR GST_SCORESDE_PREDICTOR_REVERSE_DIFFUSION
#define GST_SCORESDE_DEFAULT_CORRECTOR GST_SCORESDE_CORRECTOR_LANGEVIN
#define GST_SCORESDE_DEFAULT_STEPS 15   /* 0 = the sampler's default (pc: the SDE's N) */
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
  GstScoreSdeSchedule schedule;
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

/* Sets the GST_SCORESDE_DEFAULT_* values (an element with another default sampler
 * sets it after). */
void gst_scoresde_sampler_settings_init (GstScoreSdeSamplerSettings * s);

/* Checks the settings with the engine's rule (sde_sample_params_check) against the SDE
 * they will sample: a property range cannot say that the pc sampler needs 2 steps where
 * the others take 1. Sets GST_LIBRARY_ERROR_SETTINGS with the engine's message. */
gboolean gst_scoresde_sampler_settings_check (const GstScoreSdeSamplerSettings * s,
    const sde_sde * sde, GError ** error);
/* Which samplers an element can run, beside the deterministic few-step solvers (ddim,
 * dpmpp-2m, dpmpp-3m, heun), and so which properties it has. */
typedef enum
{
  /* reverse-SDE samplers: pc (with predictor, corrector, snr, corrector-steps) and
   * dpmpp-2m-sde */
  GST_SCORESDE_SAMPLERS_SDE = 1 << 0,
  /* the probability-flow ODE: ode (with ode-method, rtol, atol) */
  GST_SCORESDE_SAMPLERS_ODE = 1 << 1,
} GstScoreSdeSamplers;

/* The sampler properties, in this order from `first_prop_id` on; an element has those
 * its GstScoreSdeSamplers and seed blurb select. */
enum
{
  GST_SCORESDE_SAMPLER_PROP_SEED,
  GST_SCORESDE_SAMPLER_PROP_SAMPLER,
  GST_SCORESDE_SAMPLER_PROP_SCHEDULE,
  GST_SCORESDE_SAMPLER_PROP_STEPS,
  GST_SCORESDE_SAMPLER_PROP_PREDICTOR,
  GST_SCORESDE_SAMPLER_PROP_CORRECTOR,
  GST_SCORESDE_SAMPLER_PROP_SNR,
  GST_SCORESDE_SAMPLER_PROP_CORRECTOR_STEPS,
  GST_SCORESDE_SAMPLER_PROP_ODE_METHOD,
  GST_SCORESDE_SAMPLER_PROP_RTOL,
  GST_SCORESDE_SAMPLER_PROP_ATOL,
  GST_SCORESDE_N_SAMPLER_PROPS
};

/* Installs sampler (default `default_sampler`), schedule and steps; seed when
 * `seed_blurb` is not NULL; the pc properties with GST_SCORESDE_SAMPLERS_SDE and the
 * ode ones with GST_SCORESDE_SAMPLERS_ODE (all mutable in PLAYING). The sampler
 * property's type holds only the samplers the element runs: GstScoreSdeSampler
 * (SDE | ODE), GstScoreSdeOdeSampler (ODE) or GstScoreSdeControlSampler (SDE). */
void gst_scoresde_install_sampler_properties (GObjectClass * klass,
    guint first_prop_id, GstScoreSdeSamplers samplers,
    GstScoreSdeSampler default_sampler, const gchar * seed_blurb);
/* Property `index` (GST_SCORESDE_SAMPLER_PROP_*) from / into a GValue. */
void gst_scoresde_sampler_settings_set (GstScoreSdeSamplerSettings * s,
    guint index, const GValue * value);
void gst_scoresde_sampler_settings_get (const GstScoreSdeSamplerSettings * s,
    guint index, GValue * value);

/* Fills engine parameters (sde_sample_params_init + the settings); `progress` may be
 * NULL, else it becomes the progress/cancel callback. */
void gst_scoresde_sampler_settings_to_params (const GstScoreSdeSamplerSettings *
    s, GstScoreSdeProgress * progress, sde_sample_params * p);

G_END_DECLS

#endif /* __GST_SCORESDE_PARAMS_H__ */
