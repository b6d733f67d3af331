/* GStreamer score-SDE plugin
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
/**
 * SECTION:element-scoresdesrc
 * @title: scoresdesrc
 *
 * Generates video by sampling a score-based generative model: every frame starts from
 * Gaussian noise keyed by (#GstScoreSdeSrc:seed, frame number) and is denoised by a
 * few-step solver (#GstScoreSdeSrc:sampler, by default dpmpp-2m with 15 network
 * evaluations: a live source on two CPU cores for the shipped model), by the
 * predictor-corrector sampler of the reverse-time SDE or by the probability-flow ODE.
 * Frame k is a pure function of the model, the seed, the sampler settings and k, so a
 * seek to frame k reproduces it and two runs with one seed give identical bytes.
 *
 * Frames come at the model's native size (users put `videoscale` behind) in GRAY8, RGB
 * or RGBA; the format matching the model's channels is preferred.
 *
 * With #GstScoreSdeSrc:walk-frames N > 0 the element makes a latent walk: every N
 * frames a new latent is drawn from the prior (keyed by the seed and the keyframe
 * index) and the frames in between decode, with the probability-flow ODE, the
 * spherical interpolation between the two surrounding keyframe latents. The output
 * morphs smoothly and frame k is still a pure function of (seed, k).
 *
 * #GstScoreSdeSrc:batch-size generates up to that many consecutive frames per engine
 * call. Every frame keeps its own noise stream (its frame number), so the output does
 * not depend on the batch size, with one exception inherited from the reference
 * implementation: the Langevin corrector's step size uses norms averaged over the
 * batch, so PC sampling with the langevin corrector differs (slightly) between batch
 * sizes. The few-step samplers, ODE sampling, the latent walk and PC without a
 * corrector (or with ald) are batch-independent.
 *
 * A flush, a seek or a state change cancels a running sampler between two steps.
 *
 * Split renders: #GstScoreSdeSrc:start-frame S makes the stream begin at frame S, with
 * the timestamp S/framerate that frame has in a render from frame 0, and
 * #GstBaseSrc:num-buffers N then ends it after frames S .. S+N-1 (EOS). Because frame k
 * depends only on the settings and k, P processes rendering the ranges [S_i, S_i+N_i)
 * produce exactly the frames of one long render, with continuous timestamps;
 * pipelines/render-split.sh renders a clip that way and joins the pieces without
 * re-encoding (docs/scale.md). Frame k keeps timestamp k/framerate under seeks too: a
 * seek to time T goes to frame T·framerate whatever start-frame says.
 *
 * When #GstBaseSrc:is-live is set, the LATENCY query reports one frame duration until
 * the first frame has been generated, then the larger of one frame duration and the
 * longest generation time of one frame measured so far; a LATENCY message is posted
 * when that measured time grows beyond what was reported.
 *
 * ## Example launch lines
 * |[
 * gst-launch-1.0 scoresdesrc is-live=true ! video/x-raw,framerate=10/1 ! videoconvert ! videoscale ! video/x-raw,width=256,height=256 ! autovideosink
 * ]| Live samples of the shipped default model at 10 frames per second, dpmpp-2m at 15
 * evaluations a frame (about 50-100 ms on two shared CPU cores; 60-150 ms were measured
 * at 20, the default until 2026-12-05).
 * |[
 * gst-launch-1.0 scoresdesrc num-buffers=16 sampler=pc steps=0 seed=7 ! videoconvert ! pngenc ! multifilesink location=ref_%02d.png
 * ]| The 1000-step predictor-corrector reference, for comparison.
 * |[
 * gst-launch-1.0 scoresdesrc num-buffers=120 walk-frames=30 ! videoscale ! video/x-raw,width=256,height=256 ! videoconvert ! x264enc ! mp4mux ! filesink location=walk.mp4
 * ]| A 4-second latent walk through 5 keyframes, upscaled and encoded.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <scoresde/network.h>
#include "gstscoresdesrc.h"

GST_DEBUG_CATEGORY_STATIC (gst_scoresde_src_debug);
#define GST_CAT_DEFAULT gst_scoresde_src_debug

#define DEFAULT_BATCH_SIZE 1
#define MAX_BATCH_SIZE 256
#define DEFAULT_WALK_FRAMES 0
#define DEFAULT_START_FRAME 0
#define DEFAULT_IS_LIVE FALSE
#define DEFAULT_POST_MESSAGES FALSE
#define DEFAULT_CLASSIFIER NULL
#define DEFAULT_CLASS_LABEL -1
#define DEFAULT_GUIDANCE_SCALE 32.0
#define MAX_CLASS_LABEL 1000000
#define MAX_GUIDANCE_SCALE 1000.0
#define CLASSIFIER_SUFFIX "-classifier.safetensors"
#define DEFAULT_FPS_N 30
#define DEFAULT_FPS_D 1

enum
{
  PROP_0,
  PROP_MODEL,                   /* + device, cuda-device-id, precision */
  PROP_MODEL_LAST = PROP_MODEL + GST_SCORESDE_N_MODEL_PROPS - 1,
  PROP_SAMPLER_FIRST,           /* seed, sampler, schedule, steps, pc and ode knobs */
  PROP_SAMPLER_LAST = PROP_SAMPLER_FIRST + GST_SCORESDE_N_SAMPLER_PROPS - 1,
  PROP_BATCH_SIZE,
  PROP_WALK_FRAMES,
  PROP_START_FRAME,
  PROP_IS_LIVE,
  PROP_POST_MESSAGES,
  PROP_CLASSIFIER,
  PROP_CLASS_LABEL,
  PROP_GUIDANCE_SCALE,
};

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (GST_SCORESDE_VIDEO_FORMATS))
    );

