/* The CUDA backend (the module libscoresde_cuda.so, loaded by cuda_loader.c): device,
 * stream, cuBLAS/cuDNN handles, workspace, memory entries and error reporting. The op entries live in cuda_kernels.cu (custom kernels), cuda_blas.cu
 * (cuBLAS/cuDNN) and cuda_exact.cu (bit-exact RNG and sampler updates). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* =======================================================================================
 * errors */

int sde_cuda_fail_cuda(cudaError_t e, const char *what) {
  if (e == cudaErrorMemoryAllocation)
    return sde_fail(SDE_ENOMEM, "CUDA %s: out of GPU memory (%s)", what, cudaGetErrorString(e));
  return sde_fail(SDE_EUNSUPPORTED, "CUDA %s: %s", what, cudaGetErrorString(e));
}

int sde_cuda_fail_cublas(cublasStatus_t e, const char *what) {
  return sde_fail(e == CUBLAS_STATUS_ALLOC_FAILED ? SDE_ENOMEM : SDE_EUNSUPPORTED, "cuBLAS %s: %s",
                  what, cublasGetStatusString(e));
}

int sde_cuda_fail_cudnn(cudnnStatus_t e, const char *what) {
  return sde_fail(e == CUDNN_STATUS_ALLOC_FAILED ? SDE_ENOMEM : SDE_EUNSUPPORTED, "cuDNN %s: %s",
                  what, cudnnGetErrorString(e));
}

void sde_cuda_record(sde_cuda_impl *c, int code, const char *msg) {
  if (c->pending) return; /* the first failure is the informative one */
  c->pending = code;
  snprintf(c->pending_msg, sizeof c->pending_msg, "%s", msg);
}

int sde_cuda_check_launch(sde_cuda_impl *c, const char *what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return SDE_OK;
  return sde_cuda_fail_cuda(e, what);
}

int sde_cuda_enter(sde_cuda_impl *c) {
  pthread_mutex_lock(&c->lock);
  if (c->pending) {
    int code = c->pending;
    c->pending = 0;
    sde_fail(code, "%s", c->pending_msg);
    pthread_mutex_unlock(&c->lock);
    return code;
  }
  cudaError_t e = cudaSetDevice(c->device);
  if (e != cudaSuccess) {
    pthread_mutex_unlock(&c->lock);
    return sde_cuda_fail_cuda(e, "cudaSetDevice");
  }
  return SDE_OK;
}

void sde_cuda_leave(sde_cuda_impl *c) { pthread_mutex_unlock(&c->lock); }

/* =======================================================================================
 * memory */

int sde_cuda_malloc(sde_cuda_impl *c, size_t bytes, void **ptr) {
  *ptr = NULL;
  if (bytes == 0) bytes = 1;
  cudaError_t e = cudaMalloc(ptr, bytes);
  if (e == cudaSuccess) return SDE_OK;
  *ptr = NULL;
  cudaGetLastError(); /* not sticky: clear it so the next launch check does not see it */
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  cudaGetLastError();
  if (e == cudaErrorMemoryAllocation)
    return sde_fail(SDE_ENOMEM, "out of GPU memory: needed %.0f MiB on device %d (free %.0f MiB)",
                    (double)bytes / 1048576.0, c->device, (double)free_b / 1048576.0);
  return sde_cuda_fail_cuda(e, "cudaMalloc");
}

static void *grow(sde_cuda_impl *c, void **buf, size_t *have, size_t bytes) {
  if (bytes < 4096) bytes = 4096; /* never NULL, even for a zero-byte request */
  if (bytes <= *have) return *buf;
  if (c->capturing) { /* growing drains the stream, which a capture cannot contain */
    sde_fail(SDE_EUNSUPPORTED, "CUDA graph capture: the workspace would have to grow (%.1f MiB); run the "
             "work once before capturing it", (double)bytes / 1048576.0);
    return NULL;
  }
  /* the old buffer may still be read by queued kernels: drain before freeing */
  cudaStreamSynchronize(c->stream);
  cudaFree(*buf);
  *buf = NULL;
  *have = 0;
  size_t got = bytes + bytes / 4; /* some headroom: shapes grow a little at a time */
  void *p;
  if (sde_cuda_malloc(c, got, &p) != SDE_OK) {
    got = bytes;
    if (sde_cuda_malloc(c, got, &p) != SDE_OK) return NULL;
  }
  *buf = p;
  *have = got;
  return p;
}

