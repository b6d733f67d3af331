/* NCSN++ / DDPM++ network: parameter counts of the released configs (docs/math.md#net-counts), the
 * official-code fixtures (tests/fixtures/ncsnpp, made with score_sde_pytorch: raw
 * output and score within 1e-4 of each sample's max |reference|), thread-count invariance, save/load round trip, the
 * checkpoint.pth and diffusers converters through the `scoresde` tool, and the options the
 * fixtures do not cover against tests/engine/ncsnpp_ref.py (an independent PyTorch
 * re-implementation; skipped without torch).
 *
 * Environment (set by meson): SCORESDE_FIXTURES, SCORESDE_CLI, SCORESDE_SRC. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../engine/src/nn/network_internal.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "scoresde/scoresde.h"
#include "tap.h"
#include "tiny_config.h"

static const char *fixtures_dir(void) {
  const char *d = getenv("SCORESDE_FIXTURES");
  return d ? d : "tests/fixtures";
}

typedef struct {
  float *data;
  int ndim;
  int64_t shape[SDE_NPY_MAX_DIMS];
  size_t n;
} array;

static int load_npy(const char *dir, const char *name, array *a) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  memset(a, 0, sizeof *a);
  int rc = sde_npy_read(path, &a->data, &a->ndim, a->shape);
  if (rc) {
    TAP_DIAG("cannot read %s: %s", path, sde_errmsg());
    return rc;
  }
  a->n = 1;
  for (int i = 0; i < a->ndim; i++) a->n *= (size_t)a->shape[i];
  return 0;
}

/* worst over samples of max|got - ref| / max|ref| */
static double rel_err(const float *got, const float *ref, int B, size_t D) {
  double worst = 0;
  for (int b = 0; b < B; b++) {
    double mref = 0, merr = 0;
    for (size_t i = 0; i < D; i++) {
      double r = ref[b * D + i], e = fabs((double)got[b * D + i] - r);
      if (fabs(r) > mref) mref = fabs(r);
      if (!(e <= merr)) merr = e; /* NaN propagates */
    }
    double rel = mref > 0 ? merr / mref : merr;
    if (!(rel <= worst)) worst = rel;
  }
  return worst;
}

/* ---- parameter counts (config only) ------------------------------------------------------ */

