"""Train-step throughput of our JAX classifier against the `transformers` PyTorch model of the same
shape. Both run forward, backward, global-norm clipping and AdamW on the same fixed batch; timing
rounds alternate between them in one process, so both see the same machine and the same load.

    python benchmarks/train_step.py --model minilm --batch 32 --seq 64
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

# torch shares the GPU: JAX must not grab most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from harness import (  # noqa: E402
    DTYPES, MFU_NOTE, SHAPES, fmt_si, hf_config, host_cpu, jax_classifier, matmul_flops, non_embedding_params,
    peak_matmul_flops, put_batch, sharded_train_step, synthetic_batch,
)
from w2s import sharding  # noqa: E402
from w2s.checkpoint import write_json_atomic  # noqa: E402
from w2s.runtime import host_memory, recycle_host_memory  # noqa: E402
from w2s.train import TrainConfig  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype; params stay float32")
    p.add_argument("--steps", type=int, default=10, help="train steps per timing round")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds per implementation; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator warm-up)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch's device")
    p.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (default 8192 GPU, 2048 CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if min(args.steps, args.rounds, args.warmup) < 1:
        p.error("--steps, --rounds and --warmup must be at least 1")
    return args


def jax_runner(
    args: argparse.Namespace, hf: transformers.PretrainedConfig, host: dict
) -> tuple[Callable[[int], float], int, int]:
    """Steps of the real sharded train step on a one-device mesh (torch gets one device too).
    Returns (run n steps -> last loss, total params, N for MFU)."""
    model = jax_classifier(hf, DTYPES[args.dtype], args.seed)
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    n_mfu = non_embedding_params(model)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    cfg = TrainConfig(batch_size=args.batch, micro_batch_size=args.batch)
    state, step_fn = sharded_train_step(model, mesh, cfg, total_steps=args.warmup + args.rounds * args.steps)
    batch = put_batch(mesh, host)

    def run(steps: int) -> float:
        nonlocal state
        for _ in range(steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready(state)
        return float(metrics["loss"])

    return run, total, n_mfu


def torch_runner(
    args: argparse.Namespace, hf: transformers.PretrainedConfig, host: dict, device: str
) -> tuple[Callable[[int], float], int]:
    """The same step in eager PyTorch: HF's *ForSequenceClassification, soft cross-entropy,
    clip_grad_norm_(1.0), AdamW (fused on CUDA, its fastest form). bf16 is autocast.
    Returns (run n steps -> last loss, total params)."""
    import torch

    torch.manual_seed(args.seed)
    # JAX computes float32 matmuls in TF32 on recent NVIDIA GPUs by default; torch is told to as well.
    torch.set_float32_matmul_precision("high")
    model = transformers.AutoModelForSequenceClassification.from_config(hf).to(device).train()
    total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=device == "cuda")
    ids = torch.from_numpy(host["input_ids"][0]).long().to(device)
    mask = torch.from_numpy(host["attention_mask"][0]).long().to(device)
    targets = torch.from_numpy(host["targets"][0]).to(device)
    bf16 = args.dtype == "bfloat16"

    def run(steps: int) -> float:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits
            loss = -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return loss.item()  # waits for the device

    return run, total


def torch_peak_matmul_flops(device: str, dtype: str, size: int) -> float:
    """peak_matmul_flops' measurement through torch on `device`: whether a gap between the two
    steps comes from the large matmul itself or from the rest of the step."""
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a, b = (torch.randn(size, size, device=device).to(torch_dtype) for _ in range(2))

    def run(iters: int) -> None:
        for _ in range(iters):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    return matmul_flops(run, size)


def torch_device(args: argparse.Namespace, jax_platform: str) -> str | None:
    """torch's device, or None (with the reason printed) when torch is not run."""
    if args.no_torch:
        return None
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and jax_platform != "cpu":
            print(f"torch: skipped, this torch build has no CUDA (JAX runs on {jax_platform}); --device cpu forces it")
            return None
    if device == "cpu" and args.dtype == "bfloat16":
        print("torch: skipped, bf16 autocast is only compared on CUDA")
        return None
    return device


