/* Benchmark of the nn ops: conv2d 3x3 (im2col + sgemm) against a naive loop conv at
 * CIFAR-like shapes, plus a few other ops of the NCSN++ graph.
 *
 * Run as:  env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 build/bench/bench_ops
 * (OpenBLAS's forced Haswell core type halves sgemm speed on AVX-512 machines.)
 * Options: --quick (skip the slow naive runs at batch 8); --dweight [REPS] (only the 3x3
 * stride-1 weight gradient at the training shapes of fashion-mnist-32 and its 3-channel
 * variant, batch 32: median and best of REPS calls, default 30); --conv [REPS] (the forward
 * and the input gradient of the same shapes); --wino [REPS [C H B]] (the direct conv against
 * the AVX2 Winograd tile sizes F(2x2, 3x3) and F(4x4, 3x3), default 9; C H B: only that
 * shape, C channels in and out, H x H, batch B); --wino-dweight [REPS [C H B]] (the same for
 * the weight gradient); --wino-prepared [REPS [C H B]] (the forward with weights prepared
 * once per kernel setting, as a frozen network keeps them); --pointwise [REPS] (1x1
 * convolutions and NIN: forward, input and weight gradient at training and CIFAR-10 shapes).
 * Times are the best of a few runs: wall clock, and process CPU time ("cpu"), which on a
 * shared, loaded machine is the steadier measure of single-thread efficiency. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scoresde/error.h"
#include "scoresde/nn.h"
#include "scoresde/scoresde.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* tensors as the engine allocates them (sde_malloc: 64-byte aligned from a page up) */
static float *zeros_f(size_t n) {
  float *p = sde_malloc(n * sizeof(float));
  if (p) memset(p, 0, n * sizeof(float));
  return p;
}

static float *rand_f(size_t n, float scale) {
  float *p = sde_malloc(n * sizeof(float));
  unsigned s = 12345u;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  return p;
}

/* The naive reference: direct 7-deep loop, parallel over (b, out channel) like the ops. */
static void conv2d_naive(float *out, const float *inp, const float *w, const float *bias,
                         const sde_nn_conv2d_shape *s) {
  int Ho = sde_nn_conv2d_out_h(s), Wo = sde_nn_conv2d_out_w(s);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s->B; b++)
    for (int co = 0; co < s->C_out; co++)
      for (int oh = 0; oh < Ho; oh++)
        for (int ow = 0; ow < Wo; ow++) {
          float acc = bias[co];
          for (int ci = 0; ci < s->C_in; ci++)
            for (int kh = 0; kh < s->KH; kh++) {
              int ih = oh * s->stride - s->pad_top + kh;
              if (ih < 0 || ih >= s->H) continue;
              for (int kw = 0; kw < s->KW; kw++) {
                int iw = ow * s->stride - s->pad_left + kw;
                if (iw < 0 || iw >= s->W) continue;
                acc += w[((size_t)(co * s->C_in + ci) * s->KH + kh) * s->KW + kw] *
                       inp[(((size_t)b * s->C_in + ci) * s->H + ih) * s->W + iw];
              }
            }
          out[(((size_t)b * s->C_out + co) * Ho + oh) * Wo + ow] = acc;
        }
}

/* best-of-reps wall seconds (best) and process CPU seconds (cpu) for `body` */
static double cpu;
#define TIME_BEST(best, reps, body)                  \
  do {                                               \
    best = cpu = 1e30;                               \
    for (int r_ = 0; r_ < (reps); r_++) {            \
      double t0_ = now(), c0_ = cpu_now();           \
      body;                                          \
      double t_ = now() - t0_, c_ = cpu_now() - c0_; \
      best = t_ < best ? t_ : best;                  \
      cpu = c_ < cpu ? c_ : cpu;                     \
    }                                                \
  } while (0)

