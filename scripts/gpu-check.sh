#!/usr/bin/env bash
# On the GPU machine: configures a CUDA-only build (no OpenBLAS / FAISS / SentencePiece there),
# builds it, runs the CUDA tests against the CPU references (kernels, GpuLlama; gutenberg-23m's
# golden logits when device-carry/gutenberg-23m was sent along), then the decode-attention
# benchmark (ours) beside PyTorch SDPA (the peer) and the end-to-end Llama-3-8B-shape decode and
# prefill benchmark and (with device-carry/) the KV-cache quality on gutenberg-23m's held-out
# books (scripts/gpu-quality.sh), and prints a short summary table last. Full logs and the
# table go to $OUT (or ./gpu-out). Needs .gpu-deps/include (scripts/gpu-deps.sh, run on a
# development machine) carried along.
#   scripts/gpu-check.sh [--quick]      --quick: tests and a short benchmark only
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DMILLION_CPU_ENGINE=OFF -DMILLION_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DMILLION_FMT_INCLUDE_DIR="$PWD/.gpu-deps/include" >"$OUT/configure.log" 2>&1 \
  || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-cuda -j "$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
grep -E "registers|spill|smem" "$OUT/build.log" | grep -v "^$" | sort -u | head -40 >"$OUT/ptxas.txt"
echo "== ptxas (registers / spills) =="; grep -E "Used|spill" "$OUT/ptxas.txt" | head -24
echo "== tests =="
./build-cuda/src/backends/cuda/test_cuda_attention >"$OUT/test.log" 2>&1
test_rc=$?
./build-cuda/src/backends/cuda/test_cuda_llama >>"$OUT/test.log" 2>&1 || test_rc=1
grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|error" "$OUT/test.log" | head -30
grep -E "worst|refused" "$OUT/test.log"
echo "== benchmark =="
if [ $quick = 1 ]; then
  ./build-cuda/src/backends/cuda/bench_cuda_attention --reps 10 --batches 1 --contexts 32768,131072 --out "$OUT/bench-cuda.md" >"$OUT/bench.log" 2>&1
else
  ./build-cuda/src/backends/cuda/bench_cuda_attention --out "$OUT/bench-cuda.md" >"$OUT/bench.log" 2>&1
fi
copy=$(grep -o "read + write): [0-9]*" "$OUT/bench-cuda.md" | grep -o "[0-9]*$")
if [ $quick = 1 ]; then
  python3 bench/cuda/sdpa_decode.py "${copy:-1}" --batches 1 --contexts 32768,131072 >"$OUT/sdpa.md" 2>&1
else
  python3 bench/cuda/sdpa_decode.py "${copy:-1}" >"$OUT/sdpa.md" 2>&1
fi
if [ $quick = 1 ]; then
  ./build-cuda/src/backends/cuda/bench_cuda_model --steps 8 --contexts 32768 --pq-1m 0 --prefill 4096 --out "$OUT/bench-model.md" >"$OUT/bench-model.log" 2>&1
else
  ./build-cuda/src/backends/cuda/bench_cuda_model --out "$OUT/bench-model.md" >"$OUT/bench-model.log" 2>&1
fi
if [ $quick = 0 ] && [ -f device-carry/gutenberg-23m/heldout_eval.bin ]; then
  OUT="$OUT" bash scripts/gpu-quality.sh >"$OUT/quality.log" 2>&1  # KV-cache quality on real text: $OUT/quality-gpu.md
fi
cat "$OUT/bench-cuda.md"
grep "^|" "$OUT/sdpa.md"
echo "== end to end (bench_cuda_model) =="
cat "$OUT/bench-model.md" 2>/dev/null || tail -5 "$OUT/bench-model.log"
# The short table: the rows the targets are about (full tables above and in $OUT).
{
  echo "== summary =="
  grep -o "Device-to-device copy.*" "$OUT/bench-cuda.md"
  grep -E "^\| (pq 4-bit \(M=64\), mma|fp16 \(ours\)) \| [18] \| (131072|1048576) " "$OUT/bench-cuda.md"
  grep -E "^\| SDPA fp16 \(torch\) \| [18] \| (131072|1048576) " "$OUT/sdpa.md"
  grep -E "graph \| 1 \| (131072|1048576) " "$OUT/bench-model.md" 2>/dev/null | cut -c1-160
  grep -E "^\| (f16|pq4w|pq4n) \| 1 \| [0-9]+ \| [0-9]+ \| " "$OUT/bench-model.md" 2>/dev/null | sed 's/^/prefill /'
  grep -E "^\| default \| pq-norm-4bit " "$OUT/quality-gpu.md" 2>/dev/null | sed 's/^/quality /'
  echo "tests: $([ $test_rc = 0 ] && echo passed || echo FAILED) ($OUT/test.log)"
} | tee "$OUT/summary.txt"
exit $test_rc
