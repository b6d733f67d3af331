/* Tests of the CPU neural-network ops (scoresde/nn.h).
 *
 *   test_nn_ops              hand-derived cases, float64 reference + finite-difference
 *                            gradient checks for every op, 1-vs-2-thread determinism
 *   test_nn_ops --torch DIR  compare forward and backward against the PyTorch reference
 *                            written by tests/engine/nn_ref.py into DIR */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/nn.h"
#include "scoresde/scoresde.h"
#include "tap.h"

/* ---------------------------------------------------------------------------------------
 * small utilities */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* splitmix64 -> [0,1) */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}
static float *rand_f(size_t n, float scale) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = (float)((2.0 * urand() - 1.0) * scale);
  return p;
}
static float *fill_f(size_t n, float v) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = v;
  return p;
}
static double *to_d(const float *x, size_t n) {
  double *p = malloc((n ? n : 1) * sizeof(double));
  for (size_t i = 0; i < n; i++) p[i] = x[i];
  return p;
}
/* max|a-b| / max|b| */
static double rel_err_fd(const float *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs(a[i] - b[i]);
    num = d > num ? d : num;
    den = fabs(b[i]) > den ? fabs(b[i]) : den;
  }
  return den > 0 ? num / den : num;
}
static double rel_err_ff(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    num = d > num ? d : num;
    den = fabs(b[i]) > den ? fabs(b[i]) : den;
  }
  return den > 0 ? num / den : num;
}
static double max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

/* ---------------------------------------------------------------------------------------
 * float64 reference implementations, written from the spec formulas */

static void conv2d_ref(double *out, const double *x, const double *w, const double *bias,
                       const sde_nn_conv2d_shape *s) {
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
  for (int b = 0; b < s->B; b++)
    for (int co = 0; co < s->C_out; co++)
      for (int oh = 0; oh < Ho; oh++)
        for (int ow = 0; ow < Wo; ow++) {
          double acc = bias ? bias[co] : 0.0;
          for (int ci = 0; ci < s->C_in; ci++)
            for (int kh = 0; kh < s->KH; kh++)
              for (int kw = 0; kw < s->KW; kw++) {
                int ih = oh * s->stride - s->pad_top + kh, iw = ow * s->stride - s->pad_left + kw;
                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                acc += w[((size_t)(co * s->C_in + ci) * s->KH + kh) * s->KW + kw] *
                       x[(((size_t)b * s->C_in + ci) * s->H + ih) * s->W + iw];
              }
          out[(((size_t)b * s->C_out + co) * Ho + oh) * Wo + ow] = acc;
        }
}

static void conv2d_ref_backward(double *dx, double *dw, double *db, const double *g,
                                const double *x, const double *w, const sde_nn_conv2d_shape *s) {
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
  for (int b = 0; b < s->B; b++)
    for (int co = 0; co < s->C_out; co++)
      for (int oh = 0; oh < Ho; oh++)
        for (int ow = 0; ow < Wo; ow++) {
          double gv = g[(((size_t)b * s->C_out + co) * Ho + oh) * Wo + ow];
          db[co] += gv;
          for (int ci = 0; ci < s->C_in; ci++)
            for (int kh = 0; kh < s->KH; kh++)
              for (int kw = 0; kw < s->KW; kw++) {
                int ih = oh * s->stride - s->pad_top + kh, iw = ow * s->stride - s->pad_left + kw;
                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                size_t wi = ((size_t)(co * s->C_in + ci) * s->KH + kh) * s->KW + kw;
                size_t xi = (((size_t)b * s->C_in + ci) * s->H + ih) * s->W + iw;
                dw[wi] += gv * x[xi];
                dx[xi] += gv * w[wi];
              }
        }
}

/* 1-D FIR formulas of docs/math.md#fir, x outside [0,n) = 0 */
static double at(const double *x, int n, int stride, int i) {
  return (i < 0 || i >= n) ? 0.0 : x[(size_t)i * stride];
}
static void up1d(double *y, int ys, const double *x, int xs, int n) {
  for (int i = 0; i < n; i++) {
    y[(size_t)(2 * i) * ys] = 0.25 * at(x, n, xs, i - 1) + 0.75 * at(x, n, xs, i);
    y[(size_t)(2 * i + 1) * ys] = 0.75 * at(x, n, xs, i) + 0.25 * at(x, n, xs, i + 1);
  }
}
static void down1d(double *y, int ys, const double *x, int xs, int n) {
  for (int i = 0; i < n / 2; i++)
    y[(size_t)i * ys] = (at(x, n, xs, 2 * i - 1) + 3 * at(x, n, xs, 2 * i) +
                         3 * at(x, n, xs, 2 * i + 1) + at(x, n, xs, 2 * i + 2)) / 8;
}
static void blur1d(double *y, int ys, const double *x, int xs, int n) { /* n+1 outputs */
  for (int i = 0; i <= n; i++)
    y[(size_t)i * ys] = (at(x, n, xs, i - 2) + 3 * at(x, n, xs, i - 1) + 3 * at(x, n, xs, i) +
                         at(x, n, xs, i + 1)) / 8;
}
typedef void (*fir1d_fn)(double *y, int ys, const double *x, int xs, int n);
/* separable 2-D application on P planes: rows [H -> Ho] then columns [W -> Wo] */
static void fir2d_ref(double *out, const double *x, int P, int H, int W, int Ho, int Wo,
                      fir1d_fn f) {
  double *tmp = malloc((size_t)Ho * W * sizeof(double));
  for (int p = 0; p < P; p++) {
    for (int j = 0; j < W; j++) f(tmp + j, W, x + (size_t)p * H * W + j, W, H);
    for (int i = 0; i < Ho; i++) f(out + ((size_t)p * Ho + i) * Wo, 1, tmp + (size_t)i * W, 1, W);
  }
  free(tmp);
}

/* ---------------------------------------------------------------------------------------
 * op table: each op has a float64 reference forward and adapters to the C forward and
 * backward. Tensors are the differentiable inputs and parameters, in order. */

#define MAXT 4
typedef struct op_case op_case;
typedef struct {
  const char *name;
  int nin;
  float in_scale[MAXT]; /* random inputs uniform in ±scale (0 -> 1) */
  void (*setup)(op_case *c);
  void (*ref)(const op_case *c, double *const *in, double *out);
  int (*fwd)(const op_case *c, float *const *in, float *out);
  int (*bwd)(const op_case *c, float *const *in, const float *dout, float *const *grad);
  double fwd_tol;
} op_kind;

struct op_case {
  const op_kind *k;
  int p[12];
  size_t in_n[MAXT], out_n;
  sde_nn_conv2d_shape cs;
};

/* conv2d: p = B, Cin, H, W, Cout, KH, KW, stride, pad_top, pad_bottom, pad_left, pad_right */
static void conv_setup(op_case *c) {
  int *p = c->p;
  sde_nn_conv2d_shape s = {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], 0};
  c->cs = s;
  c->in_n[0] = (size_t)s.B * s.C_in * s.H * s.W;
  c->in_n[1] = (size_t)s.C_out * s.C_in * s.KH * s.KW;
  c->in_n[2] = (size_t)s.C_out;
  c->out_n = (size_t)s.B * s.C_out * sde_nn_conv2d_out_h(&s) * sde_nn_conv2d_out_w(&s);
}
static void conv_ref(const op_case *c, double *const *in, double *out) {
  conv2d_ref(out, in[0], in[1], in[2], &c->cs);
}
static int conv_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_conv2d_forward(out, in[0], in[1], in[2], &c->cs, NULL);
}
static int conv_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  float *scratch = malloc((sde_nn_conv2d_scratch_floats(&c->cs) + 1) * sizeof(float));
  int rc = sde_nn_conv2d_backward(d[0], d[1], d[2], g, in[0], in[1], &c->cs, scratch);
  free(scratch);
  return rc;
}

/* linear: p = B, in, out */
static void linear_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0] * c->p[1];
  c->in_n[1] = (size_t)c->p[2] * c->p[1];
  c->in_n[2] = (size_t)c->p[2];
  c->out_n = (size_t)c->p[0] * c->p[2];
}
static void linear_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], I = c->p[1], O = c->p[2];
  for (int b = 0; b < B; b++)
    for (int o = 0; o < O; o++) {
      double acc = in[2][o];
      for (int i = 0; i < I; i++) acc += in[1][(size_t)o * I + i] * in[0][(size_t)b * I + i];
      out[(size_t)b * O + o] = acc;
    }
}
static int linear_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_linear_forward(out, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2]);
}
static int linear_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_linear_backward(d[0], d[1], d[2], g, in[0], in[1], c->p[0], c->p[1], c->p[2]);
}

/* nin: p = B, Cin, HW, Cout; W [Cin, Cout] */
static void nin_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0] * c->p[1] * c->p[2];
  c->in_n[1] = (size_t)c->p[1] * c->p[3];
  c->in_n[2] = (size_t)c->p[3];
  c->out_n = (size_t)c->p[0] * c->p[3] * c->p[2];
}
static void nin_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], Ci = c->p[1], HW = c->p[2], Co = c->p[3];
  for (int b = 0; b < B; b++)
    for (int o = 0; o < Co; o++)
      for (int q = 0; q < HW; q++) {
        double acc = in[2][o];
        for (int i = 0; i < Ci; i++)
          acc += in[1][(size_t)i * Co + o] * in[0][((size_t)b * Ci + i) * HW + q];
        out[((size_t)b * Co + o) * HW + q] = acc;
      }
}
static int nin_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_nin_forward(out, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int nin_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_nin_backward(d[0], d[1], d[2], g, in[0], in[1], c->p[0], c->p[1], c->p[2],
                             c->p[3]);
}

