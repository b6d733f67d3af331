/* Time per network evaluation of the released CIFAR-10 networks at full size with random
 * weights: NCSN++ continuous (VE, 62.8M parameters) and DDPM++ continuous (VP, 61.8M);
 * or, with --model, of a saved network (e.g. models/fashion-mnist-32.safetensors).
 *
 *   env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 \
 *     build/bench/bench_network [--iters N] [--batches 1,8] [--dir /tmp]
 *                               [--only ncsnpp|ddpmpp|ncsnpp256]
 *                               [--model FILE.safetensors]
 *
 * bench/bench_network_vs.sh runs it interleaved with another build's and with PyTorch's.
 *
 * ncsnpp256 is the 256 px NCSN++ of ve/celebahq_256_ncsnpp_continuous (ch_mult 1,1,2,2,2,2,2,
 * output_skip / input_skip progressive paths; 65.6M parameters); it runs only when named.
 *
 * Writes the weights once to DIR/bench_<name>.safetensors (shared with bench_torch.py,
 * which loads the same file and the same inputs DIR/bench_<name>_x_B.npy) and the outputs to
 * DIR/bench_<name>_out_B.npy for the comparison. Prints one line per (network, batch):
 * median milliseconds per call, per sample, and GFLOP/s (2 x multiply-adds of the convs,
 * linears and attention, from sde_ncsnpp_count). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Times B-sample forwards of m; writes the inputs and outputs to dir for bench_torch.py. */
static int bench_batches(const char *name, sde_model *m, double flops, int64_t np,
                         const int *batches, int nb, int iters, const char *dir) {
  const int64_t D = sde_model_dim(m);
  for (int bi = 0; bi < nb; bi++) {
    int B = batches[bi];
    float *x = malloc(sizeof(float) * (size_t)(B * D)), *out = malloc(sizeof(float) * (size_t)(B * D));
    float *t = malloc(sizeof(float) * (size_t)B), *lab = malloc(sizeof(float) * (size_t)B);
    st = 12345 + (uint64_t)B;
    for (int64_t i = 0; i < B * D; i++) x[i] = 0.5f + 0.3f * gauss();
    for (int b = 0; b < B; b++) t[b] = (float)(b + 1) / (float)(B + 1);
    sde_network_labels(m, &m->sde, B, t, lab);
    char xp[1100];
    int64_t shape[4] = {B, m->channels, m->height, m->width}, ts[1] = {B};
    snprintf(xp, sizeof xp, "%s/bench_%s_x_%d.npy", dir, name, B);
    sde_npy_write(xp, x, 4, shape);
    snprintf(xp, sizeof xp, "%s/bench_%s_t_%d.npy", dir, name, B);
    sde_npy_write(xp, t, 1, ts);
    sde_net_workspace *ws;
    if (sde_net_workspace_create(m, B, &ws)) {
      fprintf(stderr, "workspace: %s\n", sde_errmsg());
      return 1;
    }
    sde_network_forward_ws(m, ws, B, x, lab, out); /* warm-up */
    double times[64], cpus[64];
    int it = iters < 64 ? iters : 64;
    for (int i = 0; i < it; i++) {
      double t0 = sde_now(), c0 = cpu_now();
      if (sde_network_forward_ws(m, ws, B, x, lab, out)) {
        fprintf(stderr, "forward: %s\n", sde_errmsg());
        return 1;
      }
      times[i] = sde_now() - t0;
      cpus[i] = cpu_now() - c0;
    }
    qsort(times, (size_t)it, sizeof *times, cmp_double);
    qsort(cpus, (size_t)it, sizeof *cpus, cmp_double);
    double med = times[it / 2], cmed = cpus[it / 2];
    printf("%-8s %5d %12.1f %12.1f %10.1f %12lld %10.2f %12.1f\n", name, B, med * 1e3,
           med * 1e3 / B, flops * B / med * 1e-9, (long long)np, flops * 1e-9, cmed * 1e3);
    fflush(stdout);
    snprintf(xp, sizeof xp, "%s/bench_%s_out_%d.npy", dir, name, B);
    sde_npy_write(xp, out, 4, shape);
    sde_net_workspace_free(ws);
    free(x); free(out); free(t); free(lab);
  }
  return 0;
}

