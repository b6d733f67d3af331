/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/**
 * SECTION:element-scoresdeinterp
 * @title: scoresdeinterp
 *
 * Inserts #GstScoreSdeInterp:n-frames latents between each pair of consecutive
 * latents, by spherical (default) or linear interpolation. Decoded with
 * `scoresdedecode`, the in-between latents give frames that morph smoothly from one
 * input frame to the next.
 *
 * For each input interval (from one latent's PTS to the next one's; the buffer
 * duration when the next PTS is unknown) the element outputs n-frames + 1 latents
 * whose timestamps subdivide the interval evenly, and the output framerate is the
 * input's times n-frames + 1. At EOS the last latent is pushed on its own, so k input
 * latents give (n-frames + 1)(k - 1) + 1 outputs. Offsets are renumbered from 0.
 *
 * Caps pass through (other/tensors, the `scoresde` model field is kept) except the
 * framerate.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 scoresdesrc num-buffers=5 framerate=2/1 ! scoresdeencode ! scoresdeinterp n-frames=7 ! scoresdedecode ! videoconvert ! autovideosink
 * ]| Five generated frames at 2 fps become a 16 fps morph through their latents.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include "gstscoresdeinterp.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_interp_debug);
#define GST_CAT_DEFAULT gst_scoresde_interp_debug

#define DEFAULT_N_FRAMES 3
#define MAX_N_FRAMES 1000
#define DEFAULT_METHOD GST_SCORESDE_INTERP_SLERP

enum
{
  PROP_0,
  PROP_N_FRAMES,
  PROP_METHOD,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_SCORESDE_LATENT_CAPS_STR)
    );

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_SCORESDE_LATENT_CAPS_STR)
    );

#define gst_scoresde_interp_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeInterp, gst_scoresde_interp, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE (scoresdeinterp, "scoresdeinterp", GST_RANK_NONE,
    GST_TYPE_SCORESDE_INTERP);

static void gst_scoresde_interp_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_scoresde_interp_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_scoresde_interp_finalize (GObject * object);

static gboolean gst_scoresde_interp_start (GstBaseTransform * trans);
static gboolean gst_scoresde_interp_stop (GstBaseTransform * trans);
static GstCaps *gst_scoresde_interp_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static gboolean gst_scoresde_interp_set_caps (GstBaseTransform * trans,
    GstCaps * incaps, GstCaps * outcaps);
static gboolean gst_scoresde_interp_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_scoresde_interp_submit_input_buffer (GstBaseTransform
    * trans, gboolean is_discont, GstBuffer * input);
static GstFlowReturn gst_scoresde_interp_generate_output (GstBaseTransform *
    trans, GstBuffer ** outbuf);

static void
gst_scoresde_interp_class_init (GstScoreSdeInterpClass * klass)
{
  GObjectClass *gobject_class = (GObjectClass *) klass;
  GstElementClass *element_class = (GstElementClass *) klass;
  GstBaseTransformClass *trans_class = (GstBaseTransformClass *) klass;

  gobject_class->set_property = gst_scoresde_interp_set_property;
  gobject_class->get_property = gst_scoresde_interp_get_property;
  gobject_class->finalize = gst_scoresde_interp_finalize;

  /**
   * GstScoreSdeInterp:n-frames:
   *
   * Latents inserted between each pair of consecutive input latents.
   */
  g_object_class_install_property (gobject_class, PROP_N_FRAMES,
      g_param_spec_int ("n-frames", "N frames",
          "Latents inserted between consecutive input latents", 0,
          MAX_N_FRAMES, DEFAULT_N_FRAMES,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  /**
   * GstScoreSdeInterp:method:
   *
   * Interpolation: slerp keeps the latents at the norm typical of prior samples, which
   * is what the decoder expects; lerp shrinks them midway (blurrier frames).
   */
  g_object_class_install_property (gobject_class, PROP_METHOD,
      g_param_spec_enum ("method", "Method", "Interpolation method",
          GST_TYPE_SCORESDE_INTERP_METHOD, DEFAULT_METHOD,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  gst_element_class_set_static_metadata (element_class,
      "Score-SDE latent interpolator", "Filter/Converter",
      "Inserts interpolated latents between consecutive score-SDE latents",
      "The gst-scoresde authors");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_interp_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_interp_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_interp_transform_caps);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_scoresde_interp_set_caps);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_scoresde_interp_sink_event);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_scoresde_interp_submit_input_buffer);
  trans_class->generate_output =
      GST_DEBUG_FUNCPTR (gst_scoresde_interp_generate_output);
  trans_class->passthrough_on_same_caps = FALSE;

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_interp_debug, "scoresdeinterp", 0,
      "Score-SDE latent interpolator");
}

