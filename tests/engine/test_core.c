/* RNG, SDE coefficients, analytic-model derivatives, determinism and the planner. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mixtures.h"
#include "tap.h"

static void test_philox(void) {
  /* Known-answer vectors of Philox-4x32-10 (Random123). */
  const uint32_t ctr0[4] = {0, 0, 0, 0}, key0[2] = {0, 0};
  const uint32_t ctr1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                 key1[2] = {0xffffffffu, 0xffffffffu};
  const uint32_t ctr2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                 key2[2] = {0xa4093822u, 0x299f31d0u};
  uint32_t out[4];
  sde_philox4x32(ctr0, key0, out);
  TAP_CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu &&
                out[3] == 0x9b00dbd8u, "philox known answer, zero counter and key");
  sde_philox4x32(ctr1, key1, out);
  TAP_CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u &&
                out[3] == 0x6d5451fdu, "philox known answer, all-ones");
  sde_philox4x32(ctr2, key2, out);
  TAP_CHECK(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u &&
                out[3] == 0x24126ea1u, "philox known answer, pi digits");
}

static void test_distributions(void) {
  const int n = 1 << 20;
  float *z = malloc(sizeof(float) * n), *z2 = malloc(sizeof(float) * n);
  /* the SIMD path of sde_randn equals the scalar reference bit for bit, at every length
   * (tails included) and for keys that exercise every bit of seed, stream and step */
  int same = 1;
  for (int trial = 0; trial < 64 && same; trial++) {
    const uint64_t seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(trial + 1);
    const uint64_t stream = (uint64_t)trial << 33 | (uint64_t)trial * 977u;
    const int len = 1 + trial * 37;
    sde_randn(seed, stream, (uint32_t)(trial * 0x10001u), z, len);
    sde_randn_scalar(seed, stream, (uint32_t)(trial * 0x10001u), z2, len);
    same = memcmp(z, z2, sizeof(float) * (size_t)len) == 0;
  }
  for (int len = 1; len <= 20 && same; len++) { /* rows: 4 at a time when short */
    const int rows = 11;
    sde_randn_rows(3, 1000, 9, z, rows, len);
    for (int i = 0; i < rows; i++) sde_randn_scalar(3, 1000 + (uint64_t)i, 9, z2 + i * len, len);
    same = memcmp(z, z2, sizeof(float) * (size_t)(rows * len)) == 0;
  }
  sde_randn(5, 6, 7, z, n);
  sde_randn_scalar(5, 6, 7, z2, n);
  TAP_CHECK(same && memcmp(z, z2, sizeof(float) * n) == 0,
            "randn: vector paths bit-identical to the scalar reference (2^20 values, 64 keys, rows of 1-20)");
  double t0 = sde_now();
  sde_randn_scalar(5, 6, 7, z2, n);
  double t1 = sde_now();
  sde_randn(5, 6, 7, z, n);
  TAP_DIAG("randn: %.1f ns per value scalar, %.1f ns vector", 1e9 * (t1 - t0) / n,
           1e9 * (sde_now() - t1) / n);
  double mean = 0, var = 0, m4 = 0;
  for (int i = 0; i < n; i++) mean += z[i];
  mean /= n;
  for (int i = 0; i < n; i++) {
    var += (z[i] - mean) * (z[i] - mean);
    m4 += pow(z[i] - mean, 4);
  }
  var /= n;
  m4 /= n;
  /* standard errors: mean 1/sqrt(n) ≈ 1e-3, variance sqrt(2/n) ≈ 1.4e-3, 4th moment ~ 1e-2 */
  TAP_NEAR(mean, 0.0, 4e-3, "randn mean");
  TAP_NEAR(var, 1.0, 6e-3, "randn variance");
  TAP_NEAR(m4, 3.0, 0.05, "randn fourth moment");
  int tail = 0;
  for (int i = 0; i < n; i++) tail += fabs(z[i]) > 3.0f;
  TAP_NEAR((double)tail / n, 0.0026998, 5e-4, "randn P(|z| > 3)");
  sde_randn(5, 6, 7, z2, n);
  TAP_CHECK(!memcmp(z, z2, sizeof(float) * n), "randn is a pure function of its key");
  sde_randn(5, 6, 8, z2, 16);
  TAP_CHECK(memcmp(z, z2, sizeof(float) * 16) != 0, "another step gives other noise");
  sde_randn(5, 6, 7, z2, 7);
  TAP_CHECK(!memcmp(z, z2, sizeof(float) * 7), "a prefix of the stream is the same noise");
  sde_randu(1, 2, 3, z, n);
  double umin = 1, umax = 0, usum = 0;
  for (int i = 0; i < n; i++) {
    umin = fmin(umin, z[i]);
    umax = fmax(umax, z[i]);
    usum += z[i];
  }
  TAP_CHECK(umin >= 0.0 && umax < 1.0, "randu in [0,1)");
  TAP_NEAR(usum / n, 0.5, 2e-3, "randu mean");
  sde_rand_rademacher(1, 2, 3, z, n);
  double rsum = 0;
  int ok = 1;
  for (int i = 0; i < n; i++) {
    rsum += z[i];
    ok &= z[i] == 1.0f || z[i] == -1.0f;
  }
  TAP_CHECK(ok, "rademacher values are +-1");
  TAP_NEAR(rsum / n, 0.0, 4e-3, "rademacher mean");
  free(z);
  free(z2);
}

