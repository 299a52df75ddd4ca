"""Linear probes: the backbone stays frozen, so its features are computed once and only a head trains.

The fast path for large sweeps: one forward pass per model and split replaces every finetuning
pass, and a head trains in seconds with the same train loop, losses and batch order as finetuning.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Features:
    """Pooled backbone features [N, H] float32, read in batches by the train loop like Tokenized."""

    features: np.ndarray

    def __len__(self) -> int:
        return self.features.shape[0]

    def take(self, indices: np.ndarray) -> "Features":
        return Features(self.features[indices])

    def batch(self, indices: np.ndarray, widest: Any = None) -> dict[str, np.ndarray]:
        """Rows `indices`; features have one width, so `widest` (see w2s.data) plays no part."""
        return {"features": self.features[indices]}


class Probe(nnx.Module):
    """The classifier's head alone: 2-way, zero-initialised, so it starts at exactly 50/50 too."""

    def __init__(self, dim: int):
        zeros = nnx.initializers.zeros
        self.head = nnx.Linear(dim, 2, kernel_init=zeros, bias_init=zeros, rngs=nnx.Rngs(0))

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.head(features)
