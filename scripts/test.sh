#!/usr/bin/env bash
# Set up, build, and run the whole test suite through meson test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
BUILD_DIR=${BUILD_DIR:-build}
meson test -C "$BUILD_DIR" --print-errorlogs "$@"
