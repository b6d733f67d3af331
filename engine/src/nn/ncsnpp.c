/* NCSN++ / DDPM++ (`NCSNpp` of score_sde_pytorch models/ncsnpp.py; docs/math.md#network).
 *
 * The constructor logic is replayed on the config to build a flat module list in the exact
 * order of `all_modules`, so every tensor name `all_modules.<i>.<sub>` and shape follows
 * from the config. Parameters live in one contiguous float buffer in state_dict order; the
 * forward walks the module list with a counter exactly like NCSNpp.forward.
 *
 * Where the PyTorch port cannot run a combination (FIR upsample with conv: negative-step
 * slicing; fir=False Upsample: F.interpolate called with size and scale_factor), this file
 * follows the evident intent (the JAX port): upsample_conv_2d = transposed 3x3 conv
 * stride 2 then the [1,3,3,1] blur, and nearest x2 (+ 3x3 conv) for fir=False. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../backend/backend.h"
#include "../internal.h"
#include "../parallel.h"
#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/network.h"
#include "scoresde/nn.h"
#include "scoresde/rng.h"
#include "scoresde/train.h"

/* ---- configuration ---------------------------------------------------------------------- */

static void config_common(sde_ncsnpp_config *c) {
  memset(c, 0, sizeof *c);
  c->nf = 128;
  c->num_levels = 4;
  c->ch_mult[0] = 1; c->ch_mult[1] = 2; c->ch_mult[2] = 2; c->ch_mult[3] = 2;
  c->num_res_blocks = 4;
  c->num_attn = 1;
  c->attn_resolutions[0] = 16;
  c->resblock_type = SDE_RESBLOCK_BIGGAN;
  c->fir_kernel_len = 4;
  c->fir_kernel[0] = 1; c->fir_kernel[1] = 3; c->fir_kernel[2] = 3; c->fir_kernel[3] = 1;
  c->skip_rescale = 1;
  c->progressive_combine = SDE_COMBINE_SUM;
  c->fourier_scale = 16;
  c->conditional = 1;
  c->init_scale = 0.0;
  c->dropout = 0.1;
  c->resamp_with_conv = 1;
  c->image_size = 32;
  c->num_channels = 3;
  c->dataset[0] = 0;
  c->has_sde = 1;
  sde_init(&c->sde, SDE_VE);
  c->continuous = 1;
}

void sde_ncsnpp_config_ncsnpp_cifar10(sde_ncsnpp_config *c) {
  config_common(c);
  c->fir = 1;
  c->progressive = SDE_PROG_NONE;
  c->progressive_input = SDE_PROG_RESIDUAL;
  c->embedding_type = SDE_EMBED_FOURIER;
  c->scale_by_sigma = 1;
  c->centered = 0;
  snprintf(c->dataset, sizeof c->dataset, "cifar10");
  sde_init(&c->sde, SDE_VE);
}

void sde_ncsnpp_config_ddpmpp_cifar10(sde_ncsnpp_config *c) {
  config_common(c);
  c->fir = 0;
  c->progressive = SDE_PROG_NONE;
  c->progressive_input = SDE_PROG_NONE;
  c->embedding_type = SDE_EMBED_POSITIONAL;
  c->scale_by_sigma = 0;
  c->centered = 1;
  snprintf(c->dataset, sizeof c->dataset, "cifar10");
  sde_init(&c->sde, SDE_VP);
}

static int parse_enum(const sde_json *obj, const char *key, const char *const *names, int count,
                      int *out) {
  const char *s = NULL;
  int rc = sde_json_opt_str(obj, key, &s);
  if (rc) return rc;
  if (!s) return SDE_OK;
  for (int i = 0; i < count; i++)
    if (names[i] && strcasecmp(s, names[i]) == 0) {
      *out = i;
      return SDE_OK;
    }
  char list[256] = "";
  for (int i = 0; i < count; i++)
    if (names[i]) {
      strncat(list, list[0] ? ", " : "", sizeof list - strlen(list) - 1);
      strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
  return sde_fail(SDE_EUNSUPPORTED, "config: %s \"%s\" is not one of %s", key, s, list);
}

static int parse_int(const sde_json *obj, const char *key, int lo, int hi, int *out) {
  int64_t v = *out;
  int rc = sde_json_opt_int(obj, key, lo, hi, &v);
  if (rc) return sde_fail_context(rc, "config");
  *out = (int)v;
  return SDE_OK;
}

static int parse_int_list(const sde_json *obj, const char *key, int *out, int max, int *count,
                          int lo, int hi) {
  const sde_json *a = sde_json_get(obj, key);
  if (!a) return SDE_OK;
  if (a->type != SDE_JSON_ARRAY)
    return sde_fail(SDE_EFORMAT, "config: %s must be an array of integers", key);
  if ((int)a->count > max)
    return sde_fail(SDE_EUNSUPPORTED, "config: %s has %zu entries (at most %d)", key, a->count,
                    max);
  for (size_t i = 0; i < a->count; i++) {
    int64_t v;
    char what[64];
    snprintf(what, sizeof what, "config: %s[%zu]", key, i);
    int rc = sde_json_int(a->items[i], what, lo, hi, &v);
    if (rc) return rc;
    out[i] = (int)v;
  }
  *count = (int)a->count;
  return SDE_OK;
}

/* Model fields from obj (top level or "model"). */
static int parse_model_fields(const sde_json *o, sde_ncsnpp_config *c) {
  static const char *const resblock_names[] = {"biggan", "ddpm"};
  static const char *const prog_out_names[] = {"none", "output_skip", NULL, "residual"};
  static const char *const prog_in_names[] = {"none", NULL, "input_skip", "residual"};
  static const char *const combine_names[] = {"sum", "cat"};
  static const char *const embed_names[] = {"fourier", "positional"};
  int rc, v;
  const char *s = NULL;
  if ((rc = sde_json_opt_str(o, "name", &s))) return sde_fail_context(rc, "config");
  if (s && strcasecmp(s, "ncsnpp") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "config: model name \"%s\" is not ncsnpp", s);
  s = NULL;
  if ((rc = sde_json_opt_str(o, "nonlinearity", &s))) return sde_fail_context(rc, "config");
  if (s && strcasecmp(s, "swish") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "config: nonlinearity \"%s\" (only swish)", s);
  s = NULL;
  if ((rc = sde_json_opt_str(o, "normalization", &s))) return sde_fail_context(rc, "config");
  if (s && strcasecmp(s, "GroupNorm") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "config: normalization \"%s\" (only GroupNorm)", s);
  s = NULL;
  if ((rc = sde_json_opt_str(o, "attention_type", &s))) return sde_fail_context(rc, "config");
  if (s && strcasecmp(s, "ddpm") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "config: attention_type \"%s\" (only ddpm)", s);
  v = 3;
  if ((rc = parse_int(o, "conv_size", 1, 15, &v))) return rc;
  if (v != 3) return sde_fail(SDE_EUNSUPPORTED, "config: conv_size %d (only 3)", v);

  if ((rc = parse_int(o, "nf", 1, 1 << 16, &c->nf))) return rc;
  if ((rc = parse_int_list(o, "ch_mult", c->ch_mult, SDE_NET_MAX_LEVELS, &c->num_levels, 1,
                           1 << 12)))
    return rc;
  if ((rc = parse_int(o, "num_res_blocks", 1, 1000, &c->num_res_blocks))) return rc;
  if ((rc = parse_int_list(o, "attn_resolutions", c->attn_resolutions, SDE_NET_MAX_ATTN,
                           &c->num_attn, 0, 1 << 20)))
    return rc;
  v = (int)c->resblock_type;
  if ((rc = parse_enum(o, "resblock_type", resblock_names, 2, &v))) return rc;
  c->resblock_type = (sde_resblock_type)v;
  if ((rc = sde_json_opt_bool(o, "fir", &c->fir))) return sde_fail_context(rc, "config");
  if ((rc = parse_int_list(o, "fir_kernel", c->fir_kernel, SDE_NET_MAX_FIR, &c->fir_kernel_len,
                           -1000000, 1000000)))
    return rc;
  if ((rc = sde_json_opt_bool(o, "skip_rescale", &c->skip_rescale)))
    return sde_fail_context(rc, "config");
  v = (int)c->progressive;
  if ((rc = parse_enum(o, "progressive", prog_out_names, 4, &v))) return rc;
  c->progressive = (sde_progressive)v;
  v = (int)c->progressive_input;
  if ((rc = parse_enum(o, "progressive_input", prog_in_names, 4, &v))) return rc;
  c->progressive_input = (sde_progressive)v;
  v = (int)c->progressive_combine;
  if ((rc = parse_enum(o, "progressive_combine", combine_names, 2, &v))) return rc;
  c->progressive_combine = (sde_combine)v;
  v = (int)c->embedding_type;
  if ((rc = parse_enum(o, "embedding_type", embed_names, 2, &v))) return rc;
  c->embedding_type = (sde_embedding)v;
  if ((rc = sde_json_opt_number(o, "fourier_scale", &c->fourier_scale)))
    return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_bool(o, "scale_by_sigma", &c->scale_by_sigma)))
    return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_bool(o, "conditional", &c->conditional)))
    return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_number(o, "init_scale", &c->init_scale)))
    return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_number(o, "dropout", &c->dropout))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_bool(o, "resamp_with_conv", &c->resamp_with_conv)))
    return sde_fail_context(rc, "config");
  if ((rc = parse_int(o, "num_classes", 0, 1 << 20, &c->num_classes))) return rc;
  return SDE_OK;
}

static int parse_data_fields(const sde_json *o, sde_ncsnpp_config *c) {
  int rc;
  const char *s = NULL;
  if ((rc = parse_int(o, "image_size", 1, 1 << 16, &c->image_size))) return rc;
  if ((rc = parse_int(o, "num_channels", 1, 1 << 12, &c->num_channels))) return rc;
  if ((rc = sde_json_opt_bool(o, "centered", &c->centered))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_str(o, "dataset", &s))) return sde_fail_context(rc, "config");
  if (s) snprintf(c->dataset, sizeof c->dataset, "%s", s);
  return SDE_OK;
}

static int parse_sde_fields(const sde_json *o, sde_sde *sde) {
  int rc;
  int64_t n = sde->N;
  if ((rc = sde_json_opt_number(o, "sigma_min", &sde->sigma_min))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_number(o, "sigma_max", &sde->sigma_max))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_number(o, "beta_min", &sde->beta_min))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_number(o, "beta_max", &sde->beta_max))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_int(o, "num_scales", 2, 1000000, &n))) return sde_fail_context(rc, "config");
  if ((rc = sde_json_opt_int(o, "N", 2, 1000000, &n))) return sde_fail_context(rc, "config");
  sde->N = (int)n;
  return SDE_OK;
}

int sde_ncsnpp_config_from_json(const sde_json *j, sde_ncsnpp_config *c) {
  sde_ncsnpp_config_ncsnpp_cifar10(c);
  c->dataset[0] = 0;
  if (!j || j->type != SDE_JSON_OBJECT)
    return sde_fail(SDE_EFORMAT, "config: expected a JSON object");
  int rc;
  const sde_json *model = sde_json_get(j, "model");
  if (model && model->type == SDE_JSON_OBJECT) {
    if ((rc = parse_model_fields(model, c))) return rc;
  } else if ((rc = parse_model_fields(j, c))) {
    return rc;
  }
  /* data: top level (fixture layout) then the "data" object */
  if ((rc = parse_data_fields(j, c))) return rc;
  const sde_json *data = sde_json_get(j, "data");
  if (data) {
    if (data->type != SDE_JSON_OBJECT) return sde_fail(SDE_EFORMAT, "config: data must be an object");
    if ((rc = parse_data_fields(data, c))) return rc;
  }
  if ((rc = sde_json_opt_bool(j, "continuous", &c->continuous))) return sde_fail_context(rc, "config");
  const sde_json *training = sde_json_get(j, "training");
  if (training && training->type == SDE_JSON_OBJECT &&
      (rc = sde_json_opt_bool(training, "continuous", &c->continuous)))
    return sde_fail_context(rc, "config");
  /* SDE: "sde": "vesde" with top-level parameters, or "sde": {"kind": ..., ...} */
  const sde_json *js = sde_json_get(j, "sde");
  c->has_sde = js != NULL;
  if (js) {
    const char *kind = NULL;
    const sde_json *params = j;
    if (js->type == SDE_JSON_STRING) {
      kind = js->string;
    } else if (js->type == SDE_JSON_OBJECT) {
      if ((rc = sde_json_str(sde_json_get(js, "kind"), "config: sde.kind", &kind))) return rc;
      params = js;
    } else {
      return sde_fail(SDE_EFORMAT, "config: sde must be a name or an object");
    }
    sde_kind k;
    if ((rc = sde_kind_from_name(kind, &k))) return sde_fail_context(rc, "config");
    sde_init(&c->sde, k);
    if (params != j && (rc = parse_sde_fields(j, &c->sde))) return rc;
    if ((rc = parse_sde_fields(params, &c->sde))) return rc;
  } else {
    if ((rc = parse_sde_fields(j, &c->sde))) return rc;
  }
  return sde_ncsnpp_config_validate(c);
}