#define gst_scoresde_src_parent_class parent_class
G_DEFINE_TYPE (GstScoreSdeSrc, gst_scoresde_src, GST_TYPE_PUSH_SRC);
GST_ELEMENT_REGISTER_DEFINE (scoresdesrc, "scoresdesrc", GST_RANK_NONE,
    GST_TYPE_SCORESDE_SRC);

static void gst_scoresde_src_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_scoresde_src_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_scoresde_src_finalize (GObject * object);

static GstCaps *gst_scoresde_src_get_caps (GstBaseSrc * bsrc, GstCaps * filter);
static GstCaps *gst_scoresde_src_fixate (GstBaseSrc * bsrc, GstCaps * caps);
static gboolean gst_scoresde_src_set_caps (GstBaseSrc * bsrc, GstCaps * caps);
static gboolean gst_scoresde_src_decide_allocation (GstBaseSrc * bsrc,
    GstQuery * query);
static gboolean gst_scoresde_src_start (GstBaseSrc * bsrc);
static gboolean gst_scoresde_src_stop (GstBaseSrc * bsrc);
static gboolean gst_scoresde_src_unlock (GstBaseSrc * bsrc);
static gboolean gst_scoresde_src_unlock_stop (GstBaseSrc * bsrc);
static gboolean gst_scoresde_src_is_seekable (GstBaseSrc * bsrc);
static gboolean gst_scoresde_src_do_seek (GstBaseSrc * bsrc,
    GstSegment * segment);
static gboolean gst_scoresde_src_query (GstBaseSrc * bsrc, GstQuery * query);
static void gst_scoresde_src_get_times (GstBaseSrc * bsrc, GstBuffer * buffer,
    GstClockTime * start, GstClockTime * end);
static GstFlowReturn gst_scoresde_src_fill (GstPushSrc * psrc,
    GstBuffer * buffer);