void *sde_cuda_workspace(sde_cuda_impl *c, size_t bytes) { return grow(c, &c->ws, &c->ws_bytes, bytes); }
void *sde_cuda_red_workspace(sde_cuda_impl *c, size_t bytes) {
  return grow(c, &c->red, &c->red_bytes, bytes);
}

static int cuda_alloc(const sde_backend *be, size_t bytes, void **ptr) {
  sde_cuda_impl *c = sde_cuda_of(be);
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  rc = sde_cuda_malloc(c, bytes, ptr);
  sde_cuda_leave(c);
  return rc;
}

static void cuda_free(const sde_backend *be, void *ptr) {
  if (!ptr) return;
  sde_cuda_impl *c = sde_cuda_of(be);
  cudaSetDevice(c->device);
  cudaFree(ptr); /* implicitly waits for the device: queued kernels may still use ptr */
}

static int cuda_memcpy(const sde_backend *be, void *dst, const void *src, size_t bytes,
                       cudaMemcpyKind kind, int wait, const char *what) {
  sde_cuda_impl *c = sde_cuda_of(be);
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  if (bytes) {
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, c->stream);
    if (e == cudaSuccess && wait) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, what);
  }
  sde_cuda_leave(c);
  return rc;
}

/* An upload inside a graph capture: the bytes are copied now into pinned memory that
 * lives as long as the backend, and the graph copies from there (pageable memory cannot
 * be captured). The graph then replays the values of capture time. */
static int upload_captured(sde_cuda_impl *c, void *dst, const void *host_src, size_t bytes) {
  if (c->n_pinned == c->cap_pinned) {
    int cap = c->cap_pinned ? 2 * c->cap_pinned : 16;
    void **p = (void **)realloc(c->pinned, (size_t)cap * sizeof *p);
    if (!p) return sde_fail(SDE_ENOMEM, "out of memory");
    c->pinned = p;
    c->cap_pinned = cap;
  }
  void *h = NULL;
  cudaError_t e = cudaMallocHost(&h, bytes);
  if (e != cudaSuccess) return sde_cuda_fail_cuda(e, "pinned staging for a captured upload");
  memcpy(h, host_src, bytes);
  c->pinned[c->n_pinned++] = h;
  e = cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, c->stream);
  return e == cudaSuccess ? SDE_OK : sde_cuda_fail_cuda(e, "captured upload");
}

static int cuda_upload(const sde_backend *be, void *dst, const void *host_src, size_t bytes) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (c->capturing && bytes) {
    int rc = sde_cuda_enter(c);
    if (rc) return rc;
    rc = upload_captured(c, dst, host_src, bytes);
    sde_cuda_leave(c);
    return rc;
  }
  /* from pageable memory the call returns once host_src has been staged: no wait needed */
  return cuda_memcpy(be, dst, host_src, bytes, cudaMemcpyHostToDevice, 0, "upload");
}

static int cuda_download(const sde_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (sde_cuda_of(be)->capturing)
    return sde_fail(SDE_EUNSUPPORTED, "CUDA graph capture: a download waits for the GPU and cannot be captured");
  return cuda_memcpy(be, host_dst, src, bytes, cudaMemcpyDeviceToHost, 1, "download");
}

static int cuda_copy(const sde_backend *be, void *dst, const void *src, size_t bytes) {
  return cuda_memcpy(be, dst, src, bytes, cudaMemcpyDeviceToDevice, 0, "copy");
}

