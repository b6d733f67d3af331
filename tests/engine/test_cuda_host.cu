/* The CUDA backend's per-element math (engine/src/backend/cuda/cuda_math.cuh), run on the
 * CPU: compiled by nvcc as host code, needs no GPU. Every element function is applied over
 * all indices of small random shapes, arranged as the kernels arrange them (the same
 * chunked, shifted GroupNorm sums, the same pad-then-convolve for asymmetric padding), and
 * compared with the reference ops of nn.h (max relative error <= 1e-5) and, for the noise,
 * bit for bit with rng.h and the CPU backend's axpby_rows. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda_math.cuh"
#include "scoresde/nn.h"
#include "scoresde/rng.h"
#include "tap.h"

#define TOL 1e-5

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* splitmix64 -> [0,1) */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}
static int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); }
static float *rand_f(size_t n, float scale) {
  float *p = (float *)malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = (float)((2.0 * urand() - 1.0) * scale);
  return p;
}
static float *zeros(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }
static float *copy_f(const float *x, size_t n) {
  float *p = (float *)malloc((n ? n : 1) * sizeof(float));
  memcpy(p, x, n * sizeof(float));
  return p;
}
/* max|a-b| / max|b| */
static double rel_err(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    num = d > num ? d : num;
    den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
  }
  return den > 0 ? num / den : num;
}
#define CHECK_REL(got, ref, n, ...)                                     \
  do {                                                                  \
    double e_ = rel_err(got, ref, n);                                   \
    TAP_CHECK(e_ <= TOL, __VA_ARGS__), TAP_DIAG("  rel err %.3g", e_);  \
  } while (0)

/* ---- random numbers: bit identity ------------------------------------------------------ */

static void test_rng(void) {
  const uint64_t seeds[] = {0, 1, 0xDEADBEEFCAFEF00Dull, 42};
  const uint64_t streams[] = {0, 7, 0x100000003ull};
  const uint32_t steps[] = {0, 1, 999, 0xFFFFFFFFu};
  int bad_n = 0, bad_u = 0, bad_r = 0, bad_p = 0, cases = 0;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 3; b++)
      for (int s = 0; s < 4; s++) {
        int64_t n = 4096 + (cases % 4); /* odd tails too */
        float *ref = (float *)malloc(n * sizeof(float)), *got = (float *)malloc(n * sizeof(float));
        sde_randn(seeds[a], streams[b], steps[s], ref, n);
        for (int64_t base = 0; base < n; base += 4) {
          float z[4];
          sde_randn_block(seeds[a], streams[b], steps[s], (uint32_t)(base / 4), z);
          for (int j = 0; j < 4 && base + j < n; j++) got[base + j] = z[j];
        }
        bad_n += memcmp(ref, got, n * sizeof(float)) != 0;
        sde_randu(seeds[a], streams[b], steps[s], ref, n);
        for (int64_t i = 0; i < n; i++) {
          uint32_t r[4];
          sde_philox_block(seeds[a], streams[b], steps[s], (uint32_t)(i / 4), r);
          got[i] = sde_randu_word(r[i % 4]);
        }
        bad_u += memcmp(ref, got, n * sizeof(float)) != 0;
        sde_rand_rademacher(seeds[a], streams[b], steps[s], ref, n);
        for (int64_t i = 0; i < n; i++) {
          uint32_t r[4];
          sde_philox_block(seeds[a], streams[b], steps[s], (uint32_t)(i / 4), r);
          got[i] = sde_rademacher_word(r[i % 4]);
        }
        bad_r += memcmp(ref, got, n * sizeof(float)) != 0;
        /* the raw generator against sde_philox4x32 */
        uint32_t ctr[4] = {(uint32_t)cases, steps[s], (uint32_t)streams[b], (uint32_t)(streams[b] >> 32)};
        uint32_t key[2] = {(uint32_t)seeds[a], (uint32_t)(seeds[a] >> 32)}, r1[4], r2[4];
        sde_philox4x32(ctr, key, r1);
        sde_philox_block(seeds[a], streams[b], steps[s], (uint32_t)cases, r2);
        bad_p += memcmp(r1, r2, sizeof r1) != 0;
        free(ref);
        free(got);
        cases++;
      }
  TAP_CHECK(bad_p == 0, "philox block == sde_philox4x32 (%d of %d differ)", bad_p, cases);
  TAP_CHECK(bad_n == 0, "randn blocks bit-identical to sde_randn (%d of %d streams differ)", bad_n, cases);
  TAP_CHECK(bad_u == 0, "randu bit-identical to sde_randu (%d of %d differ)", bad_u, cases);
  TAP_CHECK(bad_r == 0, "rademacher bit-identical to sde_rand_rademacher (%d of %d differ)", bad_r, cases);

  /* 2^20 normals of one stream: the tails of Box-Muller (u near 0 and 1) get exercised */
  int64_t n = 1 << 20;
  float *ref = (float *)malloc(n * sizeof(float)), *got = (float *)malloc(n * sizeof(float));
  sde_randn(123, 456, 789, ref, n);
  for (int64_t base = 0; base < n; base += 4) sde_randn_block(123, 456, 789, (uint32_t)(base / 4), got + base);
  TAP_CHECK(!memcmp(ref, got, n * sizeof(float)), "2^20 normals bit-identical");
  free(ref);
  free(got);
}

