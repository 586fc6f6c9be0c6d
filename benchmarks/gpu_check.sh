#!/usr/bin/env bash
# GPU readiness: bf16 autocast, torch.compile, fused AdamW, batched Newton-Schulz, auto batch size,
# CUDA peak memory and the medium preset's MFU (benchmarks/gpu_check.py). Under 8 minutes on one GPU;
# exits non-zero when a check fails. Uses .venv if there is one, else the python on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
