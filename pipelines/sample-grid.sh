#!/usr/bin/env bash
# Draws FRAMES samples with scoresdesrc (frame k uses noise stream k of SEED), writes
# each as a PNG and tiles them into one grid with compositor.
#
#   pipelines/sample-grid.sh
#   FRAMES=64 COLS=8 SAMPLER=pc STEPS=0 pipelines/sample-grid.sh   # the 1000-step reference
#
# Environment: FRAMES (16), COLS (about sqrt(FRAMES)), PAD (2 pixels of white between
# tiles), plus those of common.sh (SAMPLER, STEPS, ...).
# Output: $OUT_DIR/samples/sample_NNN.png and $OUT_DIR/samples_grid.png
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-16}
PAD=${PAD:-2}
COLS=${COLS:-$(awk -v n="$FRAMES" 'BEGIN { c = int(sqrt(n)); if (c * c < n) c++; print c }')}
require_elements scoresdesrc videoconvert pngenc multifilesink compositor imagefreeze pngdec

rm -rf "$OUT_DIR/samples"
mkdir -p "$OUT_DIR/samples"
launch scoresdesrc num-buffers="$FRAMES" seed="$SEED" $(sampler_props) $(model_prop) ! \
  videoconvert ! pngenc ! multifilesink location="$OUT_DIR/samples/sample_%03d.png"

# The grid: one compositor input per sample.
read -r W H < <(png_size "$OUT_DIR/samples/sample_000.png")
ROWS=$(( (FRAMES + COLS - 1) / COLS ))
GW=$(( COLS * W + (COLS - 1) * PAD ))
GH=$(( ROWS * H + (ROWS - 1) * PAD ))
pads=()
inputs=()
for ((i = 0; i < FRAMES; i++)); do
  x=$(( (i % COLS) * (W + PAD) ))
  y=$(( (i / COLS) * (H + PAD) ))
  pads+=("sink_$i::xpos=$x" "sink_$i::ypos=$y")
  inputs+=(filesrc location="$(printf '%s/samples/sample_%03d.png' "$OUT_DIR" "$i")" !
           pngdec ! videoconvert ! imagefreeze num-buffers=1 ! "c.sink_$i")
done
launch compositor name=c background=white "${pads[@]}" ! \
  video/x-raw,width="$GW",height="$GH" ! videoconvert ! pngenc ! \
  filesink location="$OUT_DIR/samples_grid.png" "${inputs[@]}"

echo "wrote $OUT_DIR/samples_grid.png ($FRAMES samples, ${COLS}x$ROWS, ${GW}x$GH)"
