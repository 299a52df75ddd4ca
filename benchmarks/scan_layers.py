"""Compile time and planned memory of the train step with the backbone's blocks looped (default) or
scanned (train.scan_layers), on abstract arrays of a hub model's shapes: nothing is loaded and no
device is needed (w2s.plan.plan_step, the step `w2s run` compiles). Each depth compiles both ways
in turn, so a change in machine load hits both; CPU time (process, all threads) beside wall time.

    python benchmarks/scan_layers.py --model Qwen/Qwen2.5-0.5B --depths 4,24 --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp

from w2s import plan, sharding
from w2s.models.config import TransformerConfig
from w2s.train import TrainConfig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B", help="a hub ladder's model (w2s.models.hub_configs)")
    parser.add_argument("--depths", default="4,24", help="layer counts to compile, comma-separated")
    parser.add_argument("--micro_batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    full = TransformerConfig.from_hf(plan.hf_config(args.model))
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        model = plan.abstract_classifier(dataclasses.replace(full, num_layers=depth), "last", jnp.bfloat16)
        for scan in (False, True):
            train_cfg = TrainConfig(batch_size=args.micro_batch, micro_batch_size=args.micro_batch,
                                    max_length=args.seq_len, scan_layers=scan)
            cpu = time.process_time()
            p = plan.plan_step(model, mesh, train_cfg, name=args.model)
            rows.append(dict(model=args.model, layers=depth, scan_layers=scan, compile_wall_s=round(p.compile_s, 1),
                             compile_cpu_s=round(time.process_time() - cpu, 1), peak_gib=round(p.peak_bytes / 2**30, 2),
                             temp_gib=round(p.temp_bytes / 2**30, 2)))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "micro_batch": args.micro_batch,
                       "seq_len": args.seq_len, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