static void test_axpby(void) {
  const sde_backend *cpu = sde_backend_cpu();
  int rows = 5;
  int64_t len = 301;
  float *x = rand_f(rows * len, 3.0f), *y = rand_f(rows * len, 3.0f), *ref = zeros(rows * len),
        *got = zeros(rows * len);
  double a[5], c[5];
  for (int r = 0; r < rows; r++) {
    a[r] = 2.0 * urand() - 1.0;
    c[r] = 1e-3 * urand();
  }
  cpu->axpby_rows(cpu, ref, a, x, c, y, rows, len);
  for (int r = 0; r < rows; r++)
    for (int64_t j = 0; j < len; j++) got[r * len + j] = sde_axpby_elem(a[r], x[r * len + j], c[r], y[r * len + j]);
  TAP_CHECK(!memcmp(ref, got, rows * len * sizeof(float)), "axpby elem bit-identical to the CPU backend");
  free(x), free(y), free(ref), free(got);
}

/* ---- elementwise -------------------------------------------------------------------------- */

static void test_silu(void) {
  size_t n = 10007;
  float *x = rand_f(n, 12.0f), *g = rand_f(n, 1.0f), *ref = zeros(n), *got = zeros(n);
  sde_nn_silu_forward(ref, x, n);
  for (size_t i = 0; i < n; i++) got[i] = sde_silu(x[i]);
  CHECK_REL(got, ref, n, "silu forward");
  float *dref = rand_f(n, 1.0f), *dgot = copy_f(dref, n);
  sde_nn_silu_backward(dref, g, x, n);
  for (size_t i = 0; i < n; i++) dgot[i] += sde_silu_grad(g[i], x[i]);
  CHECK_REL(dgot, dref, n, "silu backward (accumulates)");
  free(x), free(g), free(ref), free(got), free(dref), free(dgot);
}

/* ---- GroupNorm, as the kernels compute it ------------------------------------------------- */

#define GN_CHUNK (256 * 16)

static void gn_stats(float *mean, float *rstd, const float *x, int BG, long long n, float eps) {
  for (int bg = 0; bg < BG; bg++) {
    const float *xg = x + (size_t)bg * n;
    float shift = xg[0];
    double s = 0, q = 0;
    for (long long i0 = 0; i0 < n; i0 += GN_CHUNK) { /* chunk partials, combined in order */
      double cs = 0, cq = 0;
      for (long long i = i0; i < n && i < i0 + GN_CHUNK; i++) {
        double d = (double)xg[i] - shift;
        cs += d;
        cq += d * d;
      }
      s += cs;
      q += cq;
    }
    double m = s / (double)n, ss = q - s * m;
    if (ss < 0) ss = 0;
    mean[bg] = (float)((double)xg[0] + m);
    rstd[bg] = sde_gn_rstd(ss, (double)n, eps);
  }
}

