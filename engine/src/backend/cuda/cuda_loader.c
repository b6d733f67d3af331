/* The CUDA backend's entry points in libscoresde: a small loader.
 *
 * The kernels, cuBLAS and cuDNN live in a separate module, libscoresde_cuda.so, opened
 * with dlopen on the first sde_backend_cuda_open. Linking cuBLAS and cuDNN into
 * libscoresde itself would cost every program that uses the engine ~0.3 s and ~220 MB
 * at start-up (the dynamic loader relocating libcublasLt and libcudnn), GPU or not. Only
 * the CUDA runtime (small) is linked here, for the device count.
 *
 * The module is looked up as $SDE_CUDA_MODULE, then next to libscoresde itself (the
 * build tree and the install both put it there), then by name on the library path. It
 * is never unloaded. */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "../backend.h"
#include "cuda_graph.h"
#include "scoresde/error.h"

#define MODULE_NAME "libscoresde_cuda.so"

typedef int (*open_fn)(int, sde_precision, const sde_backend **);
typedef void (*close_fn)(const sde_backend *);

typedef int (*graph_begin_fn)(const sde_backend *);
typedef int (*graph_end_fn)(const sde_backend *, void **);
typedef int (*graph_launch_fn)(const sde_backend *, void *);
typedef void (*graph_free_fn)(const sde_backend *, void *);

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static open_fn module_open;
static close_fn module_close;
static graph_begin_fn module_graph_begin;
static graph_end_fn module_graph_end;
static graph_launch_fn module_graph_launch;
static graph_free_fn module_graph_free;
static char load_error[512];

static void *try_open(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h && !load_error[0]) snprintf(load_error, sizeof load_error, "%s", dlerror());
  return h;
}

static void load_module(void) {
  void *h = NULL;
  const char *env = getenv("SDE_CUDA_MODULE");
  if (env && env[0]) h = try_open(env);
  Dl_info info;
  if (!h && dladdr((void *)&sde_backend_cuda_open, &info) && info.dli_fname) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", info.dli_fname);
    snprintf(path, sizeof path, "%s/%s", dirname(dir), MODULE_NAME);
    h = try_open(path);
  }
  if (!h) h = try_open(MODULE_NAME);
  if (!h) return;
  module_open = (open_fn)dlsym(h, "sde_cuda_module_open");
  module_close = (close_fn)dlsym(h, "sde_cuda_module_close");
  module_graph_begin = (graph_begin_fn)dlsym(h, "sde_cuda_module_graph_begin");
  module_graph_end = (graph_end_fn)dlsym(h, "sde_cuda_module_graph_end");
  module_graph_launch = (graph_launch_fn)dlsym(h, "sde_cuda_module_graph_launch");
  module_graph_free = (graph_free_fn)dlsym(h, "sde_cuda_module_graph_free");
  if (!module_open || !module_close || !module_graph_begin || !module_graph_end || !module_graph_launch ||
      !module_graph_free) {
    snprintf(load_error, sizeof load_error, "%s lacks the sde_cuda_module_* entry points", MODULE_NAME);
    module_open = NULL;
  }
}

int sde_backend_cuda_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int sde_backend_cuda_open(int device_id, sde_precision precision, const sde_backend **out) {
  if (!out) return sde_fail(SDE_EINVAL, "CUDA: no output");
  *out = NULL;
  pthread_once(&load_once, load_module);
  if (!module_open)
    return sde_fail(SDE_ENODEV, "CUDA backend module %s not loadable: %s", MODULE_NAME, load_error);
  return module_open(device_id, precision, out);
}

void sde_backend_cuda_close(const sde_backend *be) {
  if (be && module_close) module_close(be);
}

/* CUDA graphs (cuda_graph.h); a backend exists, so the module is loaded. */
static int is_cuda(const sde_backend *be) { return be && module_open && !strcmp(be->name, "cuda"); }

int sde_cuda_graph_begin(const sde_backend *be) {
  if (!is_cuda(be)) return sde_fail(SDE_EINVAL, "CUDA graphs need a CUDA backend");
  return module_graph_begin(be);
}

int sde_cuda_graph_end(const sde_backend *be, sde_cuda_graph **out) {
  *out = NULL;
  if (!is_cuda(be)) return sde_fail(SDE_EINVAL, "CUDA graphs need a CUDA backend");
  void *g = NULL;
  int rc = module_graph_end(be, &g);
  *out = (sde_cuda_graph *)g;
  return rc;
}

int sde_cuda_graph_launch(const sde_backend *be, const sde_cuda_graph *g) {
  if (!is_cuda(be) || !g) return sde_fail(SDE_EINVAL, "CUDA graph launch: no CUDA backend or graph");
  return module_graph_launch(be, (void *)g);
}

void sde_cuda_graph_free(const sde_backend *be, sde_cuda_graph *g) {
  if (is_cuda(be) && g) module_graph_free(be, g);
}
