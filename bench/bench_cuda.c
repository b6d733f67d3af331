/* Time per NCSN++ evaluation on the CUDA backend: the CIFAR-10 VE NCSN++ continuous config
 * (62.8M parameters) and the 256 px NCSN++ config (CelebA-HQ/FFHQ-256: nf 128,
 * ch_mult 1,1,2,2,2,2,2, 2 blocks per level, attention at 16), random weights.
 *
 *   build/bench/bench_cuda [--configs cifar10,256] [--batches-cifar10 1,8,64]
 *       [--batches-256 1,4] [--precisions fp32,tf32,bf16] [--iters N] [--dir D]
 *       [--device-id N] [--check] [--cpu] [--no-graph]
 *
 * Writes the weights once per config to DIR/bench_cuda_<cfg>.safetensors, the inputs to
 * DIR/bench_cuda_<cfg>_x_B.npy / _t_B.npy and the outputs to
 * DIR/bench_cuda_<cfg>_<precision>_out_B.npy, so bench_torch_cuda.py runs PyTorch on the
 * same weights and inputs and compares. x, out and the workspace stay on the GPU; the time
 * is the wall time of sde_ncsnpp_forward_dev + synchronize (median of N). --check also runs
 * the CPU backend at batch 1 and prints the relative difference. The same forward is also
 * captured once into a CUDA graph and replayed (column "graph ms", and whether its output
 * has the eager output's bits); --no-graph skips that. --cpu runs the same
 * harness on the CPU backend (to check the harness where there is no GPU). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda/cuda_graph.h"
#include "internal.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/model.h"
#include "scoresde/network.h"
#include "scoresde/scoresde.h"

static uint64_t st = 0x243F6A8885A308D3ull;
static double uniform01(void) {
  st = st * 6364136223846793005ull + 1442695040888963407ull;
  return ((st >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float gauss(void) {
  double u = uniform01(), v = uniform01();
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static int parse_list(char *s, int *out, int max) {
  int n = 0;
  for (char *p = strtok(s, ","); p && n < max; p = strtok(NULL, ",")) out[n++] = atoi(p);
  return n;
}

static void config_256(sde_ncsnpp_config *c) {
  sde_ncsnpp_config_ncsnpp_cifar10(c);
  const int mult[7] = {1, 1, 2, 2, 2, 2, 2};
  c->num_levels = 7;
  for (int i = 0; i < 7; i++) c->ch_mult[i] = mult[i];
  c->num_res_blocks = 2;
  c->image_size = 256;
  snprintf(c->dataset, sizeof c->dataset, "CelebAHQ");
}

static double max_rel(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  return den > 0 ? num / den : num;
}

int main(int argc, char **argv) {
  int iters = 20, device_id = 0, check = 0, on_cpu = 0, use_graph = 1;
  int bc[8] = {1, 8, 64}, nbc = 3, b256[8] = {1, 4}, nb256 = 2;
  char configs[64] = "cifar10,256", precs[64] = "fp32,tf32,bf16";
  const char *dir = "/tmp";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--device-id") && i + 1 < argc) device_id = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--configs") && i + 1 < argc) snprintf(configs, sizeof configs, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--precisions") && i + 1 < argc) snprintf(precs, sizeof precs, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--batches-cifar10") && i + 1 < argc) nbc = parse_list(argv[++i], bc, 8);
    else if (!strcmp(argv[i], "--batches-256") && i + 1 < argc) nb256 = parse_list(argv[++i], b256, 8);
    else if (!strcmp(argv[i], "--check")) check = 1;
    else if (!strcmp(argv[i], "--cpu")) on_cpu = 1;
    else if (!strcmp(argv[i], "--no-graph")) use_graph = 0;
    else {
      fprintf(stderr, "usage: bench_cuda [--configs cifar10,256] [--batches-cifar10 1,8,64] [--batches-256 1,4]\n"
                      "  [--precisions fp32,tf32,bf16] [--iters N] [--dir D] [--device-id N] [--check] [--cpu]\n"
                      "  [--no-graph]\n");
      return 2;
    }
  }
  if (iters < 1) iters = 1;
  if (iters > 256) iters = 256;
  if (!on_cpu && sde_cuda_device_count() <= 0) {
    fprintf(stderr, "bench_cuda: no CUDA device\n");
    return 77;
  }
  printf("%-8s %-5s %5s %12s %12s %12s %10s %12s %10s %8s\n", "config", "prec", "batch", "ms/call", "min ms",
         "ms/sample", "GFLOP/s", "cpu rel err", "graph ms", "graph=");
  for (int which = 0; which < 2; which++) {
    const char *cname = which == 0 ? "cifar10" : "256";
    if (!strstr(configs, cname)) continue;
    sde_ncsnpp_config c;
    if (which == 0) sde_ncsnpp_config_ncsnpp_cifar10(&c);
    else config_256(&c);
    int64_t np;
    double flops;
    if (sde_ncsnpp_count(&c, &np, NULL, &flops)) {
      fprintf(stderr, "config %s: %s\n", cname, sde_errmsg());
      return 1;
    }
    /* random weights as bench_network: GroupNorm scales near 1, Fourier W ~ N(0, 16²) */
    sde_net_param *params;
    int n;
    sde_ncsnpp_param_list(&c, &params, &n);
    float *w = malloc(sizeof(float) * (size_t)np);
    st = 0x243F6A8885A308D3ull + (uint64_t)which;
    for (int i = 0; i < n; i++) {
      const sde_net_param *p = &params[i];
      int gn_weight = p->ndim == 1 && strstr(p->name, "weight") != NULL;
      int fourier = !strcmp(p->name, "all_modules.0.W") && c.embedding_type == SDE_EMBED_FOURIER;
      for (int64_t k = 0; k < p->numel; k++)
        w[p->offset + k] = fourier ? 16.0f * gauss() : gn_weight ? 1.0f + 0.1f * gauss() : 0.02f * gauss();
    }
    free(params);
    sde_model *m;
    sde_ncsnpp *net;
    if (sde_network_create(&c, w, &m) || sde_ncsnpp_create(&c, &net)) {
      fprintf(stderr, "create: %s\n", sde_errmsg());
      return 1;
    }
    int64_t count;
    memcpy(sde_ncsnpp_param_buffer(net, &count), w, sizeof(float) * (size_t)np);
    free(w);
    char path[1200];
    snprintf(path, sizeof path, "%s/bench_cuda_%s.safetensors", dir, cname);
    if (sde_network_save(m, path, NULL, 0)) fprintf(stderr, "save: %s\n", sde_errmsg());
    const int64_t D = sde_model_dim(m);
    int *batches = which == 0 ? bc : b256, nb = which == 0 ? nbc : nb256;

    char pl[64];
    snprintf(pl, sizeof pl, "%s", precs);
    for (char *ps = strtok(pl, ","); ps; ps = strtok(NULL, ",")) {
      sde_precision prec;
      if (sde_precision_parse(ps, &prec)) {
        fprintf(stderr, "%s\n", sde_errmsg());
        return 2;
      }
      const sde_backend *be = sde_backend_cpu();
      if ((!on_cpu && sde_backend_cuda_open(device_id, prec, &be)) || sde_ncsnpp_set_backend(net, be)) {
        fprintf(stderr, "CUDA: %s\n", sde_errmsg());
        return 1;
      }
      for (int bi = 0; bi < nb; bi++) {
        int B = batches[bi];
        size_t nx = (size_t)B * D, nws = sde_ncsnpp_workspace_floats(net, B);
        float *x = malloc(sizeof(float) * nx), *out = malloc(sizeof(float) * nx);
        float *t = malloc(sizeof(float) * B), *lab = malloc(sizeof(float) * B);
        st = 12345 + (uint64_t)B;
        for (size_t i = 0; i < nx; i++) x[i] = 0.5f + 0.3f * gauss();
        for (int b = 0; b < B; b++) t[b] = (float)(b + 1) / (float)(B + 1);
        sde_network_labels(m, &m->sde, B, t, lab);
        int64_t shape[4] = {B, m->channels, m->height, m->width}, ts[1] = {B};
        snprintf(path, sizeof path, "%s/bench_cuda_%s_x_%d.npy", dir, cname, B);
        sde_npy_write(path, x, 4, shape);
        snprintf(path, sizeof path, "%s/bench_cuda_%s_t_%d.npy", dir, cname, B);
        sde_npy_write(path, t, 1, ts);
        float *dx = NULL, *dout = NULL, *dws = NULL;
        int rc = be->alloc(be, nx * sizeof(float), (void **)&dx);
        if (!rc) rc = be->alloc(be, nx * sizeof(float), (void **)&dout);
        if (!rc) rc = be->alloc(be, nws * sizeof(float), (void **)&dws);
        if (!rc) rc = be->upload(be, dx, x, nx * sizeof(float));
        /* warm-up: cuDNN algorithm choice, workspace growth, lazy module loading */
        for (int i = 0; !rc && i < 3; i++) rc = sde_ncsnpp_forward_dev(net, B, dx, lab, dout, dws);
        if (!rc) rc = be->synchronize(be);
        double times[256];
        for (int i = 0; !rc && i < iters; i++) {
          double t0 = sde_now();
          rc = sde_ncsnpp_forward_dev(net, B, dx, lab, dout, dws);
          if (!rc) rc = be->synchronize(be);
          times[i] = sde_now() - t0;
        }
        if (!rc) rc = be->download(be, out, dout, nx * sizeof(float));
        if (rc) {
          fprintf(stderr, "%s %s batch %d: %s\n", cname, ps, B, sde_errmsg());
          return 1;
        }
        qsort(times, (size_t)iters, sizeof *times, cmp_double);
        double med = times[iters / 2], tmin = times[0];
        /* the same forward as one CUDA graph */
        double gmed = -1;
        int gsame = -1;
        if (!on_cpu && use_graph) {
          sde_cuda_graph *g = NULL;
          int grc = sde_cuda_graph_begin(be);
          if (!grc) {
            int frc = sde_ncsnpp_forward_dev(net, B, dx, lab, dout, dws);
            grc = sde_cuda_graph_end(be, &g);
            if (frc) grc = frc;
          }
          for (int i = -2; !grc && i < iters; i++) { /* two warm-up launches */
            double t0 = sde_now();
            grc = sde_cuda_graph_launch(be, g);
            if (!grc) grc = be->synchronize(be);
            if (i >= 0) times[i] = sde_now() - t0;
          }
          float *gout = malloc(sizeof(float) * nx);
          if (!grc) grc = be->download(be, gout, dout, nx * sizeof(float));
          if (!grc) {
            qsort(times, (size_t)iters, sizeof *times, cmp_double);
            gmed = times[iters / 2];
            gsame = !memcmp(gout, out, nx * sizeof(float));
          } else {
            fprintf(stderr, "%s %s batch %d: CUDA graph: %s\n", cname, ps, B, sde_errmsg());
          }
          free(gout);
          sde_cuda_graph_free(be, g);
        }
        double err = -1;
        if (check && B == 1) { /* the CPU backend on the same input */
          float *ref = malloc(sizeof(float) * nx);
          if (!sde_ncsnpp_set_backend(net, NULL) && !sde_ncsnpp_forward(net, B, x, lab, ref, NULL))
            err = max_rel(out, ref, nx);
          free(ref);
          if (sde_ncsnpp_set_backend(net, be)) {
            fprintf(stderr, "CUDA: %s\n", sde_errmsg());
            return 1;
          }
        }
        printf("%-8s %-5s %5d %12.3f %12.3f %12.3f %10.1f %12.3g %10.3f %8s\n", cname, ps, B, med * 1e3, tmin * 1e3,
               med * 1e3 / B, flops * B / med * 1e-9, err, gmed * 1e3, gsame < 0 ? "-" : gsame ? "bits" : "DIFF");
        fflush(stdout);
        snprintf(path, sizeof path, "%s/bench_cuda_%s_%s_out_%d.npy", dir, cname, ps, B);
        sde_npy_write(path, out, 4, shape);
        be->free(be, dx);
        be->free(be, dout);
        be->free(be, dws);
        free(x), free(out), free(t), free(lab);
      }
      sde_ncsnpp_set_backend(net, NULL);
      if (!on_cpu) sde_backend_cuda_close(be);
    }
    sde_ncsnpp_free(net);
    sde_model_free(m);
  }
  return 0;
}
