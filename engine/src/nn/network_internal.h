/* Private declarations of the network models (nn/network_*.c, nn/ncsnpp_*.c), shared with
 * the samplers, guidance, device.c and training. Not installed. */
#ifndef SCORESDE_NETWORK_INTERNAL_H
#define SCORESDE_NETWORK_INTERNAL_H

#include "scoresde/model.h"
#include "scoresde/sde.h"

/* ---- network models (nn/network_model.c; used by nn/network_file.c, -------------------
 * nn/network_diffusers.c, control_guidance.c and device.c) */

struct sde_ncsnpp;
struct sde_ncsnpp_train;

/* Wraps a network (ownership taken, freed on failure) into a model. */
int sde_network_wrap(struct sde_ncsnpp *net, sde_model **out);
/* The parameters will not change (sde_network_wrap calls it): inference forwards may keep
 * each conv's prepared weights, within SDE_WEIGHT_CACHE_MB (default 1024; 0: none), until
 * the parameters are next handed out writable (sde_ncsnpp_param_buffer, _backend_params)
 * or the backend changes. */
void sde_ncsnpp_freeze(struct sde_ncsnpp *net);
/* the bytes of prepared weights the network keeps now (tests, diagnostics) */
size_t sde_ncsnpp_prepared_bytes(const struct sde_ncsnpp *net);
/* The bare network of a network model; NULL for other models. */
const struct sde_ncsnpp *sde_network_net(const sde_model *m);
/* A training workspace of at least n samples from the model's pool (made when the pool
 * has none), and its return: score_vjp and classifier guidance run the network's training
 * forward and backward in it. */
int sde_network_train_acquire(const sde_model *m, int n, struct sde_ncsnpp_train **out);
void sde_network_train_release(const sde_model *m, struct sde_ncsnpp_train *tw, int n);
/* 1 when the network was loaded with device AUTO and could not use the GPU there, with
 * the reason in *reason ("" otherwise): what sde_model_device() reports. */
int sde_network_fell_back(const sde_model *m, const char **reason);

/* ---- end network models --------------------------------------------------------------- */

/* ---- network models on a device (nn/network_model.c, nn/ncsnpp_plan.c; used by device.c, ----
 * sample_rows.c and train.c) */

struct sde_backend;

/* Moves a network model onto backend `be` (ownership taken: closed with the model, or
 * here on failure). Parameters are uploaded once; fell_back/reason are what
 * sde_model_device() will report. */
int sde_network_use_backend(sde_model *m, const struct sde_backend *be, int fell_back,
                            const char *reason);
/* The backend of a network model (the CPU for models made without one); NULL for other
 * models. */
const struct sde_backend *sde_network_backend(const sde_model *m);

/* The bare network on a backend (nn/ncsnpp_plan.c). set_backend uploads the parameters (NULL:
 * back to the CPU); the backend is not owned. forward_dev is sde_ncsnpp_forward with x,
 * out and the workspace in backend memory (labels stay on the host). */
struct sde_ncsnpp;
int sde_ncsnpp_set_backend(struct sde_ncsnpp *net, const struct sde_backend *be);
const struct sde_backend *sde_ncsnpp_backend(const struct sde_ncsnpp *net);
int sde_ncsnpp_forward_dev(const struct sde_ncsnpp *net, int B, const float *x,
                           const float *labels, float *out, float *workspace);

/* Training on the backend (train.c): backend_params is the backend copy of the parameters
 * for the caller to update in place (the host copy is then stale and downloaded again on
 * the next sde_ncsnpp_param_buffer*, set_backend or backend_params_to_host);
 * train_backward_dev runs sde_ncsnpp_train_backward with the parameter gradient left in
 * backend memory (*dgrad, zeroed first, owned by tw). */
struct sde_ncsnpp_train;
float *sde_ncsnpp_backend_params(struct sde_ncsnpp *net);
int sde_ncsnpp_backend_params_to_host(const struct sde_ncsnpp *net);
int sde_ncsnpp_train_backward_dev(const struct sde_ncsnpp *net, struct sde_ncsnpp_train *tw,
                                  const float *dout, float **dgrad);

/* The score of a network model with x[n, D] and out[n, D] in the memory of its backend
 * (sde_network_backend); t[n] on the host. */
int sde_network_score_dev(const sde_model *m, const sde_sde *sde, int n, const float *x,
                          const float *t, float *out);

/* The same with a workspace of the caller (sde_net_workspace_create on this model, at
 * least n samples): no synchronisation, so a loop can queue step after step. */
struct sde_net_workspace;
int sde_network_score_dev_ws(const sde_model *m, const sde_sde *sde, int n, const float *x,
                             const float *t, float *out, struct sde_net_workspace *ws);

/* ---- end network models on a device --------------------------------------------------- */

#endif