/* groupnorm: p = B, C, HW, G */
static void gn_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0] * c->p[1] * c->p[2];
  c->in_n[1] = c->in_n[2] = (size_t)c->p[1];
  c->out_n = c->in_n[0];
}
static void gn_ref_impl(const op_case *c, double *const *in, double *out, int with_silu) {
  int B = c->p[0], C = c->p[1], HW = c->p[2], G = c->p[3], cpg = C / G;
  size_t n = (size_t)cpg * HW;
  for (int bg = 0; bg < B * G; bg++) {
    const double *x = in[0] + bg * n;
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (size_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (size_t i = 0; i < n; i++) {
      int ch = (bg % G) * cpg + (int)(i / HW);
      double y = (x[i] - mean) / sqrt(var + 1e-6) * in[1][ch] + in[2][ch];
      out[bg * n + i] = with_silu ? y / (1 + exp(-y)) : y;
    }
  }
}
static void gn_ref(const op_case *c, double *const *in, double *out) { gn_ref_impl(c, in, out, 0); }
static void gnsilu_ref(const op_case *c, double *const *in, double *out) {
  gn_ref_impl(c, in, out, 1);
}
static int gn_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_groupnorm_forward(out, NULL, NULL, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2],
                                  c->p[3], SDE_NN_GROUPNORM_EPS);
}
static int gnsilu_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_groupnorm_silu_forward(out, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2],
                                       c->p[3], SDE_NN_GROUPNORM_EPS);
}
static int gn_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  int BG = c->p[0] * c->p[3];
  float *tmp = malloc(c->out_n * sizeof(float)), *mean = malloc(BG * sizeof(float)),
        *rstd = malloc(BG * sizeof(float));
  int rc = sde_nn_groupnorm_forward(tmp, mean, rstd, in[0], in[1], in[2], c->p[0], c->p[1],
                                    c->p[2], c->p[3], SDE_NN_GROUPNORM_EPS);
  if (!rc)
    rc = sde_nn_groupnorm_backward(d[0], d[1], d[2], g, in[0], mean, rstd, in[1], c->p[0],
                                   c->p[1], c->p[2], c->p[3]);
  free(tmp);
  free(mean);
  free(rstd);
  return rc;
}

/* the fused backward of silu(groupnorm), mean and rstd from the forward */
static int gnsilu_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  int BG = c->p[0] * c->p[3];
  float *tmp = malloc(c->out_n * sizeof(float)), *mean = malloc(BG * sizeof(float)),
        *rstd = malloc(BG * sizeof(float));
  int rc = sde_nn_groupnorm_forward(tmp, mean, rstd, in[0], in[1], in[2], c->p[0], c->p[1],
                                    c->p[2], c->p[3], SDE_NN_GROUPNORM_EPS);
  if (!rc)
    rc = sde_nn_groupnorm_silu_backward(d[0], d[1], d[2], g, in[0], mean, rstd, in[1], in[2],
                                        c->p[0], c->p[1], c->p[2], c->p[3]);
  free(tmp);
  free(mean);
  free(rstd);
  return rc;
}

/* silu: p = n */
static void silu_setup(op_case *c) { c->in_n[0] = c->out_n = (size_t)c->p[0]; }
static void silu_ref(const op_case *c, double *const *in, double *out) {
  for (int i = 0; i < c->p[0]; i++) out[i] = in[0][i] / (1 + exp(-in[0][i]));
}
static int silu_fwd(const op_case *c, float *const *in, float *out) {
  sde_nn_silu_forward(out, in[0], (size_t)c->p[0]);
  return 0;
}
static int silu_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  if (d[0]) sde_nn_silu_backward(d[0], g, in[0], (size_t)c->p[0]);
  return 0;
}

/* attention: p = B, C, N; tensors q, k, v */
static void attn_setup(op_case *c) {
  c->in_n[0] = c->in_n[1] = c->in_n[2] = c->out_n = (size_t)c->p[0] * c->p[1] * c->p[2];
}
static void attn_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], C = c->p[1], N = c->p[2];
  double *w = malloc((size_t)N * sizeof(double));
  for (int b = 0; b < B; b++) {
    const double *q = in[0] + (size_t)b * C * N, *k = in[1] + (size_t)b * C * N,
                 *v = in[2] + (size_t)b * C * N;
    for (int i = 0; i < N; i++) {
      double mx = -1e300, sum = 0;
      for (int j = 0; j < N; j++) {
        double l = 0;
        for (int ch = 0; ch < C; ch++) l += q[(size_t)ch * N + i] * k[(size_t)ch * N + j];
        w[j] = l / sqrt((double)C);
        mx = fmax(mx, w[j]);
      }
      for (int j = 0; j < N; j++) sum += (w[j] = exp(w[j] - mx));
      for (int ch = 0; ch < C; ch++) {
        double acc = 0;
        for (int j = 0; j < N; j++) acc += w[j] / sum * v[(size_t)ch * N + j];
        out[(size_t)b * C * N + (size_t)ch * N + i] = acc;
      }
    }
  }
  free(w);
}
static int attn_fwd(const op_case *c, float *const *in, float *out) {
  float *att = malloc((size_t)c->p[0] * c->p[2] * c->p[2] * sizeof(float));
  int rc = sde_nn_attention_forward(out, att, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2]);
  free(att);
  return rc;
}
static int attn_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  float *att = malloc((size_t)c->p[0] * c->p[2] * c->p[2] * sizeof(float));
  float *tmp = malloc(c->out_n * sizeof(float));
  int rc = sde_nn_attention_forward(tmp, att, in[0], in[1], in[2], c->p[0], c->p[1], c->p[2]);
  if (!rc)
    rc = sde_nn_attention_backward(d[0], d[1], d[2], g, att, in[0], in[1], in[2], c->p[0],
                                   c->p[1], c->p[2], NULL);
  free(att);
  free(tmp);
  return rc;
}

/* resampling: p = B, C, H, W */
static size_t planes(const op_case *c) { return (size_t)c->p[0] * c->p[1]; }
static void up_setup(op_case *c) {
  c->in_n[0] = planes(c) * c->p[2] * c->p[3];
  c->out_n = c->in_n[0] * 4;
}
static void down_setup(op_case *c) {
  c->in_n[0] = planes(c) * c->p[2] * c->p[3];
  c->out_n = c->in_n[0] / 4;
}
static void firup_ref(const op_case *c, double *const *in, double *out) {
  fir2d_ref(out, in[0], (int)planes(c), c->p[2], c->p[3], 2 * c->p[2], 2 * c->p[3], up1d);
}
static void firdown_ref(const op_case *c, double *const *in, double *out) {
  fir2d_ref(out, in[0], (int)planes(c), c->p[2], c->p[3], c->p[2] / 2, c->p[3] / 2, down1d);
}
static int firup_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_fir_upsample2x_forward(out, in[0], c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int firup_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_fir_upsample2x_backward(d[0], g, c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int firdown_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_fir_downsample2x_forward(out, in[0], c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int firdown_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_fir_downsample2x_backward(d[0], g, c->p[0], c->p[1], c->p[2], c->p[3]);
}
static void nearest_ref(const op_case *c, double *const *in, double *out) {
  int H = c->p[2], W = c->p[3];
  for (size_t p = 0; p < planes(c); p++)
    for (int i = 0; i < 2 * H; i++)
      for (int j = 0; j < 2 * W; j++)
        out[(p * 2 * H + i) * 2 * W + j] = in[0][(p * H + i / 2) * W + j / 2];
}
static void avgpool_ref(const op_case *c, double *const *in, double *out) {
  int H = c->p[2], W = c->p[3];
  for (size_t p = 0; p < planes(c); p++)
    for (int i = 0; i < H / 2; i++)
      for (int j = 0; j < W / 2; j++) {
        const double *x = in[0] + (p * H + 2 * i) * W + 2 * j;
        out[(p * (H / 2) + i) * (W / 2) + j] = (x[0] + x[1] + x[W] + x[W + 1]) / 4;
      }
}
static int nearest_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_upsample_nearest2x_forward(out, in[0], c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int nearest_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_upsample_nearest2x_backward(d[0], g, c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int avgpool_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_avgpool2x_forward(out, in[0], c->p[0], c->p[1], c->p[2], c->p[3]);
}
static int avgpool_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_avgpool2x_backward(d[0], g, c->p[0], c->p[1], c->p[2], c->p[3]);
}

/* FIR conv-downsample: p = B, Cin, H, W, Cout; tensors x, weight [Cout,Cin,3,3], bias */
static void convdown_setup(op_case *c) {
  int B = c->p[0], Ci = c->p[1], H = c->p[2], W = c->p[3], Co = c->p[4];
  c->in_n[0] = (size_t)B * Ci * H * W;
  c->in_n[1] = (size_t)Co * Ci * 9;
  c->in_n[2] = (size_t)Co;
  c->out_n = (size_t)B * Co * (H / 2) * (W / 2);
}
static void convdown_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], Ci = c->p[1], H = c->p[2], W = c->p[3], Co = c->p[4];
  double *blur = malloc((size_t)B * Ci * (H + 1) * (W + 1) * sizeof(double));
  fir2d_ref(blur, in[0], B * Ci, H, W, H + 1, W + 1, blur1d);
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H + 1, W + 1, Co, 3, 2, 0);
  conv2d_ref(out, blur, in[1], in[2], &s);
  free(blur);
}
static int convdown_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_fir_conv_downsample2x_forward(out, in[0], in[1], in[2], c->p[0], c->p[1],
                                              c->p[2], c->p[3], c->p[4], NULL);
}
static int convdown_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_fir_conv_downsample2x_backward(d[0], d[1], d[2], g, in[0], in[1], c->p[0],
                                               c->p[1], c->p[2], c->p[3], c->p[4], NULL);
}

