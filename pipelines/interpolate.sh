#!/usr/bin/env bash
# Encode -> interpolate -> decode: FRAMES images are mapped to latents with the
# probability-flow ODE (scoresdeencode; dpmpp-2m, STEPS network evaluations), INTERP
# latents are inserted between consecutive ones (scoresdeinterp, slerp) and every
# latent is decoded back to an image (scoresdedecode, the same solver), into an MP4.
#
#   pipelines/interpolate.sh
#   FRAMES=8 INTERP=15 pipelines/interpolate.sh
#   LOCATION='my/frames/img_%03d.png' pipelines/interpolate.sh   # images of the model's size
#
# Environment: FRAMES (4 input images), INTERP (7), LOCATION (a printf pattern of PNG
# files; default the example images of common.sh), FPS (8),
# SIZE (256), plus those of common.sh (SAMPLER: ode or a deterministic few-step solver,
# STEPS, ...).
# Output: $OUT_DIR/interpolation.mp4 ((FRAMES - 1) * (INTERP + 1) + 1 frames)
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-4}
INTERP=${INTERP:-7}
FPS=${FPS:-8}
SIZE=${SIZE:-256}
LOCATION=${LOCATION:-$GRAY_EXAMPLES}
require_elements multifilesrc pngdec videoconvert scoresdeencode scoresdeinterp \
  scoresdedecode videoscale x264enc mp4mux

# The input images go in at 1 frame per (INTERP + 1) output frames, so the output
# plays at FPS.
launch multifilesrc location="$LOCATION" index=0 stop-index=$((FRAMES - 1)) \
    caps="image/png,framerate=(fraction)$FPS/$((INTERP + 1))" ! \
  pngdec ! videoconvert ! scoresdeencode $(sampler_props) $(model_prop) ! \
  scoresdeinterp n-frames="$INTERP" ! scoresdedecode $(sampler_props) $(model_prop) ! \
  videoconvert ! videoscale ! video/x-raw,width="$SIZE",height="$SIZE" ! \
  videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location="$OUT_DIR/interpolation.mp4"

echo "wrote $OUT_DIR/interpolation.mp4 ($FRAMES images, $INTERP in between)"
