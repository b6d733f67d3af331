/* Private declarations of the control layer (control*.c). Not installed. */
#ifndef SCORESDE_CONTROL_INTERNAL_H
#define SCORESDE_CONTROL_INTERNAL_H

#include "scoresde/model.h"

/* The model a guided model wraps, else m (control_guidance.c; device.c: a guided model
 * runs where its base does). */
const sde_model *sde_guided_base(const sde_model *m);

#endif