/* Fourier embedding: p = B, E; tensors u [B], W [E] */
static void fourier_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0];
  c->in_n[1] = (size_t)c->p[1];
  c->out_n = (size_t)c->p[0] * 2 * c->p[1];
}
static void fourier_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], E = c->p[1];
  for (int b = 0; b < B; b++)
    for (int e = 0; e < E; e++) {
      double pr = in[0][b] * in[1][e] * 2 * M_PI;
      out[(size_t)b * 2 * E + e] = sin(pr);
      out[(size_t)b * 2 * E + E + e] = cos(pr);
    }
}
static int fourier_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_fourier_embedding_forward(out, in[0], in[1], c->p[0], c->p[1]);
}
static int fourier_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_fourier_embedding_backward(d[0], d[1], g, in[0], in[1], c->p[0], c->p[1]);
}

/* timestep embedding: p = B, dim; tensor t [B] */
static void temb_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0];
  c->out_n = (size_t)c->p[0] * c->p[1];
}
static void temb_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], dim = c->p[1], half = dim / 2;
  for (int b = 0; b < B; b++) {
    for (int k = 0; k < half; k++) {
      double a = in[0][b] * exp(-k * log(10000.0) / (half - 1));
      out[(size_t)b * dim + k] = sin(a);
      out[(size_t)b * dim + half + k] = cos(a);
    }
    if (dim % 2) out[(size_t)b * dim + dim - 1] = 0;
  }
}
static int temb_fwd(const op_case *c, float *const *in, float *out) {
  return sde_nn_timestep_embedding_forward(out, in[0], c->p[0], c->p[1]);
}
static int temb_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  return sde_nn_timestep_embedding_backward(d[0], g, in[0], c->p[0], c->p[1]);
}

/* add: p = n, scale·1000; tensors a, b */
static void add_setup(op_case *c) { c->in_n[0] = c->in_n[1] = c->out_n = (size_t)c->p[0]; }
static void add_ref(const op_case *c, double *const *in, double *out) {
  for (int i = 0; i < c->p[0]; i++) out[i] = (in[0][i] + in[1][i]) * (c->p[1] / 1000.0);
}
static int add_fwd(const op_case *c, float *const *in, float *out) {
  sde_nn_add_forward(out, in[0], in[1], c->p[1] / 1000.0f, (size_t)c->p[0]);
  return 0;
}
static int add_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  sde_nn_add_backward(d[0], d[1], g, c->p[1] / 1000.0f, (size_t)c->p[0]);
  return 0;
}

/* channel bias: p = B, C, HW; tensors x [B,C,HW], bias [B,C] */
static void cbias_setup(op_case *c) {
  c->in_n[0] = c->out_n = (size_t)c->p[0] * c->p[1] * c->p[2];
  c->in_n[1] = (size_t)c->p[0] * c->p[1];
}
static void cbias_ref(const op_case *c, double *const *in, double *out) {
  for (size_t i = 0; i < c->out_n; i++) out[i] = in[0][i] + in[1][i / c->p[2]];
}
static int cbias_fwd(const op_case *c, float *const *in, float *out) {
  memcpy(out, in[0], c->out_n * sizeof(float));
  sde_nn_add_channel_bias_forward(out, in[1], c->p[0], c->p[1], c->p[2]);
  return 0;
}
static int cbias_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  if (d[0]) sde_nn_accumulate(d[0], g, c->out_n);
  sde_nn_add_channel_bias_backward(d[1], g, c->p[0], c->p[1], c->p[2]);
  return 0;
}

/* concat: p = B, Ca, Cb, HW */
static void concat_setup(op_case *c) {
  c->in_n[0] = (size_t)c->p[0] * c->p[1] * c->p[3];
  c->in_n[1] = (size_t)c->p[0] * c->p[2] * c->p[3];
  c->out_n = c->in_n[0] + c->in_n[1];
}
static void concat_ref(const op_case *c, double *const *in, double *out) {
  int B = c->p[0], Ca = c->p[1], Cb = c->p[2], HW = c->p[3];
  for (int b = 0; b < B; b++)
    for (int ch = 0; ch < Ca + Cb; ch++)
      for (int q = 0; q < HW; q++)
        out[((size_t)b * (Ca + Cb) + ch) * HW + q] =
            ch < Ca ? in[0][((size_t)b * Ca + ch) * HW + q]
                    : in[1][((size_t)b * Cb + ch - Ca) * HW + q];
}
static int concat_fwd(const op_case *c, float *const *in, float *out) {
  sde_nn_concat_channels_forward(out, in[0], in[1], c->p[0], c->p[1], c->p[2], c->p[3]);
  return 0;
}
static int concat_bwd(const op_case *c, float *const *in, const float *g, float *const *d) {
  sde_nn_concat_channels_backward(d[0], d[1], g, c->p[0], c->p[1], c->p[2], c->p[3]);
  return 0;
}

static const op_kind OPS[] = {
    {"conv2d", 3, {0}, conv_setup, conv_ref, conv_fwd, conv_bwd, 1e-5},
    {"linear", 3, {0}, linear_setup, linear_ref, linear_fwd, linear_bwd, 1e-5},
    {"nin", 3, {0}, nin_setup, nin_ref, nin_fwd, nin_bwd, 1e-5},
    {"groupnorm", 3, {2, 1, 1}, gn_setup, gn_ref, gn_fwd, gn_bwd, 1e-5},
    {"groupnorm_silu", 3, {2, 1, 1}, gn_setup, gnsilu_ref, gnsilu_fwd, gnsilu_bwd, 1e-5},
    {"silu", 1, {4}, silu_setup, silu_ref, silu_fwd, silu_bwd, 1e-6},
    {"attention", 3, {2, 2, 1}, attn_setup, attn_ref, attn_fwd, attn_bwd, 1e-5},
    {"fir_up", 1, {0}, up_setup, firup_ref, firup_fwd, firup_bwd, 1e-6},
    {"fir_down", 1, {0}, down_setup, firdown_ref, firdown_fwd, firdown_bwd, 1e-6},
    {"fir_conv_down", 3, {0}, convdown_setup, convdown_ref, convdown_fwd, convdown_bwd, 1e-5},
    {"nearest_up", 1, {0}, up_setup, nearest_ref, nearest_fwd, nearest_bwd, 1e-7},
    {"avgpool", 1, {0}, down_setup, avgpool_ref, avgpool_fwd, avgpool_bwd, 1e-6},
    {"fourier", 2, {1, 3}, fourier_setup, fourier_ref, fourier_fwd, fourier_bwd, 1e-5},
    {"timestep", 1, {3}, temb_setup, temb_ref, temb_fwd, temb_bwd, 1e-5},
    {"add", 2, {0}, add_setup, add_ref, add_fwd, add_bwd, 1e-6},
    {"channel_bias", 2, {0}, cbias_setup, cbias_ref, cbias_fwd, cbias_bwd, 1e-6},
    {"concat", 2, {0}, concat_setup, concat_ref, concat_fwd, concat_bwd, 0},
};

static const op_kind *find_op(const char *name) {
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
    if (!strcmp(OPS[i].name, name)) return &OPS[i];
  return NULL;
}

static op_case make_case(const char *op, const int *p, int np) {
  op_case c;
  memset(&c, 0, sizeof c);
  c.k = find_op(op);
  memcpy(c.p, p, (size_t)np * sizeof(int));
  c.k->setup(&c);
  return c;
}

/* ---------------------------------------------------------------------------------------
 * (b) forward vs float64 reference, backward vs central differences of the reference */

static double loss_ref(const op_case *c, double *const *in, const double *r, double *out) {
  c->k->ref(c, in, out);
  double L = 0;
  for (size_t i = 0; i < c->out_n; i++) L += r[i] * out[i];
  return L;
}

