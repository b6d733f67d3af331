/* NCSN++ / DDPM++ (`NCSNpp` of score_sde_pytorch models/ncsnpp.py; spec §6.2-6.7).
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

#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/network.h"
#include "scoresde/nn.h"

/* from ncsnpp_extra.c */
int sde_ncsnpp_fir_upsample_conv2x_forward(float *out, const float *inp, const float *weight,
                                           const float *bias, int B, int C_in, int H, int W,
                                           int C_out, float *scratch);
size_t sde_ncsnpp_fir_upsample_conv2x_scratch_floats(int B, int C_in, int H, int W, int C_out);

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
};

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
  free(net->modules);
  free(net->params);
  free(net->param_buf);
  free(net->sigmas);
  free(net);
}

const sde_ncsnpp_config *sde_ncsnpp_get_config(const sde_ncsnpp *net) { return &net->config; }

float *sde_ncsnpp_param_buffer(sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
  return net->param_buf;
}

const float *sde_ncsnpp_param_buffer_const(const sde_ncsnpp *net, int64_t *count) {
  if (count) *count = net->num_floats;
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
  int B;
  int measure;
  float *base;
  size_t top, peak;
  const float *temb_act; /* [B, 4nf] silu(temb), NULL when unconditional */
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

static const float *P(const fwd_ctx *ctx, const net_module *m, int k) {
  return ctx->net->param_buf + ctx->net->params[m->first_param + k].offset;
}

static const float SQRT2 = 1.41421356237309504880f; /* np.sqrt(2.) in float32 */

/* out = (a + b) / sqrt(2) or a + b, elementwise; out may alias a or b */
static void residual_join(float *out, const float *a, const float *b, size_t n, int rescale) {
  if (!rescale) {
    sde_nn_add_forward(out, a, b, 1.0f, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) out[i] = (a[i] + b[i]) / SQRT2;
}

/* conv k x k, stride 1, pad k/2: inp [B,Cin,H,H] -> out [B,Cout,H,H] */
static int conv_same(fwd_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                     int Cin, int Cout, int H, int k) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(ctx->B, Cin, H, H, Cout, k, 1, k / 2);
  size_t mark = ctx->top;
  size_t ns = sde_nn_conv2d_scratch_floats(&s);
  float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
  RUN(sde_nn_conv2d_forward(out, inp, w, bias, &s, scratch));
  ctx->top = mark;
  return SDE_OK;
}

/* Parameter-free resampling of the pyramid / biggan blocks: FIR [1,3,3,1] or nearest/mean. */
static int resample_up(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(sde_nn_fir_upsample2x_forward(out, inp, ctx->B, C, H, H));
  else RUN(sde_nn_upsample_nearest2x_forward(out, inp, ctx->B, C, H, H));
  return SDE_OK;
}

static int resample_down(fwd_ctx *ctx, float *out, const float *inp, int C, int H) {
  if (ctx->net->config.fir) RUN(sde_nn_fir_downsample2x_forward(out, inp, ctx->B, C, H, H));
  else RUN(sde_nn_avgpool2x_forward(out, inp, ctx->B, C, H, H));
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
  RUN(sde_nn_groupnorm_silu_forward(h0, x, gn0_w, gn0_b, B, Cin, H * H, sde_nn_groupnorm_groups(Cin),
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
    RUN(sde_nn_linear_forward(proj, ctx->temb_act, dense0_w, dense0_b, B, 4 * c->nf, Cout));
    DO(sde_nn_add_channel_bias_forward(h1, proj, B, Cout, (int)out_hw));
  }
  /* h = Conv_1(act(GroupNorm_1(h))) (dropout inactive) */
  RUN(sde_nn_groupnorm_silu_forward(h1, h1, gn1_w, gn1_b, B, Cout, (int)out_hw,
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
      RUN(sde_nn_nin_forward(xc, xr, skip_w, skip_b, B, Cin, (int)out_hw, Cout));
    }
    xs = xc;
  }
  DO(residual_join(out, xs, h2, (size_t)B * Cout * out_hw, c->skip_rescale));
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
  RUN(sde_nn_groupnorm_forward(h, NULL, NULL, x, P(ctx, m, 0), P(ctx, m, 1), B, C, N,
                               sde_nn_groupnorm_groups(C), SDE_NN_GROUPNORM_EPS));
  RUN(sde_nn_nin_forward(q, h, P(ctx, m, 2), P(ctx, m, 3), B, C, N, C));
  RUN(sde_nn_nin_forward(k, h, P(ctx, m, 4), P(ctx, m, 5), B, C, N, C));
  RUN(sde_nn_nin_forward(v, h, P(ctx, m, 6), P(ctx, m, 7), B, C, N, C));
  RUN(sde_nn_attention_forward(h, att, q, k, v, B, C, N));
  RUN(sde_nn_nin_forward(q, h, P(ctx, m, 8), P(ctx, m, 9), B, C, N, C));
  DO(residual_join(out, x, q, n, ctx->net->config.skip_rescale));
  ctx->top = mark;
  return SDE_OK;
}

/* act(GroupNorm(x)) then conv3x3: the output heads and the progressive pyramid heads */
static int run_norm_conv(fwd_ctx *ctx, const net_module *gn, const net_module *cv, const float *x,
                         float *out) {
  const int B = ctx->B, C = gn->in_ch, H = gn->res;
  size_t mark = ctx->top;
  float *h = ws_alloc(ctx, (size_t)B * C * H * H);
  RUN(sde_nn_groupnorm_silu_forward(h, x, P(ctx, gn, 0), P(ctx, gn, 1), B, C, H * H,
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
    RUN(sde_nn_fir_conv_downsample2x_forward(out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H,
                                             Cout, scratch));
  } else {
    /* F.pad(x, (0,1,0,1)) then 3x3 stride-2 unpadded conv */
    sde_nn_conv2d_shape s = {B, Cin, H, H, Cout, 3, 3, 2, 0, 1, 0, 1};
    size_t ns = sde_nn_conv2d_scratch_floats(&s);
    float *scratch = ns ? ws_alloc(ctx, ns) : NULL;
    RUN(sde_nn_conv2d_forward(out, x, P(ctx, m, 0), P(ctx, m, 1), &s, scratch));
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
    RUN(sde_ncsnpp_fir_upsample_conv2x_forward(out, x, P(ctx, m, 0), P(ctx, m, 1), B, Cin, H, H,
                                               Cout, scratch));
  } else {
    float *u = ws_alloc(ctx, (size_t)B * Cin * 4 * H * H);
    RUN(sde_nn_upsample_nearest2x_forward(u, x, B, Cin, H, H));
    int rc = conv_same(ctx, out, u, P(ctx, m, 0), P(ctx, m, 1), Cin, Cout, 2 * H, 3);
    if (rc) return rc;
  }
  ctx->top = mark;
  return SDE_OK;
}

static int forward_walk(fwd_ctx *ctx, const float *x, const float *labels, float *out) {
  const sde_ncsnpp *net = ctx->net;
  const sde_ncsnpp_config *c = &net->config;
  const net_module *mods = net->modules;
  const int B = ctx->B, nf = c->nf, L = c->num_levels, R = c->num_res_blocks, C0 = c->num_channels;
  const size_t act_n = (size_t)B * (size_t)net->max_act;
  int mi = 0, rc;

  /* time embedding -> temb_act = act(Dense_1(act(Dense_0(emb)))) */
  int embed_dim = c->embedding_type == SDE_EMBED_FOURIER ? 2 * nf : nf;
  float *emb = ws_alloc(ctx, (size_t)B * embed_dim);
  if (c->embedding_type == SDE_EMBED_FOURIER) {
    float *u = ws_alloc(ctx, (size_t)B);
    DO(for (int b = 0; b < B; b++) u[b] = logf(labels[b]));
    RUN(sde_nn_fourier_embedding_forward(emb, u, P(ctx, &mods[mi], 0), B, nf));
    mi++;
  } else {
    RUN(sde_nn_timestep_embedding_forward(emb, labels, B, nf));
  }
  ctx->temb_act = NULL;
  if (c->conditional) {
    float *t1 = ws_alloc(ctx, (size_t)B * 4 * nf), *t2 = ws_alloc(ctx, (size_t)B * 4 * nf);
    RUN(sde_nn_linear_forward(t1, emb, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, embed_dim, 4 * nf));
    mi++;
    DO(sde_nn_silu_forward(t1, t1, (size_t)B * 4 * nf));
    RUN(sde_nn_linear_forward(t2, t1, P(ctx, &mods[mi], 0), P(ctx, &mods[mi], 1), B, 4 * nf, 4 * nf));
    mi++;
    DO(sde_nn_silu_forward(t2, t2, (size_t)B * 4 * nf)); /* every block applies act(temb) */
    ctx->temb_act = t2;
  }

  /* input: 2x - 1 unless centred */
  const int S = c->image_size;
  const size_t x_n = (size_t)B * C0 * S * S;
  const float *xin = x;
  if (!c->centered) {
    float *xc = ws_alloc(ctx, x_n);
    DO(for (size_t i = 0; i < x_n; i++) xc[i] = 2.0f * x[i] - 1.0f);
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
    DO(memcpy(hs[n_hs], (src), sizeof(float) * (size_t)B * (ch) * (r) * (r)));           \
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
          DO(sde_nn_add_forward(hc, hc, h, 1.0f, (size_t)B * ch * res * res));
        } else {
          DO(sde_nn_concat_channels_forward(cat, hc, h, B, ch, ch, res * res));
          hc = cat;
          ch *= 2;
        }
        HS_PUSH(hc, ch, res);
      } else if (c->progressive_input == SDE_PROG_RESIDUAL) {
        const net_module *pm = &mods[mi++];
        float *ip = pyr[ip_cur];
        if ((rc = run_downsample(ctx, pm, input_pyramid, ip))) return rc;
        DO(residual_join(ip, ip, h, (size_t)B * ch * res * res, c->skip_rescale));
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
      DO(sde_nn_concat_channels_forward(cat, hbuf[cur], hs[n_hs], B, ch, skip_ch, res * res));
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
        DO(sde_nn_add_forward(up, up, ph, 1.0f, (size_t)B * C0 * res * res));
        ctx->top = mark;
        pyramid = up;
        pyr_cur ^= 1;
      } else { /* residual */
        float *up = pyr[pyr_cur ^ 1];
        if ((rc = run_upsample(ctx, &mods[mi++], pyramid, up))) return rc;
        DO(residual_join(up, up, hbuf[cur], (size_t)B * ch * res * res, c->skip_rescale));
        pyramid = up;
        pyr_cur ^= 1;
        DO(memcpy(hbuf[cur], up, sizeof(float) * (size_t)B * ch * res * res)); /* h = pyramid */
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
    DO(memcpy(out, pyramid, sizeof(float) * out_n));
  } else {
    if ((rc = run_norm_conv(ctx, &mods[mi], &mods[mi + 1], hbuf[cur], out))) return rc;
    mi += 2;
  }
  if (mi != net->n_modules)
    return sde_fail(SDE_EINVAL, "internal: walked %d of %d modules", mi, net->n_modules);

  if (c->scale_by_sigma && !ctx->measure) {
    const size_t per = (size_t)C0 * S * S;
    for (int b = 0; b < B; b++) {
      if (c->embedding_type == SDE_EMBED_FOURIER) {
        float s = labels[b];
        for (size_t i = 0; i < per; i++) out[b * per + i] /= s;
      } else {
        /* used_sigmas = sigmas[labels.long()] (float64 buffer: the division is in double) */
        long idx = (long)labels[b];
        if (!(labels[b] > -1.0f) || idx < 0 || idx >= c->sde.N)
          return sde_fail(SDE_EINVAL, "label %g is not an index into the %d noise scales",
                          (double)labels[b], c->sde.N);
        double s = net->sigmas[idx];
        for (size_t i = 0; i < per; i++) out[b * per + i] = (float)(out[b * per + i] / s);
      }
    }
  }
  return SDE_OK;
#undef HS_PUSH
}

size_t sde_ncsnpp_workspace_floats(const sde_ncsnpp *net, int B) {
  fwd_ctx ctx = {.net = net, .B = B, .measure = 1};
  float dummy_labels[1] = {1.0f};
  (void)forward_walk(&ctx, NULL, dummy_labels, NULL);
  return ctx.peak + 16;
}

int sde_ncsnpp_forward(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                       float *out, float *workspace) {
  if (B <= 0) return B == 0 ? SDE_OK : sde_fail(SDE_EINVAL, "batch size %d", B);
  if (!x || !labels || !out) return sde_fail(SDE_EINVAL, "network forward: NULL argument");
  const sde_ncsnpp_config *c = &net->config;
  for (int b = 0; b < B; b++) {
    if (!isfinite(labels[b]))
      return sde_fail(SDE_EINVAL, "network label %d is not finite", b);
    if (c->embedding_type == SDE_EMBED_FOURIER && !(labels[b] > 0.0f))
      return sde_fail(SDE_EINVAL, "network label %d = %g: Fourier embeddings need sigma > 0", b,
                      (double)labels[b]);
  }
  float *owned = NULL;
  if (!workspace) {
    size_t n = sde_ncsnpp_workspace_floats(net, B);
    owned = workspace = sde_malloc(n * sizeof(float));
    if (!owned) return SDE_ENOMEM;
  }
  fwd_ctx ctx = {.net = net, .B = B, .measure = 0, .base = workspace};
  int rc = forward_walk(&ctx, x, labels, out);
  free(owned);
  return rc;
}