static void
gst_scoresde_src_class_init (GstScoreSdeSrcClass * klass)
{
  GObjectClass *gobject_class = (GObjectClass *) klass;
  GstElementClass *element_class = (GstElementClass *) klass;
  GstBaseSrcClass *basesrc_class = (GstBaseSrcClass *) klass;
  GstPushSrcClass *pushsrc_class = (GstPushSrcClass *) klass;

  gobject_class->set_property = gst_scoresde_src_set_property;
  gobject_class->get_property = gst_scoresde_src_get_property;
  gobject_class->finalize = gst_scoresde_src_finalize;

  /**
   * GstScoreSdeSrc:model:
   *
   * Model file: a JSON analytic model or a .safetensors network. Empty selects the
   * shipped default ($SCORESDE_DEFAULT_MODEL, else fashion-mnist-32.safetensors).
   */
  /**
   * GstScoreSdeSrc:device:
   *
   * Device to run the model on; with cuda-device-id and precision. auto takes the
   * GPU when this build has CUDA support and one answers, else the CPU (a warning in
   * the log). cuda without a usable GPU fails at start with LIBRARY/INIT.
   */
  gst_scoresde_install_model_properties (gobject_class, PROP_MODEL,
      "Model file (.json analytic model or .safetensors network); "
      "empty = the shipped default (fashion-mnist-32)");
  /**
   * GstScoreSdeSrc:sampler:
   *
   * How frames are sampled; with schedule, steps, seed, the PC sampler's predictor,
   * corrector, snr and corrector-steps, and the ODE's ode-method, rtol and atol.
   * The default, dpmpp-2m at 15 network evaluations, makes a frame of the shipped
   * model in a few tens of milliseconds on a CPU core (docs/BENCHMARKS.md);
   * sampler=pc steps=0 is the 1000-step reference. Frame k uses noise stream k of
   * the seed.
   */
  gst_scoresde_install_sampler_properties (gobject_class, PROP_SAMPLER_FIRST,
      GST_SCORESDE_SAMPLERS_SDE | GST_SCORESDE_SAMPLERS_ODE,
      GST_SCORESDE_DEFAULT_SAMPLER,
      "Seed of the noise; frame k uses noise stream k");
  /**
   * GstScoreSdeSrc:batch-size:
   *
   * Frames generated per engine call (an upper bound). Each frame keeps its own noise
   * stream; only the Langevin corrector's batch-averaged step size makes the output
   * depend on it.
   */
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_int ("batch-size", "Batch size",
          "Frames generated per engine call (output is batch-independent except "
          "for the batch-averaged Langevin step size)", 1, MAX_BATCH_SIZE,
          DEFAULT_BATCH_SIZE, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstScoreSdeSrc:walk-frames:
   *
   * Latent walk: a new prior latent every N frames, frames in between decode the slerp
   * of the surrounding keyframe latents with the probability-flow ODE. 0 = off. The
   * few-step samplers decode with themselves (dpmpp-2m-sde with its deterministic
   * dpmpp-2m), pc and ode with ode-method.
   */
  g_object_class_install_property (gobject_class, PROP_WALK_FRAMES,
      g_param_spec_int ("walk-frames", "Walk frames",
          "Latent walk: frames per keyframe latent (0 = off, sample each frame)",
          0, G_MAXINT, DEFAULT_WALK_FRAMES,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstScoreSdeSrc:start-frame:
   *
   * Index of the first frame: the stream starts with frame S at timestamp
   * S/framerate, exactly as that frame appears in a render from frame 0, and
   * #GstBaseSrc:num-buffers counts from it. For rendering one clip as segments in
   * several processes (pipelines/render-split.sh, docs/scale.md).
   */
  g_object_class_install_property (gobject_class, PROP_START_FRAME,
      g_param_spec_int64 ("start-frame", "Start frame",
          "Index of the first frame (timestamp start-frame/framerate; num-buffers "
          "counts from it): renders one segment of a longer clip",
          0, G_MAXINT32, DEFAULT_START_FRAME,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_IS_LIVE,
      g_param_spec_boolean ("is-live", "Is Live",
          "Whether to act as a live source", DEFAULT_IS_LIVE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS));
  /**
   * GstScoreSdeSrc:post-messages:
   *
   * Post "scoresde-progress" element messages (fields done, total, pts, frame) about
   * twenty times per engine run.
   */
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean ("post-messages", "Post messages",
          "Post scoresde-progress element messages during sampling",
          DEFAULT_POST_MESSAGES, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstScoreSdeSrc:classifier:
   *
   * Time-dependent classifier network for class-label guidance. Empty selects
   * `<model>-classifier.safetensors` beside the model file (the shipped
   * fashion-mnist-32 has one). Loaded when class-label is first set.
   */
  g_object_class_install_property (gobject_class, PROP_CLASSIFIER,
      g_param_spec_string ("classifier", "Classifier",
          "Time-dependent classifier (.safetensors) for class-label guidance; "
          "empty = <model>" CLASSIFIER_SUFFIX, DEFAULT_CLASSIFIER,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  /**
   * GstScoreSdeSrc:class-label:
   *
   * Classifier guidance (Song et al. 2021, docs/math.md#guidance; Dhariwal & Nichol 2021): sample with
   * the score plus guidance-scale times the gradient of log p(class | x, t). -1 samples
   * unconditionally. For the shipped Fashion-MNIST model: 0 T-shirt/top, 1 trouser,
   * 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
   */
  g_object_class_install_property (gobject_class, PROP_CLASS_LABEL,
      g_param_spec_int ("class-label", "Class label",
          "Class to guide towards with the classifier (-1 = unconditional)",
          -1, MAX_CLASS_LABEL, DEFAULT_CLASS_LABEL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstScoreSdeSrc:guidance-scale:
   *
   * Weight of the classifier gradient when class-label is set: larger values give
   * more class-typical, less diverse frames. The default suits the shipped
   * Fashion-MNIST classifier: at 32, 97 % of guided samples are judged to be of the
   * requested class by an independent classifier (models/fashion-mnist-32.md); 1 is
   * the plain Bayes-rule conditional score.
   */
  g_object_class_install_property (gobject_class, PROP_GUIDANCE_SCALE,
      g_param_spec_double ("guidance-scale", "Guidance scale",
          "Weight of grad log p(class | x, t) added to the score",
          0.0, MAX_GUIDANCE_SCALE, DEFAULT_GUIDANCE_SCALE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  gst_element_class_set_static_metadata (element_class,
      "Score-SDE video source", "Source/Video",
      "Generates video frames by sampling a score-based generative model",
      "The gst-scoresde authors");
  gst_element_class_add_static_pad_template (element_class, &src_template);

  basesrc_class->get_caps = GST_DEBUG_FUNCPTR (gst_scoresde_src_get_caps);
  basesrc_class->fixate = GST_DEBUG_FUNCPTR (gst_scoresde_src_fixate);
  basesrc_class->set_caps = GST_DEBUG_FUNCPTR (gst_scoresde_src_set_caps);
  basesrc_class->decide_allocation =
      GST_DEBUG_FUNCPTR (gst_scoresde_src_decide_allocation);
  basesrc_class->start = GST_DEBUG_FUNCPTR (gst_scoresde_src_start);
  basesrc_class->stop = GST_DEBUG_FUNCPTR (gst_scoresde_src_stop);
  basesrc_class->unlock = GST_DEBUG_FUNCPTR (gst_scoresde_src_unlock);
  basesrc_class->unlock_stop = GST_DEBUG_FUNCPTR (gst_scoresde_src_unlock_stop);
  basesrc_class->is_seekable = GST_DEBUG_FUNCPTR (gst_scoresde_src_is_seekable);
  basesrc_class->do_seek = GST_DEBUG_FUNCPTR (gst_scoresde_src_do_seek);
  basesrc_class->query = GST_DEBUG_FUNCPTR (gst_scoresde_src_query);
  basesrc_class->get_times = GST_DEBUG_FUNCPTR (gst_scoresde_src_get_times);
  pushsrc_class->fill = GST_DEBUG_FUNCPTR (gst_scoresde_src_fill);

  GST_DEBUG_CATEGORY_INIT (gst_scoresde_src_debug, "scoresdesrc", 0,
      "Score-SDE video source");
}

static void
gst_scoresde_src_init (GstScoreSdeSrc * self)
{
  self->classifier_path = NULL;
  self->class_label = DEFAULT_CLASS_LABEL;
  self->guidance_scale = DEFAULT_GUIDANCE_SCALE;
  gst_scoresde_sampler_settings_init (&self->settings);
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->walk_frames = DEFAULT_WALK_FRAMES;
  self->start_frame = DEFAULT_START_FRAME;
  self->post_messages = DEFAULT_POST_MESSAGES;
  gst_scoresde_model_slot_init (&self->slot, GST_ELEMENT (self), NULL,
      GST_SCORESDE_MODEL_SLOT_VIDEO, NULL);
  gst_video_info_init (&self->info);
  self->batch_first = -1;
  self->walk_key_index = -1;

  gst_base_src_set_format (GST_BASE_SRC (self), GST_FORMAT_TIME);
  gst_base_src_set_live (GST_BASE_SRC (self), DEFAULT_IS_LIVE);
}

static void
gst_scoresde_src_finalize (GObject * object)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (object);

  g_free (self->classifier_path);
  g_free (self->batch);
  g_free (self->walk_keys);
  gst_scoresde_model_slot_clear (&self->slot);
  if (self->classifier)
    gst_scoresde_model_cache_release (self->classifier);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Drops frames generated ahead and keyframe latents (settings changed). Object lock. */
static void
invalidate_caches (GstScoreSdeSrc * self)
{
  self->batch_first = -1;
  self->batch_count = 0;
  self->walk_key_index = -1;
}

static void
gst_scoresde_src_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (object);

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
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_int (value);
      break;
    case PROP_WALK_FRAMES:
      self->walk_frames = g_value_get_int (value);
      break;
    case PROP_START_FRAME:
      self->start_frame = g_value_get_int64 (value);
      break;
    case PROP_IS_LIVE:
      GST_OBJECT_UNLOCK (self);
      gst_base_src_set_live (GST_BASE_SRC (self), g_value_get_boolean (value));
      return;
    case PROP_POST_MESSAGES:
      self->post_messages = g_value_get_boolean (value);
      break;
    case PROP_CLASSIFIER:
      g_free (self->classifier_path);
      self->classifier_path = g_value_dup_string (value);
      break;
    case PROP_CLASS_LABEL:
      self->class_label = g_value_get_int (value);
      break;
    case PROP_GUIDANCE_SCALE:
      self->guidance_scale = g_value_get_double (value);
      break;
    default:
      GST_OBJECT_UNLOCK (self);
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      return;
  }
  if (prop_id != PROP_POST_MESSAGES && prop_id != PROP_BATCH_SIZE) {
    self->settings_cookie++;
    invalidate_caches (self);
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_scoresde_src_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (object);

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
    case PROP_BATCH_SIZE:
      g_value_set_int (value, self->batch_size);
      break;
    case PROP_WALK_FRAMES:
      g_value_set_int (value, self->walk_frames);
      break;
    case PROP_START_FRAME:
      g_value_set_int64 (value, self->start_frame);
      break;
    case PROP_IS_LIVE:
      GST_OBJECT_UNLOCK (self);
      g_value_set_boolean (value, gst_base_src_is_live (GST_BASE_SRC (self)));
      return;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, self->post_messages);
      break;
    case PROP_CLASSIFIER:
      g_value_set_string (value, self->classifier_path);
      break;
    case PROP_CLASS_LABEL:
      g_value_set_int (value, self->class_label);
      break;
    case PROP_GUIDANCE_SCALE:
      g_value_set_double (value, self->guidance_scale);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static GstCaps *
gst_scoresde_src_get_caps (GstBaseSrc * bsrc, GstCaps * filter)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstCaps *caps, *tmp;

  GST_OBJECT_LOCK (self);
  if (self->slot.model != NULL) {
    caps = gst_scoresde_video_caps_new (self->slot.model, -1, 1);
    gst_caps_set_simple (caps, "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1,
        NULL);
  } else {
    caps = gst_pad_get_pad_template_caps (GST_BASE_SRC_PAD (bsrc));
  }
  GST_OBJECT_UNLOCK (self);

  if (filter != NULL) {
    tmp = gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (caps);
    caps = tmp;
  }
  return caps;
}

static GstCaps *
gst_scoresde_src_fixate (GstBaseSrc * bsrc, GstCaps * caps)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstStructure *s;
  const gchar *preferred = "RGB";

  caps = gst_caps_make_writable (caps);
  caps = gst_caps_truncate (caps);
  s = gst_caps_get_structure (caps, 0);

  GST_OBJECT_LOCK (self);
  if (self->slot.model != NULL) {
    gst_structure_fixate_field_nearest_int (s, "width",
        gst_scoresde_model_width (self->slot.model));
    gst_structure_fixate_field_nearest_int (s, "height",
        gst_scoresde_model_height (self->slot.model));
    preferred = gst_video_format_to_string
        (gst_scoresde_video_format_for_model (self->slot.model));
  }
  GST_OBJECT_UNLOCK (self);

  gst_structure_fixate_field_string (s, "format", preferred);
  gst_structure_fixate_field_nearest_fraction (s, "framerate", DEFAULT_FPS_N,
      DEFAULT_FPS_D);
  if (gst_structure_has_field (s, "pixel-aspect-ratio"))
    gst_structure_fixate_field_nearest_fraction (s, "pixel-aspect-ratio", 1, 1);

  return GST_BASE_SRC_CLASS (parent_class)->fixate (bsrc, caps);
}

static gboolean
gst_scoresde_src_set_caps (GstBaseSrc * bsrc, GstCaps * caps)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstVideoInfo info;

  if (!gst_video_info_from_caps (&info, caps))
    goto parse_failed;
  if (!gst_scoresde_video_format_is_supported (GST_VIDEO_INFO_FORMAT (&info)))
    goto unsupported_caps;

  GST_OBJECT_LOCK (self);
  if (self->slot.model == NULL
      || GST_VIDEO_INFO_WIDTH (&info) != gst_scoresde_model_width (self->slot.model)
      || GST_VIDEO_INFO_HEIGHT (&info) !=
      gst_scoresde_model_height (self->slot.model)) {
    GST_OBJECT_UNLOCK (self);
    goto wrong_size;
  }
  /* keep timestamps and frame numbers monotonic across renegotiation */
  if (GST_VIDEO_INFO_FORMAT (&self->info) != GST_VIDEO_FORMAT_UNKNOWN
      && self->info.fps_n > 0) {
    self->accum_frames += self->n_frames;
    self->accum_rtime += self->running_time;
  } else if (GST_VIDEO_INFO_FORMAT (&self->info) == GST_VIDEO_FORMAT_UNKNOWN) {
    /* the first caps: the stream begins at start-frame, at its timestamp */
    self->accum_frames = self->start_frame;
    self->accum_rtime = info.fps_n > 0 ? gst_util_uint64_scale (self->start_frame,
        info.fps_d * GST_SECOND, info.fps_n) : 0;
  }
  self->info = info;
  self->running_time = 0;
  self->n_frames = 0;
  GST_OBJECT_UNLOCK (self);

  GST_DEBUG_OBJECT (self, "negotiated %" GST_PTR_FORMAT, caps);
  return TRUE;

  /* ERRORS */
parse_failed:
  {
    GST_DEBUG_OBJECT (self, "failed to parse caps %" GST_PTR_FORMAT, caps);
    return FALSE;
  }
unsupported_caps:
  {
    GST_DEBUG_OBJECT (self, "unsupported format in %" GST_PTR_FORMAT, caps);
    return FALSE;
  }
wrong_size:
  {
    GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT " are not at the model's "
        "size", caps);
    return FALSE;
  }
}

static gboolean
gst_scoresde_src_decide_allocation (GstBaseSrc * bsrc, GstQuery * query)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstBufferPool *pool = NULL;
  gboolean update;
  guint size, min, max;
  GstStructure *config;
  GstCaps *caps = NULL;

  gst_query_parse_allocation (query, &caps, NULL);

  if (gst_query_get_n_allocation_pools (query) > 0) {
    gst_query_parse_nth_allocation_pool (query, 0, &pool, &size, &min, &max);
    size = MAX (size, self->info.size);
    update = TRUE;
  } else {
    size = self->info.size;
    min = max = 0;
    update = FALSE;
  }

  if (pool == NULL)
    pool = gst_video_buffer_pool_new ();

  config = gst_buffer_pool_get_config (pool);
  gst_buffer_pool_config_set_params (config, caps, size, min, max);
  if (gst_query_find_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL)
      && gst_buffer_pool_has_option (pool, GST_BUFFER_POOL_OPTION_VIDEO_META))
    gst_buffer_pool_config_add_option (config,
        GST_BUFFER_POOL_OPTION_VIDEO_META);
  if (!gst_buffer_pool_set_config (pool, config)) {
    /* the pool adjusted the config: take what it offers if it still fits */
    config = gst_buffer_pool_get_config (pool);
    if (!gst_buffer_pool_config_validate_params (config, caps, size, min, max)) {
      gst_structure_free (config);
      gst_object_unref (pool);
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, (NULL),
          ("Failed to configure the buffer pool"));
      return FALSE;
    }
    gst_buffer_pool_set_config (pool, config);
  }

  if (update)
    gst_query_set_nth_allocation_pool (query, 0, pool, size, min, max);
  else
    gst_query_add_allocation_pool (query, pool, size, min, max);
  gst_object_unref (pool);

  return GST_BASE_SRC_CLASS (parent_class)->decide_allocation (bsrc, query);
}

/* Loads the guidance classifier (streaming thread or start; self->slot.model is set):
 * the classifier property, else <model stem>-classifier.safetensors beside the model. */
static gboolean
load_classifier (GstScoreSdeSrc * self, GError ** error)
{
  GstScoreSdeModel *clf;
  GstScoreSdeDeviceSettings device;
  gchar *path;

  GST_OBJECT_LOCK (self);
  device = self->slot.device;
  if (self->classifier_path != NULL && self->classifier_path[0] != '\0') {
    path = g_strdup (self->classifier_path);
  } else {
    const gchar *model_path = self->slot.model->path;
    const gchar *dot = strrchr (model_path, '.');
    gsize stem = dot && dot > strrchr (model_path, '/') ?
        (gsize) (dot - model_path) : strlen (model_path);
    path = g_strdup_printf ("%.*s" CLASSIFIER_SUFFIX, (int) stem, model_path);
  }
  GST_OBJECT_UNLOCK (self);

  clf = gst_scoresde_model_cache_acquire (GST_ELEMENT (self), path, &device,
      error);
  if (clf != NULL) {
    const sde_ncsnpp_config *config = sde_network_config (clf->model);

    if (config == NULL || config->num_classes < 1) {
      g_set_error (error, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_SETTINGS,
          "'%s' is not a classifier network (no classes)", path);
      gst_scoresde_model_cache_release (clf);
      clf = NULL;
    } else {
      GST_INFO_OBJECT (self, "classifier %s, %d classes", clf->path,
          config->num_classes);
    }
  }
  if (clf == NULL)
    g_prefix_error (error, "class-label guidance: ");
  g_free (path);
  self->classifier = clf;
  return clf != NULL;
}

static gboolean
gst_scoresde_src_start (GstBaseSrc * bsrc)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstScoreSdeModel *model;
  GstScoreSdeSamplerSettings settings;
  GError *err = NULL;
  gsize D;

  if (!gst_scoresde_model_slot_start (&self->slot))
    return FALSE;
  GST_OBJECT_LOCK (self);
  settings = self->settings;
  GST_OBJECT_UNLOCK (self);
  if (!gst_scoresde_model_slot_check_sampler (&self->slot, &settings)) {
    gst_scoresde_model_slot_unload (&self->slot);
    return FALSE;
  }

  model = self->slot.model;
  D = gst_scoresde_model_dim (model);
  GST_OBJECT_LOCK (self);
  g_free (self->walk_keys);
  self->walk_keys = g_new (gfloat, 2 * D);
  g_free (self->batch);
  self->batch = NULL;
  invalidate_caches (self);
  gst_video_info_init (&self->info);
  self->n_frames = 0;
  self->running_time = 0;
  self->accum_frames = 0;
  self->accum_rtime = 0;
  self->reverse = FALSE;
  self->max_generation_time = 0;
  self->reported_latency = GST_CLOCK_TIME_NONE;
  GST_OBJECT_UNLOCK (self);

  GST_INFO_OBJECT (self, "model %s (%s), %dx%dx%d", model->path, model->id,
      gst_scoresde_model_channels (model), gst_scoresde_model_height (model),
      gst_scoresde_model_width (model));
  if (self->class_label >= 0 && !load_classifier (self, &err))
    goto no_classifier;
  return TRUE;

  /* ERRORS */
no_classifier:
  {
    gst_scoresde_src_stop (bsrc);
    GST_SCORESDE_ELEMENT_GERROR (self, err);
    g_clear_error (&err);
    return FALSE;
  }
}

static gboolean
gst_scoresde_src_stop (GstBaseSrc * bsrc)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstScoreSdeModel *classifier;

  GST_OBJECT_LOCK (self);
  classifier = self->classifier;
  self->classifier = NULL;
  g_clear_pointer (&self->batch, g_free);
  g_clear_pointer (&self->walk_keys, g_free);
  invalidate_caches (self);
  gst_video_info_init (&self->info);
  GST_OBJECT_UNLOCK (self);

  gst_scoresde_model_slot_stop (&self->slot);
  if (classifier)
    gst_scoresde_model_cache_release (classifier);
  return TRUE;
}

static gboolean
gst_scoresde_src_unlock (GstBaseSrc * bsrc)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);

  GST_DEBUG_OBJECT (self, "cancelling sampling");
  gst_scoresde_progress_cancel (&self->slot.progress);
  return TRUE;
}

