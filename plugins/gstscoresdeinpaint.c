/* gst-scoresde: score-based generative modelling through SDEs for GStreamer
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */

/**
 * SECTION:element-scoresdeinpaint
 * @title: scoresdeinpaint
 *
 * Fills the unknown pixels of every RGBA frame with a score-based model while the known
 * pixels are held to the frame (Song et al. 2021, controllable generation). The
 * few-step solvers put the known pixels into every data prediction; the default,
 * #GstScoreSdeInpaint:sampler dpmpp-2m-sde at 15 network evaluations, is stochastic,
 * and its noise blends the fill with the known part better than the deterministic
 * solvers do (docs/BENCHMARKS.md). sampler=pc runs the predictor-corrector sampler of
 * the reverse-time SDE and re-noises the known pixels to the current time after every
 * update.
 *
 * The mask is the alpha channel: pixels whose alpha is 0 are filled, every other pixel
 * is known and is passed through unchanged. Alternatively
 * #GstScoreSdeInpaint:mask-location names a PNG mask of the model's size (white, or any
 * value of at least mid-gray, = known) that is applied to every frame; the frames'
 * alpha is then ignored. The output alpha is 255.
 *
 * Frames are processed at the model's native size; other sizes are refused at
 * negotiation, with a warning that says so (put `videoscale` in front), nothing is
 * rescaled silently. A filled region with NaN or Inf (a diverging sampler) is drawn
 * black and reported by a warning on the bus. A 1-channel
 * model fills with gray (the mean of R, G and B); a 4-channel model needs
 * #GstScoreSdeInpaint:mask-location because its alpha is data.
 *
 * Frame k (counted from 0 since the element started) uses noise stream k of
 * #GstScoreSdeInpaint:seed, so a run is reproducible frame by frame.
 *
 * QoS is disabled by default: one frame costs `steps` model evaluations, so in a live
 * pipeline every frame would arrive late and the base class would drop them all.
 * Set `qos=true` to drop late frames instead of delaying them.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=shape.png ! pngdec ! videoconvert ! \
 *     video/x-raw,format=RGBA ! scoresdeinpaint mask-location=mask.png ! \
 *     videoconvert ! pngenc ! filesink location=filled.png
 * ]| Fills the black part of mask.png in shape.png with the shipped default model.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include "gstscoresdeinpaint.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_inpaint_debug);
#define GST_CAT_DEFAULT gst_scoresde_inpaint_debug

#define DEFAULT_MASK_LOCATION NULL
/* the stochastic solver: its noise blends the filled part with the known one (the
 * deterministic ones leave seams; docs/BENCHMARKS.md) */
#define DEFAULT_SAMPLER GST_SCORESDE_SAMPLER_DPMPP_2M_SDE

enum
{
  PROP_0,
  PROP_MODEL,                   /* + device, cuda-device-id, precision */
  PROP_MODEL_LAST = PROP_MODEL + GST_SCORESDE_N_MODEL_PROPS - 1,
  PROP_MASK_LOCATION,
  PROP_SAMPLER_FIRST,           /* seed, sampler, schedule, steps, pc knobs */
  PROP_SAMPLER_LAST = PROP_SAMPLER_FIRST + GST_SCORESDE_N_SAMPLER_PROPS - 1,
};

#define INPAINT_CAPS GST_VIDEO_CAPS_MAKE ("RGBA")

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (INPAINT_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (INPAINT_CAPS));

static void gst_scoresde_inpaint_set_property (GObject * object,
    guint prop_id, const GValue * value, GParamSpec * pspec);
static void gst_scoresde_inpaint_get_property (GObject * object,
    guint prop_id, GValue * value, GParamSpec * pspec);
static void gst_scoresde_inpaint_finalize (GObject * object);
static gboolean gst_scoresde_inpaint_model_loaded (GstElement * element,
    GstScoreSdeModel * model);
static GstStateChangeReturn gst_scoresde_inpaint_change_state (GstElement *
    element, GstStateChange transition);
static gboolean gst_scoresde_inpaint_start (GstBaseTransform * trans);
static gboolean gst_scoresde_inpaint_stop (GstBaseTransform * trans);
static GstCaps *gst_scoresde_inpaint_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static gboolean gst_scoresde_inpaint_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static gboolean gst_scoresde_inpaint_set_info (GstVideoFilter * filter,
    GstCaps * incaps, GstVideoInfo * in_info, GstCaps * outcaps,
    GstVideoInfo * out_info);
