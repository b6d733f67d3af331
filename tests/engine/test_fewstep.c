/* The few-step solvers (ddim, dpmpp-2m, dpmpp-3m, dpmpp-2m-sde, heun) on the Gaussian
 * mixtures of mixtures.h, whose noised scores, samples and conditionals are exact.
 *
 *  1. marginal.h: the score / eps / x0 conversions against Tweedie's formula for one
 *     Gaussian, the log-SNR inverse and the forward kernels.
 *  2. Convergence order: the error against the exact-score PF-ODE solved by RK45 at
 *     rtol = atol = 1e-10 falls with slope about 1, 2, 3 (ddim, dpmpp-2m, dpmpp-3m)
 *     over NFE 5..80 on a log-log fit, for VE, VP and sub-VP.
 *  3. Distributions (20k samples): at 20 NFE (logsnr grid) every solver gets the mode
 *     weights within 0.02 on both mixtures and all three SDEs; at its budget (below), on
 *     the logsnr and the karras grid, it passes the whole acceptance of test_sampling.c
 *     (weights within 0.02, means within 0.05 std, sliced W1 within mean + 4 sd of the
 *     same distance between exact sample sets).
 *  4. Every sampler, PC included, gives finite samples for every steps in 1..20.
 *  5. Inpainting, colorization and guidance with few-step solvers keep the known part
 *     and give the exact conditional distribution (within the stated limits of the
 *     replacement method).
 *  6. Encode/decode round trips, NFE accounting, determinism and argument errors.
 *
 * `test_fewstep conv` prints the convergence table (CSV) for tools/plot_convergence.py,
 * `test_fewstep roundtrip` the encode/decode round-trip table, `test_fewstep dist20` the
 * distribution tests with the sliced W1 at 20 NFE as well (docs/sampling.md).
 *
 * The 20 NFE of 3 and 5 is pinned: the measurement point of docs/sampling.md's tables
 * (the default until 2026-12-05), not the default (15, checked in 6). */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "mixtures.h"
#include "tap.h"

enum { N_DIST = 20000, SW_DIRS = 64, NULL_REPS = 8, N_CONV = 32 };

static const sde_sampler fewstep[5] = {SDE_SAMPLER_DDIM, SDE_SAMPLER_DPMPP_2M,
                                       SDE_SAMPLER_DPMPP_3M, SDE_SAMPLER_DPMPP_2M_SDE,
                                       SDE_SAMPLER_HEUN};
static const sde_kind kinds[3] = {SDE_VE, SDE_VP, SDE_SUBVP};

/* On the logsnr grid, where the tables of docs/sampling.md were measured; the default grid
 * (karras, chosen on the image networks) is checked where the tests loop over grids. */
static const sde_schedule grids[2] = {SDE_SCHEDULE_LOGSNR, SDE_SCHEDULE_KARRAS};

static sde_sample_params fewstep_params(sde_sampler s, int steps, uint64_t seed) {
  sde_sample_params p;
  sde_sample_params_init(&p);
  p.schedule = SDE_SCHEDULE_LOGSNR;
  p.sampler = s;
  p.steps = steps;
  p.seed = seed;
  return p;
}