int sde_ncsnpp_config_validate(const sde_ncsnpp_config *c) {
  if (c->nf < 1) return sde_fail(SDE_EINVAL, "config: nf = %d must be >= 1", c->nf);
  if (c->num_levels < 1 || c->num_levels > SDE_NET_MAX_LEVELS)
    return sde_fail(SDE_EINVAL, "config: ch_mult needs 1..%d entries", SDE_NET_MAX_LEVELS);
  if (c->num_res_blocks < 1) return sde_fail(SDE_EINVAL, "config: num_res_blocks must be >= 1");
  if (c->num_channels < 1) return sde_fail(SDE_EINVAL, "config: num_channels must be >= 1");
  if (c->image_size < 1 || c->image_size % (1 << (c->num_levels - 1)) != 0)
    return sde_fail(SDE_EINVAL, "config: image_size %d must be divisible by 2^%d (len(ch_mult)-1)",
                    c->image_size, c->num_levels - 1);
  int64_t maxc = 0;
  for (int l = 0; l < c->num_levels; l++) {
    int64_t ch = (int64_t)c->nf * c->ch_mult[l];
    if (c->ch_mult[l] < 1 || ch > (1 << 16))
      return sde_fail(SDE_EINVAL, "config: nf*ch_mult[%d] = %lld out of range", l, (long long)ch);
    if (ch > maxc) maxc = ch;
  }
  /* GroupNorm groups = min(C/4, 32) must divide C and be >= 1 for every normalised width */
  if (c->nf < 4) return sde_fail(SDE_EINVAL, "config: nf = %d < 4 leaves GroupNorm without groups", c->nf);
  if (c->fir) {
    static const int k1331[4] = {1, 3, 3, 1};
    if (c->fir_kernel_len != 4 || memcmp(c->fir_kernel, k1331, sizeof k1331) != 0)
      return sde_fail(SDE_EUNSUPPORTED, "config: only fir_kernel [1,3,3,1] is implemented");
  }
  if (c->progressive == SDE_PROG_INPUT_SKIP)
    return sde_fail(SDE_EINVAL, "config: progressive must be none, output_skip or residual");
  if (c->progressive_input == SDE_PROG_OUTPUT_SKIP)
    return sde_fail(SDE_EINVAL, "config: progressive_input must be none, input_skip or residual");
  if (c->embedding_type == SDE_EMBED_FOURIER && !c->continuous)
    return sde_fail(SDE_EINVAL, "config: Fourier embeddings need continuous training");
  if (c->num_classes < 0) return sde_fail(SDE_EINVAL, "config: num_classes < 0");
  if (!(c->dropout >= 0.0 && c->dropout < 1.0))
    return sde_fail(SDE_EINVAL, "config: dropout = %g must be in [0, 1)", c->dropout);
  if (!isfinite(c->init_scale) || !isfinite(c->fourier_scale))
    return sde_fail(SDE_EINVAL, "config: init_scale (%g) and fourier_scale (%g) must be finite",
                    c->init_scale, c->fourier_scale);
  if (c->num_classes > 0 && c->scale_by_sigma)
    return sde_fail(SDE_EINVAL, "config: a classifier (num_classes > 0) has no scale_by_sigma");
  if (c->embedding_type == SDE_EMBED_POSITIONAL && c->nf < 4)
    return sde_fail(SDE_EINVAL, "config: positional embedding needs nf >= 4");
  if (c->has_sde) {
    int rc = sde_validate(&c->sde);
    if (rc) return sde_fail_context(rc, "config");
  }
  return SDE_OK;
}

typedef struct {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if (b->s && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 512;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) { b->oom = 1; return; }
    b->s = ns;
    b->cap = cap;
  }
}

static void sb_ints(sbuf *b, const char *key, const int *v, int n) {
  sb_printf(b, "\"%s\":[", key);
  for (int i = 0; i < n; i++) sb_printf(b, "%s%d", i ? "," : "", v[i]);
  sb_printf(b, "],");
}

char *sde_ncsnpp_config_to_json(const sde_ncsnpp_config *c) {
  static const char *const prog_names[] = {"none", "output_skip", "input_skip", "residual"};
  sbuf b = {0};
  sb_printf(&b, "{\"name\":\"ncsnpp\",\"nf\":%d,", c->nf);
  sb_ints(&b, "ch_mult", c->ch_mult, c->num_levels);
  sb_printf(&b, "\"num_res_blocks\":%d,", c->num_res_blocks);
  sb_ints(&b, "attn_resolutions", c->attn_resolutions, c->num_attn);
  sb_printf(&b, "\"resblock_type\":\"%s\",\"fir\":%s,",
            c->resblock_type == SDE_RESBLOCK_DDPM ? "ddpm" : "biggan", c->fir ? "true" : "false");
  sb_ints(&b, "fir_kernel", c->fir_kernel, c->fir_kernel_len);
  sb_printf(&b, "\"skip_rescale\":%s,\"progressive\":\"%s\",\"progressive_input\":\"%s\","
            "\"progressive_combine\":\"%s\",\"embedding_type\":\"%s\",\"fourier_scale\":%.17g,"
            "\"scale_by_sigma\":%s,\"conditional\":%s,\"init_scale\":%.17g,\"dropout\":%.17g,"
            "\"resamp_with_conv\":%s,\"nonlinearity\":\"swish\",\"normalization\":\"GroupNorm\","
            "\"attention_type\":\"ddpm\",\"conv_size\":3,",
            c->skip_rescale ? "true" : "false", prog_names[c->progressive],
            prog_names[c->progressive_input],
            c->progressive_combine == SDE_COMBINE_CAT ? "cat" : "sum",
            c->embedding_type == SDE_EMBED_FOURIER ? "fourier" : "positional", c->fourier_scale,
            c->scale_by_sigma ? "true" : "false", c->conditional ? "true" : "false",
            c->init_scale, c->dropout, c->resamp_with_conv ? "true" : "false");
  if (c->num_classes > 0) sb_printf(&b, "\"num_classes\":%d,", c->num_classes);
  if (c->has_sde)
    sb_printf(&b, "\"sde\":{\"kind\":\"%s\",\"sigma_min\":%.17g,\"sigma_max\":%.17g,"
              "\"beta_min\":%.17g,\"beta_max\":%.17g,\"N\":%d},",
              sde_kind_name(c->sde.kind), c->sde.sigma_min, c->sde.sigma_max, c->sde.beta_min,
              c->sde.beta_max, c->sde.N);
  sb_printf(&b, "\"continuous\":%s,\"data\":{\"image_size\":%d,\"num_channels\":%d,"
            "\"centered\":%s,\"dataset\":\"",
            c->continuous ? "true" : "false", c->image_size, c->num_channels,
            c->centered ? "true" : "false");
  for (const char *p = c->dataset; *p; p++) {
    if (*p == '"' || *p == '\\') sb_printf(&b, "\\%c", *p);
    else if ((unsigned char)*p < 0x20) sb_printf(&b, "\\u%04x", (unsigned char)*p);
    else sb_printf(&b, "%c", *p);
  }
  sb_printf(&b, "\"}}");
  if (b.oom) {
    free(b.s);
    sde_fail(SDE_ENOMEM, "out of memory writing a config");
    return NULL;
  }
  return b.s;
}

/* ---- module plan -------------------------------------------------------------------------- */

typedef enum {
  M_FOURIER,    /* GaussianFourierProjection: W[nf] */
  M_LINEAR,     /* nn.Linear: weight[out,in], bias[out] */
  M_CONV3,      /* conv3x3: weight[out,in,3,3], bias[out] */
  M_GROUPNORM,  /* nn.GroupNorm: weight[C], bias[C] */
  M_RESBLOCK,   /* ResnetBlockBigGANpp / ResnetBlockDDPMpp */
  M_ATTN,       /* AttnBlockpp */
  M_COMBINE,    /* Combine: Conv_0 1x1 [out,in,1,1] */
  M_DOWNSAMPLE, /* layerspp.Downsample (ddpm blocks; residual input pyramid) */
  M_UPSAMPLE,   /* layerspp.Upsample (ddpm blocks; residual output pyramid) */
} module_kind;

typedef struct {
  module_kind kind;
  int in_ch, out_ch;
  int res;        /* spatial size of the input */
  int up, down;   /* biggan resblock resampling */
  int shortcut;   /* resblock: Conv_2 (biggan, 1x1) or NIN_0 (ddpm) */
  int with_conv;  /* Downsample / Upsample */
  int first_param, n_params;
} net_module;

struct sde_ncsnpp {
  sde_ncsnpp_config config;
  int n_modules;
  net_module *modules;
  int n_params;
  sde_net_param *params;
  int64_t num_floats;
  float *param_buf;      /* [num_floats] contiguous, state_dict order */
  int n_hs;              /* skip connections stack */
  int hs_ch[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int hs_res[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int64_t max_act;       /* largest C*H*W of any activation (one sample) */
  double *sigmas;        /* [N] descending: get_sigmas(config), for positional scale_by_sigma */
  /* the backend every op runs on (NULL: the CPU). On a device backend dev_params is the
   * backend copy of param_buf, refreshed when param_buf was handed out writable. */
  const sde_backend *be;
  float *dev_params;
  int dev_dirty;
  int host_stale; /* dev_params were updated on the backend (training): download before use */
};

static const sde_backend *net_be(const sde_ncsnpp *net) {
  return net->be ? net->be : sde_backend_cpu();
}

/* Backend copy of the parameters, uploaded again after writable access to param_buf. */
static int sync_params(const sde_ncsnpp *cnet) {
  sde_ncsnpp *net = (sde_ncsnpp *)cnet;
  if (!net->be || net->be->host_memory || !net->dev_dirty) return SDE_OK;
  int rc = net->be->upload(net->be, net->dev_params, net->param_buf,
                           (size_t)net->num_floats * sizeof(float));
  if (!rc) net->dev_dirty = 0;
  return rc;
}

int sde_ncsnpp_backend_params_to_host(const sde_ncsnpp *cnet) {
  sde_ncsnpp *net = (sde_ncsnpp *)cnet;
  if (!net->host_stale || !net->be || net->be->host_memory) return SDE_OK;
  int rc = net->be->download(net->be, net->param_buf, net->dev_params,
                             (size_t)net->num_floats * sizeof(float));
  if (!rc) net->host_stale = 0;
  return rc;
}

float *sde_ncsnpp_backend_params(sde_ncsnpp *net) {
  if (!net->be || net->be->host_memory) return net->param_buf;
  if (sync_params(net)) return NULL;
  net->host_stale = 1;
  return net->dev_params;
}

int sde_ncsnpp_set_backend(sde_ncsnpp *net, const sde_backend *be) {
  if (!be) be = sde_backend_cpu();
  int rs = sde_ncsnpp_backend_params_to_host(net); /* parameters trained on the old backend */
  if (rs) return rs;
  if (net->be && !net->be->host_memory) net->be->free(net->be, net->dev_params);
  net->dev_params = NULL;
  net->be = be;
  if (be->host_memory) return SDE_OK;
  int rc = be->alloc(be, (size_t)(net->num_floats > 0 ? net->num_floats : 1) * sizeof(float),
                     (void **)&net->dev_params);
  if (rc) {
    net->be = NULL;
    return sde_fail_context(rc, "network parameters on %s", be->name);
  }
  net->dev_dirty = 1;
  if ((rc = sync_params(net))) {
    be->free(be, net->dev_params);
    net->dev_params = NULL;
    net->be = NULL;
  }
  return rc;
}

const sde_backend *sde_ncsnpp_backend(const sde_ncsnpp *net) { return net_be(net); }

typedef struct {
  sde_ncsnpp_config c;
  net_module *mods;
  int n_mods, cap_mods;
  sde_net_param *params;
  int n_params, cap_params;
  int64_t offset;
  int hs_ch[4 * SDE_NET_MAX_LEVELS * 64 + 8], hs_res[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int n_hs, max_hs;
  int64_t max_act;
  double flops;
  int oom;
} planner;

static net_module *add_module(planner *p, module_kind kind, int in_ch, int out_ch, int res) {
  if (p->oom) return NULL;
  if (p->n_mods == p->cap_mods) {
    int cap = p->cap_mods ? 2 * p->cap_mods : 64;
    net_module *m = realloc(p->mods, (size_t)cap * sizeof *m);
    if (!m) { p->oom = 1; return NULL; }
    p->mods = m;
    p->cap_mods = cap;
  }
  net_module *m = &p->mods[p->n_mods++];
  memset(m, 0, sizeof *m);
  m->kind = kind;
  m->in_ch = in_ch;
  m->out_ch = out_ch;
  m->res = res;
  m->first_param = p->n_params;
  int64_t a = (int64_t)(in_ch > out_ch ? in_ch : out_ch) * res * res * 4; /* up x2 */
  if (a > p->max_act) p->max_act = a;
  return m;
}

static void add_param(planner *p, const char *sub, int trainable, int ndim, int64_t d0,
                      int64_t d1, int64_t d2, int64_t d3) {
  if (p->oom) return;
  if (p->n_params == p->cap_params) {
    int cap = p->cap_params ? 2 * p->cap_params : 256;
    sde_net_param *q = realloc(p->params, (size_t)cap * sizeof *q);
    if (!q) { p->oom = 1; return; }
    p->params = q;
    p->cap_params = cap;
  }
  sde_net_param *q = &p->params[p->n_params++];
  memset(q, 0, sizeof *q);
  snprintf(q->name, sizeof q->name, "all_modules.%d.%s", p->n_mods - 1, sub);
  q->ndim = ndim;
  int64_t d[4] = {d0, d1, d2, d3};
  q->numel = 1;
  for (int i = 0; i < ndim; i++) {
    q->shape[i] = d[i];
    q->numel *= d[i];
  }
  q->offset = p->offset;
  q->trainable = trainable;
  p->offset += q->numel;
  p->mods[p->n_mods - 1].n_params++;
}

static void conv_params(planner *p, const char *prefix, int out, int in, int k) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sweight", prefix);
  snprintf(b, sizeof b, "%sbias", prefix);
  add_param(p, a, 1, 4, out, in, k, k);
  add_param(p, b, 1, 1, out, 0, 0, 0);
}

static void gn_params(planner *p, const char *prefix, int ch) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sweight", prefix);
  snprintf(b, sizeof b, "%sbias", prefix);
  add_param(p, a, 1, 1, ch, 0, 0, 0);
  add_param(p, b, 1, 1, ch, 0, 0, 0);
}

static void nin_params(planner *p, const char *prefix, int in, int out) {
  char a[48], b[48];
  snprintf(a, sizeof a, "%sW", prefix);
  snprintf(b, sizeof b, "%sb", prefix);
  add_param(p, a, 1, 2, in, out, 0, 0);
  add_param(p, b, 1, 1, out, 0, 0, 0);
}

static double conv_flops(int in, int out, int k, int out_res) {
  return 2.0 * in * out * k * k * (double)out_res * out_res;
}

static void plan_resblock(planner *p, int in_ch, int out_ch, int res, int up, int down) {
  const sde_ncsnpp_config *c = &p->c;
  net_module *m = add_module(p, M_RESBLOCK, in_ch, out_ch, res);
  if (!m) return;
  m->up = up;
  m->down = down;
  int out_res = up ? 2 * res : down ? res / 2 : res;
  int temb_dim = 4 * c->nf;
  gn_params(p, "GroupNorm_0.", in_ch);
  conv_params(p, "Conv_0.", out_ch, in_ch, 3);
  add_param(p, "Dense_0.weight", 1, 2, out_ch, temb_dim, 0, 0);
  add_param(p, "Dense_0.bias", 1, 1, out_ch, 0, 0, 0);
  gn_params(p, "GroupNorm_1.", out_ch);
  conv_params(p, "Conv_1.", out_ch, out_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, out_res) + conv_flops(out_ch, out_ch, 3, out_res);
  if (c->conditional) p->flops += 2.0 * temb_dim * out_ch;
  if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
    if (in_ch != out_ch || up || down) {
      m->shortcut = 1;
      conv_params(p, "Conv_2.", out_ch, in_ch, 1);
      p->flops += conv_flops(in_ch, out_ch, 1, out_res);
    }
  } else if (in_ch != out_ch) {
    m->shortcut = 1;
    nin_params(p, "NIN_0.", in_ch, out_ch);
    p->flops += conv_flops(in_ch, out_ch, 1, out_res);
  }
}