/* The weight gradient alone (sde_nn_conv2d_backward with dinp = dbias = NULL: the input's
 * zero-padded planes, then the direct dweight kernel) at the 3x3 stride-1 shapes of the
 * fashion-mnist-32 / colorizer DDPM++ (nf 16, ch_mult 1,2,2), batch 32. Prints the median and
 * best wall ms of `reps` calls and GFLOP/s of the median (2·B·Co·Ci·9·H·W per call). */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void bench_dweight(int reps) {
  const int shapes[][3] = {/* Ci, Co, H (= W) */
                           {16, 16, 32}, {32, 16, 32}, {48, 16, 32}, {3, 16, 32}, {16, 3, 32},
                           {16, 32, 16}, {32, 32, 16}, {64, 32, 16}, {32, 32, 8},  {64, 32, 8}};
  printf("dweight 3x3 pad 1, B=32       median ms    best ms  GFLOP/s (median)\n");
  double tot = 0;
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int B = 32, Ci = shapes[i][0], Co = shapes[i][1], H = shapes[i][2];
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, H, Co, 3, 1, 1);
    float *x = rand_f((size_t)B * Ci * H * H, 1), *g = rand_f((size_t)B * Co * H * H, 1);
    float *w = rand_f((size_t)Co * Ci * 9, 0.05f), *dw = zeros_f((size_t)Co * Ci * 9);
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double *t = sde_malloc(sizeof(double) * reps), flops = 2.0 * B * Co * Ci * 9 * H * H;
    sde_nn_conv2d_backward(NULL, dw, NULL, g, x, w, &s, scratch); /* warm-up */
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      sde_nn_conv2d_backward(NULL, dw, NULL, g, x, w, &s, scratch);
      t[r] = now() - t0;
    }
    qsort(t, reps, sizeof(double), cmp_double);
    char label[64];
    snprintf(label, sizeof label, "%d->%d %dx%d", Ci, Co, H, H);
    printf("%-28s %10.3f %10.3f %9.1f\n", label, t[reps / 2] * 1e3, t[0] * 1e3,
           flops / t[reps / 2] * 1e-9);
    tot += t[reps / 2];
    free(x), free(g), free(w), free(dw), free(scratch), free(t);
  }
  printf("%-28s %10.3f\n", "sum of medians", tot * 1e3);
}

/* The forward (with bias) and the input gradient alone (sde_nn_conv2d_backward with only
 * dinp: the direct conv of dout with the flipped weights, accumulating) of the same 3x3
 * stride-1 shapes, batch 32, median and best wall ms of `reps` calls each. */
static void bench_conv(int reps) {
  const int shapes[][3] = {/* Ci, Co, H (= W) */
                           {16, 16, 32}, {32, 16, 32}, {48, 16, 32}, {3, 16, 32}, {16, 3, 32},
                           {1, 16, 32},  {16, 1, 32},  {16, 32, 16}, {32, 32, 16}, {64, 32, 16},
                           {32, 32, 8},  {64, 32, 8}};
  printf("conv 3x3 pad 1, B=32     fwd median    best GFLOP/s | dinp median    best GFLOP/s\n");
  double tf = 0, td = 0;
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int B = 32, Ci = shapes[i][0], Co = shapes[i][1], H = shapes[i][2];
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, H, Co, 3, 1, 1);
    float *x = rand_f((size_t)B * Ci * H * H, 1), *g = rand_f((size_t)B * Co * H * H, 1);
    float *w = rand_f((size_t)Co * Ci * 9, 0.05f), *bias = rand_f(Co, 0.1f);
    float *y = sde_malloc((size_t)B * Co * H * H * sizeof(float));
    float *dx = zeros_f((size_t)B * Ci * H * H);
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double *t = sde_malloc(sizeof(double) * reps), *u = sde_malloc(sizeof(double) * reps);
    double flops = 2.0 * B * Co * Ci * 9 * H * H;
    sde_nn_conv2d_forward(y, x, w, bias, &s, scratch); /* warm-up */
    sde_nn_conv2d_backward(dx, NULL, NULL, g, x, w, &s, scratch);
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      sde_nn_conv2d_forward(y, x, w, bias, &s, scratch);
      double t1 = now();
      sde_nn_conv2d_backward(dx, NULL, NULL, g, x, w, &s, scratch);
      t[r] = t1 - t0;
      u[r] = now() - t1;
    }
    qsort(t, reps, sizeof(double), cmp_double);
    qsort(u, reps, sizeof(double), cmp_double);
    char label[64];
    snprintf(label, sizeof label, "%d->%d %dx%d", Ci, Co, H, H);
    printf("%-20s %10.3f %7.3f %7.1f | %10.3f %7.3f %7.1f\n", label, t[reps / 2] * 1e3, t[0] * 1e3,
           flops / t[reps / 2] * 1e-9, u[reps / 2] * 1e3, u[0] * 1e3, flops / u[reps / 2] * 1e-9);
    tf += t[reps / 2];
    td += u[reps / 2];
    free(x), free(g), free(w), free(bias), free(y), free(dx), free(scratch), free(t), free(u);
  }
  printf("%-20s %10.3f %15s | %10.3f\n", "sum of medians", tf * 1e3, "", td * 1e3);
}

