/* NCSN++ / DDPM++ network: parameter counts of the released configs (spec §6.6), the
 * official-code fixtures (../shared/fixtures/ncsnpp: raw output and score within 1e-4 of
 * each sample's max |reference|), thread-count invariance, save/load round trip, the
 * checkpoint.pth and diffusers converters through the `scoresde` tool, and the options the
 * fixtures do not cover against tests/engine/ncsnpp_ref.py (an independent PyTorch
 * re-implementation; skipped without torch).
 *
 * Environment (set by meson): SCORESDE_FIXTURES, SCORESDE_CLI, SCORESDE_SRC. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/json.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "tap.h"

static const char *fixtures_dir(void) {
  const char *d = getenv("SCORESDE_FIXTURES");
  return d ? d : "../shared/fixtures";
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
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  rc = sde_network_forward(m, B, x.data, labels.data, out1);
  omp_set_num_threads(nt > 1 ? nt : 2);
  TAP_CHECK(rc == 0 && memcmp(out, out1, sizeof(float) * B * D) == 0,
            "%s: 1 thread and %d threads give bit-identical outputs", name, nt > 1 ? nt : 2);
  omp_set_num_threads(nt);
  int same = 1;
  for (int b = 0; b < B && same; b++) {
    rc = sde_network_forward(m, 1, x.data + b * D, labels.data + b, out1);
    same = rc == 0 && rel_err(out1, out + b * D, 1, D) <= 1e-6;
  }
  TAP_CHECK(same, "%s: batch of 1 agrees with batch of %d (rel 1e-6)", name, B);

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

int main(void) {
  test_counts();
  for (size_t i = 0; i < sizeof fixture_names / sizeof *fixture_names; i++)
    test_fixture(fixture_names[i]);
  return tap_done();
}