static void plan_attn(planner *p, int ch, int res) {
  if (!add_module(p, M_ATTN, ch, ch, res)) return;
  gn_params(p, "GroupNorm_0.", ch);
  nin_params(p, "NIN_0.", ch, ch);
  nin_params(p, "NIN_1.", ch, ch);
  nin_params(p, "NIN_2.", ch, ch);
  nin_params(p, "NIN_3.", ch, ch);
  double N = (double)res * res;
  p->flops += 4 * conv_flops(ch, ch, 1, res) + 2.0 * 2.0 * ch * N * N;
}

static void plan_conv3(planner *p, int in_ch, int out_ch, int res) {
  if (!add_module(p, M_CONV3, in_ch, out_ch, res)) return;
  conv_params(p, "", out_ch, in_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, res);
}

static void plan_groupnorm(planner *p, int ch, int res) {
  if (!add_module(p, M_GROUPNORM, ch, ch, res)) return;
  gn_params(p, "", ch);
}

/* layerspp.Downsample / Upsample (with_conv decides whether weights exist) */
static void plan_resample(planner *p, module_kind kind, int in_ch, int out_ch, int res,
                          int with_conv) {
  net_module *m = add_module(p, kind, in_ch, out_ch, res);
  if (!m) return;
  m->with_conv = with_conv;
  if (!with_conv) return;
  int out_res = kind == M_UPSAMPLE ? 2 * res : res / 2;
  conv_params(p, p->c.fir ? "Conv2d_0." : "Conv_0.", out_ch, in_ch, 3);
  p->flops += conv_flops(in_ch, out_ch, 3, out_res);
}

static void push_hs(planner *p, int ch, int res) {
  if (p->n_hs >= p->max_hs) { p->oom = 1; return; }
  p->hs_ch[p->n_hs] = ch;
  p->hs_res[p->n_hs] = res;
  p->n_hs++;
}

static int is_attn_res(const sde_ncsnpp_config *c, int res) {
  for (int i = 0; i < c->num_attn; i++)
    if (c->attn_resolutions[i] == res) return 1;
  return 0;
}

/* Replays NCSNpp.__init__. Fills p (modules, params, hs shapes, flops). */
static int plan_network(const sde_ncsnpp_config *c, planner *p) {
  memset(p, 0, sizeof *p);
  p->c = *c;
  p->max_hs = (int)(sizeof p->hs_ch / sizeof p->hs_ch[0]);
  int rc = sde_ncsnpp_config_validate(c);
  if (rc) return rc;
  if ((int64_t)c->num_levels * (c->num_res_blocks + 1) + 1 > p->max_hs)
    return sde_fail(SDE_EUNSUPPORTED, "config: too many blocks (%d levels x %d)", c->num_levels,
                    c->num_res_blocks);
  const int nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  int embed_dim;
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    add_module(p, M_FOURIER, 1, 2 * nf, 1);
    add_param(p, "W", 0, 1, nf, 0, 0, 0);
    embed_dim = 2 * nf;
  } else {
    embed_dim = nf;
  }
  if (c->conditional) {
    add_module(p, M_LINEAR, embed_dim, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, embed_dim, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    add_module(p, M_LINEAR, 4 * nf, 4 * nf, 1);
    add_param(p, "weight", 1, 2, 4 * nf, 4 * nf, 0, 0);
    add_param(p, "bias", 1, 1, 4 * nf, 0, 0, 0);
    p->flops += 2.0 * embed_dim * 4 * nf + 2.0 * 16 * nf * nf;
  }
  int res = c->image_size;
  int input_pyramid_ch = C0;
  plan_conv3(p, C0, nf, res);
  push_hs(p, nf, res);
  int in_ch = nf;
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      int out_ch = nf * c->ch_mult[l];
      plan_resblock(p, in_ch, out_ch, res, 0, 0);
      in_ch = out_ch;
      if (is_attn_res(c, res)) plan_attn(p, in_ch, res);
      push_hs(p, in_ch, res);
    }
    if (l != L - 1) {
      if (c->resblock_type == SDE_RESBLOCK_DDPM)
        plan_resample(p, M_DOWNSAMPLE, in_ch, in_ch, res, c->resamp_with_conv);
      else
        plan_resblock(p, in_ch, in_ch, res, 0, 1);
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        add_module(p, M_COMBINE, input_pyramid_ch, in_ch, res / 2);
        conv_params(p, "Conv_0.", in_ch, input_pyramid_ch, 1);
        p->flops += conv_flops(input_pyramid_ch, in_ch, 1, res / 2);
        if (c->progressive_combine == SDE_COMBINE_CAT) in_ch *= 2;
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        plan_resample(p, M_DOWNSAMPLE, input_pyramid_ch, in_ch, res, 1);
        input_pyramid_ch = in_ch;
      }
      res /= 2;
      push_hs(p, in_ch, res);
    }
  }
  in_ch = p->hs_ch[p->n_hs - 1];
  if (c->num_classes > 0) { /* classifier head: GroupNorm, act, mean over H, W, Linear */
    plan_groupnorm(p, in_ch, res);
    add_module(p, M_LINEAR, in_ch, c->num_classes, 1);
    add_param(p, "weight", 1, 2, c->num_classes, in_ch, 0, 0);
    add_param(p, "bias", 1, 1, c->num_classes, 0, 0, 0);
    p->flops += 2.0 * in_ch * c->num_classes;
    if (p->oom) return sde_fail(SDE_ENOMEM, "out of memory planning the network");
    return SDE_OK;
  }
  plan_resblock(p, in_ch, in_ch, res, 0, 0);
  plan_attn(p, in_ch, res);
  plan_resblock(p, in_ch, in_ch, res, 0, 0);
  int pyramid_ch = 0, hs_top = p->n_hs;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      int out_ch = nf * c->ch_mult[l];
      int skip = p->hs_ch[--hs_top];
      plan_resblock(p, in_ch + skip, out_ch, res, 0, 0);
      in_ch = out_ch;
    }
    if (is_attn_res(c, res)) plan_attn(p, in_ch, res);
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        plan_groupnorm(p, in_ch, res);
        if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
          plan_conv3(p, in_ch, C0, res);
          pyramid_ch = C0;
        } else {
          plan_conv3(p, in_ch, in_ch, res);
          pyramid_ch = in_ch;
        }
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        plan_groupnorm(p, in_ch, res);
        plan_conv3(p, in_ch, C0, res);
        pyramid_ch = C0;
      } else {
        plan_resample(p, M_UPSAMPLE, pyramid_ch, in_ch, res / 2, 1);
        pyramid_ch = in_ch;
      }
    }
    if (l != 0) {
      if (c->resblock_type == SDE_RESBLOCK_DDPM)
        plan_resample(p, M_UPSAMPLE, in_ch, in_ch, res, c->resamp_with_conv);
      else
        plan_resblock(p, in_ch, in_ch, res, 1, 0);
      res *= 2;
    }
  }
  if (c->progressive != SDE_PROG_OUTPUT_SKIP) {
    plan_groupnorm(p, in_ch, res);
    plan_conv3(p, in_ch, C0, res);
  }
  if (p->oom) return sde_fail(SDE_ENOMEM, "out of memory planning the network");
  return SDE_OK;
}

static void planner_free(planner *p) {
  free(p->mods);
  free(p->params);
}

int sde_ncsnpp_param_list(const sde_ncsnpp_config *c, sde_net_param **params, int *n) {
  planner p;
  *params = NULL;
  *n = 0;
  int rc = plan_network(c, &p);
  if (rc) {
    planner_free(&p);
    return rc;
  }
  free(p.mods);
  *params = p.params;
  *n = p.n_params;
  return SDE_OK;
}

int sde_ncsnpp_count(const sde_ncsnpp_config *c, int64_t *num_params, int64_t *num_modules,
                     double *flops) {
  planner p;
  int rc = plan_network(c, &p);
  if (!rc) {
    if (num_params) *num_params = p.offset;
    if (num_modules) *num_modules = p.n_mods;
    if (flops) *flops = p.flops;
  }
  planner_free(&p);
  return rc;
}

int sde_ncsnpp_create(const sde_ncsnpp_config *c, sde_ncsnpp **out) {
  *out = NULL;
  planner p;
  int rc = plan_network(c, &p);
  if (rc) {
    planner_free(&p);
    return rc;
  }
  sde_ncsnpp *net = sde_calloc(1, sizeof *net);
  if (!net) {
    planner_free(&p);
    return SDE_ENOMEM;
  }
  net->config = *c;
  net->modules = p.mods;
  net->n_modules = p.n_mods;
  net->params = p.params;
  net->n_params = p.n_params;
  net->num_floats = p.offset;
  net->n_hs = p.n_hs;
  memcpy(net->hs_ch, p.hs_ch, sizeof p.hs_ch);
  memcpy(net->hs_res, p.hs_res, sizeof p.hs_res);
  net->max_act = p.max_act;
  net->param_buf = sde_calloc((size_t)(p.offset > 0 ? p.offset : 1), sizeof(float));
  if (!net->param_buf) {
    sde_ncsnpp_free(net);
    return SDE_ENOMEM;
  }
  if (c->embedding_type == SDE_EMBED_POSITIONAL && c->scale_by_sigma) {
    /* utils.get_sigmas: exp(linspace(ln sigma_max, ln sigma_min, N)) in float64 */
    int N = c->sde.N;
    net->sigmas = sde_malloc((size_t)N * sizeof(double));
    if (!net->sigmas) {
      sde_ncsnpp_free(net);
      return SDE_ENOMEM;
    }
    double a = log(c->sde.sigma_max), b = log(c->sde.sigma_min), step = (b - a) / (N - 1);
    for (int i = 0; i < N; i++) net->sigmas[i] = exp(i == N - 1 ? b : a + i * step);
  }
  *out = net;
  return SDE_OK;
}

void sde_ncsnpp_free(sde_ncsnpp *net) {
  if (!net) return;
  if (net->be && !net->be->host_memory) net->be->free(net->be, net->dev_params);
  free(net->modules);
  free(net->params);
  free(net->param_buf);
  free(net->sigmas);
  free(net);
}

const sde_ncsnpp_config *sde_ncsnpp_get_config(const sde_ncsnpp *net) { return &net->config; }

float *sde_ncsnpp_param_buffer(sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  if (sde_ncsnpp_backend_params_to_host(net)) return NULL;
  net->dev_dirty = 1; /* the caller may write: the backend copy is refreshed before use */
  return net->param_buf;
}

const float *sde_ncsnpp_param_buffer_const(const sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  if (sde_ncsnpp_backend_params_to_host(net)) return NULL;
  return net->param_buf;
}

const sde_net_param *sde_ncsnpp_params(const sde_ncsnpp *net, int *n) {
  if (n) *n = net->n_params;
  return net->params;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* A bump allocator over the workspace. In measure mode nothing is computed: the walk only
 * records the peak, which sizes the workspace. */
typedef struct {
  const sde_ncsnpp *net;
  const sde_backend *be; /* every op goes through it; base, the tape and params are its memory */
  int B;
  int measure;
  float *base;
  size_t top, peak;
  const float *temb_act; /* [B, 4nf] silu(temb), NULL when unconditional */
  /* training only (sde_ncsnpp_train_*; NULL / 0 for inference) */
  struct sde_ncsnpp_train *tr;
  float dropout;
  uint64_t drop_seed, drop_stream0;
  float *dparams;        /* backward: gradient buffer [num_floats] or NULL */
} fwd_ctx;

static float *ws_alloc(fwd_ctx *x, size_t n) {
  n = (n + 15) & ~(size_t)15; /* 64-byte granularity */
  float *p = x->measure ? NULL : x->base + x->top;
  x->top += n;
  if (x->top > x->peak) x->peak = x->top;
  return p;
}

#define RUN(call)                   \
  do {                              \
    if (!ctx->measure) {            \
      int rc_ = (call);             \
      if (rc_) return rc_;          \
    }                               \
  } while (0)
#define DO(stmt)                    \
  do {                              \
    if (!ctx->measure) { stmt; }    \
  } while (0)

/* op of the backend: BE(conv2d_forward, out, ...) = be->conv2d_forward(be, out, ...) */
#define BE(op, ...) ctx->be->op(ctx->be, __VA_ARGS__)

static const float *P(const fwd_ctx *ctx, const net_module *m, int k) {
  const float *base = ctx->net->dev_params ? ctx->net->dev_params : ctx->net->param_buf;
  return base + ctx->net->params[m->first_param + k].offset;
}

static const float SQRT2 = 1.41421356237309504880f; /* np.sqrt(2.) in float32 */

typedef struct {
  float *out;
  const float *a, *b;
} join_job;

static void join_rescaled(void *ctx, int64_t i0, int64_t i1) {
  const join_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) j->out[i] = (j->a[i] + j->b[i]) / SQRT2;
}

/* out = (a + b) / sqrt(2) or a + b, elementwise; out may alias a or b. The table has no
 * divide: a device backend multiplies by 1/sqrt(2) (within 1 ulp of the CPU's division). */
static void residual_join(fwd_ctx *ctx, float *out, const float *a, const float *b, size_t n,
                          int rescale) {
  if (!rescale) {
    BE(add_forward, out, a, b, 1.0f, n);
  } else if (!ctx->be->host_memory) {
    BE(add_forward, out, a, b, 1.0f / SQRT2, n);
  } else {
    join_job j = {out, a, b};
    sde_parallel_for((int64_t)n, 1, join_rescaled, &j);
  }
}

/* xc = 2x - 1 (data in [0,1] -> [-1,1]). On a device: 2x (exact), then + (-1) per channel
 * row through add_channel_bias: the same single rounding as the host expression. */
static int input_affine(fwd_ctx *ctx, float *xc, const float *x, int B, int C, int HW) {
  const size_t n = (size_t)B * C * HW, mark = ctx->top;
  float *dm = ws_alloc(ctx, (size_t)B * C); /* -1 per (b, c) on a device */
  int rc = SDE_OK;
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
    for (size_t i = 0; i < n; i++) xc[i] = 2.0f * x[i] - 1.0f;
  } else {
    float *mone = sde_malloc((size_t)B * C * sizeof(float));
    if (!mone) return SDE_ENOMEM;
    for (int i = 0; i < B * C; i++) mone[i] = -1.0f;
    rc = ctx->be->upload(ctx->be, dm, mone, (size_t)B * C * sizeof(float));
    free(mone);
    if (!rc) {
      BE(scale, xc, x, 2.0f, n);
      BE(add_channel_bias_forward, xc, dm, B, C, HW);
    }
  }
  ctx->top = mark;
  return rc;
}

/* dst[n] = host src[n] into backend memory (labels, log sigmas: a few floats per call) */
static int to_backend(fwd_ctx *ctx, float *dst, const float *src, size_t n) {
  if (ctx->measure) return SDE_OK;
  return ctx->be->upload(ctx->be, dst, src, n * sizeof(float));
}

