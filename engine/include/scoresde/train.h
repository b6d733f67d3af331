/* Training NCSN++ / DDPM++ score networks with denoising score matching
 * (docs/math.md#training; docs/training.md).
 *
 * Loss (continuous time, docs/math.md#dsm-loss): per sample t ~ U(eps, 1), z ~ N(0, I),
 * x_t = mean(t)·x_0 + std(t)·z, s = score(x_t, t) (dropout active) and
 *   λ = std²:             reduce((s·std + z)²)
 *   likelihood weighting:  reduce((s + z/std)²)·g(t)²
 * reduce = mean over C·H·W (reduce_mean) or ½·sum; the loss is the batch mean.
 * Optimiser: Adam (PyTorch form, bias-corrected), learning rate (sde_train_lr)
 * lr·min((step+1)/warmup, 1), times ½(1 + cos(π·step/D)) before step D and 0 from it with a
 * cosine decay over D = lr_decay_steps steps,
 * gradients clipped to a global norm (PyTorch clip_grad_norm_: scale by
 * clip/(norm + 1e-6) when that is < 1). EMA of the weights after every step, decay `ema`,
 * or with `ema_warmup` min(ema, (1+n)/(10+n)) for the n-th update (score_sde_pytorch
 * models/ema.py). Only trainable tensors are optimised (the Fourier W stays fixed).
 *
 * Determinism: every random number of a step is keyed by (seed, step): the batch
 * indices and flips (Philox counter (b, step, stream 0x7ba7c4, 0) under key seed), the
 * times (same draw), the noise z (sde_randn(seed + 1, step, b + 1)), the dropout masks
 * (seed + 2, streams step·2^16 + b), b the sample's index in the global batch.
 * Reductions run in a fixed order, so a run is bit-identical for any thread count, and a
 * run resumed from a checkpoint equals the uninterrupted run bit for bit. A data-parallel
 * run (sde_trainer_set_reduce) draws the same numbers and differs from one process only
 * in the order of the gradient sums; it is bit-identical from run to run at a fixed
 * number of ranks.
 *
 * Classifier networks (config num_classes > 0) train the time-dependent classifier of
 * classifier guidance (docs/math.md#guidance) on the same noised batches: loss = mean cross-entropy of
 * log_softmax(logits(x_t, t))[y]; the data need labels. */
#ifndef SCORESDE_TRAIN_H
#define SCORESDE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "model.h"
#include "device.h"
#include "network.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int batch;                 /* 128 */
  double lr;                 /* 2e-4 */
  double beta1, beta2;       /* 0.9, 0.999 */
  double adam_eps;           /* 1e-8 */
  int warmup;                /* 5000 steps of linear warm-up (0: none) */
  int lr_decay_steps;        /* 0: constant lr after warm-up; D: cosine decay to 0 at step D */
  double grad_clip;          /* 1.0 (< 0: no clipping) */
  double ema;                /* 0.9999 */
  int ema_warmup;            /* 0: plain EMA (JAX); 1: PyTorch (1+n)/(10+n) warm-up */
  int reduce_mean;           /* 0: ½·sum over C·H·W; 1: mean */
  int likelihood_weighting;  /* 0 */
  double eps;                /* 1e-5: smallest training time */
  int random_flip;           /* 1: random horizontal flips */
  uint64_t seed;             /* keys initialisation, batches, noise, dropout */
} sde_train_config;

void sde_train_config_init(sde_train_config *tc);
/* The learning rate of (0-based) step `step`: warm-up, then the decay if any. */
double sde_train_lr(const sde_train_config *tc, int64_t step);
int sde_train_config_validate(const sde_train_config *tc);
/* JSON object of every field (malloc'd); the parser accepts any subset. */
char *sde_train_config_to_json(const sde_train_config *tc);
int sde_train_config_from_json(const sde_json *j, sde_train_config *tc);

/* Training images, [n, C,H,W] float in [0,1] (data space, before the model's scaler). */
typedef struct {
  int n, channels, height, width;
  float *data;
  int *labels;     /* [n] class labels or NULL (needed to train a classifier) */
  int num_classes; /* 1 + the largest label */
} sde_dataset;

/* Loads a folder of PNGs, a .npy ([N,C,H,W] or [N,H,W], values in [0,1]; uint8 arrays
 * are divided by 255) or an IDX image file (MNIST / Fashion-MNIST layout, optionally
 * gzip-compressed). Images smaller than image_size are zero-padded to it, centred
 * (28x28 -> 32x32 adds 2 pixels on every side); larger ones are an error. channels 0
 * keeps the file's own; otherwise gray and RGB convert. */
int sde_dataset_load(const char *path, int image_size, int channels, sde_dataset *ds);
/* Class labels for ds: an IDX label file (magic 0x00000801, gzip ok) or a .npy [N] of
 * integers. sde_dataset_load reads them by itself for an IDX image file named
 * "...images-idx3-ubyte[.gz]" when the matching "...labels-idx1-ubyte[.gz]" exists. */
int sde_dataset_load_labels(const char *path, sde_dataset *ds);
void sde_dataset_free(sde_dataset *ds);

/* PyTorch score_sde initialisation of a network (models/layers.py default_init):
 * variance-scaling fan_avg uniform, scale 1 for convolutions and linears, 0.1 for the
 * attention q/k/v and DDPM-block NIN shortcuts, init_scale (0 -> 1e-10) for the last conv
 * of every residual block, the attention output NIN and the output heads; biases 0,
 * GroupNorm 1/0, Fourier W ~ N(0, fourier_scale²). Keyed by seed (tensor i draws
 * sde_randu/randn(seed, i, 0)). */
int sde_ncsnpp_init_params(sde_ncsnpp *net, uint64_t seed);

typedef struct sde_trainer sde_trainer;

