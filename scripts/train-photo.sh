#!/bin/sh
# Trains, or resumes after any interruption, the shipped photo-32 model
# (models/photo-32.md, the default of scoresdecolorize) in runs/photo-32/.
#
#   scripts/train-photo.sh [BUILD_DIR]                  foreground (Ctrl-C checkpoints)
#   nohup scripts/train-photo.sh >> runs/photo-32.log 2>&1 &
#   EXPORT=1 scripts/train-photo.sh                     export the EMA weights of the
#                                                       latest checkpoint, no training
#   EXPORT=1 OUT_MODEL=runs/photo-32/s2000.safetensors scripts/train-photo.sh
#                                                       (an intermediate export)
#
#   SET=v2 scripts/train-photo.sh                      the successor on the 153-photograph
#                                                       data set v2 (make_photos.py --set v2):
#                                                       runs/photo-v2-32, exported to
#                                                       models/photo-v2-32.safetensors
#
#   SET=global scripts/train-photo.sh                  photo-global-32: photo-v2-32's network
#                                                       plus the global head (--global-head),
#                                                       started from photo-v2-32's weights at
#                                                       step 11,572 (exported from the committed
#                                                       checkpoint when missing), data set v2
#
# To go on from the committed checkpoint on a fresh machine:
#   mkdir -p runs/photo-32
#   cp models/checkpoints/photo-32.ckpt.safetensors runs/photo-32/checkpoint.safetensors
#   scripts/train-photo.sh
#
# The data (runs/photo-32/data/train.npy, 19,200 RGB 32x32 crops of 16 photographs) is
# made from the Debian packages mate-backgrounds and plasma-workspace-wallpapers by
# tools/models/make_photos.py, run here when missing (needs python3-pil, python3-numpy;
# `scripts/setup.sh train` installs all of them).
# The run is bit-identical however often it is interrupted. A second copy refuses to
# start (lock runs/photo-32.lock). The tool is copied to runs/bin-photo once, so
# rebuilding does not disturb a running training (REFRESH_BIN=1 copies it again).
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
RUN=photo-32 DATA=runs/photo-32/data PHOTOS=v1 BIN=runs/bin-photo
EXTRA=
case "${SET:-v1}" in
  v1) ;;
  v2) RUN=photo-v2-32 DATA=runs/photo-v2/data PHOTOS=v2 ;;
  global)
    RUN=photo-global-32 DATA=runs/photo-v2/data PHOTOS=v2 BIN=runs/bin-photo-global
    INIT=runs/photo-v2-32/step11572.safetensors
    EXTRA="--global-head --init-from $INIT"
    if [ ! -f runs/$RUN/checkpoint.safetensors ] && [ ! -f $INIT ]; then
      mkdir -p runs/photo-v2-32
      [ -f runs/photo-v2-32/checkpoint.safetensors ] ||
        cp models/checkpoints/photo-v2-32.ckpt.safetensors runs/photo-v2-32/checkpoint.safetensors
      SET=v2 EXPORT=1 OUT_MODEL=$INIT "$0" "$BUILD"
    fi ;;
  *) echo "SET must be v1, v2 or global" >&2; exit 2 ;;
esac
if [ ! -f $DATA/train.npy ]; then
  /usr/bin/python3 tools/models/make_photos.py --set $PHOTOS $DATA
fi
. scripts/train-common.sh
train_run $RUN $BIN models/$RUN.safetensors 1 $EXTRA \
  --data $DATA/train.npy \
  --preset fashion-mnist-32 --channels 3 --dataset-name $RUN \
  --batch 32 --lr 5e-4 --warmup 200 --ema 0.999 --ema-warmup \
  --reduce-mean --seed 0 --steps ${STEPS:-100000} --ckpt-every 100 --ckpt-minutes 3 \
  --log-every 50 --sample-every 1000 --sample-steps 200