/* dst[n] = v in backend memory */
static int fill_const(fwd_ctx *ctx, float *dst, float v, size_t n) {
  if (ctx->measure) return SDE_OK;
  float *h = sde_malloc(n * sizeof(float));
  if (!h) return SDE_ENOMEM;
  for (size_t i = 0; i < n; i++) h[i] = v;
  int rc = to_backend(ctx, dst, h, n);
  free(h);
  return rc;
}

/* out[b] = in[b] / sigma[b] per sample (scale_by_sigma); sig_d: float64 sigmas (positional),
 * else sig_f. On a device: one axpby_rows with a = 1/sigma (within 1 ulp). */
static int divide_rows(fwd_ctx *ctx, float *out, const float *in, const float *sig_f,
                       const double *sig_d, int B, size_t per) {
  if (ctx->be->host_memory) {
    for (int b = 0; b < B; b++) {
      if (sig_d) {
        const double sg = sig_d[b];
        for (size_t i = 0; i < per; i++) out[b * per + i] = (float)(in[b * per + i] / sg);
      } else {
        const float sg = sig_f[b];
        for (size_t i = 0; i < per; i++) out[b * per + i] = in[b * per + i] / sg;
      }
    }
    return SDE_OK;
  }
  double *a = sde_malloc((size_t)B * 2 * sizeof(double));
  if (!a) return SDE_ENOMEM;
  for (int b = 0; b < B; b++) {
    a[b] = 1.0 / (sig_d ? sig_d[b] : (double)sig_f[b]);
    a[B + b] = 0.0;
  }
  int rc = BE(axpby_rows, out, a, in, a + B, in, B, (int64_t)per);
  free(a);
  return rc;
}

/* conv k x k, stride 1, pad k/2: inp [B,Cin,H,H] -> out [B,Cout,H,H] */
static int conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                     int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  RUN(BE(conv2d_forward, out, inp, w, bias, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

/* Parameter-free resampling of the pyramid / biggan blocks: FIR [1,3,3,1] or nearest/mean. */
static int resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_upsample2x_forward, out, inp, ctx->B, C, H, H));
  else RUN(BE(upsample_nearest2x_forward, out, inp, ctx->B, C, H, H));
  return SDE_OK;
}

static int resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_downsample2x_forward, out, inp, ctx->B, C, H, H));
  else RUN(BE(avgpool2x_forward, out, inp, ctx->B, C, H, H));
  return SDE_OK;
}

/* ResnetBlockBigGANpp / ResnetBlockDDPMpp: x [B,Cin,H,H] -> out [B,Cout,H',H'] */
static int run_resblock(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho;
  const float *gn0_w = P(ctx, m, 0), *gn0_b = P(ctx, m, 1), *conv0_w = P(ctx, m, 2),
              *conv0_b = P(ctx, m, 3), *dense0_w = P(ctx, m, 4), *dense0_b = P(ctx, m, 5),
              *gn1_w = P(ctx, m, 6), *gn1_b = P(ctx, m, 7), *conv1_w = P(ctx, m, 8),
              *conv1_b = P(ctx, m, 9);
  const float *skip_w = m->shortcut ? P(ctx, m, 10) : NULL, *skip_b = m->shortcut ? P(ctx, m, 11) : NULL;
  size_t mark = ctx->top;
  /* h = act(GroupNorm_0(x)) */
  float *h0 = ws_alloc(ctx, in_n);
  RUN(BE(groupnorm_silu_forward, h0, x, gn0_w, gn0_b, B, Cin, H * H, sde_nn_groupnorm_groups(Cin),
                                    SDE_NN_GROUPNORM_EPS));
  /* up/down both h and the skip x */
  const float *hr = h0, *xr = x;
  if (m->up || m->down) {
    float *hu = ws_alloc(ctx, (size_t)B * Cin * out_hw), *xu = ws_alloc(ctx, (size_t)B * Cin * out_hw);
    if (m->up) {
      if (resample_up(ctx, hu, h0, Cin, H) || resample_up(ctx, xu, x, Cin, H)) return SDE_EINVAL;
    } else {
      if (resample_down(ctx, hu, h0, Cin, H) || resample_down(ctx, xu, x, Cin, H)) return SDE_EINVAL;
    }
    hr = hu;
    xr = xu;
  }
  /* h = Conv_0(h) + Dense_0(act(temb)) */
  float *h1 = ws_alloc(ctx, (size_t)B * Cout * out_hw);
  int rc = conv_same(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3);
  if (rc) return rc;
  if (c->conditional) {
    float *proj = ws_alloc(ctx, (size_t)B * Cout);
    RUN(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
    DO(BE(add_channel_bias_forward, h1, proj, B, Cout, (int)out_hw));
  }
  /* h = Conv_1(act(GroupNorm_1(h))) (dropout inactive) */
  RUN(BE(groupnorm_silu_forward, h1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw,
                                    sde_nn_groupnorm_groups(Cout), SDE_NN_GROUPNORM_EPS));
  float *h2 = ws_alloc(ctx, (size_t)B * Cout * out_hw);
  if ((rc = conv_same(ctx, h2, h1, conv1_w, conv1_b, Cout, Cout, Ho, 3))) return rc;
  /* shortcut */
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, (size_t)B * Cout * out_hw);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1))) return rc;
    } else {
      RUN(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    }
    xs = xc;
  }
  DO(residual_join(ctx, out, xs, h2, (size_t)B * Cout * out_hw, c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* AttnBlockpp: x [B,C,H,H] -> out [B,C,H,H] */
static int run_attn(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res;
  const size_t n = (size_t)B * C * N;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, n), *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  RUN(BE(groupnorm_forward, h, NULL, NULL, x, P(ctx, m, 0), P(ctx, m, 1), B, C, N,
                               sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  RUN(BE(nin_forward, q, h, P(ctx, m, 2), P(ctx, m, 3), B, C, N, C));
  RUN(BE(nin_forward, k, h, P(ctx, m, 4), P(ctx, m, 5), B, C, N, C));
  RUN(BE(nin_forward, v, h, P(ctx, m, 6), P(ctx, m, 7), B, C, N, C));
  RUN(BE(attention_forward, h, att, q, k, v, B, C, N));
  RUN(BE(nin_forward, q, h, P(ctx, m, 8), P(ctx, m, 9), B, C, N, C));
  DO(residual_join(ctx, out, x, q, n, ctx->net->config.skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* act(GroupNorm(x)) then conv3x3: the output heads and the progressive pyramid heads */
static int run_norm_conv(fwd_ctx *ctx, const net_module *gn, const net_module *cv, const float *x,
                         float *out) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, (size_t)B * C * H * H);
  RUN(BE(groupnorm_silu_forward, h, x, P(ctx, gn, 0), P(ctx, gn, 1), B, C, H * H,
                                    sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  int rc = conv_same(ctx, out, h, P(ctx, cv, 0), P(ctx, cv, 1), C, cv->out_ch, H, 3);
  ctx->top = mark;
  return rc;
}

/* layerspp.Downsample: x [B,Cin,H,H] -> out [B,Cout,H/2,H/2] */
static int run_downsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return resample_down(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(fir_conv_downsample2x_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H,
                                             Cout, scratch));
  } else {
    /* F.pad(x, (0,1,0,1)) then 3x3 stride-2 unpadded conv */
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1};
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(conv2d_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), &s, scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* layerspp.Upsample: x [B,Cin,H,H] -> out [B,Cout,2H,2H] */
static int run_upsample(fwd_ctx *ctx, const net_module *m, const float *x, float *out) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  if (!m->with_conv) return resample_up(ctx, out, x, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_ncsnpp_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    RUN(BE(fir_conv_upsample2x_forward, out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H, Cout,
                                           scratch));
  } else {
    float *u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
    RUN(BE(upsample_nearest2x_forward, u, x, B, Cin, H, H));
    int rc = conv_same(ctx, out, u, P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, 2 * H, 3);
    if (rc) return rc;
  }
  ctx->top = mark;
  return SDE_OK;
}

static int forward_walk(fwd_ctx *ctx, const float *x, const float *labels, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  if (c->num_classes > 0)
    return sde_fail(SDE_EUNSUPPORTED, "a classifier network runs through the training forward");
  const net_module *mods = net->modules;
  const int B = ctx->B, nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  const size_t act_n = (size_t)B * (size_t)net->max_act;
  int mi = 0, rc;

  /* time embedding -> temb_act = act(Dense_1(act(Dense_0(emb)))) */
  int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
  float *emb = ws_alloc(ctx, (size_t)B * embed_dim);
  float *lab = ws_alloc(ctx, (size_t)B); /* ln sigma (Fourier) or the labels, backend memory */
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    if (!ctx->measure) {
      float *u = sde_malloc((size_t)B * sizeof(float));
      if (!u) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) u[b] = logf(labels[b]);
      rc = to_backend(ctx, lab, u, (size_t)B);
      free(u);
      if (rc) return rc;
    }
    RUN(BE(fourier_embedding_forward, emb, lab, P(ctx, &mods[mi], 0), B, nf));
    mi++;
  } else {
    if ((rc = to_backend(ctx, lab, labels, (size_t)B))) return rc;
    RUN(BE(timestep_embedding_forward, emb, lab, B, nf));
  }
  ctx->temb_act = NULL;
  if (c->conditional) {
    float *t1 = ws_alloc(ctx, (size_t)B * 4 * nf), *t2 = ws_alloc(ctx, (size_t)B * 4 * nf);
    RUN(BE(linear_forward, t1, emb, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, embed_dim, 4 * nf));
    mi++;
    DO(BE(silu_forward, t1, t1, (size_t)B * 4 * nf));
    RUN(BE(linear_forward, t2, t1, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, 4 * nf, 4 * nf));
    mi++;
    DO(BE(silu_forward, t2, t2, (size_t)B * 4 * nf)); /* every block applies act(temb) */
    ctx->temb_act = t2;
  }

  /* input: 2x - 1 unless centred */
  const int S = c->image_size;
  const size_t x_n = (size_t)B * C0 * S * S;
  const float *xin = x;
  if (!c->centered) {
    float *xc = ws_alloc(ctx, x_n);
    if ((rc = input_affine(ctx, xc, x, B, C0, S * S))) return rc;
    xin = xc;
  }

  /* skip stack storage, ping-pong h buffers, pyramid buffers */
  float *hs[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  for (int i = 0; i < net->n_hs; i++)
    hs[i] = ws_alloc(ctx, (size_t)B * net->hs_ch[i] * net->hs_res[i] * net->hs_res[i]);
  float *hbuf[2] = {ws_alloc(ctx, act_n), ws_alloc(ctx, act_n)};
  float *cat = ws_alloc(ctx, act_n);
  int cur = 0;
  float *pyr[2] = {NULL, NULL};
  if (c->progressive != SDE_PROG_NONE || c->progressive_input != SDE_PROG_NONE) {
    pyr[0] = ws_alloc(ctx, act_n);
    pyr[1] = ws_alloc(ctx, act_n);
  }
  const float *input_pyramid = xin;
  int ip_cur = 0;
  int n_hs = 0;
#define HS_PUSH(src, ch, r)                                                               \
  do {                                                                                     \
    RUN(ctx->be->copy(ctx->be, hs[n_hs], (src), sizeof(float) * (size_t)B * (ch) * (r) * (r))); \
    n_hs++;                                                                                \
  } while (0)

  int res = S;
  if ((rc = conv_same(ctx, hs[0], xin, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), C0, nf, S, 3)))
    return rc;
  mi++;
  n_hs = 1;
  int ch = nf; /* channels of hs[-1] / h */
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      const net_module *m = &mods[mi++];
      float *h = hbuf[cur];
      if ((rc = run_resblock(ctx, m, hs[n_hs - 1], h))) return rc;
      ch = m->out_ch;
      if (mi < net->n_modules && mods[mi].kind == M_ATTN && mods[mi].res == res &&
          is_attn_res(c, res)) {
        if ((rc = run_attn(ctx, &mods[mi++], h, hs[n_hs]))) return rc;
        n_hs++;
      } else {
        HS_PUSH(h, ch, res);
      }
    }
    if (l != L - 1) {
      const net_module *m = &mods[mi++];
      float *h = hbuf[cur];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = run_downsample(ctx, m, hs[n_hs - 1], h);
      else rc = run_resblock(ctx, m, hs[n_hs - 1], h);
      if (rc) return rc;
      res /= 2;
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        float *ip = pyr[ip_cur];
        if ((rc = resample_down(ctx, ip, input_pyramid, C0, 2 * res))) return rc;
        input_pyramid = ip;
        ip_cur ^= 1;
        const net_module *cm = &mods[mi++];
        /* Combine: Conv_0(pyramid) then sum or cat [Conv_0(pyramid), h] */
        float *hc = hbuf[cur ^ 1];
        if ((rc = conv_same(ctx, hc, ip, P(ctx, cm, 0), P(ctx, cm, 1), C0, ch, res, 1))) return rc;
        if (c->progressive_combine == SDE_COMBINE_SUM) {
          DO(BE(add_forward, hc, hc, h, 1.0f, (size_t)B * ch * res * res));
        } else {
          DO(BE(concat_channels_forward, cat, hc, h, B, ch, ch, res * res));
          hc = cat;
          ch *= 2;
        }
        HS_PUSH(hc, ch, res);
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        const net_module *pm = &mods[mi++];
        float *ip = pyr[ip_cur];
        if ((rc = run_downsample(ctx, pm, input_pyramid, ip))) return rc;
        DO(residual_join(ctx, ip, ip, h, (size_t)B * ch * res * res, c->skip_rescale));
        input_pyramid = ip;
        ip_cur ^= 1;
        HS_PUSH(ip, ch, res);
      } else {
        HS_PUSH(h, ch, res);
      }
    }
  }

  /* middle */
  float *h = hbuf[cur];
  if ((rc = run_resblock(ctx, &mods[mi++], hs[n_hs - 1], h))) return rc;
  if ((rc = run_attn(ctx, &mods[mi++], h, hbuf[cur ^ 1]))) return rc;
  cur ^= 1;
  if ((rc = run_resblock(ctx, &mods[mi++], hbuf[cur], hbuf[cur ^ 1]))) return rc;
  cur ^= 1;

  /* up path */
  float *pyramid = NULL;
  int pyr_cur = 0;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      const net_module *m = &mods[mi++];
      n_hs--;
      int skip_ch = net->hs_ch[n_hs];
      DO(BE(concat_channels_forward, cat, hbuf[cur], hs[n_hs], B, ch, skip_ch, res * res));
      if ((rc = run_resblock(ctx, m, cat, hbuf[cur ^ 1]))) return rc;
      cur ^= 1;
      ch = m->out_ch;
    }
    if (is_attn_res(c, res)) {
      if ((rc = run_attn(ctx, &mods[mi++], hbuf[cur], hbuf[cur ^ 1]))) return rc;
      cur ^= 1;
    }
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        pyramid = pyr[pyr_cur];
        if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], pyramid))) return rc;
        mi += 2;
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        float *up = pyr[pyr_cur ^ 1];
        if ((rc = resample_up(ctx, up, pyramid, C0, res / 2))) return rc;
        size_t mark = ctx->top;
        float *ph = ws_alloc(ctx, (size_t)B * C0 * res * res);
        if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], ph))) return rc;
        mi += 2;
        DO(BE(add_forward, up, up, ph, 1.0f, (size_t)B * C0 * res * res));
        ctx->top = mark;
        pyramid = up;
        pyr_cur ^= 1;
      } else { /* residual */
        float *up = pyr[pyr_cur ^ 1];
        if ((rc = run_upsample(ctx, &mods[mi++], pyramid, up))) return rc;
        DO(residual_join(ctx, up, up, hbuf[cur], (size_t)B * ch * res * res, c->skip_rescale));
        pyramid = up;
        pyr_cur ^= 1;
        RUN(ctx->be->copy(ctx->be, hbuf[cur], up, sizeof(float) * (size_t)B * ch * res * res)); /* h = pyramid */
      }
    }
    if (l != 0) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = run_upsample(ctx, m, hbuf[cur], hbuf[cur ^ 1]);
      else rc = run_resblock(ctx, m, hbuf[cur], hbuf[cur ^ 1]);
      if (rc) return rc;
      cur ^= 1;
      res *= 2;
    }
  }
  if (n_hs != 0) return sde_fail(SDE_EINVAL, "internal: %d skip tensors left", n_hs);

  const size_t out_n = x_n;
  if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
    RUN(ctx->be->copy(ctx->be, out, pyramid, sizeof(float) * out_n));
  } else {
    if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], out))) return rc;
    mi += 2;
  }
  if (mi != net->n_modules)
    return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);

  if (c->scale_by_sigma && !ctx->measure) {
    const size_t per = (size_t)C0 * S * S;
    double *sig = NULL;
    if (c->embedding_type != SDE_EMBED_FOURIER) {
      /* used_sigmas = sigmas[labels.long()] (float64 buffer: the division is in double) */
      if (!(sig = sde_malloc((size_t)B * sizeof(double)))) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) {
        long idx = (long)labels[b];
        if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N) {
          free(sig);
          return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                          (double)labels[b], c->sde.N);
        }
        sig[b] = net->sigmas[idx];
      }
    }
    rc = divide_rows(ctx, out, out, labels, sig, B, per); /* Fourier: out / sigma (float) */
    free(sig);
    if (rc) return rc;
  }
  return SDE_OK;
