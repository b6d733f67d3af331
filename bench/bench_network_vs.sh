#!/bin/sh
# Network evaluation, interleaved: this build's bench_network, optionally another build's
# (BASE_BUILD, e.g. an older commit: "C base"), and PyTorch (bench_torch.py, the same weights
# and inputs), ROUNDS times in turn, so that all sides see the same machine.
#
#   bench/bench_network_vs.sh [BUILD_DIR] [ROUNDS] [NETWORK] [BATCHES] [ITERS] [DIR]
#
# Defaults: build 3 ncsnpp 1,8 10 /tmp/bn (NETWORK: ncsnpp, ddpmpp or ncsnpp256; the 256 px
# network takes about 2 s per call in C and 6 s in PyTorch on 2 cores: ITERS 3). NO_TORCH=1
# leaves PyTorch out. The C sides run single-threaded OpenBLAS with 2 engine threads
# (THREADS) and OMP_WAIT_POLICY=passive; PyTorch gets torch.set_num_threads(THREADS).
# Prints the load average before each round and every side's bench_network line (median ms
# per call and per sample, GFLOP/s of the network's convs, linears and attention), then per
# batch the ratios C / PyTorch (and C / C base) of every round and their median.
set -e
BUILD=${1:-build}
ROUNDS=${2:-3}
NET=${3:-ncsnpp}
BATCHES=${4:-1,8}
ITERS=${5:-10}
DIR=${6:-/tmp/bn}
THREADS=${THREADS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
E="env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive"
case $NET in
  ncsnpp) GF=21.75 ;; ncsnpp256) GF=531.78 ;; *) GF=0 ;;
esac
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cpus, threads $THREADS, $("$BUILD/engine/scoresde" --version | grep 'CPU kernels')"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  $E "$BUILD/bench/bench_network" --iters "$ITERS" --batches "$BATCHES" --dir "$DIR" --only "$NET" |
    grep "^$NET " | sed 's/^/C       /'
  if [ -n "$BASE_BUILD" ]; then
    $E "$BASE_BUILD/bench/bench_network" --iters "$ITERS" --batches "$BATCHES" --dir "$DIR" --only "$NET" |
      grep "^$NET " | sed 's/^/C-base  /'
  fi
  [ -n "$NO_TORCH" ] && continue
  env "GFLOP_$(echo "$NET" | tr '[:lower:]' '[:upper:]')=$GF" OMP_NUM_THREADS="$THREADS" /usr/bin/python3 "$HERE/bench_torch.py" \
    --dir "$DIR" --iters "$ITERS" --only "$NET" --batches "$BATCHES" | grep "^$NET " | sed 's/^/PyTorch /'
done | tee "$LOG"
# per batch: every round's ratio of median ms per call, then their median
awk '$1 == "##" { r = $3 + 0 }
     $1 == "C" || $1 == "C-base" || $1 == "PyTorch" { ms[$1, $3, r] = $4; if (!($3 in seen)) { seen[$3] = 1; bs[nb++] = $3 } }
     function med(a, n,   i, j, t) { for (i = 1; i < n; i++) for (j = i; j > 0 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                                     return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
     END { for (k = 0; k < nb; k++) for (s = 0; s < 2; s++) {
             o = s ? "C-base" : "PyTorch"; n = 0; line = ""
             for (q = 1; q <= r; q++) if ((o, bs[k], q) in ms && ("C", bs[k], q) in ms) {
               v[n++] = ms["C", bs[k], q] / ms[o, bs[k], q]; line = line sprintf(" %.3f", v[n - 1]) }
             if (n) printf "# batch %s, C / %s by round:%s; median %.3f\n", bs[k], o, line, med(v, n) } }' "$LOG"