static void
gst_scoresde_interp_init (GstScoreSdeInterp * self)
{
  self->n_frames = DEFAULT_N_FRAMES;
  self->method = DEFAULT_METHOD;
  gst_scoresde_latent_info_init (&self->info);
  g_queue_init (&self->pending);
}

/* Drops the waiting latent and the outputs not handed out yet. */
static void
gst_scoresde_interp_reset (GstScoreSdeInterp * self)
{
  gst_clear_buffer (&self->prev);
  g_queue_clear_full (&self->pending, (GDestroyNotify) gst_buffer_unref);
  self->out_offset = 0;
  self->discont = TRUE;
}

static void
gst_scoresde_interp_finalize (GObject * object)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (object);

  gst_scoresde_interp_reset (self);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_scoresde_interp_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (object);

  /* model, device, mask-location, n-frames...: never half-applied while running */
  if (!gst_scoresde_property_settable (GST_ELEMENT (object), pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_N_FRAMES:
      self->n_frames = g_value_get_int (value);
      break;
    case PROP_METHOD:
      self->method = g_value_get_enum (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_scoresde_interp_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_N_FRAMES:
      g_value_set_int (value, self->n_frames);
      break;
    case PROP_METHOD:
      g_value_set_enum (value, self->method);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static gboolean
gst_scoresde_interp_start (GstBaseTransform * trans)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);

  gst_scoresde_interp_reset (self);
  self->negotiated = FALSE;
  return TRUE;
}

static gboolean
gst_scoresde_interp_stop (GstBaseTransform * trans)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);

  gst_scoresde_interp_reset (self);
  self->negotiated = FALSE;
  return TRUE;
}

/* Multiplies (mul) or divides the framerate of every structure by n+1. Ranges and
 * lists cannot be scaled exactly and become unrestricted. */
static GstCaps *
gst_scoresde_interp_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);
  GstCaps *ret = gst_caps_copy (caps);
  gint factor, i;

  GST_OBJECT_LOCK (self);
  factor = self->n_frames + 1;
  GST_OBJECT_UNLOCK (self);

  for (i = 0; i < (gint) gst_caps_get_size (ret); i++) {
    GstStructure *s = gst_caps_get_structure (ret, i);
    gint n, d, rn, rd;

    if (gst_structure_get_fraction (s, "framerate", &n, &d)) {
      gboolean ok = (direction == GST_PAD_SINK) ?
          gst_util_fraction_multiply (n, d, factor, 1, &rn, &rd) :
          gst_util_fraction_multiply (n, d, 1, factor, &rn, &rd);
      if (ok && n > 0)
        gst_structure_set (s, "framerate", GST_TYPE_FRACTION, rn, rd, NULL);
      else if (n != 0)
        gst_structure_set (s, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1,
            G_MAXINT, 1, NULL);
    } else if (gst_structure_has_field (s, "framerate")) {
      gst_structure_set (s, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1,
          G_MAXINT, 1, NULL);
    }
  }

  if (filter != NULL) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_LOG_OBJECT (self, "%s %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

static gboolean
gst_scoresde_interp_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);
  GstScoreSdeLatentInfo info;
  GError *err = NULL;

  if (!gst_scoresde_latent_caps_parse (incaps, &info, &err))
    goto bad_latent;

  if (self->negotiated && (info.width != self->info.width
          || info.height != self->info.height
          || info.channels != self->info.channels
          || strcmp (info.model_id, self->info.model_id) != 0)) {
    GST_WARNING_OBJECT (self, "latent changed shape or model: not "
        "interpolating across the change");
    gst_clear_buffer (&self->prev);
  }
  self->info = info;
  self->negotiated = TRUE;
  return TRUE;

  /* ERRORS */