static gboolean
gst_scoresde_src_unlock_stop (GstBaseSrc * bsrc)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);

  gst_scoresde_progress_reset (&self->slot.progress);
  return TRUE;
}

static gboolean
gst_scoresde_src_is_seekable (GstBaseSrc * bsrc)
{
  return TRUE;
}

static gboolean
gst_scoresde_src_do_seek (GstBaseSrc * bsrc, GstSegment * segment)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  GstClockTime position;

  segment->time = segment->start;
  position = segment->position;

  GST_OBJECT_LOCK (self);
  self->reverse = segment->rate < 0;
  if (self->info.fps_n > 0) {
    self->n_frames = gst_util_uint64_scale (position, self->info.fps_n,
        self->info.fps_d * GST_SECOND);
    self->running_time = gst_util_uint64_scale (self->n_frames,
        self->info.fps_d * GST_SECOND, self->info.fps_n);
  } else {
    self->n_frames = 0;
    self->running_time = 0;
  }
  self->accum_frames = 0;
  self->accum_rtime = 0;
  GST_OBJECT_UNLOCK (self);

  GST_DEBUG_OBJECT (self, "seek to %" GST_TIME_FORMAT ": frame %"
      G_GINT64_FORMAT, GST_TIME_ARGS (position), self->n_frames);
  return TRUE;
}

