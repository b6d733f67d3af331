/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/**
 * SECTION:element-scoresdeencode
 * @title: scoresdeencode
 *
 * Encodes video frames into latents: the probability-flow ODE carries each frame from
 * data (t = eps) to the prior (t = T), solved by default with dpmpp-2m in 15 network
 * evaluations (#GstScoreSdeEncode:sampler; sampler=ode is the adaptive RK45 reference).
 * Decode with the same sampler settings. The latent is a planar float32 tensor of the
 * model's shape, sent as `other/tensors` with dimensions "W:H:C:1" and a `scoresde`
 * caps field naming the model, so `scoresdedecode` can refuse latents of another
 * model. Per-buffer facts go in #GstScoreSdeLatentMeta.
 *
 * Frames must come at the model's native size: the element never rescales, put
 * `videoscale` in front. PTS, DTS, duration and offsets are copied.
 *
 * With #GstScoreSdeEncode:bits-per-dim the element also integrates the likelihood
 * ODE on the uniformly dequantised frame and stores bits/dim and log p in the meta
 * (it roughly doubles the cost).
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! videoscale ! video/x-raw,width=32,height=32 ! scoresdeencode ! scoresdeinterp n-frames=3 ! scoresdedecode ! videoconvert ! autovideosink
 * ]| Encodes frames, interpolates between consecutive latents and decodes them.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <string.h>
#include "gstscoresdeencode.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_encode_debug);
#define GST_CAT_DEFAULT gst_scoresde_encode_debug

#define DEFAULT_BITS_PER_DIM FALSE

enum
{
  PROP_0,
  PROP_MODEL,                   /* + device, cuda-device-id, precision */
  PROP_MODEL_LAST = PROP_MODEL + GST_SCORESDE_N_MODEL_PROPS - 1,
  PROP_SAMPLER_FIRST,           /* seed, sampler, schedule, steps, ode knobs */
  PROP_SAMPLER_LAST = PROP_SAMPLER_FIRST + GST_SCORESDE_N_SAMPLER_PROPS - 1,
  PROP_BITS_PER_DIM,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (GST_SCORESDE_VIDEO_FORMATS))
    );

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_SCORESDE_LATENT_CAPS_STR)
    );

#define gst_scoresde_encode_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeEncode, gst_scoresde_encode, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE (scoresdeencode, "scoresdeencode", GST_RANK_NONE,
    GST_TYPE_SCORESDE_ENCODE);

static void gst_scoresde_encode_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_scoresde_encode_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_scoresde_encode_finalize (GObject * object);
static GstStateChangeReturn gst_scoresde_encode_change_state (GstElement *
    element, GstStateChange transition);

static gboolean gst_scoresde_encode_start (GstBaseTransform * trans);
static gboolean gst_scoresde_encode_stop (GstBaseTransform * trans);
static GstCaps *gst_scoresde_encode_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static gboolean gst_scoresde_encode_set_caps (GstBaseTransform * trans,
    GstCaps * incaps, GstCaps * outcaps);
static gboolean gst_scoresde_encode_transform_size (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, gsize size, GstCaps * othercaps,
    gsize * othersize);
static gboolean gst_scoresde_encode_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_scoresde_encode_transform (GstBaseTransform * trans,
    GstBuffer * inbuf, GstBuffer * outbuf);