static void check_case(const char *label, const op_case *c) {
  const op_kind *k = c->k;
  float *xf[MAXT] = {0}, *gf[MAXT] = {0};
  double *xd[MAXT] = {0};
  for (int t = 0; t < k->nin; t++) {
    xf[t] = rand_f(c->in_n[t], k->in_scale[t] > 0 ? k->in_scale[t] : 1.0f);
    xd[t] = to_d(xf[t], c->in_n[t]);
  }
  float *out = malloc(c->out_n * sizeof(float));
  double *outd = malloc(c->out_n * sizeof(double));
  int rc = k->fwd(c, xf, out);
  k->ref(c, xd, outd);
  double e = rel_err_fd(out, outd, c->out_n);
  TAP_CHECK(rc == 0 && e <= k->fwd_tol, "%s forward vs float64 reference: rel err %.3g (rc %d)",
            label, e, rc);
  if (k->bwd) {
    float *r = rand_f(c->out_n, 1.0f);
    double *rd = to_d(r, c->out_n);
    for (int t = 0; t < k->nin; t++) gf[t] = fill_f(c->in_n[t], 0.5f); /* backward adds */
    rc = k->bwd(c, xf, r, gf);
    TAP_CHECK(rc == 0, "%s backward rc %d %s", label, rc, rc ? sde_errmsg() : "");
    for (int t = 0; t < k->nin; t++) {
      size_t n = c->in_n[t], m = n <= 48 ? n : 48;
      float *an = malloc(m * sizeof(float));
      double *nu = malloc(m * sizeof(double));
      for (size_t s = 0; s < m; s++) {
        size_t j = n <= 48 ? s : (size_t)(urand() * n);
        double x0 = xd[t][j], h = 1e-5 * fmax(1.0, fabs(x0));
        xd[t][j] = x0 + h;
        double Lp = loss_ref(c, xd, rd, outd);
        xd[t][j] = x0 - h;
        double Lm = loss_ref(c, xd, rd, outd);
        xd[t][j] = x0;
        nu[s] = (Lp - Lm) / (2 * h);
        an[s] = gf[t][j] - 0.5f;
      }
      e = rel_err_fd(an, nu, m);
      TAP_CHECK(e < 1e-3, "%s backward tensor %d vs central differences: rel err %.3g", label, t,
                e);
      free(an);
      free(nu);
    }
    free(r);
    free(rd);
  }
  for (int t = 0; t < k->nin; t++) {
    free(xf[t]);
    free(xd[t]);
    free(gf[t]);
  }
  free(out);
  free(outd);
}

static void test_gradients(void) {
  struct {
    const char *label, *op;
    int p[12];
  } cases[] = {
      {"conv2d 3x3 pad1", "conv2d", {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1}},
      {"conv2d 1x1", "conv2d", {2, 5, 4, 3, 3, 1, 1, 1, 0, 0, 0, 0}},
      {"conv2d 3x3 stride2 pad0", "conv2d", {1, 3, 7, 9, 2, 3, 3, 2, 0, 0, 0, 0}},
      {"conv2d 3x3 stride2 pad(0,1,0,1)", "conv2d", {2, 2, 6, 6, 3, 3, 3, 2, 0, 1, 0, 1}},
      {"conv2d 3x2 stride1 pad(1,0,2,1)", "conv2d", {1, 2, 4, 5, 3, 3, 2, 1, 1, 0, 2, 1}},
      {"conv2d 3x3 stride2 pad1", "conv2d", {1, 2, 5, 6, 2, 3, 3, 2, 1, 1, 1, 1}},
      {"linear", "linear", {3, 7, 5}},
      {"nin", "nin", {2, 6, 10, 4}},
      {"groupnorm G=2", "groupnorm", {2, 8, 6, 2}},
      {"groupnorm G=min(C/4,32)", "groupnorm", {1, 12, 5, 3}},
      {"groupnorm_silu", "groupnorm_silu", {2, 8, 6, 4}},
      {"groupnorm_silu HW 37 (vector tails)", "groupnorm_silu", {2, 8, 37, 2}},
      {"silu", "silu", {50}},
      {"attention", "attention", {2, 5, 7}},
      {"fir_up", "fir_up", {1, 2, 3, 4}},
      {"fir_down", "fir_down", {1, 2, 6, 4}},
      {"fir_conv_down", "fir_conv_down", {2, 2, 4, 6, 3}},
      {"nearest_up", "nearest_up", {1, 2, 3, 2}},
      {"avgpool", "avgpool", {2, 1, 4, 6}},
      {"fourier", "fourier", {3, 5}},
      {"timestep dim 8", "timestep", {3, 8}},
      {"timestep dim 9", "timestep", {2, 9}},
      {"add scaled", "add", {30, 707}},
      {"channel_bias", "channel_bias", {2, 3, 5}},
      {"concat", "concat", {2, 2, 3, 4}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    op_case c = make_case(cases[i].op, cases[i].p, 12);
    check_case(cases[i].label, &c);
  }
}

/* A conv big enough that the im2col matrix is built in several bands of rows. */
static void test_conv_chunked(void) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(2, 256, 66, 66, 3, 3, 1, 0);
  int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  size_t nx = (size_t)2 * 256 * 66 * 66, nw = (size_t)3 * 256 * 9, ny = (size_t)2 * 3 * Ho * Wo;
  TAP_CHECK(sde_nn_conv2d_scratch_floats(&s) < (size_t)256 * 9 * Ho * Wo,
            "conv2d chunked: scratch %zu floats is less than the full im2col matrix",
            sde_nn_conv2d_scratch_floats(&s));
  float *x = rand_f(nx, 1), *w = rand_f(nw, 0.05f), *b = rand_f(3, 1), *g = rand_f(ny, 1);
  double *xd = to_d(x, nx), *wd = to_d(w, nw), *bd = to_d(b, 3), *gd = to_d(g, ny);
  float *y = malloc(ny * sizeof(float)), *dx = fill_f(nx, 0), *dw = fill_f(nw, 0),
        *db = fill_f(3, 0);
  double *yd = malloc(ny * sizeof(double)), *dxd = calloc(nx, sizeof(double)),
         *dwd = calloc(nw, sizeof(double)), dbd[3] = {0};
  int rc = sde_nn_conv2d_forward(y, x, w, b, &s, NULL);
  conv2d_ref(yd, xd, wd, bd, &s);
  TAP_CHECK(rc == 0 && rel_err_fd(y, yd, ny) < 1e-5, "conv2d chunked forward: rel err %.3g",
            rel_err_fd(y, yd, ny));
  rc = sde_nn_conv2d_backward(dx, dw, db, g, x, w, &s, NULL);
  conv2d_ref_backward(dxd, dwd, dbd, gd, xd, wd, &s);
  TAP_CHECK(rc == 0 && rel_err_fd(dx, dxd, nx) < 1e-5, "conv2d chunked dinp: rel err %.3g",
            rel_err_fd(dx, dxd, nx));
  TAP_CHECK(rel_err_fd(dw, dwd, nw) < 1e-5, "conv2d chunked dweight: rel err %.3g",
            rel_err_fd(dw, dwd, nw));
  TAP_CHECK(rel_err_fd(db, dbd, 3) < 1e-5, "conv2d chunked dbias: rel err %.3g",
            rel_err_fd(db, dbd, 3));
  free(x), free(w), free(b), free(g), free(xd), free(wd), free(bd), free(gd);
  free(y), free(dx), free(dw), free(db), free(yd), free(dxd), free(dwd);
}

/* ---------------------------------------------------------------------------------------
 * (a) hand-derived cases */

static int near_all(const float *a, const double *b, size_t n, double tol) {
  for (size_t i = 0; i < n; i++)
    if (!(fabs(a[i] - b[i]) <= tol)) return 0;
  return 1;
}

/* x[i][j] = r[i]·c[j] so every separable op gives (op r)[i]·(op c)[j] */
static void outer(float *x, const float *r, int H, const float *c, int W) {
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) x[i * W + j] = r[i] * c[j];
}
static void outer_d(double *x, const double *r, int H, const double *c, int W) {
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) x[i * W + j] = r[i] * c[j];
}