static GstClockTime
frame_duration (GstScoreSdeSrc * self)
{
  if (self->info.fps_n <= 0)
    return GST_CLOCK_TIME_NONE;
  return gst_util_uint64_scale (GST_SECOND, self->info.fps_d, self->info.fps_n);
}

static gboolean
gst_scoresde_src_query (GstBaseSrc * bsrc, GstQuery * query)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (bsrc);
  gboolean res = FALSE;

  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_CONVERT:
    {
      GstFormat src_fmt, dest_fmt;
      gint64 src_val, dest_val;

      GST_OBJECT_LOCK (self);
      gst_query_parse_convert (query, &src_fmt, &src_val, &dest_fmt, &dest_val);
      res = gst_video_info_convert (&self->info, src_fmt, src_val, dest_fmt,
          &dest_val);
      gst_query_set_convert (query, src_fmt, src_val, dest_fmt, dest_val);
      GST_OBJECT_UNLOCK (self);
      break;
    }
    case GST_QUERY_LATENCY:
    {
      GstClockTime latency;

      GST_OBJECT_LOCK (self);
      latency = frame_duration (self);
      if (GST_CLOCK_TIME_IS_VALID (latency)) {
        latency = MAX (latency, self->max_generation_time);
        self->reported_latency = latency;
      }
      GST_OBJECT_UNLOCK (self);
      if (GST_CLOCK_TIME_IS_VALID (latency)) {
        gst_query_set_latency (query, gst_base_src_is_live (bsrc), latency,
            GST_CLOCK_TIME_NONE);
        GST_DEBUG_OBJECT (self, "reporting latency of %" GST_TIME_FORMAT,
            GST_TIME_ARGS (latency));
        res = TRUE;
      }
      break;
    }
    case GST_QUERY_DURATION:
    {
      GstFormat format;
      gint num_buffers = bsrc->num_buffers;

      gst_query_parse_duration (query, &format, NULL);
      if (num_buffers == -1) {
        res = GST_BASE_SRC_CLASS (parent_class)->query (bsrc, query);
        break;
      }
      /* the stream ends after frame start-frame + num-buffers - 1 */
      if (format == GST_FORMAT_DEFAULT) {
        GST_OBJECT_LOCK (self);
        gst_query_set_duration (query, format, self->start_frame + num_buffers);
        GST_OBJECT_UNLOCK (self);
        res = TRUE;
      } else if (format == GST_FORMAT_TIME) {
        GST_OBJECT_LOCK (self);
        if (self->info.fps_n > 0) {
          gst_query_set_duration (query, format,
              gst_util_uint64_scale (self->start_frame + num_buffers,
                  self->info.fps_d * GST_SECOND, self->info.fps_n));
          res = TRUE;
        }
        GST_OBJECT_UNLOCK (self);
      } else if (format == GST_FORMAT_BYTES) {
        GST_OBJECT_LOCK (self);
        if (self->info.size > 0) {
          gst_query_set_duration (query, format,
              (gint64) self->info.size * num_buffers);
          res = TRUE;
        }
        GST_OBJECT_UNLOCK (self);
      }
      break;
    }
    default:
      res = GST_BASE_SRC_CLASS (parent_class)->query (bsrc, query);
      break;
  }
  return res;
}