static void test_sde_constants(void) {
  sde_sde ve, vp, sub;
  sde_init(&ve, SDE_VE);
  sde_init(&vp, SDE_VP);
  sde_init(&sub, SDE_SUBVP);
  double a, g, m, s;
  sde_coefficients(&ve, 0.0, &a, &g);
  TAP_NEAR(g / ve.sigma_min, 4.12727, 1e-5, "VE sqrt(2 ln(sigma_max/sigma_min)) for 50");
  ve.sigma_max = 348;
  sde_coefficients(&ve, 0.0, &a, &g);
  TAP_NEAR(g / ve.sigma_min, 4.57326, 1e-5, "VE constant for 348");
  ve.sigma_max = 50;
  sde_marginal(&vp, 1.0, &m, &s);
  TAP_NEAR(m, 0.006572, 1e-6, "VP mean coefficient at t=1");
  TAP_NEAR(s, 0.9999784, 1e-7, "VP std at t=1");
  sde_marginal(&vp, 1e-3, &m, &s);
  TAP_NEAR(s, 0.0104854, 1e-7, "VP std at t=1e-3");
  sde_marginal(&vp, 1e-5, &m, &s);
  TAP_NEAR(s, 0.0010005, 1e-7, "VP std at t=1e-5");
  sde_marginal(&sub, 1e-3, &m, &s);
  TAP_NEAR(s, 1.0994e-4, 1e-8, "sub-VP std at t=1e-3");
  sde_marginal(&sub, 1e-5, &m, &s);
  TAP_NEAR(s, 1.001e-6, 1e-9, "sub-VP std at t=1e-5");
  sde_marginal(&ve, 0.5, &m, &s);
  TAP_NEAR(s, 0.01 * sqrt(5000.0), 1e-9, "VE std is sigma(t)");

  /* The marginals solve the moment equations of the linear SDE:
   * m' = a m and var' = 2 a var + g², except VE whose code std sigma(t) obeys var' = g². */
  const sde_sde *all[3] = {&ve, &vp, &sub};
  for (int k = 0; k < 3; k++) {
    double worst_m = 0, worst_v = 0;
    for (double t = 0.05; t < 1.0; t += 0.1) {
      const double h = 1e-6;
      double m1, s1, m2, s2, m0, s0;
      sde_marginal(all[k], t - h, &m1, &s1);
      sde_marginal(all[k], t + h, &m2, &s2);
      sde_marginal(all[k], t, &m0, &s0);
      sde_coefficients(all[k], t, &a, &g);
      double dm = (m2 - m1) / (2 * h), dv = (s2 * s2 - s1 * s1) / (2 * h);
      double var = s0 * s0;
      worst_m = fmax(worst_m, fabs(dm - a * m0) / fmax(1.0, fabs(a * m0)));
      worst_v = fmax(worst_v, fabs(dv - (2 * a * var + g * g)) / fmax(1.0, g * g));
    }
    TAP_CHECK(worst_m < 1e-6, "%s: mean coefficient solves m' = a m (%.2g)",
              sde_kind_name(all[k]->kind), worst_m);
    TAP_CHECK(worst_v < 1e-5, "%s: variance solves var' = 2 a var + g^2 (%.2g)",
              sde_kind_name(all[k]->kind), worst_v);
  }

  double fa, G;
  sde_discretize(&ve, 1e-5, &fa, &G);
  TAP_NEAR(G, 0.01, 1e-12, "VE reverse diffusion at i=0: G = sigma_min");
  sde_discretize(&vp, 1.0, &fa, &G);
  TAP_NEAR(G * G, 0.02, 1e-12, "VP beta_{N-1} = beta_max/N");
  TAP_NEAR(fa, sqrt(1 - 0.02) - 1, 1e-12, "VP discretised drift");
  TAP_CHECK(sde_time_grid(1e-3, 1000, 0) == 1.0f && sde_time_grid(1e-3, 1000, 999) == 1e-3f,
            "time grid runs from 1 to eps");
  TAP_CHECK(sde_time_index(&vp, 1.0f) == 999 && sde_time_index(&vp, 0.0f) == 0,
            "time index covers 0..N-1");
  float z[4] = {0, 0, 0, 0};
  TAP_NEAR(sde_prior_logp(&vp, z, 4), -2.0 * log(2 * M_PI), 1e-12, "prior log density at 0");

  sde_sde bad = vp;
  bad.beta_min = -1;
  TAP_CHECK(sde_validate(&bad) == SDE_EINVAL && strstr(sde_errmsg(), "beta_min"),
            "invalid beta_min is refused: %s", sde_errmsg());
  bad = ve;
  bad.sigma_max = 0.001;
  TAP_CHECK(sde_validate(&bad) == SDE_EINVAL, "sigma_max < sigma_min is refused: %s", sde_errmsg());
  sde_kind kind;
  TAP_CHECK(sde_kind_from_name("subvp", &kind) == SDE_OK && kind == SDE_SUBVP, "parse subvp");
  TAP_CHECK(sde_kind_from_name("vpp", &kind) == SDE_EINVAL, "unknown SDE name refused");
}

