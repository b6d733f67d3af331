#!/usr/bin/env bash
# Colorizes a grayscale video into an MP4. A short gray test video is made first from
# the example images of common.sh (held-out photographs for the default model), scaled to
# SIZE, so the colorizer works above the model's size and keeps the input's
# full-resolution luminance.
#
#   pipelines/colorize.sh
#   INPUT=old_film.mp4 pipelines/colorize.sh
#
# Environment: FRAMES (16 frames of test video), FPS (4), SIZE (128), INPUT (a video file
# to colorize instead of the generated one), plus those of common.sh (SAMPLER, STEPS,
# ...).
# Output: $OUT_DIR/gray_input.mp4 (when generated) and $OUT_DIR/colorized.mp4
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-16}
FPS=${FPS:-4}
SIZE=${SIZE:-128}
INPUT=${INPUT:-}
require_elements multifilesrc pngdec videoscale videoconvert x264enc mp4mux decodebin \
  scoresdecolorize

if [ -z "$INPUT" ]; then
  INPUT="$OUT_DIR/gray_input.mp4"
  launch multifilesrc location="$COLOR_EXAMPLES" loop=true num-buffers="$FRAMES" \
      caps="image/png,framerate=(fraction)$FPS/1" ! \
    pngdec ! videoconvert ! videoscale ! video/x-raw,width="$SIZE",height="$SIZE" ! \
    videoconvert ! video/x-raw,format=GRAY8 ! videoconvert ! video/x-raw,format=I420 ! \
    x264enc ! mp4mux ! \
    filesink location="$INPUT"
fi

launch filesrc location="$INPUT" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! \
  scoresdecolorize seed="$SEED" $(sampler_props) $(model_prop) ! videoconvert ! \
  video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location="$OUT_DIR/colorized.mp4"

echo "wrote $OUT_DIR/colorized.mp4 (from $INPUT)"
