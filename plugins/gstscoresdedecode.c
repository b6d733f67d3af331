/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/**
 * SECTION:element-scoresdedecode
 * @title: scoresdedecode
 *
 * Decodes latents into video frames: the probability-flow ODE carries each latent
 * from the prior (t = T) back to data (t = eps), solved by default with dpmpp-2m in 15
 * network evaluations (#GstScoreSdeDecode:sampler). No denoising step is applied, so
 * decoding what `scoresdeencode` made with the same settings reproduces the frame to
 * the solver's accuracy.
 *
 * Latents arrive as `other/tensors` (one float32 tensor, dimensions "W:H:C:1"). The
 * caps' `scoresde` field names the model that made them: a latent of another model, or
 * of another shape, is refused at negotiation with a STREAM/WRONG_TYPE error that names
 * both models. When the field is missing (an element such as an NNStreamer filter
 * dropped it) the element warns and proceeds if the dimensions match its model.
 *
 * Frames come out at the model's native size in GRAY8, RGB or RGBA (the format that
 * matches the model's channels is preferred). PTS, DTS, duration and offsets are
 * copied, and so is the #GstScoreSdeLatentMeta.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 videotestsrc num-buffers=10 ! videoscale ! video/x-raw,width=32,height=32 ! scoresdeencode ! scoresdedecode ! videoconvert ! autovideosink
 * ]| A round trip through the latent space of the default model.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include "gstscoresdedecode.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_decode_debug);
#define GST_CAT_DEFAULT gst_scoresde_decode_debug


enum
{
  PROP_0,
  PROP_MODEL,                   /* + device, cuda-device-id, precision */
  PROP_MODEL_LAST = PROP_MODEL + GST_SCORESDE_N_MODEL_PROPS - 1,
  PROP_SAMPLER_FIRST,           /* sampler, schedule, steps, ode knobs (no seed) */
  PROP_SAMPLER_LAST = PROP_SAMPLER_FIRST + GST_SCORESDE_N_SAMPLER_PROPS - 1,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_SCORESDE_LATENT_CAPS_STR)
    );

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (GST_SCORESDE_VIDEO_FORMATS))
    );

#define gst_scoresde_decode_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeDecode, gst_scoresde_decode, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE (scoresdedecode, "scoresdedecode", GST_RANK_NONE,
    GST_TYPE_SCORESDE_DECODE);

static void gst_scoresde_decode_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_scoresde_decode_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_scoresde_decode_finalize (GObject * object);
static GstStateChangeReturn gst_scoresde_decode_change_state (GstElement *
    element, GstStateChange transition);

static gboolean gst_scoresde_decode_start (GstBaseTransform * trans);
static gboolean gst_scoresde_decode_stop (GstBaseTransform * trans);
static GstCaps *gst_scoresde_decode_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static GstCaps *gst_scoresde_decode_fixate_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * othercaps);
static gboolean gst_scoresde_decode_set_caps (GstBaseTransform * trans,
    GstCaps * incaps, GstCaps * outcaps);
static gboolean gst_scoresde_decode_transform_size (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, gsize size, GstCaps * othercaps,
    gsize * othersize);
static gboolean gst_scoresde_decode_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_scoresde_decode_transform (GstBaseTransform * trans,
    GstBuffer * inbuf, GstBuffer * outbuf);

