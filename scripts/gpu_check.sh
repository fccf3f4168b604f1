#!/usr/bin/env bash
# GPU checks on one NVIDIA H100/H200, in under 8 minutes:
#   1. every attention backend and packed-document path against the eager reference (pytest -m gpu)
#   2. a few steps of trainer=fsdp (bf16-mixed, one FSDP unit per block) with the flash backend
#   3. Pythia-410M shape, sequence 2048, bf16: cpt vs transformers (sdpa and flash-attention-2),
#      tokens/s, MFU (6N + 12 L d T against 989 TFLOP/s) and peak memory
# Needs a CUDA build of torch and `pip install -e .[dev,hf,gpu]` (flash-attn optional: without
# it the flash cases are skipped and the sdpa paths run). PYTHON picks the interpreter (default:
# python3). Every step runs, whatever the one before it did; the script fails at the end if any did.
# Usage: bash scripts/gpu_check.sh [output folder, default outputs/gpu_check]
set -uo pipefail
FAILED=()
step() {  # step NAME COMMAND...: run it, remember a failure, go on
    local name=$1; shift
    echo "== $name"
    "$@" || { echo "!! $name failed (exit $?)"; FAILED+=("$name"); }
}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
try:
    from cpt.models.attention import flash_attn_module
    print("flash-attn", getattr(flash_attn_module(), "__version__", "3"))
except ImportError:
    print("flash-attn not installed: flash cases skipped")
PY
if "$PY" -c "import flash_attn" 2>/dev/null || "$PY" -c "import flash_attn_interface" 2>/dev/null; then
    OURS=flash; HF=sdpa,flash_attention_2
else
    OURS=sdpa; HF=sdpa
fi

step "1. backend parity" timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_performance.py

step "2. trainer=fsdp, a few steps" timeout 180 "$PY" -m cpt.train trainer=fsdp trainer.devices=1 model=tiny-llama \
    model.attention=$OURS data.document_aware=true data.tokenizer=bpe:2048 \
    data.domains.upstream.max_docs=200 data.domains.downstream.max_docs=200 \
    trainer.max_steps=20 trainer.val_check_interval=10 logger=csv data.dir="$OUT/data" \
    hydra.run.dir="$OUT/fsdp" trainer.enable_progress_bar=false
step "2b. fsdp summary" "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print('fsdp summary:', s['steps'], 'steps', s['final_val_loss'])" "$OUT/fsdp/summary.json"

step "3. Pythia-410M, seq 2048, bf16: cpt ($OURS, compiled) vs transformers ($HF)" \
    timeout 330 "$PY" scripts/bench_train.py --device cuda --model pythia-410m --seq 2048 --batch 8 \
    --precisions bf16 --attention $OURS --compile --hf-attention $HF \
    --repeats 2 --warmup 3 --steps 10

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== failed: ${FAILED[*]}"
    exit 1
fi
echo "== every step passed"