/* The mixture's score, divergence and Jacobian-vector product against finite differences
 * of its exact log density. */
static void test_mixture_derivatives(void) {
  sde_model *m = mixture_64d();
  const int D = 64, n = 3;
  sde_sde sde;
  sde_init(&sde, SDE_VP);
  float x[3 * 64], t[3] = {0.05f, 0.3f, 0.9f}, s[3 * 64], v[3 * 64], jv[3 * 64];
  sde_gmm_sample(m, &sde, 0.3, n, 3, 0, x, NULL);
  sde_randn(4, 0, 0, v, n * D);
  sde_model_score(m, &sde, n, x, t, s);
  double div[3];
  m->ops->score_div(m, &sde, n, x, t, div);
  m->ops->score_vjp(m, &sde, n, x, t, v, jv);
  double worst_score = 0, worst_div = 0, worst_jv = 0;
  for (int i = 0; i < n; i++) {
    const float h = 1e-2f;
    double fd_div = 0;
    for (int d = 0; d < D; d++) {
      float xp[64], xm[64];
      memcpy(xp, x + i * D, sizeof xp);
      memcpy(xm, x + i * D, sizeof xm);
      xp[d] += h;
      xm[d] -= h;
      double lp, lm;
      sde_gmm_logp(m, &sde, 1, xp, &t[i], &lp);
      sde_gmm_logp(m, &sde, 1, xm, &t[i], &lm);
      double fd = (lp - lm) / (xp[d] - xm[d]);
      worst_score = fmax(worst_score, fabs(fd - s[i * D + d]) / fmax(1.0, fabs(fd)));
      float sp[64], sm[64];
      sde_model_score(m, &sde, 1, xp, &t[i], sp);
      sde_model_score(m, &sde, 1, xm, &t[i], sm);
      fd_div += (sp[d] - sm[d]) / (xp[d] - xm[d]);
    }
    worst_div = fmax(worst_div, fabs(fd_div - div[i]) / fmax(1.0, fabs(div[i])));
    /* J v by a directional difference of the score */
    float xp[64], xm[64], sp[64], sm[64];
    for (int d = 0; d < D; d++) {
      xp[d] = x[i * D + d] + 1e-2f * v[i * D + d];
      xm[d] = x[i * D + d] - 1e-2f * v[i * D + d];
    }
    sde_model_score(m, &sde, 1, xp, &t[i], sp);
    sde_model_score(m, &sde, 1, xm, &t[i], sm);
    for (int d = 0; d < D; d++) {
      double fd = (sp[d] - sm[d]) / 2e-2;
      worst_jv = fmax(worst_jv, fabs(fd - jv[i * D + d]) / fmax(1.0, fabs(fd)));
    }
  }
  TAP_CHECK(worst_score < 1e-3, "mixture score = grad log p (rel err %.2g)", worst_score);
  TAP_CHECK(worst_div < 1e-3, "mixture divergence matches finite differences (rel err %.2g)", worst_div);
  TAP_CHECK(worst_jv < 1e-3, "mixture vector-Jacobian product matches (rel err %.2g)", worst_jv);
  sde_model_free(m);
}

