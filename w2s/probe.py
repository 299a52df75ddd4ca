"""Linear probes: the backbone stays frozen, so its features are computed once and only a head trains.

The fast path for large sweeps: one forward pass per model and split replaces every finetuning
pass, and a head trains in seconds with the same train loop, losses and batch order as finetuning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from w2s import distributed
from w2s.checkpoint import read_npz, write_npz_atomic


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


def standardize(features: dict[str, np.ndarray], fit: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every split's features shifted and scaled per dimension by the mean and std of the `fit` splits
    (the training texts; no labels): backbones' feature scales differ by orders of magnitude (a
    decoder's final norm vs. mean-pooled word embeddings), and one probe learning rate then serves all."""
    fitted = np.concatenate([features[split] for split in fit])
    mean, std = fitted.mean(0), fitted.std(0)
    return {split: ((f - mean) / np.maximum(std, 1e-6)).astype(np.float32) for split, f in features.items()}


class FeatureCache:
    """Features of texts on disk, one file per backbone key (ModelSpec.features_key), rows found by
    the text's hash: every seed's splits and every run of a sweep share one forward pass per text,
    and a resumed sweep makes none. Texts not in the file yet are embedded shortest first (batches
    pad to their longest text) and added to it."""

    def __init__(self, folder: pathlib.Path):
        self.folder = pathlib.Path(folder)

    def path(self, key: tuple) -> pathlib.Path:
        return self.folder / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:20]}.npz"

    def features(self, key: tuple, texts: dict[str, list[str]],
                 embed: Callable[[list[str]], np.ndarray]) -> dict[str, np.ndarray]:
        """Each split's features [N, H], embedding (`embed`: texts -> features) only the texts not cached."""
        path = self.path(key)
        stored = read_npz(path, ("hashes", "features", "key")) if path.exists() else None
        hashes = list(stored["hashes"]) if stored is not None else []
        rows = {h: i for i, h in enumerate(hashes)}
        by_hash = {_hash(t): t for split in texts.values() for t in split}
        new = sorted((h for h in by_hash if h not in rows), key=lambda h: len(by_hash[h]))
        features = stored["features"] if stored is not None else None
        if new:
            embedded = np.asarray(embed([by_hash[h] for h in new]), np.float32)
            features = embedded if features is None else np.concatenate([features, embedded])
            rows.update((h, len(hashes) + i) for i, h in enumerate(new))
            hashes += new
            if distributed.is_main():
                write_npz_atomic(path, hashes=np.asarray(hashes), features=features, key=np.asarray(repr(key)))
        return {split: features[[rows[_hash(t)] for t in split_texts]] for split, split_texts in texts.items()}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