static GstFlowReturn gst_scoresde_inpaint_transform_frame (GstVideoFilter *
    filter, GstVideoFrame * inframe, GstVideoFrame * outframe);

#define gst_scoresde_inpaint_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeInpaint, gst_scoresde_inpaint, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE (scoresdeinpaint, "scoresdeinpaint",
    GST_RANK_NONE, GST_TYPE_SCORESDE_INPAINT);

static void
gst_scoresde_inpaint_class_init (GstScoreSdeInpaintClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_scoresde_inpaint_set_property;
  gobject_class->get_property = gst_scoresde_inpaint_get_property;
  gobject_class->finalize = gst_scoresde_inpaint_finalize;

  /**
   * GstScoreSdeInpaint:model:
   *
   * The model file (.json analytic model or .safetensors network); empty selects the
   * shipped default (fashion-mnist-32.safetensors).
   */

  /**
   * GstScoreSdeInpaint:device:
   *
   * Device to run the model on; with cuda-device-id and precision. auto takes the
   * GPU when this build has CUDA support and one answers, else the CPU (a warning in
   * the log). cuda without a usable GPU fails at start with LIBRARY/INIT.
   */
  gst_scoresde_install_model_properties (gobject_class, PROP_MODEL,
      "Model file (.json or .safetensors); empty = the shipped default "
      "(fashion-mnist-32)");

  /**
   * GstScoreSdeInpaint:mask-location:
   *
   * A PNG mask of the model's size applied to every frame: white (any value of at
   * least mid-gray) = known, black = fill. A PNG with transparent pixels is read from its alpha
   * instead (transparent = fill). Empty: the frames' alpha channel is the mask
   * (alpha 0 = fill).
   */
  g_object_class_install_property (gobject_class, PROP_MASK_LOCATION,
      g_param_spec_string ("mask-location", "Mask location",
          "PNG mask at the model's size, white (>= mid-gray) = known, black = fill; "
          "empty = use the frames' alpha (0 = fill)",
          DEFAULT_MASK_LOCATION, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));

  /**
   * GstScoreSdeInpaint:sampler:
   *
   * How the unknown pixels are sampled; with schedule, steps, seed and the PC
   * sampler's predictor, corrector, snr and corrector-steps. The few-step solvers
   * put the known pixels into every data prediction, pc re-noises them after every
   * update. The default is the stochastic dpmpp-2m-sde. Frame k uses noise stream k
   * of the seed.
   */
  gst_scoresde_install_sampler_properties (gobject_class, PROP_SAMPLER_FIRST,
      GST_SCORESDE_SAMPLERS_SDE, DEFAULT_SAMPLER,
      "Seed of the noise; frame k uses noise stream k");

  gst_element_class_set_static_metadata (element_class,
      "Score-SDE inpainting", "Filter/Effect/Video",
      "Fills the pixels whose alpha is 0 (or a static mask) with a score-based "
      "generative model", "The gst-scoresde authors");

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_change_state);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_transform_caps);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_sink_event);

  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_set_info);
  filter_class->transform_frame =
      GST_DEBUG_FUNCPTR (gst_scoresde_inpaint_transform_frame);

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_inpaint_debug, "scoresdeinpaint", 0,
      "score-SDE inpainting");
}

static void
gst_scoresde_inpaint_init (GstScoreSdeInpaint * self)
{
  self->mask_location = g_strdup (DEFAULT_MASK_LOCATION);
  gst_scoresde_sampler_settings_init (&self->settings);
  self->settings.sampler = DEFAULT_SAMPLER;
  gst_scoresde_model_slot_init (&self->slot, GST_ELEMENT (self), NULL,
      GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY | GST_SCORESDE_MODEL_SLOT_VIDEO,
      gst_scoresde_inpaint_model_loaded);

  /* A frame costs `steps` model evaluations: with QoS on, a live pipeline would see
   * every frame late and drop them all (GstVideoFilter enables QoS by default). */
  gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (self), FALSE);
}

static void
gst_scoresde_inpaint_free_scratch (GstScoreSdeInpaint * self)
{
  g_clear_pointer (&self->data, g_free);
  g_clear_pointer (&self->mask, g_free);
  g_clear_pointer (&self->result, g_free);
}

