#!/bin/sh
# Training-step benchmark: `scoresde train --preset PRESET` against PyTorch training the same
# network (bench_train_torch.py: tests/engine/ncsnpp_ref.py, the official recipe) at the same
# batch and thread count, in ROUNDS interleaved rounds (C, PyTorch, C, PyTorch, ...).
#
#   bench/bench_train.sh [BUILD_DIR] [ROUNDS] [STEPS] [BATCH] [PRESET] [DIR]
#
# Defaults: build 3 11 32 fashion-mnist-32 /tmp/bench_train.$USER. Data: Fashion-MNIST when
# installed (/usr/share/datasets/fashion-mnist), the timing does not depend on it. The C side
# runs its own thread pool on 2 threads (THREADS, default 2; the engine reads OMP_NUM_THREADS) with OpenBLAS single-
# threaded; PyTorch gets torch.set_num_threads(2). Per round each side prints the median and
# minimum wall ms per step (first step dropped as warm-up); the load average is printed
# before every run. Environment: OPENBLAS_CORETYPE is passed through as set (check with
# OPENBLAS_VERBOSE=2). BASE_BUILD=DIR adds a third side per round: that build's scoresde
# (e.g. an older commit), labelled "C base".
set -e
BUILD=${1:-build}
ROUNDS=${2:-3}
STEPS=${3:-11}
BATCH=${4:-32}
PRESET=${5:-fashion-mnist-32}
DIR=${6:-/tmp/bench_train.${USER:-me}}
THREADS=${THREADS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
SCORESDE=$BUILD/engine/scoresde
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$THREADS
mkdir -p "$DIR"
DATA=fashion-mnist
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "no fashion-mnist installed" >&2; exit 1; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cpus, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, threads $THREADS, batch $BATCH, preset $PRESET"
# the network and its initial weights for the PyTorch side
rm -rf "$DIR/init"
"$SCORESDE" train --data $DATA --out "$DIR/init" --steps 1 --preset "$PRESET" --batch "$BATCH" \
  --sample-every 1000000 --export "$DIR/net.safetensors" --quiet 2>/dev/null
c_round() { # $1: scoresde binary, $2: label
  rm -rf "$DIR/run"
  "$1" train --data $DATA --out "$DIR/run" --steps $((STEPS + 1)) --preset "$PRESET" \
    --batch "$BATCH" --log-every 1 --sample-every 1000000 2>&1 |
    awk '/steps\/s/ { for (i = 1; i <= NF; i++) if ($i == "steps/s") print 1000.0 / $(i - 1) }' |
    tail -n +2 | sort -g |
    awk '{ a[n++] = $1 } END { printf "%-7s %d steps: median %.1f ms/step, min %.1f ms/step, %.2f steps/s (median)\n", label, n, a[int(n / 2)], a[0], 1000.0 / a[int(n / 2)] }' label="$2"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  c_round "$SCORESDE" C
  if [ -n "$BASE_BUILD" ]; then
    echo "## round $r: $(uptime | sed 's/.*load/load/')"
    c_round "$BASE_BUILD/engine/scoresde" "C base"
  fi
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  /usr/bin/python3 "$HERE/bench_train_torch.py" --model "$DIR/net.safetensors" --batch "$BATCH" \
    --steps "$STEPS" --threads "$THREADS"
done
