"""Training-step benchmark: cpt's model against `transformers` on the same shape and precision.

    python scripts/bench_train.py                     # CPU: Pythia-70m shape, seq 512, batch 4
    python scripts/bench_train.py --device cuda --model pythia-410m --seq 2048 --batch 8

A step is forward, backward and a fused AdamW update with the loss over every position, the same
optimizer for both sides, so the comparison is of the model code (attention, loss head, kernels).
Every measurement runs in a fresh process, so that peak memory is that of one model alone; the
two sides alternate (A B B A ...) so that drifts of the machine hit both, and medians are taken.
Peak memory: on CUDA `max_memory_allocated`, on CPU the peak resident set above the process's
size before the model was built (weights, gradients, AdamW state, activations, logits).

The last lines, one per case, are machine readable:
`case=cpu-fp32 tokens_per_s_ratio=1.31 peak_memory_ratio=0.52` (ours / transformers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args: argparse.Namespace) -> dict:
    """One side, one process: warm-up steps, then timed steps; prints a JSON line."""
    import torch

    from cpt.models.presets import config_from_name

    torch.manual_seed(0)
    device = torch.device(args.device)
    config = config_from_name(args.model)
    baseline = 0 if device.type == "cuda" else _rss_bytes("VmRSS")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16-true": torch.bfloat16}[
        args.precision
    ]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=args.precision == "bf16")
    if args.side == "ours":
        from cpt.models.registry import build_model

        model = build_model(config, attention=args.attention)
        model.set_loss(args.loss)
        model.activation_checkpointing = args.activation_checkpointing

        def loss_of(ids: torch.Tensor) -> torch.Tensor:
            return model(ids[:, :-1], targets=ids[:, 1:])[0]

    else:
        import transformers

        hf_config = transformers.GPTNeoXConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            rotary_pct=config.rotary_pct,
            use_parallel_residual=config.use_parallel_residual,
            tie_word_embeddings=False,
        )
        hf_config._attn_implementation = args.attention
        model = transformers.GPTNeoXForCausalLM(hf_config)
        if args.activation_checkpointing:
            model.gradient_checkpointing_enable()

        def loss_of(ids: torch.Tensor) -> torch.Tensor:
            # labels are shifted inside; the same seq targets per window as ours
            return model(input_ids=ids[:, :-1], labels=ids[:, 1:]).loss

    model.to(device=device, dtype=torch.bfloat16 if args.precision == "bf16-true" else None)
    model.train()
    if args.compile:
        if args.side == "ours":
            example = torch.zeros(args.batch, args.seq, dtype=torch.long, device=device)
            model.compile_blocks(
                example, torch.autocast(device.type, dtype=dtype, enabled=args.precision == "bf16")
            )
        else:
            for layer in model.gpt_neox.layers:
                layer.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(1)

    def step() -> None:
        ids = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), generator=generator)
        ids = ids.to(device)
        with autocast:
            loss = loss_of(ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _rss_bytes("VmHWM") - baseline
    return {"times": times, "peak_bytes": peak}


def run_side(args: argparse.Namespace, side: str, attention: str, compile_: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--attention",
        attention,
        *(["--compile"] if compile_ else []),
        *(["--activation-checkpointing"] if args.activation_checkpointing else []),
        *[
            f"--{k}={getattr(args, k)}"
            for k in ("device", "model", "seq", "batch", "warmup", "steps", "loss")
        ],
        "--precision",
        args.precision,
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{side} ({attention}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="pythia-70m", help="a cpt GPT-NeoX preset")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="fp32, bf16 (autocast), bf16-true"
    )
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="processes per side and case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--attention", default=None, help="ours: sdpa|flash|eager")
    parser.add_argument(
        "--hf-attention", default="sdpa", help="sdpa or flash_attention_2, comma-separated"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile per block (ours)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--loss", default="chunked", help="ours: chunked or plain")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU; 989 on H100/H200")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.__class__(**{**vars(args), "side": args.worker}))))
        return
    run_cases(args)


def run_cases(args: argparse.Namespace) -> None:
    """Every precision x transformers attention: both sides interleaved, then one line each."""
    from cpt.callbacks.throughput import PEAK_BF16_TFLOPS, model_flops_per_token
    from cpt.models.presets import config_from_name

    ours_attention = args.attention or "sdpa"
    peak_tflops = args.peak_tflops or (PEAK_BF16_TFLOPS["H100"] if args.device == "cuda" else None)
    flops = model_flops_per_token(config_from_name(args.model), args.seq)
    tokens = args.batch * args.seq
    ours_label = f"cpt ({ours_attention}{', compiled' if args.compile else ''})"
    lines = []
    for precision in args.precisions.split(","):
        args.precision = precision
        for hf_attention in args.hf_attention.split(","):
            results: dict[str, list[dict]] = {"ours": [], "hf": []}
            for repeat in range(args.repeats):
                for side in ("ours", "hf") if repeat % 2 == 0 else ("hf", "ours"):
                    attention = ours_attention if side == "ours" else hf_attention
                    compiled = args.compile and side == "ours"
                    results[side].append(run_side(args, side, attention, compiled))
            measured = {}
            for side, runs in results.items():
                step = statistics.median(t for r in runs for t in r["times"])
                peak = statistics.median(r["peak_bytes"] for r in runs)
                measured[side] = (tokens / step, peak)
                label = ours_label if side == "ours" else f"transformers ({hf_attention})"
                mfu = (
                    f"  MFU {tokens / step * flops / (peak_tflops * 1e12):6.1%}"
                    if peak_tflops
                    else ""
                )
                print(
                    f"{precision:9s} {label:28s} {tokens / step:10,.0f} tokens/s  "
                    f"median step {step * 1000:8.1f} ms  peak memory {peak / 2**30:6.2f} GiB{mfu}",
                    flush=True,
                )
            case = f"{args.device}-{precision}" + (
                "" if hf_attention == "sdpa" else f"-vs-{hf_attention}"
            )
            (ours_speed, ours_peak), (hf_speed, hf_peak) = measured["ours"], measured["hf"]
            mfu = f" mfu={ours_speed * flops / (peak_tflops * 1e12):.3f}" if peak_tflops else ""
            lines.append(
                f"case={case} tokens_per_s_ratio={ours_speed / hf_speed:.2f} "
                f"peak_memory_ratio={ours_peak / hf_peak:.2f} tokens_per_s={ours_speed:.0f}{mfu}"
            )
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