#undef HS_PUSH
}

size_t sde_ncsnpp_workspace_floats(const sde_ncsnpp *net, int B) {
  fwd_ctx ctx = {.net = net, .be = net_be(net), .B = B, .measure = 1};
  float dummy_labels[1] = {1.0f};
  (void)forward_walk(&ctx, NULL, dummy_labels, NULL);
  return ctx.peak + 16;
}

static int check_labels(const sde_ncsnpp *net, int B, const float *labels) {
  const sde_ncsnpp_config *c = &net->config;
  for (int b = 0; b < B; b++) {
    if (!isfinite(labels[b]))
      return sde_fail(SDE_EINVAL, "network label %d is not finite", b);
    if (c->embedding_type == SDE_EMBED_FOURIER && !(labels[b] > 0.0f))
      return sde_fail(SDE_EINVAL, "network label %d = %g: Fourier embeddings need sigma > 0", b,
                      (double)labels[b]);
  }
  return SDE_OK;
}

int sde_ncsnpp_forward_dev(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                           float *out, float *workspace) {
  if (B <= 0) return B == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", B);
  if (!x || !labels || !out) return sde_fail(SDE_EINVAL, "network forward: NULL argument");
  int rc = check_labels(net, B, labels);
  if (!rc) rc = sync_params(net);
  if (rc) return rc;
  const sde_backend *be = net_be(net);
  float *owned = NULL;
  if (!workspace) {
    size_t n = sde_ncsnpp_workspace_floats(net, B);
    if ((rc = be->alloc(be, n * sizeof(float), (void **)&owned))) return rc;
    workspace = owned;
  }
  fwd_ctx ctx = {.net = net, .be = be, .B = B, .measure = 0, .base = workspace};
  rc = forward_walk(&ctx, x, labels, out);
  if (owned) {
    if (!be->host_memory) {
      int rs = be->synchronize(be); /* the walk's ops must finish before the free */
      rc = rc ? rc : rs;
    }
    be->free(be, owned);
  }
  return rc;
}

int sde_ncsnpp_forward(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                       float *out, float *workspace) {
  const sde_backend *be = net_be(net);
  if (be->host_memory || B <= 0 || !x || !out)
    return sde_ncsnpp_forward_dev(net, B, x, labels, out, workspace);
  /* host x, out around a device walk */
  const size_t bytes = (size_t)B * net->config.num_channels * net->config.image_size *
                       net->config.image_size * sizeof(float);
  float *dx = NULL, *dout = NULL;
  int rc = be->alloc(be, bytes, (void **)&dx);
  if (!rc) rc = be->alloc(be, bytes, (void **)&dout);
  if (!rc) rc = be->upload(be, dx, x, bytes);
  if (!rc) rc = sde_ncsnpp_forward_dev(net, B, dx, labels, dout, workspace);
  if (!rc) rc = be->download(be, out, dout, bytes);
  be->free(be, dx);
  be->free(be, dout);
  return rc;
}

/* ---- training: forward with saved activations, backward ---------------------------------
 *
 * The training forward walks the module list exactly like forward_walk (same ops, same
 * operand order, so the same numbers) but never reuses a buffer: every tensor of the
 * graph gets its own storage and a gradient buffer, and every op is recorded on a tape
 * with pointers to the intermediates its backward needs. The backward runs the tape in
 * reverse; a tensor's gradient is complete when its producer is reached because every
 * consumer comes later on the tape. Gradients are zeroed on first touch.
 *
 * Workspace layout (one float buffer): [forward: tensors + grads + saved intermediates |
 * backward temporaries]. Its size comes from two measuring walks (no arithmetic) at
 * max_batch; smaller batches take a prefix of every region. */

enum {
  TP_CONV,     /* conv k x k, stride 1, pad k/2 (conv_in, Combine.Conv_0): m, C, C2, H, k */
  TP_RES,      /* ResnetBlock: m */
  TP_ATTN,     /* AttnBlockpp: m */
  TP_NORMCONV, /* act(GroupNorm) + conv3x3 heads: m (GroupNorm), m2 (conv) */
  TP_DOWN,     /* layerspp.Downsample: m */
  TP_UP,       /* layerspp.Upsample: m */
  TP_RUP,      /* parameter-free x2 upsample (FIR or nearest): C, H (input) */
  TP_RDOWN,    /* parameter-free x2 downsample (FIR or mean): C, H (input) */
  TP_ADD,      /* out = in0 + in1, or (in0 + in1)/sqrt(2) when k = 1 */
  TP_CONCAT,   /* out = [in0 (C channels), in1 (C2 channels)] over H*H */
  TP_SCALE,    /* out = in0 / sigma[b] per sample (scale_by_sigma) */
  TP_HEAD,     /* classifier: Linear(mean_HW(act(GroupNorm(in0)))): m (GroupNorm), m2 (Linear) */
};

typedef struct {
  int kind;
  const net_module *m, *m2;
  int in0, in1, out;  /* tensor ids */
  int C, C2, H, k;
  float *s[16];       /* saved intermediates (per kind, see the train functions) */
} tape_op;

typedef struct {
  float *data, *grad;
  size_t n;
  int touched;        /* grad zeroed (backward) */
} tape_tensor;

struct sde_ncsnpp_train {
  const sde_ncsnpp *net;
  int max_batch, with_dropout;
  size_t floats;
  float *buf;
  tape_op *ops;
  tape_tensor *t;
  int cap_ops, cap_t;
  /* the last forward */
  int B, n_ops, n_t, valid;
  size_t fwd_top;
  int mod_fourier, mod_lin0;                 /* module indices (-1 if absent) */
  float *u, *emb, *t1, *t1a, *t2, *ta, *dta; /* time embedding chain */
  int x_id, out_id;
  size_t out_n;
  const sde_backend *be;                     /* buf, dgrad live there (the net's at creation) */
  float *sig_host;                           /* [max_batch] scale_by_sigma sigmas */
  float *dgrad;                              /* device backends: parameter gradients */
};

static int tt_new(fwd_ctx *ctx, size_t n) {
  struct sde_ncsnpp_train *tr = ctx->tr;
  int id = tr->n_t++;
  float *d = ws_alloc(ctx, n), *g = ws_alloc(ctx, n);
  if (tr->t && id < tr->cap_t) {
    tr->t[id].data = d;
    tr->t[id].grad = g;
    tr->t[id].n = n;
    tr->t[id].touched = 0;
  }
  return id;
}

static float *TD(fwd_ctx *ctx, int id) { return ctx->measure ? NULL : ctx->tr->t[id].data; }

/* The gradient of tensor id, zeroed on first use. */
static float *TG(fwd_ctx *ctx, int id) {
  if (ctx->measure || id < 0) return NULL;
  tape_tensor *t = &ctx->tr->t[id];
  if (!t->touched) {
    ctx->be->zero(ctx->be, t->grad, t->n * sizeof(float));
    t->touched = 1;
  }
  return t->grad;
}

static tape_op *tp_push(fwd_ctx *ctx, int kind, const net_module *m) {
  static _Thread_local tape_op dummy;
  struct sde_ncsnpp_train *tr = ctx->tr;
  int i = tr->n_ops++;
  tape_op *op = tr->ops && i < tr->cap_ops ? &tr->ops[i] : &dummy;
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->m = m;
  op->in0 = op->in1 = op->out = -1;
  return op;
}

/* parameter gradient k of module m, NULL when not wanted */
static float *GP(const fwd_ctx *ctx, const net_module *m, int k) {
  if (!ctx->dparams) return NULL;
  return ctx->dparams + ctx->net->params[m->first_param + k].offset;
}

static float *zalloc(fwd_ctx *ctx, size_t n) {
  float *p = ws_alloc(ctx, n);
  if (p) ctx->be->zero(ctx->be, p, n * sizeof(float));
  return p;
}

static int conv_same_bwd(fwd_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  RUN(BE(conv2d_backward, dinp, dw, db, dout, inp, w, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

static int resample_up_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_upsample2x_backward, dinp, dout, ctx->B, C, H, H));
  else RUN(BE(upsample_nearest2x_backward, dinp, dout, ctx->B, C, H, H));
  return SDE_OK;
}

static int resample_down_bwd(fwd_ctx *ctx, float *dinp, const float *dout, int C, int H) {
  if (ctx->net->config.fir) RUN(BE(fir_downsample2x_backward, dinp, dout, ctx->B, C, H, H));
  else RUN(BE(avgpool2x_backward, dinp, dout, ctx->B, C, H, H));
  return SDE_OK;
}

/* -- train forward of each module kind ----------------------------------------------------- */

static int tr_conv(fwd_ctx *ctx, const net_module *m, int in, int Cin, int Cout, int H, int k,
                   int *outp) {
  tape_op *op = tp_push(ctx, TP_CONV, m);
  op->in0 = in;
  op->C = Cin;
  op->C2 = Cout;
  op->H = H;
  op->k = k;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * Cout * H * H);
  *outp = out;
  return conv_same(ctx, TD(ctx, out), TD(ctx, in), P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, H, k);
}

/* Saved: s0 g0 = GN_0(x), s1 a0 = act(g0), s2 mean0, s3 rstd0, s4 hr (resampled a0 or a0),
 * s5 xr (resampled x or x), s6 h1 = Conv_0 + Dense_0, s7 g1 = GN_1(h1), s8 mean1, s9 rstd1,
 * s10 a1 = act(g1), s11 d1 = dropout(a1) (the Conv_1 input), s12 mask (NULL: no dropout). */
