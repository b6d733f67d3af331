/* Import of a diffusers UNet2DModel NCSN++ folder (docs/math.md#diffusers): its config
 * and scheduler mapped onto an NCSN++ config, its keys back onto all_modules.<i>.<sub>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "network_internal.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/network.h"

static int file_exists(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  fclose(f);
  return 1;
}

static int int_array(const sde_json *a, const char *what, int *out, int max, int *n) {
  if (!a || a->type != SDE_JSON_ARRAY || (int)a->count > max || a->count == 0)
    return sde_fail(SDE_EFORMAT, "diffusers config: %s must be an array of 1..%d integers", what,
                    max);
  for (size_t i = 0; i < a->count; i++) {
    int64_t v;
    int rc = sde_json_int(a->items[i], what, 1, 1 << 20, &v);
    if (rc) return rc;
    out[i] = (int)v;
  }
  *n = (int)a->count;
  return SDE_OK;
}

/* diffusers config.json (+ scheduler) -> our config */
static int diffusers_config(const sde_json *j, const sde_json *sched, sde_ncsnpp_config *c) {
  int rc;
  const char *s = NULL;
  sde_ncsnpp_config_ncsnpp_cifar10(c);
  c->progressive = SDE_PROG_OUTPUT_SKIP;
  c->progressive_input = SDE_PROG_INPUT_SKIP;
  c->dropout = 0.0;
  snprintf(c->dataset, sizeof c->dataset, "diffusers");
  if ((rc = sde_json_opt_str(j, "_class_name", &s))) return rc;
  if (s && strcmp(s, "UNet2DModel") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: _class_name %s (only UNet2DModel)", s);
  s = "positional";
  if ((rc = sde_json_opt_str(j, "time_embedding_type", &s))) return rc;
  if (strcmp(s, "fourier") != 0)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: time_embedding_type \"%s\": only the NCSN++ "
                    "layout (fourier, Skip*Block2D) can be imported", s);
  int boc[SDE_NET_MAX_LEVELS] = {0}, L = 0;
  if ((rc = int_array(sde_json_get(j, "block_out_channels"), "block_out_channels", boc,
                      SDE_NET_MAX_LEVELS, &L)))
    return rc;
  c->nf = boc[0];
  c->num_levels = L;
  for (int l = 0; l < L; l++) {
    if (boc[l] % c->nf)
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: block_out_channels[%d] = %d is not a "
                      "multiple of %d", l, boc[l], c->nf);
    c->ch_mult[l] = boc[l] / c->nf;
  }
  int64_t v = 2;
  if ((rc = sde_json_opt_int(j, "layers_per_block", 1, 1000, &v))) return rc;
  c->num_res_blocks = (int)v;
  const sde_json *ss = sde_json_get(j, "sample_size");
  if (ss && ss->type == SDE_JSON_ARRAY) {
    int hw[2], n = 0;
    if ((rc = int_array(ss, "sample_size", hw, 2, &n))) return rc;
    if (n != 2 || hw[0] != hw[1])
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: only square sample_size");
    c->image_size = hw[0];
  } else {
    v = 0;
    if ((rc = sde_json_opt_int(j, "sample_size", 1, 1 << 16, &v))) return rc;
    if (!v) return sde_fail(SDE_EFORMAT, "diffusers config: no sample_size");
    c->image_size = (int)v;
  }
  v = 3;
  if ((rc = sde_json_opt_int(j, "in_channels", 1, 4096, &v))) return rc;
  c->num_channels = (int)v;
  int64_t oc = v;
  if ((rc = sde_json_opt_int(j, "out_channels", 1, 4096, &oc))) return rc;
  if (oc != c->num_channels)
    return sde_fail(SDE_EUNSUPPORTED, "diffusers: out_channels %lld != in_channels %d",
                    (long long)oc, c->num_channels);
  int center = 0;
  if ((rc = sde_json_opt_bool(j, "center_input_sample", &center))) return rc;
  c->centered = !center; /* 2x-1 inside the model = data in [0,1] */
  const sde_json *down = sde_json_get(j, "down_block_types"), *up = sde_json_get(j, "up_block_types");
  if (!down || down->type != SDE_JSON_ARRAY || (int)down->count != L || !up ||
      up->type != SDE_JSON_ARRAY || (int)up->count != L)
    return sde_fail(SDE_EFORMAT, "diffusers: down_block_types/up_block_types need %d entries", L);
  c->num_attn = 0;
  for (int l = 0; l < L; l++) {
    const sde_json *d = down->items[l], *u = up->items[L - 1 - l];
    if (d->type != SDE_JSON_STRING || u->type != SDE_JSON_STRING)
      return sde_fail(SDE_EFORMAT, "diffusers: block types must be strings");
    int attn_d = !strcmp(d->string, "AttnSkipDownBlock2D");
    int attn_u = !strcmp(u->string, "AttnSkipUpBlock2D");
    if (!attn_d && strcmp(d->string, "SkipDownBlock2D"))
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: down block %s (only SkipDownBlock2D / "
                      "AttnSkipDownBlock2D)", d->string);
    if (!attn_u && strcmp(u->string, "SkipUpBlock2D"))
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: up block %s (only SkipUpBlock2D / "
                      "AttnSkipUpBlock2D)", u->string);
    if (attn_d != attn_u)
      return sde_fail(SDE_EUNSUPPORTED, "diffusers: attention at level %d only on one side", l);
    if (attn_d) {
      if (c->num_attn >= SDE_NET_MAX_ATTN) return sde_fail(SDE_EUNSUPPORTED, "too many attention levels");
      c->attn_resolutions[c->num_attn++] = c->image_size >> l;
    }
  }
  /* VE SDE from the scheduler config (ScoreSdeVeScheduler defaults otherwise) */
  sde_init(&c->sde, SDE_VE);
  c->sde.sigma_max = 1348.0;
  c->sde.N = 2000;
  c->has_sde = 1;
  if (sched) {
    int64_t n = c->sde.N;
    if ((rc = sde_json_opt_number(sched, "sigma_min", &c->sde.sigma_min)) ||
        (rc = sde_json_opt_number(sched, "sigma_max", &c->sde.sigma_max)) ||
        (rc = sde_json_opt_int(sched, "num_train_timesteps", 2, 1000000, &n)))
      return sde_fail_context(rc, "scheduler_config.json");
    c->sde.N = (int)n;
  }
  return sde_ncsnpp_config_validate(c);
}