typedef struct {
  double loss;       /* batch-mean loss of the step (before the update) */
  double grad_norm;  /* global norm of the gradient before clipping */
  double lr;         /* learning rate used */
} sde_train_stats;

/* A new run: network from `net` (its SDE is the training SDE; continuous training),
 * parameters initialised with sde_ncsnpp_init_params(seed), Adam moments 0, EMA = the
 * initial weights, step 0. */
int sde_trainer_create(const sde_ncsnpp_config *net, const sde_train_config *tc,
                       sde_trainer **out);
void sde_trainer_free(sde_trainer *t);
/* Starts a new run from another network's weights (fine-tuning, or adding a global head to a
 * trained network, docs/training.md#init-from): every tensor of src whose name and shape
 * match one of t's is copied into the parameters and the EMA; the others keep their
 * initialisation. Only before the first step, on the host. *copied / *total (may be NULL):
 * tensors copied / tensors of t. SDE_EINVAL when nothing matches. */
int sde_trainer_init_from(sde_trainer *t, sde_model *src, int *copied, int *total);

/* One optimiser step on a batch drawn from ds (ds must match the network's image size
 * and channels). */
int sde_trainer_step(sde_trainer *t, const sde_dataset *ds, sde_train_stats *st);

/* Data-parallel training (docs/scale.md). `world` processes each hold a trainer with the
 * same state and train on one slice of every global batch: rank r takes the samples
 * [r·batch/world, (r+1)·batch/world) of the batch the single-process run would draw (the
 * same indices, flips, times, noise and dropout masks: they are keyed by the global
 * sample index). The loss and its gradient are normalised by the global batch, so the
 * ranks' gradients SUM to the single-process one; after sum_f32 every rank clips, runs
 * Adam and the EMA on the same numbers and the states stay identical. The engine knows
 * nothing of the transport: the caller's functions do the sums (MPI, NCCL, ...).
 *   sum_f32  buf[0..n) := its sum over all ranks, the same bits on every rank. When
 *            device_buffers is set and the trainer runs on a device, buf is that
 *            device's memory (every kernel writing it has finished); otherwise host
 *            memory (a device gradient is downloaded, summed and uploaded).
 *   sum_f64  the same for a few host doubles (the loss).
 * They return SDE_OK or an SDE_* error (with sde_fail's message); an error in one rank
 * must make the caller end all of them (the others wait in their next sum). */
typedef struct {
  int rank, world;  /* 0 <= rank < world <= batch */
  int (*sum_f32)(float *buf, size_t n, void *ctx);
  int (*sum_f64)(double *buf, size_t n, void *ctx);
  int device_buffers;
  void *ctx;
} sde_train_reduce;

/* Makes t one rank of a data-parallel run (r NULL or world 1: a single process again).
 * The training workspace (made at the next step) holds only the local slice. Every rank
 * must call it with the same world and its own rank, and hold the same state
 * (sde_trainer_state_hash). */
int sde_trainer_set_reduce(sde_trainer *t, const sde_train_reduce *r);
/* The samples [*first, *first + *count) of the global batch that this rank trains on. */
void sde_trainer_local_batch(const sde_trainer *t, int *first, int *count);
/* 64-bit FNV-1a over the step, parameters, Adam moments and EMA: equal on every rank of a
 * healthy data-parallel run (the callers compare it at checkpoints). */
uint64_t sde_trainer_state_hash(const sde_trainer *t);

int64_t sde_trainer_step_count(const sde_trainer *t);
const sde_ncsnpp_config *sde_trainer_net_config(const sde_trainer *t);
const sde_train_config *sde_trainer_train_config(const sde_trainer *t);
/* The buffers, [num_params] each, state_dict order. */
int64_t sde_trainer_num_params(const sde_trainer *t);
const float *sde_trainer_params(const sde_trainer *t);
const float *sde_trainer_ema(const sde_trainer *t);
const float *sde_trainer_adam_m(const sde_trainer *t);
const float *sde_trainer_adam_v(const sde_trainer *t);

/* Checkpoint: a safetensors file with 1-D F32 tensors params, adam_m, adam_v, ema and
 * __metadata__ format SDE_CHECKPOINT_FORMAT (network.h), step, scoresde (network config JSON),
 * scoresde_train (training config JSON) plus extra pairs. Written to PATH.tmp.PID, flushed
 * to disk and renamed over PATH (then the folder flushed), so PATH is always a complete
 * checkpoint; temporaries of killed writers are removed (sde_write_file_atomic). */
int sde_trainer_save(const sde_trainer *t, const char *path, const char *const *extra_meta,
                     int n_extra);
int sde_trainer_load(const char *path, sde_trainer **out);
/* Runs the network's steps on a device (device.h; NULL: AUTO): parameters, activations and
 * gradients move to the backend, the optimiser state stays on the host; results match the
 * CPU to float rounding (bit-exact on the CPU). AUTO without a GPU stays on the CPU
 * (info->fell_back). On a GPU, dropout > 0 is SDE_EUNSUPPORTED for now. info may be NULL. */
int sde_trainer_set_device(sde_trainer *t, const sde_load_options *o, sde_device_info *info);
/* Metadata value of a checkpoint file (malloc'd copy; NULL if absent or unreadable). */
char *sde_checkpoint_metadata(const char *path, const char *key);

/* A network model holding the EMA weights (sample with it; free with sde_model_free). */
int sde_trainer_ema_model(const sde_trainer *t, sde_model **out);
/* Saves the EMA weights as a model .safetensors (sde_network_save), atomically; extra
 * metadata pairs (e.g. "training" facts) are added. */
int sde_trainer_export(const sde_trainer *t, const char *path, const char *const *extra_meta,
                       int n_extra);

#ifdef __cplusplus
}
#endif
#endif