static double rms_diff(const float *a, const float *b, int64_t len) {
  double e = 0.0;
  for (int64_t i = 0; i < len; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
  return sqrt(e / (double)len);
}

/* Median over n samples of the RMS difference per sample of D values: a sample whose
 * trajectory starts on a boundary between modes may land in another mode at coarse
 * steps, which says nothing about the order of the solver. */
static double median_rms(const float *a, const float *b, int n, int D) {
  double *e = malloc(sizeof(double) * n);
  for (int i = 0; i < n; i++) e[i] = rms_diff(a + (size_t)i * D, b + (size_t)i * D, D);
  qsort(e, n, sizeof(double), cmp_double);
  const double med = 0.5 * (e[(n - 1) / 2] + e[n / 2]);
  free(e);
  return med;
}

static int all_finite(const float *x, int64_t len) {
  for (int64_t i = 0; i < len; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* Least-squares slope of log y against log x, negated (a falling error: positive). */
static double loglog_slope(const double *x, const double *y, int k) {
  double mx = 0, my = 0, sxy = 0, sxx = 0;
  for (int j = 0; j < k; j++) {
    mx += log(x[j]) / k;
    my += log(y[j]) / k;
  }
  for (int j = 0; j < k; j++) {
    sxy += (log(x[j]) - mx) * (log(y[j]) - my);
    sxx += (log(x[j]) - mx) * (log(x[j]) - mx);
  }
  return -sxy / sxx;
}

/* ---- 1. marginal.h ------------------------------------------------------------------- */

static void test_marginal(void) {
  /* One Gaussian N(mu, s²) in 1-D: p_t = N(alpha mu, alpha² s² + sigma²), score and
   * E[x0 | x_t] = mu + alpha s² (x - alpha mu) / (alpha² s² + sigma²) in closed form. */
  const double mu = 0.7, s = 0.4;
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    double worst_x0 = 0, worst_eps = 0, worst_back = 0, worst_t = 0, worst_kernel = 0;
    for (int j = 1; j <= 9; j++) {
      const double t = j / 10.0, x = 1.3 - 0.2 * j;
      const sde_marg mk = sde_marg_at(&sde, t);
      const double v = mk.alpha * mk.alpha * s * s + mk.sigma * mk.sigma;
      const double score = -(x - mk.alpha * mu) / v;
      const double x0 = mu + mk.alpha * s * s * (x - mk.alpha * mu) / v;
      double cx, cy;
      sde_marg_convert(&mk, SDE_PARAM_SCORE, SDE_PARAM_X0, &cx, &cy);
      worst_x0 = fmax(worst_x0, fabs(cx * x + cy * score - x0));
      sde_marg_convert(&mk, SDE_PARAM_X0, SDE_PARAM_EPS, &cx, &cy);
      const double eps = cx * x + cy * x0; /* x = alpha x0 + sigma eps */
      worst_eps = fmax(worst_eps, fabs(mk.alpha * x0 + mk.sigma * eps - x));
      sde_marg_convert(&mk, SDE_PARAM_EPS, SDE_PARAM_SCORE, &cx, &cy);
      worst_back = fmax(worst_back, fabs(cx * x + cy * eps - score));
      worst_t = fmax(worst_t, fabs(sde_marg_time(&sde, mk.lambda) - t));
      /* the kernel composes: hi from mid from lo equals hi from lo */
      const sde_marg lo = sde_marg_at(&sde, t - 0.08), mid = sde_marg_at(&sde, t - 0.04);
      double a1, b1, a2, b2, a, b;
      sde_marg_kernel(&mid, &lo, &a1, &b1);
      sde_marg_kernel(&mk, &mid, &a2, &b2);
      sde_marg_kernel(&mk, &lo, &a, &b);
      worst_kernel = fmax(worst_kernel, fabs(a2 * a1 - a) + fabs(a2 * a2 * b1 + b2 - b));
    }
    TAP_CHECK(worst_x0 < 1e-12, "%s: score -> x0 is Tweedie's E[x0 | x_t] (err %.2g)",
              sde_kind_name(kinds[k]), worst_x0);
    TAP_CHECK(worst_eps < 1e-12 && worst_back < 1e-12,
              "%s: x0 -> eps and eps -> score agree with x = alpha x0 + sigma eps (%.2g, %.2g)",
              sde_kind_name(kinds[k]), worst_eps, worst_back);
    TAP_CHECK(worst_t < 1e-12, "%s: the time of a log-SNR inverts lambda(t) (err %.2g)",
              sde_kind_name(kinds[k]), worst_t);
    TAP_CHECK(worst_kernel < 1e-12, "%s: forward kernels compose (err %.2g)",
              sde_kind_name(kinds[k]), worst_kernel);
  }
  /* VP's kernel between the default grid's times is DDPM's: 1 - beta_i = alpha_bar ratio */
  sde_sde vp;
  sde_init(&vp, SDE_VP);
  const sde_marg hi = sde_marg_at(&vp, 0.5), lo = sde_marg_at(&vp, 0.5 - 1e-3);
  double a, b2;
  sde_marg_kernel(&hi, &lo, &a, &b2);
  const double beta_ref = 1.0 - (hi.alpha * hi.alpha) / (lo.alpha * lo.alpha);
  TAP_CHECK(fabs(b2 - beta_ref) < 1e-15 && fabs(a * a + b2 - 1.0) < 1e-14,
            "VP kernel: b² = 1 - alpha_bar ratio = %.6g, a² + b² = 1", b2);
}

/* ---- 2. convergence order ------------------------------------------------------------ */

/* Error of solver s with `nfe` evaluations against ref, from x_T (no final denoising). */
static double solve_error(const sde_model *m, const sde_sde *sde, sde_sampler s,
                          sde_schedule sched, int nfe, const float *x_T, const float *ref,
                          float *out) {
  sde_sample_params p = fewstep_params(s, nfe, 0);
  p.denoise = 0;
  p.lower_order_final = 0; /* a convergence study: the full order to the end */
  p.schedule = sched;
  const int D = (int)sde_model_dim(m);
  if (sde_sample_from(m, sde, &p, N_CONV, 0, x_T, out, NULL)) return NAN;
  return median_rms(out, ref, N_CONV, D);
}

static void test_convergence(int table_only) {
  static const int nfes[5] = {5, 10, 20, 40, 80};
  /* slope range per order over NFE 5..80 (logsnr and karras grids; the uniform time grid
   * takes a large last step in log-SNR under VP and sub-VP and is only reported) */
  static const double lo[4] = {0, 0.85, 1.8, 2.5}, hi[4] = {0, 1.3, 2.8, 3.8};
  for (int mix = 0; mix < 2; mix++) {
    sde_model *m = mix ? mixture_64d() : mixture_2d();
    const int D = (int)sde_model_dim(m);
    float *x_T = malloc(sizeof(float) * N_CONV * D), *ref = malloc(sizeof(float) * N_CONV * D),
          *out = malloc(sizeof(float) * N_CONV * D);
    for (int k = 0; k < 3; k++) {
      sde_sde sde;
      sde_init(&sde, kinds[k]);
      sde_prior_sample(&sde, 3, 0, 0, N_CONV, D, x_T);
      sde_sample_params p;
      sde_sample_params_init(&p);
      p.rtol = p.atol = 1e-10;
      memcpy(ref, x_T, sizeof(float) * N_CONV * D);
      sde_stats st;
      int rc = sde_ode_solve(m, &sde, &p, N_CONV, ref, SDE_T, sde_sampling_eps(&sde), &st);
      if (!table_only)
        TAP_CHECK(rc == SDE_OK, "%s %s: RK45 reference at 1e-10 (NFE %lld)", mix ? "64d" : "2d",
                  sde_kind_name(kinds[k]), (long long)st.nfe);
      for (int sc = 0; sc < SDE_SCHEDULE_COUNT; sc++) {
        if (kinds[k] == SDE_VE && sc == SDE_SCHEDULE_TIME) continue; /* = logsnr under VE */
        if (!table_only && sc == SDE_SCHEDULE_TIME) continue;
        for (int si = 0; si < 5; si++) {
          const sde_sampler s = fewstep[si];
          if (s == SDE_SAMPLER_DPMPP_2M_SDE || (!table_only && s == SDE_SAMPLER_HEUN)) continue;
          double x[5], err[5];
          for (int j = 0; j < 5; j++) {
            x[j] = s == SDE_SAMPLER_HEUN ? nfes[j] + (nfes[j] % 2 == 0) : nfes[j];
            err[j] = solve_error(m, &sde, s, (sde_schedule)sc, nfes[j], x_T, ref, out);
            if (table_only)
              printf("%s,%s,%s,%s,%d,%.6e\n", mix ? "64d" : "2d", sde_kind_name(kinds[k]),
                     sde_sampler_name(s), sde_schedule_name((sde_schedule)sc), (int)x[j], err[j]);
          }
          if (table_only) continue;
          const int order = s == SDE_SAMPLER_DDIM ? 1 : s == SDE_SAMPLER_DPMPP_2M ? 2 : 3;
          const double slope = loglog_slope(x, err, 5);
          TAP_DIAG("%s %s %s %s: errors %.2e %.2e %.2e %.2e %.2e, slope %.2f",
                   mix ? "64d" : "2d", sde_kind_name(kinds[k]), sde_sampler_name(s),
                   sde_schedule_name((sde_schedule)sc), err[0], err[1], err[2], err[3], err[4],
                   slope);
          TAP_CHECK(slope >= lo[order] && slope <= hi[order],
                      "%s %s %s (%s): slope %.2f over NFE 5..80 in [%.2f, %.1f]",
                      mix ? "64d" : "2d", sde_kind_name(kinds[k]), sde_sampler_name(s),
                      sde_schedule_name((sde_schedule)sc), slope, lo[order], hi[order]);
        }
      }
    }
    free(x_T);
    free(ref);
    free(out);
    sde_model_free(m);
  }
}

/* ---- 3. distributions ---------------------------------------------------------------- */

typedef struct {
  double max_weight_err, max_mean_rms, sw;
} sample_report;

/* The acceptance of test_sampling.c: weights by posterior component, component means in
 * units of their std, sliced W1 against exact samples (with_sw). */
static sample_report judge(const sde_model *m, const sde_sde *sde, int n, const float *x,
                           const float *exact, int with_sw) {
  const int D = (int)sde_model_dim(m), K = sde_gmm_num_components(m);
  const double *w = sde_gmm_weights(m), *mu = sde_gmm_means(m), *var = sde_gmm_vars(m);
  int *comp = malloc(sizeof(int) * n), *count = calloc(K, sizeof(int));
  double *sum = calloc((size_t)K * D, sizeof(double));
  sde_gmm_classify(m, sde, n, x, 0.0, comp);
  for (int i = 0; i < n; i++) {
    count[comp[i]]++;
    for (int d = 0; d < D; d++) sum[(size_t)comp[i] * D + d] += x[(size_t)i * D + d];
  }
  sample_report r = {0};
  for (int k = 0; k < K; k++) {
    double rms = 0.0;
    for (int d = 0; d < D && count[k] > 0; d++) {
      double e = (sum[(size_t)k * D + d] / count[k] - mu[(size_t)k * D + d]) /
                 sqrt(var[(size_t)k * D + d]);
      rms += e * e;
    }
    r.max_weight_err = fmax(r.max_weight_err, fabs((double)count[k] / n - w[k]));
    r.max_mean_rms = fmax(r.max_mean_rms, count[k] > 0 ? sqrt(rms / D) : INFINITY);
  }
  r.sw = with_sw ? sliced_w1(n, D, x, exact, SW_DIRS, 77) : NAN;
  free(comp);
  free(count);
  free(sum);
  return r;
}

/* The sliced-W1 limit of test_sampling.c: mean + 4 sd of the distance between the
 * reference set and NULL_REPS further exact sets. */
static double sw_limit(const sde_model *m, const sde_sde *sde, int n, const float *exact,
                       float *scratch) {
  const int D = (int)sde_model_dim(m);
  double sum = 0.0, sq = 0.0;
  for (int r = 0; r < NULL_REPS; r++) {
    sde_gmm_sample(m, sde, 0.0, n, 2000 + r, 0, scratch, NULL);
    const double w = sliced_w1(n, D, scratch, exact, SW_DIRS, 77);
    sum += w;
    sq += w * w;
  }
  const double mean = sum / NULL_REPS;
  const double sd = sqrt(fmax(sq / NULL_REPS - mean * mean, 0.0) * NULL_REPS / (NULL_REPS - 1));
  return mean + 4.0 * sd;
}

/* Evaluations at which each solver passes the full acceptance on every SDE, per mixture
 * (2-D, 64-D); measured, docs/sampling.md. */
static const int budget[5][2] = {{320, 80}, {40, 40}, {40, 40}, {80, 40}, {80, 80}};
/* At 20 evaluations every solver keeps the mode weights within 0.02, and these pass the
 * sliced-W1 limit of the 1000-step PC on every SDE (2-D, 64-D): the second- and
 * third-order multistep solvers on both mixtures, the stochastic one on the 64-D one.
 * ddim (first order) and heun (10 steps) do not, docs/sampling.md#distributions. */
static const int sw_at_20[5][2] = {{0, 0}, {1, 1}, {1, 1}, {0, 1}, {0, 0}};

static void test_distributions(int all_at_20) {
  for (int mix = 0; mix < 2; mix++) {
    sde_model *m = mix ? mixture_64d() : mixture_2d();
    const int n = N_DIST, D = (int)sde_model_dim(m);
    const char *mname = mix ? "64d" : "2d";
    float *x = malloc(sizeof(float) * n * D), *exact = malloc(sizeof(float) * n * D);
    for (int k = 0; k < 3; k++) {
      sde_sde sde;
      sde_init(&sde, kinds[k]);
      sde.sigma_max = 100.0; /* as test_sampling.c: the prior is then close to p_T */
      const char *kname = sde_kind_name(kinds[k]);
      const double t_sec = sde_now();
      sde_gmm_sample(m, &sde, 0.0, n, 1001, 0, exact, NULL);
      const double limit = sw_limit(m, &sde, n, exact, x);
      TAP_DIAG("%s %s: sliced W1 limit %.4f", mname, kname, limit);
      for (int si = 0; si < 5; si++) {
        const char *name = sde_sampler_name(fewstep[si]);
        for (int pass = 0; pass < 3; pass++) { /* 20 NFE (logsnr), the budget on each grid */
          const int nfe = pass ? budget[si][mix] : 20;
          sde_sample_params p = fewstep_params(fewstep[si], nfe, 42 + si);
          if (pass) p.schedule = grids[pass - 1];
          sde_stats st;
          if (!TAP_CHECK(sde_sample(m, &sde, &p, n, 0, x, &st) == SDE_OK, "%s %s %s runs (%s)",
                         mname, kname, name, sde_errmsg()))
            continue;
          sample_report r = judge(m, &sde, n, x, exact, 1);
          if (!pass) {
            const int sw_checked = sw_at_20[si][mix] || all_at_20;
            TAP_CHECK(r.max_weight_err <= 0.02 && (!sw_checked || r.sw <= limit),
                      "%s %s %s, NFE %lld: mode weights within 0.02 (%.4f)%s sliced W1 %.4f, "
                      "limit %.4f (means %.4f std)",
                      mname, kname, name, (long long)st.nfe, r.max_weight_err,
                      sw_checked ? ", within the limit:" : ";", r.sw, limit, r.max_mean_rms);
            continue;
          }
          TAP_CHECK(r.max_weight_err <= 0.02 && r.max_mean_rms <= 0.05 && r.sw <= limit,
                    "%s %s %s, NFE %lld (%s): weights %.4f <= 0.02, means %.4f <= 0.05 std, "
                    "sliced W1 %.4f <= %.4f",
                    mname, kname, name, (long long)st.nfe, sde_schedule_name(p.schedule),
                    r.max_weight_err, r.max_mean_rms, r.sw, limit);
        }
      }
      TAP_DIAG("%s %s: %.1f s", mname, kname, sde_now() - t_sec);
      /* the same threshold rejects a coarse solver */
      sde_sample_params p = fewstep_params(SDE_SAMPLER_DDIM, 3, 9);
      if (sde_sample(m, &sde, &p, n, 0, x, NULL) == SDE_OK) {
        sample_report r = judge(m, &sde, n, x, exact, 1);
        TAP_CHECK(r.sw > limit, "%s %s negative control: ddim with 3 NFE is rejected (%.4f > %.4f)",
                  mname, kname, r.sw, limit);
      }
    }
    free(x);
    free(exact);
    sde_model_free(m);
  }
}

/* ---- 4. finite at every step count --------------------------------------------------- */

typedef struct {
  const char *name;
  sde_sampler sampler;
  sde_predictor predictor;
  sde_corrector corrector;
  sde_ode_method ode;
  double churn;
} any_sampler;

static const any_sampler every_sampler[] = {
    {"pc rd+langevin", SDE_SAMPLER_PC, SDE_PRED_REVERSE_DIFFUSION, SDE_CORR_LANGEVIN, 0, 0},
    {"pc rd+ald", SDE_SAMPLER_PC, SDE_PRED_REVERSE_DIFFUSION, SDE_CORR_ALD, 0, 0},
    {"pc em", SDE_SAMPLER_PC, SDE_PRED_EULER_MARUYAMA, SDE_CORR_NONE, 0, 0},
    {"pc ancestral+langevin", SDE_SAMPLER_PC, SDE_PRED_ANCESTRAL, SDE_CORR_LANGEVIN, 0, 0},
    {"pc ald only", SDE_SAMPLER_PC, SDE_PRED_NONE, SDE_CORR_ALD, 0, 0},
    {"ode euler", SDE_SAMPLER_ODE, 0, 0, SDE_ODE_EULER, 0},
    {"ode heun", SDE_SAMPLER_ODE, 0, 0, SDE_ODE_HEUN, 0},
    {"ddim", SDE_SAMPLER_DDIM, 0, 0, 0, 0},
    {"dpmpp-2m", SDE_SAMPLER_DPMPP_2M, 0, 0, 0, 0},
    {"dpmpp-3m", SDE_SAMPLER_DPMPP_3M, 0, 0, 0, 0},
    {"dpmpp-2m-sde", SDE_SAMPLER_DPMPP_2M_SDE, 0, 0, 0, 0},
    {"heun", SDE_SAMPLER_HEUN, 0, 0, 0, 0},
    {"heun churn 40", SDE_SAMPLER_HEUN, 0, 0, 0, 40.0},
};

static void test_finite(void) {
  sde_model *m = mixture_2d();
  enum { n = 16, D = 2 };
  float x[n * D];
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    for (size_t c = 0; c < sizeof every_sampler / sizeof every_sampler[0]; c++) {
      const any_sampler *a = &every_sampler[c];
      if (a->predictor == SDE_PRED_ANCESTRAL && kinds[k] == SDE_SUBVP) continue; /* refused */
      int bad_steps = 0, rc = SDE_OK;
      for (int steps = 1; steps <= 20 && !bad_steps; steps++) {
        sde_sample_params p = fewstep_params(a->sampler, steps, 5);
        p.predictor = a->predictor;
        p.corrector = a->corrector;
        p.ode_method = a->ode;
        p.churn = a->churn;
        rc = sde_sample(m, &sde, &p, n, 0, x, NULL);
        if (rc || !all_finite(x, n * D)) bad_steps = steps;
      }
      TAP_CHECK(!bad_steps, "%s %s: finite samples for every steps in 1..20%s%s",
                sde_kind_name(kinds[k]), a->name, bad_steps ? ", not at " : "",
                bad_steps ? (rc ? sde_errmsg() : "a step count") : "");
    }
  }
  sde_model_free(m);
}

/* ---- 5. conditioning ------------------------------------------------------------------- */

/* Standardised residuals (x - mu_k)/std_k over the coordinates j with use[j] (NULL: all)
 * of samples x[n, D] of components comp[n]: their mean and standard deviation. */
static void residual_moments(const sde_model *m, int n, const float *x, const int *comp,
                             const float *use, double *mean, double *sd) {
  const int D = (int)sde_model_dim(m);
  const double *mu = sde_gmm_means(m), *var = sde_gmm_vars(m);
  double s1 = 0, s2 = 0, cnt = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < D; j++) {
      if (use && !use[j]) continue;
      const double z = (x[(size_t)i * D + j] - mu[(size_t)comp[i] * D + j]) /
                       sqrt(var[(size_t)comp[i] * D + j]);
      s1 += z;
      s2 += z * z;
      cnt++;
    }
  *mean = s1 / cnt;
  *sd = sqrt(s2 / cnt - *mean * *mean);
}

