/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstscoresdeparams.h"

void
gst_scoresde_device_settings_init (GstScoreSdeDeviceSettings * d)
{
  d->device = GST_SCORESDE_DEFAULT_DEVICE;
  d->cuda_device_id = GST_SCORESDE_DEFAULT_CUDA_DEVICE_ID;
  d->precision = GST_SCORESDE_DEFAULT_PRECISION;
}

void
gst_scoresde_install_device_properties (GObjectClass * klass,
    guint first_prop_id)
{
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;

  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_DEVICE_PROP_DEVICE,
      g_param_spec_enum ("device", "Device",
          "Device to run the model on (auto: a CUDA GPU if one answers, else "
          "the CPU)", GST_TYPE_SCORESDE_DEVICE, GST_SCORESDE_DEFAULT_DEVICE,
          flags));
  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_DEVICE_PROP_CUDA_DEVICE_ID,
      g_param_spec_int ("cuda-device-id", "CUDA device id",
          "CUDA device ordinal used by device=cuda or auto", 0,
          GST_SCORESDE_MAX_CUDA_DEVICE_ID, GST_SCORESDE_DEFAULT_CUDA_DEVICE_ID,
          flags));
  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_DEVICE_PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "GEMM/convolution precision on the GPU (the CPU computes in fp32)",
          GST_TYPE_SCORESDE_PRECISION, GST_SCORESDE_DEFAULT_PRECISION, flags));
}

void
gst_scoresde_device_settings_set (GstScoreSdeDeviceSettings * d, guint index,
    const GValue * value)
{
  switch (index) {
    case GST_SCORESDE_DEVICE_PROP_DEVICE:
      d->device = g_value_get_enum (value);
      break;
    case GST_SCORESDE_DEVICE_PROP_CUDA_DEVICE_ID:
      d->cuda_device_id = g_value_get_int (value);
      break;
    case GST_SCORESDE_DEVICE_PROP_PRECISION:
      d->precision = g_value_get_enum (value);
      break;
    default:
      g_assert_not_reached ();
  }
}

void
gst_scoresde_device_settings_get (const GstScoreSdeDeviceSettings * d,
    guint index, GValue * value)
{
  switch (index) {
    case GST_SCORESDE_DEVICE_PROP_DEVICE:
      g_value_set_enum (value, d->device);
      break;
    case GST_SCORESDE_DEVICE_PROP_CUDA_DEVICE_ID:
      g_value_set_int (value, d->cuda_device_id);
      break;
    case GST_SCORESDE_DEVICE_PROP_PRECISION:
      g_value_set_enum (value, d->precision);
      break;
    default:
      g_assert_not_reached ();
  }
}

void
gst_scoresde_sampler_settings_init (GstScoreSdeSamplerSettings * s)
{
  s->sampler = GST_SCORESDE_DEFAULT_SAMPLER;
  s->schedule = GST_SCORESDE_DEFAULT_SCHEDULE;
  s->predictor = GST_SCORESDE_DEFAULT_PREDICTOR;
  s->corrector = GST_SCORESDE_DEFAULT_CORRECTOR;
  s->steps = GST_SCORESDE_DEFAULT_STEPS;
  s->snr = GST_SCORESDE_DEFAULT_SNR;
  s->corrector_steps = GST_SCORESDE_DEFAULT_CORRECTOR_STEPS;
  s->ode_method = GST_SCORESDE_DEFAULT_ODE_METHOD;
  s->rtol = GST_SCORESDE_DEFAULT_RTOL;
  s->atol = GST_SCORESDE_DEFAULT_ATOL;
  s->seed = GST_SCORESDE_DEFAULT_SEED;
}