static void
gst_scoresde_src_get_times (GstBaseSrc * bsrc, GstBuffer * buffer,
    GstClockTime * start, GstClockTime * end)
{
  /* sync only in live mode, on the buffer's running time */
  if (gst_base_src_is_live (bsrc)) {
    GstClockTime timestamp = GST_BUFFER_PTS (buffer);

    if (GST_CLOCK_TIME_IS_VALID (timestamp)) {
      GstClockTime duration = GST_BUFFER_DURATION (buffer);

      if (GST_CLOCK_TIME_IS_VALID (duration))
        *end = timestamp + duration;
      *start = timestamp;
    }
  } else {
    *start = -1;
    *end = -1;
  }
}

/* Generates frames first .. first+n-1 into out[n, D] with `score` (the model, or
 * the model under classifier guidance). Settings are a snapshot. */
static int
generate (GstScoreSdeSrc * self, const GstScoreSdeModel * model,
    const sde_model * score, const GstScoreSdeSamplerSettings * settings,
    gint walk_frames, gint64 first, gint n, gfloat * out, sde_stats * stats)
{
  const gsize D = gst_scoresde_model_dim (model);
  sde_sample_params p;
  int status;
  gint i;

  gst_scoresde_sampler_settings_to_params (settings, &self->slot.progress, &p);

  if (walk_frames <= 0)
    return sde_sample (score, &model->sde, &p, n, (uint64_t) first, out,
        stats);

  /* Latent walk: keyframe K = k / N holds prior draw 0 of stream K; frame k decodes
   * slerp(z_K, z_K+1, (k mod N) / N) with the probability-flow ODE, so a stochastic
   * solver walks with its deterministic counterpart. */
  if (p.sampler == SDE_SAMPLER_DPMPP_2M_SDE)
    p.sampler = SDE_SAMPLER_DPMPP_2M;
  {
    gfloat *z = g_new (gfloat, (gsize) n * D);
    gfloat *keys = self->walk_keys;

    for (i = 0; i < n; i++) {
      gint64 k = first + i;
      gint64 K = k / walk_frames;
      gint r = (gint) (k % walk_frames);

      if (self->walk_key_index != K || self->walk_key_seed != settings->seed) {
        sde_prior_sample (&model->sde, settings->seed, (uint64_t) K, 0, 2,
            (int64_t) D, keys);
        self->walk_key_index = K;
        self->walk_key_seed = settings->seed;
      }
      if (r == 0)
        memcpy (z + i * D, keys, D * sizeof (gfloat));
      else
        sde_slerp (keys, keys + D, (int64_t) D, (double) r / walk_frames,
            z + i * D);
    }
    status = sde_decode (score, &model->sde, &p, n, z, out, stats);
    g_free (z);
    return status;
  }
}