/* Same seed, same output, whatever the thread count; a sample does not depend on its
 * batch neighbours for the predictor-only samplers. */
static void test_determinism(void) {
  sde_model *m = mixture_64d();
  const int n = 64, D = 64;
  float *a = malloc(sizeof(float) * n * D), *b = malloc(sizeof(float) * n * D);
  const sde_kind kinds[3] = {SDE_VE, SDE_VP, SDE_SUBVP};
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    sde_sample_params p;
    sde_sample_params_init(&p);
    p.steps = 100;
    p.seed = 11;
    if (kinds[k] == SDE_SUBVP) p.predictor = SDE_PRED_EULER_MARUYAMA;
    sde_set_num_threads(1);
    sde_sample(m, &sde, &p, n, 0, a, NULL);
    sde_set_num_threads(2);
    sde_sample(m, &sde, &p, n, 0, b, NULL);
    TAP_CHECK(!memcmp(a, b, sizeof(float) * n * D), "%s PC: identical at 1 and 2 threads",
              sde_kind_name(kinds[k]));
    p.corrector = SDE_CORR_NONE;
    sde_sample(m, &sde, &p, n, 100, a, NULL);
    sde_sample(m, &sde, &p, 1, 105, b, NULL);
    TAP_CHECK(!memcmp(a + 5 * D, b, sizeof(float) * D),
              "%s predictor-only: sample 105 alone equals sample 105 in a batch",
              sde_kind_name(kinds[k]));
  }
  free(a);
  free(b);
  sde_model_free(m);
}

/* Annealed Langevin dynamics alone (NCSNv2 style: predictor none, corrector ald with
 * T = 5 steps per scale) on the 2-D mixture, with the snr the planner gives. */
static void test_annealed_langevin(void) {
  sde_model *m = mixture_2d();
  const int n = 4000, D = 2;
  float *x = malloc(sizeof(float) * n * D);
  int *comp = malloc(sizeof(int) * n);
  sde_sde sde;
  sde_init(&sde, SDE_VE);
  sde_sample_params p;
  sde_sample_params_init(&p);
  p.predictor = SDE_PRED_NONE;
  p.corrector = SDE_CORR_ALD;
  p.corrector_steps = 5;
  p.steps = 200;
  const double gamma = pow(sde.sigma_max / sde.sigma_min, 1.0 / (p.steps - 1));
  const double eps = sde_plan_step_size(p.corrector_steps, gamma, sde.sigma_min);
  p.snr = sqrt(eps / (2 * sde.sigma_min * sde.sigma_min));
  p.seed = 21;
  sde_stats st;
  int status = sde_sample(m, &sde, &p, n, 0, x, &st);
  TAP_CHECK(status == SDE_OK && st.nfe == 1000, "ALD runs, NFE %lld", (long long)st.nfe);
  sde_gmm_classify(m, &sde, n, x, 0.0, comp);
  const double *w = sde_gmm_weights(m), *mu = sde_gmm_means(m), *var = sde_gmm_vars(m);
  double count[3] = {0}, sum[6] = {0}, worst_w = 0, worst_mu = 0;
  for (int i = 0; i < n; i++) {
    count[comp[i]]++;
    for (int d = 0; d < D; d++) sum[comp[i] * D + d] += x[i * D + d];
  }
  for (int k = 0; k < 3; k++) {
    worst_w = fmax(worst_w, fabs(count[k] / n - w[k]));
    for (int d = 0; d < D; d++)
      worst_mu = fmax(worst_mu, fabs(sum[k * D + d] / count[k] - mu[k * D + d]) / sqrt(var[k * D + d]));
  }
  /* 4000 samples: Monte Carlo sd of a weight <= 0.008, of a mean <= 0.04 std. Langevin
   * dynamics is known to weigh well-separated modes imperfectly (it barely moves mass
   * between them once the noise is small), so the weight tolerance is 0.05 (measured 0.028). */
  TAP_CHECK(worst_w < 0.05, "ALD mixture weights within 0.05 (%.4f), snr %.3f", worst_w, p.snr);
  TAP_CHECK(worst_mu < 0.15, "ALD component means within 0.15 std (%.3f)", worst_mu);
  free(x);
  free(comp);
  sde_model_free(m);
}

