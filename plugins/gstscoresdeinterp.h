/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_SCORESDE_INTERP_H__
#define __GST_SCORESDE_INTERP_H__

#include <gst/gst.h>
#include <gst/base/gstbasetransform.h>
#include <gst-scoresde/gstscoresde.h>

G_BEGIN_DECLS

#define GST_TYPE_SCORESDE_INTERP (gst_scoresde_interp_get_type ())
G_DECLARE_FINAL_TYPE (GstScoreSdeInterp, gst_scoresde_interp, GST,
    SCORESDE_INTERP, GstBaseTransform)

struct _GstScoreSdeInterp
{
  GstBaseTransform parent;

  /* properties (under the object lock) */
  gint n_frames;
  GstScoreSdeInterpMethod method;

  /*< private >*/
  GstScoreSdeLatentInfo info;   /* negotiated latent */
  gboolean negotiated;
  GstBuffer *prev;              /* last latent, waiting for its successor */
  GQueue pending;               /* output buffers not yet handed out */
  guint64 out_offset;           /* next output offset */
  gboolean discont;             /* mark the next output DISCONT */
};

GST_ELEMENT_REGISTER_DECLARE (scoresdeinterp);

G_END_DECLS

#endif /* __GST_SCORESDE_INTERP_H__ */
