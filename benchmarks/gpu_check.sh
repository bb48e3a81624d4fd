#!/usr/bin/env bash
# The GPU check in one call on the lent device machine (docs/performance.md):
#   1. install the carried wheels (.whl/, made here by `make gpu-wheels`) into a temporary site folder,
#      without their dependencies: the device's own torch, torchvision, numpy, ... stay in charge;
#   2. run benchmarks/gpu_check.py on the GPU with the repository and that folder on PYTHONPATH;
#   3. leave the JSON and the log in $OUT (the folder the device tool brings back).
# Extra arguments go to gpu_check.py (e.g. --sections mmclip, --captions 16).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${OUT:-$repo/runs/gpu_check}
site=${GPU_CHECK_SITE:-/tmp/site}
mkdir -p "$out"

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
else
  echo "gpu_check.sh: no wheels in .whl/ (make gpu-wheels): using the packages installed here" >&2
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
# Nothing can be downloaded there: fail at once instead of waiting on the network.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/nvidia_smi.csv" 2>&1 || true
python3 benchmarks/gpu_check.py --device cuda --out "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