static int count_equal(const int *a, const int *b, int n) {
  int same = 0;
  for (int i = 0; i < n; i++) same += a[i] == b[i];
  return same;
}

/* Inpainting on the 64-D mixture with the first 48 coordinates known, taken from exact
 * samples: they identify the component (many stds apart), so the exact conditional of the
 * other 16 is that component's Gaussian. Each solver runs at its budget of the
 * distribution test (below which its own discretisation error shows). Replacement with a deterministic solver
 * over-disperses it (its early steps pull the unknown part towards the other components
 * and the ODE never forgets; docs/sampling.md), the stochastic dpmpp-2m-sde much less: the
 * spread is held to 5 % of the exact one for dpmpp-2m-sde and to 30 % for the others. */
static void test_inpaint(void) {
  sde_model *m = mixture_64d();
  enum { n = 4000, D = 64, KNOWN = 48 };
  float *data = malloc(sizeof(float) * n * D), *mask = malloc(sizeof(float) * n * D),
        *out = malloc(sizeof(float) * n * D), unknown[D];
  int *truth = malloc(sizeof(int) * n), *got = malloc(sizeof(int) * n);
  for (int j = 0; j < D; j++) unknown[j] = j >= KNOWN;
  for (int i = 0; i < n * D; i++) mask[i] = (i % D) < KNOWN;
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    sde_gmm_sample(m, &sde, 0.0, n, 31, 0, data, truth);
    for (int si = 0; si < 5; si++) {
      sde_sample_params p = fewstep_params(fewstep[si], budget[si][1], 8);
      sde_stats st;
      int rc = sde_inpaint(m, &sde, &p, n, 0, data, mask, out, &st);
      double known_err = 0, mean, sd;
      for (int i = 0; i < n * D; i++)
        if (mask[i] == 1.0f) known_err = fmax(known_err, fabs(out[i] - data[i]));
      sde_gmm_classify(m, &sde, n, out, 0.0, got);
      residual_moments(m, n, out, truth, unknown, &mean, &sd);
      const double right = (double)count_equal(got, truth, n) / n;
      const double sd_tol = fewstep[si] == SDE_SAMPLER_DPMPP_2M_SDE ? 0.05 : 0.3;
      TAP_CHECK(rc == SDE_OK && known_err == 0.0 && right >= 0.995 && fabs(mean) <= 0.03 &&
                    fabs(sd - 1.0) <= sd_tol,
                "%s inpaint %s, NFE %lld: known part exact (max err %.2g), component right for "
                "%.2f %%, unknown part's residuals mean %.4f, sd %.4f (exact: 0, 1 +- %.2f)",
                sde_kind_name(kinds[k]), sde_sampler_name(fewstep[si]), (long long)st.nfe,
                known_err, 100 * right, mean, sd, sd_tol);
    }
  }
  free(data);
  free(mask);
  free(out);
  free(truth);
  free(got);
  sde_model_free(m);
}

