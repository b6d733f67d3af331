/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Umbrella header of libgstscoresde, the layer between the scoresde elements
 * (plugins/) and the engine (libscoresde, no GLib). See each header for its part:
 *   gstscoresdeenums.h       GEnum types (sde, sampler, predictor, corrector, ode method,
 *                            device, interpolation method)
 *   gstscoresdemodel.h       the model cache (GstScoreSdeModel)
 *   gstscoresdemodelslot.h   an element's model: properties, loading, state changes
 *   gstscoresdecaps.h        latent caps (other/tensors + scoresde field)
 *   gstscoresdelatentmeta.h  GstScoreSdeLatentMeta
 *   gstscoresdevideo.h       GstVideoFrame <-> planar float in model space
 *   gstscoresdeprogress.h    cancel flag and progress callback
 *   gstscoresdeerror.h       engine status -> element errors
 *   gstscoresdeparams.h      sampler settings and defaults
 */
#ifndef __GST_SCORESDE_H__
#define __GST_SCORESDE_H__

#include "gstscoresdeenums.h"
#include "gstscoresdemodel.h"
#include "gstscoresdemodelslot.h"
#include "gstscoresdecaps.h"
#include "gstscoresdelatentmeta.h"
#include "gstscoresdevideo.h"
#include "gstscoresdeprogress.h"
#include "gstscoresdeerror.h"
#include "gstscoresdeparams.h"

#endif /* __GST_SCORESDE_H__ */