static void
gst_scoresde_decode_class_init (GstScoreSdeDecodeClass * klass)
{
  GObjectClass *gobject_class = (GObjectClass *) klass;
  GstElementClass *element_class = (GstElementClass *) klass;
  GstBaseTransformClass *trans_class = (GstBaseTransformClass *) klass;

  gobject_class->set_property = gst_scoresde_decode_set_property;
  gobject_class->get_property = gst_scoresde_decode_get_property;
  gobject_class->finalize = gst_scoresde_decode_finalize;

  /**
   * GstScoreSdeDecode:model:
   *
   * Model file: a JSON analytic model or a .safetensors network. Empty selects the
   * shipped default ($SCORESDE_DEFAULT_MODEL, else fashion-mnist-32.safetensors). It
   * must be the model that made the latents.
   */
  /**
   * GstScoreSdeDecode:device:
   *
   * Device to run the model on; with cuda-device-id and precision. auto takes the
   * GPU when this build has CUDA support and one answers, else the CPU (a warning in
   * the log). cuda without a usable GPU fails at start with LIBRARY/INIT.
   */
  gst_scoresde_install_model_properties (gobject_class, PROP_MODEL,
      "Model file (.json analytic model or .safetensors network); "
      "empty = the shipped default (fashion-mnist-32)");
  /**
   * GstScoreSdeDecode:sampler:
   *
   * Solver of the probability-flow ODE from the prior back to data; with schedule and
   * steps (network evaluations) for the few-step solvers, ode-method, rtol and atol
   * for sampler=ode. Use the settings the latents were encoded with: the few-step
   * solvers then retrace the encoding grid.
   */
  gst_scoresde_install_sampler_properties (gobject_class, PROP_SAMPLER_FIRST,
      GST_SCORESDE_SAMPLERS_ODE, GST_SCORESDE_DEFAULT_SAMPLER, NULL);

  gst_element_class_set_static_metadata (element_class,
      "Score-SDE decoder", "Filter/Decoder/Video",
      "Maps score-SDE latents back to video frames with the probability-flow ODE",
      "The gst-scoresde authors");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_scoresde_decode_change_state);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_decode_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_decode_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_decode_transform_caps);
  trans_class->fixate_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_decode_fixate_caps);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_scoresde_decode_set_caps);
  trans_class->transform_size =
      GST_DEBUG_FUNCPTR (gst_scoresde_decode_transform_size);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_scoresde_decode_sink_event);
  trans_class->transform = GST_DEBUG_FUNCPTR (gst_scoresde_decode_transform);
  trans_class->passthrough_on_same_caps = FALSE;

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_decode_debug, "scoresdedecode", 0,
      "Score-SDE decoder");
}

static void
gst_scoresde_decode_init (GstScoreSdeDecode * self)
{
  gst_scoresde_sampler_settings_init (&self->settings);
  gst_scoresde_model_slot_init (&self->slot, GST_ELEMENT (self), NULL,
      GST_SCORESDE_MODEL_SLOT_VIDEO, NULL);
  gst_scoresde_latent_info_init (&self->in_info);
  gst_video_info_init (&self->out_info);
}

static void
gst_scoresde_decode_finalize (GObject * object)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (object);

  gst_scoresde_model_slot_clear (&self->slot);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_scoresde_decode_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (object);

  /* model, device, mask-location, n-frames...: never half-applied while running */
  if (!gst_scoresde_property_settable (GST_ELEMENT (object), pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL ... PROP_MODEL_LAST:
      gst_scoresde_model_slot_set_property (&self->slot, prop_id - PROP_MODEL,
          value);
      break;
    case PROP_SAMPLER_FIRST ... PROP_SAMPLER_LAST:
      gst_scoresde_sampler_settings_set (&self->settings,
          prop_id - PROP_SAMPLER_FIRST, value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_scoresde_decode_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL ... PROP_MODEL_LAST:
      gst_scoresde_model_slot_get_property (&self->slot, prop_id - PROP_MODEL,
          value);
      break;
    case PROP_SAMPLER_FIRST ... PROP_SAMPLER_LAST:
      gst_scoresde_sampler_settings_get (&self->settings,
          prop_id - PROP_SAMPLER_FIRST, value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static GstStateChangeReturn
gst_scoresde_decode_change_state (GstElement * element,
    GstStateChange transition)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (element);

  return gst_scoresde_model_slot_change_state (&self->slot, transition,
      GST_ELEMENT_CLASS (parent_class));
}

static gboolean
gst_scoresde_decode_start (GstBaseTransform * trans)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);

  if (!gst_scoresde_model_slot_start (&self->slot))
    return FALSE;
  GST_OBJECT_LOCK (self);
  gst_scoresde_latent_info_init (&self->in_info);
  gst_video_info_init (&self->out_info);
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
gst_scoresde_decode_stop (GstBaseTransform * trans)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);

  gst_scoresde_model_slot_stop (&self->slot);
  return TRUE;
}