/* Inpainting of images of the empirical-data model (the exact score of 64 smooth random
 * images, as test_control.c): with half the pixels known the posterior is one image. The
 * replacement method at 20 evaluations lands on it (> 40 dB) from most prior draws, not
 * all: the unknown half's early state votes on the image, and a deterministic solver
 * keeps that vote. Measured over the 24 draws (seeds 0-23), on both the logsnr and the
 * karras grid: VE 18-20, VP 12-13 (dpmpp-2m-sde 21), sub-VP 23-24 (dpmpp-2m-sde on karras
 * 19); a broken solver recovers none. Colorizing them is not asked of 20 evaluations: from
 * the luminance alone the replacement method needs hundreds of PC steps to settle on the
 * right image of the 64 (docs/sampling.md), so only the kept luminance is checked. */
enum { EM = 64, EC = 3, EH = 32, EW = 32, ED = EC * EH * EW, IMG_DRAWS = 24, IMG_MIN_HITS = 10 };

static void make_images(float *img) {
  for (int k = 0; k < EM; k++) {
    float r[27];
    sde_randu(2024, (uint64_t)k, 0, r, 27);
    for (int c = 0; c < EC; c++)
      for (int y = 0; y < EH; y++)
        for (int x = 0; x < EW; x++) {
          double v = 0.2 + 0.6 * r[24 + c];
          for (int b = 0; b < 3; b++) {
            const float *q = r + 8 * b;
            double phase = 6.2832 * (q[0] * x / EW * 3 + q[1] * y / EH * 3 + q[2]);
            v += 0.25 * (q[3 + c] - 0.5) * 2 * sin(phase);
          }
          img[(size_t)k * ED + (size_t)c * EH * EW + y * EW + x] = (float)fmin(1.0, fmax(0.0, v));
        }
  }
}

