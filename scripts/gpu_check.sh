#!/usr/bin/env bash
# On a machine with a CUDA GPU: the tests (the app and every command pick the GPU with
# --device auto), then CPU against CUDA decisions and attributions of the shipped DEQs.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))'
python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
mkdir -p "${OUT:-.}"
python -m pytest -q -m "not browser" -x 2>&1 | tail -n 5
python scripts/gpu_check.py --cases 20 --json "${OUT:-.}/gpu_check.json"
