#!/usr/bin/env bash
# Regenerates docs/results.md: quality of every KV-cache variant against the exact (f32) cache
# of the same model on the same tokens, side by side in one run (../shared/docs/EVALUATION.md).
# Each window is prefilled for its first PREFILL tokens (default 64) and then fed in chunks of
# 64, so nearly every scored token reads the cache's coded history, as in decoding. Two modes:
# default (the cache's exact recent window: 128 tokens) and stress (window 0: every token read
# back from its quantized form). PQ codebooks come from `million calibrate` on
# ../shared/text/calib (never evaluation text). Not a test; on 2 cores the default sections take
# about 2 hours (the gutenberg-1024 section alone: about 20 minutes).
#
# Sections (SECTIONS, space-separated; default all five):
#   gutenberg-4096   gutenberg-23m, held-out books (eval-tokens/heldout_eval.bin), ctx 4096
#   gutenberg-1024   gutenberg-23m, the same held-out books, ctx 1024
#   gutenberg-wiki   gutenberg-23m, WikiText-2 test, ctx 1024
#   smollm2-wiki     SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh), WikiText-2 test, ctx 1024
#   smollm2-books    SmolLM2-135M-Instruct, the held-out books, ctx 1024
# pq-norm and pq-qpca rows run the pq cache as users get it: with a normalised codebook it keeps
# the first 4 positions exact (sinks=4, its default); the -sinks0 rows are the same codebooks
# with sinks=0.
# Environment: WINDOWS_4096 (default 8), WINDOWS_GUT1024 (gutenberg-1024, default 16),
#   WINDOWS_WIKI (gutenberg-wiki, default 8), WINDOWS_SMOL (SmolLM2 sections, default 4),
#   PREFILL (64), SMOL_ONLY / GUT_WIKI_ONLY / GUT1024_ONLY / GUT4096_ONLY (run only these row labels
#   in that section, e.g. "f16 q4_0 pq-norm-4bit"; SMOL_ONLY defaults to the rows that fit
#   head_dim 64), WORK (default /tmp/million-eval; codebooks, logits and run JSONs are reused from
#   there: delete a run's JSON to redo it), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${MILLION_SHARED_DIR:-../shared}
SECTIONS=${SECTIONS:-"gutenberg-4096 gutenberg-1024 gutenberg-wiki smollm2-wiki smollm2-books"}
# KIVI's value groups of 128 channels do not fit SmolLM2's head_dim 64: its g128 rows are left out.
SMOL_ONLY=${SMOL_ONLY:-"f16 q8_0 q4_0 q4_0-hadamard kivi-4-g32 kivi-2-g32 pq-norm-4bit pq-norm-4bit-sinks0 pq-norm-2bit
  pq-norm-2bit-sinks0 pq-qpca-4bit pq-qpca-4bit-sinks0 pq-qpca-2bit pq-qpca-2bit-sinks0"}
SMOL_ONLY=$(echo $SMOL_ONLY)
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

# The PQ variants (name, calibrate options, cache spec, codebook name if not the variant's own).
# pq-norm: Hadamard rotation, keys min/max-normalised per channel over groups of 128 tokens,
# values divided by their per-token norm, per-(layer, kv head) codebooks (docs/pq-research.md);
# the cache keeps 4 exact sinks by default with such a codebook, -sinks0 turns them off.
# M4 / M2: subspaces for 4 / 2 bits per element with 8-bit codes (head_dim / 2, head_dim / 4).
NORM="--granularity layer-head --rotation hadamard --k-norm channel-group --v-norm token"
# pq-qpca: as pq-norm, but keys go through the query-aware learned transform (pq/query_pca.h)
# instead of the Hadamard rotation, with per-channel scales after their channel-group
# normalisation; values as pq-norm.
QPCA="--granularity layer-head --rotation qpca --k-norm channel-group --v-norm token"
PQ_VARIANTS=(
  "pq-paper-4bit|--granularity shared --rotation none --k-norm none --v-norm none --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq-paper"
  "pq-paper-2bit|--granularity shared --rotation none --k-norm none --v-norm none --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq-paper"
  "pq-head-hadamard-4bit|--granularity layer-head --rotation hadamard --k-norm none --v-norm none --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq"
  "pq-head-hadamard-2bit|--granularity layer-head --rotation hadamard --k-norm none --v-norm none --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq"
  "pq-norm-4bit|$NORM --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq"
  "pq-norm-4bit-sinks0|$NORM --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq:sinks=0|pq-norm-4bit"
  "pq-norm-2bit|$NORM --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq"
  "pq-norm-2bit-sinks0|$NORM --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq:sinks=0|pq-norm-2bit"
  "pq-qpca-4bit|$QPCA --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq"
  "pq-qpca-4bit-sinks0|$QPCA --k pq:M=M4,nbits=8 --v pq:M=M4,nbits=8|pq:sinks=0|pq-qpca-4bit"
  "pq-qpca-2bit|$QPCA --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq"
  "pq-qpca-2bit-sinks0|$QPCA --k pq:M=M2,nbits=8 --v pq:M=M2,nbits=8|pq:sinks=0|pq-qpca-2bit"
)
BASELINES=(q8_0 q4_0 q4_0-hadamard kivi-4:group=32 kivi-4:group=128 kivi-2:group=32 kivi-2:group=128)
# A section may run a subset (ONLY: space-separated labels; empty = all).

# section, model, source options (--tokens/--text), ctx, windows, head_dim, calibrate options, ONLY,
# sinks (1: also q4_0-hadamard with the first 4 positions exact, the pq-norm rows' default)
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
      IFS='|' read -r label cal kv cb <<<"$v"
      if [ -n "$only" ] && [[ " $only " != *" $label "* ]]; then continue; fi
      cb=$(basename "$model")-${cb:-$label}
      cal=${cal//M4/$((hd / 2))}
      cal=${cal//M2/$((hd / 4))}
      # shellcheck disable=SC2086
      calib "$model" "$cb" $cal $copts
      if [[ $kv == *:* ]]; then kv="$kv$opt"; else kv="$kv$sep"; fi
      run "$label" "$mode" --kv "$kv" --codebook "$WORK/$cb.cb"
    done
    if [ "$sinks" = 1 ]; then
      force=1 run q4_0-hadamard-sinks4 "$mode" --kv "q4_0-hadamard:sinks=4$opt"
    fi
  done
}

for sec in $SECTIONS; do
  case $sec in
    gutenberg-4096)
      evaluate "$sec" "$GUT" "--tokens $GUT/eval-tokens/heldout_eval.bin" 4096 "${WINDOWS_4096:-8}" 128 "" \
        "${GUT4096_ONLY:-}" ;;
    gutenberg-1024)
      evaluate "$sec" "$GUT" "--tokens $GUT/eval-tokens/heldout_eval.bin" 1024 "${WINDOWS_GUT1024:-16}" 128 "" \
        "${GUT1024_ONLY:-}" ;;
    gutenberg-wiki)
      evaluate "$sec" "$GUT" "--text $WIKI" 1024 "${WINDOWS_WIKI:-8}" 128 "" "${GUT_WIKI_ONLY:-}" ;;
    smollm2-wiki)
      if [ ! -f "$SMOL" ]; then bash scripts/fetch-smollm2.sh || { echo "skipping $sec: no SmolLM2"; continue; }; fi
      evaluate "$sec" "$SMOL" "--text $WIKI" 1024 "${WINDOWS_SMOL:-4}" 64 "--max-tokens 16384" "$SMOL_ONLY" 1 ;;
    smollm2-books)
      if [ ! -f "$SMOL" ]; then bash scripts/fetch-smollm2.sh || { echo "skipping $sec: no SmolLM2"; continue; }; fi
      evaluate "$sec" "$SMOL" "--text $SHARED/text/heldout-books" 1024 "${WINDOWS_SMOL:-4}" 64 "--max-tokens 16384" \
        "$SMOL_ONLY" 1 ;;
    *) echo "eval-results: unknown section $sec"; exit 2 ;;
  esac
done

python3 scripts/eval_report.py "$WORK" "$(git rev-parse --short HEAD)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$THREADS" "$PREFILL" >docs/results.md
echo "wrote docs/results.md"