/* diffusers prefix of every all_modules entry, in module order (the walk of
 * convert_ncsnpp_original_checkpoint_to_diffusers.py) */
static int diffusers_prefixes(const sde_ncsnpp_config *c, char (*pref)[64], int max, int *n) {
  int k = 0;
  const int L = c->num_levels, R = c->num_res_blocks;
#define PUSH(...)                                            \
  do {                                                       \
    if (k >= max) return sde_fail(SDE_EINVAL, "too many modules"); \
    snprintf(pref[k++], 64, __VA_ARGS__);                    \
  } while (0)
  PUSH("time_proj");
  PUSH("time_embedding.linear_1");
  PUSH("time_embedding.linear_2");
  PUSH("conv_in");
  for (int l = 0; l < L; l++) {
    int attn = 0;
    for (int a = 0; a < c->num_attn; a++) attn |= c->attn_resolutions[a] == (c->image_size >> l);
    for (int j = 0; j < R; j++) {
      PUSH("down_blocks.%d.resnets.%d", l, j);
      if (attn) PUSH("down_blocks.%d.attentions.%d", l, j);
    }
    if (l != L - 1) {
      PUSH("down_blocks.%d.resnet_down", l);
      PUSH("down_blocks.%d.skip_conv", l);
    }
  }
  PUSH("mid_block.resnets.0");
  PUSH("mid_block.attentions.0");
  PUSH("mid_block.resnets.1");
  for (int u = 0; u < L; u++) {
    int l = L - 1 - u, attn = 0;
    for (int a = 0; a < c->num_attn; a++) attn |= c->attn_resolutions[a] == (c->image_size >> l);
    for (int j = 0; j < R + 1; j++) PUSH("up_blocks.%d.resnets.%d", u, j);
    if (attn) PUSH("up_blocks.%d.attentions.0", u);
    if (l != 0) {
      PUSH("up_blocks.%d.skip_norm", u);
      PUSH("up_blocks.%d.skip_conv", u);
      PUSH("up_blocks.%d.resnet_up", u);
    } else {
      PUSH("conv_norm_out");
      PUSH("conv_out");
    }
  }
#undef PUSH
  *n = k;
  return SDE_OK;
}

