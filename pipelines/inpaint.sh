#!/usr/bin/env bash
# Inpainting of one PNG: the black part of a mask is filled by scoresdeinpaint.
#
#   pipelines/inpaint.sh
#   IMAGE=face.png MASK=mask.png MODEL=emoji.json pipelines/inpaint.sh
#
# Environment: IMAGE (default: example image 3 of common.sh; must have the model's size),
# MASK (a PNG of the same size, white = keep, black = fill; default: a generated mask
# that hides the right half), plus those of common.sh (SAMPLER, STEPS, ...).
# Output: $OUT_DIR/inpaint_mask.png (when generated) and $OUT_DIR/inpainted.png
set -euo pipefail
. "$(dirname "$0")/common.sh"

IMAGE=${IMAGE:-$(printf "$GRAY_EXAMPLES" 3)}
MASK=${MASK:-}
require_elements filesrc pngdec videoconvert scoresdeinpaint pngenc

if [ -z "$MASK" ]; then
  # white left half, black right half
  read -r W H < <(png_size "$IMAGE")
  MASK="$OUT_DIR/inpaint_mask.png"
  launch videotestsrc num-buffers=1 pattern=white ! \
    video/x-raw,width=$((W / 2)),height="$H" ! videobox right=-$((W - W / 2)) fill=black ! \
    videoconvert ! video/x-raw,format=GRAY8 ! pngenc ! filesink location="$MASK"
fi

launch filesrc location="$IMAGE" ! pngdec ! videoconvert ! video/x-raw,format=RGBA ! \
  scoresdeinpaint mask-location="$MASK" seed="$SEED" $(sampler_props) $(model_prop) ! \
  videoconvert ! pngenc ! filesink location="$OUT_DIR/inpainted.png"

echo "wrote $OUT_DIR/inpainted.png (mask $MASK)"