static void test_counts(void) {
  sde_ncsnpp_config c;
  int64_t np = 0, nm = 0;
  double flops = 0;
  int rc;
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  rc = sde_ncsnpp_count(&c, &np, &nm, &flops);
  TAP_CHECK(rc == 0 && np == 62758915 && nm == 59,
            "VE CIFAR-10 NCSN++ continuous: %lld params (62,758,915), %lld modules (59)",
            (long long)np, (long long)nm);
  TAP_DIAG("NCSN++ cifar10 GFLOP per sample: %.2f", flops * 1e-9);
  c.num_res_blocks = 8;
  rc = sde_ncsnpp_count(&c, &np, &nm, NULL);
  TAP_CHECK(rc == 0 && np == 107587075 && nm == 95,
            "VE NCSN++ deep: %lld params (107,587,075), %lld modules (95)", (long long)np,
            (long long)nm);
  sde_ncsnpp_config_ddpmpp_cifar10(&c);
  rc = sde_ncsnpp_count(&c, &np, &nm, &flops);
  TAP_CHECK(rc == 0 && np == 61804419 && nm == 55,
            "VP CIFAR-10 DDPM++ continuous: %lld params (61,804,419), %lld modules (55)",
            (long long)np, (long long)nm);
  TAP_DIAG("DDPM++ cifar10 GFLOP per sample: %.2f", flops * 1e-9);
  c.num_res_blocks = 8;
  rc = sde_ncsnpp_count(&c, &np, &nm, NULL);
  TAP_CHECK(rc == 0 && np == 106632579 && nm == 91,
            "VP DDPM++ deep: %lld params (106,632,579), %lld modules (91)", (long long)np,
            (long long)nm);
  /* 256px NCSN++ (CelebA-HQ/FFHQ/LSUN) */
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  int cm256[7] = {1, 1, 2, 2, 2, 2, 2};
  c.num_levels = 7;
  memcpy(c.ch_mult, cm256, sizeof cm256);
  c.num_res_blocks = 2;
  c.image_size = 256;
  c.progressive = SDE_PROG_OUTPUT_SKIP;
  c.progressive_input = SDE_PROG_INPUT_SKIP;
  rc = sde_ncsnpp_count(&c, &np, &nm, NULL);
  TAP_CHECK(rc == 0 && np == 65574549 && nm == 77,
            "VE 256px NCSN++: %lld params (65,574,549), %lld modules (77)", (long long)np,
            (long long)nm);
  int cm1024[8] = {1, 2, 4, 8, 16, 32, 32, 32};
  c.nf = 16;
  c.num_levels = 8;
  memcpy(c.ch_mult, cm1024, sizeof cm1024);
  c.num_res_blocks = 1;
  c.image_size = 1024;
  rc = sde_ncsnpp_count(&c, &np, &nm, NULL);
  TAP_CHECK(rc == 0 && np == 105785896 && nm == 70,
            "VE FFHQ-1024 NCSN++: %lld params (105,785,896), %lld modules (70)", (long long)np,
            (long long)nm);
  /* trainable = all minus the Fourier W */
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  sde_net_param *params;
  int n;
  if (sde_ncsnpp_param_list(&c, &params, &n) == 0) {
    int64_t tr = 0;
    for (int i = 0; i < n; i++) tr += params[i].trainable ? params[i].numel : 0;
    TAP_CHECK(tr == 62758787, "NCSN++ trainable (EMA list) params %lld (62,758,787)",
              (long long)tr);
    TAP_CHECK(!strcmp(params[0].name, "all_modules.0.W") &&
                  !strcmp(params[n - 1].name, "all_modules.58.bias") &&
                  !strcmp(params[2].name, "all_modules.1.bias"),
              "names: %s ... %s", params[0].name, params[n - 1].name);
    free(params);
  }
}

/* ---- prepared conv weights ------------------------------------------------------------------
 * A model whose weights no longer change keeps each conv's prepared weights (the Winograd
 * transform, the direct kernel's packing) from its first forward: its outputs are the bits of
 * a model that prepares them per call (SDE_WEIGHT_CACHE_MB=0), on the first call and later
 * ones, at two batch sizes, from two threads starting at once, within a budget too small for
 * all of them, and after the weights change through sde_ncsnpp_param_buffer (which drops the
 * prepared weights). Where no kernel takes prepared weights (AVX-512, portable) it keeps none. */

typedef struct {
  const sde_model *m;
  const float *x, *labels;
  float *out;
  int n, rc;
} fwd_arg;

static void *fwd_thread(void *p) {
  fwd_arg *a = p;
  a->rc = sde_network_forward(a->m, a->n, a->x, a->labels, a->out);
  return NULL;
}

static sde_model *prep_model(const sde_ncsnpp_config *c, const float *w, const char *mb) {
  if (mb) setenv("SDE_WEIGHT_CACHE_MB", mb, 1);
  sde_model *m = NULL;
  if (sde_network_create(c, w, &m)) TAP_DIAG("create: %s", sde_errmsg());
  unsetenv("SDE_WEIGHT_CACHE_MB");
  return m;
}

