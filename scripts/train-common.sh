# Sourced by scripts/train-*.sh: what every training run of a shipped model shares.
#
#   train_run RUN BIN_DIR MODEL DEFAULT_THREADS TRAIN_ARGS...
#
# Copies BUILD's scoresde to BIN_DIR once (REFRESH_BIN=1 copies it again), so rebuilding
# does not disturb a running training. With EXPORT set, writes the EMA weights of the
# latest checkpoint of runs/RUN to ${OUT_MODEL:-MODEL}, with a 36-image grid, and trains
# nothing. Otherwise trains runs/RUN with TRAIN_ARGS (plus --out and --resume), niced,
# under the lock runs/RUN.lock so a second copy refuses to start. OpenBLAS runs
# single-threaded; the engine uses ${THREADS:-DEFAULT_THREADS} threads.
train_run() {
  run=$1 bin=$2 model=$3 threads=${THREADS:-$4}
  shift 4
  mkdir -p runs
  if [ ! -x "$bin/scoresde" ] || [ -n "$REFRESH_BIN" ]; then
    mkdir -p "$bin"
    cp "$BUILD/engine/scoresde" "$BUILD/engine/libscoresde.so" "$bin/"
  fi
  env="env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive"
  if [ -n "$EXPORT" ]; then
    exec $env "$bin/scoresde" train --out "runs/$run" --resume --steps 0 \
      --sample-n 36 --sample-steps 200 --export "${OUT_MODEL:-$model}"
  fi
  exec 9>"runs/$run.lock"
  flock -n 9 || { echo "another training of runs/$run is running" >&2; exit 1; }
  exec $env nice -n 19 "$bin/scoresde" train --out "runs/$run" --resume "$@"
}
