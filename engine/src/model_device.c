/* Loading models onto a device (device.h). */
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "internal.h"
#include "scoresde/device.h"
#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/network.h"

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