static void
gst_scoresde_inpaint_finalize (GObject * object)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (object);

  gst_scoresde_inpaint_free_scratch (self);
  g_clear_pointer (&self->static_mask, g_free);
  gst_scoresde_model_slot_clear (&self->slot);
  g_free (self->mask_location);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_scoresde_inpaint_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (object);

  /* model, device, mask-location, n-frames...: never half-applied while running */
  if (!gst_scoresde_property_settable (GST_ELEMENT (object), pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL ... PROP_MODEL_LAST:
      gst_scoresde_model_slot_set_property (&self->slot, prop_id - PROP_MODEL,
          value);
      break;
    case PROP_MASK_LOCATION:
      g_free (self->mask_location);
      self->mask_location = g_value_dup_string (value);
      self->slot.reload = TRUE;       /* the mask is read with the model */
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
gst_scoresde_inpaint_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL ... PROP_MODEL_LAST:
      gst_scoresde_model_slot_get_property (&self->slot, prop_id - PROP_MODEL,
          value);
      break;
    case PROP_MASK_LOCATION:
      g_value_set_string (value, self->mask_location);
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

/* Reads the PNG mask into self->static_mask [H*W] (1 = known). */
static gboolean
gst_scoresde_inpaint_load_mask (GstScoreSdeInpaint * self, const gchar * path)
{
  gint mw = gst_scoresde_model_width (self->slot.model);
  gint mh = gst_scoresde_model_height (self->slot.model);
  gfloat *png = NULL;
  gint c, h, w, ch, i, mhw;
  gboolean use_alpha;
  int rc;

  /* a mask larger than the model is refused from its header, before decoding */
  rc = sde_png_read_max (path, 0, mh, mw, &png, &c, &h, &w);
  if (rc != SDE_OK) {
    if (rc == SDE_EIO)
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
          ("Could not read the mask '%s'.", path), ("%s", sde_errmsg ()));
    else if (rc == SDE_ENOMEM)
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("Out of memory reading the mask '%s'.", path), ("%s",
              sde_errmsg ()));
    else
      GST_ELEMENT_ERROR (self, RESOURCE, READ,
          ("The mask '%s' cannot be used: %s", path, sde_errmsg ()), (NULL));
    return FALSE;
  }
  if (h != mh || w != mw) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The mask '%s' is %dx%d but the model works at %dx%d.", path, w, h,
            mw, mh), (NULL));
    free (png);
    return FALSE;
  }

  mhw = h * w;
  self->static_mask = g_try_new (gfloat, mhw);
  if (self->static_mask == NULL) {
    free (png);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Out of memory reading the mask '%s'.", path), (NULL));
    return FALSE;
  }
  /* A mask with transparent pixels is read from its alpha (transparent = fill), as the
   * scoresde CLI reads RGBA masks; otherwise a colour value of at least mid-gray marks
   * a known pixel (not any non-zero value: masks drawn through videoconvert carry
   * video-range black, 16). */
  use_alpha = FALSE;
  if (c == 4)
    for (i = 0; i < mhw && !use_alpha; i++)
      use_alpha = png[3 * mhw + i] <= 0.0f;
  for (i = 0; i < mhw; i++) {
    gboolean known = FALSE;
    if (use_alpha) {
      known = png[3 * mhw + i] > 0.0f;
    } else {
      for (ch = 0; ch < MIN (c, 3); ch++)
        known |= png[ch * mhw + i] >= 0.5f;
    }
    self->static_mask[i] = known ? 1.0f : 0.0f;
  }
  free (png);
  GST_DEBUG_OBJECT (self, "loaded the %dx%d mask %s", w, h, path);
  return TRUE;
}

/* The slot's check of a model just acquired: reads the static mask. */
static gboolean
gst_scoresde_inpaint_model_loaded (GstElement * element,
    GstScoreSdeModel * model)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (element);
  gchar *mask_location;
  gboolean ok = FALSE;
  gint channels;

  GST_OBJECT_LOCK (self);
  mask_location = g_strdup (self->mask_location);
  GST_OBJECT_UNLOCK (self);
  g_clear_pointer (&self->static_mask, g_free);

  if (!model->model->is_image) {
    GST_ELEMENT_ERROR (self, LIBRARY, INIT,
        ("scoresdeinpaint needs a model of images; '%s' models vectors of %"
            G_GSIZE_FORMAT " values.", model->path,
            gst_scoresde_model_dim (model)), (NULL));
    goto done;
  }

  channels = gst_scoresde_model_channels (model);
  if (mask_location != NULL && mask_location[0] != '\0') {
    if (!gst_scoresde_inpaint_load_mask (self, mask_location))
      goto done;
  } else if (channels == 4) {
    GST_ELEMENT_ERROR (self, LIBRARY, SETTINGS,
        ("The model '%s' has 4 channels, so the alpha channel cannot be the mask; "
            "set mask-location.", model->path), (NULL));
    goto done;
  }

  GST_INFO_OBJECT (self, "model %s: %d x %d x %d", model->path, channels,
      gst_scoresde_model_height (model), gst_scoresde_model_width (model));
  ok = TRUE;
