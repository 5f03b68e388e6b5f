#!/usr/bin/env bash
# What a GPU machine without a package index needs for bench/gpu_acceptance.py, put in two folders that git
# ignores, to be carried along with the checkout (docs/benchmarks.md, "On this workplace's GPU machine"):
#   .whl/            wheels (Python 3.12, x86-64 Linux) of the packages that machine's image lacks
#   ext/frameworks/  a copy of the frameworks' snapshots (DomainBed/, Dassl.pytorch/, CoOp/)
# Usage: bash bench/prepare_gpu_carry.sh [FRAMEWORKS_DIR]   (default ../shared/frameworks); needs pip and the index.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMEWORKS=${1:-../shared/frameworks}
LIMIT_MIB=64

# The image already holds torch, torchvision, numpy, pillow, pandas, scipy, scikit-learn, tensorboard, matplotlib,
# regex, tqdm, tabulate, timm, huggingface_hub, safetensors, requests, pyyaml (.library/device/KINDS.md): these are
# the rest of what the project, DomainBed (and its tests) and Dassl import, at the versions tested here.
WHEELS=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4              # the project (CLIP models, its tokenizer)
  yacs==0.1.8 gdown==6.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.3 PySocks==1.7.1   # Dassl
  wilds==2.0.0 ogb==1.3.6 outdated==0.2.2 littleutils==0.2.4 pytz==2026.6           # DomainBed and Dassl datasets
  parameterized==0.9.0                                            # DomainBed's tests
)

if [ ! -d "$FRAMEWORKS/DomainBed" ] || [ ! -d "$FRAMEWORKS/Dassl.pytorch" ]; then
  echo "prepare_gpu_carry.sh: $FRAMEWORKS lacks DomainBed/ or Dassl.pytorch/; give the frameworks folder as argument" >&2
  exit 2
fi

rm -rf .whl && mkdir .whl
missing=()
for wheel in "${WHEELS[@]}"; do
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$wheel" >/dev/null 2>.whl/error.txt; then
    missing+=("$wheel: $(tail -n 1 .whl/error.txt)")
  fi
done
rm -f .whl/error.txt

if [ -d ext/frameworks ]; then chmod -R u+w ext/frameworks && rm -rf ext/frameworks; fi
mkdir -p ext
cp -R "$FRAMEWORKS" ext/frameworks
chmod -R u+w ext/frameworks  # the snapshots may be read-only; the copy must not be
find ext/frameworks \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

kib() { du -sk "$@" | awk '{s += $1} END {print s}'; }
tracked=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -n 1 | cut -f1)
wheels=$(kib .whl)
frameworks=$(kib ext/frameworks)
total=$((tracked + wheels + frameworks))
printf 'wheels %d KiB (%d files), frameworks %d KiB, tracked files %d KiB: %d KiB of the %d MiB a call carries\n' \
  "$wheels" "$(ls .whl | wc -l)" "$frameworks" "$tracked" "$total" "$LIMIT_MIB"
if [ ${#missing[@]} -gt 0 ]; then
  printf 'no wheel for Python 3.12 on x86-64 Linux: %s\n' "${missing[@]}" >&2
  exit 1
fi
if [ "$total" -ge $((LIMIT_MIB * 1024)) ]; then
  echo "over the $LIMIT_MIB MiB a call carries" >&2
  exit 1
fi