static GstCaps *
gst_scoresde_decode_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);
  GstScoreSdeModel *model = gst_scoresde_model_slot_ref_model (&self->slot);
  GstCaps *ret;
  guint i;

  if (model == NULL) {
    ret = gst_pad_get_pad_template_caps (direction == GST_PAD_SINK ?
        GST_BASE_TRANSFORM_SRC_PAD (trans) :
        GST_BASE_TRANSFORM_SINK_PAD (trans));
  } else {
    ret = gst_caps_new_empty ();
    for (i = 0; i < gst_caps_get_size (caps); i++) {
      const GstStructure *s = gst_caps_get_structure (caps, i);
      const GValue *fps = gst_structure_get_value (s, "framerate");
      GstCaps *out;

      if (direction == GST_PAD_SINK) {
        /* latent -> video at the model's size, whatever the latent: a latent that
         * does not fit is refused in set_caps with a message naming both models */
        out = gst_scoresde_video_caps_new (model, -1, 1);
        if (fps != NULL)
          gst_caps_set_value (out, "framerate", fps);
        ret = gst_caps_merge (ret, out);
      } else {
        /* video -> latent: preferably this model's latent; then any latent, so that
         * a wrong one reaches set_caps and gets a clear error instead of a bare
         * not-negotiated */
        GstCaps *any = gst_caps_from_string (GST_SCORESDE_LATENT_CAPS_STR);

        out = gst_scoresde_latent_caps_new (model, -1, 1);
        if (fps != NULL) {
          gst_caps_set_value (out, "framerate", fps);
          gst_caps_set_value (any, "framerate", fps);
        }
        ret = gst_caps_merge (ret, out);
        ret = gst_caps_merge (ret, any);
      }
    }
    gst_scoresde_model_cache_release (model);
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

static GstCaps *
gst_scoresde_decode_fixate_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * othercaps)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);
  GstStructure *s;
  const gchar *format = NULL;

  othercaps = gst_caps_truncate (gst_caps_make_writable (othercaps));
  s = gst_caps_get_structure (othercaps, 0);

  if (direction == GST_PAD_SINK) {
    GST_OBJECT_LOCK (self);
    if (self->slot.model)
      format = gst_video_format_to_string (gst_scoresde_video_format_for_model
          (self->slot.model));
    GST_OBJECT_UNLOCK (self);
    if (format != NULL)
      gst_structure_fixate_field_string (s, "format", format);
  }
  return gst_caps_fixate (othercaps);
}

static gboolean
gst_scoresde_decode_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);
  GstScoreSdeLatentInfo info;
  GstVideoInfo vinfo;
  GError *err = NULL;
  gchar *message = NULL;

  if (self->slot.model == NULL)
    return FALSE;
  if (!gst_scoresde_latent_caps_parse (incaps, &info, &err))
    goto bad_latent;
  if (!gst_video_info_from_caps (&vinfo, outcaps)
      || !gst_scoresde_video_format_is_supported (GST_VIDEO_INFO_FORMAT
          (&vinfo)))
    goto bad_video;

  switch (gst_scoresde_latent_info_check_model (&info, self->slot.model, &message)) {
    case GST_SCORESDE_LATENT_MISMATCH:
      goto mismatch;
    case GST_SCORESDE_LATENT_UNTAGGED:
      GST_ELEMENT_WARNING (self, STREAM, FORMAT, ("%s", message), (NULL));
      break;
    default:
      break;
  }
  g_free (message);

  GST_OBJECT_LOCK (self);
  self->in_info = info;
  self->out_info = vinfo;
  GST_OBJECT_UNLOCK (self);
  GST_DEBUG_OBJECT (self, "%" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT, incaps,
      outcaps);
  return TRUE;

  /* ERRORS */
bad_latent:
  {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("%s", err->message),
        ("caps: %" GST_PTR_FORMAT, incaps));
    g_clear_error (&err);
    return FALSE;
  }
bad_video:
  {
    GST_WARNING_OBJECT (self, "bad output caps %" GST_PTR_FORMAT, outcaps);
    return FALSE;
  }
mismatch:
  {
    GST_ELEMENT_ERROR (self, STREAM, WRONG_TYPE, ("%s", message),
        ("caps: %" GST_PTR_FORMAT, incaps));
    g_free (message);
    return FALSE;
  }
}