done:
  g_free (mask_location);
  return ok;
}

static GstStateChangeReturn
gst_scoresde_inpaint_change_state (GstElement * element,
    GstStateChange transition)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (element);

  return gst_scoresde_model_slot_change_state (&self->slot, transition,
      GST_ELEMENT_CLASS (parent_class));
}

static gboolean
gst_scoresde_inpaint_start (GstBaseTransform * trans)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (trans);
  GstScoreSdeSamplerSettings settings;

  /* model, device or mask-location changed in READY: reloaded here */
  if (!gst_scoresde_model_slot_start (&self->slot))
    return FALSE;
  GST_OBJECT_LOCK (self);
  settings = self->settings;
  GST_OBJECT_UNLOCK (self);
  settings.sampler = GST_SCORESDE_SAMPLER_PC;
  if (!gst_scoresde_model_slot_check_sampler (&self->slot, &settings))
    return FALSE;

  self->frame = 0;
  g_atomic_int_set (&self->size_explained, FALSE);
  return TRUE;
}

static gboolean
gst_scoresde_inpaint_stop (GstBaseTransform * trans)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (trans);

  gst_scoresde_inpaint_free_scratch (self);
  return TRUE;
}

/* Caps of one other size than the model's cannot be inpainted: a warning says why
 * before the negotiation fails (which alone reports only not-negotiated). Once per
 * start, as negotiation asks more than once. */
static void
gst_scoresde_inpaint_explain_size (GstScoreSdeInpaint * self, GstCaps * caps,
    gint width, gint height)
{
  const GstStructure *s;
  gint w, h;

  if (gst_caps_is_empty (caps) || gst_caps_is_any (caps)
      || g_atomic_int_get (&self->size_explained))
    return;
  s = gst_caps_get_structure (caps, 0);
  if (!gst_structure_get_int (s, "width", &w)
      || !gst_structure_get_int (s, "height", &h) || (w == width && h == height))
    return;
  g_atomic_int_set (&self->size_explained, TRUE);
  GST_ELEMENT_WARNING (self, CORE, NEGOTIATION,
      ("scoresdeinpaint works at the model's size %dx%d and cannot take %dx%d "
          "frames; put videoscale in front.", width, height, w, h), (NULL));
}

static GstCaps *
gst_scoresde_inpaint_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (trans);
  GstCaps *ret;
  gint width = 0, height = 0;

  GST_OBJECT_LOCK (self);
  if (self->slot.model != NULL) {
    width = gst_scoresde_model_width (self->slot.model);
    height = gst_scoresde_model_height (self->slot.model);
  }
  GST_OBJECT_UNLOCK (self);

  /* Same caps on both sides, restricted to the model's native size once the model is
   * known: other sizes fail negotiation instead of being rescaled. */
  if (width > 0) {
    GstCaps *native = gst_caps_new_simple ("video/x-raw",
        "width", G_TYPE_INT, width, "height", G_TYPE_INT, height, NULL);
    ret = gst_caps_intersect_full (caps, native, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (native);
  } else {
    ret = gst_caps_ref (caps);
  }

  if (filter != NULL) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  if (width > 0 && gst_caps_is_empty (ret))
    gst_scoresde_inpaint_explain_size (self, caps, width, height);
  GST_DEBUG_OBJECT (self, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

static gboolean
gst_scoresde_inpaint_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      /* arrives outside the streaming thread: stop the running sampler */
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

static gboolean
gst_scoresde_inpaint_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (filter);
  gsize dim;

  if (self->slot.model == NULL)
    return FALSE;
  if (GST_VIDEO_INFO_WIDTH (in_info) != gst_scoresde_model_width (self->slot.model)
      || GST_VIDEO_INFO_HEIGHT (in_info) !=
      gst_scoresde_model_height (self->slot.model))
    goto wrong_size;

  gst_scoresde_inpaint_free_scratch (self);
  dim = gst_scoresde_model_dim (self->slot.model);
  self->data = g_try_new (gfloat, dim);
  self->mask = g_try_new (gfloat, dim);
  self->result = g_try_new (gfloat, dim);
  if (self->data == NULL || self->mask == NULL || self->result == NULL)
    goto no_memory;
  return TRUE;

  /* ERRORS */
wrong_size:
  {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("scoresdeinpaint works at the model's size %dx%d, got %dx%d; put "
            "videoscale in front.", gst_scoresde_model_width (self->slot.model),
            gst_scoresde_model_height (self->slot.model),
            GST_VIDEO_INFO_WIDTH (in_info), GST_VIDEO_INFO_HEIGHT (in_info)),
        (NULL));
    return FALSE;
  }
no_memory:
  {
    gst_scoresde_inpaint_free_scratch (self);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Out of memory allocating the inpainting buffers."), (NULL));
    return FALSE;
  }
}

