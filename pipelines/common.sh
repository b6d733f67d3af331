# Shared set-up of the pipeline scripts (sourced, not run).
#
# Environment (every script):
#   BUILD_DIR   meson build folder holding the plugin (default: <repo>/build)
#   OUT_DIR     where results go (default: ./out)
#   MODEL       model file; empty = the elements' shipped defaults (models/*.md)
#   SAMPLER     sampler of the scoresde elements (default: theirs, dpmpp-2m; pc with
#               STEPS=0 is the 1000-step reference)
#   STEPS       network evaluations per frame (default 15, the elements'; pc: grid steps)
#   SEED        noise seed (default 0)
#   GST_PLUGIN_PATH  defaults to $BUILD_DIR/plugins when unset
#   OPENBLAS_CORETYPE  set when OpenBLAS does not know this CPU (see below)
# Each script documents its own extra variables (FRAMES, ...).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT_DIR=${OUT_DIR:-out}
MODEL=${MODEL:-}
SAMPLER=${SAMPLER:-}
STEPS=${STEPS:-15}
SEED=${SEED:-0}
SHAPES_DIR=${SHAPES_DIR:-$ROOT/models/shapes32}

# Example inputs that suit the model in use: the training images of the analytic shapes
# model when that is in use (the test suite's), else Fashion-MNIST test images for the
# gray default model and held-out photographs for the colour one (models/examples/).
case "${MODEL:-${SCORESDE_DEFAULT_MODEL:-}}" in
  *shapes-32.json)
    GRAY_EXAMPLES=$SHAPES_DIR/shape_%02d.png
    COLOR_EXAMPLES=$SHAPES_DIR/shape_%02d.png ;;
  *)
    GRAY_EXAMPLES=$ROOT/models/examples/fashion-mnist/test_%02d.png
    COLOR_EXAMPLES=$ROOT/models/examples/photos/photo_%02d.png ;;
esac

if [ -z "${GST_PLUGIN_PATH:-}" ]; then
  export GST_PLUGIN_PATH="$BUILD_DIR/plugins"
fi
mkdir -p "$OUT_DIR"

# OpenBLAS picks its kernels when a process loads it and falls back to generic ones on a
# CPU newer than itself (1.6-1.9x slower networks, docs/BENCHMARKS.md). The scoresde tool
# detects that and restarts itself with OPENBLAS_CORETYPE; gst-launch cannot, so the
# variable is set here from the tool's choice.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x "$BUILD_DIR/engine/scoresde" ]; then
  core=$("$BUILD_DIR/engine/scoresde" --version | sed -n 's/.*restarted with OPENBLAS_CORETYPE=\([A-Za-z0-9]*\).*/\1/p')
  if [ -n "$core" ]; then export OPENBLAS_CORETYPE=$core; fi
fi

# Fails early, with a hint, when an element is missing.
require_elements() {
  local e
  for e in "$@"; do
    # (not --exists: it also demands the GStreamer version of the plugin)
    if ! gst-inspect-1.0 "$e" >/dev/null 2>&1; then
      echo "error: GStreamer element '$e' not found (GST_PLUGIN_PATH=$GST_PLUGIN_PATH)." >&2
      case "$e" in
        scoresde*) echo "Build the plugin first: meson setup build && ninja -C build" >&2 ;;
        x264enc) echo "Install gstreamer1.0-plugins-ugly." >&2 ;;
        avdec_*) echo "Install gstreamer1.0-libav." >&2 ;;
        *) echo "Install gstreamer1.0-plugins-base and -good." >&2 ;;
      esac
      exit 1
    fi
  done
}

# "model=PATH" for the scoresde elements, nothing for the shipped default.
model_prop() {
  if [ -n "$MODEL" ]; then printf 'model=%s' "$MODEL"; fi
}

# "steps=STEPS [sampler=SAMPLER]" for the scoresde elements that sample.
sampler_props() {
  printf 'steps=%s' "$STEPS"
  if [ -n "$SAMPLER" ]; then printf ' sampler=%s' "$SAMPLER"; fi
}

# Runs gst-launch-1.0 quietly (-e: a Ctrl-C still finalises MP4 files), echoing the
# pipeline first.
launch() {
  echo "+ gst-launch-1.0 $*" >&2
  gst-launch-1.0 -q -e "$@"
}

# Width and height of a PNG file, from its IHDR chunk: "W H".
png_size() {
  od -An -tu1 -j16 -N8 "$1" |
    awk '{ printf "%d %d\n", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'
}
