/* NCSN++ / DDPM++ configuration: the released presets, the JSON reader, validation and
 * the canonical JSON writer (docs/math.md#network). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scoresde/error.h"
#include "scoresde/json.h"
#include "scoresde/network.h"

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
  if ((rc = sde_json_opt_bool(o, "global_head", &c->global_head)))
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
  if (c->num_classes < 0) return sde_fail(SDE_EINVAL, "config: num_classes < 0");
  if (!(c->dropout >= 0.0 && c->dropout < 1.0))
    return sde_fail(SDE_EINVAL, "config: dropout = %g must be in [0, 1)", c->dropout);
  if (!isfinite(c->init_scale) || !isfinite(c->fourier_scale))
    return sde_fail(SDE_EINVAL, "config: init_scale (%g) and fourier_scale (%g) must be finite",
                    c->init_scale, c->fourier_scale);
  if (c->num_classes > 0 && c->scale_by_sigma)
    return sde_fail(SDE_EINVAL, "config: a classifier (num_classes > 0) has no scale_by_sigma");
  if (c->global_head && (c->num_classes > 0 || !c->conditional))
    return sde_fail(SDE_EINVAL, "config: global_head needs a time-conditional score network "
                    "(conditional, no num_classes)");
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
  if (c->global_head) sb_printf(&b, "\"global_head\":true,");
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
