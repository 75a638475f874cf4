#!/usr/bin/env bash
# Prepares what a CUDA-only build needs on the GPU machine and that machine lacks: the fmt
# headers, taken from Debian's libfmt-dev package (downloaded with apt-get, unpacked here into
# .gpu-deps/, used header-only). Run on a development machine before sending the checkout;
# scripts/gpu-check.sh uses .gpu-deps/include. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
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