/* --model FILE: the saved network instead of the CIFAR-10 ones */
static int bench_file(const char *path, const int *batches, int nb, int iters, const char *dir) {
  sde_model *m;
  if (sde_network_load(path, &m)) {
    fprintf(stderr, "%s: %s\n", path, sde_errmsg());
    return 1;
  }
  int64_t np;
  double flops;
  sde_ncsnpp_count(sde_network_config(m), &np, NULL, &flops);
  int rc = bench_batches("model", m, flops, np, batches, nb, iters, dir);
  sde_model_free(m);
  return rc;
}

int main(int argc, char **argv) {
  int iters = 5, batches[8] = {1, 8}, nb = 2;
  const char *dir = "/tmp", *only = NULL, *model = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
      nb = 0;
      for (char *s = strtok(argv[++i], ","); s && nb < 8; s = strtok(NULL, ",")) batches[nb++] = atoi(s);
    } else {
      fprintf(stderr, "usage: bench_network [--iters N] [--batches 1,8] [--dir D] "
                      "[--only ncsnpp|ddpmpp|ncsnpp256] [--model FILE]\n");
      return 2;
    }
  }
  printf("# threads %d (OMP_NUM_THREADS=%s, OPENBLAS_NUM_THREADS=%s), CPU kernels %s\n",
         sde_get_num_threads(), getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "-",
         getenv("OPENBLAS_NUM_THREADS") ? getenv("OPENBLAS_NUM_THREADS") : "-", sde_cpu_kernels());
  printf("%-8s %5s %12s %12s %10s %12s %10s %12s\n", "network", "batch", "ms/call", "ms/sample",
         "GFLOP/s", "params", "GFLOP/smp", "cpu-ms/call");
  if (model) return bench_file(model, batches, nb, iters, dir);
  for (int which = 0; which < 3; which++) {
    const char *name = which == 0 ? "ncsnpp" : which == 1 ? "ddpmpp" : "ncsnpp256";
    if (only ? strcmp(only, name) != 0 : which == 2) continue;
    sde_ncsnpp_config c;
    if (which == 1) sde_ncsnpp_config_ddpmpp_cifar10(&c);
    else sde_ncsnpp_config_ncsnpp_cifar10(&c);
    c.dropout = 0.1;
    if (which == 2) { /* ve/celebahq_256_ncsnpp_continuous */
      static const int mult[] = {1, 1, 2, 2, 2, 2, 2};
      c.num_levels = 7;
      memcpy(c.ch_mult, mult, sizeof mult);
      c.num_res_blocks = 2;
      c.progressive = SDE_PROG_OUTPUT_SKIP;
      c.progressive_input = SDE_PROG_INPUT_SKIP;
      c.dropout = 0.0;
      c.image_size = 256;
      c.sde.sigma_max = 348.0;
      snprintf(c.dataset, sizeof c.dataset, "celebahq");
    }
    int64_t np;
    double flops;
    sde_ncsnpp_count(&c, &np, NULL, &flops);
    sde_net_param *params;
    int n;
    sde_ncsnpp_param_list(&c, &params, &n);
    float *w = malloc(sizeof(float) * (size_t)np);
    for (int i = 0; i < n; i++) {
      const sde_net_param *p = &params[i];
      int gn_weight = p->ndim == 1 && strstr(p->name, "weight") != NULL;
      int fourier = !strcmp(p->name, "all_modules.0.W") && c.embedding_type == SDE_EMBED_FOURIER;
      for (int64_t k = 0; k < p->numel; k++)
        w[p->offset + k] = fourier ? 16.0f * gauss() : gn_weight ? 1.0f + 0.1f * gauss()
                           : 0.02f * gauss();
    }
    free(params);
    sde_model *m;
    if (sde_network_create(&c, w, &m)) {
      fprintf(stderr, "create: %s\n", sde_errmsg());
      return 1;
    }
    free(w);
    char path[1024];
    snprintf(path, sizeof path, "%s/bench_%s.safetensors", dir, name);
    if (sde_network_save(m, path, NULL, 0)) fprintf(stderr, "save: %s\n", sde_errmsg());
    if (bench_batches(name, m, flops, np, batches, nb, iters, dir)) return 1;
    sde_model_free(m);
  }
  return 0;
}