static GstFlowReturn
gst_scoresde_inpaint_transform_frame (GstVideoFilter * filter,
    GstVideoFrame * inframe, GstVideoFrame * outframe)
{
  GstScoreSdeInpaint *self = GST_SCORESDE_INPAINT (filter);
  const GstScoreSdeModel *model = self->slot.model;
  GstScoreSdeSamplerSettings settings;
  sde_sample_params params;
  sde_stats stats;
  gint mc, mw, mh, x, y, c;
  gsize mhw, i, known = 0;
  gint rc;

  if (self->data == NULL)
    return GST_FLOW_NOT_NEGOTIATED;

  mc = gst_scoresde_model_channels (model);
  mw = gst_scoresde_model_width (model);
  mh = gst_scoresde_model_height (model);
  mhw = ((gsize) mw) * mh;

  GST_OBJECT_LOCK (self);
  settings = self->settings;
  GST_OBJECT_UNLOCK (self);

  gst_scoresde_video_frame_to_planar (inframe, mc, model->model->centered,
      self->data);
  if (self->static_mask != NULL) {
    memcpy (self->mask, self->static_mask, mhw * sizeof (gfloat));
  } else {
    gst_scoresde_video_frame_get_alpha (inframe, self->mask);
    for (i = 0; i < mhw; i++)
      self->mask[i] = self->mask[i] > 0.0f ? 1.0f : 0.0f;
  }
  for (i = 0; i < mhw; i++)
    known += self->mask[i] > 0.0f;
  for (c = 1; c < mc; c++)
    memcpy (self->mask + c * mhw, self->mask, mhw * sizeof (gfloat));

  if (known == mhw) {
    /* nothing to fill */
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": fully known",
        self->frame);
    memcpy (self->result, self->data, (gsize) mc * mhw * sizeof (gfloat));
  } else {
    memset (&stats, 0, sizeof stats);
    gst_scoresde_sampler_settings_to_params (&settings, &self->slot.progress,
        &params);
    self->slot.progress.pts = GST_BUFFER_PTS (inframe->buffer);
    self->slot.progress.frame = self->frame;
    GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": filling %"
        G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " pixels", self->frame,
        mhw - known, mhw);
    rc = sde_inpaint (model->model, &model->sde, &params, 1, self->frame,
        self->data, self->mask, self->result, &stats);
    if (rc != SDE_OK)
      return GST_SCORESDE_ELEMENT_ENGINE_ERROR (self, rc, "inpainting");
    /* the known pixels are copied from the input below, whatever the result */
    gst_scoresde_element_check_finite (GST_ELEMENT (self), self->result,
        (gsize) mc * mhw, self->frame, "the filled frame",
        "those pixels are drawn black");
    GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": NFE %" G_GINT64_FORMAT
        ", %.3f s", self->frame, (gint64) stats.nfe, stats.seconds);
  }

  gst_scoresde_video_frame_from_planar (outframe, self->result, mc,
      model->model->centered);

  /* Known pixels pass through unchanged (the sampler holds them only up to the
   * SDE's mean coefficient at eps and 8-bit rounding); the alpha becomes 255 unless
   * the model's own alpha was generated. */
  {
    const guint8 *src = GST_VIDEO_FRAME_PLANE_DATA (inframe, 0);
    guint8 *dst = GST_VIDEO_FRAME_PLANE_DATA (outframe, 0);
    gint sstride = GST_VIDEO_FRAME_PLANE_STRIDE (inframe, 0);
    gint dstride = GST_VIDEO_FRAME_PLANE_STRIDE (outframe, 0);

    for (y = 0; y < mh; y++) {
      const guint8 *s = src + (gsize) y * sstride;
      guint8 *d = dst + (gsize) y * dstride;
      for (x = 0; x < mw; x++) {
        if (self->mask[(gsize) y * mw + x] > 0.0f)
          memcpy (d + 4 * x, s + 4 * x, mc == 4 ? 4 : 3);
        if (mc != 4)
          d[4 * x + 3] = 255;
      }
    }
  }

  self->frame++;
  return GST_FLOW_OK;
}
