#!/usr/bin/env bash
# Colorizes a grayscale pan-and-zoom clip made from one photograph (models/photo-global-32.md,
# the "video" evaluation): the camera pans from the left edge of the photo to the right
# one while zooming in from the full height to 60% of it; each frame is cut from the
# photo with videocrop, scaled to WIDTHxHEIGHT and made gray, then scoresdecolorize
# colours the clip with temporal-seed on (the default: the same noise for every frame, so
# the colours stay put while the picture moves).
#
#   pipelines/colorize-photo-video.sh
#   PHOTO=cat.jpg FRAMES=48 WIDTH=320 HEIGHT=240 pipelines/colorize-photo-video.sh
#   TEMPORAL_SEED=false pipelines/colorize-photo-video.sh    (fresh noise every frame)
#   T_START=0.8 pipelines/colorize-photo-video.sh            (start from the gray noised
#                                                              to t = 0.8: fainter colours)
#
# Model: MODEL, else $SCORESDE_DEFAULT_MODEL, else the element's shipped default, the
# photograph colorizer models/photo-global-32.safetensors.
# Environment: PHOTO (default: the held-out photograph EveningGlow of
# plasma-workspace-wallpapers when installed, else an example image of common.sh),
# FRAMES (24), FPS (8), WIDTH (256), HEIGHT (192), TEMPORAL_SEED (true), T_START (1: from
# the prior, the paper's method), plus those of common.sh (MODEL, SAMPLER, STEPS, SEED, ...).
# Output: $OUT_DIR/gray_input.mp4, $OUT_DIR/colorized.mp4 and the gray frames
# $OUT_DIR/photo-video/gray_NNN.png
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-24}
FPS=${FPS:-8}
WIDTH=${WIDTH:-256}
HEIGHT=${HEIGHT:-192}
TEMPORAL_SEED=${TEMPORAL_SEED:-true}
T_START=${T_START:-1}
DEFAULT_PHOTO=/usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg
[ -f "$DEFAULT_PHOTO" ] || DEFAULT_PHOTO=$(printf "$COLOR_EXAMPLES" 0)
PHOTO=${PHOTO:-$DEFAULT_PHOTO}
require_elements filesrc decodebin videocrop videoscale videoconvert pngenc multifilesrc \
  pngdec x264enc mp4mux scoresdecolorize

# the photo's size, from the decoder
size=$(gst-discoverer-1.0 "$PHOTO" | sed -n 's/^ *\(Width\|Height\): \([0-9]*\).*/\2/p' | head -2)
PW=$(echo "$size" | sed -n 1p)
PH=$(echo "$size" | sed -n 2p)
[ -n "$PW" ] && [ -n "$PH" ] || { echo "error: cannot read the size of $PHOTO" >&2; exit 1; }

FRAME_DIR="$OUT_DIR/photo-video"
mkdir -p "$FRAME_DIR"
rm -f "$FRAME_DIR"/gray_*.png
for ((i = 0; i < FRAMES; i++)); do
  # crop window of frame i: height from PH down to 0.6 PH, the output's aspect, moving
  # from the left edge to the right one, centred vertically
  read -r left right top bottom < <(awk -v i="$i" -v n="$FRAMES" -v W="$PW" -v H="$PH" \
      -v w="$WIDTH" -v h="$HEIGHT" 'BEGIN {
    t = (n > 1) ? i / (n - 1) : 0; ch = H * (1 - 0.4 * t); cw = ch * w / h;
    if (cw > W) { cw = W; ch = cw * h / w }
    x0 = int((W - cw) * t); y0 = int((H - ch) / 2);
    printf "%d %d %d %d\n", x0, W - x0 - int(cw), y0, H - y0 - int(ch) }')
  gst-launch-1.0 -q filesrc location="$PHOTO" ! decodebin ! videoconvert ! \
    videocrop left="$left" right="$right" top="$top" bottom="$bottom" ! \
    videoscale method=lanczos ! video/x-raw,width="$WIDTH",height="$HEIGHT",pixel-aspect-ratio=1/1 ! \
    videoconvert ! video/x-raw,format=GRAY8 ! pngenc ! \
    filesink location="$(printf "$FRAME_DIR/gray_%03d.png" "$i")"
done
echo "made $FRAMES gray frames of $PHOTO (${PW}x${PH}) in $FRAME_DIR" >&2

launch multifilesrc location="$FRAME_DIR/gray_%03d.png" index=0 stop-index=$((FRAMES - 1)) \
    caps="image/png,framerate=(fraction)$FPS/1" ! pngdec ! videoconvert ! \
  video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location="$OUT_DIR/gray_input.mp4"

launch multifilesrc location="$FRAME_DIR/gray_%03d.png" index=0 stop-index=$((FRAMES - 1)) \
    caps="image/png,framerate=(fraction)$FPS/1" ! pngdec ! videoconvert ! \
  video/x-raw,format=GRAY8 ! \
  scoresdecolorize seed="$SEED" temporal-seed="$TEMPORAL_SEED" t-start="$T_START" \
    $(sampler_props) $(model_prop) ! \
  videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! \
  filesink location="$OUT_DIR/colorized.mp4"

echo "wrote $OUT_DIR/gray_input.mp4 and $OUT_DIR/colorized.mp4 (from $PHOTO)"