bad_latent:
  {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("%s", err->message),
        ("caps: %" GST_PTR_FORMAT, incaps));
    g_clear_error (&err);
    return FALSE;
  }
}

/* Stamps `buf` (writable) as the next output. */
static void
stamp_output (GstScoreSdeInterp * self, GstBuffer * buf, GstClockTime pts,
    GstClockTime duration)
{
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DTS (buf) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION (buf) = duration;
  GST_BUFFER_OFFSET (buf) = self->out_offset;
  GST_BUFFER_OFFSET_END (buf) = self->out_offset + 1;
  self->out_offset++;
  if (self->discont) {
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
    self->discont = FALSE;
  } else {
    GST_BUFFER_FLAG_UNSET (buf, GST_BUFFER_FLAG_DISCONT);
  }
}

/* Queues `prev` alone with a duration of 1/(n+1) of its own (EOS, discontinuity). */
static void
queue_last (GstScoreSdeInterp * self, gint n)
{
  GstBuffer *buf;
  GstClockTime dur;

  if (self->prev == NULL)
    return;
  buf = gst_buffer_make_writable (self->prev);
  self->prev = NULL;
  dur = GST_BUFFER_DURATION (buf);
  if (GST_CLOCK_TIME_IS_VALID (dur))
    dur = gst_util_uint64_scale (dur, 1, n + 1);
  stamp_output (self, buf, GST_BUFFER_PTS (buf), dur);
  g_queue_push_tail (&self->pending, buf);
}

