/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include "gstscoresdeenums.h"

#define DEFINE_ENUM_TYPE(func, TypeName, values)                        \
GType                                                                   \
func (void)                                                             \
{                                                                       \
  static gsize id = 0;                                                  \
  if (g_once_init_enter (&id)) {                                        \
    GType t = g_enum_register_static (TypeName, values);                \
    g_once_init_leave (&id, t);                                         \
  }                                                                     \
  return (GType) id;                                                    \
}

static const GEnumValue sde_kind_values[] = {
  {GST_SCORESDE_SDE_VE, "Variance exploding SDE (SMLD)", "ve"},
  {GST_SCORESDE_SDE_VP, "Variance preserving SDE (DDPM)", "vp"},
  {GST_SCORESDE_SDE_SUBVP, "Sub-variance preserving SDE", "subvp"},
  {0, NULL, NULL}
};

#define SAMPLER_PC {GST_SCORESDE_SAMPLER_PC, \
      "Predictor-corrector sampler of the reverse SDE", "pc"}
#define SAMPLER_ODE {GST_SCORESDE_SAMPLER_ODE, \
      "Probability-flow ODE (ode-method)", "ode"}
#define SAMPLER_DETERMINISTIC_FEWSTEP \
  {GST_SCORESDE_SAMPLER_DDIM, "DDIM (first order)", "ddim"}, \
  {GST_SCORESDE_SAMPLER_DPMPP_2M, "DPM-Solver++ multistep, second order", \
      "dpmpp-2m"}, \
  {GST_SCORESDE_SAMPLER_DPMPP_3M, "DPM-Solver++ multistep, third order", \
      "dpmpp-3m"}
#define SAMPLER_DPMPP_2M_SDE {GST_SCORESDE_SAMPLER_DPMPP_2M_SDE, \
      "DPM-Solver++ of the reverse SDE, second order (stochastic)", \
      "dpmpp-2m-sde"}
#define SAMPLER_HEUN {GST_SCORESDE_SAMPLER_HEUN, \
      "Heun, second order (EDM)", "heun"}

static const GEnumValue sampler_values[] = {
  SAMPLER_PC, SAMPLER_ODE, SAMPLER_DETERMINISTIC_FEWSTEP, SAMPLER_DPMPP_2M_SDE,
  SAMPLER_HEUN, {0, NULL, NULL}
};

static const GEnumValue ode_sampler_values[] = {
  SAMPLER_ODE, SAMPLER_DETERMINISTIC_FEWSTEP, SAMPLER_HEUN, {0, NULL, NULL}
};

static const GEnumValue control_sampler_values[] = {
  SAMPLER_PC, SAMPLER_DETERMINISTIC_FEWSTEP, SAMPLER_DPMPP_2M_SDE,
  SAMPLER_HEUN, {0, NULL, NULL}
};

static const GEnumValue schedule_values[] = {
  {GST_SCORESDE_SCHEDULE_LOGSNR, "Uniform in log-SNR", "logsnr"},
  {GST_SCORESDE_SCHEDULE_TIME, "Uniform in time", "time"},
  {GST_SCORESDE_SCHEDULE_KARRAS, "Karras et al. (rho = 7)", "karras"},
  {0, NULL, NULL}
};

static const GEnumValue predictor_values[] = {
  {GST_SCORESDE_PREDICTOR_NONE, "No predictor", "none"},
  {GST_SCORESDE_PREDICTOR_EULER_MARUYAMA, "Euler-Maruyama",
      "euler-maruyama"},
  {GST_SCORESDE_PREDICTOR_REVERSE_DIFFUSION, "Reverse diffusion",
      "reverse-diffusion"},
  {GST_SCORESDE_PREDICTOR_ANCESTRAL, "Ancestral sampling", "ancestral"},
  {0, NULL, NULL}
};

static const GEnumValue corrector_values[] = {
  {GST_SCORESDE_CORRECTOR_NONE, "No corrector", "none"},
  {GST_SCORESDE_CORRECTOR_LANGEVIN, "Langevin dynamics", "langevin"},
  {GST_SCORESDE_CORRECTOR_ALD, "Annealed Langevin dynamics", "ald"},
  {0, NULL, NULL}
};

static const GEnumValue ode_method_values[] = {
  {GST_SCORESDE_ODE_METHOD_RK45, "Adaptive Runge-Kutta 4(5)", "rk45"},
  {GST_SCORESDE_ODE_METHOD_EULER, "Fixed-step Euler", "euler"},
  {GST_SCORESDE_ODE_METHOD_HEUN, "Fixed-step Heun", "heun"},
  {0, NULL, NULL}
};

static const GEnumValue device_values[] = {
  {GST_SCORESDE_DEVICE_AUTO, "A CUDA GPU if one answers, else the CPU",
      "auto"},
  {GST_SCORESDE_DEVICE_CPU, "CPU", "cpu"},
  {GST_SCORESDE_DEVICE_CUDA, "NVIDIA GPU (CUDA)", "cuda"},
  {0, NULL, NULL}
};

static const GEnumValue precision_values[] = {
  {GST_SCORESDE_PRECISION_FP32, "float32", "fp32"},
  {GST_SCORESDE_PRECISION_TF32, "TF32 tensor-core GEMMs/convolutions (GPU)",
      "tf32"},
  {GST_SCORESDE_PRECISION_BF16, "bfloat16 GEMM/convolution inputs (GPU)",
      "bf16"},
  {0, NULL, NULL}
};

static const GEnumValue interp_method_values[] = {
  {GST_SCORESDE_INTERP_SLERP, "Spherical linear interpolation", "slerp"},
  {GST_SCORESDE_INTERP_LERP, "Linear interpolation", "lerp"},
  {0, NULL, NULL}
};

/* *INDENT-OFF* */
DEFINE_ENUM_TYPE (gst_scoresde_sde_kind_get_type, "GstScoreSdeSdeKind", sde_kind_values)
DEFINE_ENUM_TYPE (gst_scoresde_sampler_get_type, "GstScoreSdeSampler", sampler_values)
DEFINE_ENUM_TYPE (gst_scoresde_ode_sampler_get_type, "GstScoreSdeOdeSampler", ode_sampler_values)
DEFINE_ENUM_TYPE (gst_scoresde_control_sampler_get_type, "GstScoreSdeControlSampler", control_sampler_values)
DEFINE_ENUM_TYPE (gst_scoresde_schedule_get_type, "GstScoreSdeSchedule", schedule_values)
DEFINE_ENUM_TYPE (gst_scoresde_predictor_get_type, "GstScoreSdePredictor", predictor_values)
DEFINE_ENUM_TYPE (gst_scoresde_corrector_get_type, "GstScoreSdeCorrector", corrector_values)
DEFINE_ENUM_TYPE (gst_scoresde_ode_method_get_type, "GstScoreSdeOdeMethod", ode_method_values)
DEFINE_ENUM_TYPE (gst_scoresde_device_get_type, "GstScoreSdeDevice", device_values)
DEFINE_ENUM_TYPE (gst_scoresde_precision_get_type, "GstScoreSdePrecision", precision_values)
DEFINE_ENUM_TYPE (gst_scoresde_interp_method_get_type, "GstScoreSdeInterpMethod", interp_method_values)
/* *INDENT-ON* */

void
gst_scoresde_enums_mark_as_plugin_api (void)
{
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_SDE_KIND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_SAMPLER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_ODE_SAMPLER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_CONTROL_SAMPLER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_SCHEDULE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_PREDICTOR, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_CORRECTOR, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_ODE_METHOD, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_DEVICE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_PRECISION, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SCORESDE_INTERP_METHOD, 0);
}
