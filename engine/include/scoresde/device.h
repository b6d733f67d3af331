/* Devices and model files: where a model's tensors live and its ops run (the CPU, or a
 * CUDA GPU), the precision of its GEMMs and convolutions, and loading a model file onto one.
 *
 * A model is loaded onto a device once (sde_model_load_ex); every later call (score,
 * samplers, likelihood) runs there. SDE_DEVICE_AUTO takes the GPU when this build has
 * CUDA support and a device answers, and otherwise the CPU; when a GPU is present but
 * cannot be used, sde_model_device() reports fell_back = 1 with the reason, so callers can
 * print a warning (no GPU at all is not worth one). Asking for
 * SDE_DEVICE_CUDA where there is none is an error (SDE_ENODEV), never a silent fallback.
 * Analytic models (Gaussian mixture, empirical data) always run on the CPU. */
#ifndef SCORESDE_DEVICE_H
#define SCORESDE_DEVICE_H

#include "device_kind.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "auto", "cpu", "cuda" (case-insensitive) -> kind; SDE_EINVAL with a message otherwise. */
int sde_device_parse(const char *s, sde_device_kind *out);
const char *sde_device_name(sde_device_kind kind); /* "auto", "cpu", "cuda" */
/* "fp32", "tf32", "bf16" (case-insensitive) -> precision; SDE_EINVAL otherwise. */
int sde_precision_parse(const char *s, sde_precision *out);
const char *sde_precision_name(sde_precision p); /* "fp32", "tf32", "bf16" */

/* Number of CUDA devices this build can use (0 without CUDA support, driver or GPU). */
int sde_cuda_device_count(void);

/* Loads any model file onto the CPU: a JSON analytic model (model.h) or a network
 * .safetensors (network.h), told apart by the suffix. */
int sde_model_load(const char *path, sde_model **out);

/* Options of sde_model_load_ex. Zero-initialised = {AUTO, device 0, fp32}. */
typedef struct {
  sde_device_kind device;
  int device_id;           /* CUDA ordinal (ignored on the CPU) */
  sde_precision precision; /* ignored on the CPU (always fp32) */
} sde_load_options;

#define SDE_LOAD_OPTIONS_INIT {SDE_DEVICE_AUTO, 0, SDE_PRECISION_FP32}

/* Loads a model file (as sde_model_load) onto the device of `opt` (NULL: the defaults).
 * A network's parameters are uploaded once here. Errors: those of sde_model_load, and
 * SDE_ENODEV "this build has no CUDA support" / "no CUDA device ..." for SDE_DEVICE_CUDA. */
int sde_model_load_ex(const char *path, const sde_load_options *opt, sde_model **out);

/* Where a loaded model runs. */
typedef struct {
  sde_device_kind device;  /* what the model got: SDE_DEVICE_CPU or SDE_DEVICE_CUDA */
  int device_id;
  sde_precision precision; /* in effect (fp32 on the CPU) */
  int fell_back;           /* 1: AUTO could not use the GPU that is there (reason says why) */
  char reason[192];        /* why the model runs on the CPU when that was not asked; "" */
} sde_device_info;

/* Fills *info for any model (a model made without sde_model_load_ex runs on the CPU). */
void sde_model_device(const sde_model *m, sde_device_info *info);

#ifdef __cplusplus
}
#endif
#endif
