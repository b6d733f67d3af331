#!/bin/sh
# Thread pool vs OpenMP waiting: the same commands with several builds / settings, on an
# idle machine and next to one competing busy process (docs/BENCHMARKS.md, "Thread pool
# vs OpenMP waiting").
#
#   bench/bench_wait_policy.sh [-r ROUNDS] [-l "idle busy"] [-o OUTDIR] LABEL=BUILD[,VAR=VALUE...] ...
#
# e.g., with /tmp/omp a build of the last commit before the pool (2798b2c; copy this
# tree's bench/bench_network.c over its own first: the old one has no --model):
#
#   bench/bench_wait_policy.sh omp-default=/tmp/omp/build \
#       omp-passive=/tmp/omp/build,OMP_WAIT_POLICY=passive pool=build
#
# Per round, for each load (idle, then busy: `sh -c 'while :; do :; done'`), every
# configuration runs in turn (A B C, A B C, ...), so that other work on a shared machine
# spreads over all of them:
#   fashion  bench_network --model models/fashion-mnist-32.safetensors, batch 1 and 8:
#            median ms per forward (wall and process CPU)
#   cifar    the NCSN++ CIFAR-10 network (62.8 M parameters, random weights written once by
#            bench_network --only ncsnpp), bench_network --model, batch 1
#   cli      scoresde sample --model models/fashion-mnist-32.safetensors --n 8 --steps 50
#            --sampler pc: seconds
#   embed    pipelines/embed_example --frames 1 --steps 20 (scoresdesrc ! scoresdecolorize
#            in an application, three runs): seconds
# Prints one line per measurement, then the median of the rounds per (load, config).
# Environment: OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE unset; no OMP_NUM_THREADS
# (all cores) unless the configuration sets it.
set -eu
rounds=3
loads="idle busy"
out=${TMPDIR:-/tmp}/bench_wait_policy.$$
while getopts r:l:o: opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    l) loads=$OPTARG ;;
    o) out=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,13p' "$0"; exit 2; }
mkdir -p "$out"
src=$(cd "$(dirname "$0")/.." && pwd)
model=$src/models/fashion-mnist-32.safetensors
unset OPENBLAS_CORETYPE OMP_NUM_THREADS OMP_WAIT_POLICY
export OPENBLAS_NUM_THREADS=1

busy=
stop_busy() { [ -z "$busy" ] || kill "$busy" 2>/dev/null || true; busy=; }

now() { date +%s.%N; }

# run_config LOAD ROUND LABEL=BUILD[,VAR=VALUE...]
run_config() {
  load=$1 round=$2 label=${3%%=*} rest=${3#*=}
  build=${rest%%,*}
  vars=$(echo "$rest" | sed -n 's/^[^,]*,//p' | tr ',' ' ')
  case $build in /*) ;; *) build=$src/$build ;; esac
  e="env $vars"
  $e "$build/bench/bench_network" --model "$model" --iters 40 --batches 1,8 --dir "$out" |
    awk -v p="$load $round $label" '/^model/ { print p, "fashion_b" $2 "_ms", $3; print p, "fashion_b" $2 "_cpu_ms", $8 }'
  $e "$build/bench/bench_network" --model "$out/bench_ncsnpp.safetensors" --batches 1 --iters 5 \
      --dir "$out" |
    awk -v p="$load $round $label" '/^model/ { print p, "cifar_b1_ms", $3; print p, "cifar_b1_cpu_ms", $8 }'
  t0=$(now)
  $e "$build/engine/scoresde" sample --model "$model" --n 8 --steps 50 --sampler pc \
    --out "$out/x.png" --quiet --device cpu
  echo "$load $round $label cli_s $(echo "$(now) - $t0" | bc)"
  t0=$(now)
  $e GST_PLUGIN_PATH_1_0="$build/plugins" GST_REGISTRY="$out/registry-$label.bin" \
    "$build/pipelines/embed_example" --frames 1 --steps 20 >/dev/null
  echo "$load $round $label embed_s $(echo "$(now) - $t0" | bc)"
}

first=${1#*=}
first=${first%%,*}
case $first in /*) ;; *) first=$src/$first ;; esac
"$first/bench/bench_network" --only ncsnpp --batches 1 --iters 1 --dir "$out" >/dev/null

{
  trap stop_busy EXIT INT TERM
  echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs"
  for load in $loads; do
    if [ $load = busy ]; then
      sh -c 'while :; do :; done' &
      busy=$!
    fi
    r=1
    while [ $r -le "$rounds" ]; do
      echo "# $load round $r, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date +%T)"
      for cfg in "$@"; do run_config $load $r "$cfg"; done
      r=$((r + 1))
    done
    stop_busy
  done
} | tee "$out/results.txt"

echo "# medians over $rounds rounds (load config metric median [all values])"
grep -v '^#' "$out/results.txt" | sort -k1,1 -k3,3 -k4,4 -k5,5n |
  awk '{ k = $1 " " $3 " " $4; v[k] = v[k] " " $5; n[k]++; a[k, n[k]] = $5 }
       END { for (k in n) { m = n[k] % 2 ? a[k, (n[k] + 1) / 2] : (a[k, n[k] / 2] + a[k, n[k] / 2 + 1]) / 2;
                            print k, m, "[" substr(v[k], 2) "]" } }' | sort