/* one call for bench_wino: out = the forward (bias), or the weight gradient (zeroed first,
 * from the output gradient g) */
static void wino_run(float *out, size_t n, int dweight, const float *g, const float *x,
                     const float *w, const float *bias, const sde_nn_conv2d_shape *s,
                     float *scratch, const sde_nn_conv2d_prep *prep) {
  if (!dweight) {
    sde_nn_conv2d_forward_prepared(out, x, w, bias, s, scratch, prep);
    return;
  }
  memset(out, 0, n * sizeof(float));
  sde_nn_conv2d_backward(NULL, out, NULL, g, x, w, s, scratch);
}

/* The direct conv against Winograd F(2x2, 3x3) and F(4x4, 3x3) (SDE_NN_WINOGRAD=0, then 2
 * with SDE_NN_WINOGRAD_TILE=2 / 4; the tile sizes are the AVX2 kernels' choice, AVX-512 runs
 * F(2x2) for both), interleaved call by call so that all see the same machine: the 3x3
 * shapes of NCSN++ CIFAR-10 (32 px) and CelebA-HQ (256 px) and of fashion-mnist-32 nf 32
 * training (batch 32). Best wall ms of `reps` calls each, and the ratios to the direct conv;
 * "*" marks what the library takes by default. */
static void bench_wino(int reps, int dweight, int prepared, int only_c, int only_h, int only_b) {
  const int shapes[][3] = {/* C (in = out), H (= W), batch */
                           {128, 32, 1}, {128, 32, 8},  {256, 16, 1},  {256, 16, 8},
                           {256, 8, 8},  {128, 256, 1}, {128, 128, 1}, {256, 64, 1},
                           {256, 32, 1}, {32, 32, 32},  {64, 16, 32},  {64, 8, 32},
                           {32, 32, 1},  {64, 16, 1},   {48, 16, 32},  {16, 32, 32},
                           {128, 32, 32}, {32, 32, 8},  {64, 32, 32},  {64, 64, 4}};
  static const char *mode[3][2] = {{"0", "2"}, {"2", "2"}, {"2", "4"}};
  printf("%s best ms   direct |  F(2x2)  ratio |  F(4x4)  ratio\n",
         dweight ? "conv 3x3 dweight," : prepared ? "prepared weights" : "conv 3x3 pad 1, ");
  const size_t nshapes = only_c ? 1 : sizeof shapes / sizeof shapes[0];
  for (size_t i = 0; i < nshapes; i++) { /* C H B given: that shape alone */
    const int C = only_c ? only_c : shapes[i][0], H = only_c ? only_h : shapes[i][1];
    const int B = only_c ? only_b : shapes[i][2];
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, C, H, H, C, 3, 1, 1);
    const size_t nx = (size_t)B * C * H * H;
    float *x = rand_f(nx, 1), *w = rand_f((size_t)C * C * 9, 0.05f), *bias = rand_f(C, 0.1f);
    /* dweight: y and yd hold the weight gradient, from the output gradient g */
    const size_t ny = dweight ? (size_t)C * C * 9 : nx;
    float *y = sde_malloc(ny * sizeof(float)), *yd = sde_malloc(ny * sizeof(float));
    float *g = rand_f(nx, 1);
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double best[3] = {1e30, 1e30, 1e30};
    int taken = -1;
    sde_nn_conv2d_prep *prep[3] = {NULL, NULL, NULL}; /* per kernel setting (prepared) */
    for (int k = 0; k < 3 && prepared; k++) {
      setenv("SDE_NN_WINOGRAD", mode[k][0], 1);
      setenv("SDE_NN_WINOGRAD_TILE", mode[k][1], 1);
      if (sde_nn_conv2d_prepare(w, &s, &prep[k])) {
        fprintf(stderr, "bench_ops: sde_nn_conv2d_prepare failed\n");
        exit(1);
      }
    }
    unsetenv("SDE_NN_WINOGRAD");
    unsetenv("SDE_NN_WINOGRAD_TILE");
    wino_run(yd, ny, dweight, g, x, w, bias, &s, scratch, NULL); /* the default path, warm-up */
    /* r < 0: warm-up. The weight gradients took up to 2-5x their steady time in the first
     * 10-40 calls of a process (the Winograd one allocates its working memory per call);
     * best of 9 after one warm-up call had reported those */
    const int warm = dweight ? 40 : 1;
    for (int r = -warm; r < reps; r++)
      for (int k = 0; k < 3; k++) {
        setenv("SDE_NN_WINOGRAD", mode[k][0], 1);
        setenv("SDE_NN_WINOGRAD_TILE", mode[k][1], 1);
        const double t0 = now();
        wino_run(y, ny, dweight, g, x, w, bias, &s, scratch, prep[k]);
        const double t = now() - t0;
        if (r >= 0 && t < best[k]) best[k] = t;
        if (r < 0 && taken < 0 && !memcmp(y, yd, ny * sizeof(float))) taken = k;
      }
    unsetenv("SDE_NN_WINOGRAD");
    unsetenv("SDE_NN_WINOGRAD_TILE");
    char label[64];
    snprintf(label, sizeof label, "B=%d C=%d %dx%d", B, C, H, H);
    printf("%-20s %8.3f%s | %7.3f%s %5.2f | %7.3f%s %5.2f\n", label, best[0] * 1e3,
           taken == 0 ? "*" : " ", best[1] * 1e3, taken == 1 ? "*" : " ", best[1] / best[0],
           best[2] * 1e3, taken == 2 ? "*" : " ", best[2] / best[0]);
    for (int k = 0; k < 3; k++) sde_nn_conv2d_prep_free(prep[k]);
    free(x), free(w), free(bias), free(y), free(yd), free(g), free(scratch);
  }
}

