/* Placeholder until the network commands land. */
#include <stdio.h>

#include "commands.h"

static int not_yet(const char *name) {
  fprintf(stderr, "scoresde %s: not available in this build yet\n", name);
  return 2;
}

int cmd_score(int argc, char **argv) { (void)argc; (void)argv; return not_yet("score"); }
int cmd_info(int argc, char **argv) { (void)argc; (void)argv; return not_yet("info"); }
int cmd_convert(int argc, char **argv) { (void)argc; (void)argv; return not_yet("convert"); }