static void
gst_scoresde_encode_class_init (GstScoreSdeEncodeClass * klass)
{
  GObjectClass *gobject_class = (GObjectClass *) klass;
  GstElementClass *element_class = (GstElementClass *) klass;
  GstBaseTransformClass *trans_class = (GstBaseTransformClass *) klass;

  gobject_class->set_property = gst_scoresde_encode_set_property;
  gobject_class->get_property = gst_scoresde_encode_get_property;
  gobject_class->finalize = gst_scoresde_encode_finalize;

  /**
   * GstScoreSdeEncode:model:
   *
   * Model file: a JSON analytic model or a .safetensors network. Empty selects the
   * shipped default ($SCORESDE_DEFAULT_MODEL, else fashion-mnist-32.safetensors).
   */
  /**
   * GstScoreSdeEncode:device:
   *
   * Device to run the model on; with cuda-device-id and precision. auto takes the
   * GPU when this build has CUDA support and one answers, else the CPU (a warning in
   * the log). cuda without a usable GPU fails at start with LIBRARY/INIT.
   */
  gst_scoresde_install_model_properties (gobject_class, PROP_MODEL,
      "Model file (.json analytic model or .safetensors network); "
      "empty = the shipped default (fashion-mnist-32)");
  /**
   * GstScoreSdeEncode:sampler:
   *
   * Solver of the probability-flow ODE from data to the prior; with schedule and
   * steps (network evaluations) for the few-step solvers, ode-method, rtol and atol
   * for sampler=ode. Decode with the same settings: the few-step solvers then retrace
   * the encoding grid backwards. seed keys the likelihood's dequantisation and
   * Hutchinson noise (frame i uses stream i).
   */
  gst_scoresde_install_sampler_properties (gobject_class, PROP_SAMPLER_FIRST,
      GST_SCORESDE_SAMPLERS_ODE, GST_SCORESDE_DEFAULT_SAMPLER,
      "Seed of the likelihood's dequantisation and Hutchinson noise");
  /**
   * GstScoreSdeEncode:bits-per-dim:
   *
   * Also compute the exact likelihood of each (dequantised) frame and store bits/dim
   * and log p in the #GstScoreSdeLatentMeta.
   */
  g_object_class_install_property (gobject_class, PROP_BITS_PER_DIM,
      g_param_spec_boolean ("bits-per-dim", "Bits per dim",
          "Compute the likelihood (bits/dim, log p) of each frame into the meta",
          DEFAULT_BITS_PER_DIM, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  gst_element_class_set_static_metadata (element_class,
      "Score-SDE encoder", "Filter/Encoder/Video",
      "Maps video frames to score-SDE latents with the probability-flow ODE",
      "The gst-scoresde authors");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_scoresde_encode_change_state);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_encode_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_encode_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_encode_transform_caps);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_scoresde_encode_set_caps);
  trans_class->transform_size =
      GST_DEBUG_FUNCPTR (gst_scoresde_encode_transform_size);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_scoresde_encode_sink_event);
  trans_class->transform = GST_DEBUG_FUNCPTR (gst_scoresde_encode_transform);
  trans_class->passthrough_on_same_caps = FALSE;

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_encode_debug, "scoresdeencode", 0,
      "Score-SDE encoder");
}

static void
gst_scoresde_encode_init (GstScoreSdeEncode * self)
{
  gst_scoresde_sampler_settings_init (&self->settings);
  self->bits_per_dim = DEFAULT_BITS_PER_DIM;
  gst_scoresde_model_slot_init (&self->slot, GST_ELEMENT (self), NULL,
      GST_SCORESDE_MODEL_SLOT_VIDEO, NULL);
  gst_video_info_init (&self->in_info);
}

static void
gst_scoresde_encode_finalize (GObject * object)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (object);

  gst_scoresde_model_slot_clear (&self->slot);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_scoresde_encode_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (object);

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
    case PROP_BITS_PER_DIM:
      self->bits_per_dim = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_scoresde_encode_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (object);

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
    case PROP_BITS_PER_DIM:
      g_value_set_boolean (value, self->bits_per_dim);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static GstStateChangeReturn
gst_scoresde_encode_change_state (GstElement * element,
    GstStateChange transition)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (element);

  return gst_scoresde_model_slot_change_state (&self->slot, transition,
      GST_ELEMENT_CLASS (parent_class));
}

static gboolean
gst_scoresde_encode_start (GstBaseTransform * trans)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);

  if (!gst_scoresde_model_slot_start (&self->slot))
    return FALSE;
  GST_OBJECT_LOCK (self);
  self->frame_count = 0;
  gst_video_info_init (&self->in_info);
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
gst_scoresde_encode_stop (GstBaseTransform * trans)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);

  gst_scoresde_model_slot_stop (&self->slot);
  return TRUE;
}

