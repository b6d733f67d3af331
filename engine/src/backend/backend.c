/* Opening and closing backends (device.c offers them as devices, device.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "scoresde/error.h"

#ifndef SDE_HAVE_CUDA
int sde_backend_cuda_count(void) { return 0; }
#endif

/* CUDA: the device count is asked first so "no device" gets its own message (and the
 * backend constructor is only called when it can succeed). */
static int open_cuda(int device_id, sde_precision precision, const sde_backend **out) {
#ifdef SDE_HAVE_CUDA
  int n = sde_backend_cuda_count();
  if (n <= 0) return sde_fail(SDE_ENODEV, "no CUDA device (no GPU or no driver)");
  if (device_id < 0 || device_id >= n)
    return sde_fail(SDE_ENODEV, "no CUDA device %d (%d present)", device_id, n);
  int rc = sde_backend_cuda_open(device_id, precision, out);
  if (rc) return sde_fail_context(rc == SDE_ENOMEM ? rc : SDE_ENODEV, "CUDA device %d", device_id);
  return SDE_OK;
#else
  (void)device_id;
  (void)precision;
  (void)out;
  return sde_fail(SDE_ENODEV, "this build has no CUDA support");
#endif
}

int sde_backend_open(sde_device_kind kind, int device_id, sde_precision precision,
                     const sde_backend **out, int *fell_back) {
  if (fell_back) *fell_back = 0;
  if (!out) return sde_fail(SDE_EINVAL, "backend: no output");
  *out = NULL;
  if ((int)precision < SDE_PRECISION_FP32 || (int)precision > SDE_PRECISION_BF16)
    return sde_fail(SDE_EINVAL, "backend: unknown precision %d", (int)precision);
  switch (kind) {
    case SDE_DEVICE_CPU:
      *out = sde_backend_cpu();
      return SDE_OK;
    case SDE_DEVICE_CUDA:
      return open_cuda(device_id, precision, out);
    case SDE_DEVICE_AUTO: {
      /* no GPU (or no driver) is the normal case of a CPU machine, not worth a warning;
       * a GPU that is there but cannot be used is */
#ifdef SDE_HAVE_CUDA
      int gpus = sde_backend_cuda_count();
#else
      int gpus = 0;
#endif
      *out = sde_backend_cpu();
      if (gpus <= 0) return SDE_OK;
      if (open_cuda(device_id, precision, out) == SDE_OK) return SDE_OK;
      /* keep the reason (sde_errmsg) for the caller's warning */
      char why[256];
      snprintf(why, sizeof why, "%s", sde_errmsg());
      sde_fail(SDE_OK, "no GPU, running on the CPU: %s", why);
      if (fell_back) *fell_back = 1;
      *out = sde_backend_cpu();
      return SDE_OK;
    }
  }
  return sde_fail(SDE_EINVAL, "backend: unknown device kind %d", (int)kind);
}

void sde_backend_close(const sde_backend *be) {
  if (!be || be == sde_backend_cpu()) return;
#ifdef SDE_HAVE_CUDA
  if (!strcmp(be->name, "cuda")) sde_backend_cuda_close(be);
#endif
  /* other tables (tests' host-memory stand-ins for a device) belong to their makers */
}
