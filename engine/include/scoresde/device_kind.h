/* The device and precision kinds (device.h), on their own so that the backends below the
 * model loaders can name them without depending on the loaders. */
#ifndef SCORESDE_DEVICE_KIND_H
#define SCORESDE_DEVICE_KIND_H

typedef enum { SDE_DEVICE_AUTO = 0, SDE_DEVICE_CPU, SDE_DEVICE_CUDA } sde_device_kind;
/* fp32: full float32 math (the default; the CPU always computes in fp32).
 * tf32: tensor-core GEMMs/convs with 10-bit mantissa inputs, fp32 accumulation.
 * bf16: bfloat16 GEMM/conv inputs, fp32 accumulation. */
typedef enum { SDE_PRECISION_FP32 = 0, SDE_PRECISION_TF32, SDE_PRECISION_BF16 } sde_precision;

#endif