static double psnr(const float *a, const float *b, int n) {
  return 10 * log10(1.0 / fmax(rms_diff(a, b, n) * rms_diff(a, b, n), 1e-20));
}

static void test_images(void) {
  float *img = malloc(sizeof(float) * EM * ED), *out = malloc(sizeof(float) * ED),
        *mask = malloc(sizeof(float) * ED), *gray = malloc(sizeof(float) * ED);
  make_images(img);
  sde_model *m = NULL;
  sde_empirical_create(EM, EC, EH, EW, img, 0, &m);
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    const float *truth = img + (size_t)(5 + k) * ED;
    float r[EH * EW];
    sde_randu(77, (uint64_t)k, 0, r, EH * EW);
    for (int c = 0; c < EC; c++)
      for (int i = 0; i < EH * EW; i++) mask[c * EH * EW + i] = r[i] < 0.5f ? 1.0f : 0.0f;
    for (int i = 0; i < EH * EW; i++) {
      const float l = (truth[i] + truth[EH * EW + i] + truth[2 * EH * EW + i]) / 3.0f;
      gray[i] = gray[EH * EW + i] = gray[2 * EH * EW + i] = l;
    }
    for (int si = 0; si < 5; si++)
      for (int gi = 0; gi < 2; gi++) {
        sde_stats st = {0};
        int rc = SDE_OK, hits = 0;
        double known = 0;
        for (int d = 0; d < IMG_DRAWS && rc == SDE_OK; d++) {
          sde_sample_params p = fewstep_params(fewstep[si], 20, (uint64_t)d);
          p.schedule = grids[gi];
          rc = sde_inpaint(m, &sde, &p, 1, 0, truth, mask, out, &st);
          for (int i = 0; i < ED; i++)
            if (mask[i] == 1.0f) known = fmax(known, fabs(out[i] - truth[i]));
          hits += psnr(out, truth, ED) > 40.0;
        }
        sde_sample_params p = fewstep_params(fewstep[si], 20, 5);
        p.schedule = grids[gi];
        rc = rc ? rc : sde_colorize(m, &sde, &p, 1, 0, gray, out, NULL);
        double lum = 0;
        for (int i = 0; i < EH * EW; i++)
          lum = fmax(lum,
                     fabs((out[i] + out[EH * EW + i] + out[2 * EH * EW + i]) / 3.0f - gray[i]));
        TAP_CHECK(rc == SDE_OK && hits >= IMG_MIN_HITS && known == 0.0 && lum < 1e-5,
                  "%s image %s (%s), NFE %lld: inpainting recovers the image (> 40 dB) from %d of "
                  "%d prior draws (>= %d) with the known pixels exact (%.2g); colorization keeps "
                  "the luminance (%.2g)",
                  sde_kind_name(kinds[k]), sde_sampler_name(fewstep[si]),
                  sde_schedule_name(grids[gi]), (long long)st.nfe, hits, IMG_DRAWS,
                  IMG_MIN_HITS, known, lum);
      }
  }
  free(img);
  free(out);
  free(mask);
  free(gray);
  sde_model_free(m);
}

