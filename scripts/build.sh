#!/usr/bin/env bash
# Configures (once) and builds dserve with CMake + Ninja into build/ (ccache when present).
# Extra arguments go to the first configure, e.g. -DDSERVE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build build