/* TRUE when field `name` of `s` (absent = any) can hold `value`. */
static gboolean
field_accepts_int (const GstStructure * s, const gchar * name, gint value)
{
  const GValue *v = gst_structure_get_value (s, name);
  GValue iv = G_VALUE_INIT;
  gboolean ret;

  if (v == NULL)
    return TRUE;
  g_value_init (&iv, G_TYPE_INT);
  g_value_set_int (&iv, value);
  /* gst_value_can_intersect() only says whether the types could intersect */
  ret = gst_value_intersect (NULL, v, &iv);
  g_value_unset (&iv);
  return ret;
}

static GstCaps *
gst_scoresde_encode_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);
  GstScoreSdeModel *model = gst_scoresde_model_slot_ref_model (&self->slot);
  GstCaps *ret;
  guint i;

  if (model == NULL) {
    /* no model yet: anything of the other pad's template */
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
        /* video -> latent; only frames at the model's size */
        if (!field_accepts_int (s, "width", gst_scoresde_model_width (model))
            || !field_accepts_int (s, "height",
                gst_scoresde_model_height (model))) {
          GST_DEBUG_OBJECT (self, "%" GST_PTR_FORMAT " is not at the model "
              "size %dx%d (put videoscale in front)", s,
              gst_scoresde_model_width (model),
              gst_scoresde_model_height (model));
          continue;
        }
        out = gst_scoresde_latent_caps_new (model, -1, 1);
      } else {
        /* latent -> video at the model's size */
        const gchar *dims = gst_structure_get_string (s, "dimensions");
        gint w, h, c;

        if (dims != NULL && (!gst_scoresde_latent_dimensions_parse (dims, &w,
                    &h, &c) || w != gst_scoresde_model_width (model)
                || h != gst_scoresde_model_height (model)
                || c != gst_scoresde_model_channels (model)))
          continue;
        out = gst_scoresde_video_caps_new (model, -1, 1);
      }
      if (fps != NULL)
        gst_caps_set_value (out, "framerate", fps);
      ret = gst_caps_merge (ret, out);
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

static gboolean
gst_scoresde_encode_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);
  GstVideoInfo info;

  if (!gst_video_info_from_caps (&info, incaps))
    goto parse_failed;
  if (self->slot.model == NULL)
    return FALSE;
  if (GST_VIDEO_INFO_WIDTH (&info) != gst_scoresde_model_width (self->slot.model)
      || GST_VIDEO_INFO_HEIGHT (&info) !=
      gst_scoresde_model_height (self->slot.model))
    goto wrong_size;

  GST_OBJECT_LOCK (self);
  self->in_info = info;
  GST_OBJECT_UNLOCK (self);
  GST_DEBUG_OBJECT (self, "%" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT, incaps,
      outcaps);
  return TRUE;

  /* ERRORS */
parse_failed:
  {
    GST_WARNING_OBJECT (self, "could not parse %" GST_PTR_FORMAT, incaps);
    return FALSE;
  }
wrong_size:
  {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Frames are %dx%d but the model takes %dx%d; put videoscale in front",
            GST_VIDEO_INFO_WIDTH (&info), GST_VIDEO_INFO_HEIGHT (&info),
            gst_scoresde_model_width (self->slot.model),
            gst_scoresde_model_height (self->slot.model)), (NULL));
    return FALSE;
  }
}

static gboolean
gst_scoresde_encode_transform_size (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, gsize size, GstCaps * othercaps,
    gsize * othersize)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);

  if (direction == GST_PAD_SINK) {
    GstScoreSdeLatentInfo info;

    if (!gst_scoresde_latent_caps_parse (othercaps, &info, NULL))
      return FALSE;
    *othersize = gst_scoresde_latent_info_size (&info);
  } else {
    GstVideoInfo info;

    if (!gst_video_info_from_caps (&info, othercaps))
      return FALSE;
    *othersize = info.size;
  }
  GST_LOG_OBJECT (self, "size %" G_GSIZE_FORMAT " -> %" G_GSIZE_FORMAT, size,
      *othersize);
  return TRUE;
}