/* A 3-channel 2x2 mixture whose components have the same std on the three channels of a
 * pixel: the orthogonal colour transform keeps it a diagonal mixture, so the chroma given
 * the luminance is exact. Component luminances are many stds apart. */
static sde_model *colour_mixture(void) {
  enum { K = 3, D = 12, HW = 4 };
  double w[K] = {0.5, 0.3, 0.2}, mu[K * D], sd[K * D];
  float u[K * D];
  sde_randu(99, 0, 0, u, K * D);
  for (int k = 0; k < K; k++)
    for (int c = 0; c < 3; c++)
      for (int p = 0; p < HW; p++) {
        mu[k * D + c * HW + p] = 1.5 * (k - 1) + (u[k * D + c * HW + p] - 0.5);
        sd[k * D + c * HW + p] = 0.15 + 0.05 * ((k + p) % 3);
      }
  sde_model *m = NULL;
  if (sde_gmm_create(K, D, w, mu, sd, &m)) return NULL;
  m->channels = 3;
  m->height = m->width = 2;
  return m;
}

static void test_colorize(void) {
  sde_model *m = colour_mixture();
  enum { n = 4000, D = 12, HW = 4 };
  float *data = malloc(sizeof(float) * n * D), *gray = malloc(sizeof(float) * n * D),
        *out = malloc(sizeof(float) * n * D), *dec = malloc(sizeof(float) * n * D);
  int *truth = malloc(sizeof(int) * n), *got = malloc(sizeof(int) * n);
  /* the component means and stds in decoupled colours: the residual reference */
  const int K = 3;
  double dmu[3 * D], dsd[3 * D];
  float mrow[D], drow[D];
  for (int k = 0; k < K; k++) {
    for (int j = 0; j < D; j++) mrow[j] = (float)sde_gmm_means(m)[k * D + j];
    sde_color_transform(1, HW, mrow, drow, 0);
    for (int j = 0; j < D; j++) {
      dmu[k * D + j] = drow[j];
      dsd[k * D + j] = sqrt(sde_gmm_vars(m)[k * D + j]); /* equal over a pixel's channels */
    }
  }
  sde_model *dm = NULL;
  sde_gmm_create(K, D, sde_gmm_weights(m), dmu, dsd, &dm);
  float chroma[D];
  for (int j = 0; j < D; j++) chroma[j] = j >= HW;
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    sde_gmm_sample(m, &sde, 0.0, n, 41, 0, data, truth);
    for (int i = 0; i < n; i++)
      for (int p = 0; p < HW; p++) {
        const float *x = data + (size_t)i * D;
        const float g = (x[p] + x[HW + p] + x[2 * HW + p]) / 3.0f;
        for (int c = 0; c < 3; c++) gray[(size_t)i * D + c * HW + p] = g;
      }
    for (int si = 0; si < 5; si++) {
      sde_sample_params p = fewstep_params(fewstep[si], budget[si][0], 4);
      sde_stats st;
      int rc = sde_colorize(m, &sde, &p, n, 0, gray, out, &st);
      double lum_err = 0, mean, sd;
      for (int i = 0; i < n; i++)
        for (int q = 0; q < HW; q++) {
          const float *y = out + (size_t)i * D;
          lum_err = fmax(lum_err, fabs((y[q] + y[HW + q] + y[2 * HW + q]) / 3.0f -
                                       gray[(size_t)i * D + q]));
        }
      sde_gmm_classify(m, &sde, n, out, 0.0, got);
      sde_color_transform(n, HW, out, dec, 0);
      residual_moments(dm, n, dec, truth, chroma, &mean, &sd);
      const double right = (double)count_equal(got, truth, n) / n;
      TAP_CHECK(rc == SDE_OK && lum_err < 1e-5 && right >= 0.995 && fabs(mean) <= 0.03 &&
                    fabs(sd - 1.0) <= 0.05,
                "%s colorize %s, NFE %lld: luminance kept (max err %.2g), component right for "
                "%.2f %%, chroma residuals mean %.4f, sd %.4f (exact conditional: 0, 1)",
                sde_kind_name(kinds[k]), sde_sampler_name(fewstep[si]), (long long)st.nfe,
                lum_err, 100 * right, mean, sd);
    }
  }
  free(data);
  free(gray);
  free(out);
  free(dec);
  free(truth);
  free(got);
  sde_model_free(dm);
  sde_model_free(m);
}

