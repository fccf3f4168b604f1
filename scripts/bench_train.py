"""Training-step benchmark: cpt's model against `transformers` on the same shape and precision.

    python scripts/bench_train.py                     # CPU: Pythia-70m shape, seq 512, batch 4
    python scripts/bench_train.py --device cuda --model pythia-410m --seq 2048 --batch 8 \\
        --precisions bf16 --attention flash --compile --hf-attention sdpa,flash_attention_2

A step is forward, backward and a fused AdamW update with the loss over every position; both sides
use the same optimizer, so the comparison is of the model code (attention, loss head, kernels).

- Speed: both models live in one process and their steps alternate (A B B A ...), so that a drift
  of the machine (other tenants, clocks) hits both alike; the ratio is of the median step times.
- Peak memory: each side alone in a fresh process, the order alternating, median over repeats. On
  CUDA `max_memory_allocated` (live tensors). On a CPU the peak resident set above the process's
  size before the model was built, measured twice: with glibc's malloc as it comes (`rss`: freed
  blocks below its dynamic mmap threshold stay resident, so the peak includes that slack) and with
  `MALLOC_MMAP_THRESHOLD_=65536` (`peak_memory_ratio`: large blocks go back to the system when
  freed, so the resident peak follows the live tensors, as CUDA's figure does).

- The limit: before the models, a worker on the same threads times a square matmul (2048^3 by
  default) in fp32 and in bf16; the speed worker times it again in the case's precision between
  its steps, and `peak_fraction` is a side's model FLOP/s (6 N + 12 L d T per token,
  `cpt/callbacks/throughput.py`) over that rate (bf16 for bf16 autocast), measured at the same
  moments as the steps. On CUDA, `mfu=` is against the datasheet's bf16 peak as well
  (`--peak-tflops`).
- The allocator: `--allocator keep` (default) runs the speed and peak workers, and the `rss`
  memory figure, with glibc keeping freed memory as `cpt.train` does on a CPU
  (`cpt/scale/allocator.py`), both sides alike; `system` leaves glibc as it comes.
  `gemm_fraction` is the same ratio for the step's own matmuls timed alone at their shapes (every
  linear layer's three, the loss head's per chunk, attention's as batched matmuls): the ceiling
  of `peak_fraction` if nothing but the matmuls took time.

It starts with the processor (its matrix and vector instructions: `amx_bf16`, `avx512_bf16`, ...)
and, on a CPU, the kernels a matmul runs in each precision (oneDNN's implementation, e.g.
`brg_matmul:avx512_core_amx`, or ATen's own path), so every figure says what hardware made it.

The last lines, one per case, are machine readable (ours / transformers):
`case=cpu-fp32 peak_fraction=0.77 hf_peak_fraction=0.61 tokens_per_s_ratio=1.31
peak_memory_ratio=0.52 tokens_per_s=... [mfu=...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LIVE = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: blocks above 64 KiB are returned when freed


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class Side:
    """One model with its optimizer and its training step."""

    def __init__(self, args: argparse.Namespace, side: str, attention: str) -> None:
        import torch

        from cpt.models.presets import config_from_name

        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.config = config = config_from_name(args.model)
        mixed = args.precision == "bf16"
        self.autocast = lambda: torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=mixed
        )
        if side == "ours":
            from cpt.models.registry import build_model

            model = build_model(config, attention=attention)
            model.set_loss(args.loss)
            model.activation_checkpointing = args.activation_checkpointing
            self.loss_of = lambda ids: model(ids[:, :-1], targets=ids[:, 1:])[0]
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
            hf_config._attn_implementation = attention
            model = transformers.GPTNeoXForCausalLM(hf_config)
            if args.activation_checkpointing:
                model.gradient_checkpointing_enable()
            # labels are shifted inside: the same targets per window as ours
            self.loss_of = lambda ids: model(input_ids=ids[:, :-1], labels=ids[:, 1:]).loss
        self.model = model
        bf16_weights = torch.bfloat16 if args.precision == "bf16-true" else None
        model.to(device=self.device, dtype=bf16_weights).train()
        if args.compile and side == "ours":
            example = torch.zeros(args.batch, args.seq, dtype=torch.long, device=self.device)
            model.compile_blocks(example, self.autocast())
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.generator = torch.Generator().manual_seed(1)
        self.shape = (args.batch, args.seq + 1)

    def step(self) -> float:
        """One training step; its wall time in seconds (synchronised on CUDA)."""
        import torch

        ids = torch.randint(0, self.config.vocab_size, self.shape, generator=self.generator)
        start = time.perf_counter()
        ids = ids.to(self.device)
        with self.autocast():
            loss = self.loss_of(ids)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def set_allocator(args: argparse.Namespace) -> None:
    """The process's malloc as `--allocator` says (`keep`: as `cpt.train` runs on a CPU)."""
    if args.allocator == "keep" and args.device == "cpu":
        from cpt.scale.allocator import keep_freed_memory

        keep_freed_memory()


