#!/usr/bin/env bash
# Installs what gst-scoresde needs on Debian 12, idempotently, then configures and builds.
#   scripts/setup.sh [build|test|train]   "test" also installs what the test suite uses,
#                                          "train" the Fashion-MNIST data set and the
#                                          packages the emoji and photo data sets are made from
# Only missing packages are installed; apt-get update runs only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-build}
packages=(
  meson ninja-build pkg-config gcc libc6-dev
  libopenblas-dev libpng-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-plugins-base-apps
)
if [ "$purpose" = test ]; then
  # valgrind: leak checks; python3-torch: independent reference for the network tests;
  # Open MPI: the data-parallel training test (mpirun -np 2, docs/scale.md).
  packages+=(valgrind python3 python3-numpy python3-torch libopenmpi-dev openmpi-bin)
elif [ "$purpose" = train ]; then
  # `scoresde train --data fashion-mnist` reads /usr/share/datasets/fashion-mnist
  # tools/models/make_emoji.py: fonts-noto-color-emoji, python3-fonttools;
  # tools/models/make_photos.py: the photographs of mate-backgrounds and
  # plasma-workspace-wallpapers (models/photo-32.md), and for its --set v2 those of
  # lomiri-wallpapers-16.04/-20.04, palapeli-data, gcompris-qt-data, python3-skimage,
  # python3-sklearn, python-matplotlib-data, python3-scipy; both need python3-pil, python3-numpy
  packages+=(dataset-fashion-mnist fonts-noto-color-emoji python3-fonttools
             mate-backgrounds plasma-workspace-wallpapers python3 python3-pil python3-numpy
             lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 palapeli-data gcompris-qt-data
             python3-skimage python3-sklearn python-matplotlib-data python3-scipy)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
if [ -f "$BUILD_DIR/build.ninja" ]; then
  meson setup --reconfigure "$BUILD_DIR" >/dev/null
else
  meson setup "$BUILD_DIR" >/dev/null
fi
ninja -C "$BUILD_DIR"