void
gst_scoresde_install_sampler_properties (GObjectClass * klass,
    guint first_prop_id, GstScoreSdeSamplers samplers,
    GstScoreSdeSampler default_sampler, const gchar * seed_blurb)
{
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_PLAYING;
  const gboolean sde = (samplers & GST_SCORESDE_SAMPLERS_SDE) != 0;
  const gboolean ode = (samplers & GST_SCORESDE_SAMPLERS_ODE) != 0;
  GType sampler_type;
  const gchar *sampler_blurb;

  g_return_if_fail (sde || ode);
  if (sde && ode) {
    sampler_type = GST_TYPE_SCORESDE_SAMPLER;
    sampler_blurb = "Sampler: a few-step solver (steps = network evaluations), "
        "the predictor-corrector sampler of the reverse SDE (pc) or the "
        "probability-flow ODE with ode-method (ode)";
  } else if (ode) {
    sampler_type = GST_TYPE_SCORESDE_ODE_SAMPLER;
    sampler_blurb = "Solver of the probability-flow ODE: a deterministic "
        "few-step solver (steps = network evaluations) or ode-method (ode)";
  } else {
    sampler_type = GST_TYPE_SCORESDE_CONTROL_SAMPLER;
    sampler_blurb = "Sampler: a few-step solver (steps = network evaluations) "
        "or the predictor-corrector sampler of the reverse SDE (pc)";
  }

  if (seed_blurb != NULL)
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_SEED,
        g_param_spec_uint64 ("seed", "Seed", seed_blurb, 0, G_MAXUINT64,
            GST_SCORESDE_DEFAULT_SEED, flags));
  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_SAMPLER_PROP_SAMPLER,
      g_param_spec_enum ("sampler", "Sampler", sampler_blurb, sampler_type,
          default_sampler, flags));
  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_SAMPLER_PROP_SCHEDULE,
      g_param_spec_enum ("schedule", "Schedule",
          "Time grid of the few-step samplers", GST_TYPE_SCORESDE_SCHEDULE,
          GST_SCORESDE_DEFAULT_SCHEDULE, flags));
  g_object_class_install_property (klass,
      first_prop_id + GST_SCORESDE_SAMPLER_PROP_STEPS,
      g_param_spec_int ("steps", "Steps",
          "Network evaluations per frame of the few-step samplers (heun: at "
          "most steps + 1); grid steps of pc, steps of the fixed-step ode "
          "methods; 0 = the sampler's default (15, pc and ode: the SDE's N)",
          0, GST_SCORESDE_MAX_STEPS, GST_SCORESDE_DEFAULT_STEPS, flags));
  if (sde) {
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_PREDICTOR,
        g_param_spec_enum ("predictor", "Predictor",
            "Predictor of the PC sampler", GST_TYPE_SCORESDE_PREDICTOR,
            GST_SCORESDE_DEFAULT_PREDICTOR, flags));
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_CORRECTOR,
        g_param_spec_enum ("corrector", "Corrector",
            "Corrector of the PC sampler", GST_TYPE_SCORESDE_CORRECTOR,
            GST_SCORESDE_DEFAULT_CORRECTOR, flags));
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_SNR,
        g_param_spec_double ("snr", "SNR",
            "Signal-to-noise ratio of the PC sampler's corrector", 0.0,
            GST_SCORESDE_MAX_SNR, GST_SCORESDE_DEFAULT_SNR, flags));
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_CORRECTOR_STEPS,
        g_param_spec_int ("corrector-steps", "Corrector steps",
            "Corrector iterations per step of the PC sampler", 0,
            GST_SCORESDE_MAX_CORRECTOR_STEPS,
            GST_SCORESDE_DEFAULT_CORRECTOR_STEPS, flags));
  }
  if (ode) {
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_ODE_METHOD,
        g_param_spec_enum ("ode-method", "ODE method",
            "Integrator of sampler=ode", GST_TYPE_SCORESDE_ODE_METHOD,
            GST_SCORESDE_DEFAULT_ODE_METHOD, flags));
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_RTOL,
        g_param_spec_double ("rtol", "Relative tolerance",
            "Relative tolerance of ode-method=rk45", GST_SCORESDE_MIN_TOL,
            GST_SCORESDE_MAX_TOL, GST_SCORESDE_DEFAULT_RTOL, flags));
    g_object_class_install_property (klass,
        first_prop_id + GST_SCORESDE_SAMPLER_PROP_ATOL,
        g_param_spec_double ("atol", "Absolute tolerance",
            "Absolute tolerance of ode-method=rk45", GST_SCORESDE_MIN_TOL,
            GST_SCORESDE_MAX_TOL, GST_SCORESDE_DEFAULT_ATOL, flags));
  }
}

