"""Token sources and the deterministic, resumable order in which training reads them.

A batch is cut to the power-of-two bucket of its longest row (at least 8), whichever process
feeds which rows: a source returns only the rows asked for, and `widest` (every process's
longest row -> the batch's longest) keeps the processes' widths equal.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from w2s.config import ConfigError


def bucket_width(longest: int, max_width: int, min_width: int = 8) -> int:
    """The padded width of a batch whose longest row has `longest` tokens.

    Short batches compute over few positions, and a run compiles at most log2(max_width) shapes.
    """
    return min(max_width, max(min_width, 1 << (max(1, longest) - 1).bit_length()))


def _this_process(longest: int) -> int:
    return longest


@dataclasses.dataclass(frozen=True)
class Tokenized:
    """Right-padded token ids and attention masks, [N, T] int32, already in memory."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def take(self, indices: np.ndarray) -> Tokenized:
        return Tokenized(self.input_ids[indices], self.attention_mask[indices])

    def batch(self, indices: np.ndarray, widest: Callable[[int], int] = _this_process) -> dict[str, np.ndarray]:
        """Rows `indices`, trailing padding cut to the bucket of the batch's longest row."""
        longest = widest(int(self.attention_mask[indices].sum(-1).max(initial=1)))
        width = bucket_width(longest, self.input_ids.shape[1])
        return {"input_ids": self.input_ids[indices, :width], "attention_mask": self.attention_mask[indices, :width]}


@dataclasses.dataclass(frozen=True, eq=False)
class TextRows:
    """Texts tokenized on first use, row by row: each process tokenizes only the rows it feeds its
    devices (and each row once), never the whole dataset. `take` views share the token cache."""

    tokenizer: Any
    texts: list[str]
    max_length: int
    positions: np.ndarray  # rows of `texts` this view holds, in order
    cache: dict[int, np.ndarray]  # position in `texts` -> its token ids

    @classmethod
    def of(cls, tokenizer: Any, texts: list[str], max_length: int) -> TextRows:
        if not texts:
            raise ConfigError("no texts to tokenize.")
        return cls(tokenizer, list(texts), max_length, np.arange(len(texts)), {})

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, indices: np.ndarray) -> TextRows:
        return dataclasses.replace(self, positions=self.positions[indices])

    def prefixed(self, prefix: str) -> TextRows:
        """This view's texts, each after `prefix`, tokenized anew with room for it: max_length grows
        by the prefix's own tokens, so a prefix never truncates the text it comes before (at the
        quickstart's max_length of 16 a 20-token prefix left no room for the word at all)."""
        room = len(self.tokenizer(prefix, add_special_tokens=False)["input_ids"])
        return TextRows.of(self.tokenizer, [prefix + self.texts[p] for p in self.positions], self.max_length + room)

    def ids(self, indices: np.ndarray) -> list[np.ndarray]:
        """Token ids of rows `indices` (truncated to max_length), tokenizing those not seen yet."""
        wanted = [int(p) for p in self.positions[indices]]
        new = sorted({p for p in wanted if p not in self.cache})
        if new:
            encoded = self.tokenizer([self.texts[p] for p in new], truncation=True, max_length=self.max_length,
                                     padding=False)["input_ids"]
            self.cache.update((p, np.asarray(ids, np.int32)) for p, ids in zip(new, encoded))
        return [self.cache[p] for p in wanted]

    def batch(self, indices: np.ndarray, widest: Callable[[int], int] = _this_process) -> dict[str, np.ndarray]:
        """Rows `indices`, right-padded to the bucket of the batch's longest row."""
        rows = self.ids(indices)
        width = bucket_width(widest(max((len(r) for r in rows), default=1)), self.max_length)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = np.full((len(rows), width), pad_id, np.int32)
        attention_mask = np.zeros((len(rows), width), np.int32)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Ground-truth labels in {0,1} as [N, 2] float32 target distributions."""
    labels = np.asarray(labels)
    return np.stack([1.0 - labels, labels], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=4)
def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of one epoch; a pure function of (seed, epoch), so any step can be rebuilt.
    Kept (read-only) for the epoch's later steps rather than drawn again at every step."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.flags.writeable = False
    return order


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
