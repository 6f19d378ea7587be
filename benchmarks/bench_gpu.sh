#!/usr/bin/env bash
# GPU figures in one short run (under 5 minutes): the pipeline benchmark on one CUDA device, i.e.
# decode_s, clip_s, e2e_s (e2e_over_decode: goal <= 1.15), cache hit, extraction, the decoding
# order, and the ViT-B-32 encoder alone at batch 32/128/512 in fp16 and bf16 with peak GPU memory
# (goal >= 10,000 frames/s at batch 512 in fp16 on an H100/H200-class GPU).
#
#   bash benchmarks/bench_gpu.sh          # from anywhere; PYTHON=/path/to/python to choose one
#
# Needs the runtime requirements (pip install -r requirements.txt) and an NVIDIA GPU; downloads
# nothing. Everything it writes (test video, caches, checkpoints) goes to one temporary folder,
# removed at the end. The last line printed is the benchmark's JSON object.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d -t gf-gpu-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

export TMPDIR="$WORK" XDG_CACHE_HOME="$WORK/cache" HF_HOME="$WORK/hf" MPLCONFIGDIR="$WORK/mpl"
export TRITON_CACHE_DIR="$WORK/triton" TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" PYTHONDONTWRITEBYTECODE=1
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" - <<'PY'
import os, sys
import torch
missing = [m for m in ("decord", "open_clip", "av", "safetensors", "transformers") if __import__("importlib").util.find_spec(m) is None]
if missing:
    sys.exit(f"missing packages {missing}: pip install -r requirements.txt")
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs")
PY
cd "$ROOT"
timeout 280 "$PYTHON" benchmarks/bench_pipeline.py --device cuda --repeats 3 "$@"
