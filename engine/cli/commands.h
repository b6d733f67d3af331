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

#endif
