/* --device, --cuda-device-id and --precision: shared by every command that loads a model
 * or trains (docs/cli.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "scoresde/scoresde.h"

void cli_device_args_init(cli_device_args *d) {
  d->device = NULL;
  d->precision = NULL;
  d->cuda_device_id = 0;
  d->cuda_device_id_given = 0;
}

int cli_device_arg(const char *cmd, int argc, char **argv, int *i, cli_device_args *d) {
  const char *a = argv[*i];
  static const char *const names[] = {"--device", "--precision", "--cuda-device-id"};
  for (int k = 0; k < 3; k++) {
    size_t n = strlen(names[k]);
    if (strncmp(a, names[k], n) || (a[n] && a[n] != '=')) continue;
    const char *val = a[n] == '=' ? a + n + 1 : NULL;
    if (!val) {
      if (*i + 1 >= argc) return -cli_usage_error(cmd, "%s needs a value", names[k]);
      val = argv[++*i];
    }
    if (k == 0) d->device = val;
    else if (k == 1) d->precision = val;
    else {
      char *end = NULL;
      long v = strtol(val, &end, 10);
      if (!*val || *end || v < 0 || v > 4096)
        return -cli_usage_error(cmd, "--cuda-device-id must be an integer in [0, 4096], not '%s'",
                                val);
      d->cuda_device_id = (int)v;
      d->cuda_device_id_given = 1;
    }
    return 1;
  }
  return 0;
}

int cli_device_options(const char *cmd, const cli_device_args *d, sde_load_options *o) {
  sde_load_options def = SDE_LOAD_OPTIONS_INIT;
  *o = def;
  if (d->device && sde_device_parse(d->device, &o->device))
    return cli_usage_error(cmd, "%s", sde_errmsg());
  if (d->precision && sde_precision_parse(d->precision, &o->precision))
    return cli_usage_error(cmd, "%s", sde_errmsg());
  o->device_id = d->cuda_device_id;
  return 0;
}

void cli_device_warn(const char *cmd, const sde_device_info *info, int quiet) {
  if (info->fell_back && !quiet)
    fprintf(stderr, "scoresde%s%s: warning: %s\n", cmd ? " " : "", cmd ? cmd : "",
            info->reason);
}

int cli_load_model(const char *cmd, const char *path, const sde_load_options *o, int quiet,
                   sde_model **m) {
  int rc = sde_model_load_ex(path, o, m);
  if (rc) return rc;
  sde_device_info info;
  sde_model_device(*m, &info);
  cli_device_warn(cmd, &info, quiet);
  return SDE_OK;
}
