#!/usr/bin/env bash
# Prepares what a CUDA-only build needs on the GPU machine and that machine lacks: the fmt
# headers, taken from Debian's libfmt-dev package (downloaded with apt-get, unpacked here into
# .gpu-deps/, used header-only) — and, when ../shared holds it, the gutenberg-23m model
# (weights, config, golden.json, the held-out evaluation tokens: 46 MB) copied into device-carry/
# for the GPU's real-model tests and scripts/gpu-quality.sh, with its codebooks when they have
# been calibrated.
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
if [ -f "$GUT/eval-tokens/heldout_eval.bin" ] && [ ! -f device-carry/gutenberg-23m/heldout_eval.bin ]; then
  mkdir -p device-carry/gutenberg-23m
  cp "$GUT/eval-tokens/heldout_eval.bin" device-carry/gutenberg-23m/  # scripts/gpu-quality.sh
fi
# Its codebooks from an evaluation run's work folder (scripts/eval-results.sh calibrates them
# with `million calibrate` on ../shared/text/calib): pq-norm 4-bit for the GPU's real-model PQ
# test (or CODEBOOK=file; NO_TEST_CODEBOOK=1 skips it), and CODEBOOKS (default pq-norm-2bit
# pq-paper-4bit pq-paper-2bit) for scripts/gpu-quality.sh. What is carried to a GPU machine
# (checkout + device-carry + .gpu-deps) must stay under 64 MiB: the checkout (6 MB), the model
# (46 MB) and these books (13 MB) just fit; a qpca book (7.3 MB) fits only in place of both
# pq-norm books: NO_TEST_CODEBOOK=1 CODEBOOKS="pq-qpca-2bit pq-paper-4bit pq-paper-2bit" on a
# device-carry/ without them (the gutenberg real-KV GPU tests then skip).
WORKDIR=${WORK:-/tmp/million-eval}
CB=${CODEBOOK:-$WORKDIR/gutenberg-23m-pq-norm-4bit.cb}
if [ -z "${NO_TEST_CODEBOOK:-}" ] && [ -f "$CB" ] && [ ! -f device-carry/gutenberg-23m-pq-norm-4bit.cb ]; then
  mkdir -p device-carry && cp "$CB" device-carry/gutenberg-23m-pq-norm-4bit.cb
  echo "gpu-deps: $CB in device-carry/"
fi
for v in ${CODEBOOKS:-pq-norm-2bit pq-paper-4bit pq-paper-2bit}; do
  if [ -f "$WORKDIR/gutenberg-23m-$v.cb" ] && [ ! -f "device-carry/gutenberg-23m-$v.cb" ]; then
    mkdir -p device-carry && cp "$WORKDIR/gutenberg-23m-$v.cb" device-carry/
    echo "gpu-deps: gutenberg-23m-$v.cb in device-carry/"
  fi
done
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