void
gst_scoresde_sampler_settings_set (GstScoreSdeSamplerSettings * s,
    guint index, const GValue * value)
{
  switch (index) {
    case GST_SCORESDE_SAMPLER_PROP_SEED:
      s->seed = g_value_get_uint64 (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SAMPLER:
      s->sampler = g_value_get_enum (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SCHEDULE:
      s->schedule = g_value_get_enum (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_STEPS:
      s->steps = g_value_get_int (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_PREDICTOR:
      s->predictor = g_value_get_enum (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_CORRECTOR:
      s->corrector = g_value_get_enum (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SNR:
      s->snr = g_value_get_double (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_CORRECTOR_STEPS:
      s->corrector_steps = g_value_get_int (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_ODE_METHOD:
      s->ode_method = g_value_get_enum (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_RTOL:
      s->rtol = g_value_get_double (value);
      break;
    case GST_SCORESDE_SAMPLER_PROP_ATOL:
      s->atol = g_value_get_double (value);
      break;
    default:
      g_assert_not_reached ();
  }
}

void
gst_scoresde_sampler_settings_get (const GstScoreSdeSamplerSettings * s,
    guint index, GValue * value)
{
  switch (index) {
    case GST_SCORESDE_SAMPLER_PROP_SEED:
      g_value_set_uint64 (value, s->seed);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SAMPLER:
      g_value_set_enum (value, s->sampler);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SCHEDULE:
      g_value_set_enum (value, s->schedule);
      break;
    case GST_SCORESDE_SAMPLER_PROP_STEPS:
      g_value_set_int (value, s->steps);
      break;
    case GST_SCORESDE_SAMPLER_PROP_PREDICTOR:
      g_value_set_enum (value, s->predictor);
      break;
    case GST_SCORESDE_SAMPLER_PROP_CORRECTOR:
      g_value_set_enum (value, s->corrector);
      break;
    case GST_SCORESDE_SAMPLER_PROP_SNR:
      g_value_set_double (value, s->snr);
      break;
    case GST_SCORESDE_SAMPLER_PROP_CORRECTOR_STEPS:
      g_value_set_int (value, s->corrector_steps);
      break;
    case GST_SCORESDE_SAMPLER_PROP_ODE_METHOD:
      g_value_set_enum (value, s->ode_method);
      break;
    case GST_SCORESDE_SAMPLER_PROP_RTOL:
      g_value_set_double (value, s->rtol);
      break;
    case GST_SCORESDE_SAMPLER_PROP_ATOL:
      g_value_set_double (value, s->atol);
      break;
    default:
      g_assert_not_reached ();
  }
}

void
gst_scoresde_sampler_settings_to_params (const GstScoreSdeSamplerSettings * s,
    GstScoreSdeProgress * progress, sde_sample_params * p)
{
  sde_sample_params_init (p);
  p->sampler = (sde_sampler) s->sampler;
  p->schedule = (sde_schedule) s->schedule;
  p->predictor = (sde_predictor) s->predictor;
  p->corrector = (sde_corrector) s->corrector;
  p->steps = s->steps;
  p->snr = s->snr;
  p->corrector_steps = s->corrector_steps;
  p->ode_method = (sde_ode_method) s->ode_method;
  p->rtol = s->rtol;
  p->atol = s->atol;
  p->seed = s->seed;
  if (progress != NULL)
    gst_scoresde_progress_attach (progress, p);
}

gboolean
gst_scoresde_sampler_settings_check (const GstScoreSdeSamplerSettings * s,
    const sde_sde * sde, GError ** error)
{
  sde_sample_params p;

  gst_scoresde_sampler_settings_to_params (s, NULL, &p);
  if (sde_sample_params_check (&p, sde) == SDE_OK)
    return TRUE;
  g_set_error (error, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_SETTINGS,
      "Invalid sampler settings: %s", sde_errmsg ());
  return FALSE;
}
