#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build, and generate a story
# with the bundled stories260K model. Extra arguments are passed to `million generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh -DMILLION_BUILD_TESTS=OFF -DMILLION_BUILD_BENCH=OFF >/dev/null
./build/million generate --model models/stories260K/stories260K.bin --prompt "Once upon a time" -n 200 "$@"