static gboolean
gst_scoresde_encode_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      gst_scoresde_progress_cancel (&self->slot.progress);
      break;
    case GST_EVENT_FLUSH_STOP:
      gst_scoresde_progress_reset (&self->slot.progress);
      self->frame_count = 0;
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static GstFlowReturn
gst_scoresde_encode_transform (GstBaseTransform * trans, GstBuffer * inbuf,
    GstBuffer * outbuf)
{
  GstScoreSdeEncode *self = GST_SCORESDE_ENCODE (trans);
  GstScoreSdeModel *model = self->slot.model;
  const sde_model *m = model->model;
  const gsize D = gst_scoresde_model_dim (model);
  GstScoreSdeSamplerSettings settings;
  GstScoreSdeLatentMeta *meta;
  GstVideoFrame vframe;
  GstVideoInfo info;
  GstMapInfo map;
  sde_sample_params p;
  sde_stats stats = { 0 }, lstats = { 0 };
  gboolean want_bpd;
  gdouble logp = NAN, bpd = NAN;
  guint64 frame;
  gfloat *x;
  int status;

  GST_OBJECT_LOCK (self);
  info = self->in_info;
  settings = self->settings;
  want_bpd = self->bits_per_dim;
  GST_OBJECT_UNLOCK (self);
  frame = self->frame_count++;

  if (!gst_video_frame_map (&vframe, &info, inbuf, GST_MAP_READ))
    goto map_in_failed;
  x = g_new (gfloat, D);
  gst_scoresde_video_frame_to_planar (&vframe, m->channels, m->centered, x);
  gst_video_frame_unmap (&vframe);

  if (!gst_buffer_map (outbuf, &map, GST_MAP_WRITE)) {
    g_free (x);
    goto map_out_failed;
  }
  if (map.size < D * sizeof (gfloat)) {
    gst_buffer_unmap (outbuf, &map);
    g_free (x);
    goto map_out_failed;
  }

  self->slot.progress.pts = GST_BUFFER_PTS (inbuf);
  self->slot.progress.frame = frame;
  gst_scoresde_sampler_settings_to_params (&settings, &self->slot.progress, &p);
  status = sde_encode (m, &model->sde, &p, 1, x, (float *) map.data, &stats);
  if (status == SDE_OK)
    gst_scoresde_element_check_finite (GST_ELEMENT (self),
        (const gfloat *) map.data, D, frame, "the latent",
        "they are passed on as they are");
  gst_buffer_unmap (outbuf, &map);

  if (status == SDE_OK && want_bpd) {
    sde_likelihood_params lp;

    sde_likelihood_params_init (&lp);
    lp.rtol = settings.rtol;
    lp.atol = settings.atol;
    lp.seed = settings.seed;
    lp.progress = gst_scoresde_progress_func;
    lp.user = &self->slot.progress;
    /* back to [0,1] pixels / 255, then uniform dequantisation into model space */
    if (m->centered) {
      gsize i;
      for (i = 0; i < D; i++)
        x[i] = (x[i] + 1.0f) * 0.5f;
    }
    sde_dequantize (m, settings.seed, frame, 1, x);
    status = sde_likelihood (m, &model->sde, &lp, 1, frame, x, &logp, NULL,
        &lstats);
    if (status == SDE_OK)
      bpd = sde_bits_per_dim (logp, (int64_t) D, sde_dequant_offset (m));
  }
  g_free (x);
  if (status != SDE_OK)
    return GST_SCORESDE_ELEMENT_ENGINE_ERROR (self, status,
        "Encoding a frame failed");

  meta = gst_buffer_add_scoresde_latent_meta (outbuf);
  meta->seed = settings.seed;
  meta->frame = frame;
  meta->nfe = stats.nfe + lstats.nfe;
  meta->t = SDE_T;
  meta->bits_per_dim = bpd;
  meta->logp = logp;
  meta->video_width = GST_VIDEO_INFO_WIDTH (&info);
  meta->video_height = GST_VIDEO_INFO_HEIGHT (&info);
  meta->video_format = GST_VIDEO_INFO_FORMAT (&info);

  GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT " encoded, NFE %"
      G_GINT64_FORMAT ", bits/dim %f", frame, meta->nfe, bpd);
  return GST_FLOW_OK;

  /* ERRORS */
map_in_failed:
  {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (NULL),
        ("Could not map the input frame"));
    return GST_FLOW_ERROR;
  }
map_out_failed:
  {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (NULL),
        ("Could not map the output latent of %" G_GSIZE_FORMAT " floats", D));
    return GST_FLOW_ERROR;
  }
}
