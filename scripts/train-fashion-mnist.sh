#!/bin/sh
# Trains, or resumes after any interruption, the shipped Fashion-MNIST model
# (models/fashion-mnist-32.md, docs/training.md) in runs/fashion-mnist-32/.
#
#   scripts/train-fashion-mnist.sh [BUILD_DIR]          foreground (Ctrl-C checkpoints)
#   nohup scripts/train-fashion-mnist.sh >> runs/fashion-mnist-32.log 2>&1 &
#   EXPORT=1 scripts/train-fashion-mnist.sh             export the EMA weights of the
#                                                       latest checkpoint, no training
#
# The run is bit-identical however often it is interrupted. A second copy refuses to
# start (lock runs/fashion-mnist-32.lock). The tool is copied to runs/bin once, so
# rebuilding does not disturb a running training (REFRESH_BIN=1 copies it again).
# Needs the Debian package dataset-fashion-mnist.
#
#   NF=32 scripts/train-fashion-mnist.sh                the wider successor in training
#                                                       (issue 14): runs/fashion-mnist-32-nf32,
#                                                       exported to models/fashion-mnist-32-nf32.safetensors
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
RUN=fashion-mnist-32 WIDTH=
if [ -n "$NF" ] && [ "$NF" != 16 ]; then RUN=fashion-mnist-32-nf$NF WIDTH="--nf $NF"; fi
. scripts/train-common.sh
train_run $RUN runs/bin models/$RUN.safetensors 2 \
  --data fashion-mnist --preset fashion-mnist-32 $WIDTH \
  --batch 32 --lr 5e-4 --warmup 500 --ema 0.999 --ema-warmup \
  --reduce-mean --seed 0 --steps ${STEPS:-100000} --ckpt-every 250 --ckpt-minutes 5 \
  --log-every 50 --sample-every 1000 --sample-steps 200