static gboolean
gst_scoresde_decode_transform_size (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, gsize size, GstCaps * othercaps,
    gsize * othersize)
{
  if (direction == GST_PAD_SINK) {
    GstVideoInfo info;

    if (!gst_video_info_from_caps (&info, othercaps))
      return FALSE;
    *othersize = info.size;
  } else {
    GstScoreSdeLatentInfo info;

    if (!gst_scoresde_latent_caps_parse (othercaps, &info, NULL))
      return FALSE;
    *othersize = gst_scoresde_latent_info_size (&info);
  }
  return TRUE;
}

static gboolean
gst_scoresde_decode_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      gst_scoresde_progress_cancel (&self->slot.progress);
      break;
    case GST_EVENT_FLUSH_STOP:
      gst_scoresde_progress_reset (&self->slot.progress);
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static GstFlowReturn
gst_scoresde_decode_transform (GstBaseTransform * trans, GstBuffer * inbuf,
    GstBuffer * outbuf)
{
  GstScoreSdeDecode *self = GST_SCORESDE_DECODE (trans);
  GstScoreSdeModel *model = self->slot.model;
  const sde_model *m = model->model;
  const gsize D = gst_scoresde_model_dim (model);
  GstScoreSdeSamplerSettings settings;
  GstScoreSdeLatentMeta *meta;
  GstVideoFrame vframe;
  GstVideoInfo info;
  GstMapInfo map;
  sde_sample_params p;
  sde_stats stats = { 0 };
  gfloat *x;
  int status;

  GST_OBJECT_LOCK (self);
  info = self->out_info;
  settings = self->settings;
  GST_OBJECT_UNLOCK (self);

  if (!gst_buffer_map (inbuf, &map, GST_MAP_READ))
    goto map_in_failed;
  if (map.size != D * sizeof (gfloat)) {
    gst_buffer_unmap (inbuf, &map);
    goto wrong_size;
  }

  x = g_new (gfloat, D);
  self->slot.progress.pts = GST_BUFFER_PTS (inbuf);
  self->slot.progress.frame = GST_BUFFER_OFFSET (inbuf);
  gst_scoresde_sampler_settings_to_params (&settings, &self->slot.progress, &p);
  status = sde_decode (m, &model->sde, &p, 1, (const float *) map.data, x,
      &stats);
  gst_buffer_unmap (inbuf, &map);
  if (status != SDE_OK) {
    g_free (x);
    return GST_SCORESDE_ELEMENT_ENGINE_ERROR (self, status,
        "Decoding a latent failed");
  }

  gst_scoresde_element_check_finite (GST_ELEMENT (self), x, D,
      GST_BUFFER_OFFSET (inbuf), "the decoded image", "they are drawn black");
  if (!gst_video_frame_map (&vframe, &info, outbuf, GST_MAP_WRITE)) {
    g_free (x);
    goto map_out_failed;
  }
  gst_scoresde_video_frame_from_planar (&vframe, x, m->channels, m->centered);
  gst_video_frame_unmap (&vframe);
  g_free (x);

  /* the input's meta was copied onto the frame; record the decode */
  meta = gst_buffer_get_scoresde_latent_meta (outbuf);
  if (meta != NULL) {
    meta->nfe += stats.nfe;
    meta->t = p.eps > 0 ? p.eps : sde_sampling_eps (&model->sde);
  }

  GST_LOG_OBJECT (self, "decoded, NFE %" G_GINT64_FORMAT, (gint64) stats.nfe);
  return GST_FLOW_OK;

  /* ERRORS */
map_in_failed:
  {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (NULL),
        ("Could not map the input latent"));
    return GST_FLOW_ERROR;
  }
wrong_size:
  {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
        ("Latent buffer holds %" G_GSIZE_FORMAT " bytes, expected %"
            G_GSIZE_FORMAT, map.size, D * sizeof (gfloat)));
    return GST_FLOW_ERROR;
  }
map_out_failed:
  {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (NULL),
        ("Could not map the output frame"));
    return GST_FLOW_ERROR;
  }
}