static void test_groupnorm(int B, int C, int HW, int G, float offset) {
  size_t total = (size_t)B * C * HW;
  int cpg = C / G, BG = B * G;
  long long n = (long long)cpg * HW;
  float *x = rand_f(total, 2.0f), *gamma = rand_f(C, 1.5f), *beta = rand_f(C, 0.5f), *dy = rand_f(total, 1.0f);
  for (size_t i = 0; i < total; i++) x[i] += offset;
  float *ref = zeros(total), *got = zeros(total), *mr = zeros(BG), *rr = zeros(BG), *mg = zeros(BG), *rg = zeros(BG);
  sde_nn_groupnorm_forward(ref, mr, rr, x, gamma, beta, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
  gn_stats(mg, rg, x, BG, n, SDE_NN_GROUPNORM_EPS);
  for (size_t i = 0; i < total; i++) {
    size_t row = i / HW, bg = row / cpg;
    int ch = (int)(row % C);
    got[i] = sde_gn_apply(x[i], mg[bg], rg[bg] * gamma[ch], beta[ch]);
  }
  char what[96];
  snprintf(what, sizeof what, "B=%d C=%d HW=%d G=%d offset %g", B, C, HW, G, offset);
  CHECK_REL(mg, mr, BG, "groupnorm mean %s", what);
  CHECK_REL(rg, rr, BG, "groupnorm rstd %s", what);
  CHECK_REL(got, ref, total, "groupnorm forward %s", what);
  sde_nn_groupnorm_silu_forward(ref, x, gamma, beta, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
  for (size_t i = 0; i < total; i++) got[i] = sde_silu(got[i]);
  CHECK_REL(got, ref, total, "groupnorm+silu forward %s", what);

  /* backward: dinp via the per-group (m1, m2), dgamma/dbeta via per-(b, c) rows summed over b */
  float *dxr = rand_f(total, 0.1f), *dxg = copy_f(dxr, total), *dgr = rand_f(C, 0.1f), *dgg = copy_f(dgr, C),
        *dbr = rand_f(C, 0.1f), *dbg = copy_f(dbr, C);
  sde_nn_groupnorm_backward(dxr, dgr, dbr, dy, x, mr, rr, gamma, B, C, HW, G);
  for (int bg = 0; bg < BG; bg++) {
    int g = bg % G;
    size_t off = (size_t)bg * n;
    double s1 = 0, s2 = 0;
    for (long long i = 0; i < n; i++) {
      float gm = gamma[g * cpg + (int)(i / HW)];
      float dxhat = dy[off + i] * gm, xhat = (x[off + i] - mr[bg]) * rr[bg];
      s1 += dxhat;
      s2 += (double)dxhat * xhat;
    }
    float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
    for (long long i = 0; i < n; i++)
      dxg[off + i] += sde_gn_dx(dy[off + i], x[off + i], gamma[g * cpg + (int)(i / HW)], mr[bg], rr[bg], m1, m2);
  }
  for (int ch = 0; ch < C; ch++) {
    double sg = 0, sb = 0;
    for (int b = 0; b < B; b++) {
      size_t row = (size_t)b * C + ch, bg = row / cpg;
      double rg_ = 0, rb_ = 0;
      for (int p = 0; p < HW; p++) {
        rg_ += (double)dy[row * HW + p] * ((x[row * HW + p] - mr[bg]) * rr[bg]);
        rb_ += dy[row * HW + p];
      }
      sg += rg_;
      sb += rb_;
    }
    dgg[ch] += (float)sg;
    dbg[ch] += (float)sb;
  }
  CHECK_REL(dxg, dxr, total, "groupnorm backward dinp %s", what);
  CHECK_REL(dgg, dgr, C, "groupnorm backward dgamma %s", what);
  CHECK_REL(dbg, dbr, C, "groupnorm backward dbeta %s", what);
  free(x), free(gamma), free(beta), free(dy), free(ref), free(got), free(mr), free(rr), free(mg), free(rg);
  free(dxr), free(dxg), free(dgr), free(dgg), free(dbr), free(dbg);
}

/* ---- resampling ---------------------------------------------------------------------------- */

/* out[P,Ho,Wo] (= or +=) via sde_fir_elem */
static void fir_host(float *out, const float *inp, int P, int H, int W, int Ho, int Wo, int kind, int acc) {
  for (int p = 0; p < P; p++)
    for (int oh = 0; oh < Ho; oh++)
      for (int ow = 0; ow < Wo; ow++) {
        float v = sde_fir_elem(inp + (size_t)p * H * W, H, W, kind, oh, ow);
        float *o = out + ((size_t)p * Ho + oh) * Wo + ow;
        *o = acc ? *o + v : v;
      }
}

static void test_resampling(int B, int C, int H, int W) {
  int P = B * C;
  size_t n = (size_t)P * H * W, n4 = 4 * n, nq = n / 4;
  char what[64];
  snprintf(what, sizeof what, "[%d,%d,%d,%d]", B, C, H, W);
  float *x = rand_f(n, 1.0f), *g4 = rand_f(n4, 1.0f), *gq = rand_f(nq, 1.0f);
  float *ref = zeros(n4), *got = zeros(n4);
  /* FIR up and its adjoint */
  sde_nn_fir_upsample2x_forward(ref, x, B, C, H, W);
  fir_host(got, x, P, H, W, 2 * H, 2 * W, SDE_FIR_UP, 0);
  CHECK_REL(got, ref, n4, "fir_upsample2x forward %s", what);
  float *dr = rand_f(n, 0.5f), *dg = copy_f(dr, n);
  sde_nn_fir_upsample2x_backward(dr, g4, B, C, H, W);
  fir_host(dg, g4, P, 2 * H, 2 * W, H, W, SDE_FIR_UP_T, 1);
  CHECK_REL(dg, dr, n, "fir_upsample2x backward %s", what);
  /* FIR down and its adjoint */
  sde_nn_fir_downsample2x_forward(ref, x, B, C, H, W);
  fir_host(got, x, P, H, W, H / 2, W / 2, SDE_FIR_DOWN, 0);
  CHECK_REL(got, ref, nq, "fir_downsample2x forward %s", what);
  memcpy(dg, dr, n * sizeof(float));
  sde_nn_fir_downsample2x_backward(dr, gq, B, C, H, W);
  fir_host(dg, gq, P, H / 2, W / 2, H, W, SDE_FIR_DOWN_T, 1);
  CHECK_REL(dg, dr, n, "fir_downsample2x backward %s", what);
  /* nearest up */
  sde_nn_upsample_nearest2x_forward(ref, x, B, C, H, W);
  for (size_t i = 0; i < n4; i++) {
    size_t p = i / (4 * (size_t)H * W);
    int r = (int)(i % (4 * (size_t)H * W)), oh = r / (2 * W), ow = r % (2 * W);
    got[i] = x[(p * H + oh / 2) * W + ow / 2];
  }
  CHECK_REL(got, ref, n4, "upsample_nearest2x forward %s", what);
  memcpy(dg, dr, n * sizeof(float));
  sde_nn_upsample_nearest2x_backward(dr, g4, B, C, H, W);
  for (size_t i = 0; i < n; i++) {
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W));
    dg[i] += sde_nearest_up_grad(g4 + p * 4 * H * W, W, r / W, r % W);
  }
  CHECK_REL(dg, dr, n, "upsample_nearest2x backward %s", what);
  /* average pool */
  sde_nn_avgpool2x_forward(ref, x, B, C, H, W);
  for (size_t i = 0; i < nq; i++) {
    int Ho = H / 2, Wo = W / 2;
    size_t p = i / ((size_t)Ho * Wo);
    int r = (int)(i % ((size_t)Ho * Wo));
    got[i] = sde_avgpool_elem(x + p * H * W, W, r / Wo, r % Wo);
  }
  CHECK_REL(got, ref, nq, "avgpool2x forward %s", what);
  memcpy(dg, dr, n * sizeof(float));
  sde_nn_avgpool2x_backward(dr, gq, B, C, H, W);
  for (size_t i = 0; i < n; i++) {
    size_t p = i / ((size_t)H * W);
    int r = (int)(i % ((size_t)H * W)), h = r / W, w = r % W;
    dg[i] += 0.25f * gq[(p * (H / 2) + h / 2) * (W / 2) + w / 2];
  }
  CHECK_REL(dg, dr, n, "avgpool2x backward %s", what);
  free(x), free(g4), free(gq), free(ref), free(got), free(dr), free(dg);
}