static void test_prepared_weights(void) {
  sde_ncsnpp_config c;
  sde_ncsnpp_config_ncsnpp_cifar10(&c);
  /* 32 channels at 16x16, 64 at 8x8: Winograd F(2x2) at both, the direct kernel where 32
   * channels go in at 8x8 */
  shrink_config(&c, 32, 16);
  int64_t np = 0;
  if (!TAP_CHECK(sde_ncsnpp_count(&c, &np, NULL, NULL) == 0, "prepared weights: config")) return;
  float *w = malloc(sizeof(float) * (size_t)np);
  sde_randn(11, 0, 0, w, np);
  for (int64_t i = 0; i < np; i++) w[i] *= 0.05f;
  sde_model *kept = prep_model(&c, w, NULL), *per_call = prep_model(&c, w, "0");
  sde_model *small = prep_model(&c, w, "1"), *pair = prep_model(&c, w, NULL);
  if (!TAP_CHECK(kept && per_call && small && pair, "prepared weights: four models")) return;
  const int B = 3;
  const size_t D = (size_t)sde_model_dim(kept), n = B * D;
  float *x = malloc(sizeof(float) * n), labels[3] = {0.3f, 2.0f, 17.0f};
  sde_randn(12, 0, 0, x, (int64_t)n);
  float *ref = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
  float *t1 = malloc(sizeof(float) * n), *t2 = malloc(sizeof(float) * n);
  int rc = sde_network_forward(per_call, B, x, labels, ref), same = 1;
  for (int call = 0; call < 2; call++) { /* the first call prepares, the second reuses */
    rc |= sde_network_forward(kept, B, x, labels, got);
    same &= !memcmp(got, ref, n * sizeof(float));
    rc |= sde_network_forward(kept, 1, x, labels, got);
    rc |= sde_network_forward(per_call, 1, x, labels, t1);
    same &= !memcmp(got, t1, D * sizeof(float));
  }
  const size_t kept_bytes = sde_ncsnpp_prepared_bytes(sde_network_net(kept));
  const int avx2 = !strcmp(sde_cpu_kernels(), "avx2") && !getenv("SDE_NN_NO_DIRECT_CONV");
  TAP_CHECK(rc == 0 && same && (kept_bytes > 0) == avx2 &&
                sde_ncsnpp_prepared_bytes(sde_network_net(per_call)) == 0,
            "prepared weights: the bits of preparing per call, batch 3 and 1, first and second "
            "call (%zu bytes kept, %s)", kept_bytes, avx2 ? "AVX2 kernels" : "none expected");
  /* within 1 MB: some kept, the rest per call */
  rc = sde_network_forward(small, B, x, labels, got);
  const size_t small_bytes = sde_ncsnpp_prepared_bytes(sde_network_net(small));
  TAP_CHECK(rc == 0 && !memcmp(got, ref, n * sizeof(float)) && small_bytes <= (1u << 20) &&
                (!avx2 || small_bytes < kept_bytes),
            "prepared weights within SDE_WEIGHT_CACHE_MB=1: %zu of %zu bytes, the same bits",
            small_bytes, kept_bytes);
  /* two threads at once on a model that has prepared nothing yet */
  pthread_t th[2];
  fwd_arg a[2] = {{pair, x, labels, t1, B, -1}, {pair, x, labels, t2, B, -1}};
  int started = 0;
  for (int k = 0; k < 2; k++) started += pthread_create(&th[k], NULL, fwd_thread, &a[k]) == 0;
  for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
  TAP_CHECK(started == 2 && a[0].rc == 0 && a[1].rc == 0 && !memcmp(t1, ref, n * sizeof(float)) &&
                !memcmp(t2, ref, n * sizeof(float)) &&
                sde_ncsnpp_prepared_bytes(sde_network_net(pair)) == kept_bytes,
            "prepared weights: two threads preparing at once, each the same bits");
  /* new weights: the prepared ones go, the forward follows the weights */
  int64_t count = 0;
  float *pb = sde_ncsnpp_param_buffer(sde_network_ncsnpp(kept), &count);
  for (int64_t i = 0; i < count; i++) pb[i] *= 1.5f, w[i] *= 1.5f;
  sde_model *fresh = prep_model(&c, w, "0");
  rc = sde_network_forward(kept, B, x, labels, got);
  rc |= fresh ? sde_network_forward(fresh, B, x, labels, ref) : -1;
  TAP_CHECK(rc == 0 && !memcmp(got, ref, n * sizeof(float)) &&
                sde_ncsnpp_prepared_bytes(sde_network_net(kept)) == 0,
            "prepared weights dropped when the weights are handed out writable: the new "
            "weights' bits");
  sde_model_free(fresh), sde_model_free(kept), sde_model_free(per_call);
  sde_model_free(small), sde_model_free(pair);
  free(w), free(x), free(ref), free(got), free(t1), free(t2);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static const char *const fixture_names[] = {"ve_ncsnpp_tiny", "vp_ddpmpp_tiny",
                                            "ve_ncsnpp_residual_gray", "subvp_ddpmpp_tiny32"};

static void test_fixture(const char *name) {
  char dir[1024], path[1200];
  snprintf(dir, sizeof dir, "%s/ncsnpp/%s", fixtures_dir(), name);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  sde_model *m = NULL;
  int rc = sde_network_load(path, &m);
  if (!TAP_CHECK(rc == 0, "%s: load (%s)", name, rc ? sde_errmsg() : "ok")) return;
  array x, t, labels, ref_out, ref_score;
  if (load_npy(dir, "x.npy", &x) || load_npy(dir, "t.npy", &t) ||
      load_npy(dir, "labels.npy", &labels) || load_npy(dir, "model_out.npy", &ref_out) ||
      load_npy(dir, "score.npy", &ref_score)) {
    TAP_CHECK(0, "%s: fixture arrays", name);
    sde_model_free(m);
    return;
  }
  const int B = (int)x.shape[0];
  const size_t D = (size_t)sde_model_dim(m);
  TAP_CHECK(x.ndim == 4 && x.shape[1] == m->channels && x.shape[2] == m->height &&
                x.shape[3] == m->width && m->is_image && m->has_sde && strlen(m->id) == 32,
            "%s: model %dx%dx%d, sde %s, id %s", name, m->channels, m->height, m->width,
            sde_kind_name(m->sde.kind), m->id);

  float *lab = malloc(sizeof(float) * (size_t)B), *out = malloc(sizeof(float) * B * D),
        *out1 = malloc(sizeof(float) * B * D);
  rc = sde_network_labels(m, &m->sde, B, t.data, lab);
  double lerr = 0;
  for (int b = 0; b < B; b++) {
    double e = fabs(lab[b] - labels.data[b]) / fabs(labels.data[b]);
    if (e > lerr) lerr = e;
  }
  TAP_CHECK(rc == 0 && lerr <= 1.2e-7, "%s: labels from t match labels.npy (rel %.3g)", name,
            lerr);

  rc = sde_network_forward(m, B, x.data, labels.data, out);
  double e_out = rc ? INFINITY : rel_err(out, ref_out.data, B, D);
  TAP_CHECK(e_out <= 1e-4, "%s: raw output vs model_out.npy, max rel err %.3g (tol 1e-4)%s%s",
            name, e_out, rc ? ": " : "", rc ? sde_errmsg() : "");

  rc = sde_model_score(m, &m->sde, B, x.data, t.data, out1);
  double e_score = rc ? INFINITY : rel_err(out1, ref_score.data, B, D);
  TAP_CHECK(e_score <= 1e-4, "%s: score vs score.npy, max rel err %.3g (tol 1e-4)%s%s", name,
            e_score, rc ? ": " : "", rc ? sde_errmsg() : "");

  /* bit-identical for 1 and 2 threads, and for a batch split in single samples */
  int nt = sde_get_num_threads();
  sde_set_num_threads(1);
  rc = sde_network_forward(m, B, x.data, labels.data, out1);
  sde_set_num_threads(nt > 1 ? nt : 2);
  TAP_CHECK(rc == 0 && memcmp(out, out1, sizeof(float) * B * D) == 0,
            "%s: 1 thread and %d threads give bit-identical outputs", name, nt > 1 ? nt : 2);
  sde_set_num_threads(nt);
  /* bit-identical by construction: GEMM tiles depend on the shape only, never the batch */
  int same = 1;
  double e_batch = 0.0;
  for (int b = 0; b < B; b++) {
    rc = sde_network_forward(m, 1, x.data + b * D, labels.data + b, out1);
    if (rc) { same = 0; e_batch = INFINITY; break; }
    if (memcmp(out1, out + b * D, sizeof(float) * D) != 0) same = 0;
    double e = rel_err(out1, out + b * D, 1, D);
    if (e > e_batch) e_batch = e;
  }
  TAP_CHECK(same, "%s: batch of 1 bit-identical to batch of %d (max rel diff %.3g)", name, B,
            e_batch);

  /* workspace API */
  sde_net_workspace *ws = NULL;
  rc = sde_net_workspace_create(m, B, &ws);
  if (!rc) rc = sde_network_forward_ws(m, ws, B, x.data, labels.data, out1);
  TAP_CHECK(rc == 0 && memcmp(out, out1, sizeof(float) * B * D) == 0,
            "%s: workspace forward (%.1f MB) identical", name,
            sde_net_workspace_bytes(ws) / 1048576.0);
  sde_net_workspace_free(ws);

  /* save/load round trip keeps weights, config and id */
  char tmp[] = "/tmp/scoresde_net_XXXXXX";
  int fd = mkstemp(tmp);
  if (fd >= 0) close(fd);
  sde_model *m2 = NULL;
  rc = sde_network_save(m, tmp, NULL, 0);
  if (!rc) rc = sde_network_load(tmp, &m2);
  if (!rc) rc = sde_network_forward(m2, B, x.data, labels.data, out1);
  TAP_CHECK(rc == 0 && memcmp(out, out1, sizeof(float) * B * D) == 0 && !strcmp(m->id, m2->id),
            "%s: save + load round trip (same outputs and id)%s%s", name, rc ? ": " : "",
            rc ? sde_errmsg() : "");
  sde_model_free(m2);
  unlink(tmp);

  free(lab);
  free(out);
  free(out1);
  free(x.data); free(t.data); free(labels.data); free(ref_out.data); free(ref_score.data);
  sde_model_free(m);
}


/* ---- converters through the scoresde tool ------------------------------------------------ */

static int run_cmd(const char *cmdline) {
  int st = system(cmdline);
  return st == -1 ? -1 : WEXITSTATUS(st);
}

static int have_torch(void) {
  const char *py = getenv("SCORESDE_PYTHON");
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", py ? py : "/usr/bin/python3");
  return run_cmd(cmd) == 0;
}

static int same_params(const sde_model *a, const sde_model *b, double *maxdiff) {
  int64_t na, nb;
  const float *pa = sde_network_params(a, &na), *pb = sde_network_params(b, &nb);
  *maxdiff = 0;
  if (!pa || !pb || na != nb) return 0;
  for (int64_t i = 0; i < na; i++) {
    double d = fabs((double)pa[i] - pb[i]);
    if (d > *maxdiff) *maxdiff = d;
  }
  return memcmp(pa, pb, sizeof(float) * (size_t)na) == 0;
}

static void test_convert_pth(const char *cli, const char *tmpdir) {
  char dir[1024], cmd[4096], out_ema[1200], out_raw[1200], path[1200];
  snprintf(dir, sizeof dir, "%s/ncsnpp/ve_ncsnpp_tiny", fixtures_dir());
  if (!have_torch()) {
    printf("ok %d - # SKIP convert --from pth: no python3 with torch\n", ++tap_count_);
    return;
  }
  snprintf(out_ema, sizeof out_ema, "%s/conv_ema.safetensors", tmpdir);
  snprintf(out_raw, sizeof out_raw, "%s/conv_model.safetensors", tmpdir);
  snprintf(cmd, sizeof cmd,
           "'%s' convert --from pth '%s/checkpoint.pth' --config '%s/config.json' --out '%s' >/dev/null",
           cli, dir, dir, out_ema);
  int ec = run_cmd(cmd);
  TAP_CHECK(ec == 0, "convert --from pth checkpoint.pth (exit %d)", ec);
  snprintf(cmd, sizeof cmd,
           "'%s' convert --from pth '%s/checkpoint.pth' --config '%s/config.json' --weights model "
           "--out '%s' >/dev/null", cli, dir, dir, out_raw);
  ec = run_cmd(cmd);
  TAP_CHECK(ec == 0, "convert --from pth --weights model (exit %d)", ec);
  sde_model *ref = NULL, *ema = NULL, *raw = NULL;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  int rc = sde_network_load(path, &ref);
  if (!rc) rc = sde_network_load(out_ema, &ema);
  if (!rc) rc = sde_network_load(out_raw, &raw);
  if (!TAP_CHECK(rc == 0, "load converted models (%s)", rc ? sde_errmsg() : "ok")) goto done;
  double d_ema, d_raw;
  int s_ema = same_params(ema, ref, &d_ema), s_raw = same_params(raw, ref, &d_raw);
  TAP_CHECK(s_ema && !strcmp(ema->id, ref->id),
            "EMA conversion equals model.safetensors bit for bit (max diff %g, id %s)", d_ema, ema->id);
  TAP_CHECK(!s_raw && d_raw > 1e-3, "the raw 'model' weights differ (max diff %g): EMA was used",
            d_raw);
  /* and the outputs of the EMA conversion match the fixture */
  array x, labels, ref_out;
  if (!load_npy(dir, "x.npy", &x) && !load_npy(dir, "labels.npy", &labels) &&
      !load_npy(dir, "model_out.npy", &ref_out)) {
    int B = (int)x.shape[0];
    size_t D = (size_t)sde_model_dim(ema);
    float *out = malloc(sizeof(float) * B * D);
    rc = sde_network_forward(ema, B, x.data, labels.data, out);
    double e = rc ? INFINITY : rel_err(out, ref_out.data, B, D);
    TAP_CHECK(e <= 1e-4, "converted checkpoint reproduces model_out.npy (rel %.3g)", e);
    rc = sde_network_forward(raw, B, x.data, labels.data, out);
    e = rc ? INFINITY : rel_err(out, ref_out.data, B, D);
    TAP_CHECK(e > 1e-2, "non-EMA weights do not (rel %.3g)", e);
    free(out);
    free(x.data); free(labels.data); free(ref_out.data);
  }
done:
  sde_model_free(ref);
  sde_model_free(ema);
  sde_model_free(raw);
}

/* diffusers layout of ve_ncsnpp_tiny (nf 16, ch_mult 1,2,2, 1 res block, attention at 8px),
 * written out by hand from UNet2DModel's module tree: all_modules index -> prefix. */
static const char *const tiny_diffusers_prefix[30] = {
  "time_proj", "time_embedding.linear_1", "time_embedding.linear_2", "conv_in",
  "down_blocks.0.resnets.0", "down_blocks.0.resnet_down", "down_blocks.0.skip_conv",
  "down_blocks.1.resnets.0", "down_blocks.1.attentions.0", "down_blocks.1.resnet_down",
  "down_blocks.1.skip_conv", "down_blocks.2.resnets.0",
  "mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1",
  "up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.0.skip_norm",
  "up_blocks.0.skip_conv", "up_blocks.0.resnet_up",
  "up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.1.attentions.0",
  "up_blocks.1.skip_norm", "up_blocks.1.skip_conv", "up_blocks.1.resnet_up",
  "up_blocks.2.resnets.0", "up_blocks.2.resnets.1", "conv_norm_out", "conv_out",
};

static const char *tiny_diffusers_sub(const char *sub, int *transpose) {
  static const char *const map[][2] = {
    {"W", "weight"}, {"GroupNorm_0.weight", "norm1.weight"}, {"GroupNorm_0.bias", "norm1.bias"},
    {"Conv_0.weight", "conv1.weight"}, {"Conv_0.bias", "conv1.bias"},
    {"Dense_0.weight", "time_emb_proj.weight"}, {"Dense_0.bias", "time_emb_proj.bias"},
    {"GroupNorm_1.weight", "norm2.weight"}, {"GroupNorm_1.bias", "norm2.bias"},
    {"Conv_1.weight", "conv2.weight"}, {"Conv_1.bias", "conv2.bias"},
    {"Conv_2.weight", "conv_shortcut.weight"}, {"Conv_2.bias", "conv_shortcut.bias"},
    {"NIN_0.W", "to_q.weight"}, {"NIN_0.b", "to_q.bias"}, {"NIN_1.W", "to_k.weight"},
    {"NIN_1.b", "to_k.bias"}, {"NIN_2.W", "to_v.weight"}, {"NIN_2.b", "to_v.bias"},
    {"NIN_3.W", "to_out.0.weight"}, {"NIN_3.b", "to_out.0.bias"},
  };
  *transpose = !strncmp(sub, "NIN_", 4) && sub[strlen(sub) - 1] == 'W';
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (!strcmp(sub, map[i][0])) return map[i][1];
  return sub; /* bare modules: weight / bias, and the attention's GroupNorm_0 */
}

static void test_convert_diffusers(const char *cli, const char *tmpdir) {
  char dir[1024], path[1200], ddir[1100], cmd[4096], out[1200];
  snprintf(dir, sizeof dir, "%s/ncsnpp/ve_ncsnpp_tiny", fixtures_dir());
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  snprintf(ddir, sizeof ddir, "%s/diffusers_tiny", tmpdir);
  mkdir(ddir, 0755);
  sde_model *ref = NULL, *conv = NULL;
  if (!TAP_CHECK(sde_network_load(path, &ref) == 0, "diffusers: load fixture")) return;
  int np;
  sde_net_param *params;
  sde_ncsnpp_param_list(sde_network_config(ref), &params, &np);
  const float *buf = sde_network_params(ref, NULL);
  sde_st_entry *e = calloc((size_t)np, sizeof *e);
  char (*names)[128] = calloc((size_t)np, sizeof *names);
  float **owned = calloc((size_t)np, sizeof *owned);
  int ok = 1;
  for (int i = 0; i < np; i++) {
    int mi, tr;
    char sub[96];
    ok &= sscanf(params[i].name, "all_modules.%d.%95s", &mi, sub) == 2 && mi >= 0 && mi < 30;
    if (!ok) break;
    /* the attention's GroupNorm_0 is group_norm; resnets' is norm1 */
    const char *dsub = strstr(tiny_diffusers_prefix[mi], "attentions") && !strncmp(sub, "GroupNorm_0.", 12)
                           ? (sub[12] == 'w' ? "group_norm.weight" : "group_norm.bias")
                           : tiny_diffusers_sub(sub, &tr);
    tiny_diffusers_sub(sub, &tr);
    snprintf(names[i], sizeof names[i], "%s.%s", tiny_diffusers_prefix[mi], dsub);
    e[i].name = names[i];
    e[i].ndim = params[i].ndim;
    for (int d = 0; d < params[i].ndim; d++) e[i].shape[d] = params[i].shape[d];
    e[i].data = buf + params[i].offset;
    if (tr) { /* NIN W [in,out] -> Linear weight [out,in] */
      int64_t in = params[i].shape[0], o = params[i].shape[1];
      owned[i] = malloc(sizeof(float) * (size_t)(in * o));
      for (int64_t a = 0; a < in; a++)
        for (int64_t b = 0; b < o; b++) owned[i][b * in + a] = buf[params[i].offset + a * o + b];
      e[i].shape[0] = o;
      e[i].shape[1] = in;
      e[i].data = owned[i];
    }
  }
  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", ddir);
  const char *meta[] = {"format", "pt"};
  ok = ok && sde_st_write(path, e, np, meta, 1) == 0;
  snprintf(path, sizeof path, "%s/config.json", ddir);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 16, \"in_channels\": 3,"
               " \"out_channels\": 3, \"center_input_sample\": true, \"time_embedding_type\": \"fourier\","
               " \"block_out_channels\": [16, 32, 32], \"layers_per_block\": 1,"
               " \"down_block_types\": [\"SkipDownBlock2D\", \"AttnSkipDownBlock2D\", \"SkipDownBlock2D\"],"
               " \"up_block_types\": [\"SkipUpBlock2D\", \"AttnSkipUpBlock2D\", \"SkipUpBlock2D\"],"
               " \"norm_eps\": 1e-06, \"mid_block_scale_factor\": 1.4142135623730951}\n");
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/scheduler_config.json", ddir);
  f = fopen(path, "w");
  if (f) {
    fprintf(f, "{\"_class_name\": \"ScoreSdeVeScheduler\", \"num_train_timesteps\": 1000,"
               " \"sigma_min\": 0.01, \"sigma_max\": 50.0, \"snr\": 0.16}\n");
    fclose(f);
  }
  TAP_CHECK(ok, "diffusers: wrote a UNet2DModel folder from ve_ncsnpp_tiny (%d tensors)", np);
  snprintf(out, sizeof out, "%s/from_diffusers.safetensors", tmpdir);
  snprintf(cmd, sizeof cmd, "'%s' convert --from diffusers '%s' --out '%s' >/dev/null", cli, ddir, out);
  int ec = run_cmd(cmd);
  TAP_CHECK(ec == 0, "convert --from diffusers (exit %d)", ec);
  int rc = sde_network_load(out, &conv);
  if (TAP_CHECK(rc == 0, "load the converted model (%s)", rc ? sde_errmsg() : "ok")) {
    double d = INFINITY;
    int same = same_params(conv, ref, &d); /* before the check: its arguments are unordered */
    TAP_CHECK(same, "diffusers round trip restores every parameter (max diff %g)", d);
    array x, labels;
    if (!load_npy(dir, "x.npy", &x) && !load_npy(dir, "labels.npy", &labels)) {
      int B = (int)x.shape[0];
      size_t D = (size_t)sde_model_dim(ref);
      float *o1 = malloc(sizeof(float) * B * D), *o2 = malloc(sizeof(float) * B * D);
      rc = sde_network_forward(ref, B, x.data, labels.data, o1);
      if (!rc) rc = sde_network_forward(conv, B, x.data, labels.data, o2);
      TAP_CHECK(rc == 0 && !memcmp(o1, o2, sizeof(float) * B * D) && conv->sde.kind == SDE_VE &&
                    conv->sde.sigma_max == 50.0 && conv->sde.N == 1000 && !conv->centered,
                "diffusers conversion gives identical outputs, VE sigma_max 50, N 1000");
      free(o1); free(o2); free(x.data); free(labels.data);
    }
    sde_model_free(conv);
  }
  for (int i = 0; i < np; i++) free(owned[i]);
  free(owned); free(names); free(e); free(params);
  sde_model_free(ref);
}

int main(void) {
  test_counts();
  test_prepared_weights();
  for (size_t i = 0; i < sizeof fixture_names / sizeof *fixture_names; i++)
    test_fixture(fixture_names[i]);
  const char *cli = getenv("SCORESDE_CLI");
  char tmpdir[] = "/tmp/scoresde_conv_XXXXXX";
  if (cli && mkdtemp(tmpdir)) {
    test_convert_pth(cli, tmpdir);
    test_convert_diffusers(cli, tmpdir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) TAP_DIAG("could not remove %s", tmpdir);
  } else {
    printf("ok %d - # SKIP converters: SCORESDE_CLI not set\n", ++tap_count_);
  }
  return tap_done();
}
