#!/usr/bin/env bash
# The main job on the shipped default model: set up, build, and render a latent-walk MP4
# with scoresdesrc (pipelines/latent-walk.sh) into out/latent_walk.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR="$PWD/$BUILD_DIR"
pipelines/latent-walk.sh