/* ---- conv through explicit padding (the asymmetric-pad path) and the FIR conv-down ------- */

/* out[B,Co,Ho,Wo] = unpadded stride-s conv of xp[B,Ci,Hp,Wp] + bias */
static void conv_naive(float *out, const float *xp, const float *w, const float *bias, int B, int Ci, int Hp, int Wp,
                       int Co, int K, int s) {
  int Ho = (Hp - K) / s + 1, Wo = (Wp - K) / s + 1;
  for (int b = 0; b < B; b++)
    for (int co = 0; co < Co; co++)
      for (int oh = 0; oh < Ho; oh++)
        for (int ow = 0; ow < Wo; ow++) {
          double acc = bias ? bias[co] : 0.0;
          for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < K; kh++)
              for (int kw = 0; kw < K; kw++)
                acc += (double)w[((co * Ci + ci) * K + kh) * K + kw] *
                       xp[(((size_t)b * Ci + ci) * Hp + oh * s + kh) * Wp + ow * s + kw];
          out[(((size_t)b * Co + co) * Ho + oh) * Wo + ow] = (float)acc;
        }
}

static void test_conv_padding(void) {
  int B = 2, Ci = 3, H = 8, W = 6, Co = 4, K = 3;
  int pt = 0, pb = 1, pl = 0, pr = 1, stride = 2; /* the stride-2 downsampling conv's pad */
  sde_nn_conv2d_shape s = {B, Ci, H, W, Co, K, K, stride, pt, pb, pl, pr, 0};
  int Hp = H + pt + pb, Wp = W + pl + pr, Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * Ho * Wo, np = (size_t)B * Ci * Hp * Wp;
  float *x = rand_f(nx, 1.0f), *w = rand_f((size_t)Co * Ci * K * K, 0.5f), *bias = rand_f(Co, 0.5f);
  float *ref = zeros(ny), *got = zeros(ny), *xp = zeros(np);
  sde_nn_conv2d_forward(ref, x, w, bias, &s, NULL);
  for (int p = 0; p < B * Ci; p++)
    for (int h = 0; h < Hp; h++)
      for (int q = 0; q < Wp; q++) xp[((size_t)p * Hp + h) * Wp + q] = sde_pad_elem(x + (size_t)p * H * W, H, W, pt, pl, h, q);
  conv_naive(got, xp, w, bias, B, Ci, Hp, Wp, Co, K, stride);
  CHECK_REL(got, ref, ny, "conv2d with pad (0,1,0,1) stride 2 == zero-pad copy + unpadded conv");

  /* FIR conv-down: blur (sde_fir_elem BLUR2) + 3x3 stride-2 conv */
  int Hb = H + 1, Wb = W + 1, Hq = H / 2, Wq = W / 2;
  size_t nb = (size_t)B * Ci * Hb * Wb, nq = (size_t)B * Co * Hq * Wq;
  float *blur = zeros(nb), *r2 = zeros(nq), *g2 = zeros(nq);
  sde_nn_fir_conv_downsample2x_forward(r2, x, w, bias, B, Ci, H, W, Co, NULL);
  fir_host(blur, x, B * Ci, H, W, Hb, Wb, SDE_FIR_BLUR2, 0);
  conv_naive(g2, blur, w, bias, B, Ci, Hb, Wb, Co, 3, 2);
  CHECK_REL(g2, r2, nq, "fir_conv_downsample2x forward == BLUR2 + 3x3 stride-2 conv");
  /* its input gradient: conv transpose into the blurred plane, then BLUR2_T */
  float *gy = rand_f(nq, 1.0f), *dr = rand_f(nx, 0.1f), *dg = copy_f(dr, nx), *dblur = zeros(nb);
  sde_nn_fir_conv_downsample2x_backward(dr, NULL, NULL, gy, x, w, B, Ci, H, W, Co, NULL);
  for (int b = 0; b < B; b++)
    for (int co = 0; co < Co; co++)
      for (int oh = 0; oh < Hq; oh++)
        for (int ow = 0; ow < Wq; ow++)
          for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < 3; kh++)
              for (int kw = 0; kw < 3; kw++)
                dblur[(((size_t)b * Ci + ci) * Hb + oh * 2 + kh) * Wb + ow * 2 + kw] +=
                    w[((co * Ci + ci) * 3 + kh) * 3 + kw] * gy[(((size_t)b * Co + co) * Hq + oh) * Wq + ow];
  fir_host(dg, dblur, B * Ci, Hb, Wb, H, W, SDE_FIR_BLUR2_T, 1);
  CHECK_REL(dg, dr, nx, "fir_conv_downsample2x backward dinp == conv transpose + BLUR2_T");
  free(x), free(w), free(bias), free(ref), free(got), free(xp), free(blur), free(r2), free(g2), free(gy), free(dr);
  free(dg), free(dblur);
}

