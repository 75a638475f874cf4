#!/usr/bin/env bash
# Installs everything million needs on a fresh Debian 12 machine, from Debian packages only.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

# BLAS: the OpenMP build of OpenBLAS shares our OpenMP thread pool (no oversubscription).
# FAISS is for codebook calibration (k-means, OPQ); PCRE2 for Unicode-aware pre-tokenizers;
# gnuplot (no X11) draws `million analyze`'s SVG plots (without it analyze writes only CSV + markdown).
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopenblas-dev libopenblas-openmp-dev libsentencepiece-dev nlohmann-json3-dev
  libcli11-dev libfmt-dev libfaiss-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
