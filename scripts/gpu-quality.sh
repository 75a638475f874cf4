#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu-check.sh built build-cuda/: KV-cache quality of the GPU's
# PQ caches on gutenberg-23m's held-out books (EVALUATION.md: ctx 4096, the first 8 windows as
# docs/results.md's CPU table — WINDOWS=0 for all 48 —, the first 64 tokens prefilled, then
# chunks of 64), each against the GPU's fp16 cache on the same tokens, with
# `million-gpu perplexity`. Default mode (window 128; pq-norm and pq-qpca keep 4 sinks) for every codebook,
# stress mode (window 0) for pq-paper (the normalised variant needs a window on the GPU).
# Needs device-carry/ from scripts/gpu-deps.sh (model, heldout_eval.bin, codebooks); rows whose
# codebook is absent are skipped. Writes a markdown table to $OUT/quality-gpu.md (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
WINDOWS=${WINDOWS:-8}
mkdir -p "$OUT"
G=device-carry/gutenberg-23m
BIN=./build-cuda/src/backends/cuda/million-gpu
[ -x "$BIN" ] || { echo "gpu-quality: build $BIN first (scripts/gpu-check.sh)"; exit 1; }
[ -f "$G/heldout_eval.bin" ] || { echo "gpu-quality: $G/heldout_eval.bin missing (scripts/gpu-deps.sh)"; exit 1; }
md="$OUT/quality-gpu.md"
{
  echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1). gutenberg-23m (bf16 weights), held-out books,"
  echo "ctx 4096, $([ "$WINDOWS" = 0 ] && echo all 48 || echo the first "$WINDOWS") windows, first 64 tokens prefilled then chunks of 64; every row against the GPU's fp16 cache on"
  echo "the same tokens in the same process."
  echo
  echo "| mode | cache | window | sinks | fp16 PPL | PPL | ΔPPL % | mean KLD | p99 KLD | top-1 % |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$md"
row() {  # mode, codebook name, window
  local mode=$1 name=$2 win=$3 cb=device-carry/gutenberg-23m-$2.cb
  [ -f "$cb" ] || { echo "gpu-quality: $cb missing, row skipped"; return; }
  "$BIN" perplexity --model "$G" --tokens "$G/heldout_eval.bin" --ctx 4096 --windows "$WINDOWS" --first 64 --chunk 64 \
    --codebook "$cb" --window "$win" --json "$OUT/q.json" >"$OUT/q.log" 2>&1 || { tail -3 "$OUT/q.log"; return; }
  python3 - "$OUT/q.json" "$mode" "$name" >>"$md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {int(r['window'])} | {int(r['sinks'])} | {r['ppl_f16']:.4f} | {r['ppl_pq']:.4f} | "
      f"{r['delta_ppl_pct']:+.3f} | {r['mean_kld']:.5f} | {r['p99_kld']:.4f} | {r['top1_pct']:.2f} |")
PY
}
row default pq-norm-4bit 128
row default pq-norm-2bit 128
row default pq-qpca-4bit 128
row default pq-qpca-2bit 128
row default pq-paper-4bit 128
row default pq-paper-2bit 128
row stress pq-paper-4bit 0
row stress pq-paper-2bit 0
cat "$md"
