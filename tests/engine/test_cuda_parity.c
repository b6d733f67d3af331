/* The CUDA backend against the CPU backend, op by op (needs a GPU; exit 77 without one).
 *
 *   test_cuda_parity [fp32|tf32|bf16|all]      (default all)
 *   test_cuda_parity --self-test               the CPU backend against itself: checks this
 *                                              test's own bookkeeping where there is no GPU
 *
 * Random inputs, every op forward and backward with every gradient accumulated into
 * random initial values (the += contract) and NULL gradients skipped. Bounds, as the
 * max relative error max|gpu − cpu| / max|cpu| of each output:
 *   - every op in fp32, and the non-GEMM ops in every precision: 1e-5;
 *   - conv/linear/NIN/attention in TF32: 1e-2, in BF16: 3e-2 (10-bit and 7-bit mantissas
 *     with fp32 accumulation; BF16 convolutions run as TF32, see cuda_blas.cu);
 *   - randn/randu/Rademacher rows and axpby_rows: bit-identical; dot_rows: 1e-12.
 * Also: out-of-memory is SDE_ENOMEM with a message, a bad device id is SDE_ENODEV, two
 * backends coexist, backward ops give the same bits when run twice, and a CUDA graph
 * replays a captured sequence with the eager bits.
 * Output: TAP-style lines; the meson protocol is the exit code (0 pass, 1 fail, 77 skip). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda/cuda_graph.h"
#include "scoresde/device.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"
#include "scoresde/rng.h"
#include "tap.h"

static const sde_backend *cpu, *gpu;
static double tol_gemm; /* conv/GEMM ops at this backend's precision */
#define TOL 1e-5

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

/* a host array and its device copy */
typedef struct {
  float *h, *d;
  size_t n;
} buf;

static buf mk(size_t n, float scale) {
  buf b = {malloc((n ? n : 1) * sizeof(float)), NULL, n};
  for (size_t i = 0; i < n; i++) b.h[i] = (float)((2.0 * urand() - 1.0) * scale);
  if (gpu->alloc(gpu, (n ? n : 1) * sizeof(float), (void **)&b.d) ||
      gpu->upload(gpu, b.d, b.h, n * sizeof(float))) {
    fprintf(stderr, "upload failed: %s\n", sde_errmsg());
    exit(1);
  }
  return b;
}
static void rm(buf *b) {
  free(b->h);
  gpu->free(gpu, b->d);
  b->h = b->d = NULL;
}
/* max|gpu − cpu| / max|cpu| after downloading b.d */
static double err(const buf *b) {
  float *g = malloc((b->n ? b->n : 1) * sizeof(float));
  if (gpu->download(gpu, g, b->d, b->n * sizeof(float))) {
    TAP_DIAG("download failed: %s", sde_errmsg());
    free(g);
    return INFINITY;
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < b->n; i++) {
    double d = fabs((double)g[i] - b->h[i]);
    if (d != d) d = INFINITY;
    num = d > num ? d : num;
    den = fabs((double)b->h[i]) > den ? fabs((double)b->h[i]) : den;
  }
  free(g);
  return den > 0 ? num / den : num;
}
static int same_bits(const buf *b) {
  float *g = malloc((b->n ? b->n : 1) * sizeof(float));
  int ok = !gpu->download(gpu, g, b->d, b->n * sizeof(float)) && !memcmp(g, b->h, b->n * sizeof(float));
  free(g);
  return ok;
}
/* the error is printed with every check, so two runs' reports differ if any bit does */
#define CMP(b, tol, ...)                                                      \
  do {                                                                        \
    double e_ = err(&(b));                                                    \
    TAP_CHECK(e_ <= (tol), __VA_ARGS__);                                      \
    TAP_DIAG("  rel err %.9g (bound %.0e)", e_, (double)(tol));               \
  } while (0)
