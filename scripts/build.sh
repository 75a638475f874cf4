#!/usr/bin/env bash
# Configures and builds million (Release) into build/. Extra arguments go to cmake's configure
# step, e.g. scripts/build.sh -DMILLION_BUILD_TESTS=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build --parallel "$(nproc)"
