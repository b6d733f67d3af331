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
gst_scoresde_sampler_settings_to_params (const GstScoreSdeSamplerSettings * s,
    GstScoreSdeProgress * progress, sde_sample_params * p)
{
  sde_sample_params_init (p);
  p->sampler = (sde_sampler) s->sampler;
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
