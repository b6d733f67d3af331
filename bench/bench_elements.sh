#!/usr/bin/env bash
# Element benchmarks on the shipped models, old defaults (pc, the SDE's 1000 steps)
# against new (dpmpp-2m, 20 network evaluations). Never part of `meson test`.
#
#   bench/bench_elements.sh               both benchmarks, REPEAT runs of the new defaults
#   bench/bench_elements.sh walk          (a) 48 latent-walk frames of scoresdesrc
#   bench/bench_elements.sh colorize      (b) scoresdecolorize on a 256x256 GRAY8 input
#
# (a) scoresdesrc walk-frames=12 num-buffers=48 with models/fashion-mnist-32.safetensors
#     into a fakesink; the old defaults walk with the adaptive RK45 ODE.
# (b) one held-out emoji, gray, scaled to 256x256 and frozen for FRAMES frames, through
#     scoresdecolorize with models/emoji-32.safetensors into a fakesink.
#
# Every line gives wall and CPU (user + sys) seconds, the load average before and after
# and the thread settings; the header gives the CPU. The machine is shared: read the
# load, compare runs made under similar load, and repeat.
#
# Environment: BUILD_DIR (build), REPEAT (3 runs of the new defaults), OLD (1: also run
# the old defaults once, slow: about 2 minutes for the walk, 100 CPU seconds per
# colorized frame), FRAMES (colorize frames, new defaults: 8), OLD_FRAMES (1),
# OPENBLAS_NUM_THREADS (1), OMP_WAIT_POLICY (passive), OMP_NUM_THREADS (unset: all
# cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
REPEAT=${REPEAT:-3}
OLD=${OLD:-1}
FRAMES=${FRAMES:-8}
OLD_FRAMES=${OLD_FRAMES:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$BUILD_DIR/plugins}
# the shipped models, whatever the caller's environment says
unset SCORESDE_DEFAULT_MODEL
FASHION=$ROOT/models/fashion-mnist-32.safetensors
EMOJI=$ROOT/models/emoji-32.safetensors
EMOJI_IMAGE=$ROOT/models/examples/emoji/emoji_00.png
OLD_DEFAULTS="sampler=pc steps=0"

gst-inspect-1.0 scoresdesrc >/dev/null 2>&1 || {
  echo "error: scoresdesrc not found in $GST_PLUGIN_PATH; build first (ninja -C build)" >&2
  exit 1
}

TIMES=$(mktemp)
LOG=$(mktemp)
trap 'rm -f "$TIMES" "$LOG"' EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

settings() {
  printf 'OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%s OMP_NUM_THREADS=%s OMP_WAIT_POLICY=%s' \
    "${OPENBLAS_CORETYPE:-unset}" "$OPENBLAS_NUM_THREADS" "${OMP_NUM_THREADS:-unset}" \
    "$OMP_WAIT_POLICY"
}

# run LABEL FRAMES gst-launch arguments...: one timed gst-launch-1.0, one result line.
run() {
  local label=$1 frames=$2 before after t
  shift 2
  before=$(loadavg)
  if ! /usr/bin/time -o "$TIMES" -f '%e %U %S' gst-launch-1.0 -q "$@" >"$LOG" 2>&1; then
    echo "$label: gst-launch-1.0 failed:" >&2
    cat "$LOG" >&2
    return 1
  fi
  after=$(loadavg)
  read -r wall user sys <"$TIMES"
  awk -v l="$label" -v n="$frames" -v w="$wall" -v u="$user" -v s="$sys" \
      -v b="$before" -v a="$after" -v env="$(settings)" 'BEGIN {
    printf "%-34s %3d frames  wall %7.2f s (%6.3f s/frame)  cpu %7.2f s (%6.3f s/frame)  load %s -> %s  %s\n",
      l, n, w, w / n, u + s, (u + s) / n, b, a, env }'
}

walk() {
  local props=$1
  printf 'scoresdesrc model=%s walk-frames=12 num-buffers=48 %s ! fakesink' "$FASHION" "$props"
}

bench_walk() {
  local i
  echo "## (a) scoresdesrc latent walk, 48 frames of fashion-mnist-32"
  for ((i = 1; i <= REPEAT; i++)); do
    # shellcheck disable=SC2046
    run "new defaults (dpmpp-2m, 20)" 48 $(walk "")
  done
  # shellcheck disable=SC2046
  run "new defaults, batch-size=4" 48 $(walk "batch-size=4")
  if [ "$OLD" = 1 ]; then
    # shellcheck disable=SC2046
    run "old defaults (pc; walk: rk45)" 48 $(walk "$OLD_DEFAULTS")
  fi
}

colorize() {
  local frames=$1 props=$2
  printf 'filesrc location=%s ! pngdec ! videoconvert ! videoscale ! video/x-raw,format=GRAY8,width=256,height=256 ! imagefreeze num-buffers=%d ! scoresdecolorize model=%s %s ! fakesink' \
    "$EMOJI_IMAGE" "$frames" "$EMOJI" "$props"
}

bench_colorize() {
  local i
  echo "## (b) scoresdecolorize, 256x256 GRAY8 input, emoji-32"
  for ((i = 1; i <= REPEAT; i++)); do
    # shellcheck disable=SC2046
    run "new defaults (dpmpp-2m, 20)" "$FRAMES" $(colorize "$FRAMES" "")
  done
  if [ "$OLD" = 1 ]; then
    # shellcheck disable=SC2046
    run "old defaults (pc, 1000 steps)" "$OLD_FRAMES" $(colorize "$OLD_FRAMES" "$OLD_DEFAULTS")
  fi
}

echo "# bench/bench_elements.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(getconf _NPROCESSORS_ONLN) cores; $(settings)"
case "${1:-all}" in
  walk) bench_walk ;;
  colorize) bench_colorize ;;
  all) bench_walk; bench_colorize ;;
  *) echo "usage: $0 [walk|colorize|all]" >&2; exit 2 ;;
esac