def summarise(
    times: list[float], steps: int, batch: int, seq: int, n_mfu: int, peak: float, loss: float
) -> dict[str, Any]:
    step_s = statistics.median(times) / steps
    tokens_per_s = batch * seq / step_s
    return {
        "step_ms": 1e3 * step_s,
        "step_ms_min": 1e3 * min(times) / steps,
        "step_ms_max": 1e3 * max(times) / steps,
        "examples_per_s": batch / step_s,
        "tokens_per_s": tokens_per_s,
        "mfu": 6 * n_mfu * tokens_per_s / peak,
        "loss": loss,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"host memory: {recycle_host_memory()}")
    hf = hf_config(args.model)
    host = synthetic_batch(hf, args.batch, args.seq, args.seed)
    jax_dev = jax.devices()[0]
    device = torch_device(args, jax_dev.platform)
    peak, peak_size = peak_matmul_flops(DTYPES[args.dtype], args.peak_size)

    runners = {}
    runners["jax"], jax_total, n_mfu = jax_runner(args, hf, host)
    totals = {"jax": jax_total}
    torch_peak = None
    if device is not None:
        runners["torch"], totals["torch"] = torch_runner(args, hf, host, device)
        torch_peak = torch_peak_matmul_flops(device, args.dtype, peak_size)
    losses = {name: run(args.warmup) for name, run in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):  # alternate, so a change in machine load hits both alike
        for name, run in runners.items():
            start = time.perf_counter()
            losses[name] = run(args.steps)
            times[name].append(time.perf_counter() - start)
    results = {
        name: summarise(times[name], args.steps, args.batch, args.seq, n_mfu, peak, losses[name])
        for name in runners
    }
    ratio = results["jax"]["tokens_per_s"] / results["torch"]["tokens_per_s"] if "torch" in results else None

    torch_desc = "not run" if device is None else device
    if device == "cuda":
        import torch

        torch_desc += f" ({torch.cuda.get_device_name()})"
    print(f"JAX device  : {jax_dev.platform} ({jax_dev.device_kind}), 1 of {jax.device_count()}; host: {host_cpu()}")
    print(f"torch device: {torch_desc}")
    if device is not None and (device == "cuda") != (jax_dev.platform == "gpu"):
        print("WARNING: JAX and torch run on different kinds of device; the ratio compares hardware.")
    print(
        f"model {args.model} ({hf.model_type}): batch {args.batch} x seq {args.seq}, {args.dtype} compute, "
        f"float32 params; {args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up steps"
    )
    print(
        "params: " + ", ".join(f"{k} {fmt_si(v)}" for k, v in totals.items())
        + f"; N for MFU {fmt_si(n_mfu)} (from the JAX model, used for both)"
    )
    print(f"peak matmul (measured, {peak_size}x{peak_size} {args.dtype}): {fmt_si(peak)}FLOP/s"
          + ("" if torch_peak is None else f"; the same matmul through torch: {fmt_si(torch_peak)}FLOP/s"))
    print(MFU_NOTE)
    print(f"{'impl':<7}{'step ms':>10}{'(min-max)':>18}{'examples/s':>12}{'tokens/s':>12}{'MFU':>8}{'loss':>9}")
    for name, r in results.items():
        spread = f"({r['step_ms_min']:.2f}-{r['step_ms_max']:.2f})"
        print(
            f"{name:<7}{r['step_ms']:>10.2f}{spread:>18}{r['examples_per_s']:>12.1f}{r['tokens_per_s']:>12.0f}"
            f"{100 * r['mfu']:>7.2f}%{r['loss']:>9.4f}"
        )
    if ratio is not None:
        print(f"JAX/torch throughput: {ratio:.2f}x (above 1: JAX is faster)")

    out = {
        "model": args.model, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
        "steps": args.steps, "rounds": args.rounds,
        "jax_device": f"{jax_dev.platform} ({jax_dev.device_kind})", "torch_device": torch_desc, "host_cpu": host_cpu(),
        "peak_flops": peak, "torch_peak_flops": torch_peak, "peak_matmul_size": peak_size, "params": totals, "mfu_params": n_mfu,
        "results": results, "jax_over_torch": ratio, "host_memory": host_memory(),
    }
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
