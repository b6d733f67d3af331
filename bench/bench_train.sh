#!/bin/sh
# Training-step benchmark: `scoresde train --preset PRESET` against PyTorch training the same
# network (bench_train_torch.py: tests/engine/ncsnpp_ref.py, the official recipe) at the same
# batch and thread count, in ROUNDS interleaved rounds (C, PyTorch, C, PyTorch, ...).
#
#   bench/bench_train.sh [BUILD_DIR] [ROUNDS] [STEPS] [BATCH] [PRESET] [DIR]
#
# Defaults: build 3 11 32 fashion-mnist-32 /tmp/bench_train.$USER. TRAIN_ARGS: more
# `scoresde train` options that change the network, for every C run and the exported config
# the PyTorch side builds its network from, e.g. TRAIN_ARGS="--channels 3" (the colorizers
# emoji-32 and photo-32: the preset with 3 channels) or TRAIN_ARGS="--nf 32" (the wider
# successor, scripts/train-fashion-mnist.sh NF=32). Data: Fashion-MNIST when installed
# (/usr/share/datasets/fashion-mnist; with --channels 3 each image is repeated in 3
# channels), the timing does not depend on it; PyTorch gets random data of the shape. The C side
# runs its own thread pool on 2 threads (THREADS, default 2; the engine reads OMP_NUM_THREADS) with OpenBLAS single-
# threaded; PyTorch gets torch.set_num_threads(2). Per round each side prints the median and
# minimum wall ms per step (first step dropped as warm-up) and GFLOP/s of the median, with
# 3 x (`scoresde info`'s GFLOP per evaluation) x BATCH per step (backward = 2 x forward for
# the convolutions, linears and attention); the load average is printed before every run. Environment: OPENBLAS_CORETYPE is passed through as set (check with
# OPENBLAS_VERBOSE=2). BASE_BUILD=DIR adds a third side per round: that build's scoresde
# (e.g. an older commit), labelled "C base". NO_TORCH=1 leaves the PyTorch side out (an A/B
# of two builds on a loaded machine, where PyTorch's spinning threads take most of the run).
# At the end: C against PyTorch (and C base) per round, and the sides' fastest steps.
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
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cpus, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, threads $THREADS, batch $BATCH, preset $PRESET ${TRAIN_ARGS}, $("$SCORESDE" --version | grep 'CPU kernels')"
# the network and its initial weights for the PyTorch side (the sample grid kept tiny)
rm -rf "$DIR/init"
# shellcheck disable=SC2086 # TRAIN_ARGS: words
"$SCORESDE" train --data $DATA --out "$DIR/init" --steps 1 --preset "$PRESET" --batch "$BATCH" \
  $TRAIN_ARGS --sample-n 1 --sample-steps 1 --export "$DIR/net.safetensors" --quiet 2>/dev/null
GF=$("$SCORESDE" info "$DIR/net.safetensors" | awk '$1 == "flops" { print 3 * $2 * b }' b="$BATCH")
echo "# $("$SCORESDE" info "$DIR/net.safetensors" | awk '$1 == "parameters" || $1 == "flops"' | tr '\n' ' ')"
echo "# GFLOP per step: $GF (3 x GFLOP per evaluation x batch $BATCH)"
c_round() { # $1: scoresde binary, $2: label
  rm -rf "$DIR/run"
  # shellcheck disable=SC2086
  "$1" train --data $DATA --out "$DIR/run" --steps $((STEPS + 1)) --preset "$PRESET" \
    --batch "$BATCH" $TRAIN_ARGS --log-every 1 --sample-every 1000000 --sample-n 1 \
    --sample-steps 1 2>&1 |
    awk '/steps\/s/ { for (i = 1; i <= NF; i++) if ($i == "steps/s") print 1000.0 / $(i - 1) }' |
    tail -n +2 | sort -g |
    awk '{ a[n++] = $1 } END { printf "%-7s %d steps: median %.1f ms/step, min %.1f ms/step, %.2f steps/s (median), %.1f GFLOP/s\n", label, n, a[int(n / 2)], a[0], 1000.0 / a[int(n / 2)], gf * 1000.0 / a[int(n / 2)] }' label="$2" gf="$GF"
}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  c_round "$SCORESDE" C
  if [ -n "$BASE_BUILD" ]; then
    echo "## round $r: $(uptime | sed 's/.*load/load/')"
    c_round "$BASE_BUILD/engine/scoresde" "C base"
  fi
  [ -n "$NO_TORCH" ] && continue
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  /usr/bin/python3 "$HERE/bench_train_torch.py" --model "$DIR/net.safetensors" --batch "$BATCH" \
    --steps "$STEPS" --threads "$THREADS" |
    awk '{ for (i = 1; i <= NF; i++) if ($i == "steps/s") r = $(i - 1); printf "%s, %.1f GFLOP/s\n", $0, gf * r }' gf="$GF"
done | tee "$LOG"
# Summaries against PyTorch (and C base): each round's ratio of median steps, and the ratio of
# the sides' fastest steps (median over rounds). The second is the one to quote on a machine
# with slow phases: a phase that slows a whole run moves its median, not its fastest step.
awk '$1 == "##" { r = $3 + 0 }
     /median [0-9.]+ ms\/step, min/ {
       side = $1 == "torch" ? "PyTorch" : $2 == "base" ? "C-base" : "C"
       for (i = 1; i <= NF; i++) { if ($i == "median" && !((side, r) in med)) med[side, r] = $(i + 1); if ($i == "min") mn[side, r] = $(i + 1) }
       has[side] = 1 }
     function med_of(a, n,   i, j, t) { for (i = 1; i < n; i++) for (j = i; j > 0 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                                         return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
     END { for (s = 0; s < 2; s++) {
             o = s ? "C-base" : "PyTorch"; if (!(o in has)) continue
             n = 0; line = ""; nc = 0; no = 0
             for (q = 1; q <= r; q++) if (("C", q) in med && (o, q) in med) {
               v[n++] = med["C", q] / med[o, q]; line = line sprintf(" %.3f", v[n - 1])
               c[nc++] = mn["C", q]; d[no++] = mn[o, q] }
             if (!n) continue
             fc = med_of(c, nc); fo = med_of(d, no)
             printf "# C / %s, median steps by round:%s; median %.3f\n", o, line, med_of(v, n)
             printf "# C / %s, fastest steps (median over rounds): %.1f / %.1f ms = %.3f\n", o, fc, fo, fc / fo } }' "$LOG"