/* ---- FIR conv-up: zero insert + 3x3 conv pad 2 (conv_naive on a padded copy) + UPCONV blur ---- */

extern "C" {
size_t sde_nn_fir_upsample_conv2x_scratch_floats(int B, int C_in, int H, int W, int C_out);
int sde_nn_fir_upsample_conv2x_forward(float *out, const float *inp, const float *weight, const float *bias,
                                       int B, int C_in, int H, int W, int C_out, float *scratch);
int sde_nn_fir_upsample_conv2x_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                        const float *inp, const float *weight, int B, int C_in, int H, int W,
                                        int C_out, float *scratch);
}

static void test_fir_conv_up(int B, int Ci, int H, int W, int Co) {
  const int Hz = 2 * H - 1, Wz = 2 * W - 1, Hp = Hz + 4, Wp = Wz + 4, Ht = 2 * H + 1, Wt = 2 * W + 1;
  const int Ho = 2 * H, Wo = 2 * W;
  size_t nx = (size_t)B * Ci * H * W, nz = (size_t)B * Ci * Hz * Wz, np = (size_t)B * Ci * Hp * Wp;
  size_t nt = (size_t)B * Co * Ht * Wt, ny = (size_t)B * Co * Ho * Wo;
  float *x = rand_f(nx, 1.0f), *w = rand_f((size_t)Co * Ci * 9, 0.5f), *bias = rand_f(Co, 0.5f);
  float *scratch = zeros(sde_nn_fir_upsample_conv2x_scratch_floats(B, Ci, H, W, Co));
  float *ref = zeros(ny), *got = zeros(ny), *z = zeros(nz), *zp = zeros(np), *t = zeros(nt);
  sde_nn_fir_upsample_conv2x_forward(ref, x, w, bias, B, Ci, H, W, Co, scratch);
  for (int p = 0; p < B * Ci; p++)
    for (int h = 0; h < Hz; h++)
      for (int q = 0; q < Wz; q++) z[((size_t)p * Hz + h) * Wz + q] = sde_zero_insert_elem(x + (size_t)p * H * W, W, h, q);
  for (int p = 0; p < B * Ci; p++)
    for (int h = 0; h < Hp; h++)
      for (int q = 0; q < Wp; q++) zp[((size_t)p * Hp + h) * Wp + q] = sde_pad_elem(z + (size_t)p * Hz * Wz, Hz, Wz, 2, 2, h, q);
  conv_naive(t, zp, w, NULL, B, Ci, Hp, Wp, Co, 3, 1);
  fir_host(got, t, B * Co, Ht, Wt, Ho, Wo, SDE_FIR_UPCONV, 0);
  for (size_t i = 0; i < ny; i++) got[i] += bias[(i / ((size_t)Ho * Wo)) % Co];
  CHECK_REL(got, ref, ny, "fir_conv_upsample2x forward [%d,%d,%d,%d]->%d == zero insert + conv + UPCONV", B, Ci,
            H, W, Co);
  /* input gradient: UPCONV_T, the conv transposed (pad 2), dx += dz at the even positions */
  float *gy = rand_f(ny, 1.0f), *dr = rand_f(nx, 0.1f), *dg = copy_f(dr, nx), *dt = zeros(nt), *dzp = zeros(np);
  sde_nn_fir_upsample_conv2x_backward(dr, NULL, NULL, gy, x, w, B, Ci, H, W, Co, scratch);
  fir_host(dt, gy, B * Co, Ho, Wo, Ht, Wt, SDE_FIR_UPCONV_T, 0);
  for (int b = 0; b < B; b++)
    for (int co = 0; co < Co; co++)
      for (int oh = 0; oh < Ht; oh++)
        for (int ow = 0; ow < Wt; ow++)
          for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < 3; kh++)
              for (int kw = 0; kw < 3; kw++)
                dzp[(((size_t)b * Ci + ci) * Hp + oh + kh) * Wp + ow + kw] +=
                    w[((co * Ci + ci) * 3 + kh) * 3 + kw] * dt[(((size_t)b * Co + co) * Ht + oh) * Wt + ow];
  for (int p = 0; p < B * Ci; p++)
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++)
        dg[((size_t)p * H + i) * W + j] += sde_zero_insert_grad(dzp + (size_t)p * Hp * Wp + 2 * Wp + 2, Wp, i, j);
  CHECK_REL(dg, dr, nx, "fir_conv_upsample2x backward dinp == UPCONV_T + conv transpose + even positions");
  free(x), free(w), free(bias), free(scratch), free(ref), free(got), free(z), free(zp), free(t), free(gy), free(dr);
  free(dg), free(dt), free(dzp);
}

