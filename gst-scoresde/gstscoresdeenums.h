/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * GEnum types shared by the scoresde elements. Each value equals the engine's own
 * constant, so a property value converts with a plain cast.
 */
#ifndef __GST_SCORESDE_ENUMS_H__
#define __GST_SCORESDE_ENUMS_H__

#include <glib-object.h>
#include <scoresde/scoresde.h>

G_BEGIN_DECLS

/**
 * GstScoreSdeSdeKind:
 * @GST_SCORESDE_SDE_VE: variance exploding SDE (SMLD)
 * @GST_SCORESDE_SDE_VP: variance preserving SDE (DDPM)
 * @GST_SCORESDE_SDE_SUBVP: sub-VP SDE
 */
typedef enum
{
  GST_SCORESDE_SDE_VE = SDE_VE,
  GST_SCORESDE_SDE_VP = SDE_VP,
  GST_SCORESDE_SDE_SUBVP = SDE_SUBVP,
} GstScoreSdeSdeKind;

/**
 * GstScoreSdeSampler:
 * @GST_SCORESDE_SAMPLER_PC: predictor-corrector sampler of the reverse-time SDE (the
 *   reference; `steps` is its grid size)
 * @GST_SCORESDE_SAMPLER_ODE: probability-flow ODE with the ODE method (adaptive RK45 or
 *   fixed-step Euler/Heun)
 * @GST_SCORESDE_SAMPLER_DDIM: DDIM, first order (DPM-Solver-1) in data prediction
 * @GST_SCORESDE_SAMPLER_DPMPP_2M: multistep DPM-Solver++, second order
 * @GST_SCORESDE_SAMPLER_DPMPP_3M: multistep DPM-Solver++, third order
 * @GST_SCORESDE_SAMPLER_DPMPP_2M_SDE: second-order DPM-Solver++ of the reverse SDE
 *   (stochastic)
 * @GST_SCORESDE_SAMPLER_HEUN: Heun's second-order method on the EDM (sigma)
 *   parameterisation
 *
 * The few-step solvers (ddim to heun) count `steps` in network evaluations
 * (docs/sampling.md).
 */
typedef enum
{
  GST_SCORESDE_SAMPLER_PC = SDE_SAMPLER_PC,
  GST_SCORESDE_SAMPLER_ODE = SDE_SAMPLER_ODE,
  GST_SCORESDE_SAMPLER_DDIM = SDE_SAMPLER_DDIM,
  GST_SCORESDE_SAMPLER_DPMPP_2M = SDE_SAMPLER_DPMPP_2M,
  GST_SCORESDE_SAMPLER_DPMPP_3M = SDE_SAMPLER_DPMPP_3M,
  GST_SCORESDE_SAMPLER_DPMPP_2M_SDE = SDE_SAMPLER_DPMPP_2M_SDE,
  GST_SCORESDE_SAMPLER_HEUN = SDE_SAMPLER_HEUN,
} GstScoreSdeSampler;

/**
 * GstScoreSdeSchedule:
 * @GST_SCORESDE_SCHEDULE_LOGSNR: uniform in log-SNR
 * @GST_SCORESDE_SCHEDULE_TIME: uniform in time
 * @GST_SCORESDE_SCHEDULE_KARRAS: the Karras et al. grid (rho = 7)
 *
 * Time grid of the few-step samplers.
 */
typedef enum
{
  GST_SCORESDE_SCHEDULE_LOGSNR = SDE_SCHEDULE_LOGSNR,
  GST_SCORESDE_SCHEDULE_TIME = SDE_SCHEDULE_TIME,
  GST_SCORESDE_SCHEDULE_KARRAS = SDE_SCHEDULE_KARRAS,
} GstScoreSdeSchedule;

/**
 * GstScoreSdePredictor:
 * @GST_SCORESDE_PREDICTOR_NONE: no predictor (corrector only)
 * @GST_SCORESDE_PREDICTOR_EULER_MARUYAMA: Euler-Maruyama
 * @GST_SCORESDE_PREDICTOR_REVERSE_DIFFUSION: reverse diffusion
 * @GST_SCORESDE_PREDICTOR_ANCESTRAL: ancestral sampling
 */
typedef enum
{
  GST_SCORESDE_PREDICTOR_NONE = SDE_PRED_NONE,
  GST_SCORESDE_PREDICTOR_EULER_MARUYAMA = SDE_PRED_EULER_MARUYAMA,
  GST_SCORESDE_PREDICTOR_REVERSE_DIFFUSION = SDE_PRED_REVERSE_DIFFUSION,
  GST_SCORESDE_PREDICTOR_ANCESTRAL = SDE_PRED_ANCESTRAL,
} GstScoreSdePredictor;

/**
 * GstScoreSdeCorrector:
 * @GST_SCORESDE_CORRECTOR_NONE: no corrector
 * @GST_SCORESDE_CORRECTOR_LANGEVIN: Langevin dynamics with a target snr
 * @GST_SCORESDE_CORRECTOR_ALD: annealed Langevin dynamics
 */
