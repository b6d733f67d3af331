#!/usr/bin/env bash
# One clip rendered as SEGMENTS pieces by parallel processes and joined into one MP4
# without re-encoding (docs/scale.md). Frame k of scoresdesrc depends only on the
# settings and k, so segment i renders frames [i·FRAMES/SEGMENTS, (i+1)·FRAMES/SEGMENTS)
# (start-frame, num-buffers) and the joined clip holds the frames one process would
# render. Each segment is its own H.264 stream starting with a keyframe; splitmuxsrc
# plays them in name order with continuous timestamps and mp4mux writes them into one
# file as they are.
#
#   pipelines/render-split.sh                          SEGMENTS processes on this host
#   FRAMES=480 WALK=24 SEGMENTS=8 pipelines/render-split.sh
#   SEGMENT=3 SEGMENTS=8 pipelines/render-split.sh     only segment 3 (one host of many)
#   JOIN=only SEGMENTS=8 pipelines/render-split.sh     join the segments already rendered
#
# The segments never talk to each other, so plain background jobs run them here; across
# hosts any launcher that starts `SEGMENT=i` runs works (ssh, a Slurm array, mpirun: a
# process started by Open MPI's mpirun takes SEGMENT from OMPI_COMM_WORLD_RANK), then
# one `JOIN=only` run on a host that sees all segment files (docs/scale.md).
#
# Environment: FRAMES (48), SEGMENTS (2), WALK (0: independent samples; N: a latent walk
# with a keyframe every N frames), FPS (12), SIZE (256), BATCH (1 frame per network
# batch), LOSSLESS (0; 1: x264 at quantizer 0, the High 4:4:4 Predictive profile, whose
# decoded frames are the rendered ones bit for bit: for comparisons), THREADS (engine
# threads per segment, default: the CPUs shared among the segments), SEGMENT, JOIN
# (empty, or "only": no rendering), plus those of common.sh (SAMPLER, STEPS, ...).
# Output: $OUT_DIR/render_split.mp4 (H.264) and $OUT_DIR/segments/segment_NNN.mp4
set -euo pipefail
. "$(dirname "$0")/common.sh"

FRAMES=${FRAMES:-48}
SEGMENTS=${SEGMENTS:-2}
WALK=${WALK:-0}
FPS=${FPS:-12}
SIZE=${SIZE:-256}
BATCH=${BATCH:-1}
LOSSLESS=${LOSSLESS:-0}
JOIN=${JOIN:-}
SEGMENT=${SEGMENT:-${OMPI_COMM_WORLD_RANK:-}}
THREADS=${THREADS:-$(( $(nproc) / SEGMENTS > 0 ? $(nproc) / SEGMENTS : 1 ))}
if ! [ "$SEGMENTS" -ge 1 ] 2>/dev/null || ! [ "$FRAMES" -ge "$SEGMENTS" ] 2>/dev/null; then
  echo "error: need 1 <= SEGMENTS <= FRAMES (SEGMENTS=$SEGMENTS FRAMES=$FRAMES)" >&2
  exit 1
fi
require_elements scoresdesrc videoscale videoconvert x264enc mp4mux splitmuxsrc

SEG_DIR=$OUT_DIR/segments
mkdir -p "$SEG_DIR"
if [ "$LOSSLESS" = 1 ]; then encoder="x264enc pass=quant quantizer=0"; else encoder=x264enc; fi

# Renders segment $1 (frames first .. first+count-1) into segment_NNN.mp4.
render_segment() {
  local i=$1 first=$(( $1 * FRAMES / SEGMENTS )) count
  count=$(( ($1 + 1) * FRAMES / SEGMENTS - first ))
  OMP_NUM_THREADS=$THREADS launch scoresdesrc start-frame="$first" num-buffers="$count" \
      walk-frames="$WALK" batch-size="$BATCH" seed="$SEED" $(sampler_props) $(model_prop) ! \
    video/x-raw,framerate="$FPS/1" ! videoscale ! video/x-raw,width="$SIZE",height="$SIZE" ! \
    videoconvert ! video/x-raw,format=I420 ! $encoder ! mp4mux ! \
    filesink location="$(printf '%s/segment_%03d.mp4' "$SEG_DIR" "$i")"
}

if [ -n "$SEGMENT" ]; then
  if ! [ "$SEGMENT" -ge 0 ] 2>/dev/null || [ "$SEGMENT" -ge "$SEGMENTS" ]; then
    echo "error: SEGMENT=$SEGMENT is not one of 0..$(( SEGMENTS - 1 ))" >&2
    exit 1
  fi
  render_segment "$SEGMENT"
  echo "wrote segment $SEGMENT of $SEGMENTS"
  exit 0
fi

if [ "$JOIN" != only ]; then
  rm -f "$SEG_DIR"/segment_*.mp4
  pids=()
  for (( i = 0; i < SEGMENTS; i++ )); do
    render_segment "$i" &
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ "$failed" != 0 ]; then echo "error: a segment failed" >&2; exit 1; fi
fi

for (( i = 0; i < SEGMENTS; i++ )); do
  f=$(printf '%s/segment_%03d.mp4' "$SEG_DIR" "$i")
  [ -s "$f" ] || { echo "error: $f missing" >&2; exit 1; }
done
# The caps filter makes gst-launch link the demuxed H.264 to mp4mux's video pad.
launch splitmuxsrc location="$SEG_DIR/segment_*.mp4" ! video/x-h264 ! mp4mux ! \
  filesink location="$OUT_DIR/render_split.mp4"

echo "wrote $OUT_DIR/render_split.mp4 ($FRAMES frames from $SEGMENTS segments)"
