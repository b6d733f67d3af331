#!/usr/bin/env bash
# A latent walk as an MP4: scoresdesrc draws a new prior latent every WALK frames and
# decodes the slerp between consecutive keyframe latents with the probability-flow ODE
# (dpmpp-2m, STEPS network evaluations per frame).
#
#   pipelines/latent-walk.sh
#   FRAMES=240 WALK=24 FPS=24 pipelines/latent-walk.sh
#
# Environment: FRAMES (48), WALK (12 frames per keyframe), FPS (12), SIZE (256: the
# frames are scaled up for viewing), BATCH (4 frames per network batch: faster, same
# frames), plus those of common.sh (SAMPLER, STEPS, ...).
# Output: $OUT_DIR/latent_walk.mp4 (H.264)
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-48}
WALK=${WALK:-12}
FPS=${FPS:-12}
BATCH=${BATCH:-4}
SIZE=${SIZE:-256}
require_elements scoresdesrc videoscale videoconvert x264enc mp4mux

launch scoresdesrc walk-frames="$WALK" num-buffers="$FRAMES" batch-size="$BATCH" \
    seed="$SEED" $(sampler_props) $(model_prop) ! \
  video/x-raw,framerate="$FPS/1" ! videoscale ! video/x-raw,width="$SIZE",height="$SIZE" ! \
  videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location="$OUT_DIR/latent_walk.mp4"

echo "wrote $OUT_DIR/latent_walk.mp4 ($FRAMES frames, a keyframe every $WALK)"