/* ---- attention: softmax rows and their backward ------------------------------------------ */

static void test_attention(int B, int C, int N) {
  size_t xs = (size_t)C * N, as = (size_t)N * N;
  float *q = rand_f(B * xs, 1.0f), *k = rand_f(B * xs, 1.0f), *v = rand_f(B * xs, 1.0f), *g = rand_f(B * xs, 1.0f);
  float *outr = zeros(B * xs), *attr = zeros(B * as), *outg = zeros(B * xs), *attg = zeros(B * as);
  sde_nn_attention_forward(outr, attr, q, k, v, B, C, N);
  float scale = (float)pow((double)C, -0.5);
  for (int b = 0; b < B; b++) {
    const float *qb = q + b * xs, *kb = k + b * xs, *vb = v + b * xs;
    float *ab = attg + b * as;
    for (int i = 0; i < N; i++) {
      float *row = ab + (size_t)i * N, mx = -INFINITY;
      for (int j = 0; j < N; j++) {
        double acc = 0;
        for (int cc = 0; cc < C; cc++) acc += (double)qb[cc * N + i] * kb[cc * N + j];
        row[j] = scale * (float)acc;
        mx = fmaxf(mx, row[j]);
      }
      double s = 0;
      for (int j = 0; j < N; j++) {
        row[j] = expf(row[j] - mx);
        s += row[j];
      }
      float inv = (float)(1.0 / s);
      for (int j = 0; j < N; j++) row[j] *= inv;
    }
    for (int cc = 0; cc < C; cc++)
      for (int i = 0; i < N; i++) {
        double acc = 0;
        for (int j = 0; j < N; j++) acc += (double)vb[cc * N + j] * ab[(size_t)i * N + j];
        outg[b * xs + cc * N + i] = (float)acc;
      }
  }
  char what[48];
  snprintf(what, sizeof what, "B=%d C=%d N=%d", B, C, N);
  CHECK_REL(attg, attr, B * as, "attention softmax %s", what);
  CHECK_REL(outg, outr, B * xs, "attention forward %s", what);
  /* backward: da = gᵀv, dl = sde_softmax_dlogit, dq += k·dlᵀ, dk += q·dl, dv += g·a */
  float *dqr = zeros(B * xs), *dkr = zeros(B * xs), *dvr = zeros(B * xs);
  float *dqg = zeros(B * xs), *dkg = zeros(B * xs), *dvg = zeros(B * xs), *dl = zeros(as);
  sde_nn_attention_backward(dqr, dkr, dvr, g, attr, q, k, v, B, C, N, NULL);
  for (int b = 0; b < B; b++) {
    const float *a = attr + b * as, *gb = g + b * xs, *vb = v + b * xs, *qb = q + b * xs, *kb = k + b * xs;
    for (int i = 0; i < N; i++) {
      double dot = 0;
      for (int j = 0; j < N; j++) {
        double acc = 0;
        for (int cc = 0; cc < C; cc++) acc += (double)gb[cc * N + i] * vb[cc * N + j];
        dl[(size_t)i * N + j] = (float)acc;
        dot += (double)a[(size_t)i * N + j] * dl[(size_t)i * N + j];
      }
      for (int j = 0; j < N; j++)
        dl[(size_t)i * N + j] = sde_softmax_dlogit(a[(size_t)i * N + j], dl[(size_t)i * N + j], (float)dot, scale);
    }
    for (int cc = 0; cc < C; cc++)
      for (int j = 0; j < N; j++) {
        double sq = 0, sk = 0, sv = 0;
        for (int i = 0; i < N; i++) {
          sq += (double)kb[cc * N + i] * dl[(size_t)j * N + i];
          sk += (double)qb[cc * N + i] * dl[(size_t)i * N + j];
          sv += (double)gb[cc * N + i] * a[(size_t)i * N + j];
        }
        dqg[b * xs + cc * N + j] += (float)sq;
        dkg[b * xs + cc * N + j] += (float)sk;
        dvg[b * xs + cc * N + j] += (float)sv;
      }
  }
  CHECK_REL(dqg, dqr, B * xs, "attention backward dq %s", what);
  CHECK_REL(dkg, dkr, B * xs, "attention backward dk %s", what);
  CHECK_REL(dvg, dvr, B * xs, "attention backward dv %s", what);
  free(q), free(k), free(v), free(g), free(outr), free(attr), free(outg), free(attg);
  free(dqr), free(dkr), free(dvr), free(dqg), free(dkg), free(dvg), free(dl);
}