static GstFlowReturn
gst_scoresde_interp_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);
  const gsize size = gst_scoresde_latent_info_size (&self->info);
  const gsize D = size / sizeof (gfloat);
  GstScoreSdeInterpMethod method;
  GstClockTime pts0, interval;
  GstMapInfo map0, map1;
  GstBuffer *prev, **group;
  gint n, j;

  if (!self->negotiated)
    goto not_negotiated;
  if (gst_buffer_get_size (input) != size)
    goto wrong_size;

  GST_OBJECT_LOCK (self);
  n = self->n_frames;
  method = self->method;
  GST_OBJECT_UNLOCK (self);

  /* GstBaseTransform keeps is_discont set until it pushes an output, so it is still
   * set for the second buffer of a stream: look at the buffer itself */
  if (GST_BUFFER_IS_DISCONT (input) && self->prev != NULL) {
    GST_DEBUG_OBJECT (self, "discontinuity: not interpolating across it");
    queue_last (self, n);
    self->discont = TRUE;
  }

  if (self->prev == NULL) {
    self->prev = input;
    return GST_FLOW_OK;
  }

  /* the interval between the two latents */
  prev = self->prev;
  pts0 = GST_BUFFER_PTS (prev);
  interval = GST_CLOCK_TIME_NONE;
  if (GST_CLOCK_TIME_IS_VALID (pts0) && GST_BUFFER_PTS_IS_VALID (input)
      && GST_BUFFER_PTS (input) > pts0)
    interval = GST_BUFFER_PTS (input) - pts0;
  else if (GST_BUFFER_DURATION_IS_VALID (prev))
    interval = GST_BUFFER_DURATION (prev);
  else if (self->info.fps_n > 0)
    interval = gst_util_uint64_scale (GST_SECOND, self->info.fps_d,
        self->info.fps_n);

  if (!gst_buffer_map (prev, &map0, GST_MAP_READ))
    goto map_failed;
  if (!gst_buffer_map (input, &map1, GST_MAP_READ)) {
    gst_buffer_unmap (prev, &map0);
    goto map_failed;
  }

  /* group[0] is the left latent, unchanged; group[1..n] the interpolants */
  group = g_new0 (GstBuffer *, n + 1);
  for (j = 1; j <= n; j++) {
    const gdouble w = (gdouble) j / (n + 1);
    const gfloat *a = (const gfloat *) map0.data;
    const gfloat *b = (const gfloat *) map1.data;
    GstBuffer *out = gst_buffer_new_allocate (NULL, size, NULL);
    GstMapInfo mo;
    gsize i;

    gst_buffer_copy_into (out, prev, GST_BUFFER_COPY_META, 0, -1);
    gst_buffer_map (out, &mo, GST_MAP_WRITE);
    if (method == GST_SCORESDE_INTERP_SLERP) {
      sde_slerp (a, b, (int64_t) D, w, (float *) mo.data);
    } else {
      gfloat *o = (gfloat *) mo.data;
      for (i = 0; i < D; i++)
        o[i] = (gfloat) ((1.0 - w) * a[i] + w * b[i]);
    }
    gst_buffer_unmap (out, &mo);
    group[j] = out;
  }
  gst_buffer_unmap (input, &map1);
  gst_buffer_unmap (prev, &map0);
  self->prev = NULL;
  group[0] = gst_buffer_make_writable (prev);

  for (j = 0; j <= n; j++) {
    GstClockTime pts = GST_CLOCK_TIME_NONE, dur = GST_CLOCK_TIME_NONE;

    if (GST_CLOCK_TIME_IS_VALID (pts0) && GST_CLOCK_TIME_IS_VALID (interval)) {
      pts = pts0 + gst_util_uint64_scale (interval, j, n + 1);
      dur = pts0 + gst_util_uint64_scale (interval, j + 1, n + 1) - pts;
    }
    stamp_output (self, group[j], pts, dur);
    g_queue_push_tail (&self->pending, group[j]);
  }
  g_free (group);

  self->prev = input;
  return GST_FLOW_OK;

  /* ERRORS */
not_negotiated:
  {
    gst_buffer_unref (input);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("no caps before the first latent"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
wrong_size:
  {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
        ("latent buffer holds %" G_GSIZE_FORMAT " bytes, caps say %"
            G_GSIZE_FORMAT, gst_buffer_get_size (input), size));
    gst_buffer_unref (input);
    return GST_FLOW_ERROR;
  }
map_failed:
  {
    gst_buffer_unref (input);
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (NULL),
        ("could not map a latent"));
    return GST_FLOW_ERROR;
  }
}

static GstFlowReturn
gst_scoresde_interp_generate_output (GstBaseTransform * trans,
    GstBuffer ** outbuf)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);

  *outbuf = g_queue_pop_head (&self->pending);
  return GST_FLOW_OK;
}

static gboolean
gst_scoresde_interp_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstScoreSdeInterp *self = GST_SCORESDE_INTERP (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
    {
      GstBuffer *buf;
      gint n;
      GstFlowReturn ret = GST_FLOW_OK;

      GST_OBJECT_LOCK (self);
      n = self->n_frames;
      GST_OBJECT_UNLOCK (self);
      queue_last (self, n);
      while ((buf = g_queue_pop_head (&self->pending)) != NULL) {
        if (ret == GST_FLOW_OK)
          ret = gst_pad_push (GST_BASE_TRANSFORM_SRC_PAD (trans), buf);
        else
          gst_buffer_unref (buf);
      }
      if (ret != GST_FLOW_OK)
        GST_DEBUG_OBJECT (self, "draining at EOS: %s", gst_flow_get_name (ret));
      break;
    }
    case GST_EVENT_FLUSH_STOP:
      gst_scoresde_interp_reset (self);
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}
