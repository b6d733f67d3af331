#!/usr/bin/env bash
# Network evaluation time per OpenBLAS kernel set, interleaved so that every set sees the
# same load: the default (no OPENBLAS_CORETYPE: what the library detects, which is what
# the elements get) against each named set, including the generic one ("Prescott") that a
# CPU newer than the library falls back to. The CLI re-executes itself with
# `scoresde --version`'s advice when that happens (docs/BENCHMARKS.md).
#   bench/bench_blas_coretype.sh [ROUNDS] [CORETYPES...]
# Prints the machine, then one line per (round, kernel set, batch) from bench_network.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
rounds=${1:-3}
shift || true
cores=("$@")
[ ${#cores[@]} -gt 0 ] || cores=(default Prescott Haswell SkylakeX Cooperlake)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

lscpu | grep -E '^(Model name|CPU family|Model|CPU\(s\)):' | tr -s ' '
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); OMP_NUM_THREADS=$OMP_NUM_THREADS"
echo "detected by OpenBLAS: $(env -u OPENBLAS_CORETYPE "$BUILD_DIR/engine/scoresde" --version | tail -1)"
printf '%-6s %-11s %s\n' round kernels "network batch ms/call ms/sample GFLOP/s params GFLOP/smp cpu-ms/call"
for r in $(seq "$rounds"); do
  for c in "${cores[@]}"; do
    if [ "$c" = default ]; then envc=(env -u OPENBLAS_CORETYPE); else envc=(env OPENBLAS_CORETYPE="$c"); fi
    "${envc[@]}" "$BUILD_DIR/bench/bench_network" --only ncsnpp --batches 1,8 --iters 2 2>/dev/null |
      awk -v r="$r" -v c="$c" '$1 == "ncsnpp" { printf "%-6s %-11s %s\n", r, c, $0 }'
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
