"""The JAX train step on 1, 2, 4, 8 devices with data-parallel (data=n), fully sharded (fsdp=n) and
tensor-parallel (model=n) meshes, at a fixed global batch. On CPU the devices are simulated: the
losses must agree across meshes, the parameter+optimizer bytes per device fall ~1/(fsdp x model),
and the compiled step's working memory per device (activations and temporaries) falls with data
and model, while throughput means little (all simulated devices share the host's cores). On GPUs
it runs on the real devices and the throughput and MFU are the point.

    python benchmarks/scaling.py --model minilm --batch 16 --seq 32
"""
from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

# Eight simulated CPU devices; this must be set before jax is imported, and leaves GPUs alone.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

from harness import (  # noqa: E402
    DTYPES, MFU_NOTE, SHAPES, fmt_si, hf_config, jax_classifier, non_embedding_params, peak_matmul_flops,
    put_batch, round_times, sharded_train_step, synthetic_batch,
)
from w2s import sharding  # noqa: E402
from w2s.checkpoint import write_json_atomic  # noqa: E402
from w2s.runtime import host_memory, recycle_host_memory  # noqa: E402
from w2s.train import TrainConfig  # noqa: E402

# Loss agreement across meshes: only the order of float reductions differs between them.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--batch", type=int, default=16, help="global batch, the same on every mesh")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype; params stay float32")
    p.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    p.add_argument("--loss-steps", type=int, default=3, help="K: steps on distinct batches before the loss is compared")
    p.add_argument("--steps", type=int, default=5, help="train steps per timing round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds; the median is reported")
    p.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (default 8192 GPU, 2048 CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.loss_steps < 3:
        # Step 0 has learning rate 0 (warm-up), so step 1 still reports the initial parameters' loss.
        p.error("--loss-steps must be at least 3, or the loss compared is that of the initial parameters")
    return args


def meshes(counts: list[int], heads: int) -> list[tuple[int, int, int]]:
    """(data, fsdp, model) shapes: each layout for each count (model only where it divides the
    attention heads), one for a single device."""
    out = []
    for n in counts:
        out += [(1, 1, 1)] if n == 1 else [(n, 1, 1), (1, n, 1)] + ([(1, 1, n)] if heads % n == 0 else [])
    return out


def working_bytes(step_fn: Any, state: dict, batch: dict) -> int | None:
    """The compiled step's temporary memory per device (activations kept for the backward pass,
    gradients, workspace), as XLA plans it; None where the backend does not say."""
    analysis = step_fn.lower(state, batch).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def run_mesh(args: argparse.Namespace, data: int, fsdp: int, model_axis: int, peak: float) -> dict[str, Any]:
    """Loss after K steps, the largest per-device parameter+optimizer bytes, the step's working
    memory per device, and throughput."""
    hf = hf_config(args.model)
    devices = data * fsdp * model_axis
    mesh = sharding.make_mesh(data, fsdp, model_axis, devices=jax.devices()[:devices])
    sharding.check_batch_size(mesh, args.batch, "--batch")
    model = jax_classifier(hf, DTYPES[args.dtype], args.seed)
    n_mfu = non_embedding_params(model)
    # A high constant rate after the one warm-up step, so K steps move the loss visibly.
    cfg = TrainConfig(batch_size=args.batch, micro_batch_size=args.batch, lr=1e-3, warmup_frac=0.0)
    total_steps = args.loss_steps + 1 + args.rounds * args.steps
    state, step_fn = sharded_train_step(model, mesh, cfg, total_steps)
    for k in range(args.loss_steps):
        state, metrics = step_fn(state, put_batch(mesh, synthetic_batch(hf, args.batch, args.seq, args.seed + k)))
    loss = float(metrics["loss"])
    held = sharding.per_device_bytes({"params": state["params"], "opt_state": state["opt_state"]})

    batch = put_batch(mesh, synthetic_batch(hf, args.batch, args.seq, args.seed))
    working = working_bytes(step_fn, state, batch)

    def run() -> None:
        nonlocal state
        for _ in range(args.steps):
            state, _ = step_fn(state, batch)
        jax.block_until_ready(state)

    run()  # warm-up
    step_s = statistics.median(round_times(run, args.rounds)) / args.steps
    tokens_per_s = args.batch * args.seq / step_s
    # Simulated CPU devices share the host, whose peak was measured; real devices each bring theirs.
    peak_total = peak if jax.devices()[0].platform == "cpu" else peak * devices
    return {
        "devices": devices, "data": data, "fsdp": fsdp, "model": model_axis, "loss": loss,
        "bytes_per_device": max(held.values()), "working_bytes": working, "step_ms": 1e3 * step_s,
        "examples_per_s": args.batch / step_s, "tokens_per_s": tokens_per_s,
        "mfu": 6 * n_mfu * tokens_per_s / peak_total,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"host memory: {recycle_host_memory()}")
    available = jax.device_count()
    wanted = [int(n) for n in args.devices.split(",")]
    counts = [n for n in wanted if n <= available]
    if counts != wanted:
        print(f"only {available} devices: skipping counts {sorted(set(wanted) - set(counts))}")
    dev = jax.devices()[0]
    peak, peak_size = peak_matmul_flops(DTYPES[args.dtype], args.peak_size)
    heads = hf_config(args.model).num_attention_heads
    rows = [run_mesh(args, *shape, peak) for shape in meshes(counts, heads)]

    base = rows[0]
    for r in rows:
        r["loss_rel_diff"] = abs(r["loss"] - base["loss"]) / abs(base["loss"])
        r["bytes_vs_first"] = r["bytes_per_device"] / base["bytes_per_device"]
        r["working_vs_first"] = r["working_bytes"] / base["working_bytes"] if base["working_bytes"] else None
    worst = max(r["loss_rel_diff"] for r in rows)
    agree = worst <= TOLERANCE[args.dtype]

    print(f"devices: {available} x {dev.platform} ({dev.device_kind})")
    print(
        f"model {args.model}: global batch {args.batch} x seq {args.seq}, {args.dtype} compute; loss at step "
        f"{args.loss_steps}; timing {args.rounds} rounds of {args.steps} steps"
    )
    shared = " (shared by all simulated devices)" if dev.platform == "cpu" else " per device"
    print(f"peak matmul (measured, {peak_size}x{peak_size} {args.dtype}): {fmt_si(peak)}FLOP/s{shared}")
    print(MFU_NOTE)
    print(
        f"{'devices':>7}{'data':>6}{'fsdp':>6}{'model':>6}{'loss':>12}{'rel diff':>10}{'MiB/device':>12}"
        f"{'vs first':>9}{'work MiB':>10}{'vs first':>9}{'step ms':>10}{'examples/s':>12}{'tokens/s':>11}{'MFU':>8}"
    )
    for r in rows:
        work = ("" if r["working_bytes"] is None else f"{r['working_bytes'] / 2**20:.1f}").rjust(10)
        work_vs = ("" if r["working_vs_first"] is None else f"{r['working_vs_first']:.3f}").rjust(9)
        print(
            f"{r['devices']:>7}{r['data']:>6}{r['fsdp']:>6}{r['model']:>6}{r['loss']:>12.6f}{r['loss_rel_diff']:>10.1e}"
            f"{r['bytes_per_device'] / 2**20:>12.2f}{r['bytes_vs_first']:>9.3f}{work}{work_vs}{r['step_ms']:>10.2f}"
            f"{r['examples_per_s']:>12.1f}{r['tokens_per_s']:>11.0f}{100 * r['mfu']:>7.2f}%"
        )
    print(
        f"losses {'agree' if agree else 'DISAGREE'}: largest relative difference {worst:.1e} "
        f"(tolerance {TOLERANCE[args.dtype]:.0e})"
    )
    out = {
        "model": args.model, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
        "device": f"{dev.platform} ({dev.device_kind})", "peak_flops": peak, "peak_matmul_size": peak_size,
        "rows": rows, "max_loss_rel_diff": worst, "losses_agree": agree, "host_memory": host_memory(),
    }
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