def speed_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides in this process, steps alternating A B B A ...; step times per side, and the
    square matmul's rate in the case's precision timed between them (`matmul`, FLOP/s): the
    limit measured at the same moments as the steps, so a drift of the machine moves both."""
    import torch

    set_allocator(args)
    sides = {
        "ours": Side(args, "ours", args.attention),
        "hf": Side(args, "hf", args.hf_attention),
    }
    for side in sides.values():
        for _ in range(args.warmup):
            side.step()
    matmul = square_matmul(args, torch.float32 if args.precision == "fp32" else torch.bfloat16)
    times: dict[str, list[float]] = {"ours": [], "hf": [], "matmul": []}
    for round_ in range(args.steps):
        for name in ("ours", "hf") if round_ % 2 == 0 else ("hf", "ours"):
            times[name].append(sides[name].step())
        times["matmul"].append(matmul(3))
    return times


def square_matmul(args: argparse.Namespace, dtype: Any) -> Any:
    """The `--peak-size` square matmul in `dtype`, its operands made once: a function of the
    number of timed repeats that gives its rate (FLOP/s, median)."""
    import torch

    n = args.peak_size
    a, b = (torch.randn(n, n, device=args.device, dtype=dtype) for _ in range(2))
    return lambda repeats: 2 * n**3 / _seconds(args, lambda: torch.mm(a, b), repeats)


def memory_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side alone: its peak memory over a warm-up and two steps."""
    import torch

    set_allocator(args)
    baseline = 0 if args.device == "cuda" else _rss_bytes("VmRSS")
    attention = args.attention if args.side == "ours" else args.hf_attention
    side = Side(args, args.side, attention)
    for _ in range(args.warmup + 2):
        side.step()
    if args.device == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated()}
    return {"peak_bytes": _rss_bytes("VmHWM") - baseline}


