/* Subcommands of the `scoresde` tool. Each takes the arguments after its own name
 * (argv[0] is the subcommand) and returns a process exit status. */
#ifndef SCORESDE_CLI_COMMANDS_H
#define SCORESDE_CLI_COMMANDS_H

/* Network models (engine/cli/cmd_net.c). */
int cmd_score(int argc, char **argv);   /* scoresde score --model F --in x.npy --t t.npy --out s.npy [--raw] */
int cmd_info(int argc, char **argv);    /* scoresde info FILE */
int cmd_convert(int argc, char **argv); /* scoresde convert --from pth|diffusers SRC --out FILE */

/* Training (engine/cli/cmd_train.c). */
int cmd_train(int argc, char **argv);   /* scoresde train --data SRC --out RUNDIR --steps N ... */

/* Device options (engine/cli/cli_device.c): --device auto|cpu|cuda, --cuda-device-id N,
 * --precision fp32|tf32|bf16, accepted by every command that loads a model or trains. */
#include "scoresde/device.h"
typedef struct {
  const char *device, *precision; /* NULL: auto, fp32 */
  int cuda_device_id;
  int cuda_device_id_given;       /* --cuda-device-id was on the command line */
} cli_device_args;
void cli_device_args_init(cli_device_args *d);
/* If argv[*i] is a device option (--name VALUE or --name=VALUE), takes it (advancing *i
 * past its value) and returns 1; 0 when it is another argument; -CLI_EXIT_USAGE after
 * printing a usage error. */
int cli_device_arg(const char *cmd, int argc, char **argv, int *i, cli_device_args *d);
/* Names -> load options; prints a usage error and returns CLI_EXIT_USAGE on a bad name. */
int cli_device_options(const char *cmd, const cli_device_args *d, sde_load_options *o);
/* "scoresde CMD: warning: no GPU, running on the CPU: ..." when AUTO fell back. */
void cli_device_warn(const char *cmd, const sde_device_info *info, int quiet);
/* sde_model_load_ex + the fallback warning; returns an sde_status (message set). */
int cli_load_model(const char *cmd, const char *path, const sde_load_options *o, int quiet,
                   sde_model **m);

#endif