static void test_hand_fir(void) {
  float x[64], y[256];
  double e[256];
  /* upsample: ramp [1,2,3,4] down the rows, ones [1,1,1] along the columns */
  {
    const float r[4] = {1, 2, 3, 4}, c[3] = {1, 1, 1};
    const double ry[8] = {0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 3.0};
    const double cy[6] = {0.75, 1, 1, 1, 1, 0.75}; /* borders lose a quarter */
    outer(x, r, 4, c, 3);
    outer_d(e, ry, 8, cy, 6);
    int rc = sde_nn_fir_upsample2x_forward(y, x, 1, 1, 4, 3);
    TAP_CHECK(rc == 0 && near_all(y, e, 48, 1e-6), "fir upsample: ramp x ones, borders");
  }
  /* upsample of an impulse at the corner: [1,0,0] -> [.75,.75,.25,0,0,0] */
  {
    const float r[3] = {1, 0, 0}, c[2] = {0, 1};
    const double ry[6] = {0.75, 0.75, 0.25, 0, 0, 0}, cy[4] = {0, 0.25, 0.75, 0.75};
    outer(x, r, 3, c, 2);
    outer_d(e, ry, 6, cy, 4);
    int rc = sde_nn_fir_upsample2x_forward(y, x, 1, 1, 3, 2);
    TAP_CHECK(rc == 0 && near_all(y, e, 24, 1e-7), "fir upsample: impulse at both borders");
  }
  /* downsample: ramp 1..8 along rows -> [1.5, 3.5, 5.5, 6.375]; ones(4) -> [7/8, 7/8] */
  {
    const float r[8] = {1, 2, 3, 4, 5, 6, 7, 8}, c[4] = {1, 1, 1, 1};
    const double ry[4] = {1.5, 3.5, 5.5, 6.375}, cy[2] = {0.875, 0.875};
    outer(x, r, 8, c, 4);
    outer_d(e, ry, 4, cy, 2);
    int rc = sde_nn_fir_downsample2x_forward(y, x, 1, 1, 8, 4);
    TAP_CHECK(rc == 0 && near_all(y, e, 8, 1e-6), "fir downsample: ramp x ones, borders");
  }
  /* downsample of an impulse at (2,3) in 6x8: rows [1/8,3/8,0], cols [0,3/8,1/8,0] */
  {
    float r[6] = {0, 0, 1, 0, 0, 0}, c[8] = {0, 0, 0, 1, 0, 0, 0, 0};
    const double ry[3] = {0.125, 0.375, 0}, cy[4] = {0, 0.375, 0.125, 0};
    outer(x, r, 6, c, 8);
    outer_d(e, ry, 3, cy, 4);
    int rc = sde_nn_fir_downsample2x_forward(y, x, 1, 1, 6, 8);
    TAP_CHECK(rc == 0 && near_all(y, e, 12, 1e-7), "fir downsample: impulse");
  }
  /* conv-downsample with a centre-tap 3x3 weight equals the plain FIR downsample;
   * with the (0,0) tap: y[i] = b[2i] = (x[2i−2] + 3x[2i−1] + 3x[2i] + x[2i+1])/8 */
  {
    const float r[4] = {1, 2, 3, 4}, c[4] = {1, 1, 1, 1};
    float w[9] = {0}, y2[4];
    outer(x, r, 4, c, 4);
    w[4] = 1;
    int rc = sde_nn_fir_conv_downsample2x_forward(y, x, w, NULL, 1, 1, 4, 4, 1, NULL);
    rc |= sde_nn_fir_downsample2x_forward(y2, x, 1, 1, 4, 4);
    TAP_CHECK(rc == 0 && max_abs_diff(y, y2, 4) < 1e-6,
              "fir conv-downsample with centre tap == fir downsample");
    const double ry[2] = {0.625, 2.5}, cy[2] = {0.5, 1.0};
    w[4] = 0;
    w[0] = 1;
    float bias = 0.25f;
    outer_d(e, ry, 2, cy, 2);
    for (int i = 0; i < 4; i++) e[i] += 0.25;
    rc = sde_nn_fir_conv_downsample2x_forward(y, x, w, &bias, 1, 1, 4, 4, 1, NULL);
    TAP_CHECK(rc == 0 && near_all(y, e, 4, 1e-6), "fir conv-downsample: pad-2 blur borders + bias");
  }
  /* nearest and average pooling */
  {
    const float a[4] = {1, 2, 3, 4};
    const double up[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    int rc = sde_nn_upsample_nearest2x_forward(y, a, 1, 1, 2, 2);
    TAP_CHECK(rc == 0 && near_all(y, up, 16, 0), "nearest upsample 2x2 -> 4x4");
    float z[16];
    for (int i = 0; i < 16; i++) z[i] = (float)i;
    const double pooled[4] = {2.5, 4.5, 10.5, 12.5};
    rc = sde_nn_avgpool2x_forward(y, z, 1, 1, 4, 4);
    TAP_CHECK(rc == 0 && near_all(y, pooled, 4, 0), "avgpool 4x4 -> 2x2");
  }
  /* argument checks */
  TAP_CHECK(sde_nn_fir_downsample2x_forward(y, x, 1, 1, 5, 4) == SDE_EINVAL,
            "fir downsample rejects odd height");
  sde_nn_conv2d_shape bad = sde_nn_conv2d_shape_make(1, 1, 2, 2, 1, 5, 1, 0);
  TAP_CHECK(sde_nn_conv2d_forward(y, x, x, NULL, &bad, NULL) == SDE_EINVAL,
            "conv2d rejects a kernel larger than the padded input");
}

static void test_hand_embeddings(void) {
  /* sinusoidal, dim 6: half 3, freqs 1, 1e-2, 1e-4; dim 7 adds one zero column */
  float t[2] = {2.0f, 0.0f}, out[14];
  int rc = sde_nn_timestep_embedding_forward(out, t, 2, 7);
  double e7[14] = {sin(2.0), sin(0.02), sin(2e-4), cos(2.0), cos(0.02), cos(2e-4), 0,
                   0,        0,         0,         1,        1,         1,         0};
  TAP_CHECK(rc == 0 && near_all(out, e7, 14, 2e-7), "timestep embedding t=2,0 dim 7 (zero pad)");
  float t999 = 999.0f * 0.5f, o128[128];
  rc = sde_nn_timestep_embedding_forward(o128, &t999, 1, 128);
  double worst = 0;
  for (int k = 0; k < 64; k++) {
    double a = 499.5 * exp(-k * log(10000.0) / 63);
    worst = fmax(worst, fmax(fabs(o128[k] - sin(a)), fabs(o128[64 + k] - cos(a))));
  }
  TAP_CHECK(rc == 0 && worst < 1e-4, "timestep embedding of 999*0.5, dim 128: max err %.3g",
            worst);
  TAP_CHECK(sde_nn_timestep_embedding_forward(out, t, 1, 3) == SDE_EINVAL,
            "timestep embedding rejects dim < 4");
  /* Fourier: W = [0.5, -0.25], u = 1 -> proj [π, −π/2] -> [0, −1, −1, 0] */
  float W[2] = {0.5f, -0.25f}, u = 1.0f, f[4];
  const double ef[4] = {0, -1, -1, 0};
  rc = sde_nn_fourier_embedding_forward(f, &u, W, 1, 2);
  TAP_CHECK(rc == 0 && near_all(f, ef, 4, 1e-6), "fourier embedding at known input");
  /* u = ln σ for σ in {0.01, 1, 50} with W ~ 16·N(0,1)-like values */
  float Wb[3] = {16.0f, -7.5f, 30.25f}, us[3] = {logf(0.01f), 0.0f, logf(50.0f)}, fb[18];
  rc = sde_nn_fourier_embedding_forward(fb, us, Wb, 3, 3);
  worst = 0;
  for (int b = 0; b < 3; b++)
    for (int k = 0; k < 3; k++) {
      double pr = (double)(us[b] * Wb[k] * 2.0f * (float)M_PI);
      worst = fmax(worst, fabs(fb[b * 6 + k] - sin(pr)) + fabs(fb[b * 6 + 3 + k] - cos(pr)));
    }
  TAP_CHECK(rc == 0 && worst < 1e-6 && fb[6 + 3] == 1.0f,
            "fourier embedding of ln sigma, sigma in {0.01,1,50}: err %.3g", worst);
  const int C[] = {16, 32, 48, 96, 128, 256, 512, 4}, G[] = {4, 8, 12, 24, 32, 32, 32, 1};
  int ok = 1;
  for (int i = 0; i < 8; i++) ok &= sde_nn_groupnorm_groups(C[i]) == G[i];
  TAP_CHECK(ok, "groupnorm group count min(C/4, 32)");
}

/* The fused GroupNorm+SiLU backward against SiLU backward then GroupNorm backward (what it
 * replaced in training) on network-sized groups. Not bit-identical: the vector path's sigmoid
 * is rcp14 + a Newton step (<= 2 ulp from the division), its row sums run in float over
 * blocks of 16 terms a lane before double, and both paths form the group sums from the row
 * sums (Σ_c gamma_c·Σ_p dy, not Σ dy·gamma per element); dgamma, dbeta sum per row then over
 * the batch. Each moves results by a few float ulp (measured <= 2e-7 relative to the largest
 * entry): 1e-6 relative, ~8 ulp. */
static void test_gnsilu_fused(void) {
  const int shapes[3][4] = {{4, 64, 256, 16}, {2, 32, 1024, 8}, {3, 16, 49, 4}};
  for (int i = 0; i < 3; i++) {
    const int B = shapes[i][0], C = shapes[i][1], HW = shapes[i][2], G = shapes[i][3];
    const size_t n = (size_t)B * C * HW;
    float *x = rand_f(n, 2), *ga = rand_f(C, 1.5f), *be = rand_f(C, 1), *da = rand_f(n, 1);
    float *y = malloc(n * sizeof(float)), *mean = malloc(B * G * sizeof(float)),
          *rstd = malloc(B * G * sizeof(float)), *dg = fill_f(n, 0);
    float *dx0 = rand_f(n, 1), *dga0 = rand_f(C, 1), *dbe0 = rand_f(C, 1); /* both add */
    float *dx1 = malloc(n * sizeof(float)), *dga1 = malloc(C * sizeof(float)),
          *dbe1 = malloc(C * sizeof(float));
    memcpy(dx1, dx0, n * sizeof(float));
    memcpy(dga1, dga0, C * sizeof(float));
    memcpy(dbe1, dbe0, C * sizeof(float));
    int rc = sde_nn_groupnorm_forward(y, mean, rstd, x, ga, be, B, C, HW, G,
                                      SDE_NN_GROUPNORM_EPS);
    sde_nn_silu_backward(dg, da, y, n);
    rc |= sde_nn_groupnorm_backward(dx0, dga0, dbe0, dg, x, mean, rstd, ga, B, C, HW, G);
    rc |= sde_nn_groupnorm_silu_backward(dx1, dga1, dbe1, da, x, mean, rstd, ga, be, B, C, HW, G);
    const double ex = rel_err_ff(dx1, dx0, n), eg = rel_err_ff(dga1, dga0, C),
                 eb = rel_err_ff(dbe1, dbe0, C);
    TAP_CHECK(rc == 0 && ex <= 1e-6 && eg <= 1e-6 && eb <= 1e-6,
              "groupnorm_silu_backward B%d C%d HW%d G%d vs silu+groupnorm backward: dinp rel %.3g, "
              "dgamma rel %.3g, dbeta rel %.3g", B, C, HW, G, ex, eg, eb);
    free(x), free(ga), free(be), free(da), free(y), free(mean), free(rstd), free(dg);
    free(dx0), free(dga0), free(dbe0), free(dx1), free(dga1), free(dbe1);
  }
}

/* groupnorm_silu_backward_store: dinp as the add onto zeros, dsum as add_channel_bias_backward's
 * sums of it onto zeros, dgamma/dbeta added as before; bit for bit, at 1 and 3 threads, on the
 * vector path and the scalar one (SDE_NN_NO_DIRECT_CONV, read per call) */
static void test_gnsilu_store(void) {
  const int B = 3, C = 16, HW = 49, G = 4;
  const size_t n = (size_t)B * C * HW;
  float *x = rand_f(n, 2), *ga = rand_f(C, 1.5f), *be = rand_f(C, 1), *da = rand_f(n, 1);
  float *y = malloc(n * sizeof(float)), *mean = malloc(B * G * sizeof(float));
  float *rstd = malloc(B * G * sizeof(float)), *dga0 = rand_f(C, 1), *dbe0 = rand_f(C, 1);
  float *dx[2], *ds[2], *dga[2], *dbe[2];
  int rc = sde_nn_groupnorm_silu_forward_train(y, mean, rstd, x, ga, be, B, C, HW, G,
                                               SDE_NN_GROUPNORM_EPS);
  const int nt = sde_get_num_threads();
  int same = 1;
  for (int path = 0; path < 2; path++) {
    if (path) setenv("SDE_NN_NO_DIRECT_CONV", "1", 1);
    for (int threads = 1; threads <= 3; threads += 2) {
      sde_set_num_threads(threads);
      for (int k = 0; k < 2; k++) {
        dx[k] = k ? rand_f(n, 1) : fill_f(n, 0); /* k = 1: garbage to overwrite */
        ds[k] = k ? rand_f((size_t)B * C, 1) : fill_f((size_t)B * C, 0);
        dga[k] = malloc(C * sizeof(float)), dbe[k] = malloc(C * sizeof(float));
        memcpy(dga[k], dga0, C * sizeof(float)), memcpy(dbe[k], dbe0, C * sizeof(float));
      }
      rc |= sde_nn_groupnorm_silu_backward(dx[0], dga[0], dbe[0], da, x, mean, rstd, ga, be, B, C,
                                           HW, G);
      sde_nn_add_channel_bias_backward(ds[0], dx[0], B, C, HW);
      rc |= sde_nn_groupnorm_silu_backward_store(dx[1], dga[1], dbe[1], ds[1], da, x, mean, rstd,
                                                 ga, be, B, C, HW, G);
      same &= !memcmp(dx[0], dx[1], n * sizeof(float)) &&
              !memcmp(ds[0], ds[1], (size_t)B * C * sizeof(float)) &&
              !memcmp(dga[0], dga[1], C * sizeof(float)) && !memcmp(dbe[0], dbe[1], C * sizeof(float));
      for (int k = 0; k < 2; k++) free(dx[k]), free(ds[k]), free(dga[k]), free(dbe[k]);
    }
    unsetenv("SDE_NN_NO_DIRECT_CONV");
  }
  sde_set_num_threads(nt);
  TAP_CHECK(rc == 0 && same, "groupnorm_silu_backward_store = the add onto zeros and "
            "add_channel_bias_backward's sums, bit for bit (vector and scalar paths, 1/3 threads)");
  free(x), free(ga), free(be), free(da), free(y), free(mean), free(rstd), free(dga0), free(dbe0);
}

/* ---------------------------------------------------------------------------------------
 * (c) bit-identical results for 1 and 2 threads */

typedef struct {
  float *buf[32];
  size_t n[32];
  int count;
} outputs;

static void run_det(outputs *o) {
  uint64_t saved = rng_state;
  rng_state = 12345;
  o->count = 0;
#define KEEP(p, len) (o->buf[o->count] = (p), o->n[o->count] = (len), o->count++)
  /* conv 3x3 (tiled GEMMs), stride-2, 1x1 */
  const int convs[4][12] = {{2, 32, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1},
                            {1, 64, 16, 16, 48, 3, 3, 2, 0, 1, 0, 1},
                            {2, 48, 16, 16, 96, 1, 1, 1, 0, 0, 0, 0},
                            {8, 128, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1}};
  for (int i = 0; i < 4; i++) {
    op_case c = make_case("conv2d", convs[i], 12);
    float *x = rand_f(c.in_n[0], 1), *w = rand_f(c.in_n[1], 0.1f), *b = rand_f(c.in_n[2], 1);
    float *y = malloc(c.out_n * sizeof(float)), *g = rand_f(c.out_n, 1);
    float *dx = fill_f(c.in_n[0], 0), *dw = fill_f(c.in_n[1], 0), *db = fill_f(c.in_n[2], 0);
    sde_nn_conv2d_forward(y, x, w, b, &c.cs, NULL);
    sde_nn_conv2d_backward(dx, dw, db, g, x, w, &c.cs, NULL);
    KEEP(y, c.out_n), KEEP(dx, c.in_n[0]), KEEP(dw, c.in_n[1]);
    free(x), free(w), free(b), free(g), free(db);
  }
  {
    int B = 1, C = 64, N = 256;
    size_t n = (size_t)B * C * N;
    float *q = rand_f(n, 1), *k = rand_f(n, 1), *v = rand_f(n, 1), *g = rand_f(n, 1);
    float *y = malloc(n * sizeof(float)), *att = malloc((size_t)N * N * sizeof(float));
    float *dq = fill_f(n, 0), *dk = fill_f(n, 0), *dv = fill_f(n, 0);
    sde_nn_attention_forward(y, att, q, k, v, B, C, N);
    sde_nn_attention_backward(dq, dk, dv, g, att, q, k, v, B, C, N, NULL);
    KEEP(y, n), KEEP(dq, n);
    free(q), free(k), free(v), free(g), free(att), free(dk), free(dv);
  }
  {
    int B = 2, C = 64, HW = 256, G = 32;
    size_t n = (size_t)B * C * HW;
    float *x = rand_f(n, 1), *ga = rand_f(C, 1), *be = rand_f(C, 1), *g = rand_f(n, 1);
    float *y = malloc(n * sizeof(float)), mean[64], rstd[64];
    float *dx = fill_f(n, 0), *dga = fill_f(C, 0);
    sde_nn_groupnorm_forward(y, mean, rstd, x, ga, be, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
    sde_nn_groupnorm_backward(dx, dga, NULL, g, x, mean, rstd, ga, B, C, HW, G);
    KEEP(y, n), KEEP(dx, n), KEEP(dga, (size_t)C);
    free(x), free(ga), free(be), free(g);
  }
  {
    int B = 3, C = 64, HW = 100, G = 16; /* vector tails; 3 rows per channel */
    size_t n = (size_t)B * C * HW;
    float *x = rand_f(n, 1), *ga = rand_f(C, 1), *be = rand_f(C, 1), *g = rand_f(n, 1);
    float *y = malloc(n * sizeof(float)), mean[48], rstd[48];
    float *dx = fill_f(n, 0), *dga = fill_f(C, 0), *dbe = fill_f(C, 0);
    sde_nn_groupnorm_forward(y, mean, rstd, x, ga, be, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
    sde_nn_groupnorm_silu_backward(dx, dga, dbe, g, x, mean, rstd, ga, be, B, C, HW, G);
    KEEP(dx, n), KEEP(dga, (size_t)C), KEEP(dbe, (size_t)C);
    free(x), free(ga), free(be), free(g), free(y);
  }
  {
    int B = 4, I = 512, O = 512;
    float *x = rand_f((size_t)B * I, 1), *w = rand_f((size_t)O * I, 0.05f), *g = rand_f((size_t)B * O, 1);
    float *y = malloc((size_t)B * O * sizeof(float)), *dw = fill_f((size_t)O * I, 0);
    sde_nn_linear_forward(y, x, w, NULL, B, I, O);
    sde_nn_linear_backward(NULL, dw, NULL, g, x, w, B, I, O);
    KEEP(y, (size_t)B * O), KEEP(dw, (size_t)O * I);
    free(x), free(w), free(g);
  }
  {
    int B = 2, C = 16, H = 32, W = 32;
    size_t n = (size_t)B * C * H * W;
    float *x = rand_f(n, 1), *up = malloc(4 * n * sizeof(float));
    float *dn = malloc(n / 4 * sizeof(float)), *dx = fill_f(n, 0);
    sde_nn_fir_upsample2x_forward(up, x, B, C, H, W);
    sde_nn_fir_downsample2x_forward(dn, x, B, C, H, W);
    sde_nn_fir_upsample2x_backward(dx, up, B, C, H, W);
    KEEP(up, 4 * n), KEEP(dn, n / 4), KEEP(dx, n);
    free(x);
  }
#undef KEEP
  rng_state = saved;
}

static void test_determinism(void) {
  outputs one, two;
  sde_set_num_threads(1);
  run_det(&one);
  sde_set_num_threads(2);
  run_det(&two);
  int same = one.count == two.count;
  for (int i = 0; same && i < one.count; i++) {
    if (memcmp(one.buf[i], two.buf[i], one.n[i] * sizeof(float))) {
      same = 0;
      TAP_DIAG("output %d differs between 1 and 2 threads (max diff %.3g)", i,
               max_abs_diff(one.buf[i], two.buf[i], one.n[i]));
    }
  }
  TAP_CHECK(same && one.count <= 32,
            "conv2d/attention/groupnorm/linear/FIR: 1 and 2 threads bit-identical (%d tensors)",
            one.count);
  for (int i = 0; i < one.count; i++) free(one.buf[i]);
  for (int i = 0; i < two.count; i++) free(two.buf[i]);
}

/* ---------------------------------------------------------------------------------------
 * (d) the vector paths of GroupNorm and SiLU (ops_norm.c: AVX-512, or AVX2 + FMA on CPUs
 * without AVX-512F and under SDE_NN_ISA=avx2, the nn_ops_avx2 test) against the scalar
 * loops, which SDE_NN_NO_DIRECT_CONV=1 selects (ops_norm.c reads it on every call). Not
 * bit-identical: the vector exp (Cody-Waite + degree-6 polynomial, <= 1 float eps from e^x)
 * is not libm's expf, the double sums run in 16 lanes, and the fused backward forms its row
 * sums in float blocks (and on AVX-512 its sigmoid by rcp14 + a Newton step). Asserted: every
 * output within 1e-6 relative (GroupNorm: of the tensor's largest entry; SiLU forward: of
 * each entry, entries below 1e-20 taken as 1e-20) over odd plane sizes (1x1, 5x5, 3x7, 17x17,
 * 300) and |y| up to ~1e4; SiLU at ±87.3, ±88.7, ±100, ±1e4 finite; the vector results
 * bit-identical for 1, 2 and 3 threads. Skipped without a vector path. */

static void set_scalar_norm(int on) {
  if (on)
    setenv("SDE_NN_NO_DIRECT_CONV", "1", 1);
  else
    unsetenv("SDE_NN_NO_DIRECT_CONV");
}

typedef struct {
  int B, C, HW, G;
  float gscale, bscale; /* gamma, beta uniform in ±scale */
} norm_case;

/* GroupNorm forward (y, mean, rstd), GroupNorm+SiLU forward, GroupNorm backward and the fused
 * GroupNorm+SiLU backward (dinp, dgamma, dbeta onto random values) of one case; the same
 * inputs on every call */
static int norm_train_mismatch; /* run_norm_case: the training forward differed */
static void run_norm_case(const norm_case *k, outputs *o) {
  uint64_t saved = rng_state;
  rng_state = 777;
  const int B = k->B, C = k->C, HW = k->HW, G = k->G, BG = B * G;
  const size_t n = (size_t)B * C * HW;
  float *x = rand_f(n, 3), *ga = rand_f(C, k->gscale), *be = rand_f(C, k->bscale);
  float *g = rand_f(n, 1);
  for (size_t i = 0; i < n; i++) x[i] += 20.0f; /* an offset the variance must cancel */
  float *y = malloc(n * sizeof(float)), *ys = malloc(n * sizeof(float));
  float *mean = malloc(BG * sizeof(float)), *rstd = malloc(BG * sizeof(float));
  float *dx = rand_f(n, 1), *dga = rand_f(C, 1), *dbe = rand_f(C, 1);
  float *dxf = rand_f(n, 1), *dgaf = rand_f(C, 1), *dbef = rand_f(C, 1);
  int rc = sde_nn_groupnorm_forward(y, mean, rstd, x, ga, be, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
  rc |= sde_nn_groupnorm_silu_forward(ys, x, ga, be, B, C, HW, G, SDE_NN_GROUPNORM_EPS);
  { /* the training forward: the same silu(y) and statistics, bit for bit */
    float *yt = malloc(n * sizeof(float)), *mt = malloc(BG * sizeof(float)),
          *rt = malloc(BG * sizeof(float));
    rc |= sde_nn_groupnorm_silu_forward_train(yt, mt, rt, x, ga, be, B, C, HW, G,
                                              SDE_NN_GROUPNORM_EPS);
    norm_train_mismatch += memcmp(yt, ys, n * sizeof(float)) != 0 ||
                           memcmp(mt, mean, BG * sizeof(float)) != 0 ||
                           memcmp(rt, rstd, BG * sizeof(float)) != 0;
    free(yt), free(mt), free(rt);
  }
  rc |= sde_nn_groupnorm_backward(dx, dga, dbe, g, x, mean, rstd, ga, B, C, HW, G);
  rc |= sde_nn_groupnorm_silu_backward(dxf, dgaf, dbef, g, x, mean, rstd, ga, be, B, C, HW, G);
  if (rc) TAP_DIAG("groupnorm case B%d C%d HW%d G%d: rc %d", B, C, HW, G, rc);
  o->count = 0;
#define KEEP(p, len) (o->buf[o->count] = (p), o->n[o->count] = (len), o->count++)
  KEEP(y, n), KEEP(mean, (size_t)BG), KEEP(rstd, (size_t)BG), KEEP(ys, n);
  KEEP(dx, n), KEEP(dga, (size_t)C), KEEP(dbe, (size_t)C);
  KEEP(dxf, n), KEEP(dgaf, (size_t)C), KEEP(dbef, (size_t)C);
#undef KEEP
  free(x), free(ga), free(be), free(g);
  rng_state = saved;
}

static void free_outputs(outputs *o) {
  for (int i = 0; i < o->count; i++) free(o->buf[i]);
  o->count = 0;
}

/* o[0..2]: the vector path at 1, 2, 3 threads, *s: the scalar loops; returns whether o[1],
 * o[2] are bit-identical to o[0] */
static int vec_and_scalar(void (*run)(const void *, outputs *), const void *arg, outputs o[3],
                          outputs *s) {
  const int nt = sde_get_num_threads();
  int same = 1;
  for (int t = 0; t < 3; t++) { /* the vector path first: the CPU checks cache their answer */
    sde_set_num_threads(t + 1);
    run(arg, &o[t]);
    for (int i = 0; t && i < o[0].count; i++)
      same &= !memcmp(o[t].buf[i], o[0].buf[i], o[0].n[i] * sizeof(float));
  }
  set_scalar_norm(1);
  run(arg, s);
  set_scalar_norm(0);
  sde_set_num_threads(nt);
  return same;
}

static void run_norm_case_v(const void *k, outputs *o) { run_norm_case(k, o); }

/* SiLU forward and backward (onto random values) of n values: random in ±10 and, at the
 * start, ±87.3, ±88.7, ±100, ±1e4, 0 */
static void run_silu_case(const void *pn, outputs *o) {
  uint64_t saved = rng_state;
  rng_state = 4242;
  const size_t n = *(const size_t *)pn;
  static const float special[] = {-87.3f, 87.3f, -88.7f, 88.7f, -100, 100, -1e4f, 1e4f, 0};
  float *x = rand_f(n, 10), *g = rand_f(n, 1), *y = malloc(n * sizeof(float));
  float *dx = rand_f(n, 1);
  for (size_t i = 0; i < n && i < sizeof special / sizeof special[0]; i++) x[i] = special[i];
  sde_nn_silu_forward(y, x, n);
  sde_nn_silu_backward(dx, g, x, n);
  o->count = 0;
  o->buf[o->count] = y, o->n[o->count++] = n;
  o->buf[o->count] = dx, o->n[o->count++] = n;
  free(x), free(g);
  rng_state = saved;
}

static void test_norm_vector_paths(void) {
  const char *name = sde_cpu_kernels(); /* checked against the CPU by test_cli */
  if (!strcmp(name, "portable")) {
    TAP_DIAG("GroupNorm/SiLU vector paths vs scalar: skipped (no AVX2/AVX-512 path, or "
             "SDE_NN_NO_DIRECT_CONV set)");
    return;
  }
  static const char *const what[10] = {"y", "mean", "rstd", "silu(y)", "dinp", "dgamma",
                                       "dbeta", "fused dinp", "fused dgamma", "fused dbeta"};
  const norm_case cases[] = {
      {2, 8, 25, 2, 1.5f, 1},     /* 5x5 */
      {3, 4, 1, 1, 1.5f, 1},      /* 1x1: groups of 4 values, no full vector */
      {2, 6, 21, 3, 1.5f, 1},     /* 3x7 */
      {2, 8, 25, 2, 1e4f, 100},   /* |y| up to ~2e4: exp clamped, sigmoid saturated */
      {2, 64, 64, 32, 1.5f, 1},   /* 8x8, the network's group size */
      {1, 16, 300, 4, 1.5f, 1},   /* rows over one 256-value block, tails */
      {3, 32, 289, 8, 1.5f, 1},   /* 17x17, parallel (24 groups) */
      {2, 32, 1024, 8, 2.0f, 1},  /* 32x32 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const norm_case *k = &cases[i];
    outputs o[3], s;
    const int same = vec_and_scalar(run_norm_case_v, k, o, &s);
    double worst = 0;
    int wi = 0, finite = 1;
    for (int t = 0; t < o[0].count; t++) {
      const double e = rel_err_ff(o[0].buf[t], s.buf[t], o[0].n[t]);
      for (size_t q = 0; q < o[0].n[t]; q++) finite &= isfinite(o[0].buf[t][q]);
      if (!(e <= worst)) worst = e, wi = t;
    }
    TAP_CHECK(worst <= 1e-6 && finite && same,
              "groupnorm %s vs scalar, B%d C%d HW%d G%d gamma ±%g beta ±%g: worst rel %.3g (%s), "
              "finite %d, 1/2/3 threads bit-identical %d",
              name, k->B, k->C, k->HW, k->G, k->gscale, k->bscale, worst, what[wi], finite, same);
    for (int t = 0; t < 3; t++) free_outputs(&o[t]);
    free_outputs(&s);
  }
  TAP_CHECK(norm_train_mismatch == 0,
            "groupnorm_silu_forward_train = groupnorm_silu_forward's output and groupnorm_forward's "
            "statistics, bit for bit, vector and scalar paths (%d cases differ)", norm_train_mismatch);
  const size_t sizes[] = {1, 7, 9, 37, 40001};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    const size_t n = sizes[i];
    outputs o[3], s;
    const int same = vec_and_scalar(run_silu_case, &n, o, &s);
    double ef = 0; /* forward: per entry */
    size_t differ = 0;
    int finite = 1;
    for (size_t q = 0; q < n; q++) {
      const double a = o[0].buf[0][q], b = s.buf[0][q];
      ef = fmax(ef, fabs(a - b) / fmax(fabs(b), 1e-20));
      differ += a != b;
      finite &= isfinite(a) && isfinite(o[0].buf[1][q]);
    }
    const double eb = rel_err_ff(o[0].buf[1], s.buf[1], n);
    TAP_CHECK(ef <= 1e-6 && eb <= 1e-6 && finite && same,
              "silu %s vs scalar, n %zu: forward rel %.3g per entry, backward rel %.3g, finite %d, "
              "1/2/3 threads bit-identical %d", name, n, ef, eb, finite, same);
    if (n == 40001)
      TAP_CHECK(differ > 0, "silu %s: the vector path ran (%zu of %zu values differ from the "
                "scalar loops' bits)", name, differ, n);
    for (int t = 0; t < 3; t++) free_outputs(&o[t]);
    free_outputs(&s);
  }
}

/* ---------------------------------------------------------------------------------------
 * PyTorch comparison (nn_ref.py writes DIR/cases.txt and the .npy files) */

static float *load(const char *dir, const char *name, const char *suffix, size_t *n) {
  char path[1024];
  float *data = NULL;
  int ndim = 0;
  int64_t shape[SDE_NPY_MAX_DIMS];
  snprintf(path, sizeof path, "%s/%s_%s.npy", dir, name, suffix);
  if (sde_npy_read(path, &data, &ndim, shape)) return NULL;
  size_t total = 1;
  for (int i = 0; i < ndim; i++) total *= (size_t)shape[i];
  *n = total;
  return data;
}

static int run_torch(const char *dir) {
  char path[1024], line[256];
  snprintf(path, sizeof path, "%s/cases.txt", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    TAP_CHECK(0, "cannot open %s", path);
    return tap_done();
  }
  while (fgets(line, sizeof line, f)) {
    char name[128], op[64];
    if (sscanf(line, "%127s %63s", name, op) != 2) continue;
    const op_kind *k = find_op(op);
    size_t np = 0, n;
    float *pf = load(dir, name, "params", &np);
    if (!k || !pf || np > 12) {
      TAP_CHECK(0, "%s: unknown op %s or unreadable params (%s)", name, op, sde_errmsg());
      free(pf);
      continue;
    }
    int p[12] = {0};
    for (size_t i = 0; i < np; i++) p[i] = (int)pf[i];
    free(pf);
    op_case c = make_case(op, p, 12);
    float *in[MAXT] = {0}, *grad[MAXT] = {0}, *ref_grad[MAXT] = {0};
    int ok = 1;
    for (int t = 0; t < k->nin; t++) {
      char suf[16];
      snprintf(suf, sizeof suf, "in%d", t);
      in[t] = load(dir, name, suf, &n);
      ok &= in[t] && n == c.in_n[t];
    }
    float *ref_out = load(dir, name, "out", &n);
    ok &= ref_out && n == c.out_n;
    if (!ok) {
      TAP_CHECK(0, "%s: missing or mis-shaped inputs (%s)", name, sde_errmsg());
    } else {
      float *out = malloc(c.out_n * sizeof(float));
      int rc = k->fwd(&c, in, out);
      double e = rel_err_ff(out, ref_out, c.out_n);
      TAP_CHECK(rc == 0 && e < 1e-5, "torch %s forward: rel err %.3g", name, e);
      free(out);
      float *dout = load(dir, name, "dout", &n);
      if (k->bwd && dout && n == c.out_n) {
        for (int t = 0; t < k->nin; t++) grad[t] = fill_f(c.in_n[t], 0.0f);
        rc = k->bwd(&c, in, dout, grad);
        for (int t = 0; t < k->nin; t++) {
          char suf[16];
          snprintf(suf, sizeof suf, "grad%d", t);
          ref_grad[t] = load(dir, name, suf, &n);
          if (!ref_grad[t]) continue; /* not differentiable in the reference */
          e = n == c.in_n[t] ? rel_err_ff(grad[t], ref_grad[t], n) : 1e30;
          TAP_CHECK(rc == 0 && e < 1e-5, "torch %s backward tensor %d: rel err %.3g", name, t, e);
        }
      }
      free(dout);
    }
    for (int t = 0; t < MAXT; t++) free(in[t]), free(grad[t]), free(ref_grad[t]);
    free(ref_out);
  }
  fclose(f);
  return tap_done();
}

/* the concat backward with a gradient stored: the bits of adding onto zeros, the other one
 * added to as before; one region over B·(Ca+Cb) rows, so 1 and 3 threads alike */
static void test_concat_store(void) {
  const int B = 5, Ca = 3, Cb = 7, HW = 37;
  const size_t na = (size_t)B * Ca * HW, nb = (size_t)B * Cb * HW;
  float *g = rand_f(na + nb, 1.0f), *b0 = rand_f(nb, 1.0f);
  float *za = calloc(na, sizeof(float)), *sa = rand_f(na, 1.0f); /* sa: garbage to overwrite */
  float *ab = malloc(nb * sizeof(float)), *sb = malloc(nb * sizeof(float));
  int same = 1;
  const int nt = sde_get_num_threads();
  for (int threads = 1; threads <= 3; threads += 2) {
    sde_set_num_threads(threads);
    memcpy(ab, b0, nb * sizeof(float));
    memcpy(sb, b0, nb * sizeof(float));
    memset(za, 0, na * sizeof(float));
    sde_nn_concat_channels_backward(za, ab, g, B, Ca, Cb, HW);
    sde_nn_concat_channels_backward_store(sa, sb, g, B, Ca, Cb, HW, 1, 0);
    same &= !memcmp(za, sa, na * sizeof(float)) && !memcmp(ab, sb, nb * sizeof(float));
  }
  sde_set_num_threads(nt);
  int right = 1; /* image 2, channel Ca + 1 of dout is b's channel 1 of image 2: b0 + g */
  for (int p = 0; p < HW; p++)
    right &= sb[(2 * (size_t)Cb + 1) * HW + p] == b0[(2 * (size_t)Cb + 1) * HW + p] +
                                                     g[(2 * (size_t)(Ca + Cb) + Ca + 1) * HW + p];
  /* one tensor on both sides (Ca = Cb = 3): its rows get both halves of dout's, in order */
  const size_t nh = (size_t)B * Ca * HW;
  float *g2 = rand_f(2 * nh, 1.0f), *d2 = rand_f(nh, 1.0f);
  sde_nn_concat_channels_backward_store(d2, d2, g2, B, Ca, Ca, HW, 1, 0);
  int alias = 1;
  for (int i = 0; i < B; i++)
    for (size_t k = 0; k < (size_t)Ca * HW; k++)
      alias &= d2[i * (size_t)Ca * HW + k] == g2[2 * i * (size_t)Ca * HW + k] +
                                                  g2[(2 * i + 1) * (size_t)Ca * HW + k];
  free(g2), free(d2);
  TAP_CHECK(same && right && alias, "concat backward: stored = added onto zeros, added = b + "
            "dout's rows, one tensor on both sides gets both (%d %d %d)", same, right, alias);
  free(g), free(b0), free(za), free(sa), free(ab), free(sb);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--torch")) return run_torch(argv[2]);
  test_concat_store();
  test_hand_fir();
  test_hand_embeddings();
  test_gradients();
  test_conv_chunked();
  test_gnsilu_fused();
  test_gnsilu_store();
  test_determinism();
  test_norm_vector_paths();
  return tap_done();
}
