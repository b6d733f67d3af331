#!/bin/sh
# Trains, or resumes after any interruption, the shipped emoji-32 model
# (models/emoji-32.md, docs/training.md) in runs/emoji-32/.
#
#   scripts/train-emoji.sh [BUILD_DIR]                  foreground (Ctrl-C checkpoints)
#   nohup scripts/train-emoji.sh >> runs/emoji-32.log 2>&1 &
#   EXPORT=1 scripts/train-emoji.sh                     export the EMA weights of the
#                                                       latest checkpoint, no training
#   EXPORT=1 OUT_MODEL=runs/emoji-32/pilot.safetensors scripts/train-emoji.sh
#                                                       (an intermediate export)
#
# The data (runs/emoji-32/data/train.npy, 3,368 RGB glyphs) is made from the Debian
# package fonts-noto-color-emoji by tools/models/make_emoji.py, run here when missing
# (needs python3-fonttools, python3-pil, python3-numpy).
# The run is bit-identical however often it is interrupted. A second copy refuses to
# start (lock runs/emoji-32.lock). The tool is copied to runs/bin-emoji once, so
# rebuilding does not disturb a running training (REFRESH_BIN=1 copies it again).
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
mkdir -p runs
if [ ! -f runs/emoji-32/data/train.npy ]; then
  /usr/bin/python3 tools/models/make_emoji.py runs/emoji-32/data
fi
. scripts/train-common.sh
train_run emoji-32 runs/bin-emoji models/emoji-32.safetensors 1 \
  --data runs/emoji-32/data/train.npy \
  --preset fashion-mnist-32 --channels 3 --dataset-name emoji-32 \
  --batch 32 --lr 5e-4 --warmup 500 --ema 0.999 --ema-warmup \
  --reduce-mean --seed 0 --steps ${STEPS:-100000} --ckpt-every 250 --ckpt-minutes 5 \
  --log-every 50 --sample-every 1000 --sample-steps 200