/* Classifier guidance as the engine does it (network.h: score + scale ∇x log p_t(y | x)),
 * with the exact classifier of the mixture: ∇x log p_t(y = k | x) = s_k - s. At scale 1
 * the guided score is component k's own, so guided samples from exact draws of its p_T
 * are exact samples of it: each solver at its budget of the distribution test must pass
 * the same acceptance against them. */
typedef struct {
  sde_model *mix, *comp;
  double scale;
} guided_gmm;

static int guided_gmm_score(const sde_model *m, const sde_sde *sde, int n, const float *x,
                            const float *t, float *out) {
  const guided_gmm *g = m->impl;
  const int64_t nd = (int64_t)n * sde_model_dim(m);
  float *sk = malloc(sizeof(float) * nd);
  int rc = sde_model_score(g->mix, sde, n, x, t, out);
  if (!rc) rc = sde_model_score(g->comp, sde, n, x, t, sk);
  for (int64_t j = 0; !rc && j < nd; j++) out[j] += (float)(g->scale * (sk[j] - out[j]));
  free(sk);
  return rc;
}

static const sde_model_ops guided_gmm_ops = {.kind = "guided-gmm", .score = guided_gmm_score};

static void test_guidance(void) {
  sde_model *mix = mixture_2d();
  const int target = 2, n = N_DIST, D = 2;
  const double w1 = 1.0;
  sde_model *comp = NULL;
  sde_gmm_create(1, D, &w1, sde_gmm_means(mix) + target * D,
                 (double[]){sqrt(sde_gmm_vars(mix)[target * D]), sqrt(sde_gmm_vars(mix)[target * D + 1])},
                 &comp);
  guided_gmm g = {mix, comp, 1.0};
  sde_model guided = *mix;
  guided.ops = &guided_gmm_ops;
  guided.impl = &g;
  float *x = malloc(sizeof(float) * n * D), *exact = malloc(sizeof(float) * n * D);
  int *got = malloc(sizeof(int) * n), *want = malloc(sizeof(int) * n);
  for (int i = 0; i < n; i++) want[i] = target;
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    sde.sigma_max = 100.0;
    sde_gmm_sample(comp, &sde, 0.0, n, 1001, 0, exact, NULL);
    const double limit = sw_limit(comp, &sde, n, exact, x);
    for (int si = 0; si < 5; si++) {
      sde_sample_params p = fewstep_params(fewstep[si], budget[si][0], 12);
      sde_stats st;
      /* from exact draws of the class's p_T: the prior's mismatch is not the solver's */
      sde_gmm_sample(comp, &sde, SDE_T, n, 77, 0, x, NULL);
      int rc = sde_sample_from(&guided, &sde, &p, n, 0, x, x, &st);
      sde_gmm_classify(mix, &sde, n, x, 0.0, got);
      const double right = (double)count_equal(got, want, n) / n;
      const double sw = sliced_w1(n, D, x, exact, SW_DIRS, 77);
      TAP_CHECK(rc == SDE_OK && right == 1.0 && sw <= limit,
                "%s guided %s, NFE %lld: every sample is of class %d (%.2f %%), sliced W1 to "
                "exact class samples %.4f <= %.4f",
                sde_kind_name(kinds[k]), sde_sampler_name(fewstep[si]), (long long)st.nfe, target,
                100 * right, sw, limit);
    }
  }
  free(x);
  free(exact);
  free(got);
  free(want);
  sde_model_free(comp);
  sde_model_free(mix);
}

/* ---- 6. encode/decode, NFE, determinism, errors ---------------------------------------- */

/* decode(encode(x)) against x for exact samples of the 64-D mixture: the median over
 * samples of the RMS error, and the fraction of samples that come back in another
 * component (a coarse grid can carry a sample across a boundary between modes). */
static void test_roundtrip(int table_only) {
  sde_model *m = mixture_64d();
  enum { n = 256, D = 64 };
  float *data = malloc(sizeof(float) * n * D), *z = malloc(sizeof(float) * n * D),
        *back = malloc(sizeof(float) * n * D);
  int *c0 = malloc(sizeof(int) * n), *c1 = malloc(sizeof(int) * n);
  static const int nfes[4] = {10, 20, 40, 80};
  const sde_sampler solvers[5] = {SDE_SAMPLER_ODE, SDE_SAMPLER_DDIM, SDE_SAMPLER_DPMPP_2M,
                                  SDE_SAMPLER_DPMPP_3M, SDE_SAMPLER_HEUN};
  for (int k = 0; k < 3; k++) {
    sde_sde sde;
    sde_init(&sde, kinds[k]);
    sde_gmm_sample(m, &sde, 0.0, n, 51, 0, data, c0);
    for (int si = 0; si < 5; si++) {
      const int rk45 = solvers[si] == SDE_SAMPLER_ODE;
      double err[4], flips[4];
      int rc = SDE_OK;
      long long nfe = 0;
      for (int j = 0; j < (rk45 ? 1 : 4) && !rc; j++) {
        sde_sample_params p = fewstep_params(solvers[si], nfes[j], 0);
        sde_stats st;
        rc = sde_encode(m, &sde, &p, n, data, z, &st);
        nfe = st.nfe;
        if (!rc) rc = sde_decode(m, &sde, &p, n, z, back, &st);
        nfe += st.nfe;
        err[j] = median_rms(back, data, n, D);
        sde_gmm_classify(m, &sde, n, back, 0.0, c1);
        flips[j] = 1.0 - (double)count_equal(c0, c1, n) / n;
        if (table_only)
          printf("%s,%s,%lld,%.6e,%.4f\n", sde_kind_name(kinds[k]),
                 rk45 ? "rk45" : sde_sampler_name(solvers[si]), nfe, err[j], flips[j]);
      }
      if (table_only) continue;
      if (rk45) {
        TAP_CHECK(rc == SDE_OK && err[0] < 1e-3 && flips[0] == 0.0,
                  "%s rk45 (1e-5): decode(encode(x)) median error %.2e, %lld evaluations",
                  sde_kind_name(kinds[k]), err[0], nfe);
        continue;
      }
      const int multistep = solvers[si] == SDE_SAMPLER_DPMPP_2M || solvers[si] == SDE_SAMPLER_DPMPP_3M;
      TAP_CHECK(rc == SDE_OK && err[0] > err[1] && err[1] > err[2] && err[2] > err[3] &&
                    (!multistep || flips[3] <= 0.01),
                "%s %s: decode(encode(x)) median error falls with NFE: %.2e %.2e %.2e %.2e at "
                "10, 20, 40, 80 each way; %.1f %% change component at 80",
                sde_kind_name(kinds[k]), sde_sampler_name(solvers[si]), err[0], err[1], err[2],
                err[3], 100 * flips[3]);
    }
  }
  free(data);
  free(z);
  free(back);
  free(c0);
  free(c1);
  sde_model_free(m);
}

