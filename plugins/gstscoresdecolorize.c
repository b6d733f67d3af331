/* gst-scoresde: score-based generative modelling through SDEs for GStreamer
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */

/**
 * SECTION:element-scoresdecolorize
 * @title: scoresdecolorize
 *
 * Colorizes grayscale video frame by frame with a score-based model of 3-channel
 * images: the sampler holds the luminance coordinate of the orthogonal colour
 * transform (`sde_color_decouple`) at the input's value and samples the two chroma
 * coordinates (Song et al. 2021, controllable generation). The default few-step
 * solver (#GstScoreSdeColorize:sampler dpmpp-2m, 15 network evaluations) puts the
 * luminance into every data prediction; sampler=pc runs the predictor-corrector
 * sampler and re-noises it after every update. A gray value is read as the mean of R,
 * G and B, the convention of the engine and the `scoresde colorize` command.
 *
 * Any input size is accepted and the output has the input's size. The gray frame is
 * shrunk to the model's native size with area averaging (or grown bilinearly), the
 * model colours it, then:
 *
 * - with #GstScoreSdeColorize:chroma-only (the default), only the two chroma planes of
 *   the model's result are upsampled bilinearly and recombined with the input's own
 *   full-resolution luminance, so the mean of R, G and B of every output pixel is the
 *   input's gray value (up to rounding). A colour that falls outside [0, 255] is
 *   desaturated towards its gray value until it fits, which keeps hue and luminance;
 * - otherwise the model's RGB result itself is upsampled bilinearly.
 *
 * At the model's native size both modes give the model's result.
 *
 * Should the model's result hold NaN or Inf (a diverging sampler), a warning is posted
 * on the bus and those pixels get the input's gray, the frame composed as with
 * chroma-only: the input's luminance is never lost.
 *
 * With #GstScoreSdeColorize:temporal-seed (the default) every frame uses noise stream 0
 * of #GstScoreSdeColorize:seed, so identical frames get identical colours and the
 * static parts of a video keep theirs; otherwise frame k (counted from 0 since the
 * element started) uses stream k.
 *
 * QoS is disabled by default: one frame costs `steps` model evaluations, so in a live
 * pipeline every frame would arrive late and the base class would drop them all.
 * Set `qos=true` to drop late frames instead of delaying them.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=gray.mp4 ! decodebin ! videoconvert ! \
 *     video/x-raw,format=GRAY8 ! scoresdecolorize ! videoconvert ! \
 *     x264enc ! mp4mux ! filesink location=colour.mp4
 * ]| Colorizes a video with the shipped default model.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <string.h>
#include "gstscoresdecolorize.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_colorize_debug);
#define GST_CAT_DEFAULT gst_scoresde_colorize_debug

#define DEFAULT_TEMPORAL_SEED TRUE
#define DEFAULT_CHROMA_ONLY TRUE
#define DEFAULT_CLIP_DENOISED TRUE
#define DEFAULT_T_START 1.0
#define DEFAULT_CENTER_CHROMA TRUE

enum
{
  PROP_0,
  PROP_MODEL,                   /* + device, cuda-device-id, precision */
  PROP_MODEL_LAST = PROP_MODEL + GST_SCORESDE_N_MODEL_PROPS - 1,
  PROP_SAMPLER_FIRST,           /* seed, sampler, schedule, steps, pc knobs */
  PROP_SAMPLER_LAST = PROP_SAMPLER_FIRST + GST_SCORESDE_N_SAMPLER_PROPS - 1,
  PROP_TEMPORAL_SEED,
  PROP_CHROMA_ONLY,
  PROP_CLIP_DENOISED,
  PROP_T_START,
  PROP_CENTER_CHROMA,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ RGB, RGBA }")));

static void gst_scoresde_colorize_set_property (GObject * object,
    guint prop_id, const GValue * value, GParamSpec * pspec);
static void gst_scoresde_colorize_get_property (GObject * object,
    guint prop_id, GValue * value, GParamSpec * pspec);
static void gst_scoresde_colorize_finalize (GObject * object);
static gboolean gst_scoresde_colorize_model_loaded (GstElement * element,
    GstScoreSdeModel * model);
static GstStateChangeReturn gst_scoresde_colorize_change_state (GstElement *
    element, GstStateChange transition);