static GstFlowReturn
gst_scoresde_src_fill (GstPushSrc * psrc, GstBuffer * buffer)
{
  GstScoreSdeSrc *self = GST_SCORESDE_SRC (psrc);
  GstScoreSdeSamplerSettings settings;
  GstScoreSdeModel *model;
  GstScoreSdeLatentMeta *meta;
  GstVideoFrame vframe;
  GstVideoInfo info;
  GstClockTime next_time, latency_now = GST_CLOCK_TIME_NONE;
  gint64 k;
  gint batch, walk, n, channels;
  gsize D;
  gfloat *frame;
  sde_stats stats = { 0 };
  gint64 t0;
  guint cookie;
  gint class_label;
  gdouble guidance_scale;
  sde_model *guided = NULL;
  GError *err = NULL;
  int status = SDE_OK;

  GST_OBJECT_LOCK (self);
  model = self->slot.model;
  info = self->info;
  if (G_UNLIKELY (model == NULL
          || GST_VIDEO_INFO_FORMAT (&info) == GST_VIDEO_FORMAT_UNKNOWN)) {
    GST_OBJECT_UNLOCK (self);
    goto not_negotiated;
  }
  /* framerate 0/1: a single frame; reverse playback: stop before frame 0 */
  if (G_UNLIKELY ((info.fps_n == 0 && self->n_frames == 1)
          || (self->reverse && self->n_frames < 0))) {
    GST_OBJECT_UNLOCK (self);
    goto eos;
  }
  k = self->accum_frames + self->n_frames;
  settings = self->settings;
  batch = self->reverse ? 1 : self->batch_size;
  walk = self->walk_frames;
  cookie = self->settings_cookie;
  class_label = self->class_label;
  guidance_scale = self->guidance_scale;
  self->slot.progress.post_messages = self->post_messages;
  GST_OBJECT_UNLOCK (self);

  D = gst_scoresde_model_dim (model);
  channels = gst_scoresde_model_channels (model);

  /* frames are produced only in this streaming thread: the caches are ours, the
   * object lock only protects them against invalidation by set_property */
  GST_OBJECT_LOCK (self);
  if (self->batch_first >= 0 && k >= self->batch_first
      && k < self->batch_first + self->batch_count) {
    frame = self->batch + (gsize) (k - self->batch_first) * D;
    GST_OBJECT_UNLOCK (self);
    GST_LOG_OBJECT (self, "frame %" G_GINT64_FORMAT " from the batch", k);
  } else {
    self->batch_first = -1;
    self->batch_count = 0;
    n = MAX (batch, 1);
    self->batch = g_renew (gfloat, self->batch, (gsize) n * D);
    GST_OBJECT_UNLOCK (self);

    self->slot.progress.frame = (guint64) k;
    self->slot.progress.pts = self->accum_rtime + self->running_time;
    if (class_label >= 0) {
      if (self->classifier == NULL && !load_classifier (self, &err))
        goto classifier_error;
      status = sde_guided_wrap (model->model, self->classifier->model,
          class_label, guidance_scale, &guided);
      if (status != SDE_OK)
        goto engine_error;
    }
    t0 = g_get_monotonic_time ();
    status = generate (self, model, guided ? guided : model->model, &settings,
        walk, k, n, self->batch, &stats);
    sde_model_free (guided);
    if (status != SDE_OK)
      goto engine_error;

    GST_OBJECT_LOCK (self);
    if (cookie == self->settings_cookie) {
      /* keep the frames made ahead unless the settings changed meanwhile */
      self->batch_first = k;
      self->batch_count = n;
    }
    frame = self->batch;
    {
      GstClockTime per_frame = (g_get_monotonic_time () - t0) * GST_USECOND / n;
      if (per_frame > self->max_generation_time) {
        self->max_generation_time = per_frame;
        if (GST_CLOCK_TIME_IS_VALID (self->reported_latency)
            && per_frame > self->reported_latency)
          latency_now = per_frame;
      }
    }
    GST_OBJECT_UNLOCK (self);
    GST_DEBUG_OBJECT (self, "generated frames %" G_GINT64_FORMAT "..%"
        G_GINT64_FORMAT ", NFE %" G_GINT64_FORMAT ", %.3f s", k, k + n - 1,
        (gint64) stats.nfe, stats.seconds);
  }

  if (latency_now != GST_CLOCK_TIME_NONE && gst_base_src_is_live (GST_BASE_SRC
          (self))) {
    GST_INFO_OBJECT (self, "generation takes %" GST_TIME_FORMAT
        " per frame, more than the reported latency", GST_TIME_ARGS
        (latency_now));
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
  }

  gst_scoresde_element_check_finite (GST_ELEMENT (self), frame, D, (guint64) k,
      "the sample", "they are drawn black");
  if (!gst_video_frame_map (&vframe, &info, buffer, GST_MAP_WRITE))
    goto map_failed;
  gst_scoresde_video_frame_from_planar (&vframe, frame, channels,
      model->model->centered);
  gst_video_frame_unmap (&vframe);

  meta = gst_buffer_add_scoresde_latent_meta (buffer);
  meta->seed = settings.seed;
  meta->frame = (guint64) k;
  meta->nfe = stats.nfe;
  meta->t = 0.0;
  meta->video_width = GST_VIDEO_INFO_WIDTH (&info);
  meta->video_height = GST_VIDEO_INFO_HEIGHT (&info);
  meta->video_format = GST_VIDEO_INFO_FORMAT (&info);

  GST_OBJECT_LOCK (self);
  GST_BUFFER_PTS (buffer) = self->accum_rtime + self->running_time;
  GST_BUFFER_DTS (buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_OFFSET (buffer) = (guint64) k;
  GST_BUFFER_OFFSET_END (buffer) = (guint64) k + 1;
  if (self->reverse)
    self->n_frames--;
  else
    self->n_frames++;
  if (self->info.fps_n > 0) {
    next_time = gst_util_uint64_scale (MAX (self->n_frames, 0),
        self->info.fps_d * GST_SECOND, self->info.fps_n);
    if (self->reverse)
      GST_BUFFER_DURATION (buffer) = self->running_time - next_time;
    else
      GST_BUFFER_DURATION (buffer) = next_time - self->running_time;
  } else {
    next_time = 0;
    GST_BUFFER_DURATION (buffer) = GST_CLOCK_TIME_NONE;
  }
  self->running_time = next_time;
  GST_OBJECT_UNLOCK (self);

  GST_LOG_OBJECT (self, "frame %" G_GINT64_FORMAT " pts %" GST_TIME_FORMAT, k,
      GST_TIME_ARGS (GST_BUFFER_PTS (buffer)));
  return GST_FLOW_OK;

  /* ERRORS */
not_negotiated:
  {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("format wasn't negotiated before fill function"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
eos:
  {
    GST_DEBUG_OBJECT (self, "eos: 0 framerate, frame %" G_GINT64_FORMAT,
        self->n_frames);
    return GST_FLOW_EOS;
  }
engine_error:
  {
    gchar *what = g_strdup_printf ("Sampling frame %" G_GINT64_FORMAT
        " failed", k);
    GstFlowReturn ret = GST_SCORESDE_ELEMENT_ENGINE_ERROR (self, status, what);
    g_free (what);
    return ret;
  }
map_failed:
  {
    GST_ELEMENT_ERROR (self, RESOURCE, WRITE, (NULL),
        ("Could not map the output frame"));
    return GST_FLOW_ERROR;
  }
classifier_error:
  {
    GST_SCORESDE_ELEMENT_GERROR (self, err);
    g_clear_error (&err);
    return GST_FLOW_ERROR;
  }
}