static int cancel_at_10(void *user, int done, int total) {
  (void)user;
  (void)total;
  return done >= 10;
}

static void test_errors(void) {
  sde_model *m = mixture_2d();
  sde_sde sde;
  sde_init(&sde, SDE_SUBVP);
  sde_sample_params p;
  sde_sample_params_init(&p);
  float x[8];
  p.predictor = SDE_PRED_ANCESTRAL;
  TAP_CHECK(sde_sample(m, &sde, &p, 4, 0, x, NULL) == SDE_EUNSUPPORTED,
            "ancestral sampling under sub-VP is refused: %s", sde_errmsg());
  p.predictor = SDE_PRED_REVERSE_DIFFUSION;
  p.steps = -1; /* 1 is allowed: the exact discretisation (test_fewstep.c) */
  TAP_CHECK(sde_sample(m, &sde, &p, 4, 0, x, NULL) == SDE_EINVAL, "steps = -1 refused: %s",
            sde_errmsg());
  p.steps = 100;
  p.progress = cancel_at_10;
  TAP_CHECK(sde_sample(m, &sde, &p, 4, 0, x, NULL) == SDE_ECANCELLED,
            "a progress callback cancels: %s", sde_errmsg());
  sde_predictor pred;
  TAP_CHECK(sde_predictor_from_name("em", &pred) == SDE_OK && pred == SDE_PRED_EULER_MARUYAMA,
            "predictor short name");
  TAP_CHECK(sde_predictor_from_name("bogus", &pred) == SDE_EINVAL, "bad predictor name: %s",
            sde_errmsg());
  /* Out of memory is an error, not a crash: 2^30 samples of a 64-D model need 256 GiB. */
  sde_model *big = mixture_64d();
  static float one[64];
  p.progress = NULL;
  int oom = sde_sample(big, &sde, &p, 1 << 30, 0, one, NULL);
  TAP_CHECK(oom == SDE_ENOMEM && strstr(sde_errmsg(), "memory"), "a batch too large for memory: %s",
            sde_errmsg());
  sde_model_free(big);
  /* sde_malloc: large blocks on a cache line (the kernels' vector loads), sizes whose
   * rounding would wrap refused */
  int aligned = 1;
  for (size_t n = 4096; n < (1u << 22); n = n * 3 + 5) {
    void *q = sde_malloc(n);
    aligned &= q && (uintptr_t)q % 64 == 0;
    free(q);
  }
  TAP_CHECK(aligned, "sde_malloc: blocks of 4 KB and more 64-byte aligned");
  TAP_CHECK(sde_malloc(SIZE_MAX - 10) == NULL && strstr(sde_errmsg(), "memory"),
            "sde_malloc: a size whose rounding wraps refused: %s", sde_errmsg());
  const double w[1] = {1}, mu[2] = {0, 0}, bad_sd[2] = {1, -1};
  sde_model *g = NULL;
  TAP_CHECK(sde_gmm_create(1, 2, w, mu, bad_sd, &g) == SDE_EINVAL, "negative std refused: %s",
            sde_errmsg());
  sde_model_free(m);
}

