"""Optimizer state bytes per parameter (w2s/optimizers.py) for hub rungs, from the train state's
abstract shapes (w2s/plan.py, nothing compiled):

    python benchmarks/optimizer_state.py qwen2.5-7b pythia-6.9b gpt2-xl
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp

from w2s import plan, sharding
from w2s.sweeps import ladders
from w2s.models import TransformerConfig
from w2s.optimizers import OPTIMIZERS
from w2s.train import TrainConfig


def main(labels: list[str]) -> None:
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    print("| rung | params | " + " | ".join(OPTIMIZERS.names()) + " |")
    print("| --- | ---: |" + " ---: |" * len(OPTIMIZERS.names()))
    for label in labels:
        rung = ladders.rung(label)
        model = plan.abstract_classifier(TransformerConfig.from_hf(plan.hf_config(rung.model)), None, jnp.bfloat16)
        cells = []
        for name in OPTIMIZERS.names():
            p = plan.plan_step(model, mesh, dataclasses.replace(TrainConfig(micro_batch_size=1, batch_size=1),
                                                                optimizer=name), name=label, compile=False)
            cells.append(f"{p.opt_bytes / p.params:.3f}")
        print(f"| {label} | {p.params / 1e6:,.0f}M | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
