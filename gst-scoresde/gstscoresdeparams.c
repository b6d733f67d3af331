/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstscoresdeparams.h"

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
