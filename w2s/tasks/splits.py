"""Train/test splits that keep near-duplicate texts on one side, with classes balanced exactly.

Scraped corpora repeat themselves: retweets, a quoted tweet with a comment added, a story filed
twice. A test text whose near-copy was trained on measures memory, not skill. Texts are grouped
by the Jaccard similarity of their word-bigram sets, every pair at or above a threshold (an exact
similarity join, not a sample), and each group goes whole to one side of the split.
"""
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
import dataclasses
import random
import re

import numpy as np
from scipy import sparse

from w2s.config import ConfigError
from w2s.tasks import Example

Shingles = frozenset[str]
_BLOCK = 1024  # Rows per sparse product: bounds memory when common shingles link most texts.


def halves(name: str, n_train: int, n_test: int) -> tuple[int, int]:
    """Examples per class in each split; sizes must be even for the classes to balance exactly."""
    if n_train <= 0 or n_test <= 0 or n_train % 2 or n_test % 2:
        raise ConfigError(
            f"{name}: n_train and n_test must be positive and even so classes balance exactly, "
            f"got {n_train} and {n_test}"
        )
    return n_train // 2, n_test // 2


def word_shingles(words: Sequence[str]) -> Shingles:
    """The set of adjacent word pairs; a text of one word is its own shingle."""
    if len(words) < 2:
        return frozenset(words)
    return frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def jaccard(a: Shingles, b: Shingles) -> float:
    return len(a & b) / len(a | b)


