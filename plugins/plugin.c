/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/**
 * plugin-scoresde:
 *
 * Score-based generative modelling through stochastic differential equations
 * (Song et al. 2021): generate video from noise, encode frames to latents with the
 * probability-flow ODE and back, interpolate between latents, inpaint and colorize.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include <gst-scoresde/gstscoresde.h>
#include <scoresde/scoresde.h>

#include "gstscoresdesrc.h"
#include "gstscoresdeencode.h"
#include "gstscoresdedecode.h"
#include "gstscoresdeinterp.h"
#include "gstscoresdeinpaint.h"
#include "gstscoresdecolorize.h"

GST_DEBUG_CATEGORY_STATIC (scoresde_plugin_debug);
#define GST_CAT_DEFAULT scoresde_plugin_debug

static gboolean
plugin_init (GstPlugin * plugin)
{
  gboolean ret = FALSE;
  const gchar *coretype;

  GST_DEBUG_CATEGORY_INIT (scoresde_plugin_debug, "scoresde", 0,
      "score-SDE plugin");

  /* OpenBLAS chose its kernels when the process loaded it; only the application
   * can change that, by starting with the variable set. */
  coretype = sde_blas_better_coretype ();
  if (coretype && !g_getenv ("OPENBLAS_CORETYPE"))
    GST_WARNING ("OpenBLAS runs its generic '%s' kernels on this CPU, so the "
        "networks run 1.3-1.9x slower: start the application with "
        "OPENBLAS_CORETYPE=%s", sde_blas_corename (), coretype);

  gst_scoresde_enums_mark_as_plugin_api ();

  ret |= GST_ELEMENT_REGISTER (scoresdesrc, plugin);
  ret |= GST_ELEMENT_REGISTER (scoresdeencode, plugin);
  ret |= GST_ELEMENT_REGISTER (scoresdedecode, plugin);
  ret |= GST_ELEMENT_REGISTER (scoresdeinterp, plugin);
  ret |= GST_ELEMENT_REGISTER (scoresdeinpaint, plugin);
  ret |= GST_ELEMENT_REGISTER (scoresdecolorize, plugin);

  return ret;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR,
    GST_VERSION_MINOR,
    scoresde,
    "Score-based generative modelling through SDEs",
    plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