static gboolean gst_scoresde_colorize_start (GstBaseTransform * trans);
static gboolean gst_scoresde_colorize_stop (GstBaseTransform * trans);
static GstCaps *gst_scoresde_colorize_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static gboolean gst_scoresde_colorize_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static gboolean gst_scoresde_colorize_set_info (GstVideoFilter * filter,
    GstCaps * incaps, GstVideoInfo * in_info, GstCaps * outcaps,
    GstVideoInfo * out_info);
static GstFlowReturn gst_scoresde_colorize_transform_frame (GstVideoFilter *
    filter, GstVideoFrame * inframe, GstVideoFrame * outframe);

#define gst_scoresde_colorize_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeColorize, gst_scoresde_colorize,
    GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE (scoresdecolorize, "scoresdecolorize",
    GST_RANK_NONE, GST_TYPE_SCORESDE_COLORIZE);

static void
gst_scoresde_colorize_class_init (GstScoreSdeColorizeClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_scoresde_colorize_set_property;
  gobject_class->get_property = gst_scoresde_colorize_get_property;
  gobject_class->finalize = gst_scoresde_colorize_finalize;

  /**
   * GstScoreSdeColorize:model:
   *
   * The model file (.json analytic model or .safetensors network) of 3-channel
   * images; empty selects the shipped default (photo-global-32.safetensors, the
   * photograph colorizer of models/photo-global-32.md).
   */

  /**
   * GstScoreSdeColorize:device:
   *
   * Device to run the model on; with cuda-device-id and precision. auto takes the
   * GPU when this build has CUDA support and one answers, else the CPU (a warning in
   * the log). cuda without a usable GPU fails at start with LIBRARY/INIT.
   */
  gst_scoresde_install_model_properties (gobject_class, PROP_MODEL,
      "Model file (.json or .safetensors) of 3-channel images; empty = the "
      "shipped default (photo-global-32)");

  /**
   * GstScoreSdeColorize:sampler:
   *
   * How the chroma is sampled; with schedule, steps, seed and the PC sampler's
   * predictor, corrector, snr and corrector-steps. The few-step solvers put the
   * input's luminance into every data prediction, pc re-noises it after every
   * update. The noise stream is 0, or the frame number without temporal-seed.
   */
  gst_scoresde_install_sampler_properties (gobject_class, PROP_SAMPLER_FIRST,
      GST_SCORESDE_SAMPLERS_SDE, GST_SCORESDE_DEFAULT_SAMPLER,
      "Seed of the noise (stream 0, or the frame number without "
      "temporal-seed)");

  /**
   * GstScoreSdeColorize:temporal-seed:
   *
   * Every frame draws its noise from stream 0, so identical frames get identical
   * colours and static parts of a video keep theirs. When false, frame k uses stream k.
   */
  g_object_class_install_property (gobject_class, PROP_TEMPORAL_SEED,
      g_param_spec_boolean ("temporal-seed", "Temporal seed",
          "Use the same noise for every frame (stable colours); false: noise "
          "stream = frame number", DEFAULT_TEMPORAL_SEED,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstScoreSdeColorize:chroma-only:
   *
   * Take only the chroma from the model (upsampled to the frame's size) and keep the
   * input's full-resolution luminance. When false, the model's RGB is upsampled.
   */
  g_object_class_install_property (gobject_class, PROP_CHROMA_ONLY,
      g_param_spec_boolean ("chroma-only", "Chroma only",
          "Keep the input's full-resolution luminance and take only the chroma "
          "from the model; false: output the model's RGB, upscaled",
          DEFAULT_CHROMA_ONLY, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstScoreSdeColorize:clip-denoised:
   *
   * With a few-step sampler, clamp every data prediction to the model's data range
   * before the luminance goes in (DDPM's clip_denoised). A prior that has not learnt
   * an image's global colour well predicts it far out of range at high noise, and the
   * solver carries that drift into a saturated cast; clamped, the colours stay
   * plausible (docs/sampling.md#clip-denoised-and-t-start). No effect with sampler=pc.
   */
  g_object_class_install_property (gobject_class, PROP_CLIP_DENOISED,
      g_param_spec_boolean ("clip-denoised", "Clip denoised",
          "Few-step samplers: clamp every data prediction to the data range",
          DEFAULT_CLIP_DENOISED, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstScoreSdeColorize:t-start:
   *
   * With a few-step sampler, start at this time from the gray frame noised to it
   * (SDEdit) instead of from the prior at the SDE's end (1, the paper's method). Smaller
   * values keep the colours nearer the gray and take fewer liberties; the solver's
   * evaluations stay #GstScoreSdeColorize:steps. No effect with sampler=pc.
   */
  g_object_class_install_property (gobject_class, PROP_T_START,
      g_param_spec_double ("t-start", "Start time",
          "Few-step samplers: start from the gray frame noised to this time "
          "(1: from the prior)", 0.01, 1.0, DEFAULT_T_START,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstScoreSdeColorize:center-chroma:
   *
   * Start from noise whose two chroma channels have no mean over the frame. The noise's
   * mean is the one thing a GroupNorm network hardly sees, so with it the frame's
   * overall tint follows the noise draw (a green or magenta cast that differs from seed
   * to seed); without it the tint comes from the model and the picture. FALSE is the
   * paper's prior. On held-out photographs it moves the colorized frames from 11 dB
   * below the gray input's PSNR to within 1 dB of it (docs/sampling.md#center-chroma).
   */
  g_object_class_install_property (gobject_class, PROP_CENTER_CHROMA,
      g_param_spec_boolean ("center-chroma", "Center chroma",
          "Noise without a chroma mean (the start and every fresh draw of a stochastic "
          "sampler): the overall tint comes from the model, not from the noise",
          DEFAULT_CENTER_CHROMA,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  gst_element_class_set_static_metadata (element_class,
      "Score-SDE colorization", "Filter/Effect/Video",
      "Colorizes grayscale video with a score-based generative model",
      "The gst-scoresde authors");

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_scoresde_colorize_change_state);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_colorize_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_colorize_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_scoresde_colorize_transform_caps);
  trans_class->sink_event =
      GST_DEBUG_FUNCPTR (gst_scoresde_colorize_sink_event);

  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_scoresde_colorize_set_info);
  filter_class->transform_frame =
      GST_DEBUG_FUNCPTR (gst_scoresde_colorize_transform_frame);

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_colorize_debug, "scoresdecolorize", 0,
      "score-SDE colorization");
}

static void
gst_scoresde_colorize_init (GstScoreSdeColorize * self)
{
  gst_scoresde_sampler_settings_init (&self->settings);
  self->temporal_seed = DEFAULT_TEMPORAL_SEED;
  self->chroma_only = DEFAULT_CHROMA_ONLY;
  self->clip_denoised = DEFAULT_CLIP_DENOISED;
  self->center_chroma = DEFAULT_CENTER_CHROMA;
  self->t_start = DEFAULT_T_START;
  gst_scoresde_model_slot_init (&self->slot, GST_ELEMENT (self),
      GST_SCORESDE_DEFAULT_COLOR_MODEL_FILE,
      GST_SCORESDE_MODEL_SLOT_LOAD_AT_READY, gst_scoresde_colorize_model_loaded);

  /* A frame costs `steps` model evaluations: with QoS on, a live pipeline would see
   * every frame late and drop them all (GstVideoFilter enables QoS by default). */
  gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (self), FALSE);
}

/* ---- separable resampling ------------------------------------------------------ */

static void
resample_axis_clear (GstScoreSdeResampleAxis * a)
{
  g_clear_pointer (&a->index, g_free);
  g_clear_pointer (&a->weight, g_free);
  a->src = a->dst = a->ntaps = 0;
}

/* Area averaging when shrinking (each destination sample averages the source interval
 * it covers), bilinear with pixel-centre alignment when growing; the identity when the
 * sizes are equal. */
static gboolean
resample_axis_init (GstScoreSdeResampleAxis * a, gint src, gint dst)
{
  gint i, k;

  resample_axis_clear (a);
  a->src = src;
  a->dst = dst;
  a->ntaps = dst < src ? (gint) ceil ((double) src / dst) + 1 : 2;
  a->index = g_try_new0 (gint, (gsize) dst * a->ntaps);
  a->weight = g_try_new0 (gfloat, (gsize) dst * a->ntaps);
  if (a->index == NULL || a->weight == NULL) {
    resample_axis_clear (a);
    return FALSE;
  }

  for (i = 0; i < dst; i++) {
    gint *idx = a->index + (gsize) i * a->ntaps;
    gfloat *w = a->weight + (gsize) i * a->ntaps;

    if (dst < src) {
      double scale = (double) src / dst;
      double x0 = i * scale, x1 = (i + 1) * scale;
      gint first = (gint) floor (x0), n = 0;

      for (k = first; k < src && k < x1 && n < a->ntaps; k++, n++) {
        double lo = MAX (x0, (double) k), hi = MIN (x1, (double) (k + 1));
        idx[n] = k;
        w[n] = (gfloat) ((hi - lo) / scale);
      }
      for (; n < a->ntaps; n++) {
        idx[n] = first;
        w[n] = 0.0f;
      }
    } else {
      double x = (i + 0.5) * src / dst - 0.5;
      gint x0;
      double f;

      if (x < 0.0)
        x = 0.0;
      x0 = (gint) floor (x);
      if (x0 > src - 1)
        x0 = src - 1;
      f = x - x0;
      idx[0] = x0;
      w[0] = (gfloat) (1.0 - f);
      idx[1] = MIN (x0 + 1, src - 1);
      w[1] = (gfloat) f;
    }
  }
  return TRUE;
}

/* out[ay.dst, ax.dst] = resampled in[ay.src, ax.src]; tmp holds ay.src * ax.dst. */
static void
resample_plane (const gfloat * in, gfloat * out, gfloat * tmp,
    const GstScoreSdeResampleAxis * ax, const GstScoreSdeResampleAxis * ay)
{
  gint x, y, k;

  if (ax->src == ax->dst && ay->src == ay->dst) {
    memcpy (out, in, (gsize) ax->src * ay->src * sizeof (gfloat));
    return;
  }
  for (y = 0; y < ay->src; y++) {
    const gfloat *row = in + (gsize) y * ax->src;
    gfloat *dst = tmp + (gsize) y * ax->dst;
    for (x = 0; x < ax->dst; x++) {
      const gint *idx = ax->index + (gsize) x * ax->ntaps;
      const gfloat *w = ax->weight + (gsize) x * ax->ntaps;
      gfloat s = 0.0f;
      for (k = 0; k < ax->ntaps; k++)
        s += w[k] * row[idx[k]];
      dst[x] = s;
    }
  }
  for (y = 0; y < ay->dst; y++) {
    const gint *idx = ay->index + (gsize) y * ay->ntaps;
    const gfloat *w = ay->weight + (gsize) y * ay->ntaps;
    gfloat *dst = out + (gsize) y * ax->dst;
    for (x = 0; x < ax->dst; x++) {
      gfloat s = 0.0f;
      for (k = 0; k < ay->ntaps; k++)
        s += w[k] * tmp[(gsize) idx[k] * ax->dst + x];
      dst[x] = s;
    }
  }
}

/* ---- state --------------------------------------------------------------------- */

static void
gst_scoresde_colorize_free_scratch (GstScoreSdeColorize * self)
{
  resample_axis_clear (&self->down_x);
  resample_axis_clear (&self->down_y);
  resample_axis_clear (&self->up_x);
  resample_axis_clear (&self->up_y);
  g_clear_pointer (&self->gray, g_free);
  g_clear_pointer (&self->full, g_free);
  g_clear_pointer (&self->tmp, g_free);
  g_clear_pointer (&self->small, g_free);
  g_clear_pointer (&self->model_in, g_free);
  g_clear_pointer (&self->model_out, g_free);
  g_clear_pointer (&self->rgb, g_free);
  g_clear_pointer (&self->dec, g_free);
  self->width = self->height = 0;
}

static void
gst_scoresde_colorize_finalize (GObject * object)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (object);

  gst_scoresde_colorize_free_scratch (self);
  gst_scoresde_model_slot_clear (&self->slot);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_scoresde_colorize_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (object);

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
    case PROP_TEMPORAL_SEED:
      self->temporal_seed = g_value_get_boolean (value);
      break;
    case PROP_CHROMA_ONLY:
      self->chroma_only = g_value_get_boolean (value);
      break;
    case PROP_CLIP_DENOISED:
      self->clip_denoised = g_value_get_boolean (value);
      break;
    case PROP_CENTER_CHROMA:
      self->center_chroma = g_value_get_boolean (value);
      break;
    case PROP_T_START:
      self->t_start = g_value_get_double (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_scoresde_colorize_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (object);

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
    case PROP_TEMPORAL_SEED:
      g_value_set_boolean (value, self->temporal_seed);
      break;
    case PROP_CHROMA_ONLY:
      g_value_set_boolean (value, self->chroma_only);
      break;
    case PROP_CLIP_DENOISED:
      g_value_set_boolean (value, self->clip_denoised);
      break;
    case PROP_CENTER_CHROMA:
      g_value_set_boolean (value, self->center_chroma);
      break;
    case PROP_T_START:
      g_value_set_double (value, self->t_start);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* The slot's check of a model just acquired: it must make 3-channel images. */
static gboolean
gst_scoresde_colorize_model_loaded (GstElement * element,
    GstScoreSdeModel * model)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (element);

  if (!model->model->is_image || gst_scoresde_model_channels (model) != 3)
    goto not_rgb;

  GST_INFO_OBJECT (self, "model %s: 3 x %d x %d", model->path,
      gst_scoresde_model_height (model), gst_scoresde_model_width (model));
  return TRUE;

  /* ERRORS */
not_rgb:
  {
    GST_ELEMENT_ERROR (self, LIBRARY, INIT,
        ("scoresdecolorize needs a model of 3-channel images; '%s' has %d "
            "channel(s)%s.", model->path, gst_scoresde_model_channels (model),
            model->model->is_image ? "" : " and is not an image model"),
        (NULL));
    return FALSE;
  }
}

static GstStateChangeReturn
gst_scoresde_colorize_change_state (GstElement * element,
    GstStateChange transition)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (element);

  return gst_scoresde_model_slot_change_state (&self->slot, transition,
      GST_ELEMENT_CLASS (parent_class));
}

static gboolean
gst_scoresde_colorize_start (GstBaseTransform * trans)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (trans);
  GstScoreSdeSamplerSettings settings;

  /* model or device changed in READY: reloaded here */
  if (!gst_scoresde_model_slot_start (&self->slot))
    return FALSE;
  GST_OBJECT_LOCK (self);
  settings = self->settings;
  GST_OBJECT_UNLOCK (self);
  settings.sampler = GST_SCORESDE_SAMPLER_PC;
  if (!gst_scoresde_model_slot_check_sampler (&self->slot, &settings))
    return FALSE;

  self->frame = 0;
  return TRUE;
}

static gboolean
gst_scoresde_colorize_stop (GstBaseTransform * trans)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (trans);

  gst_scoresde_colorize_free_scratch (self);
  return TRUE;
}

/* Same size, rate and aspect on both sides; only the format changes: GRAY8 on the
 * sink pad, RGB or RGBA on the source pad. */
static GstCaps *
gst_scoresde_colorize_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstCaps *ret = gst_caps_new_empty ();
  guint i, n = gst_caps_get_size (caps);

  for (i = 0; i < n; i++) {
    GstStructure *s = gst_structure_copy (gst_caps_get_structure (caps, i));
    GstCapsFeatures *f = gst_caps_get_features (caps, i);

    gst_structure_remove_fields (s, "format", "colorimetry", "chroma-site",
        NULL);
    if (direction == GST_PAD_SINK) {
      GValue list = G_VALUE_INIT, v = G_VALUE_INIT;

      g_value_init (&list, GST_TYPE_LIST);
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_static_string (&v, "RGB");
      gst_value_list_append_value (&list, &v);
      g_value_set_static_string (&v, "RGBA");
      gst_value_list_append_value (&list, &v);
      gst_structure_take_value (s, "format", &list);
      g_value_unset (&v);
    } else {
      gst_structure_set (s, "format", G_TYPE_STRING, "GRAY8", NULL);
    }
    ret = gst_caps_merge_structure_full (ret, s,
        f != NULL ? gst_caps_features_copy (f) : NULL);
  }

  if (filter != NULL) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_DEBUG_OBJECT (trans, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

static gboolean
gst_scoresde_colorize_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (trans);

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
gst_scoresde_colorize_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (filter);
  gint fw, fh, mw, mh;
  gsize full, small, tmp;
  gboolean ok;

  if (self->slot.model == NULL)
    return FALSE;

  gst_scoresde_colorize_free_scratch (self);
  fw = GST_VIDEO_INFO_WIDTH (in_info);
  fh = GST_VIDEO_INFO_HEIGHT (in_info);
  mw = gst_scoresde_model_width (self->slot.model);
  mh = gst_scoresde_model_height (self->slot.model);
  full = ((gsize) fw) * fh;
  small = ((gsize) mw) * mh;
  /* intermediate rows: fh x mw going down, mh x fw going up */
  tmp = MAX ((gsize) fh * mw, (gsize) mh * fw);

  ok = resample_axis_init (&self->down_x, fw, mw)
      && resample_axis_init (&self->down_y, fh, mh)
      && resample_axis_init (&self->up_x, mw, fw)
      && resample_axis_init (&self->up_y, mh, fh);
  self->gray = g_try_new (gfloat, full);
  self->full = g_try_new (gfloat, 3 * full);
  self->tmp = g_try_new (gfloat, tmp);
  self->small = g_try_new (gfloat, small);
  self->model_in = g_try_new (gfloat, 3 * small);
  self->model_out = g_try_new (gfloat, 3 * small);
  self->rgb = g_try_new (gfloat, 3 * small);
  self->dec = g_try_new (gfloat, 3 * small);
  if (!ok || !self->gray || !self->full || !self->tmp || !self->small
      || !self->model_in || !self->model_out || !self->rgb || !self->dec)
    goto no_memory;

  self->width = fw;
  self->height = fh;
  GST_DEBUG_OBJECT (self, "%dx%d GRAY8 -> %s, model %dx%d", fw, fh,
      gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (out_info)), mw, mh);
  return TRUE;

  /* ERRORS */
no_memory:
  {
    gst_scoresde_colorize_free_scratch (self);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Out of memory allocating the colorization buffers for %dx%d frames.",
            fw, fh), (NULL));
    return FALSE;
  }
}

static inline guint8
to_u8 (gfloat v)
{
  if (!(v > 0.0f))              /* also NaN */
    return 0;
  if (v >= 1.0f)
    return 255;
  return (guint8) lrintf (v * 255.0f);
}

/* Brings every pixel of rgb[3, n] into [0,1] without changing its mean (the input's
 * gray value): the chroma offset from gray is scaled down just enough, which keeps
 * the hue and the luminance and lowers only the saturation. */
static void
fit_gamut (gfloat * rgb, const gfloat * gray, gsize n)
{
  gsize i;
  gint c;

  for (i = 0; i < n; i++) {
    gfloat m = CLAMP (gray[i], 0.0f, 1.0f), scale = 1.0f;

    for (c = 0; c < 3; c++) {
      gfloat off = rgb[c * n + i] - m;
      if (off > 0.0f && m + off > 1.0f)
        scale = MIN (scale, (1.0f - m) / off);
      else if (off < 0.0f && m + off < 0.0f)
        scale = MIN (scale, m / -off);
    }
    if (scale < 1.0f)
      for (c = 0; c < 3; c++)
        rgb[c * n + i] = m + scale * (rgb[c * n + i] - m);
  }
}

/* A pixel of rgb[3, n] with a NaN or Inf becomes its gray value: no colour, but the
 * luminance of the input is never lost. */
static void
keep_gray_where_not_finite (gfloat * rgb, const gfloat * gray, gsize n)
{
  gsize i;

  for (i = 0; i < n; i++)
    if (!isfinite (rgb[i]) || !isfinite (rgb[n + i]) || !isfinite (rgb[2 * n + i]))
      rgb[i] = rgb[n + i] = rgb[2 * n + i] = gray[i];
}

static GstFlowReturn
gst_scoresde_colorize_transform_frame (GstVideoFilter * filter,
    GstVideoFrame * inframe, GstVideoFrame * outframe)
{
  GstScoreSdeColorize *self = GST_SCORESDE_COLORIZE (filter);
  const GstScoreSdeModel *model = self->slot.model;
  GstScoreSdeSamplerSettings settings;
  gboolean temporal_seed, chroma_only, clip_denoised, center_chroma, centered;
  gdouble t_start;
  sde_sample_params params;
  sde_stats stats;
  guint64 stream;
  gint fw, fh, x, y, c, rc, pstride, stride;
  gsize mhw, fhw, i;
  const guint8 *src;
  guint8 *dst;

  if (self->gray == NULL)
    return GST_FLOW_NOT_NEGOTIATED;

  fw = self->width;
  fh = self->height;
  fhw = ((gsize) fw) * fh;
  mhw = gst_scoresde_model_dim (model) / 3;
  centered = model->model->centered;

  GST_OBJECT_LOCK (self);
  settings = self->settings;
  temporal_seed = self->temporal_seed;
  chroma_only = self->chroma_only;
  clip_denoised = self->clip_denoised;
  center_chroma = self->center_chroma;
  t_start = self->t_start;
  GST_OBJECT_UNLOCK (self);
  stream = temporal_seed ? 0 : self->frame;

  /* gray in [0,1] at the frame's size, then at the model's */
  src = GST_VIDEO_FRAME_PLANE_DATA (inframe, 0);
  stride = GST_VIDEO_FRAME_PLANE_STRIDE (inframe, 0);
  for (y = 0; y < fh; y++)
    for (x = 0; x < fw; x++)
      self->gray[(gsize) y * fw + x] = src[(gsize) y * stride + x] / 255.0f;
  resample_plane (self->gray, self->small, self->tmp, &self->down_x,
      &self->down_y);
  for (i = 0; i < mhw; i++) {
    gfloat v = centered ? 2.0f * self->small[i] - 1.0f : self->small[i];
    self->model_in[i] = self->model_in[mhw + i] = self->model_in[2 * mhw + i] =
        v;
  }

  memset (&stats, 0, sizeof stats);
  gst_scoresde_sampler_settings_to_params (&settings, &self->slot.progress, &params);
  params.clip_denoised = clip_denoised;        /* pc ignores it */
  params.center_chroma = center_chroma;
  if (sde_sampler_is_fewstep (params.sampler))
    params.t_start = t_start;                  /* pc refuses a start below T */
  self->slot.progress.pts = GST_BUFFER_PTS (inframe->buffer);
  self->slot.progress.frame = self->frame;
  rc = sde_colorize (model->model, &model->sde, &params, 1, stream,
      self->model_in, self->model_out, &stats);
  if (rc != SDE_OK)
    return GST_SCORESDE_ELEMENT_ENGINE_ERROR (self, rc, "colorization");
  GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT " (stream %"
      G_GUINT64_FORMAT "): NFE %" G_GINT64_FORMAT, self->frame, stream,
      (gint64) stats.nfe);

  for (i = 0; i < 3 * mhw; i++)
    self->rgb[i] = centered ? (self->model_out[i] + 1.0f) * 0.5f :
        self->model_out[i];
  if (gst_scoresde_element_check_finite (GST_ELEMENT (self), self->rgb,
          3 * mhw, self->frame, "the colours",
          "those pixels keep the input's gray")) {
    /* and the frame is composed on the input's own luminance, whatever the mode */
    keep_gray_where_not_finite (self->rgb, self->small, mhw);
    chroma_only = TRUE;
  }

  if (chroma_only) {
    /* luminance of a gray value g: g times the column sum of the decoupling matrix */
    const gfloat lum = sde_color_decouple[0][0] + sde_color_decouple[1][0] +
        sde_color_decouple[2][0];

    sde_color_transform (1, (int64_t) mhw, self->rgb, self->dec, 0);
    for (i = 0; i < fhw; i++)
      self->full[i] = lum * self->gray[i];
    for (c = 1; c < 3; c++)
      resample_plane (self->dec + c * mhw, self->full + c * fhw, self->tmp,
          &self->up_x, &self->up_y);
    sde_color_transform (1, (int64_t) fhw, self->full, self->full, 1);
    fit_gamut (self->full, self->gray, fhw);
  } else {
    for (c = 0; c < 3; c++)
      resample_plane (self->rgb + c * mhw, self->full + c * fhw, self->tmp,
          &self->up_x, &self->up_y);
  }

  dst = GST_VIDEO_FRAME_PLANE_DATA (outframe, 0);
  stride = GST_VIDEO_FRAME_PLANE_STRIDE (outframe, 0);
  pstride = GST_VIDEO_FRAME_COMP_PSTRIDE (outframe, 0);
  for (y = 0; y < fh; y++) {
    guint8 *row = dst + (gsize) y * stride;
    for (x = 0; x < fw; x++) {
      gsize k = (gsize) y * fw + x;
      guint8 *p = row + (gsize) x * pstride;
      p[0] = to_u8 (self->full[k]);
      p[1] = to_u8 (self->full[fhw + k]);
      p[2] = to_u8 (self->full[2 * fhw + k]);
      if (pstride == 4)
        p[3] = 255;
    }
  }

  self->frame++;
  return GST_FLOW_OK;
}
