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
mkdir -p runs
if [ ! -x runs/bin/scoresde ] || [ -n "$REFRESH_BIN" ]; then
  mkdir -p runs/bin
  cp "$BUILD/engine/scoresde" "$BUILD/engine/libscoresde.so" runs/bin/
fi
RUN=fashion-mnist-32 WIDTH=
if [ -n "$NF" ] && [ "$NF" != 16 ]; then RUN=fashion-mnist-32-nf$NF WIDTH="--nf $NF"; fi
ENV="env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=${THREADS:-2} OMP_WAIT_POLICY=passive"
if [ -n "$EXPORT" ]; then
  exec $ENV runs/bin/scoresde train --out runs/$RUN --resume --steps 0 \
    --sample-n 36 --sample-steps 200 --export ${OUT_MODEL:-models/$RUN.safetensors}
fi
exec 9>runs/$RUN.lock
flock -n 9 || { echo "another training of runs/$RUN is running" >&2; exit 1; }
exec $ENV nice -n 19 runs/bin/scoresde train --data fashion-mnist --out runs/$RUN \
  --preset fashion-mnist-32 $WIDTH --batch 32 --lr 5e-4 --warmup 500 --ema 0.999 --ema-warmup \
  --reduce-mean --seed 0 --steps ${STEPS:-100000} --ckpt-every 250 --ckpt-minutes 5 \
  --log-every 50 --sample-every 1000 --sample-steps 200 --resume
