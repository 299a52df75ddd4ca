"""Each rung of a ladder (w2s.sweeps.ladders) on this machine: forward and train-step seconds per 1,000 tokens.

    python benchmarks/ladder.py [--ladder offline] [--rungs a,b] [--batch 8] [--seq 64] [--json PATH]

Every rung is built as a sweep builds it (its real weights, pooling and dtype), fed full-length
batches of `--batch` x `--seq` token ids (no padding). forward: the pooled features a linear probe
reads (what `predict_features` runs); train step: forward, backward, clipping and AdamW, the step
`w2s.train.train` compiles. After one untimed call each (compilation), the median of `--rounds`
calls. Decoders' backward is the costly part, so the rounds of the largest rungs take minutes, and
Qwen2.5-0.5B's train step holds ~16 GB of host memory (--forward_only skips it).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from harness import host_cpu, put_batch, sharded_train_step
from w2s import sharding
from w2s.sweeps import ladders
from w2s.stages import ModelSpec
from w2s.runtime import recycle_host_memory
from w2s.train import TrainConfig

TRAIN = dict(batch_size=8, micro_batch_size=8, epochs=1.0, lr=1e-5, weight_decay=0.0, warmup_frac=0.0,
             grad_clip=1.0, max_length=64, eval_every=0, checkpoint_every=0, eval_batch_size=8, log_every=0)


def median_seconds(call, rounds: int) -> float:
    call()  # compiles
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step_seconds(model, mesh, train: dict, ids: np.ndarray, mask: np.ndarray, rounds: int) -> float:
    state, step = sharded_train_step(model, mesh, TrainConfig.from_config(ml_collections.ConfigDict(train)), 100)
    labels = np.random.default_rng(1).integers(0, 2, size=(1, ids.shape[0]))
    host = {"input_ids": ids[None], "attention_mask": mask[None], "targets": np.eye(2, dtype=np.float32)[labels]}
    holder = {"state": state}

    def call():
        holder["state"], metrics = step(holder["state"], put_batch(mesh, host))
        jax.block_until_ready(metrics)

    return median_seconds(call, rounds)


def measure(label: str, batch: int, seq: int, rounds: int, train_step: bool = True) -> dict:
    rung = ladders.rung(label)
    train = dict(TRAIN, batch_size=batch, micro_batch_size=batch, max_length=seq)
    side = rung.spec(ml_collections.ConfigDict(train))
    side.train.update(batch_size=batch, micro_batch_size=batch)  # one batch per step, whatever the rung's micro-batch
    spec = ModelSpec.from_config(side)
    build_start = time.perf_counter()
    model, _ = spec.build(0)
    build_s = time.perf_counter() - build_start
    mesh = sharding.make_mesh(data=-1, fsdp=1, model=1)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, size=(batch, seq), dtype=np.int32)  # below every rung's vocab size
    mask = np.ones_like(ids)
    graphdef, params = nnx.split(model)
    features = jax.jit(lambda p, i, a: nnx.merge(graphdef, p).features(i, a))  # as predict_features compiles it
    forward_s = median_seconds(lambda: features(params, ids, mask).block_until_ready(), rounds)
    step_s = _train_step_seconds(model, mesh, train, ids, mask, rounds) if train_step else float("nan")
    count = sum(x.size for x in jax.tree.leaves(nnx.state(model.backbone, nnx.Param)))
    tokens = batch * seq
    return {"rung": label, "backbone_params": int(count), "build_s": build_s,
            "forward_s_per_1k_tokens": forward_s / tokens * 1000, "train_step_s_per_1k_tokens": step_s / tokens * 1000,
            "batch": batch, "seq": seq, "rounds": rounds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladder", default="offline")
    parser.add_argument("--rungs", default="", help="comma-separated labels (default: the whole ladder)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--forward_only", action="store_true",
                        help="no train step (a 0.5B model's AdamW step holds ~16 GB of host memory)")
    args = parser.parse_args(argv)
    recycle_host_memory()
    labels = args.rungs.split(",") if args.rungs else ladders.ladder(args.ladder)
    print(f"{host_cpu()}; batch {args.batch} x seq {args.seq}, median of {args.rounds}", flush=True)
    print(f"{'rung':<22} {'params':>8} {'forward s/1k tok':>17} {'train step s/1k tok':>20}", flush=True)
    rows = []
    for label in labels:
        row = measure(label, args.batch, args.seq, args.rounds, train_step=not args.forward_only)
        rows.append(row)
        print(f"{label:<22} {row['backbone_params'] / 1e6:>7.1f}M {row['forward_s_per_1k_tokens']:>17.3f} "
              f"{row['train_step_s_per_1k_tokens']:>20.3f}", flush=True)
        if args.json:  # after every rung, so a killed run keeps what it measured
            args.json.write_text(json.dumps({"host_cpu": host_cpu(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
