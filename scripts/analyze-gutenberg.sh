#!/usr/bin/env bash
# Regenerates docs/analysis/ (report.md, heads.csv, errors.csv, plots/*.svg): `million analyze`
# on gutenberg-23m over 8192 tokens of ../shared/text/calib, with pq-norm codebooks from
# `million calibrate --rotation hadamard` (the default before qpca, which docs/analysis.md
# describes; seed 0; built once into build/analysis/) and analysis windows drawn with seed 1. Needs gnuplot for the plots. Not part of the tests; a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-../shared/models/gutenberg-23m}
text=${TEXT:-../shared/text/calib}
cb=build/analysis/gutenberg-23m.cb
bash scripts/build.sh >/dev/null
mkdir -p build/analysis
if [ ! -f "$cb" ]; then
  ./build/million calibrate -m "$model" --text "$text" --out "$cb" --rotation hadamard -q
fi
./build/million analyze -m "$model" --text "$text" --max-tokens 8192 --codebook "$cb" --seed 1 -o build/analysis/out
rm -rf docs/analysis
mkdir -p docs/analysis/plots
cp build/analysis/out/report.md build/analysis/out/heads.csv build/analysis/out/errors.csv docs/analysis/
cp build/analysis/out/plots/*.svg docs/analysis/plots/
du -sh docs/analysis
echo "wrote docs/analysis/ (stats.csv and the plot data stay in build/analysis/out)"
