#!/usr/bin/env bash
# Regenerates docs/results.md: quality of every KV-cache variant against the exact (f32) cache
# of the same model on the same tokens, side by side in one run (../shared/docs/EVALUATION.md).
# Each window is prefilled for its first PREFILL tokens (default 64) and then fed in chunks of
# 64, so nearly every scored token reads the cache's coded history, as in decoding. Two modes:
# default (the cache's exact recent window: 128 tokens) and stress (window 0: every token read
# back from its quantized form). PQ codebooks come from `million calibrate` on
# ../shared/text/calib (never evaluation text). Not a test; on 2 cores the default sections take
# about 90 minutes.
#
# Sections (SECTIONS, space-separated; default all four):
#   gutenberg-4096   gutenberg-23m, held-out books (eval-tokens/heldout_eval.bin), ctx 4096
#   gutenberg-wiki   gutenberg-23m, WikiText-2 test, ctx 1024
#   smollm2-wiki     SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh), WikiText-2 test, ctx 1024
#   smollm2-books    SmolLM2-135M-Instruct, the held-out books, ctx 1024
# Environment: WINDOWS_4096 (default 8), WINDOWS_1024 (default 16), PREFILL (64), SMOL_ONLY /
#   GUT_WIKI_ONLY (run only these row labels in that section, e.g. "f16 q4_0 pq-norm-4bit"),
#   WORK (default /tmp/million-eval; codebooks and logits are reused from there), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${MILLION_SHARED_DIR:-../shared}
SECTIONS=${SECTIONS:-"gutenberg-4096 gutenberg-wiki smollm2-wiki smollm2-books"}
PREFILL=${PREFILL:-64}
WORK=${WORK:-/tmp/million-eval}
THREADS=${THREADS:-$(nproc)}
GUT=$SHARED/models/gutenberg-23m
SMOL=models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
WIKI=$SHARED/text/wikitext-2-raw/wiki.test.raw
mkdir -p "$WORK"
bash scripts/build.sh >/dev/null
M=./build/million

calib() {  # model, out name, calibrate options...
  local model=$1 name=$2
  shift 2
  if [ ! -f "$WORK/$name.cb" ]; then
    echo "calibrating $name ($*)"
    $M calibrate -m "$model" --text "$SHARED/text/calib" --out "$WORK/$name.cb" -q -t "$THREADS" "$@"
  fi
}

# The PQ variants (name, calibrate options). pq-norm: Hadamard rotation, keys min/max-normalised
# per channel over groups of 128 tokens, values divided by their per-token norm, per-(layer, kv
# head) codebooks (docs/pq-research.md).
# M4 / M2: subspaces for 4 / 2 bits per element with 8-bit codes (head_dim / 2, head_dim / 4).
PQ_VARIANTS=(
  "pq-paper-4bit|--granularity shared --rotation none --k-norm none --v-norm none --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq-paper"
  "pq-paper-2bit|--granularity shared --rotation none --k-norm none --v-norm none --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq-paper"
  "pq-head-hadamard-4bit|--granularity layer-head --rotation hadamard --k-norm none --v-norm none --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq"
  "pq-head-hadamard-2bit|--granularity layer-head --rotation hadamard --k-norm none --v-norm none --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq"
  "pq-norm-4bit|--granularity layer-head --rotation hadamard --k-norm channel-group --v-norm token --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq"
  "pq-norm-2bit|--granularity layer-head --rotation hadamard --k-norm channel-group --v-norm token --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq"
)
BASELINES=(q8_0 q4_0 q4_0-hadamard kivi-4:group=32 kivi-4:group=128 kivi-2:group=32 kivi-2:group=128)
# A section may run a subset (ONLY: space-separated labels; empty = all).