static void test_accounting_and_errors(void) {
  sde_model *m = mixture_64d();
  enum { n = 8, D = 64 };
  float a[n * D], b[D], x[n * D];
  sde_sde sde;
  sde_init(&sde, SDE_VP);
  /* NFE: steps evaluations; heun N or N + 1; steps 0: the default, 15 */
  static const struct { sde_sampler s; int steps, denoise; long long nfe; } cases[] = {
      {SDE_SAMPLER_DDIM, 7, 1, 7},      {SDE_SAMPLER_DPMPP_3M, 7, 0, 7},
      {SDE_SAMPLER_DPMPP_2M_SDE, 1, 1, 1}, {SDE_SAMPLER_HEUN, 7, 1, 7},
      {SDE_SAMPLER_HEUN, 8, 1, 9},      {SDE_SAMPLER_HEUN, 7, 0, 8},
      {SDE_SAMPLER_HEUN, 8, 0, 8},      {SDE_SAMPLER_DPMPP_2M, 0, 1, 15},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    sde_sample_params p = fewstep_params(cases[c].s, cases[c].steps, 1);
    p.denoise = cases[c].denoise;
    sde_stats st;
    int rc = sde_sample(m, &sde, &p, n, 0, a, &st);
    TAP_CHECK(rc == SDE_OK && st.nfe == cases[c].nfe && st.evals == cases[c].nfe,
              "%s, steps %d%s: NFE %lld (want %lld)", sde_sampler_name(cases[c].s),
              cases[c].steps, cases[c].denoise ? "" : ", no denoise", (long long)st.nfe,
              cases[c].nfe);
  }
  /* a sample depends on its own stream only, whatever the threads and batch */
  const sde_sampler noisy[2] = {SDE_SAMPLER_DPMPP_2M_SDE, SDE_SAMPLER_HEUN};
  for (int si = 0; si < 2; si++) {
    sde_sample_params p = fewstep_params(noisy[si], 12, 3);
    p.churn = 10.0;
    omp_set_num_threads(1);
    sde_sample(m, &sde, &p, n, 100, a, NULL);
    omp_set_num_threads(2);
    sde_sample(m, &sde, &p, n, 100, x, NULL);
    sde_sample(m, &sde, &p, 1, 105, b, NULL);
    TAP_CHECK(!memcmp(a, x, sizeof a) && !memcmp(a + 5 * D, b, sizeof b),
              "%s: identical at 1 and 2 threads; sample 105 alone equals it in a batch",
              sde_sampler_name(noisy[si]));
  }
  /* errors */
  sde_sample_params p = fewstep_params(SDE_SAMPLER_DPMPP_2M_SDE, 10, 1);
  TAP_CHECK(sde_encode(m, &sde, &p, n, a, x, NULL) == SDE_EINVAL, "encode refuses dpmpp-2m-sde: %s",
            sde_errmsg());
  p = fewstep_params(SDE_SAMPLER_HEUN, 10, 1);
  p.churn = 1.0;
  TAP_CHECK(sde_decode(m, &sde, &p, n, a, x, NULL) == SDE_EINVAL,
            "decode refuses heun with churn: %s", sde_errmsg());
  p.churn = -1.0;
  TAP_CHECK(sde_sample(m, &sde, &p, n, 0, x, NULL) == SDE_EINVAL, "negative churn refused: %s",
            sde_errmsg());
  p = fewstep_params(SDE_SAMPLER_DDIM, 10, 1);
  p.schedule = (sde_schedule)7;
  TAP_CHECK(sde_sample(m, &sde, &p, n, 0, x, NULL) == SDE_EINVAL, "unknown schedule refused: %s",
            sde_errmsg());
  p = fewstep_params(SDE_SAMPLER_ODE, 10, 1);
  float mask[n * D];
  memset(mask, 0, sizeof mask);
  TAP_CHECK(sde_inpaint(m, &sde, &p, n, 0, a, mask, x, NULL) == SDE_EUNSUPPORTED,
            "inpainting with the ode sampler is refused: %s", sde_errmsg());
  sde_sampler s;
  sde_schedule sc;
  TAP_CHECK(sde_sampler_from_name("dpmpp-2m-sde", &s) == SDE_OK && s == SDE_SAMPLER_DPMPP_2M_SDE &&
                sde_schedule_from_name("karras", &sc) == SDE_OK && sc == SDE_SCHEDULE_KARRAS &&
                sde_sampler_from_name("dpmpp_2m", &s) == SDE_EINVAL,
            "sampler and schedule names");
  sde_model_free(m);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "conv")) {
    test_convergence(1);
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "roundtrip")) {
    test_roundtrip(1);
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "dist20")) { /* the sliced W1 limit at 20 NFE for all */
    test_distributions(1);
    return tap_done();
  }
  double t0 = sde_now();
  test_marginal();
  test_convergence(0);
  test_distributions(0);
  test_finite();
  test_inpaint();
  test_images();
  test_colorize();
  test_guidance();
  test_roundtrip(0);
  test_accounting_and_errors();
  TAP_DIAG("all: %.1f s", sde_now() - t0);
  return tap_done();
}