static int tr_resblock(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const int G0 = sde_nn_groupnorm_groups(Cin), G1 = sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  const float *gn0_w = P(ctx, m, 0), *gn0_b = P(ctx, m, 1), *conv0_w = P(ctx, m, 2),
              *conv0_b = P(ctx, m, 3), *dense0_w = P(ctx, m, 4), *dense0_b = P(ctx, m, 5),
              *gn1_w = P(ctx, m, 6), *gn1_b = P(ctx, m, 7), *conv1_w = P(ctx, m, 8),
              *conv1_b = P(ctx, m, 9);
  const float *skip_w = m->shortcut ? P(ctx, m, 10) : NULL,
              *skip_b = m->shortcut ? P(ctx, m, 11) : NULL;
  tape_op *op = tp_push(ctx, TP_RES, m);
  op->in0 = in;
  const float *x = TD(ctx, in);
  float *g0 = ws_alloc(ctx, in_n), *a0 = ws_alloc(ctx, in_n);
  float *mean0 = ws_alloc(ctx, (size_t)B * G0), *rstd0 = ws_alloc(ctx, (size_t)B * G0);
  RUN(BE(groupnorm_forward, g0, mean0, rstd0, x, gn0_w, gn0_b, B, Cin, H * H, G0,
                               SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a0, g0, in_n));
  float *hr = a0;
  float *xr = (float *)x;
  if (m->up || m->down) {
    hr = ws_alloc(ctx, r_n);
    xr = ws_alloc(ctx, r_n);
    if (m->up) {
      if (resample_up(ctx, hr, a0, Cin, H) || resample_up(ctx, xr, x, Cin, H)) return SDE_EINVAL;
    } else {
      if (resample_down(ctx, hr, a0, Cin, H) || resample_down(ctx, xr, x, Cin, H))
        return SDE_EINVAL;
    }
  }
  float *h1 = ws_alloc(ctx, o_n);
  int rc = conv_same(ctx, h1, hr, conv0_w, conv0_b, Cin, Cout, Ho, 3);
  if (rc) return rc;
  float *g1 = ws_alloc(ctx, o_n), *a1 = ws_alloc(ctx, o_n);
  float *mean1 = ws_alloc(ctx, (size_t)B * G1), *rstd1 = ws_alloc(ctx, (size_t)B * G1);
  float *d1 = a1, *mask = NULL;
  if (ctx->tr->with_dropout) {
    float *mk = ws_alloc(ctx, o_n), *dd = ws_alloc(ctx, o_n);
    if (ctx->dropout > 0.0f) {
      mask = mk;
      d1 = dd;
    }
  }
  int out = tt_new(ctx, o_n);
  *outp = out;
  op->out = out;
  float *save[13] = {g0, a0, mean0, rstd0, hr, xr, h1, g1, mean1, rstd1, a1, d1, mask};
  memcpy(op->s, save, sizeof save);
  size_t mark = ctx->top;
  if (c->conditional) {
    float *proj = ws_alloc(ctx, (size_t)B * Cout);
    RUN(BE(linear_forward, proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
    DO(BE(add_channel_bias_forward, h1, proj, B, Cout, (int)out_hw));
  }
  RUN(BE(groupnorm_forward, g1, mean1, rstd1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw, G1,
                               SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a1, g1, o_n));
  if (mask && !ctx->measure) {
    /* row b: uniforms of (drop_seed, drop_stream0 + b, 1000 + module) -> 0 or 1/(1-p) */
    const float p = ctx->dropout, keep = 1.0f / (1.0f - p);
    const size_t per = (size_t)Cout * out_hw;
    const uint32_t step = 1000u + (uint32_t)(m - ctx->net->modules);
    RUN(BE(randu_rows, mask, ctx->drop_seed, ctx->drop_stream0, step, B, (int64_t)per));
    BE(dropout_mask, mask, p, keep, o_n);
    BE(mul, d1, a1, mask, o_n);
  }
  float *h2 = ws_alloc(ctx, o_n);
  if ((rc = conv_same(ctx, h2, d1, conv1_w, conv1_b, Cout, Cout, Ho, 3))) return rc;
  const float *xs = xr;
  if (m->shortcut) {
    float *xc = ws_alloc(ctx, o_n);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = conv_same(ctx, xc, xr, skip_w, skip_b, Cin, Cout, Ho, 1))) return rc;
    } else {
      RUN(BE(nin_forward, xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    }
    xs = xc;
  }
  DO(residual_join(ctx, TD(ctx, out), xs, h2, o_n, c->skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

static int tr_resblock_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const int Ho = m->up ? 2 * H : m->down ? H / 2 : H;
  const int G0 = sde_nn_groupnorm_groups(Cin), G1 = sde_nn_groupnorm_groups(Cout);
  const size_t in_n = (size_t)B * Cin * H * H, out_hw = (size_t)Ho * Ho,
               o_n = (size_t)B * Cout * out_hw, r_n = (size_t)B * Cin * out_hw;
  float *const *s = op->s;
  const float *x = TD(ctx, op->in0), *gout = TG(ctx, op->out);
  size_t mark = ctx->top;
  const float js = c->skip_rescale ? 1.0f / SQRT2 : 1.0f;
  float *dj = ws_alloc(ctx, o_n);
  DO(BE(scale, dj, gout, js, o_n));
  /* h2 = Conv_1(d1) */
  float *dd1 = zalloc(ctx, o_n);
  int rc = conv_same_bwd(ctx, dd1, GP(ctx, m, 8), GP(ctx, m, 9), dj, s[11], P(ctx, m, 8), Cout,
                         Cout, Ho, 3);
  if (rc) return rc;
  if (s[12] && !ctx->measure) BE(mul, dd1, dd1, s[12], o_n);
  float *dg1 = zalloc(ctx, o_n);
  DO(BE(silu_backward, dg1, dd1, s[7], o_n));
  float *dh1 = zalloc(ctx, o_n);
  RUN(BE(groupnorm_backward, dh1, GP(ctx, m, 6), GP(ctx, m, 7), dg1, s[6], s[8], s[9],
                                P(ctx, m, 6), B, Cout, (int)out_hw, G1));
  if (c->conditional) {
    float *dproj = zalloc(ctx, (size_t)B * Cout);
    DO(BE(add_channel_bias_backward, dproj, dh1, B, Cout, (int)out_hw));
    RUN(BE(linear_backward, ctx->tr->dta, GP(ctx, m, 4), GP(ctx, m, 5), dproj,
                               ctx->temb_act, P(ctx, m, 4), B, 4 * c->nf, Cout));
  }
  float *dhr = zalloc(ctx, r_n);
  if ((rc = conv_same_bwd(ctx, dhr, GP(ctx, m, 2), GP(ctx, m, 3), dh1, s[4], P(ctx, m, 2), Cin,
                          Cout, Ho, 3)))
    return rc;
  float *dxr = dj; /* identity shortcut: same shape */
  if (m->shortcut) {
    dxr = zalloc(ctx, r_n);
    if (c->resblock_type == SDE_RESBLOCK_BIGGAN) {
      if ((rc = conv_same_bwd(ctx, dxr, GP(ctx, m, 10), GP(ctx, m, 11), dj, s[5],
                              P(ctx, m, 10), Cin, Cout, Ho, 1)))
        return rc;
    } else {
      RUN(BE(nin_backward, dxr, GP(ctx, m, 10), GP(ctx, m, 11), dj, s[5], P(ctx, m, 10), B,
                              Cin, (int)out_hw, Cout));
    }
  }
  float *dx = TG(ctx, op->in0);
  float *da0 = dhr;
  if (m->up || m->down) {
    da0 = zalloc(ctx, in_n);
    if (m->up) {
      if ((rc = resample_up_bwd(ctx, da0, dhr, Cin, H)) || (rc = resample_up_bwd(ctx, dx, dxr, Cin, H)))
        return rc;
    } else {
      if ((rc = resample_down_bwd(ctx, da0, dhr, Cin, H)) ||
          (rc = resample_down_bwd(ctx, dx, dxr, Cin, H)))
        return rc;
    }
  } else {
    DO(BE(accumulate, dx, dxr, in_n));
  }
  float *dg0 = zalloc(ctx, in_n);
  DO(BE(silu_backward, dg0, da0, s[0], in_n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), dg0, x, s[2], s[3],
                                P(ctx, m, 0), B, Cin, H * H, G0));
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 h = GN(x), s1 mean, s2 rstd, s3 q, s4 k, s5 v, s6 att, s7 o = attention. */
static int tr_attn(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  tape_op *op = tp_push(ctx, TP_ATTN, m);
  op->in0 = in;
  const float *x = TD(ctx, in);
  float *h = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G), *rstd = ws_alloc(ctx, (size_t)B * G);
  float *q = ws_alloc(ctx, n), *k = ws_alloc(ctx, n), *v = ws_alloc(ctx, n), *o = ws_alloc(ctx, n);
  float *att = ws_alloc(ctx, (size_t)B * N * N);
  int out = op->out = tt_new(ctx, n);
  *outp = out;
  float *save[8] = {h, mean, rstd, q, k, v, att, o};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, h, mean, rstd, x, P(ctx, m, 0), P(ctx, m, 1), B, C, N, G,
                               SDE_NN_GROUPNORM_EPS));
  RUN(BE(nin_forward, q, h, P(ctx, m, 2), P(ctx, m, 3), B, C, N, C));
  RUN(BE(nin_forward, k, h, P(ctx, m, 4), P(ctx, m, 5), B, C, N, C));
  RUN(BE(nin_forward, v, h, P(ctx, m, 6), P(ctx, m, 7), B, C, N, C));
  RUN(BE(attention_forward, o, att, q, k, v, B, C, N));
  size_t mark = ctx->top;
  float *p = ws_alloc(ctx, n);
  RUN(BE(nin_forward, p, o, P(ctx, m, 8), P(ctx, m, 9), B, C, N, C));
  DO(residual_join(ctx, TD(ctx, out), x, p, n, ctx->net->config.skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

static int tr_attn_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *m = op->m;
  const int B = ctx->B, C = m->in_ch, N = m->res * m->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * N;
  float *const *s = op->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  const float js = ctx->net->config.skip_rescale ? 1.0f / SQRT2 : 1.0f;
  float *dj = ws_alloc(ctx, n);
  DO(BE(scale, dj, gout, js, n));
  DO(BE(accumulate, dx, dj, n));
  float *dO = zalloc(ctx, n);
  RUN(BE(nin_backward, dO, GP(ctx, m, 8), GP(ctx, m, 9), dj, s[7], P(ctx, m, 8), B, C, N, C));
  float *dq = zalloc(ctx, n), *dk = zalloc(ctx, n), *dv = zalloc(ctx, n);
  float *scratch = ws_alloc(ctx, sde_nn_attention_scratch_floats(N));
  RUN(BE(attention_backward, dq, dk, dv, dO, s[6], s[3], s[4], s[5], B, C, N, scratch));
  float *dh = zalloc(ctx, n);
  RUN(BE(nin_backward, dh, GP(ctx, m, 2), GP(ctx, m, 3), dq, s[0], P(ctx, m, 2), B, C, N, C));
  RUN(BE(nin_backward, dh, GP(ctx, m, 4), GP(ctx, m, 5), dk, s[0], P(ctx, m, 4), B, C, N, C));
  RUN(BE(nin_backward, dh, GP(ctx, m, 6), GP(ctx, m, 7), dv, s[0], P(ctx, m, 6), B, C, N, C));
  RUN(BE(groupnorm_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), dh, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, m, 0), B, C, N, G));
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 g = GN(x), s1 mean, s2 rstd, s3 a = act(g). */
static int tr_normconv(fwd_ctx *ctx, const net_module *gn, const net_module *cv, int in,
                       int *outp) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * H * H;
  tape_op *op = tp_push(ctx, TP_NORMCONV, gn);
  op->m2 = cv;
  op->in0 = in;
  float *g = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G),
        *rstd = ws_alloc(ctx, (size_t)B * G), *a = ws_alloc(ctx, n);
  int out = op->out = tt_new(ctx, (size_t)B * cv->out_ch * H * H);
  *outp = out;
  float *save[4] = {g, mean, rstd, a};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, g, mean, rstd, TD(ctx, in), P(ctx, gn, 0), P(ctx, gn, 1), B, C,
                               H * H, G, SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a, g, n));
  return conv_same(ctx, TD(ctx, out), a, P(ctx, cv, 0), P(ctx, cv, 1), C, cv->out_ch, H, 3);
}

static int tr_normconv_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *gn = op->m, *cv = op->m2;
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C);
  const size_t n = (size_t)B * C * H * H;
  float *const *s = op->s;
  const float *gout = TG(ctx, op->out);
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *da = zalloc(ctx, n);
  int rc = conv_same_bwd(ctx, da, GP(ctx, cv, 0), GP(ctx, cv, 1), gout, s[3], P(ctx, cv, 0), C,
                         cv->out_ch, H, 3);
  if (rc) return rc;
  float *dg = zalloc(ctx, n);
  DO(BE(silu_backward, dg, da, s[0], n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), dg, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, gn, 0), B, C, H * H, G));
  ctx->top = mark;
  return SDE_OK;
}

static sde_nn_conv2d_shape pad_down_shape(int B, int Cin, int H, int Cout) {
  sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1};
  return s;
}

static int tr_downsample(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  tape_op *op = tp_push(ctx, TP_DOWN, m);
  op->in0 = in;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * m->out_ch * (m->res / 2) * (m->res / 2));
  *outp = out;
  return run_downsample(ctx, m, TD(ctx, in), TD(ctx, out));
}

static int tr_downsample_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_down_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_nn_fir_conv_downsample2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(fir_conv_downsample2x_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x,
                                              P(ctx, m, 0), B, Cin, H, H, Cout, scratch));
  } else {
    sde_nn_conv2d_shape s = pad_down_shape(B, Cin, H, Cout);
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(BE(conv2d_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x, P(ctx, m, 0), &s,
                               scratch));
  }
  ctx->top = mark;
  return SDE_OK;
}

/* Saved: s0 u = nearest x2 of the input (fir = false, with conv). */
static int tr_upsample(fwd_ctx *ctx, const net_module *m, int in, int *outp) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  tape_op *op = tp_push(ctx, TP_UP, m);
  op->in0 = in;
  float *u = NULL;
  if (m->with_conv && !c->fir) u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
  op->s[0] = u;
  int out = op->out = tt_new(ctx, (size_t)B * Cout * 4 * H * H);
  *outp = out;
  if (!u) return run_upsample(ctx, m, TD(ctx, in), TD(ctx, out));
  RUN(BE(upsample_nearest2x_forward, u, TD(ctx, in), B, Cin, H, H));
  return conv_same(ctx, TD(ctx, out), u, P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, 2 * H, 3);
}

static int tr_upsample_bwd(fwd_ctx *ctx, const tape_op *op) {
  const sde_ncsnpp_config *c = &ctx->net->config;
  const net_module *m = op->m;
  const int B = ctx->B, Cin = m->in_ch, Cout = m->out_ch, H = m->res;
  const float *gout = TG(ctx, op->out), *x = TD(ctx, op->in0);
  float *dx = TG(ctx, op->in0);
  if (!m->with_conv) return resample_up_bwd(ctx, dx, gout, Cin, H);
  size_t mark = ctx->top;
  if (c->fir) {
    size_t ns = sde_ncsnpp_fir_upsample_conv2x_scratch_floats(B, Cin, H, H, Cout);
    float *scratch = ws_alloc(ctx, ns);
    RUN(BE(fir_conv_upsample2x_backward, dx, GP(ctx, m, 0), GP(ctx, m, 1), gout, x, P(ctx, m, 0),
                                            B, Cin, H, H, Cout, scratch));
  } else {
    float *du = zalloc(ctx, (size_t)B * Cin * 4 * H * H);
    int rc = conv_same_bwd(ctx, du, GP(ctx, m, 0), GP(ctx, m, 1), gout, op->s[0], P(ctx, m, 0),
                           Cin, Cout, 2 * H, 3);
    if (rc) return rc;
    RUN(BE(upsample_nearest2x_backward, dx, du, B, Cin, H, H));
  }
  ctx->top = mark;
  return SDE_OK;
}

static int tr_resample(fwd_ctx *ctx, int up, int in, int C, int H, int *outp) {
  tape_op *op = tp_push(ctx, up ? TP_RUP : TP_RDOWN, NULL);
  op->in0 = in;
  op->C = C;
  op->H = H;
  int Ho = up ? 2 * H : H / 2;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * C * Ho * Ho);
  *outp = out;
  return up ? resample_up(ctx, TD(ctx, out), TD(ctx, in), C, H)
            : resample_down(ctx, TD(ctx, out), TD(ctx, in), C, H);
}

/* out = in0 + in1 (rescale 0) or (in0 + in1)/sqrt(2) (rescale 1) */
static int tr_add(fwd_ctx *ctx, int a, int b, size_t n, int rescale, int *outp) {
  tape_op *op = tp_push(ctx, TP_ADD, NULL);
  op->in0 = a;
  op->in1 = b;
  op->k = rescale;
  int out = op->out = tt_new(ctx, n);
  *outp = out;
  DO(if (rescale) residual_join(ctx, TD(ctx, out), TD(ctx, a), TD(ctx, b), n, 1);
     else BE(add_forward, TD(ctx, out), TD(ctx, a), TD(ctx, b), 1.0f, n));
  return SDE_OK;
}

static int tr_concat(fwd_ctx *ctx, int a, int b, int Ca, int Cb, int H, int *outp) {
  tape_op *op = tp_push(ctx, TP_CONCAT, NULL);
  op->in0 = a;
  op->in1 = b;
  op->C = Ca;
  op->C2 = Cb;
  op->H = H;
  int out = op->out = tt_new(ctx, (size_t)ctx->B * (Ca + Cb) * H * H);
  *outp = out;
  DO(BE(concat_channels_forward, TD(ctx, out), TD(ctx, a), TD(ctx, b), ctx->B, Ca, Cb, H * H));
  return SDE_OK;
}

