/* Neural score networks: the NCSN++ / DDPM++ network of Song et al. (2021) (`NCSNpp` of
 * score_sde_pytorch; DDPM++ is the same class with other options) and the score-model
 * wrapper around it.
 *
 * Model file = one .safetensors file. Its tensors are the official state_dict entries
 * `all_modules.<i>.<sub>` (prefix `module.` stripped), EMA weights, float32 (F16/BF16 are
 * widened on load). Its `__metadata__` carries the configuration as JSON under the key
 * "scoresde":
 *   {"nf":128, "ch_mult":[1,2,2,2], "num_res_blocks":4, "attn_resolutions":[16],
 *    "resblock_type":"biggan", "fir":true, "fir_kernel":[1,3,3,1], "skip_rescale":true,
 *    "progressive":"none", "progressive_input":"residual", "progressive_combine":"sum",
 *    "embedding_type":"fourier", "fourier_scale":16, "scale_by_sigma":true,
 *    "conditional":true, "init_scale":0, "dropout":0.1, "resamp_with_conv":true,
 *    "sde":{"kind":"ve","sigma_min":0.01,"sigma_max":50,"beta_min":0.1,"beta_max":20,"N":1000},
 *    "continuous":true,
 *    "data":{"image_size":32,"num_channels":3,"centered":false,"dataset":"cifar10"}}
 * Model fields may also sit under a "model" object. The loader also reads the fixture
 * layout of score_sde_pytorch exports: __metadata__ "config" = the flat config.json
 * ("sde":"vesde", sigma_min, num_scales, image_size, num_channels, centered at top level).
 *
 * Threading: a loaded network is read-only and shared; every forward call takes its
 * scratch from a per-call workspace (see sde_net_workspace) and is reentrant. Results are
 * bit-identical for any thread count. */
#ifndef SCORESDE_NETWORK_H
#define SCORESDE_NETWORK_H

#include <stddef.h>
#include <stdint.h>

#include "io.h" /* sde_safetensors */
#include "json.h"
#include "model.h"
#include "sde.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- NCSN++ configuration ----------------------------------------------------------- */

#define SDE_NET_MAX_LEVELS 12
#define SDE_NET_MAX_ATTN 12
#define SDE_NET_MAX_FIR 8

typedef enum { SDE_RESBLOCK_BIGGAN = 0, SDE_RESBLOCK_DDPM = 1 } sde_resblock_type;
typedef enum { SDE_PROG_NONE = 0, SDE_PROG_OUTPUT_SKIP = 1, SDE_PROG_INPUT_SKIP = 2,
               SDE_PROG_RESIDUAL = 3 } sde_progressive;
typedef enum { SDE_COMBINE_SUM = 0, SDE_COMBINE_CAT = 1 } sde_combine;
typedef enum { SDE_EMBED_FOURIER = 0, SDE_EMBED_POSITIONAL = 1 } sde_embedding;

typedef struct {
  /* model (names of the official configs) */
  int nf;
  int num_levels;                      /* len(ch_mult) */
  int ch_mult[SDE_NET_MAX_LEVELS];
  int num_res_blocks;
  int num_attn;
  int attn_resolutions[SDE_NET_MAX_ATTN];
  sde_resblock_type resblock_type;
  int fir;
  int fir_kernel_len;
  int fir_kernel[SDE_NET_MAX_FIR];     /* only [1,3,3,1] is implemented */
  int skip_rescale;
  sde_progressive progressive;         /* NONE, OUTPUT_SKIP or RESIDUAL */
  sde_progressive progressive_input;   /* NONE, INPUT_SKIP or RESIDUAL */
  sde_combine progressive_combine;
  sde_embedding embedding_type;
  double fourier_scale;
  int scale_by_sigma;
  int conditional;
  double init_scale, dropout;          /* training only */
  int resamp_with_conv;
  /* > 0: a time-dependent classifier instead of a score network (docs/training.md):
   * the time embedding, conv_in and the down path of this config, then GroupNorm, SiLU,
   * a global mean over H, W and a Linear to num_classes logits [B, num_classes]
   * (modules GroupNorm + Linear after the down path; no middle, up path or heads). Runs
   * only through sde_ncsnpp_train_forward/backward. "num_classes" in the JSON. */
  int num_classes;
  /* 1: a global head adds a per-channel constant to the output, predicted from the input's and
   * the middle block's spatial means and the time embedding (docs/math.md#global-head): the
   * convolutional trunk, normalised by GroupNorm in every block, all but cannot predict an
   * image's mean colour. Needs conditional; not with num_classes. "global_head" in the JSON;
   * an extension of this project, absent from the official configs. */
  int global_head;
  /* data */
  int image_size, num_channels, centered;
  char dataset[64];
  /* SDE and training mode (decide labels and the output -> score map) */
  int has_sde;                         /* the config names an SDE */
  sde_sde sde;
  int continuous;
} sde_ncsnpp_config;