/* ---- embeddings ------------------------------------------------------------------------------ */

static void test_embeddings(int B, int E, int dim) {
  float *u = rand_f(B, 4.0f), *W = rand_f(E, 16.0f), *go = rand_f((size_t)B * 2 * E, 1.0f);
  float *ref = zeros((size_t)B * 2 * E), *got = zeros((size_t)B * 2 * E);
  sde_nn_fourier_embedding_forward(ref, u, W, B, E);
  for (int b = 0; b < B; b++)
    for (int e = 0; e < E; e++) {
      float proj = sde_fourier_proj(u[b], W[e]);
      got[(size_t)b * 2 * E + e] = (float)sin((double)proj);
      got[(size_t)b * 2 * E + E + e] = (float)cos((double)proj);
    }
  CHECK_REL(got, ref, (size_t)B * 2 * E, "fourier embedding forward B=%d E=%d", B, E);
  float *dur = rand_f(B, 0.1f), *dug = copy_f(dur, B), *dWr = rand_f(E, 0.1f), *dWg = copy_f(dWr, E);
  sde_nn_fourier_embedding_backward(dur, dWr, go, u, W, B, E);
  for (int b = 0; b < B; b++) {
    double acc = 0;
    for (int e = 0; e < E; e++)
      acc += sde_fourier_grad_term(go[(size_t)b * 2 * E + e], go[(size_t)b * 2 * E + E + e],
                                   sde_fourier_proj(u[b], W[e]), W[e]);
    dug[b] += (float)acc;
  }
  for (int e = 0; e < E; e++) {
    double acc = 0;
    for (int b = 0; b < B; b++)
      acc += sde_fourier_grad_term(go[(size_t)b * 2 * E + e], go[(size_t)b * 2 * E + E + e],
                                   sde_fourier_proj(u[b], W[e]), u[b]);
    dWg[e] += (float)acc;
  }
  CHECK_REL(dug, dur, B, "fourier embedding backward du");
  CHECK_REL(dWg, dWr, E, "fourier embedding backward dW");

  float *t = rand_f(B, 999.0f), *tr = zeros((size_t)B * dim), *tg = rand_f((size_t)B * dim, 1.0f),
        *gt = rand_f((size_t)B * dim, 1.0f);
  int half = dim / 2;
  sde_nn_timestep_embedding_forward(tr, t, B, dim);
  for (int b = 0; b < B; b++) {
    for (int kk = 0; kk < half; kk++) {
      float arg = t[b] * sde_timestep_freq(kk, half);
      tg[(size_t)b * dim + kk] = (float)sin((double)arg);
      tg[(size_t)b * dim + half + kk] = (float)cos((double)arg);
    }
    if (dim % 2) tg[(size_t)b * dim + dim - 1] = 0.0f;
  }
  CHECK_REL(tg, tr, (size_t)B * dim, "timestep embedding forward B=%d dim=%d", B, dim);
  float *dtr = rand_f(B, 0.1f), *dtg = copy_f(dtr, B);
  sde_nn_timestep_embedding_backward(dtr, gt, t, B, dim);
  for (int b = 0; b < B; b++) {
    double acc = 0;
    for (int kk = 0; kk < half; kk++)
      acc += sde_timestep_grad_term(gt[(size_t)b * dim + kk], gt[(size_t)b * dim + half + kk], t[b],
                                    sde_timestep_freq(kk, half));
    dtg[b] += (float)acc;
  }
  CHECK_REL(dtg, dtr, B, "timestep embedding backward dt");
  free(u), free(W), free(go), free(ref), free(got), free(dur), free(dug), free(dWr), free(dWg);
  free(t), free(tr), free(tg), free(gt), free(dtr), free(dtg);
}

