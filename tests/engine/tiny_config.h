/* A released NCSN++ / DDPM++ config shrunk to two levels (ch_mult 1,2, one resblock a level,
 * attention at half the image size) with nf channels, so that network tests run in seconds. */
#ifndef SCORESDE_TESTS_TINY_CONFIG_H
#define SCORESDE_TESTS_TINY_CONFIG_H

#include "scoresde/network.h"

static inline void shrink_config(sde_ncsnpp_config *c, int nf, int image_size) {
  c->nf = nf;
  c->num_levels = 2;
  c->ch_mult[0] = 1;
  c->ch_mult[1] = 2;
  c->num_res_blocks = 1;
  c->attn_resolutions[0] = image_size / 2;
  c->image_size = image_size;
}

#endif