def _seconds(args: argparse.Namespace, f: Any, repeats: int) -> float:
    """The median wall time of `f()` over `repeats` calls after one that warms up."""
    import torch

    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        f()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def step_matmuls(args: argparse.Namespace) -> list[tuple[int, int, int, int, int]]:
    """The matmuls of one training step as (count, batch, m, k, n): every linear layer's forward,
    input gradient and weight gradient; the loss head per chunk as `--loss chunked` runs it; the
    attention's scores and values, forward and backward (the 12 L d T of the FLOP count)."""
    from cpt.models.loss import chunk_tokens
    from cpt.models.presets import config_from_name

    c = config_from_name(args.model)
    t, d, f, layers = args.batch * args.seq, c.hidden_size, c.intermediate_size, c.num_hidden_layers
    out = []
    for k, n in ((d, 3 * d), (d, d), (d, f), (f, d)):  # qkv, attention output, MLP in and out
        out += [(layers, 1, t, k, n), (layers, 1, t, n, k), (layers, 1, n, t, k)]
    rows = chunk_tokens(c.vocab_size) if args.loss == "chunked" else t
    v = c.vocab_size
    for count, m in ((t // rows, rows), (1, t % rows)):  # whole chunks, then the rest
        if count and m:
            out += [(count, 1, m, d, v), (count, 1, m, v, d), (count, 1, v, m, d)]
    heads, head_dim, s = c.num_attention_heads, d // c.num_attention_heads, args.seq
    out += [(3 * layers, args.batch * heads, s, head_dim, s)]  # q k^T; its two gradients
    out += [(3 * layers, args.batch * heads, s, s, head_dim)]  # p v; its two gradients
    return out


def peak_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The machine's limit on these threads: a square matmul's FLOP/s per precision (median);
    and the rate of the step's own matmuls alone at its shapes (`gemm_<precision>`), the ceiling
    of what the whole step can reach."""
    import torch

    set_allocator(args)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[name] = square_matmul(args, dtype)(args.peak_repeats)
        flops = seconds = 0.0
        for count, batch, m, k, n_ in step_matmuls(args):
            x = torch.randn(batch, m, k, device=args.device, dtype=dtype)
            y = torch.randn(batch, k, n_, device=args.device, dtype=dtype)
            seconds += count * _seconds(args, lambda x=x, y=y: torch.matmul(x, y), 3)
            flops += count * 2 * batch * m * k * n_
        out[f"gemm_{name}"] = flops / seconds
    return out


def spawn(
    args: argparse.Namespace,
    mode: str,
    side: str,
    hf_attention: str,
    env: dict | None = None,
    allocator: str | None = None,
) -> dict[str, Any]:
    options = {
        "device": args.device,
        "model": args.model,
        "seq": args.seq,
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "loss": args.loss,
        "precision": args.precision,
        "attention": args.attention,
        "hf-attention": hf_attention,
        "side": side,
        "peak-size": args.peak_size,
        "peak-repeats": args.peak_repeats,
        "allocator": allocator or args.allocator,
    }
    command = [sys.executable, __file__, "--worker", mode]
    command += [f"--{key}={value}" for key, value in options.items()]
    command += ["--compile"] * args.compile + [
        "--activation-checkpointing"
    ] * args.activation_checkpointing
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} worker ({side}, {hf_attention}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cases(args: argparse.Namespace) -> None:
    """Every precision x transformers attention; one printed line per side, one case line each."""
    from cpt.callbacks.throughput import model_flops_per_token
    from cpt.models.presets import config_from_name
    from cpt.scale.hardware import ACCELERATORS, cpu_kernels, processor

    cuda = args.device == "cuda"
    print(f"processor: {processor()}", flush=True)  # every figure names its hardware
    if not cuda:
        print(f"kernels: {cpu_kernels()}", flush=True)
    peak_tflops = args.peak_tflops or (ACCELERATORS["H100"].peak_bf16_tflops if cuda else None)
    flops = model_flops_per_token(config_from_name(args.model), args.seq)
    tokens = args.batch * args.seq
    limit = spawn(args, "peak", "none", "sdpa")  # measured first, on the same threads
    print(
        f"{args.device} matmul {args.peak_size}^3: fp32 {limit['fp32'] / 1e9:,.0f} GFLOP/s, "
        f"bf16 {limit['bf16'] / 1e9:,.0f} GFLOP/s; model {flops / 1e6:,.0f} MFLOP per token; "
        f"the step's own matmuls alone: fp32 {limit['gemm_fp32'] / 1e9:,.0f}, "
        f"bf16 {limit['gemm_bf16'] / 1e9:,.0f} GFLOP/s",
        flush=True,
    )
    lines = []
    for precision in args.precisions.split(","):
        args.precision = precision
        for hf_attention in args.hf_attention.split(","):
            times = spawn(args, "speed", "both", hf_attention)
            beside = statistics.median(times.pop("matmul"))  # timed between the steps
            speed = {s: tokens / statistics.median(t) for s, t in times.items()}
            variants = {"live": LIVE} if cuda else {"live": LIVE, "rss": {}}
            peaks = {(v, s): [] for v in variants for s in ("ours", "hf")}
            for repeat in range(args.repeats):
                for variant, env in variants.items():
                    for side in ("ours", "hf") if repeat % 2 == 0 else ("hf", "ours"):
                        # live: glibc returning large blocks (the env) so that the resident
                        # peak follows the tensors; rss: the allocator as training runs it
                        how = "system" if variant == "live" else None
                        measured = spawn(args, "memory", side, hf_attention, env, how)
                        peaks[variant, side].append(measured["peak_bytes"])
            peak = {s: statistics.median(peaks["live", s]) for s in ("ours", "hf")}
            rss = (
                ""
                if cuda
                else " rss_memory_ratio={:.2f}".format(
                    statistics.median(peaks["rss", "ours"]) / statistics.median(peaks["rss", "hf"])
                )
            )
            labels = {
                "ours": f"cpt ({args.attention}{', compiled' if args.compile else ''})",
                "hf": f"transformers ({hf_attention})",
            }
            kind = "fp32" if precision == "fp32" else "bf16"
            matmul = beside
            fraction = {side: speed[side] * flops / matmul for side in speed}
            ceiling = limit[f"gemm_{kind}"] / limit[kind]  # the step's matmuls alone
            print(
                f"{args.device}-{precision:9s} matmul {args.peak_size}^3 between the steps: "
                f"{beside / 1e9:,.0f} GFLOP/s (before the models: {limit[kind] / 1e9:,.0f})",
                flush=True,
            )
            for side in ("ours", "hf"):
                mfu = speed[side] * flops / (peak_tflops * 1e12) if peak_tflops else None
                print(
                    f"{args.device}-{precision:9s} {labels[side]:28s} {speed[side]:10,.0f} tokens/s"
                    f"  median step {tokens / speed[side] * 1000:8.1f} ms"
                    f"  peak memory {peak[side] / 2**30:6.2f} GiB"
                    + (
                        ""
                        if cuda
                        else f" ({statistics.median(peaks['rss', side]) / 2**30:.2f} GiB rss)"
                    )
                    + f"  {fraction[side]:6.1%} of the matmul peak"
                    + (f"  MFU {mfu:6.1%}" if mfu is not None else ""),
                    flush=True,
                )
            case = f"{args.device}-{precision}" + (
                "" if hf_attention == "sdpa" else f"-vs-{hf_attention}"
            )
            mfu = f" mfu={speed['ours'] * flops / (peak_tflops * 1e12):.3f}" if peak_tflops else ""
            lines.append(
                f"case={case} peak_fraction={fraction['ours']:.3f} "
                f"hf_peak_fraction={fraction['hf']:.3f} gemm_fraction={ceiling:.3f} "
                f"tokens_per_s_ratio={speed['ours'] / speed['hf']:.2f} "
                f"peak_memory_ratio={peak['ours'] / peak['hf']:.2f}{rss} "
                f"tokens_per_s={speed['ours']:.0f}{mfu}"
            )
    print()
    print("\n".join(lines))


def step_options(parser: argparse.ArgumentParser) -> None:
    """The step's shape, precisions and model options (`Side`), as bench_profile.py takes them."""
    parser.add_argument("--model", default="pythia-70m", help="a cpt GPT-NeoX preset")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="fp32, bf16 (autocast), bf16-true"
    )
    parser.add_argument("--attention", default="sdpa", help="ours: sdpa | flash | eager")
    parser.add_argument(
        "--hf-attention", default="sdpa", help="sdpa, flash_attention_2 (comma list)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile per block (ours)")
    parser.add_argument("--activation-checkpointing", action="store_true", help="both sides")
    parser.add_argument("--loss", default="chunked", help="ours: chunked | plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["speed", "memory", "peak"], help=argparse.SUPPRESS)
    parser.add_argument("--side", default="both", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    step_options(parser)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side (alternating)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    parser.add_argument("--repeats", type=int, default=1, help="memory processes per side")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU; 989 on H100/H200")
    parser.add_argument(
        "--peak-size", type=int, default=2048, help="the matmul that measures the limit"
    )
    parser.add_argument("--peak-repeats", type=int, default=10, help="timed matmuls per precision")
    parser.add_argument(
        "--allocator",
        default="keep",
        choices=["keep", "system"],
        help="keep: glibc keeps freed memory, as cpt.train runs on a CPU (both sides); "
        "system: glibc as it comes",
    )
    args = parser.parse_args()
    if args.worker == "speed":
        print(json.dumps(speed_worker(args)))
    elif args.worker == "memory":
        print(json.dumps(memory_worker(args)))
    elif args.worker == "peak":
        print(json.dumps(peak_worker(args)))
    else:
        run_cases(args)


if __name__ == "__main__":
    main()
