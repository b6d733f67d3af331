/* libscoresde: score-based generative modelling through SDEs, in plain C11.
 * The umbrella header; each module header documents its own part. */
#ifndef SCORESDE_H
#define SCORESDE_H

#include "error.h"
#include "rng.h"
#include "sde.h"
#include "marginal.h"
#include "model.h"
#include "device.h"
#include "sample.h"
#include "likelihood.h"
#include "control.h"
#include "plan.h"
#include "json.h"
#include "io.h"

#define SCORESDE_VERSION "0.1.0"

/* Number of threads the engine's parallel loops use, the caller's included; 0 = the CPUs
 * this process may run on. Default: OMP_NUM_THREADS, else those CPUs. Results do not
 * depend on it. Idle threads sleep after a few tens of microseconds. */
void sde_set_num_threads(int n);
int sde_get_num_threads(void);

/* The GEMM kernel set the loaded OpenBLAS chose ("Haswell", "Prescott", ...; NULL for
 * another BLAS), and the OPENBLAS_CORETYPE value that would give this CPU its FMA kernels
 * when the library fell back to generic ones (NULL when its choice is fine). The variable
 * only takes effect in a process started with it. */
const char *sde_blas_corename(void);
const char *sde_blas_better_coretype(void);

/* The SIMD kernel set the CPU ops take on this CPU (convolutions, GroupNorm, SiLU):
 * "avx512", "avx2" or "portable" (im2col + BLAS and plain C: no AVX2 and FMA, a build for
 * another architecture, or SDE_NN_NO_DIRECT_CONV=1). SDE_NN_ISA=avx2 makes an AVX-512 CPU
 * take "avx2". Read once per process. */
const char *sde_cpu_kernels(void);

/* Monotonic wall-clock time in seconds. */
double sde_now(void);

#endif
