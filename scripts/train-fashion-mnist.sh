#!/bin/sh
# Trains, or resumes after any interruption, stage 1 of the shipped Fashion-MNIST model
# (models/fashion-mnist-32.md, docs/training.md: DDPM++ nf 32) in runs/fashion-mnist-32-nf32/;
# stage 2 (scripts/train-fashion-mnist-stage2.sh) goes on from its step 28,444.
#
#   scripts/train-fashion-mnist.sh [BUILD_DIR]          foreground (Ctrl-C checkpoints)
#   nohup scripts/train-fashion-mnist.sh >> runs/fashion-mnist-32-nf32.log 2>&1 &
#   STEPS=N scripts/train-fashion-mnist.sh              stop at step N (default 100,000;
#                                                       stage 2 starts from step 28,444)
#   EXPORT=1 scripts/train-fashion-mnist.sh             export the EMA weights of the
#                                                       latest checkpoint, no training, to
#                                                       runs/fashion-mnist-32-stage1.safetensors
#
# The run is bit-identical however often it is interrupted. A second copy refuses to
# start (lock runs/RUN.lock). The tool is copied to runs/bin once, so rebuilding does not
# disturb a running training (REFRESH_BIN=1 copies it again).
# Needs the Debian package dataset-fashion-mnist.
#
#   NF=16 scripts/train-fashion-mnist.sh                the predecessor (nf 16):
#                                                       runs/fashion-mnist-32, exported to
#                                                       models/fashion-mnist-32-nf16.safetensors
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
NF=${NF:-32}
case $NF in
  16) RUN=fashion-mnist-32 MODEL=models/fashion-mnist-32-nf16.safetensors ;;
  32) RUN=fashion-mnist-32-nf32 MODEL=runs/fashion-mnist-32-stage1.safetensors ;;
  *) RUN=fashion-mnist-32-nf$NF MODEL=models/$RUN.safetensors ;;
esac
. scripts/train-common.sh
train_run $RUN runs/bin $MODEL 2 \
  --data fashion-mnist --preset fashion-mnist-32 --nf "$NF" \
  --batch 32 --lr 5e-4 --warmup 500 --ema 0.999 --ema-warmup \
  --reduce-mean --seed 0 --steps ${STEPS:-100000} --ckpt-every 250 --ckpt-minutes 5 \
  --log-every 50 --sample-every 1000 --sample-steps 200