#define RC(call)                                                                     \
  do {                                                                               \
    int rc_ = (call);                                                                \
    if (rc_) TAP_CHECK(0, "%s returned %s: %s", #call, sde_status_name(rc_), sde_errmsg()); \
  } while (0)

/* ---------------------------------------------------------------------------------------- */

static void test_conv(int B, int Ci, int H, int W, int Co, int k, int stride, int pt, int pb, int pl, int pr,
                      int with_bias) {
  sde_nn_conv2d_shape s = {B, Ci, H, W, Co, k, k, stride, pt, pb, pl, pr, 0};
  int Ho = sde_nn_conv2d_out_h(&s), Wo = sde_nn_conv2d_out_w(&s);
  size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * Ho * Wo, nw = (size_t)Co * Ci * k * k;
  buf x = mk(nx, 1), w = mk(nw, 0.3f), bias = mk(Co, 0.5f), y = mk(ny, 0), g = mk(ny, 1);
  buf dx = mk(nx, 0.1f), dw = mk(nw, 0.1f), db = mk(Co, 0.1f);
  char what[128];
  snprintf(what, sizeof what, "conv2d [%d,%d,%d,%d]->%d k%d s%d pad(%d,%d,%d,%d)%s", B, Ci, H, W, Co, k, stride, pt,
           pb, pl, pr, with_bias ? "" : " no bias");
  RC(cpu->conv2d_forward(cpu, y.h, x.h, w.h, with_bias ? bias.h : NULL, &s, NULL));
  RC(gpu->conv2d_forward(gpu, y.d, x.d, w.d, with_bias ? bias.d : NULL, &s, NULL));
  CMP(y, tol_gemm, "%s forward", what);
  RC(cpu->conv2d_backward(cpu, dx.h, dw.h, with_bias ? db.h : NULL, g.h, x.h, w.h, &s, NULL));
  RC(gpu->conv2d_backward(gpu, dx.d, dw.d, with_bias ? db.d : NULL, g.d, x.d, w.d, &s, NULL));
  CMP(dx, tol_gemm, "%s backward dinp (+=)", what);
  CMP(dw, tol_gemm, "%s backward dweight (+=)", what);
  if (with_bias) CMP(db, TOL, "%s backward dbias (+=)", what);
  /* weight gradient only, then twice more: the same bits each time (deterministic algorithms) */
  RC(cpu->conv2d_backward(cpu, NULL, dw.h, NULL, g.h, x.h, w.h, &s, NULL));
  RC(gpu->conv2d_backward(gpu, NULL, dw.d, NULL, g.d, x.d, w.d, &s, NULL));
  CMP(dw, tol_gemm, "%s backward dweight only", what);
  buf a = mk(nw, 0), b2 = mk(nw, 0);
  gpu->zero(gpu, a.d, nw * 4);
  gpu->zero(gpu, b2.d, nw * 4);
  RC(gpu->conv2d_backward(gpu, NULL, a.d, NULL, g.d, x.d, w.d, &s, NULL));
  RC(gpu->conv2d_backward(gpu, NULL, b2.d, NULL, g.d, x.d, w.d, &s, NULL));
  gpu->download(gpu, a.h, a.d, nw * 4);
  TAP_CHECK(same_bits(&(buf){a.h, b2.d, nw}), "%s dweight bit-identical run to run", what);
  rm(&a), rm(&b2), rm(&x), rm(&w), rm(&bias), rm(&y), rm(&g), rm(&dx), rm(&dw), rm(&db);
}

static void test_linear_nin(void) {
  int B = 3, in_f = 37, out_f = 29;
  buf x = mk((size_t)B * in_f, 1), w = mk((size_t)out_f * in_f, 0.3f), b = mk(out_f, 0.5f), y = mk((size_t)B * out_f, 0);
  buf g = mk((size_t)B * out_f, 1), dx = mk((size_t)B * in_f, 0.1f), dw = mk((size_t)out_f * in_f, 0.1f),
      db = mk(out_f, 0.1f);
  RC(cpu->linear_forward(cpu, y.h, x.h, w.h, b.h, B, in_f, out_f));
  RC(gpu->linear_forward(gpu, y.d, x.d, w.d, b.d, B, in_f, out_f));
  CMP(y, tol_gemm, "linear forward");
  RC(cpu->linear_backward(cpu, dx.h, dw.h, db.h, g.h, x.h, w.h, B, in_f, out_f));
  RC(gpu->linear_backward(gpu, dx.d, dw.d, db.d, g.d, x.d, w.d, B, in_f, out_f));
  CMP(dx, tol_gemm, "linear backward dinp");
  CMP(dw, tol_gemm, "linear backward dweight");
  CMP(db, TOL, "linear backward dbias");
  RC(cpu->linear_forward(cpu, y.h, x.h, w.h, NULL, B, in_f, out_f));
  RC(gpu->linear_forward(gpu, y.d, x.d, w.d, NULL, B, in_f, out_f));
  CMP(y, tol_gemm, "linear forward, no bias");
  rm(&x), rm(&w), rm(&b), rm(&y), rm(&g), rm(&dx), rm(&dw), rm(&db);

  int Ci = 24, HW = 49, Co = 40;
  B = 3;
  buf X = mk((size_t)B * Ci * HW, 1), Wn = mk((size_t)Ci * Co, 0.3f), bn = mk(Co, 0.5f), Y = mk((size_t)B * Co * HW, 0);
  buf G = mk((size_t)B * Co * HW, 1), dX = mk((size_t)B * Ci * HW, 0.1f), dW = mk((size_t)Ci * Co, 0.1f),
      dB = mk(Co, 0.1f);
  RC(cpu->nin_forward(cpu, Y.h, X.h, Wn.h, bn.h, B, Ci, HW, Co));
  RC(gpu->nin_forward(gpu, Y.d, X.d, Wn.d, bn.d, B, Ci, HW, Co));
  CMP(Y, tol_gemm, "nin forward");
  RC(cpu->nin_backward(cpu, dX.h, dW.h, dB.h, G.h, X.h, Wn.h, B, Ci, HW, Co));
  RC(gpu->nin_backward(gpu, dX.d, dW.d, dB.d, G.d, X.d, Wn.d, B, Ci, HW, Co));
  CMP(dX, tol_gemm, "nin backward dinp");
  CMP(dW, tol_gemm, "nin backward dW");
  CMP(dB, TOL, "nin backward dbias");
  rm(&X), rm(&Wn), rm(&bn), rm(&Y), rm(&G), rm(&dX), rm(&dW), rm(&dB);
}

static void test_groupnorm(int B, int C, int HW, float offset) {
  int G = sde_nn_groupnorm_groups(C);
  size_t n = (size_t)B * C * HW;
  buf x = mk(n, 2), gm = mk(C, 1.5f), bt = mk(C, 0.5f), y = mk(n, 0), mean = mk((size_t)B * G, 0),
      rstd = mk((size_t)B * G, 0), g = mk(n, 1), dx = mk(n, 0.1f), dg = mk(C, 0.1f), db = mk(C, 0.1f);
  for (size_t i = 0; i < n; i++) x.h[i] += offset;
  gpu->upload(gpu, x.d, x.h, n * 4);
  char what[80];
  snprintf(what, sizeof what, "groupnorm B=%d C=%d HW=%d G=%d offset %g", B, C, HW, G, offset);
  RC(cpu->groupnorm_forward(cpu, y.h, mean.h, rstd.h, x.h, gm.h, bt.h, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  RC(gpu->groupnorm_forward(gpu, y.d, mean.d, rstd.d, x.d, gm.d, bt.d, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  CMP(y, TOL, "%s forward", what);
  CMP(mean, TOL, "%s mean", what);
  CMP(rstd, TOL, "%s rstd", what);
  /* backward from the CPU's statistics on both sides */
  gpu->upload(gpu, mean.d, mean.h, mean.n * 4);
  gpu->upload(gpu, rstd.d, rstd.h, rstd.n * 4);
  RC(cpu->groupnorm_backward(cpu, dx.h, dg.h, db.h, g.h, x.h, mean.h, rstd.h, gm.h, B, C, HW, G));
  RC(gpu->groupnorm_backward(gpu, dx.d, dg.d, db.d, g.d, x.d, mean.d, rstd.d, gm.d, B, C, HW, G));
  CMP(dx, TOL, "%s backward dinp", what);
  CMP(dg, TOL, "%s backward dgamma", what);
  CMP(db, TOL, "%s backward dbeta", what);
  RC(cpu->groupnorm_silu_forward(cpu, y.h, x.h, gm.h, bt.h, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  RC(gpu->groupnorm_silu_forward(gpu, y.d, x.d, gm.d, bt.d, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  CMP(y, TOL, "%s + silu forward", what);
  /* in place, no affine */
  RC(cpu->groupnorm_silu_forward(cpu, x.h, x.h, NULL, NULL, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  RC(gpu->groupnorm_silu_forward(gpu, x.d, x.d, NULL, NULL, B, C, HW, G, SDE_NN_GROUPNORM_EPS));
  CMP(x, TOL, "%s + silu in place, no affine", what);
  rm(&x), rm(&gm), rm(&bt), rm(&y), rm(&mean), rm(&rstd), rm(&g), rm(&dx), rm(&dg), rm(&db);
}

static void test_attention(int B, int C, int N) {
  size_t xs = (size_t)B * C * N, as = (size_t)B * N * N;
  buf q = mk(xs, 1), k = mk(xs, 1), v = mk(xs, 1), out = mk(xs, 0), att = mk(as, 0), g = mk(xs, 1);
  buf dq = mk(xs, 0.1f), dk = mk(xs, 0.1f), dv = mk(xs, 0.1f);
  char what[64];
  snprintf(what, sizeof what, "attention B=%d C=%d N=%d", B, C, N);
  RC(cpu->attention_forward(cpu, out.h, att.h, q.h, k.h, v.h, B, C, N));
  RC(gpu->attention_forward(gpu, out.d, att.d, q.d, k.d, v.d, B, C, N));
  CMP(att, tol_gemm, "%s att", what);
  CMP(out, tol_gemm, "%s forward", what);
  gpu->upload(gpu, att.d, att.h, as * 4);
  RC(cpu->attention_backward(cpu, dq.h, dk.h, dv.h, g.h, att.h, q.h, k.h, v.h, B, C, N, NULL));
  RC(gpu->attention_backward(gpu, dq.d, dk.d, dv.d, g.d, att.d, q.d, k.d, v.d, B, C, N, NULL));
  CMP(dq, tol_gemm, "%s backward dq", what);
  CMP(dk, tol_gemm, "%s backward dk", what);
  CMP(dv, tol_gemm, "%s backward dv", what);
  rm(&q), rm(&k), rm(&v), rm(&out), rm(&att), rm(&g), rm(&dq), rm(&dk), rm(&dv);
}

static void test_resampling(int B, int C, int H, int W) {
  size_t n = (size_t)B * C * H * W;
  buf x = mk(n, 1), up = mk(4 * n, 0), dn = mk(n / 4, 0), g4 = mk(4 * n, 1), gq = mk(n / 4, 1), dx = mk(n, 0.1f);
  char what[48];
  snprintf(what, sizeof what, "[%d,%d,%d,%d]", B, C, H, W);
#define PAIR(fwd, bwd, out, gout, name)                                   \
  RC(cpu->fwd(cpu, out.h, x.h, B, C, H, W));                              \
  RC(gpu->fwd(gpu, out.d, x.d, B, C, H, W));                              \
  CMP(out, TOL, "%s forward %s", name, what);                             \
  RC(cpu->bwd(cpu, dx.h, gout.h, B, C, H, W));                            \
  RC(gpu->bwd(gpu, dx.d, gout.d, B, C, H, W));                            \
  CMP(dx, TOL, "%s backward %s", name, what)
  PAIR(fir_upsample2x_forward, fir_upsample2x_backward, up, g4, "fir_upsample2x");
  PAIR(fir_downsample2x_forward, fir_downsample2x_backward, dn, gq, "fir_downsample2x");
  PAIR(upsample_nearest2x_forward, upsample_nearest2x_backward, up, g4, "upsample_nearest2x");
  PAIR(avgpool2x_forward, avgpool2x_backward, dn, gq, "avgpool2x");
#undef PAIR
  /* FIR conv-down ([H,W] -> [H/2,W/2]) and conv-up (layerspp.Upsample fir with conv,
   * [H,W] -> [2H,2W]), C -> Co, without and with the caller's scratch */
  int Co = 6;
  size_t nw = (size_t)Co * C * 9, ny = (size_t)B * Co * (H / 2) * (W / 2), nu = (size_t)B * Co * 4 * H * W;
  buf w = mk(nw, 0.3f), bias = mk(Co, 0.5f), y = mk(ny, 0), gy = mk(ny, 1), dw = mk(nw, 0.1f), db = mk(Co, 0.1f);
  buf yu = mk(nu, 0), gu = mk(nu, 1);
  buf scratch = mk(sde_nn_fir_conv_downsample2x_scratch_floats(B, C, H, W, Co), 0);
  buf scratch_u = mk(sde_nn_fir_upsample_conv2x_scratch_floats(B, C, H, W, Co), 0);
#define FIR_CONV(fwd, bwd, out, gout, scr, name)                                             \
  for (int with_scratch = 0; with_scratch < 2; with_scratch++) {                             \
    float *sc = with_scratch ? scr.d : NULL;                                                 \
    const char *sw = with_scratch ? " (scratch)" : "";                                       \
    RC(cpu->fwd(cpu, out.h, x.h, w.h, bias.h, B, C, H, W, Co, NULL));                        \
    RC(gpu->fwd(gpu, out.d, x.d, w.d, bias.d, B, C, H, W, Co, sc));                          \
    CMP(out, tol_gemm, "%s forward %s%s", name, what, sw);                                   \
    RC(cpu->bwd(cpu, dx.h, dw.h, db.h, gout.h, x.h, w.h, B, C, H, W, Co, NULL));             \
    RC(gpu->bwd(gpu, dx.d, dw.d, db.d, gout.d, x.d, w.d, B, C, H, W, Co, sc));               \
    CMP(dx, tol_gemm, "%s backward dinp %s%s", name, what, sw);                              \
    CMP(dw, tol_gemm, "%s backward dweight %s%s", name, what, sw);                           \
    CMP(db, TOL, "%s backward dbias %s%s", name, what, sw);                                  \
  }
  FIR_CONV(fir_conv_downsample2x_forward, fir_conv_downsample2x_backward, y, gy, scratch,
           "fir_conv_downsample2x");
  FIR_CONV(fir_conv_upsample2x_forward, fir_conv_upsample2x_backward, yu, gu, scratch_u,
           "fir_conv_upsample2x");
#undef FIR_CONV
  rm(&x), rm(&up), rm(&dn), rm(&g4), rm(&gq), rm(&dx), rm(&w), rm(&bias), rm(&y), rm(&gy), rm(&dw), rm(&db);
  rm(&scratch), rm(&yu), rm(&gu), rm(&scratch_u);
}

static void test_embeddings(void) {
  int B = 5, E = 128, dim = 129;
  buf u = mk(B, 4), W = mk(E, 16), out = mk((size_t)B * 2 * E, 0), g = mk((size_t)B * 2 * E, 1), du = mk(B, 0.1f),
      dW = mk(E, 0.1f);
  RC(cpu->fourier_embedding_forward(cpu, out.h, u.h, W.h, B, E));
  RC(gpu->fourier_embedding_forward(gpu, out.d, u.d, W.d, B, E));
  CMP(out, TOL, "fourier embedding forward");
  RC(cpu->fourier_embedding_backward(cpu, du.h, dW.h, g.h, u.h, W.h, B, E));
  RC(gpu->fourier_embedding_backward(gpu, du.d, dW.d, g.d, u.d, W.d, B, E));
  CMP(du, TOL, "fourier embedding backward du");
  CMP(dW, TOL, "fourier embedding backward dW");
  buf t = mk(B, 999), te = mk((size_t)B * dim, 7), gt = mk((size_t)B * dim, 1), dt = mk(B, 0.1f);
  RC(cpu->timestep_embedding_forward(cpu, te.h, t.h, B, dim));
  RC(gpu->timestep_embedding_forward(gpu, te.d, t.d, B, dim));
  CMP(te, TOL, "timestep embedding forward (odd dim)");
  RC(cpu->timestep_embedding_backward(cpu, dt.h, gt.h, t.h, B, dim));
  RC(gpu->timestep_embedding_backward(gpu, dt.d, gt.d, t.d, B, dim));
  CMP(dt, TOL, "timestep embedding backward");
  rm(&u), rm(&W), rm(&out), rm(&g), rm(&du), rm(&dW), rm(&t), rm(&te), rm(&gt), rm(&dt);
}

static void test_elementwise(void) {
  int B = 3, Ca = 5, Cb = 7, HW = 31;
  size_t n = (size_t)B * Ca * HW, nb = (size_t)B * Cb * HW, nc = n + nb;
  buf a = mk(n, 8), b = mk(n, 1), out = mk(n, 0), g = mk(n, 1), da = mk(n, 0.1f), db = mk(n, 0.1f);
  cpu->silu_forward(cpu, out.h, a.h, n);
  gpu->silu_forward(gpu, out.d, a.d, n);
  CMP(out, TOL, "silu forward");
  cpu->silu_backward(cpu, da.h, g.h, a.h, n);
  gpu->silu_backward(gpu, da.d, g.d, a.d, n);
  CMP(da, TOL, "silu backward");
  cpu->add_forward(cpu, out.h, a.h, b.h, 0.70710678f, n);
  gpu->add_forward(gpu, out.d, a.d, b.d, 0.70710678f, n);
  CMP(out, TOL, "add forward");
  cpu->add_backward(cpu, da.h, db.h, g.h, 0.5f, n);
  gpu->add_backward(gpu, da.d, db.d, g.d, 0.5f, n);
  CMP(da, TOL, "add backward da");
  CMP(db, TOL, "add backward db");
  cpu->add_backward(cpu, da.h, da.h, g.h, 0.5f, n); /* aliased: both terms land */
  gpu->add_backward(gpu, da.d, da.d, g.d, 0.5f, n);
  CMP(da, TOL, "add backward da == db");
  cpu->scale(cpu, out.h, out.h, 3.0f, n);
  gpu->scale(gpu, out.d, out.d, 3.0f, n);
  CMP(out, TOL, "scale in place");
  cpu->accumulate(cpu, out.h, a.h, n);
  gpu->accumulate(gpu, out.d, a.d, n);
  CMP(out, TOL, "accumulate");
  cpu->mul(cpu, out.h, a.h, b.h, n);
  gpu->mul(gpu, out.d, a.d, b.d, n);
  TAP_CHECK(same_bits(&out), "mul bit-identical");
  cpu->mul(cpu, out.h, out.h, b.h, n); /* in place, as the dropout backward */
  gpu->mul(gpu, out.d, out.d, b.d, n);
  TAP_CHECK(same_bits(&out), "mul in place bit-identical");
  /* dropout: randu rows -> mask -> times the activations, bit for bit */
  RC(cpu->randu_rows(cpu, db.h, 7, 2, 1003, B, (int64_t)(n / B)));
  RC(gpu->randu_rows(gpu, db.d, 7, 2, 1003, B, (int64_t)(n / B)));
  cpu->dropout_mask(cpu, db.h, 0.25f, 1.0f / 0.75f, n);
  gpu->dropout_mask(gpu, db.d, 0.25f, 1.0f / 0.75f, n);
  TAP_CHECK(same_bits(&db), "dropout_mask bit-identical");
  cpu->mul(cpu, out.h, a.h, db.h, n);
  gpu->mul(gpu, out.d, a.d, db.d, n);
  TAP_CHECK(same_bits(&out), "dropout (mask · activations) bit-identical");
  /* Adam + EMA: no contraction on the device, the CPU's bits (mask: every 3rd frozen) */
  {
    buf p = mk(n, 1), m = mk(n, 0.1f), v = mk(n, 0.01f), ema = mk(n, 1), gr = mk(n, 3), tr = mk(n, 0);
    for (size_t i = 0; i < n; i++) {
      v.h[i] = fabsf(v.h[i]);
      tr.h[i] = i % 3 ? 1.0f : 0.0f;
    }
    RC(gpu->upload(gpu, v.d, v.h, n * sizeof(float)));
    RC(gpu->upload(gpu, tr.d, tr.h, n * sizeof(float)));
    sde_adam_coef k = {0.37f, 0.9f, 0.999f, 1.3e-3f, 0.054f, 1e-8f, 0.3f};
    for (int it = 0; it < 3; it++) {
      RC(cpu->adam_step(cpu, p.h, m.h, v.h, ema.h, gr.h, tr.h, n, &k));
      RC(gpu->adam_step(gpu, p.d, m.d, v.d, ema.d, gr.d, tr.d, n, &k));
    }
    TAP_CHECK(same_bits(&p) && same_bits(&m) && same_bits(&v) && same_bits(&ema),
              "adam_step (3 steps, masked) bit-identical: parameters, m, v, EMA");
    RC(cpu->adam_step(cpu, p.h, m.h, v.h, ema.h, gr.h, NULL, n, &k));
    RC(gpu->adam_step(gpu, p.d, m.d, v.d, ema.d, gr.d, NULL, n, &k));
    TAP_CHECK(same_bits(&p) && same_bits(&ema), "adam_step without a mask bit-identical");
    rm(&p), rm(&m), rm(&v), rm(&ema), rm(&gr), rm(&tr);
  }
  buf cb = mk((size_t)B * Ca, 1), dcb = mk((size_t)B * Ca, 0.1f);
  cpu->add_channel_bias_forward(cpu, out.h, cb.h, B, Ca, HW);
  gpu->add_channel_bias_forward(gpu, out.d, cb.d, B, Ca, HW);
  CMP(out, TOL, "add_channel_bias forward");
  cpu->add_channel_bias_backward(cpu, dcb.h, g.h, B, Ca, HW);
  gpu->add_channel_bias_backward(gpu, dcb.d, g.d, B, Ca, HW);
  CMP(dcb, TOL, "add_channel_bias backward");
  buf bb = mk(nb, 1), cat = mk(nc, 0), gc = mk(nc, 1), dbb = mk(nb, 0.1f);
  cpu->concat_channels_forward(cpu, cat.h, a.h, bb.h, B, Ca, Cb, HW);
  gpu->concat_channels_forward(gpu, cat.d, a.d, bb.d, B, Ca, Cb, HW);
  TAP_CHECK(same_bits(&cat), "concat_channels forward bit-identical");
  cpu->concat_channels_backward(cpu, da.h, dbb.h, gc.h, B, Ca, Cb, HW);
  gpu->concat_channels_backward(gpu, da.d, dbb.d, gc.d, B, Ca, Cb, HW);
  CMP(da, TOL, "concat_channels backward da");
  CMP(dbb, TOL, "concat_channels backward db");
  cpu->concat_channels_backward(cpu, NULL, dbb.h, gc.h, B, Ca, Cb, HW);
  gpu->concat_channels_backward(gpu, NULL, dbb.d, gc.d, B, Ca, Cb, HW);
  CMP(dbb, TOL, "concat_channels backward, da NULL");
  RC(gpu->synchronize(gpu));
  rm(&a), rm(&b), rm(&out), rm(&g), rm(&da), rm(&db), rm(&cb), rm(&dcb), rm(&bb), rm(&cat), rm(&gc), rm(&dbb);
}

static void test_rows(void) {
  int rows = 70; /* more than one axpby launch (64 rows each) */
  int64_t len = 3 * 17 * 13 + 2;
  size_t n = (size_t)rows * len;
  buf r = mk(n, 0);
  const uint64_t seed = 0xC0FFEE1234ull, stream0 = 1000;
  RC(cpu->randn_rows(cpu, r.h, seed, stream0, 17, rows, len));
  RC(gpu->randn_rows(gpu, r.d, seed, stream0, 17, rows, len));
  TAP_CHECK(same_bits(&r), "randn_rows bit-identical to the CPU");
  RC(cpu->randu_rows(cpu, r.h, seed, stream0, 18, rows, len));
  RC(gpu->randu_rows(gpu, r.d, seed, stream0, 18, rows, len));
  TAP_CHECK(same_bits(&r), "randu_rows bit-identical to the CPU");
  RC(cpu->rademacher_rows(cpu, r.h, seed, stream0, 19, rows, len));
  RC(gpu->rademacher_rows(gpu, r.d, seed, stream0, 19, rows, len));
  TAP_CHECK(same_bits(&r), "rademacher_rows bit-identical to the CPU");
  /* randn against rng.h directly, stream high word set */
  float *ref = malloc(len * sizeof(float)), *got = malloc(len * sizeof(float));
  RC(gpu->randn_rows(gpu, r.d, 7, 0x100000000ull, 3, 2, len));
  gpu->download(gpu, got, r.d + len, len * sizeof(float));
  sde_randn(7, 0x100000001ull, 3, ref, len);
  TAP_CHECK(!memcmp(ref, got, len * sizeof(float)), "randn_rows row 1 == sde_randn(stream0 + 1)");
  free(ref), free(got);

  buf x = mk(n, 2), y = mk(n, 2), o = mk(n, 0);
  double *a = malloc(rows * sizeof(double)), *c = malloc(rows * sizeof(double));
  for (int i = 0; i < rows; i++) a[i] = 1.0 - 0.01 * i, c[i] = 0.3 * urand();
  RC(cpu->axpby_rows(cpu, o.h, a, x.h, c, y.h, rows, len));
  RC(gpu->axpby_rows(gpu, o.d, a, x.d, c, y.d, rows, len));
  TAP_CHECK(same_bits(&o), "axpby_rows bit-identical");
  RC(cpu->axpby_rows(cpu, x.h, a, x.h, c, y.h, rows, len));
  RC(gpu->axpby_rows(gpu, x.d, a, x.d, c, y.d, rows, len));
  TAP_CHECK(same_bits(&x), "axpby_rows out == x bit-identical");
  RC(cpu->axpby_rows(cpu, o.h, a, x.h, c, NULL, rows, len));
  RC(gpu->axpby_rows(gpu, o.d, a, x.d, c, NULL, rows, len));
  TAP_CHECK(same_bits(&o), "axpby_rows y = NULL bit-identical");
  double *dc = malloc(rows * sizeof(double)), *dg = malloc(rows * sizeof(double));
  RC(cpu->dot_rows(cpu, dc, x.h, y.h, rows, len));
  RC(gpu->dot_rows(gpu, dg, x.d, y.d, rows, len));
  double e = 0, m = 0;
  for (int i = 0; i < rows; i++) {
    e = fmax(e, fabs(dc[i] - dg[i]));
    m = fmax(m, fabs(dc[i]));
  }
  TAP_CHECK(e <= 1e-12 * m, "dot_rows (rel err %.3g)", m > 0 ? e / m : e);
  free(a), free(c), free(dc), free(dg);
  rm(&r), rm(&x), rm(&y), rm(&o);
}

static void test_errors(int n_dev) {
  void *p = (void *)1;
  int rc = gpu->alloc(gpu, (size_t)1 << 50, &p);
  TAP_CHECK(rc == SDE_ENOMEM && p == NULL, "1 PiB allocation: %s", sde_status_name(rc));
  TAP_CHECK(strstr(sde_errmsg(), "out of GPU memory") != NULL, "OOM message: %s", sde_errmsg());
  /* the backend still works after the failure */
  buf x = mk(100, 1), y = mk(100, 0);
  cpu->scale(cpu, y.h, x.h, 2.0f, 100);
  gpu->scale(gpu, y.d, x.d, 2.0f, 100);
  TAP_CHECK(same_bits(&y) && gpu->synchronize(gpu) == SDE_OK, "ops after an OOM");
  rm(&x), rm(&y);
  const sde_backend *bad = NULL;
  rc = sde_backend_cuda_open(n_dev, SDE_PRECISION_FP32, &bad);
  TAP_CHECK(rc == SDE_ENODEV && !bad, "device %d (of %d): %s: %s", n_dev, n_dev, sde_status_name(rc), sde_errmsg());
  rc = sde_backend_cuda_open(-1, SDE_PRECISION_FP32, &bad);
  TAP_CHECK(rc == SDE_ENODEV, "device -1: %s", sde_status_name(rc));
  rc = sde_backend_open(SDE_DEVICE_CUDA, 1000, SDE_PRECISION_FP32, &bad, NULL);
  TAP_CHECK(rc == SDE_ENODEV, "sde_backend_open(cuda, 1000): %s", sde_status_name(rc));
  /* a second backend on the same device, used in between */
  const sde_backend *two = NULL;
  rc = sde_backend_cuda_open(0, SDE_PRECISION_TF32, &two);
  TAP_CHECK(rc == SDE_OK, "second backend on device 0");
  if (two) {
    float h[64], back[64], *d = NULL;
    for (int i = 0; i < 64; i++) h[i] = (float)i;
    int ok = !two->alloc(two, sizeof h, (void **)&d) && !two->upload(two, d, h, sizeof h);
    two->scale(two, d, d, 0.5f, 64);
    ok = ok && !two->download(two, back, d, sizeof back) && back[63] == 31.5f;
    two->free(two, d);
    sde_backend_cuda_close(two);
    TAP_CHECK(ok, "second backend works and closes");
  }
}

static void run_ops(void) {
  test_conv(2, 5, 8, 8, 7, 3, 1, 1, 1, 1, 1, 1);
  test_conv(3, 16, 16, 16, 32, 3, 1, 1, 1, 1, 1, 0);
  test_conv(2, 8, 9, 7, 4, 1, 1, 0, 0, 0, 0, 1);       /* pointwise */
  test_conv(2, 6, 8, 8, 5, 3, 2, 0, 1, 0, 1, 1);       /* stride-2 down conv, asymmetric pad */
  test_conv(1, 4, 6, 10, 3, 3, 1, 2, 0, 1, 3, 1);      /* odd asymmetric padding */
  test_conv(1, 3, 32, 32, 128, 3, 1, 1, 1, 1, 1, 1);   /* the NCSN++ input conv */
  test_linear_nin();
  test_groupnorm(2, 32, 64, 0.0f);
  test_groupnorm(1, 128, 1024, 50.0f);
  test_groupnorm(4, 12, 9, 0.0f);
  test_attention(2, 8, 64);
  test_attention(1, 64, 256);
  test_resampling(2, 3, 8, 6);
  test_resampling(1, 16, 32, 32);
  test_embeddings();
  test_elementwise();
}

/* A captured sequence (conv, GroupNorm+SiLU, noise, axpby) replays with the eager bits. */
static void test_graph(void) {
  sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(2, 8, 16, 16, 16, 3, 1, 1);
  size_t nx = 2 * 8 * 256, ny = 2 * 16 * 256, nw = 16 * 8 * 9;
  buf x = mk(nx, 1), w = mk(nw, 0.3f), bias = mk(16, 0.5f), y = mk(ny, 0), z = mk(ny, 0), gm = mk(16, 1),
      bt = mk(16, 1), eager = mk(ny, 0);
  double a[2] = {0.9, 1.1}, c2[2] = {0.1, 0.2};
  float *h = malloc(ny * sizeof(float));
  int rc = 0;
#define SEQ()                                                                                      \
  do {                                                                                             \
    if (!rc) rc = gpu->conv2d_forward(gpu, y.d, x.d, w.d, bias.d, &s, NULL);                       \
    if (!rc) rc = gpu->groupnorm_silu_forward(gpu, y.d, y.d, gm.d, bt.d, 2, 16, 256, 4, 1e-6f);    \
    if (!rc) rc = gpu->randn_rows(gpu, z.d, 5, 0, 1, 2, 16 * 256);                                 \
    if (!rc) rc = gpu->axpby_rows(gpu, y.d, a, y.d, c2, z.d, 2, 16 * 256);                         \
  } while (0)
  SEQ(); /* eager, which also sizes the workspaces */
  if (!rc) rc = gpu->download(gpu, eager.h, y.d, ny * sizeof(float));
  TAP_CHECK(!rc, "graph: eager sequence (%s)", rc ? sde_errmsg() : "ok");
  gpu->zero(gpu, y.d, ny * sizeof(float));
  sde_cuda_graph *g = NULL;
  rc = sde_cuda_graph_begin(gpu);
  SEQ();
  int drc = gpu->download(gpu, h, y.d, 4); /* cannot be captured, and must not break the capture */
  int erc = sde_cuda_graph_end(gpu, &g);
  TAP_CHECK(!rc && !erc && g, "graph: capture (%s)", rc || erc ? sde_errmsg() : "ok");
  TAP_CHECK(drc == SDE_EUNSUPPORTED, "graph: download inside a capture is refused (%s)", sde_status_name(drc));
  if (g) {
    gpu->zero(gpu, y.d, ny * sizeof(float));
    rc = sde_cuda_graph_launch(gpu, g);
    if (!rc) rc = sde_cuda_graph_launch(gpu, g); /* twice: the same result */
    if (!rc) rc = gpu->synchronize(gpu);
    memcpy(y.h, eager.h, ny * sizeof(float));
    TAP_CHECK(!rc && same_bits(&y), "graph: replay bit-identical to the eager run");
    sde_cuda_graph_free(gpu, g);
  }
#undef SEQ
  free(h);
  rm(&x), rm(&w), rm(&bias), rm(&y), rm(&z), rm(&gm), rm(&bt), rm(&eager);
}

static int run(sde_precision prec, int n_dev) {
  const char *names[] = {"fp32", "tf32", "bf16"};
  int rc = sde_backend_cuda_open(0, prec, &gpu);
  if (rc) {
    TAP_CHECK(0, "open CUDA device 0 (%s): %s", names[prec], sde_errmsg());
    return 1;
  }
  tol_gemm = prec == SDE_PRECISION_FP32 ? 1e-5 : prec == SDE_PRECISION_TF32 ? 1e-2 : 3e-2;
  TAP_DIAG("precision %s: conv/GEMM bound %.0e, other ops %.0e", names[prec], tol_gemm, TOL);
  run_ops();
  if (prec == SDE_PRECISION_FP32) {
    test_rows();
    test_graph();
    test_errors(n_dev);
  }
  rc = gpu->synchronize(gpu);
  TAP_CHECK(rc == SDE_OK, "synchronize at the end (%s)", names[prec]);
  sde_backend_cuda_close(gpu);
  gpu = NULL;
  return 0;
}

int main(int argc, char **argv) {
  cpu = sde_backend_cpu();
  if (argc > 1 && !strcmp(argv[1], "--self-test")) {
    gpu = cpu;
    tol_gemm = 0.0;
    run_ops();
    test_rows();
    return tap_done();
  }
  int n_dev = sde_cuda_device_count();
  if (n_dev <= 0) {
    /* no GPU: the module must still load and answer SDE_ENODEV itself */
    const sde_backend *none = NULL;
    int rc = sde_backend_cuda_open(0, SDE_PRECISION_FP32, &none);
    if (rc != SDE_ENODEV || none || strstr(sde_errmsg(), "not loadable")) {
      printf("not ok 1 - without a GPU, opening CUDA is SDE_ENODEV from the module (%s: %s)\n",
             sde_status_name(rc), sde_errmsg());
      printf("1..1\n");
      return 1;
    }
    printf("1..0 # SKIP no CUDA device (%s)\n", sde_errmsg());
    return 77;
  }
  const char *which = argc > 1 ? argv[1] : "all";
  if (!strcmp(which, "fp32") || !strcmp(which, "all")) run(SDE_PRECISION_FP32, n_dev);
  if (!strcmp(which, "tf32") || !strcmp(which, "all")) run(SDE_PRECISION_TF32, n_dev);
  if (!strcmp(which, "bf16") || !strcmp(which, "all")) run(SDE_PRECISION_BF16, n_dev);
  return tap_done();
}