def near_duplicate_pairs(sets: Sequence[Shingles], threshold: float) -> list[tuple[int, int]]:
    """Every pair (i, j), i < j, of sets with Jaccard similarity >= threshold.

    Overlaps come from a sparse product of the set-membership matrix with itself, a block of
    rows at a time, so the cost follows the pairs that share a shingle, not all pairs.
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    columns: dict[str, int] = {}
    ids = [[columns.setdefault(shingle, len(columns)) for shingle in s] for s in sets]
    members = sparse.csr_matrix(
        (np.ones(sum(map(len, ids)), np.int32), np.concatenate([[]] + ids).astype(np.int64),
         np.cumsum([0] + [len(row) for row in ids])),
        shape=(len(sets), len(columns)),
    )
    sizes = np.diff(members.indptr)
    pairs = []
    for start in range(0, len(sets), _BLOCK):
        overlap = (members[start : start + _BLOCK] @ members.T).tocoo()
        i, j, shared = overlap.row + start, overlap.col, overlap.data
        later = i < j
        i, j, shared = i[later], j[later], shared[later]
        similar = shared / (sizes[i] + sizes[j] - shared) >= threshold
        pairs += zip(i[similar].tolist(), j[similar].tolist())
    return sorted(pairs)


def connected_groups(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """Item -> the smallest item of its connected component under `pairs` (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Deduplicated:
    examples: list[Example]  # One per distinct normalised text, in order of first appearance.
    groups: list[int]  # Each example's near-duplicate group (connected_groups' ids).
    counts: dict[str, int]  # What was found, for the documentation's tables.


def deduplicate(rows: Iterable[tuple[str, tuple[str, ...], int]], threshold: float) -> Deduplicated:
    """Rows (text, normalised words, label) -> one example per distinct word sequence, grouped.

    A word sequence seen with two labels is ambiguous and dropped; otherwise its first text is kept.
    """
    texts: dict[tuple[str, ...], str] = {}
    labels: dict[tuple[str, ...], set[int]] = defaultdict(set)
    n_rows = n_empty = 0
    for text, words, label in rows:
        n_rows += 1
        if not words:  # Nothing left after normalisation (a bare link): no content to classify.
            n_empty += 1
            continue
        texts.setdefault(words, text)
        labels[words].add(label)
    kept = [words for words in texts if len(labels[words]) == 1]
    pairs = near_duplicate_pairs([word_shingles(words) for words in kept], threshold)
    groups = connected_groups(len(kept), pairs)
    sizes = Counter(groups)
    counts = dict(
        rows=n_rows,
        empty=n_empty,
        distinct=len(texts),
        conflicting=len(texts) - len(kept),
        kept=len(kept),
        near_duplicate_pairs=len(pairs),
        in_near_duplicate_groups=sum(n for n in sizes.values() if n > 1),
        groups=len(sizes),
        largest_group=max(sizes.values(), default=0),
    )
    examples = [(texts[words], next(iter(labels[words]))) for words in kept]
    return Deduplicated(examples, groups, counts)


def seeded_groups(groups: Sequence[int], rng: random.Random) -> list[list[int]]:
    """The items of each group (connected_groups' ids), the groups in an order shuffled by `rng`."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    order = sorted(members)
    rng.shuffle(order)
    return [members[group] for group in order]


def balanced_group_split(
    name: str, examples: Sequence[Example], groups: Sequence[int], n_train: int, n_test: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """`n_train` and `n_test` examples, half of each class, with no group on both sides.

    Groups, in a seeded random order, fill the test side until it holds n_test / 2 of each class;
    all other groups form the train side. Each side is then sampled down to exact balance.
    """
    half_train, half_test = halves(name, n_train, n_test)
    if len(examples) != len(groups):
        raise ValueError(f"{name}: {len(examples)} examples but {len(groups)} group ids")
    rng = random.Random(seed)
    sides: list[list[Example]] = [[], []]  # [train, test]
    in_test = [0, 0]
    for group in seeded_groups(groups, rng):
        members = [examples[i] for i in group]
        wanted = any(in_test[label] < half_test for _, label in members)
        sides[wanted].extend(members)
        for _, label in members if wanted else ():
            in_test[label] += 1
    train, test = [], []
    for label in (0, 1):
        for split, side, out, half in zip(("train", "test"), sides, (train, test), (half_train, half_test)):
            pool = [e for e in side if e[1] == label]
            if len(pool) < half:
                raise ConfigError(
                    f"{name}: the {split} side has {len(pool)} de-duplicated examples of class {label}, "
                    f"but n_train={n_train}, n_test={n_test} need {half} of each class there; "
                    "lower n_train or n_test"
                )
            out += rng.sample(pool, half)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


_WORD = re.compile(r"\w+")


def hold_out(name: str, examples: Sequence[Example], n_held: int, seed: int, threshold: float,
             ) -> tuple[list[Example], list[Example]]:
    """(the rest, `n_held` examples held out), the held-out ones half of each class, with no
    near-duplicate group (lower-case word bigrams, Jaccard >= threshold) on both sides.

    Groups, in a seeded random order, fill the held-out side until it holds n_held / 2 of each
    class; a taken group's members beyond their class's share go to neither side. The rest keep
    their order.
    """
    if n_held <= 0 or n_held % 2:
        raise ConfigError(f"{name}: n_held_out must be positive and even so classes balance exactly, got {n_held}")
    shingles = [word_shingles(_WORD.findall(text.lower())) for text, _ in examples]
    groups = connected_groups(len(examples), near_duplicate_pairs(shingles, threshold))
    rng = random.Random(seed)
    held, taken, wanted = [], set(), [n_held // 2] * 2
    for group in seeded_groups(groups, rng):
        if not any(wanted):
            break
        if not any(wanted[examples[i][1]] for i in group):
            continue
        taken.add(groups[group[0]])
        for i in group:
            if wanted[examples[i][1]]:
                wanted[examples[i][1]] -= 1
                held.append(examples[i])
    if any(wanted):
        raise ConfigError(f"{name}: {len(examples)} examples cannot give {n_held // 2} of each class to hold out "
                          f"({n_held // 2 - wanted[0]} and {n_held // 2 - wanted[1]} found); lower n_held_out")
    rest = [example for example, group in zip(examples, groups) if group not in taken]
    rng.shuffle(held)
    return rest, held