/* 1x1 convolutions and NIN at the shapes of training (batch 32: the resblock skips of
 * fashion-mnist-32 nf 32 and its attention NIN at 8x8) and of NCSN++ CIFAR-10 inference:
 * forward, input gradient and weight gradient, best wall ms of `reps` calls each (the
 * gradients added onto zeros, growing from call to call). AVX-512 CPUs take the direct
 * pointwise kernels, AVX2 and others OpenBLAS; SDE_NN_NO_DIRECT_CONV=1 (read once per
 * process) gives the OpenBLAS side of an A/B on AVX-512. */
static void bench_pointwise(int reps) {
  const int pw[][5] = {/* kind (0 conv1x1, 1 NIN), B, Ci, H, Co */
                       {0, 32, 96, 32, 32},  {0, 32, 64, 32, 32}, {0, 32, 32, 16, 64},
                       {0, 32, 128, 16, 64}, {0, 32, 128, 8, 64}, {1, 32, 64, 8, 64},
                       {0, 8, 256, 32, 128}, {0, 1, 256, 32, 128}, {1, 8, 256, 16, 256}};
  printf("%-26s %9s %9s %9s  (ms, best of %d; GFLOP/s of the forward)\n", "1x1 / NIN", "forward",
         "dinput", "dweight", reps);
  for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++) {
    const int nin = pw[i][0], B = pw[i][1], Ci = pw[i][2], H = pw[i][3], Co = pw[i][4];
    const int HW = H * H;
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, H, Co, 1, 1, 0);
    float *x = rand_f((size_t)B * Ci * HW, 1), *w = rand_f((size_t)Co * Ci, 0.05f);
    float *b = rand_f(Co, 0.1f), *y = sde_malloc((size_t)B * Co * HW * sizeof(float));
    float *g = rand_f((size_t)B * Co * HW, 1), *dx = sde_malloc((size_t)B * Ci * HW * sizeof(float));
    float *dw = sde_malloc((size_t)Co * Ci * sizeof(float));
    memset(dx, 0, (size_t)B * Ci * HW * sizeof(float));
    memset(dw, 0, (size_t)Co * Ci * sizeof(float));
    double t[3] = {1e30, 1e30, 1e30};
    for (int r = -1; r < reps; r++)
      for (int k = 0; k < 3; k++) {
        const double t0 = now();
        if (k == 0 && nin) sde_nn_nin_forward(y, x, w, b, B, Ci, HW, Co);
        if (k == 0 && !nin) sde_nn_conv2d_forward(y, x, w, b, &s, NULL);
        if (k == 1 && nin) sde_nn_nin_backward(dx, NULL, NULL, g, x, w, B, Ci, HW, Co);
        if (k == 1 && !nin) sde_nn_conv2d_backward(dx, NULL, NULL, g, x, w, &s, NULL);
        if (k == 2 && nin) sde_nn_nin_backward(NULL, dw, NULL, g, x, w, B, Ci, HW, Co);
        if (k == 2 && !nin) sde_nn_conv2d_backward(NULL, dw, NULL, g, x, w, &s, NULL);
        const double dt = now() - t0;
        if (r >= 0 && dt < t[k]) t[k] = dt;
      }
    char label[64];
    snprintf(label, sizeof label, "%s B=%d %d->%d %dx%d", nin ? "nin" : "1x1", B, Ci, Co, H, H);
    printf("%-26s %9.3f %9.3f %9.3f  %6.1f\n", label, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3,
           2.0 * B * Ci * Co * HW / t[0] * 1e-9);
    free(x), free(w), free(b), free(y), free(g), free(dx), free(dw);
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--pointwise")) {
    printf("threads %d (OMP_NUM_THREADS), CPU kernels %s\n", sde_get_num_threads(), sde_cpu_kernels());
    bench_pointwise(argc > 2 ? atoi(argv[2]) : 15);
    return 0;
  }
  if (argc > 1 && (!strcmp(argv[1], "--wino") || !strcmp(argv[1], "--wino-dweight") ||
                   !strcmp(argv[1], "--wino-prepared"))) {
    printf("threads %d (OMP_NUM_THREADS), CPU kernels %s\n", sde_get_num_threads(), sde_cpu_kernels());
    bench_wino(argc > 2 ? atoi(argv[2]) : 9, !strcmp(argv[1], "--wino-dweight"),
               !strcmp(argv[1], "--wino-prepared"),
               argc > 5 ? atoi(argv[3]) : 0, argc > 5 ? atoi(argv[4]) : 0, argc > 5 ? atoi(argv[5]) : 0);
    return 0;
  }
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  if (argc > 1 && !strcmp(argv[1], "--dweight")) {
    printf("threads %d (OMP_NUM_THREADS)\n", sde_get_num_threads());
    bench_dweight(argc > 2 ? atoi(argv[2]) : 30);
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "--conv")) {
    printf("threads %d (OMP_NUM_THREADS)\n", sde_get_num_threads());
    bench_conv(argc > 2 ? atoi(argv[2]) : 30);
    return 0;
  }
  printf("threads %d (OMP_NUM_THREADS), OPENBLAS_CORETYPE=%s\n", sde_get_num_threads(),
         getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
  printf("%-22s %8s %8s %8s | %9s %9s %10s | %8s %8s\n", "conv2d 3x3 pad 1", "ms", "GFLOP/s",
         "cpu GF/s", "naive ms", "naive GF/s", "naive cpuGF", "speed-up", "cpu s-up");
  const int shapes[][4] = {{1, 128, 32, 32}, {8, 128, 32, 32}, {1, 256, 16, 16},
                           {8, 256, 16, 16}, {1, 256, 8, 8},   {8, 256, 8, 8}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    int B = shapes[i][0], C = shapes[i][1], H = shapes[i][2], W = shapes[i][3];
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, C, H, W, C, 3, 1, 1);
    size_t nx = (size_t)B * C * H * W, nw = (size_t)C * C * 9;
    float *x = rand_f(nx, 1), *w = rand_f(nw, 0.05f), *b = rand_f(C, 0.1f);
    float *y = sde_malloc(nx * sizeof(float)), *y2 = sde_malloc(nx * sizeof(float));
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double flops = 2.0 * B * C * C * 9 * H * W, t, tc, tn = 0, tnc = 0;
    sde_nn_conv2d_forward(y, x, w, b, &s, scratch); /* warm-up */
    TIME_BEST(t, 5, sde_nn_conv2d_forward(y, x, w, b, &s, scratch));
    tc = cpu;
    int run_naive = !(quick && B > 1);
    if (run_naive) {
      TIME_BEST(tn, B > 1 ? 1 : 2, conv2d_naive(y2, x, w, b, &s));
      tnc = cpu;
      double md = 0;
      for (size_t j = 0; j < nx; j++) md = fmaxf(md, fabsf(y[j] - y2[j]));
      if (md > 1e-3) printf("  (mismatch vs naive: %.3g)\n", md);
    }
    char label[64];
    snprintf(label, sizeof label, "B=%d C=%d %dx%d", B, C, H, W);
    printf("%-22s %8.2f %8.1f %8.1f | ", label, t * 1e3, flops / t * 1e-9, flops / tc * 1e-9);
    if (run_naive)
      printf("%9.1f %9.2f %10.2f | %7.1fx %7.1fx\n", tn * 1e3, flops / tn * 1e-9,
             flops / tnc * 1e-9, tn / t, tnc / tc);
    else
      printf("%9s %9s %10s | %8s %8s\n", "-", "-", "-", "-", "-");
    free(x), free(w), free(b), free(y), free(y2), free(scratch);
  }

  printf("\n%-28s %10s %10s %10s\n", "other ops (B=8)", "ms", "GFLOP/s", "cpu GF/s");
  {
    int B = 8, C = 128, H = 32, W = 32;
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, C, H, W, C, 3, 1, 1);
    size_t nx = (size_t)B * C * H * W, nw = (size_t)C * C * 9;
    float *x = rand_f(nx, 1), *w = rand_f(nw, 0.05f), *g = rand_f(nx, 1);
    float *dx = zeros_f(nx), *dw = zeros_f(nw),
          *db = zeros_f(C);
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double t, flops = 2.0 * B * C * C * 9 * H * W;
    TIME_BEST(t, 2, sde_nn_conv2d_backward(dx, dw, db, g, x, w, &s, scratch));
    printf("%-28s %10.2f %10.1f %10.1f\n", "conv3x3 backward C=128 32x32", t * 1e3,
           2 * flops / t * 1e-9, 2 * flops / cpu * 1e-9);
    sde_nn_conv2d_shape s1 = sde_nn_conv2d_shape_make(B, C, H, W, C, 1, 1, 0);
    TIME_BEST(t, 3, sde_nn_conv2d_forward(dx, x, w, NULL, &s1, NULL));
    printf("%-28s %10.2f %10.1f %10.1f\n", "conv1x1 C=128 32x32", t * 1e3, flops / 9 / t * 1e-9,
           flops / 9 / cpu * 1e-9);
    float *gm = rand_f(C, 1), *bt = rand_f(C, 1);
    TIME_BEST(t, 3, sde_nn_groupnorm_silu_forward(dx, x, gm, bt, B, C, H * W, 32, 1e-6f));
    printf("%-28s %10.2f %10s\n", "groupnorm+silu C=128 32x32", t * 1e3, "-");
    float *up = sde_malloc(4 * nx * sizeof(float));
    TIME_BEST(t, 3, sde_nn_fir_upsample2x_forward(up, x, B, C, H, W));
    printf("%-28s %10.2f %10s\n", "fir upsample C=128 32x32", t * 1e3, "-");
    TIME_BEST(t, 3, sde_nn_fir_downsample2x_forward(up, x, B, C, H, W));
    printf("%-28s %10.2f %10s\n", "fir downsample C=128 32x32", t * 1e3, "-");
    int Ca = 256, N = 256;
    size_t na = (size_t)B * Ca * N;
    float *att = sde_malloc((size_t)B * N * N * sizeof(float)), *qkv = rand_f(3 * na, 1);
    TIME_BEST(t, 3, sde_nn_attention_forward(dx, att, qkv, qkv + na, qkv + 2 * na, B, Ca, N));
    printf("%-28s %10.2f %10.1f %10.1f\n", "attention C=256 16x16", t * 1e3,
           4.0 * B * Ca * N * N / t * 1e-9, 4.0 * B * Ca * N * N / cpu * 1e-9);
    free(x), free(w), free(g), free(dx), free(dw), free(db), free(scratch), free(gm), free(bt);
    free(up), free(att), free(qkv);
  }
  /* GroupNorm+SiLU backward at fashion-mnist-32's training shapes (batch 32): SiLU backward
   * into a zeroed dg then GroupNorm backward, against the fused op */
  const int gshapes[3][3] = {{16, 1024, 4}, {32, 256, 8}, {64, 64, 16}};
  for (int i = 0; i < 3; i++) {
    int B = 32, C = gshapes[i][0], HW = gshapes[i][1], G = gshapes[i][2];
    size_t n = (size_t)B * C * HW;
    float *x = rand_f(n, 1), *da = rand_f(n, 1), *gm = rand_f(C, 1), *bt = rand_f(C, 1);
    float *y = sde_malloc(n * sizeof(float)), *dg = sde_malloc(n * sizeof(float));
    float *dx = zeros_f(n), *dgm = zeros_f(C),
          *dbt = zeros_f(C), *mean = sde_malloc(B * G * sizeof(float)),
          *rstd = sde_malloc(B * G * sizeof(float));
    sde_nn_groupnorm_forward(y, mean, rstd, x, gm, bt, B, C, HW, G, 1e-6f);
    double t0, t1, c0;
    char label[64];
    TIME_BEST(t0, 30, {
      memset(dg, 0, n * sizeof(float));
      sde_nn_silu_backward(dg, da, y, n);
      sde_nn_groupnorm_backward(dx, dgm, dbt, dg, x, mean, rstd, gm, B, C, HW, G);
    });
    c0 = cpu;
    TIME_BEST(t1, 30,
              sde_nn_groupnorm_silu_backward(dx, dgm, dbt, da, x, mean, rstd, gm, bt, B, C, HW, G));
    snprintf(label, sizeof label, "gn+silu bwd C=%d HW=%d", C, HW);
    printf("%-28s %10.2f ms unfused (cpu %.2f), %.2f ms fused (cpu %.2f)\n", label, t0 * 1e3,
           c0 * 1e3, t1 * 1e3, cpu * 1e3);
    free(x), free(da), free(gm), free(bt), free(y), free(dg), free(dx), free(dgm), free(dbt);
    free(mean), free(rstd);
  }

  /* the 1x1 / NIN and stride-2 shapes of the CIFAR-10 NCSN++ (best of 5) */
  printf("\n%-28s %10s %10s %10s\n", "1x1 / NIN / stride 2", "ms", "GFLOP/s", "cpu GF/s");
  const int pw[][6] = {/* kind (0 conv1x1, 1 NIN, 2 conv3x3 s2 pad 0), B, Ci, H, Co */
                       {0, 8, 256, 32, 128}, {0, 8, 512, 16, 256}, {0, 8, 512, 8, 256},
                       {0, 1, 256, 32, 128}, {1, 8, 256, 16, 256}, {1, 1, 256, 16, 256},
                       {2, 8, 256, 9, 256},  {2, 8, 128, 17, 256}, {2, 1, 128, 17, 256}};
  for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++) {
    const int kind = pw[i][0], B = pw[i][1], Ci = pw[i][2], H = pw[i][3], Co = pw[i][4];
    const int k = kind == 2 ? 3 : 1, Ho = kind == 2 ? (H - 3) / 2 + 1 : H;
    sde_nn_conv2d_shape s = sde_nn_conv2d_shape_make(B, Ci, H, H, Co, k, kind == 2 ? 2 : 1, 0);
    float *x = rand_f((size_t)B * Ci * H * H, 1), *w = rand_f((size_t)Co * Ci * k * k, 0.05f);
    float *b = rand_f(Co, 0.1f), *y = sde_malloc((size_t)B * Co * Ho * Ho * sizeof(float));
    float *scratch = sde_malloc((sde_nn_conv2d_scratch_floats(&s) + 1) * sizeof(float));
    double flops = 2.0 * B * Co * Ci * k * k * Ho * Ho, t;
    if (kind == 1) {
      sde_nn_nin_forward(y, x, w, b, B, Ci, H * H, Co);
      TIME_BEST(t, 5, sde_nn_nin_forward(y, x, w, b, B, Ci, H * H, Co));
    } else {
      sde_nn_conv2d_forward(y, x, w, b, &s, scratch);
      TIME_BEST(t, 5, sde_nn_conv2d_forward(y, x, w, b, &s, scratch));
    }
    char label[64];
    snprintf(label, sizeof label, "%s B=%d %d->%d %dx%d", kind == 0 ? "1x1" : kind == 1 ? "nin" : "s2",
             B, Ci, Co, H, H);
    printf("%-28s %10.2f %10.1f %10.1f\n", label, t * 1e3, flops / t * 1e-9, flops / cpu * 1e-9);
    free(x), free(w), free(b), free(y), free(scratch);
  }
  return 0;
}
