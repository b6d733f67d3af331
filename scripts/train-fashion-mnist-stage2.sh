#!/bin/sh
# Stage 2 of the shipped Fashion-MNIST model (models/fashion-mnist-32.md): a second run
# started from stage 1's EMA weights (step 28,444 of scripts/train-fashion-mnist.sh, the
# file shipped until commit 20a712a), Adam restarted, seed 1, its EMA (0.999) starting from
# those weights. The run's EMA is exported at each step of SNAPS and the shipped file is
# their mean (tools/models/average_weights.py): the 0.999 EMA averages about 1,000 steps,
# the mean of the snapshots several thousand.
#
#   scripts/train-fashion-mnist-stage2.sh [BUILD_DIR]   train (or resume) to each step of
#                                                      SNAPS, export, average into OUT
#   SNAPS="k1 k2 ..." OUT=file ...                      other snapshot steps, another output
#
# Resumable like stage 1 (bit-identical however often it is interrupted; runs/RUN.lock).
# Stage 1's weights come from git history (runs/fashion-mnist-32-stage1.safetensors), or
# from `STEPS=28444 scripts/train-fashion-mnist.sh; EXPORT=1
# OUT_MODEL=runs/fashion-mnist-32-stage1.safetensors scripts/train-fashion-mnist.sh`.
#
# STAGE=3 runs stage 3 the same way: from stage 2's mean (models/fashion-mnist-32.safetensors
# as of commit ea42461), lr 2e-4 (a refinement, not a restart), seed 2, in
# runs/fashion-mnist-32-nf32c, its mean to runs/fashion-mnist-32-stage3.safetensors (tried
# to step 9,750 and not shipped: models/fashion-mnist-32.md).
#
# STAGE=4 anneals: from the same stage-2 mean, lr 3e-4 after 200 warm-up steps, cosine decay
# to 0 at step 6,000 (--lr-decay-steps), seed 3, in runs/fashion-mnist-32-nf32d; the EMA at
# 6,000 and the mean of the EMA at 4,500, 5,250 and 6,000 (runs/fashion-mnist-32-stage4.safetensors)
# are the candidates (tried and not shipped: models/fashion-mnist-32.md).
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
case ${STAGE:-2} in
  2) RUN=fashion-mnist-32-nf32b INIT=runs/fashion-mnist-32-stage1.safetensors INIT_REV=20a712a
     LR=5e-4 WARMUP=500 SEED=1
     SNAPS=${SNAPS:-"12750 14500 15250 16000 16750 17500 18500 19250 20000"}
     OUT=${OUT:-models/fashion-mnist-32.safetensors} ;;
  3) RUN=fashion-mnist-32-nf32c INIT=runs/fashion-mnist-32-stage2.safetensors INIT_REV=ea42461
     LR=2e-4 WARMUP=200 SEED=2
     SNAPS=${SNAPS:-"$(seq -s ' ' 1000 500 10000)"}
     OUT=${OUT:-runs/fashion-mnist-32-stage3.safetensors} ;;
  4) RUN=fashion-mnist-32-nf32d INIT=runs/fashion-mnist-32-stage2.safetensors INIT_REV=ea42461
     LR=3e-4 WARMUP=200 SEED=3 DECAY=6000
     SNAPS=${SNAPS:-"4500 5250 6000"}
     OUT=${OUT:-runs/fashion-mnist-32-stage4.safetensors} ;;
  *) echo "STAGE must be 2, 3 or 4" >&2; exit 2 ;;
esac
mkdir -p runs
[ -s $INIT ] || git show $INIT_REV:models/fashion-mnist-32.safetensors > $INIT
. scripts/train-common.sh
exports=
for k in $SNAPS; do
  e=runs/$RUN/ema-$k.safetensors
  if [ ! -s "$e" ]; then
    (train_run $RUN runs/bin - 2 \
      --init-from $INIT --data fashion-mnist --preset fashion-mnist-32 --nf 32 \
      --batch 32 --lr $LR --warmup $WARMUP --lr-decay-steps ${DECAY:-0} --ema 0.999 --reduce-mean --seed $SEED \
      --steps "$k" --ckpt-every 250 --ckpt-minutes 5 --log-every 250 --sample-n 0)
    (EXPORT=1 OUT_MODEL=$e train_run $RUN runs/bin - 2)
  fi
  exports="$exports $e"
done
# shellcheck disable=SC2086 # exports: words
/usr/bin/python3 tools/models/average_weights.py --out "$OUT" $exports
