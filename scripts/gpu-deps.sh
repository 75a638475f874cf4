#!/usr/bin/env bash
# Prepares what a CUDA-only build needs on the GPU machine and that machine lacks: the fmt
# headers, taken from Debian's libfmt-dev package (downloaded with apt-get, unpacked here into
# .gpu-deps/, used header-only) — and, when ../shared holds it, the gutenberg-23m model
# (weights, config, golden.json: 45 MB) copied into device-carry/ for the GPU's real-model tests,
# with its pq-norm codebook when one has been calibrated.
# Run on a development machine before sending the checkout (with .gpu-deps and device-carry);
# scripts/gpu-check.sh uses .gpu-deps/include. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
GUT=${MILLION_SHARED_DIR:-../shared}/models/gutenberg-23m
if [ -f "$GUT/golden.json" ] && [ ! -f device-carry/gutenberg-23m/golden.json ]; then
  mkdir -p device-carry/gutenberg-23m
  cp "$GUT"/config.json "$GUT"/golden.json "$GUT"/model.safetensors.index.json "$GUT"/*.safetensors device-carry/gutenberg-23m/
  echo "gpu-deps: gutenberg-23m in device-carry/gutenberg-23m"
fi
# Its pq-norm 4-bit codebook (the GPU's real-model PQ test), from an evaluation run's work folder
# (scripts/eval-results.sh calibrates it) or CODEBOOK=file.
CB=${CODEBOOK:-${WORK:-/tmp/million-eval}/gutenberg-23m-pq-norm-4bit.cb}
if [ -f "$CB" ] && [ ! -f device-carry/gutenberg-23m-pq-norm-4bit.cb ]; then
  mkdir -p device-carry && cp "$CB" device-carry/gutenberg-23m-pq-norm-4bit.cb
  echo "gpu-deps: $CB in device-carry/"
fi
if [ -f .gpu-deps/include/fmt/format.h ]; then
  echo "gpu-deps: .gpu-deps/include/fmt present"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download libfmt-dev >/dev/null)
dpkg -x "$tmp"/libfmt-dev_*.deb "$tmp/x"
mkdir -p .gpu-deps/include
cp -r "$tmp/x/usr/include/fmt" .gpu-deps/include/
echo "gpu-deps: fmt headers in .gpu-deps/include/fmt"