# section, model, source options (--tokens/--text), ctx, windows, head_dim, calibrate options, ONLY,
# sinks (1: also q4_0-hadamard and pq-norm-4bit with the first 4 positions exact)
evaluate() {
  local sec=$1 model=$2 src=$3 ctx=$4 windows=$5 hd=$6 copts=$7 only=$8 sinks=${9:-0}
  local dir=$WORK/$sec
  mkdir -p "$dir"
  echo "== $sec"
  local common=(-m "$model" $src --ctx "$ctx" --chunk 64 --prefill "$PREFILL" --max-windows "$windows" -q --json
    -t "$THREADS")
  if [ ! -f "$dir/base.logits" ]; then
    echo "exact cache (f32)"
    $M perplexity "${common[@]}" --kv f32 --save-logits "$dir/base.logits" >"$dir/base.json"
  fi
  run() {  # label, mode, perplexity options...
    local label=$1 mode=$2
    shift 2
    [ -f "$dir/run-$mode-$label.json" ] && return
    if [ -n "$only" ] && [ "${force:-0}" != 1 ] && [[ " $only " != *" $label "* ]]; then return; fi
    echo "$label ($mode)"
    $M perplexity "${common[@]}" --kl-base "$dir/base.logits" "$@" >"$dir/run-$mode-$label.json.tmp"
    mv "$dir/run-$mode-$label.json.tmp" "$dir/run-$mode-$label.json"
  }
  run f16 default --kv f16
  for mode in default stress; do
    local w="" sep="" opt=""
    if [ "$mode" = stress ]; then w="window=0"; sep=":$w"; opt=",$w"; fi
    for b in "${BASELINES[@]}"; do
      local label=${b/:group=/-g}
      if [[ $b == *:* ]]; then run "$label" "$mode" --kv "$b$opt"; else run "$label" "$mode" --kv "$b$sep"; fi
    done
    for v in "${PQ_VARIANTS[@]}"; do
      IFS='|' read -r label cal kv <<<"$v"
      if [ -n "$only" ] && [[ " $only " != *" $label "* ]]; then continue; fi
      cal=${cal//M4/$((hd / 2))}
      cal=${cal//M2/$((hd / 4))}
      # shellcheck disable=SC2086
      calib "$model" "$(basename "$model")-$label" $cal $copts
      run "$label" "$mode" --kv "$kv$sep" --codebook "$WORK/$(basename "$model")-$label.cb"
    done
    if [ "$sinks" = 1 ]; then
      force=1 run q4_0-hadamard-sinks4 "$mode" --kv "q4_0-hadamard:sinks=4$opt"
      force=1 run pq-norm-4bit-sinks4 "$mode" --kv "pq:sinks=4$opt" --codebook "$WORK/$(basename "$model")-pq-norm-4bit.cb"
    fi
  done
}

for sec in $SECTIONS; do
  case $sec in
    gutenberg-4096)
      evaluate "$sec" "$GUT" "--tokens $GUT/eval-tokens/heldout_eval.bin" 4096 "${WINDOWS_4096:-8}" 128 "" "" ;;
    gutenberg-wiki)
      evaluate "$sec" "$GUT" "--text $WIKI" 1024 "${WINDOWS_1024:-16}" 128 "" "${GUT_WIKI_ONLY:-}" ;;
    smollm2-wiki)
      if [ ! -f "$SMOL" ]; then bash scripts/fetch-smollm2.sh || { echo "skipping $sec: no SmolLM2"; continue; }; fi
      evaluate "$sec" "$SMOL" "--text $WIKI" 1024 "${WINDOWS_1024:-16}" 64 "--max-tokens 16384" "${SMOL_ONLY:-}" 1 ;;
    smollm2-books)
      if [ ! -f "$SMOL" ]; then bash scripts/fetch-smollm2.sh || { echo "skipping $sec: no SmolLM2"; continue; }; fi
      evaluate "$sec" "$SMOL" "--text $SHARED/text/heldout-books" 1024 "${WINDOWS_1024:-16}" 64 "--max-tokens 16384" \
        "${SMOL_ONLY:-}" 1 ;;
    *) echo "eval-results: unknown section $sec"; exit 2 ;;
  esac
done

python3 scripts/eval_report.py "$WORK" "$(git rev-parse --short HEAD)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$THREADS" "$PREFILL" >docs/results.md
echo "wrote docs/results.md"