/* Saved: s0 g = GN(x), s1 mean, s2 rstd, s3 a = act(g), s4 pooled [B, C]. */
static int tr_head(fwd_ctx *ctx, const net_module *gn, const net_module *lin, int in, int *outp) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C),
            K = lin->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  tape_op *op = tp_push(ctx, TP_HEAD, gn);
  op->m2 = lin;
  op->in0 = in;
  float *g = ws_alloc(ctx, n), *mean = ws_alloc(ctx, (size_t)B * G),
        *rstd = ws_alloc(ctx, (size_t)B * G), *a = ws_alloc(ctx, n),
        *pooled = ws_alloc(ctx, (size_t)B * C);
  float *w = ws_alloc(ctx, HW); /* device: the 1/HW weights of the mean */
  int out = op->out = tt_new(ctx, (size_t)B * K);
  *outp = out;
  float *save[5] = {g, mean, rstd, a, pooled};
  memcpy(op->s, save, sizeof save);
  RUN(BE(groupnorm_forward, g, mean, rstd, TD(ctx, in), P(ctx, gn, 0), P(ctx, gn, 1), B, C,
                               (int)HW, G, SDE_NN_GROUPNORM_EPS));
  DO(BE(silu_forward, a, g, n));
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      double acc = 0.0;
      for (size_t q = 0; q < HW; q++) acc += a[bc * HW + q];
      pooled[bc] = (float)(acc / (double)HW);
    }
  } else { /* device: the mean as a Linear [B*C, HW] -> [B*C, 1] with weights 1/HW */
    int rc = fill_const(ctx, w, 1.0f / (float)HW, HW);
    if (!rc) rc = BE(linear_forward, pooled, a, w, NULL, B * C, (int)HW, 1);
    if (rc) return rc;
  }
  RUN(BE(linear_forward, TD(ctx, out), pooled, P(ctx, lin, 0), P(ctx, lin, 1), B, C, K));
  return SDE_OK;
}

static int tr_head_bwd(fwd_ctx *ctx, const tape_op *op) {
  const net_module *gn = op->m, *lin = op->m2;
  const int B = ctx->B, C = gn->in_ch, H = gn->res, G = sde_nn_groupnorm_groups(C),
            K = lin->out_ch;
  const size_t n = (size_t)B * C * H * H, HW = (size_t)H * H;
  float *const *s = op->s;
  float *dx = TG(ctx, op->in0);
  size_t mark = ctx->top;
  float *dp = zalloc(ctx, (size_t)B * C), *da = ws_alloc(ctx, n), *dg = zalloc(ctx, n);
  RUN(BE(linear_backward, dp, GP(ctx, lin, 0), GP(ctx, lin, 1), TG(ctx, op->out), s[4],
                             P(ctx, lin, 0), B, C, K));
  float *w = ws_alloc(ctx, HW);
  if (ctx->measure) {
  } else if (ctx->be->host_memory) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
      const float v = (float)(dp[bc] / (double)HW);
      for (size_t q = 0; q < HW; q++) da[bc * HW + q] = v;
    }
  } else { /* device: da[B*C, HW] = dp[B*C, 1] · (1/HW)[HW, 1]ᵀ */
    int rc = fill_const(ctx, w, 1.0f / (float)HW, HW);
    if (!rc) rc = BE(linear_forward, da, dp, w, NULL, B * C, 1, (int)HW);
    if (rc) return rc;
  }
  DO(BE(silu_backward, dg, da, s[0], n));
  RUN(BE(groupnorm_backward, dx, GP(ctx, gn, 0), GP(ctx, gn, 1), dg, TD(ctx, op->in0), s[1],
                                s[2], P(ctx, gn, 0), B, C, (int)HW, G));
  ctx->top = mark;
  return SDE_OK;
}

static int tape_backward_op(fwd_ctx *ctx, const tape_op *op) {
  const int B = ctx->B;
  switch (op->kind) {
    case TP_CONV:
      return conv_same_bwd(ctx, TG(ctx, op->in0), GP(ctx, op->m, 0), GP(ctx, op->m, 1),
                           TG(ctx, op->out), TD(ctx, op->in0), P(ctx, op->m, 0), op->C, op->C2,
                           op->H, op->k);
    case TP_RES: return tr_resblock_bwd(ctx, op);
    case TP_HEAD: return tr_head_bwd(ctx, op);
    case TP_ATTN: return tr_attn_bwd(ctx, op);
    case TP_NORMCONV: return tr_normconv_bwd(ctx, op);
    case TP_DOWN: return tr_downsample_bwd(ctx, op);
    case TP_UP: return tr_upsample_bwd(ctx, op);
    case TP_RUP: return resample_up_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
    case TP_RDOWN:
      return resample_down_bwd(ctx, TG(ctx, op->in0), TG(ctx, op->out), op->C, op->H);
    case TP_ADD: {
      const size_t n = ctx->measure ? 0 : ctx->tr->t[op->out].n;
      float *ga = TG(ctx, op->in0), *gb = TG(ctx, op->in1);
      DO(BE(add_backward, ga, gb, TG(ctx, op->out), op->k ? 1.0f / SQRT2 : 1.0f, n));
      return SDE_OK;
    }
    case TP_CONCAT: {
      float *ga = TG(ctx, op->in0), *gb = TG(ctx, op->in1);
      DO(BE(concat_channels_backward, ga, gb, TG(ctx, op->out), B, op->C, op->C2,
                                         op->H * op->H));
      return SDE_OK;
    }
    case TP_SCALE: {
      /* s0: sigma per sample (float); out = in / sigma */
      if (ctx->measure) return SDE_OK;
      const size_t n = ctx->tr->t[op->out].n, per = n / (size_t)B;
      const float *g = TG(ctx, op->out), *sig = op->s[0];
      float *dx = TG(ctx, op->in0);
      if (!ctx->be->host_memory) { /* dx = 1·dx + (1/sigma)·g per row */
        double *a = sde_malloc((size_t)B * 2 * sizeof(double));
        if (!a) return SDE_ENOMEM;
        for (int b = 0; b < B; b++) {
          a[b] = 1.0;
          a[B + b] = 1.0 / (double)ctx->tr->sig_host[b];
        }
        int rc = BE(axpby_rows, dx, a, dx, a + B, g, B, (int64_t)per);
        free(a);
        return rc;
      }
      for (int b = 0; b < B; b++)
        for (size_t i = 0; i < per; i++) dx[b * per + i] += g[b * per + i] / sig[b];
      return SDE_OK;
    }
  }
  return sde_fail(SDE_EINVAL, "internal: tape op %d", op->kind);
}

/* The training forward (mirrors forward_walk). */
static int train_walk(fwd_ctx *ctx, const float *x, const float *labels, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_module *mods = net->modules;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  int mi = 0, rc;
  tr->n_ops = tr->n_t = 0;

  /* time embedding */
  const int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
  const size_t tn = (size_t)B * 4 * nf;
  tr->emb = ws_alloc(ctx, (size_t)B * embed_dim);
  tr->u = NULL;
  tr->mod_fourier = tr->mod_lin0 = -1;
  tr->u = ws_alloc(ctx, (size_t)B); /* ln sigma (Fourier) or the labels, backend memory */
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    if (!ctx->measure) {
      float *u = sde_malloc((size_t)B * sizeof(float));
      if (!u) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) u[b] = logf(labels[b]);
      rc = to_backend(ctx, tr->u, u, (size_t)B);
      free(u);
      if (rc) return rc;
    }
    RUN(BE(fourier_embedding_forward, tr->emb, tr->u, P(ctx, &mods[mi], 0), B, nf));
    tr->mod_fourier = mi++;
  } else {
    if ((rc = to_backend(ctx, tr->u, labels, (size_t)B))) return rc;
    RUN(BE(timestep_embedding_forward, tr->emb, tr->u, B, nf));
  }
  ctx->temb_act = NULL;
  tr->t1 = tr->t1a = tr->t2 = tr->ta = tr->dta = NULL;
  if (c->conditional) {
    tr->t1 = ws_alloc(ctx, tn);
    tr->t1a = ws_alloc(ctx, tn);
    tr->t2 = ws_alloc(ctx, tn);
    tr->ta = ws_alloc(ctx, tn);
    tr->dta = ws_alloc(ctx, tn);
    tr->mod_lin0 = mi;
    RUN(BE(linear_forward, tr->t1, tr->emb, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B,
                              embed_dim, 4 * nf));
    DO(BE(silu_forward, tr->t1a, tr->t1, tn));
    RUN(BE(linear_forward, tr->t2, tr->t1a, P(ctx, &mods[mi + 1], 0), P(ctx, &mods[mi + 1], 1),
                              B, 4 * nf, 4 * nf));
    DO(BE(silu_forward, tr->ta, tr->t2, tn));
    mi += 2;
    ctx->temb_act = tr->ta;
  }

  /* input */
  const int S = c->image_size;
  const size_t x_n = (size_t)B * C0 * S * S;
  const int xin = tt_new(ctx, x_n);
  tr->x_id = xin;
  if (!ctx->measure) {
    float *xi = TD(ctx, xin);
    if (c->centered || !ctx->be->host_memory) {
      if ((rc = ctx->be->upload(ctx->be, xi, x, x_n * sizeof(float)))) return rc;
      if (!c->centered && (rc = input_affine(ctx, xi, xi, B, C0, S * S))) return rc;
    } else {
      for (size_t i = 0; i < x_n; i++) xi[i] = 2.0f * x[i] - 1.0f;
    }
  } else if ((rc = input_affine(ctx, NULL, NULL, B, C0, S * S))) { /* its scratch */
    return rc;
  }

  int hs[4 * SDE_NET_MAX_LEVELS * 64 + 8];
  int n_hs = 0, h = -1, res = S;
  int input_pyramid = xin;
  if ((rc = tr_conv(ctx, &mods[mi], xin, C0, nf, S, 3, &hs[0]))) return rc;
  mi++;
  n_hs = 1;
  int ch = nf;
  for (int l = 0; l < L; l++) {
    for (int b = 0; b < R; b++) {
      const net_module *m = &mods[mi++];
      if ((rc = tr_resblock(ctx, m, hs[n_hs - 1], &h))) return rc;
      ch = m->out_ch;
      if (mi < net->n_modules && mods[mi].kind == M_ATTN && mods[mi].res == res &&
          is_attn_res(c, res)) {
        if ((rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
      }
      hs[n_hs++] = h;
    }
    if (l != L - 1) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = tr_downsample(ctx, m, hs[n_hs - 1], &h);
      else rc = tr_resblock(ctx, m, hs[n_hs - 1], &h);
      if (rc) return rc;
      res /= 2;
      const size_t hn = (size_t)B * ch * res * res;
      if (c->progressive_input == SDE_PROG_INPUT_SKIP) {
        int ip;
        if ((rc = tr_resample(ctx, 0, input_pyramid, C0, 2 * res, &ip))) return rc;
        input_pyramid = ip;
        const net_module *cm = &mods[mi++];
        int hc;
        if ((rc = tr_conv(ctx, cm, ip, C0, ch, res, 1, &hc))) return rc;
        if (c->progressive_combine == SDE_COMBINE_SUM) {
          if ((rc = tr_add(ctx, hc, h, hn, 0, &hc))) return rc;
        } else {
          if ((rc = tr_concat(ctx, hc, h, ch, ch, res, &hc))) return rc;
          ch *= 2;
        }
        hs[n_hs++] = hc;
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        const net_module *pm = &mods[mi++];
        int ip;
        if ((rc = tr_downsample(ctx, pm, input_pyramid, &ip))) return rc;
        if ((rc = tr_add(ctx, ip, h, hn, c->skip_rescale, &ip))) return rc;
        input_pyramid = ip;
        hs[n_hs++] = ip;
      } else {
        hs[n_hs++] = h;
      }
    }
  }

  if (c->num_classes > 0) { /* classifier: head on the last down-path tensor */
    int logits;
    if ((rc = tr_head(ctx, &mods[mi], &mods[mi + 1], hs[n_hs - 1], &logits))) return rc;
    mi += 2;
    if (mi != net->n_modules)
      return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);
    tr->out_id = logits;
    tr->out_n = (size_t)B * c->num_classes;
    RUN(ctx->be->download(ctx->be, out, TD(ctx, logits), tr->out_n * sizeof(float)));
    return SDE_OK;
  }

  /* middle */
  if ((rc = tr_resblock(ctx, &mods[mi++], hs[n_hs - 1], &h))) return rc;
  if ((rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
  if ((rc = tr_resblock(ctx, &mods[mi++], h, &h))) return rc;

  /* up path */
  int pyramid = -1;
  for (int l = L - 1; l >= 0; l--) {
    for (int b = 0; b < R + 1; b++) {
      const net_module *m = &mods[mi++];
      n_hs--;
      int cat;
      if ((rc = tr_concat(ctx, h, hs[n_hs], ch, net->hs_ch[n_hs], res, &cat))) return rc;
      if ((rc = tr_resblock(ctx, m, cat, &h))) return rc;
      ch = m->out_ch;
    }
    if (is_attn_res(c, res) && (rc = tr_attn(ctx, &mods[mi++], h, &h))) return rc;
    if (c->progressive != SDE_PROG_NONE) {
      if (l == L - 1) {
        if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &pyramid))) return rc;
        mi += 2;
      } else if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
        int up, ph;
        if ((rc = tr_resample(ctx, 1, pyramid, C0, res / 2, &up))) return rc;
        if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &ph))) return rc;
        mi += 2;
        if ((rc = tr_add(ctx, up, ph, (size_t)B * C0 * res * res, 0, &pyramid))) return rc;
      } else { /* residual */
        int up;
        if ((rc = tr_upsample(ctx, &mods[mi++], pyramid, &up))) return rc;
        if ((rc = tr_add(ctx, up, h, (size_t)B * ch * res * res, c->skip_rescale, &pyramid)))
          return rc;
        h = pyramid;
      }
    }
    if (l != 0) {
      const net_module *m = &mods[mi++];
      if (c->resblock_type == SDE_RESBLOCK_DDPM) rc = tr_upsample(ctx, m, h, &h);
      else rc = tr_resblock(ctx, m, h, &h);
      if (rc) return rc;
      res *= 2;
    }
  }
  if (n_hs != 0) return sde_fail(SDE_EINVAL, "internal: %d skip tensors left", n_hs);
  int final;
  if (c->progressive == SDE_PROG_OUTPUT_SKIP) {
    final = pyramid;
  } else {
    if ((rc = tr_normconv(ctx, &mods[mi], &mods[mi + 1], h, &final))) return rc;
    mi += 2;
  }
  if (mi != net->n_modules)
    return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);
  if (c->scale_by_sigma) {
    tape_op *op = tp_push(ctx, TP_SCALE, NULL);
    op->in0 = final;
    float *sig = ws_alloc(ctx, (size_t)B);
    op->s[0] = sig;
    int so = op->out = tt_new(ctx, x_n);
    if (!ctx->measure) {
      const size_t per = (size_t)C0 * S * S;
      const int fourier = c->embedding_type == SDE_EMBED_FOURIER;
      double *sd = fourier ? NULL : sde_malloc((size_t)B * sizeof(double));
      if (!fourier && !sd) return SDE_ENOMEM;
      for (int b = 0; b < B; b++) {
        if (fourier) {
          tr->sig_host[b] = labels[b];
        } else {
          long idx = (long)labels[b];
          if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N) {
            free(sd);
            return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                            (double)labels[b], c->sde.N);
          }
          sd[b] = net->sigmas[idx];
          tr->sig_host[b] = (float)sd[b];
        }
      }
      if (ctx->be->host_memory) memcpy(sig, tr->sig_host, (size_t)B * sizeof(float));
      rc = divide_rows(ctx, TD(ctx, so), TD(ctx, final), labels, sd, B, per);
      free(sd);
      if (rc) return rc;
    }
    final = so;
  }
  tr->out_id = final;
  tr->out_n = x_n;
  RUN(ctx->be->download(ctx->be, out, TD(ctx, final), x_n * sizeof(float)));
  return SDE_OK;
}

