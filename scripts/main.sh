#!/usr/bin/env bash
# The main job on the shipped default model: set up, build, and sample a PNG grid.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
BUILD_DIR=${BUILD_DIR:-build}
mkdir -p out
"$BUILD_DIR/engine/scoresde" sample --model models/default.json --n 16 --seed 1 \
  --out out/samples.png
echo "wrote out/samples.png"