static int cuda_zero(const sde_backend *be, void *dst, size_t bytes) {
  sde_cuda_impl *c = sde_cuda_of(be);
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  cudaError_t e = bytes ? cudaMemsetAsync(dst, 0, bytes, c->stream) : cudaSuccess;
  if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, "zero");
  sde_cuda_leave(c);
  return rc;
}

static int cuda_synchronize(const sde_backend *be) {
  sde_cuda_impl *c = sde_cuda_of(be);
  if (c->capturing) return SDE_OK; /* everything captured is ordered anyway */
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  cudaError_t e = cudaStreamSynchronize(c->stream);
  if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, "synchronize");
  sde_cuda_leave(c);
  return rc;
}

/* =======================================================================================
 * open / close */

static void impl_destroy(sde_cuda_impl *c) {
  if (!c) return;
  cudaSetDevice(c->device);
  if (c->stream) cudaStreamSynchronize(c->stream);
  sde_cuda_conv_cache_free(c);
  if (c->cudnn) cudnnDestroy(c->cudnn);
  if (c->cublas) cublasDestroy(c->cublas);
  cudaFree(c->ws);
  cudaFree(c->red);
  for (int i = 0; i < c->n_pinned; i++) cudaFreeHost(c->pinned[i]);
  free(c->pinned);
  if (c->stream) cudaStreamDestroy(c->stream);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* The module's entry points, found by cuda_loader.c with dlsym. */
extern "C" int sde_cuda_module_open(int device_id, sde_precision precision, const sde_backend **out);
extern "C" void sde_cuda_module_close(const sde_backend *be);

extern "C" int sde_cuda_module_open(int device_id, sde_precision precision, const sde_backend **out) {
  *out = NULL;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return sde_fail(SDE_ENODEV, "CUDA: no usable GPU (%s)", cudaGetErrorString(e));
  }
  if (n == 0) return sde_fail(SDE_ENODEV, "CUDA: no GPU found");
  if (device_id < 0 || device_id >= n)
    return sde_fail(SDE_ENODEV, "CUDA: no device %d (this machine has %d)", device_id, n);
  if (precision != SDE_PRECISION_FP32 && precision != SDE_PRECISION_TF32 &&
      precision != SDE_PRECISION_BF16)
    return sde_fail(SDE_EINVAL, "CUDA: unknown precision %d", (int)precision);
  if ((e = cudaSetDevice(device_id)) != cudaSuccess) {
    cudaGetLastError();
    return sde_fail(SDE_ENODEV, "CUDA: cannot use device %d (%s)", device_id, cudaGetErrorString(e));
  }

  sde_cuda_impl *c = (sde_cuda_impl *)calloc(1, sizeof *c);
  sde_backend *be = (sde_backend *)calloc(1, sizeof *be);
  if (!c || !be) {
    free(c);
    free(be);
    return sde_fail(SDE_ENOMEM, "out of memory");
  }
  c->device = device_id;
  c->precision = precision;
  pthread_mutex_init(&c->lock, NULL);
  const char *find = getenv("SDE_CUDA_CONV_FIND");
  c->conv_find = find && find[0] == '1';
  int rc = SDE_OK;
  cublasStatus_t bs;
  cudnnStatus_t ds;
  if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
    rc = sde_cuda_fail_cuda(e, "stream");
  else if ((bs = cublasCreate(&c->cublas)) != CUBLAS_STATUS_SUCCESS)
    rc = sde_cuda_fail_cublas(bs, "create");
  else if ((bs = cublasSetStream(c->cublas, c->stream)) != CUBLAS_STATUS_SUCCESS)
    rc = sde_cuda_fail_cublas(bs, "stream");
  /* the compute type of every GEMM is chosen per call (sde_cuda_gemm); the handle's math
   * mode agrees with it: strict for fp32, TF32 tensor ops for tf32 */
  else if ((bs = cublasSetMathMode(c->cublas, precision == SDE_PRECISION_FP32   ? CUBLAS_PEDANTIC_MATH
                                              : precision == SDE_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                : CUBLAS_DEFAULT_MATH)) !=
           CUBLAS_STATUS_SUCCESS)
    rc = sde_cuda_fail_cublas(bs, "math mode");
  else if ((ds = cudnnCreate(&c->cudnn)) != CUDNN_STATUS_SUCCESS)
    rc = sde_cuda_fail_cudnn(ds, "create");
  else if ((ds = cudnnSetStream(c->cudnn, c->stream)) != CUDNN_STATUS_SUCCESS)
    rc = sde_cuda_fail_cudnn(ds, "stream");
  if (rc) {
    cudaGetLastError();
    impl_destroy(c);
    free(be);
    return rc == SDE_ENOMEM ? rc : sde_fail_context(SDE_ENODEV, "CUDA device %d", device_id);
  }

  be->name = "cuda";
  be->device_id = device_id;
  be->host_memory = 0;
  be->precision = precision;
  be->alloc = cuda_alloc;
  be->free = cuda_free;
  be->upload = cuda_upload;
  be->download = cuda_download;
  be->copy = cuda_copy;
  be->zero = cuda_zero;
  be->synchronize = cuda_synchronize;
  be->impl = c;
  sde_cuda_fill_table_kernels(be);
  sde_cuda_fill_table_blas(be);
  sde_cuda_fill_table_exact(be);
  *out = be;
  return SDE_OK;
}

