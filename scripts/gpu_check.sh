#!/usr/bin/env bash
# GPU checks on one node of NVIDIA H100/H200 GPUs (one is enough), in about 10 minutes:
#   1. every attention backend and packed-document path against the eager reference (pytest -m gpu)
#   2. trainer=fsdp (FSDP2, bf16-mixed: bf16 gathers, fp32 reduce-scatter) with the flash backend
#      on 1 GPU, a sharded checkpoint at step 10; then, with more than one GPU, the same run on all
#      GPUs of the node resumed from that checkpoint (1 -> N resharding); then one GPU without FSDP
#      resuming the last sharded checkpoint (gathered whole)
#   3. Pythia-410M shape, sequence 2048, bf16: cpt vs transformers (sdpa and flash-attention-2),
#      tokens/s, MFU (6N + 12 L d T against 989 TFLOP/s) and peak memory
#   4. Pythia-410M under trainer=fsdp on every GPU of the node, compiled, flash: the trainer's own
#      tokens/s, MFU and peak memory (Throughput), the state each GPU holds
# Needs a CUDA build of torch and `pip install -e .[dev,hf,gpu]` (flash-attn optional: without
# it the flash cases are skipped and the sdpa paths run). PYTHON picks the interpreter (default:
# python3). Every step runs, whatever the one before it did; the script fails at the end if any did.
# Usage: bash scripts/gpu_check.sh [output folder, default outputs/gpu_check]
set -uo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi
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
    tests/models/

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
[ "${NGPU:-0}" -ge 1 ] || NGPU=1
SMALL=(model=tiny-llama model.attention=$OURS data.document_aware=true data.tokenizer=bpe:2048
    data.domains.upstream.max_docs=200 data.domains.downstream.max_docs=200
    data.micro_batch_size=8 data.global_batch_size=$((8 * NGPU)) trainer.val_check_interval=10
    callbacks.checkpoint.every_n_train_steps=10 logger=csv data.dir="$OUT/data"
    trainer.enable_progress_bar=false)
summary() {  # summary FOLDER: the lines of summary.json this check is about
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print('summary:', s['steps'], 'steps, resume', s['resume'], '| fsdp', s.get('fsdp'), '| state bytes per process', s['state_bytes_per_process'], '| final', s['final_val_loss'])" "$1/summary.json"
}
step "2. trainer=fsdp on 1 GPU" timeout 180 "$PY" -m cpt.train trainer=fsdp trainer.devices=1 \
    "${SMALL[@]}" trainer.max_steps=20 hydra.run.dir="$OUT/fsdp1"
step "2b. fsdp summary" summary "$OUT/fsdp1"
if [ "$NGPU" -gt 1 ]; then
    step "2c. trainer=fsdp on $NGPU GPUs, resuming the 1-GPU step 10" timeout 240 "$PY" -m cpt.train \
        trainer=fsdp trainer.devices="$NGPU" "${SMALL[@]}" trainer.max_steps=20 \
        resume="$OUT/fsdp1/checkpoints/step0000010.ckpt" hydra.run.dir="$OUT/fsdpN"
    step "2d. fsdp summary ($NGPU GPUs)" summary "$OUT/fsdpN"
fi
step "2e. one GPU without FSDP resumes the sharded step 10" timeout 180 "$PY" -m cpt.train \
    trainer=gpu "${SMALL[@]}" trainer.max_steps=20 \
    resume="$OUT/fsdp1/checkpoints/step0000010.ckpt" hydra.run.dir="$OUT/gathered"
step "2f. the resumed runs end where the 1-GPU FSDP run ended" "$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
whole = json.loads((out / "fsdp1" / "summary.json").read_text())["final_val_loss"]
for run in ("fsdpN", "gathered"):
    path = out / run / "summary.json"
    if path.is_file():
        got = json.loads(path.read_text())["final_val_loss"]
        gaps = {d: round(abs(got[d] - whole[d]), 4) for d in whole}
        print(run, "final", got, "| difference", gaps)
        assert max(gaps.values()) < 0.02, f"{run} ended elsewhere (bf16): {gaps}"
PY

step "3. Pythia-410M, seq 2048, bf16: cpt ($OURS, compiled) vs transformers ($HF)" \
    timeout 330 "$PY" scripts/bench_train.py --device cuda --model pythia-410m --seq 2048 --batch 8 \
    --precisions bf16 --attention $OURS --compile --hf-attention $HF \
    --repeats 2 --warmup 3 --steps 10

step "4. Pythia-410M under trainer=fsdp on $NGPU GPU(s), compiled, $OURS" timeout 420 "$PY" -m cpt.train \
    trainer=fsdp trainer.devices="$NGPU" model=pythia-410m model.attention=$OURS model.compile=true \
    data.seq_len=2048 data.micro_batch_size=8 data.tokenizer=bpe:2048 data.dir="$OUT/data" \
    trainer.max_steps=40 trainer.val_check_interval=1000 trainer.limit_val_batches=4 \
    eval_before_fit=false logger=csv trainer.log_every_n_steps=5 trainer.enable_progress_bar=false \
    hydra.run.dir="$OUT/fsdp410m"
step "4b. Pythia-410M FSDP throughput" "$PY" - "$OUT/fsdp410m" <<'PY'
import csv, json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r.get("perf/tokens_per_s")]
late = rows[len(rows) // 2:]  # after compilation and warm-up
for key in ("perf/tokens_per_s", "perf/mfu", "perf/peak_memory_gb"):
    values = [float(r[key]) for r in late if r.get(key)]
    print(key, "median", round(statistics.median(values), 4) if values else "not logged")
s = json.loads((out / "summary.json").read_text())
print("fsdp", s.get("fsdp"), "| state bytes per GPU", s["state_bytes_per_process"])
PY

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== failed: ${FAILED[*]}"
    exit 1
fi
echo "== every step passed"