/* The released configs of docs/math.md#net-configs (CIFAR-10, 32x32x3): VE NCSN++ continuous and
 * VP DDPM++ continuous. */
void sde_ncsnpp_config_ncsnpp_cifar10(sde_ncsnpp_config *c);
void sde_ncsnpp_config_ddpmpp_cifar10(sde_ncsnpp_config *c);
/* Reads a config (either layout described at the top of this file). Missing model fields
 * take the NCSN++ CIFAR-10 defaults; unknown names are errors for enum fields. */
int sde_ncsnpp_config_from_json(const sde_json *j, sde_ncsnpp_config *c);
/* Checks ranges and supported combinations (SDE_EINVAL / SDE_EUNSUPPORTED). */
int sde_ncsnpp_config_validate(const sde_ncsnpp_config *c);
/* The canonical "scoresde" JSON of c (malloc'd, free()). */
char *sde_ncsnpp_config_to_json(const sde_ncsnpp_config *c);

/* One parameter tensor of the network, in state_dict order. */
typedef struct {
  char name[96];       /* "all_modules.12.Conv_0.weight" */
  int ndim;
  int64_t shape[4];
  int64_t offset;      /* into the contiguous parameter buffer, in floats */
  int64_t numel;
  int trainable;       /* 0 only for the Fourier W (not in the EMA list) */
} sde_net_param;

/* All parameter tensors the config implies (no weights needed). *params is malloc'd. */
int sde_ncsnpp_param_list(const sde_ncsnpp_config *c, sde_net_param **params, int *n);
/* Parameter count (all, including the frozen Fourier W) and multiply-add FLOPs
 * (2 per MAC, convolutions/linears/attention only) of one evaluation of one sample. */
int sde_ncsnpp_count(const sde_ncsnpp_config *c, int64_t *num_params, int64_t *num_modules,
                     double *flops);

/* ---- the bare network ------------------------------------------------------------- */

/* Module plan + one contiguous parameter buffer (state_dict order). */
typedef struct sde_ncsnpp sde_ncsnpp;

int sde_ncsnpp_create(const sde_ncsnpp_config *c, sde_ncsnpp **out); /* parameters zeroed */
void sde_ncsnpp_free(sde_ncsnpp *net);
const sde_ncsnpp_config *sde_ncsnpp_get_config(const sde_ncsnpp *net);
float *sde_ncsnpp_param_buffer(sde_ncsnpp *net, int64_t *count);
const float *sde_ncsnpp_param_buffer_const(const sde_ncsnpp *net, int64_t *count);
const sde_net_param *sde_ncsnpp_params(const sde_ncsnpp *net, int *n);
/* Floats of scratch one forward call of batch B needs. */
size_t sde_ncsnpp_workspace_floats(const sde_ncsnpp *net, int B);
/* out[B, C,H,W] = net(x[B, C,H,W], labels[B]) (NCSNpp.forward). workspace: floats from
 * sde_ncsnpp_workspace_floats(net, B), or NULL to allocate for this call. x, labels and
 * out are host memory; the workspace is memory of the network's backend (host memory
 * unless the model was loaded onto a GPU with sde_model_load_ex, device.h). */
int sde_ncsnpp_forward(const sde_ncsnpp *net, int B, const float *x, const float *labels,
                       float *out, float *workspace);

/* ---- training: forward with saved activations, and the backward pass ---------------- */

/* A training workspace holds every activation of one forward pass of up to max_batch
 * samples (a tape of the ops in execution order plus the saved intermediates) and the
 * gradient buffers of the backward pass. flags: SDE_NCSNPP_TRAIN_DROPOUT (1) reserves the
 * dropout masks (needed for dropout > 0 in sde_ncsnpp_train_forward);
 * SDE_NCSNPP_TRAIN_BY_BATCH lets the batch choose kernels too (sde_nn_conv2d_shape.by_batch:
 * faster where the batch is fixed, as in training, but a sample's numbers then depend on the
 * batch it came in, so not for the gradients a sampler takes). One workspace per concurrent
 * caller. */
#define SDE_NCSNPP_TRAIN_DROPOUT 1
#define SDE_NCSNPP_TRAIN_BY_BATCH 2
typedef struct sde_ncsnpp_train sde_ncsnpp_train;
int sde_ncsnpp_train_create(const sde_ncsnpp *net, int max_batch, int flags,
                            sde_ncsnpp_train **out);
void sde_ncsnpp_train_free(sde_ncsnpp_train *tw);
size_t sde_ncsnpp_train_bytes(const sde_ncsnpp_train *tw);
/* out[B, C,H,W] = net(x, labels), the same numbers as sde_ncsnpp_forward when dropout is 0
 * (a classifier config writes logits out[B, num_classes]; with SDE_NCSNPP_TRAIN_BY_BATCH the
 * same up to the rounding of other kernels).
 * With dropout p > 0 (the workspace made with SDE_NCSNPP_TRAIN_DROPOUT) every ResnetBlock's
 * Dropout_0 zeroes an activation when u < p and scales the others by 1/(1-p), u = sde_randu(seed,
 * stream0 + b, 1000 + module index)[element of sample b]: deterministic for a key. */