static int train_backward_walk(fwd_ctx *ctx, const float *dout, float *dx) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  struct sde_ncsnpp_train *tr = ctx->tr;
  const int B = ctx->B, nf = c->nf;
  const size_t x_n = (size_t)B * c->num_channels * c->image_size * c->image_size;
  int rc;
  if (!ctx->measure) {
    for (int i = 0; i < tr->n_t; i++) tr->t[i].touched = 0;
    if (tr->dta && (rc = ctx->be->zero(ctx->be, tr->dta, (size_t)B * 4 * nf * sizeof(float))))
      return rc;
    if ((rc = ctx->be->upload(ctx->be, TG(ctx, tr->out_id), dout, tr->out_n * sizeof(float))))
      return rc;
  }
  for (int i = tr->n_ops - 1; i >= 0; i--) {
    const tape_op *op = &tr->ops[i];
    if (!ctx->measure && !tr->t[op->out].touched) continue; /* no gradient reaches it */
    if ((rc = tape_backward_op(ctx, op))) return rc;
  }
  if (dx && !ctx->measure && tr->t[tr->x_id].touched) {
    const float *g = tr->t[tr->x_id].grad, k = c->centered ? 1.0f : 2.0f;
    float *gh = NULL;
    if (!ctx->be->host_memory) { /* dx is host memory */
      if (!(gh = sde_malloc(x_n * sizeof(float)))) return SDE_ENOMEM;
      if ((rc = ctx->be->download(ctx->be, gh, g, x_n * sizeof(float)))) {
        free(gh);
        return rc;
      }
      g = gh;
    }
    for (size_t i = 0; i < x_n; i++) dx[i] += k * g[i];
    free(gh);
  }
  /* time embedding: ta = act(t2), t2 = Dense_1(t1a), t1a = act(t1), t1 = Dense_0(emb) */
  if (c->conditional && ctx->dparams) {
    const size_t tn = (size_t)B * 4 * nf;
    const int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
    const net_module *l0 = &net->modules[tr->mod_lin0], *l1 = l0 + 1;
    size_t mark = ctx->top;
    float *d2 = zalloc(ctx, tn), *d1a = zalloc(ctx, tn), *d1 = zalloc(ctx, tn);
    float *demb = zalloc(ctx, (size_t)B * embed_dim);
    DO(BE(silu_backward, d2, tr->dta, tr->t2, tn));
    RUN(BE(linear_backward, d1a, GP(ctx, l1, 0), GP(ctx, l1, 1), d2, tr->t1a, P(ctx, l1, 0), B,
                               4 * nf, 4 * nf));
    DO(BE(silu_backward, d1, d1a, tr->t1, tn));
    RUN(BE(linear_backward, demb, GP(ctx, l0, 0), GP(ctx, l0, 1), d1, tr->emb, P(ctx, l0, 0),
                               B, embed_dim, 4 * nf));
    if (tr->mod_fourier >= 0) {
      const net_module *fm = &net->modules[tr->mod_fourier];
      RUN(BE(fourier_embedding_backward, NULL, GP(ctx, fm, 0), demb, tr->u, P(ctx, fm, 0), B,
                                            nf));
    }
    ctx->top = mark;
  }
  return SDE_OK;
}

static void train_ctx_init(fwd_ctx *ctx, const sde_ncsnpp *net, struct sde_ncsnpp_train *tr,
                           int B, int measure) {
  memset(ctx, 0, sizeof *ctx);
  ctx->net = net;
  ctx->be = net_be(net);
  ctx->B = B;
  ctx->measure = measure;
  ctx->base = measure ? NULL : tr->buf;
  ctx->tr = tr;
}

int sde_ncsnpp_train_create(const sde_ncsnpp *net, int max_batch, int with_dropout,
                            sde_ncsnpp_train **out) {
  *out = NULL;
  if (!net || max_batch < 1) return sde_fail(SDE_EINVAL, "train workspace: bad arguments");
  struct sde_ncsnpp_train *tr = sde_calloc(1, sizeof *tr);
  if (!tr) return SDE_ENOMEM;
  tr->net = net;
  tr->be = net_be(net);
  tr->max_batch = max_batch;
  tr->with_dropout = with_dropout != 0;
  float one = 1.0f;
  fwd_ctx ctx;
  /* pass 1 counts tape ops and tensors; pass 2 records them and measures the forward;
   * then the backward is measured on top of the forward region */
  train_ctx_init(&ctx, net, tr, max_batch, 1);
  ctx.dropout = tr->with_dropout ? 0.5f : 0.0f;
  int rc = train_walk(&ctx, NULL, &one, NULL);
  if (rc) goto fail;
  tr->cap_ops = tr->n_ops;
  tr->cap_t = tr->n_t;
  tr->ops = sde_calloc((size_t)tr->cap_ops + 1, sizeof *tr->ops);
  tr->t = sde_calloc((size_t)tr->cap_t + 1, sizeof *tr->t);
  if (!tr->ops || !tr->t) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  train_ctx_init(&ctx, net, tr, max_batch, 1);
  ctx.dropout = tr->with_dropout ? 0.5f : 0.0f;
  if ((rc = train_walk(&ctx, NULL, &one, NULL))) goto fail;
  ctx.dparams = (float *)&one; /* measure the weight-gradient path too */
  if ((rc = train_backward_walk(&ctx, NULL, NULL))) goto fail;
  tr->floats = ctx.peak + 16;
  tr->sig_host = sde_calloc((size_t)max_batch, sizeof(float));
  if (!tr->sig_host) {
    rc = SDE_ENOMEM;
    goto fail;
  }
  if ((rc = tr->be->alloc(tr->be, tr->floats * sizeof(float), (void **)&tr->buf))) goto fail;
  *out = tr;
  return SDE_OK;
fail:
  sde_ncsnpp_train_free(tr);
  return rc;
}

void sde_ncsnpp_train_free(sde_ncsnpp_train *tw) {
  if (!tw) return;
  tw->be->free(tw->be, tw->buf);
  tw->be->free(tw->be, tw->dgrad);
  free(tw->sig_host);
  free(tw->ops);
  free(tw->t);
  free(tw);
}

size_t sde_ncsnpp_train_bytes(const sde_ncsnpp_train *tw) {
  return tw ? tw->floats * sizeof(float) : 0;
}

int sde_ncsnpp_train_forward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, int B, const float *x,
                             const float *labels, float dropout, uint64_t seed, uint64_t stream0,
                             float *out) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (B < 1 || B > tw->max_batch)
    return sde_fail(SDE_EINVAL, "train forward: batch %d outside 1..%d", B, tw->max_batch);
  if (!x || !labels || !out) return sde_fail(SDE_EINVAL, "train forward: NULL argument");
  if (!(dropout >= 0.0f && dropout < 1.0f))
    return sde_fail(SDE_EINVAL, "dropout %g outside [0, 1)", (double)dropout);
  if (dropout > 0.0f && !tw->with_dropout)
    return sde_fail(SDE_EINVAL, "dropout needs a workspace made with_dropout");
  if (tw->be != net_be(net))
    return sde_fail(SDE_EINVAL, "train workspace made for the %s backend", tw->be->name);
  int rc = check_labels(net, B, labels);
  if (!rc) rc = sync_params(net);
  if (rc) return rc;
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, B, 0);
  ctx.dropout = dropout;
  ctx.drop_seed = seed;
  ctx.drop_stream0 = stream0;
  tw->valid = 0;
  rc = train_walk(&ctx, x, labels, out);
  if (rc) return rc;
  if (tw->n_ops != tw->cap_ops || tw->n_t != tw->cap_t || ctx.peak > tw->floats)
    return sde_fail(SDE_EINVAL, "internal: training tape does not match its measure");
  tw->B = B;
  tw->fwd_top = ctx.top;
  tw->valid = 1;
  return SDE_OK;
}

int sde_ncsnpp_train_backward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, const float *dout,
                              float *dparams, float *dx) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (!tw->valid) return sde_fail(SDE_EINVAL, "train backward without a forward");
  if (!dout) return sde_fail(SDE_EINVAL, "train backward: NULL dout");
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, tw->B, 0);
  ctx.top = ctx.peak = tw->fwd_top;
  ctx.dparams = dparams;
  ctx.temb_act = tw->ta;
  const sde_backend *be = tw->be;
  const size_t pbytes = (size_t)net->num_floats * sizeof(float);
  int rc = SDE_OK;
  if (dparams && !be->host_memory) {
    /* device: gradients into a backend buffer, then added into the host dparams */
    if (!tw->dgrad) rc = be->alloc(be, pbytes ? pbytes : 4, (void **)&tw->dgrad);
    if (!rc) rc = be->zero(be, tw->dgrad, pbytes);
    if (rc) return rc;
    ctx.dparams = tw->dgrad;
  }
  rc = train_backward_walk(&ctx, dout, dx);
  if (!rc && ctx.peak > tw->floats)
    rc = sde_fail(SDE_EINVAL, "internal: backward outgrew its workspace");
  if (!rc && dparams && !be->host_memory) {
    float *g = sde_malloc(pbytes ? pbytes : 4);
    if (!g) return SDE_ENOMEM;
    rc = be->download(be, g, tw->dgrad, pbytes);
    for (int64_t i = 0; !rc && i < net->num_floats; i++) dparams[i] += g[i];
    free(g);
  }
  return rc;
}

int sde_ncsnpp_train_backward_dev(const sde_ncsnpp *net, sde_ncsnpp_train *tw, const float *dout,
                                  float **dgrad) {
  if (!net || !tw || tw->net != net) return sde_fail(SDE_EINVAL, "train workspace of another network");
  if (!tw->valid) return sde_fail(SDE_EINVAL, "train backward without a forward");
  if (!dout || !dgrad) return sde_fail(SDE_EINVAL, "train backward: NULL dout or dgrad");
  const sde_backend *be = tw->be;
  if (be->host_memory) return sde_fail(SDE_EINVAL, "train_backward_dev on the %s backend", be->name);
  const size_t pbytes = (size_t)net->num_floats * sizeof(float);
  int rc = SDE_OK;
  if (!tw->dgrad) rc = be->alloc(be, pbytes ? pbytes : 4, (void **)&tw->dgrad);
  if (!rc) rc = be->zero(be, tw->dgrad, pbytes);
  if (rc) return rc;
  fwd_ctx ctx;
  train_ctx_init(&ctx, net, tw, tw->B, 0);
  ctx.top = ctx.peak = tw->fwd_top;
  ctx.dparams = tw->dgrad;
  ctx.temb_act = tw->ta;
  rc = train_backward_walk(&ctx, dout, NULL);
  if (!rc && ctx.peak > tw->floats)
    rc = sde_fail(SDE_EINVAL, "internal: backward outgrew its workspace");
  *dgrad = rc ? NULL : tw->dgrad;
  return rc;
}

/* ---- initialisation (score_sde_pytorch default_init) -------------------------------------- */

/* variance_scaling(scale, 'fan_avg', 'uniform') of a [out, in, (k, k)] or NIN [in, out] tensor */
static void init_uniform(float *w, const sde_net_param *p, double scale, uint64_t seed, int idx) {
  if (scale == 0.0) scale = 1e-10;
  int64_t receptive = p->ndim == 4 ? p->shape[2] * p->shape[3] : 1;
  double fan_sum = (double)(p->shape[0] + p->shape[1]) * (double)receptive;
  double bound = sqrt(3.0 * scale / (fan_sum / 2.0));
  sde_randu(seed, (uint64_t)idx, 0, w, p->numel);
  for (int64_t i = 0; i < p->numel; i++) w[i] = (float)((2.0 * w[i] - 1.0) * bound);
}

int sde_ncsnpp_init_params(sde_ncsnpp *net, uint64_t seed) {
  if (!net) return sde_fail(SDE_EINVAL, "init: no network");
  const sde_ncsnpp_config *c = &net->config;
  for (int mi = 0; mi < net->n_modules; mi++) {
    const net_module *m = &net->modules[mi];
    for (int k = 0; k < m->n_params; k++) {
      const int idx = m->first_param + k;
      const sde_net_param *p = &net->params[idx];
      float *w = net->param_buf + p->offset;
      const char *sub = strrchr(p->name, '.');
      sub = sub ? sub + 1 : p->name;
      int is_weight = p->ndim >= 2;
      if (m->kind == M_FOURIER) {
        sde_randn(seed, (uint64_t)idx, 0, w, p->numel);
        for (int64_t i = 0; i < p->numel; i++) w[i] = (float)(w[i] * c->fourier_scale);
      } else if (!is_weight) {
        /* biases 0; GroupNorm weight 1 */
        float v = (p->ndim == 1 && !strcmp(sub, "weight")) ? 1.0f : 0.0f;
        for (int64_t i = 0; i < p->numel; i++) w[i] = v;
      } else {
        double scale = 1.0;
        if (m->kind == M_RESBLOCK) {
          if (strstr(p->name, ".Conv_1.")) scale = c->init_scale;
          else if (strstr(p->name, ".NIN_0.")) scale = 0.1;
        } else if (m->kind == M_ATTN) {
          scale = strstr(p->name, ".NIN_3.") ? c->init_scale : 0.1;
        } else if (m->kind == M_CONV3 && mi > 0 && net->modules[mi - 1].kind == M_GROUPNORM &&
                   m->out_ch == c->num_channels) {
          scale = c->init_scale; /* output heads (final and output_skip pyramid) */
        }
        init_uniform(w, p, scale, seed, idx);
      }
    }
  }
  return SDE_OK;
}