extern "C" void sde_cuda_module_close(const sde_backend *be) {
  if (!be) return;
  impl_destroy(sde_cuda_of(be));
  free((void *)be);
}

/* =======================================================================================
 * CUDA graphs (cuda_graph.h): capture everything issued on the backend's stream between
 * begin and end, replay it with one launch. Relaxed capture mode, so the workspace and
 * the staging of captured uploads may still allocate. */

extern "C" int sde_cuda_module_graph_begin(const sde_backend *be);
extern "C" int sde_cuda_module_graph_end(const sde_backend *be, void **graph);
extern "C" int sde_cuda_module_graph_launch(const sde_backend *be, void *graph);
extern "C" void sde_cuda_module_graph_free(const sde_backend *be, void *graph);

extern "C" int sde_cuda_module_graph_begin(const sde_backend *be) {
  sde_cuda_impl *c = sde_cuda_of(be);
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  if (c->capturing) rc = sde_fail(SDE_EINVAL, "CUDA graph capture already open");
  cudaError_t e = rc ? cudaSuccess : cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, "graph capture");
  if (!rc) c->capturing = 1;
  sde_cuda_leave(c);
  return rc;
}

extern "C" int sde_cuda_module_graph_end(const sde_backend *be, void **graph) {
  sde_cuda_impl *c = sde_cuda_of(be);
  *graph = NULL;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  int rc = SDE_OK;
  if (!c->capturing) rc = sde_fail(SDE_EINVAL, "no CUDA graph capture open");
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  if (!rc) {
    c->capturing = 0;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      cudaGetLastError();
      rc = sde_cuda_fail_cuda(e, "graph capture end");
    }
  }
  if (!rc && c->pending) { /* an op failed inside the capture: the graph is not usable */
    rc = c->pending;
    c->pending = 0;
    sde_fail(rc, "%s", c->pending_msg);
    cudaGraphExecDestroy(exec);
    exec = NULL;
  }
  pthread_mutex_unlock(&c->lock);
  *graph = exec;
  return rc;
}

extern "C" int sde_cuda_module_graph_launch(const sde_backend *be, void *graph) {
  sde_cuda_impl *c = sde_cuda_of(be);
  int rc = sde_cuda_enter(c);
  if (rc) return rc;
  cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)graph, c->stream);
  if (e != cudaSuccess) rc = sde_cuda_fail_cuda(e, "graph launch");
  sde_cuda_leave(c);
  return rc;
}

extern "C" void sde_cuda_module_graph_free(const sde_backend *be, void *graph) {
  if (!graph) return;
  cudaSetDevice(sde_cuda_of(be)->device);
  cudaGraphExecDestroy((cudaGraphExec_t)graph);
}