/* our sub-name -> diffusers sub-names (new, old) and whether W is transposed */
static void diffusers_sub(const char *sub, const char **a, const char **b, int *transpose) {
  static const char *const map[][3] = {
    {"GroupNorm_0.weight", "norm1.weight", NULL}, {"GroupNorm_0.bias", "norm1.bias", NULL},
    {"Conv_0.weight", "conv1.weight", NULL},      {"Conv_0.bias", "conv1.bias", NULL},
    {"Dense_0.weight", "time_emb_proj.weight", NULL}, {"Dense_0.bias", "time_emb_proj.bias", NULL},
    {"GroupNorm_1.weight", "norm2.weight", NULL}, {"GroupNorm_1.bias", "norm2.bias", NULL},
    {"Conv_1.weight", "conv2.weight", NULL},      {"Conv_1.bias", "conv2.bias", NULL},
    {"Conv_2.weight", "conv_shortcut.weight", NULL}, {"Conv_2.bias", "conv_shortcut.bias", NULL},
    {"NIN_0.W", "to_q.weight", "query.weight"},   {"NIN_0.b", "to_q.bias", "query.bias"},
    {"NIN_1.W", "to_k.weight", "key.weight"},     {"NIN_1.b", "to_k.bias", "key.bias"},
    {"NIN_2.W", "to_v.weight", "value.weight"},   {"NIN_2.b", "to_v.bias", "value.bias"},
    {"NIN_3.W", "to_out.0.weight", "proj_attn.weight"}, {"NIN_3.b", "to_out.0.bias", "proj_attn.bias"},
  };
  *a = sub;
  *b = NULL;
  *transpose = 0;
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (!strcmp(sub, map[i][0])) {
      *a = map[i][1];
      *b = map[i][2];
      *transpose = sub[0] == 'N' && sub[strlen(sub) - 1] == 'W';
      return;
    }
  if (!strcmp(sub, "W")) *a = "weight"; /* time_proj.weight (older: time_proj.W) */
}