int sde_ncsnpp_train_forward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, int B, const float *x,
                             const float *labels, float dropout, uint64_t seed, uint64_t stream0,
                             float *out);
/* Backward of the last sde_ncsnpp_train_forward of this workspace (parameters unchanged
 * in between): for the scalar Σ dout·out it ADDS ∂/∂θ into dparams[num_floats] (state_dict
 * order, every tensor including the frozen Fourier W) and ∂/∂x into dx[B, C,H,W]. Either
 * may be NULL (dparams NULL skips the weight gradients: an input gradient only). */
int sde_ncsnpp_train_backward(const sde_ncsnpp *net, sde_ncsnpp_train *tw, const float *dout,
                              float *dparams, float *dx);

/* ---- the network as a score model -------------------------------------------------- */

/* The "format" metadata of a training checkpoint (train.h): the model loaders refuse such
 * a file with the way to export it. */
#define SDE_CHECKPOINT_FORMAT "scoresde-checkpoint-1"

/* Loads a network .safetensors: config from __metadata__, every tensor name, dtype and
 * shape checked against the config (missing or extra tensors are errors; a `sigmas`
 * buffer is allowed). Fills channels/height/width, is_image = 1, centered, has_sde/sde
 * and id = first 32 hex digits of two 64-bit FNV-1a hashes over the canonical config JSON
 * and the float32 parameter bytes in state_dict order. */
int sde_network_load(const char *path, sde_model **out);
int sde_network_from_safetensors(const sde_safetensors *st, sde_model **out);
/* A network with the given config and parameters params[num_params] (NULL: zeros;
 * in the order of sde_ncsnpp_param_list). */
int sde_network_create(const sde_ncsnpp_config *c, const float *params, sde_model **out);
/* Writes m (a network) as .safetensors with the "scoresde" metadata (+ extra pairs). */
int sde_network_save(const sde_model *m, const char *path, const char *const *extra_meta,
                     int n_extra);

/* Imports a diffusers UNet2DModel NCSN++ folder (config.json +
 * diffusion_pytorch_model.safetensors; DIR or DIR/unet): SkipDownBlock2D /
 * AttnSkipDownBlock2D blocks, Fourier time embedding (docs/math.md#diffusers; the architecture of
 * the google/ncsnpp-* models: biggan+FIR, output_skip/input_skip/sum, scale_by_sigma).
 * Keys are mapped back onto all_modules.<i>.<sub> (attention to_q/to_k/to_v/to_out.0 or
 * query/key/value/proj_attn weights transposed into NIN W). The VE SDE comes from
 * scheduler_config.json (DIR, DIR/scheduler or DIR/../scheduler: sigma_min, sigma_max,
 * num_train_timesteps), else the ScoreSdeVeScheduler defaults (0.01, 1348, 2000). */
int sde_network_load_diffusers(const char *dir, sde_model **out);

int sde_network_is(const sde_model *m); /* true for models made here */
const sde_ncsnpp_config *sde_network_config(const sde_model *m);
/* The bare network of a network model, writable (training updates its parameters in
 * place; the model id then no longer describes the weights). NULL for other models. */
sde_ncsnpp *sde_network_ncsnpp(sde_model *m);
/* The contiguous parameter buffer (read-only; state_dict order). */
const float *sde_network_params(const sde_model *m, int64_t *count);

/* Network labels for times t[n] under `sde` (docs/math.md#labels, computed in float32 as the
 * reference): VE continuous sigma(t); VE discrete round((1-t)(N-1)); VP/sub-VP
 * continuous 999 t; VP discrete t (N-1). */
int sde_network_labels(const sde_model *m, const sde_sde *sde, int n, const float *t,
                       float *labels);
/* Raw network output out[n, C,H,W] = net(x[n, C,H,W], labels[n]). */
int sde_network_forward(const sde_model *m, int n, const float *x, const float *labels,
                        float *out);

/* Reusable scratch for forward calls of up to max_batch samples (one per thread or
 * stream; not shared between concurrent calls). */
typedef struct sde_net_workspace sde_net_workspace;
int sde_net_workspace_create(const sde_model *m, int max_batch, sde_net_workspace **out);
void sde_net_workspace_free(sde_net_workspace *ws);
size_t sde_net_workspace_bytes(const sde_net_workspace *ws);
int sde_network_forward_ws(const sde_model *m, sde_net_workspace *ws, int n, const float *x,
                           const float *labels, float *out);

#ifdef __cplusplus
}
#endif
#endif