/* The empirical model's GEMM path against the generic mixture code with zero stds. */
static void test_empirical_matches_mixture(void) {
  enum { M = 10, Dm = 300, n = 70 };
  float *data = malloc(sizeof(float) * M * Dm), *x = malloc(sizeof(float) * n * Dm);
  float *s1 = malloc(sizeof(float) * n * Dm), *s2 = malloc(sizeof(float) * n * Dm), t[n];
  double *w = malloc(sizeof(double) * M), *mu = malloc(sizeof(double) * M * Dm);
  double *zero = calloc(M * Dm, sizeof(double)), d1[n], d2[n];
  sde_randu(8, 0, 0, data, M * Dm);
  for (int i = 0; i < M * Dm; i++) mu[i] = data[i];
  for (int k = 0; k < M; k++) w[k] = 1.0;
  sde_model *emp = NULL, *mix = NULL;
  sde_empirical_create(M, 3, 10, 10, data, 0, &emp);
  sde_gmm_create(M, Dm, w, mu, zero, &mix);
  sde_sde sde;
  sde_init(&sde, SDE_VP);
  for (int i = 0; i < n; i++) t[i] = 0.001f + 0.998f * (float)i / n;
  sde_prior_sample(&sde, 3, 0, 0, n, Dm, x);
  for (int i = 0; i < n * Dm; i++) x[i] = 0.5f * x[i] + 0.5f * data[i % (M * Dm)];
  sde_model_score(emp, &sde, n, x, t, s1);
  sde_model_score(mix, &sde, n, x, t, s2);
  emp->ops->score_div(emp, &sde, n, x, t, d1);
  mix->ops->score_div(mix, &sde, n, x, t, d2);
  double worst = 0, worst_div = 0;
  for (int i = 0; i < n * Dm; i++) worst = fmax(worst, fabs(s1[i] - s2[i]) / fmax(1.0, fabs(s2[i])));
  for (int i = 0; i < n; i++) worst_div = fmax(worst_div, fabs(d1[i] - d2[i]) / fmax(1.0, fabs(d2[i])));
  TAP_CHECK(worst < 1e-5, "empirical score by GEMM = mixture score (rel err %.2g)", worst);
  TAP_CHECK(worst_div < 1e-6, "empirical divergence by GEMM = mixture divergence (rel err %.2g)", worst_div);
  sde_set_num_threads(1);
  sde_model_score(emp, &sde, n, x, t, s2);
  sde_set_num_threads(2);
  TAP_CHECK(!memcmp(s1, s2, sizeof(float) * n * Dm), "empirical score identical at 1 and 2 threads");
  sde_model_free(emp);
  sde_model_free(mix);
  free(data); free(x); free(s1); free(s2); free(w); free(mu); free(zero);
}

static void test_planner(void) {
  const double gamma = sde_plan_gamma(3072, 0.5);
  const int L = sde_plan_num_scales(50.0, 0.01, gamma);
  const double ratio = pow(50.0 / 0.01, 1.0 / (L - 1));
  const double eps = sde_plan_step_size(5, ratio, 0.01);
  TAP_DIAG("planner for CIFAR-10: gamma %.5f, L %d, eps %.3g", gamma, L, eps);
  TAP_CHECK(abs(L - 232) <= 23, "L = %d within 10%% of NCSNv2's 232", L);
  TAP_CHECK(fabs(eps - 6.2e-6) <= 6.2e-7, "eps = %.3g within 10%% of NCSNv2's 6.2e-6", eps);
  TAP_NEAR(sde_plan_step_ratio(6.2e-6, 5, pow(5000.0, 1.0 / 231), 0.01), 1.056, 1e-3,
           "step-size equation at NCSNv2's CIFAR-10 settings");
  float pts[4 * 3] = {0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, -4};
  double smax;
  TAP_CHECK(sde_plan_sigma_max(4, 3, pts, &smax) == SDE_OK, "sigma_max runs");
  TAP_NEAR(smax, 5.0, 1e-9, "sigma_max = the largest pairwise distance");
}

/* The BLAS advice: run by meson with the environment it is given; with generic kernels
 * forced (OPENBLAS_CORETYPE=Prescott) on an AVX2 CPU the engine must name the fix. */
static void test_blas_advice(void) {
  const char *core = sde_blas_corename(), *better = sde_blas_better_coretype();
  const char *forced = getenv("OPENBLAS_CORETYPE");
  printf("# OpenBLAS kernels: %s; better: %s\n", core ? core : "(not OpenBLAS)",
         better ? better : "(none)");
  if (!core || !forced || strcasecmp(forced, "Prescott") != 0) {
    TAP_CHECK(!better || (core && strcasecmp(core, better) != 0),
              "advice names another kernel set than the one in use (%s)", core ? core : "-");
    return;
  }
  __builtin_cpu_init();
  int fma_cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  TAP_CHECK(strcasecmp(core, "Prescott") == 0, "OPENBLAS_CORETYPE=Prescott is in force (%s)",
            core);
  TAP_CHECK(fma_cpu ? better != NULL : better == NULL,
            "generic kernels on a CPU %s FMA: advice %s", fma_cpu ? "with" : "without",
            better ? better : "(none)");
}

int main(void) {
  test_blas_advice();
  test_philox();
  test_distributions();
  test_sde_constants();
  test_mixture_derivatives();
  test_determinism();
  test_errors();
  test_annealed_langevin();
  test_empirical_matches_mixture();
  test_planner();
  return tap_done();
}
