/* Private declarations for the files that reach across modules (nn/ncsnpp_*.c, train.c):
 * the samplers' and the network models' own private headers, and the trainer's backend
 * move. Other files include the private header of the module they use. Not installed. */
#ifndef SCORESDE_INTERNAL_H
#define SCORESDE_INTERNAL_H

#include "nn/network_internal.h"
#include "sample_internal.h"

struct sde_backend;

/* sde_trainer_set_device with an open backend (taken, closed on failure): the optimizer
 * state of the old backend comes back to the host, then moves to `be`. */
struct sde_trainer;
int sde_trainer_use_backend(struct sde_trainer *t, const struct sde_backend *be, int fell_back,
                            const char *reason);

#endif
