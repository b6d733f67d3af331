/* Everything of device.h: device and precision names, the CUDA device count, loading a
 * model file (any kind) onto a device, and where a loaded model runs. It sits above the
 * models and the backends: model.c (analytic models) and nn/ (networks) do not call it. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "control_internal.h"
#include "nn/network_internal.h"
#include "scoresde/device.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/network.h"

int sde_device_parse(const char *s, sde_device_kind *out) {
  static const char *const names[] = {"auto", "cpu", "cuda"};
  for (int i = 0; s && i < 3; i++)
    if (!strcasecmp(s, names[i])) {
      *out = (sde_device_kind)i;
      return SDE_OK;
    }
  return sde_fail(SDE_EINVAL, "device '%s' is not one of auto, cpu, cuda", s ? s : "(null)");
}

const char *sde_device_name(sde_device_kind kind) {
  switch (kind) {
    case SDE_DEVICE_AUTO: return "auto";
    case SDE_DEVICE_CPU: return "cpu";
    case SDE_DEVICE_CUDA: return "cuda";
  }
  return "?";
}

int sde_precision_parse(const char *s, sde_precision *out) {
  static const char *const names[] = {"fp32", "tf32", "bf16"};
  for (int i = 0; s && i < 3; i++)
    if (!strcasecmp(s, names[i])) {
      *out = (sde_precision)i;
      return SDE_OK;
    }
  return sde_fail(SDE_EINVAL, "precision '%s' is not one of fp32, tf32, bf16", s ? s : "(null)");
}

const char *sde_precision_name(sde_precision p) {
  switch (p) {
    case SDE_PRECISION_FP32: return "fp32";
    case SDE_PRECISION_TF32: return "tf32";
    case SDE_PRECISION_BF16: return "bf16";
  }
  return "?";
}

int sde_cuda_device_count(void) { return sde_backend_cuda_count(); }

int sde_model_load(const char *path, sde_model **out) {
  if (!path || !*path) return sde_fail(SDE_EINVAL, "no model file given");
  struct stat st;
  if (stat(path, &st) != 0) return sde_fail(SDE_EIO, "%s: no such model file", path);
  if (sde_has_suffix(path, ".json")) return sde_model_load_json(path, out);
  if (sde_has_suffix(path, ".safetensors")) return sde_network_load(path, out);
  return sde_fail(SDE_EFORMAT, "%s: unknown model file type (expected .json or .safetensors)", path);
}

int sde_model_load_ex(const char *path, const sde_load_options *opt, sde_model **out) {
  static const sde_load_options defaults = SDE_LOAD_OPTIONS_INIT;
  if (!out) return sde_fail(SDE_EINVAL, "model: no output");
  *out = NULL;
  if (!opt) opt = &defaults;
  /* the device first: a missing GPU is reported before any file is read */
  const sde_backend *be = NULL;
  int fell_back = 0;
  int rc = sde_backend_open(opt->device, opt->device_id, opt->precision, &be, &fell_back);
  if (rc) return rc;
  char reason[192] = "";
  if (fell_back) {
    size_t k = strlen(sde_errmsg());
    memcpy(reason, sde_errmsg(), k < sizeof reason - 1 ? k : sizeof reason - 1);
  }
  if (path && sde_has_suffix(path, ".safetensors")) {
    rc = sde_model_load(path, out);
    if (rc) {
      sde_backend_close(be);
      return rc;
    }
    rc = sde_network_use_backend(*out, be, fell_back, reason); /* takes be */
    if (rc) {
      sde_model_free(*out);
      *out = NULL;
      return sde_fail_context(rc, "%s", path);
    }
    return SDE_OK;
  }
  /* analytic models have no device code: they run on the CPU whatever was asked */
  sde_backend_close(be);
  return sde_model_load(path, out);
}

void sde_model_device(const sde_model *m, sde_device_info *info) {
  memset(info, 0, sizeof *info);
  info->device = SDE_DEVICE_CPU;
  info->precision = SDE_PRECISION_FP32;
  m = sde_guided_base(m);
  if (!sde_network_is(m)) return;
  const sde_backend *be = sde_network_backend(m);
  const char *reason;
  info->device = be->host_memory ? SDE_DEVICE_CPU : SDE_DEVICE_CUDA;
  info->device_id = be->device_id;
  info->precision = be->precision;
  info->fell_back = sde_network_fell_back(m, &reason);
  snprintf(info->reason, sizeof info->reason, "%s", reason);
}