int sde_network_load_diffusers(const char *dir, sde_model **out) {
  *out = NULL;
  char base[2048], path[2300];
  snprintf(base, sizeof base, "%s", dir);
  snprintf(path, sizeof path, "%s/config.json", base);
  if (!file_exists(path)) {
    snprintf(base, sizeof base, "%s/unet", dir);
    snprintf(path, sizeof path, "%s/config.json", base);
    if (!file_exists(path))
      return sde_fail(SDE_EIO, "%s: no config.json (a diffusers UNet2DModel folder?)", dir);
  }
  sde_json *j = sde_json_parse_file(path, 1 << 20);
  if (!j) return sde_fail_context(SDE_EFORMAT, "%s", path);
  sde_json *sched = NULL;
  const char *sched_paths[] = {"%s/scheduler_config.json", "%s/scheduler/scheduler_config.json",
                               "%s/../scheduler/scheduler_config.json"};
  for (int i = 0; i < 3 && !sched; i++) {
    snprintf(path, sizeof path, sched_paths[i], base);
    if (file_exists(path)) {
      sched = sde_json_parse_file(path, 1 << 20);
      if (!sched) {
        sde_json_free(j);
        return sde_fail_context(SDE_EFORMAT, "%s", path);
      }
    }
  }
  sde_ncsnpp_config c;
  int rc = diffusers_config(j, sched, &c);
  sde_json_free(j);
  sde_json_free(sched);
  if (rc) return sde_fail_context(rc, "%s", dir);

  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", base);
  if (!file_exists(path))
    return sde_fail(SDE_EIO, "%s: no diffusion_pytorch_model.safetensors (convert .bin weights "
                    "to safetensors first)", base);
  sde_safetensors *st;
  if ((rc = sde_st_open(path, &st))) return rc;
  sde_ncsnpp *net = NULL;
  char(*pref)[64] = NULL;
  float *tmp = NULL;
  int n_pref = 0;
  if ((rc = sde_ncsnpp_create(&c, &net))) goto done;
  int64_t n_mod;
  sde_ncsnpp_count(&c, NULL, &n_mod, NULL);
  pref = sde_calloc((size_t)n_mod + 1, sizeof *pref);
  if (!pref) { rc = SDE_ENOMEM; goto done; }
  if ((rc = diffusers_prefixes(&c, pref, (int)n_mod, &n_pref))) goto done;
  if (n_pref != n_mod) {
    rc = sde_fail(SDE_EINVAL, "internal: %d diffusers modules for %lld", n_pref, (long long)n_mod);
    goto done;
  }
  int np;
  const sde_net_param *params = sde_ncsnpp_params(net, &np);
  float *buf = sde_ncsnpp_param_buffer(net, NULL);
  int used = 0;
  for (int i = 0; i < np && !rc; i++) {
    const sde_net_param *p = &params[i];
    int mi;
    char sub[96];
    if (sscanf(p->name, "all_modules.%d.%95s", &mi, sub) != 2 || mi < 0 || mi >= n_pref) {
      rc = sde_fail(SDE_EINVAL, "internal: parameter name %s", p->name);
      break;
    }
    const char *na, *nb;
    int transpose;
    diffusers_sub(sub, &na, &nb, &transpose);
    if (strstr(pref[mi], ".attentions.") && !strncmp(sub, "GroupNorm_0.", 12))
      na = sub[12] == 'w' ? "group_norm.weight" : "group_norm.bias";
    char name[192];
    snprintf(name, sizeof name, "%s.%s", pref[mi], na);
    const sde_st_tensor *t = sde_st_find(st, name);
    if (!t && nb) {
      snprintf(name, sizeof name, "%s.%s", pref[mi], nb);
      t = sde_st_find(st, name);
    }
    if (!t && !strcmp(sub, "W")) {
      snprintf(name, sizeof name, "%s.W", pref[mi]);
      t = sde_st_find(st, name);
    }
    if (!t) {
      snprintf(name, sizeof name, "%s.%s", pref[mi], na);
      rc = sde_fail(SDE_EFORMAT, "%s: missing tensor '%s' (for %s)", path, name, p->name);
      break;
    }
    used++;
    /* expected diffusers shape: NIN W [in,out] is a Linear [out,in] (or a 1x1 conv) */
    int ok = t->numel == p->numel;
    if (ok && transpose) {
      ok = (t->ndim == 2 || (t->ndim == 4 && t->shape[2] == 1 && t->shape[3] == 1)) &&
           t->shape[0] == p->shape[1] && t->shape[1] == p->shape[0];
    } else if (ok) {
      ok = t->ndim == p->ndim;
      for (int d = 0; ok && d < p->ndim; d++) ok = t->shape[d] == p->shape[d];
    }
    if (!ok) {
      rc = sde_fail(SDE_EFORMAT, "%s: tensor '%s' has the wrong shape for %s", path, name, p->name);
      break;
    }
    if (!transpose) {
      rc = sde_st_read_f32(st, t, buf + p->offset);
    } else {
      free(tmp);
      tmp = sde_malloc((size_t)p->numel * sizeof(float));
      if (!tmp) { rc = SDE_ENOMEM; break; }
      if ((rc = sde_st_read_f32(st, t, tmp))) break;
      int64_t in = p->shape[0], outc = p->shape[1];
      for (int64_t a = 0; a < in; a++)
        for (int64_t b = 0; b < outc; b++) buf[p->offset + a * outc + b] = tmp[b * in + a];
    }
  }
  if (!rc && used != st->n_tensors) {
    for (int i = 0; i < st->n_tensors && !rc; i++) {
      /* find the first file tensor no parameter claimed */
      const char *name = st->tensors[i].name;
      int claimed = 0;
      for (int k = 0; k < n_pref && !claimed; k++) {
        size_t lp = strlen(pref[k]);
        claimed = !strncmp(name, pref[k], lp) && name[lp] == '.';
      }
      if (!claimed)
        rc = sde_fail(SDE_EFORMAT, "%s: unexpected tensor '%s' for this UNet2DModel config", path,
                      name);
    }
    if (!rc)
      rc = sde_fail(SDE_EFORMAT, "%s: %d tensors, the config maps %d", path, st->n_tensors, used);
  }
done:
  free(tmp);
  free(pref);
  sde_st_close(st);
  if (rc) {
    sde_ncsnpp_free(net);
    return rc;
  }
  return sde_network_wrap(net, out);
}
