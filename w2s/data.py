"""Tokenized datasets and the deterministic, resumable order in which training reads them."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tokenized:
    """Right-padded token ids and attention masks, [N, T] int32, ready to slice into batches."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def take(self, indices: np.ndarray) -> "Tokenized":
        return Tokenized(self.input_ids[indices], self.attention_mask[indices])

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of one training batch, trailing padding trimmed (see trim_to_bucket)."""
        input_ids, attention_mask = trim_to_bucket(self.input_ids[indices], self.attention_mask[indices])
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def tokenize(tokenizer, texts: list[str], max_length: int, pad_to_multiple: int = 8) -> Tokenized:
    """Tokenizes all texts at once (host work happens once, not per step), truncating to max_length.

    Padding goes to the longest text, rounded up to a multiple of `pad_to_multiple`, so compiled
    shapes stay few.
    """
    if not texts:
        raise ValueError("tokenize: no texts given.")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    width = min(max_length, -(-max(lengths) // pad_to_multiple) * pad_to_multiple)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.full((len(texts), width), pad_id, np.int32)
    attention_mask = np.zeros((len(texts), width), np.int32)
    for row, ids in enumerate(encoded["input_ids"]):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return Tokenized(input_ids, attention_mask)


def trim_to_bucket(input_ids: np.ndarray, attention_mask: np.ndarray, min_width: int = 8):
    """Drops trailing padding columns down to a power-of-two width (at least `min_width`).

    A batch of short texts then computes over few positions, while the number of distinct
    compiled shapes stays at most log2 of the padded width.
    """
    longest = max(1, int(attention_mask.sum(-1).max()))
    width = min(attention_mask.shape[-1], max(min_width, 1 << (longest - 1).bit_length()))
    return input_ids[..., :width], attention_mask[..., :width]


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Ground-truth labels in {0,1} as [N, 2] float32 target distributions."""
    labels = np.asarray(labels)
    return np.stack([1.0 - labels, labels], axis=-1).astype(np.float32)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of one epoch; a pure function of (seed, epoch), so any step can be rebuilt."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of training step `step`: consecutive slices of consecutive epoch permutations.

    Resuming at step s reads exactly the batches an uninterrupted run would have read.
    """
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start, num_examples)
        take = min(batch_size - len(out), num_examples - offset)
        out.extend(epoch_order(num_examples, seed, epoch)[offset : offset + take])
        start += take
    return np.asarray(out, np.int64)