typedef enum
{
  GST_SCORESDE_CORRECTOR_NONE = SDE_CORR_NONE,
  GST_SCORESDE_CORRECTOR_LANGEVIN = SDE_CORR_LANGEVIN,
  GST_SCORESDE_CORRECTOR_ALD = SDE_CORR_ALD,
} GstScoreSdeCorrector;

/**
 * GstScoreSdeOdeMethod:
 * @GST_SCORESDE_ODE_METHOD_RK45: adaptive Runge-Kutta 4(5) (rtol/atol)
 * @GST_SCORESDE_ODE_METHOD_EULER: fixed-step Euler (steps)
 * @GST_SCORESDE_ODE_METHOD_HEUN: fixed-step Heun (steps)
 */
typedef enum
{
  GST_SCORESDE_ODE_METHOD_RK45 = SDE_ODE_RK45,
  GST_SCORESDE_ODE_METHOD_EULER = SDE_ODE_EULER,
  GST_SCORESDE_ODE_METHOD_HEUN = SDE_ODE_HEUN,
} GstScoreSdeOdeMethod;

/**
 * GstScoreSdeDevice:
 * @GST_SCORESDE_DEVICE_AUTO: a CUDA GPU when this build has CUDA support and one
 *   answers, else the CPU (logged as a warning)
 * @GST_SCORESDE_DEVICE_CPU: the CPU reference backend
 * @GST_SCORESDE_DEVICE_CUDA: an NVIDIA GPU; fails with LIBRARY/INIT when there is none
 */
typedef enum
{
  GST_SCORESDE_DEVICE_AUTO = SDE_DEVICE_AUTO,
  GST_SCORESDE_DEVICE_CPU = SDE_DEVICE_CPU,
  GST_SCORESDE_DEVICE_CUDA = SDE_DEVICE_CUDA,
} GstScoreSdeDevice;

/**
 * GstScoreSdePrecision:
 * @GST_SCORESDE_PRECISION_FP32: float32 everywhere
 * @GST_SCORESDE_PRECISION_TF32: TF32 tensor-core GEMMs and convolutions (GPU only)
 * @GST_SCORESDE_PRECISION_BF16: bfloat16 GEMM/convolution inputs, float32 accumulation
 *   (GPU only)
 */
typedef enum
{
  GST_SCORESDE_PRECISION_FP32 = SDE_PRECISION_FP32,
  GST_SCORESDE_PRECISION_TF32 = SDE_PRECISION_TF32,
  GST_SCORESDE_PRECISION_BF16 = SDE_PRECISION_BF16,
} GstScoreSdePrecision;

/**
 * GstScoreSdeInterpMethod:
 * @GST_SCORESDE_INTERP_SLERP: spherical interpolation (keeps latents on the prior's shell)
 * @GST_SCORESDE_INTERP_LERP: linear interpolation
 */
typedef enum
{
  GST_SCORESDE_INTERP_SLERP = 0,
  GST_SCORESDE_INTERP_LERP = 1,
} GstScoreSdeInterpMethod;

#define GST_TYPE_SCORESDE_SDE_KIND (gst_scoresde_sde_kind_get_type ())
GType gst_scoresde_sde_kind_get_type (void);
#define GST_TYPE_SCORESDE_SAMPLER (gst_scoresde_sampler_get_type ())
GType gst_scoresde_sampler_get_type (void);
/* The subsets of GstScoreSdeSampler (same values and nicks) that encode/decode
 * (deterministic: ode and the few-step solvers but dpmpp-2m-sde) and inpaint/colorize
 * (pc and the few-step solvers) can run, so a property refuses the others. */
#define GST_TYPE_SCORESDE_ODE_SAMPLER (gst_scoresde_ode_sampler_get_type ())
GType gst_scoresde_ode_sampler_get_type (void);
#define GST_TYPE_SCORESDE_CONTROL_SAMPLER (gst_scoresde_control_sampler_get_type ())
GType gst_scoresde_control_sampler_get_type (void);
#define GST_TYPE_SCORESDE_SCHEDULE (gst_scoresde_schedule_get_type ())
GType gst_scoresde_schedule_get_type (void);
#define GST_TYPE_SCORESDE_PREDICTOR (gst_scoresde_predictor_get_type ())
GType gst_scoresde_predictor_get_type (void);
#define GST_TYPE_SCORESDE_CORRECTOR (gst_scoresde_corrector_get_type ())
GType gst_scoresde_corrector_get_type (void);
#define GST_TYPE_SCORESDE_ODE_METHOD (gst_scoresde_ode_method_get_type ())
GType gst_scoresde_ode_method_get_type (void);
#define GST_TYPE_SCORESDE_DEVICE (gst_scoresde_device_get_type ())
GType gst_scoresde_device_get_type (void);
#define GST_TYPE_SCORESDE_PRECISION (gst_scoresde_precision_get_type ())
GType gst_scoresde_precision_get_type (void);
#define GST_TYPE_SCORESDE_INTERP_METHOD (gst_scoresde_interp_method_get_type ())
GType gst_scoresde_interp_method_get_type (void);

/* Marks every enum above with gst_type_mark_as_plugin_api(); call from plugin_init. */
void gst_scoresde_enums_mark_as_plugin_api (void);

G_END_DECLS

#endif /* __GST_SCORESDE_ENUMS_H__ */