/* ---- dropout: the mask of nn/ncsnpp_train.c's reference arithmetic, bit for bit ------------------ */

static void test_dropout(void) {
  const size_t n = 4099;
  const float p = 0.1f, keep = 1.0f / (1.0f - p);
  float *u = zeros(n);
  sde_randu(11, 3, 1007, u, (int64_t)n);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float ref = u[i] < p ? 0.0f : keep;
    float got = sde_dropout_elem(u[i], p, keep);
    if (memcmp(&ref, &got, sizeof ref)) bad++;
  }
  TAP_CHECK(bad == 0, "dropout mask element bit-identical to the reference (%zu differ)", bad);
  free(u);
}

/* ---- Adam + EMA: sde_adam_elem against the loop train.c had (a literal copy), bit for bit -- */

static void test_adam(void) {
  const size_t n = 5000;
  float *g = rand_f(n, 3.0f), *p0 = rand_f(n, 1.0f), *m0 = rand_f(n, 0.1f), *v0 = rand_f(n, 0.01f);
  for (size_t i = 0; i < n; i++) v0[i] = fabsf(v0[i]);
  float *p1 = copy_f(p0, n), *m1 = copy_f(m0, n), *v1 = copy_f(v0, n), *e0 = rand_f(n, 1.0f);
  float *e1 = copy_f(e0, n);
  const float clip = 0.37f, b1 = 0.9f, b2 = 0.999f, step_size = (float)(2e-4 / (1.0 - pow(0.9, 3.0))),
              sbc2 = (float)sqrt(1.0 - pow(0.999, 3.0)), aeps = 1e-8f, one_m_decay = (float)(1.0 - 4.0 / 13.0);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) { /* train.c before adam_step, verbatim */
    float *p = p0, *gm = m0, *gv = v0, *ema = e0;
    float gg = g[i] * clip;
    gm[i] = b1 * gm[i] + (1.0f - b1) * gg;
    gv[i] = b2 * gv[i] + (1.0f - b2) * gg * gg;
    float denom = sqrtf(gv[i]) / sbc2 + aeps;
    p[i] -= step_size * (gm[i] / denom);
    ema[i] -= one_m_decay * (ema[i] - p[i]);
    sde_adam_elem(&p1[i], &m1[i], &v1[i], &e1[i], g[i], clip, b1, b2, step_size, sbc2, aeps, one_m_decay);
    bad += memcmp(&p0[i], &p1[i], 4) || memcmp(&m0[i], &m1[i], 4) || memcmp(&v0[i], &v1[i], 4) ||
           memcmp(&e0[i], &e1[i], 4);
  }
  TAP_CHECK(bad == 0, "adam_step element (sde_adam_elem) bit-identical to train.c's loop (%zu differ)", bad);
  free(g), free(p0), free(m0), free(v0), free(p1), free(m1), free(v1), free(e0), free(e1);
}

int main(void) {
  test_rng();
  test_axpby();
  test_silu();
  test_groupnorm(2, 8, 16, 2, 0.0f);
  test_groupnorm(3, 12, 25, 3, 100.0f); /* a large mean: the shifted sums keep the variance */
  test_groupnorm(1, 64, 4096, 16, 0.5f); /* groups longer than one chunk */
  for (int i = 0; i < 3; i++) test_resampling(irand(1, 2), irand(1, 3), 2 * irand(1, 5), 2 * irand(1, 5));
  test_resampling(1, 1, 1 * 2, 7 * 2);
  test_conv_padding();
  test_dropout();
  test_adam();
  test_fir_conv_up(2, 3, 4, 5, 4);
  test_fir_conv_up(1, 2, 1, 3, 3);
  test_attention(2, 8, 16);
  test_attention(1, 5, 33);
  test_embeddings(3, 16, 33);
  test_embeddings(2, 8, 128);
  return tap_done();
}
