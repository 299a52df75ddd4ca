"""Which unlabelled examples the student sends to its supervisor next.

A strategy is one function `(ctx: Context) -> positions`, registered by name with
`@register_strategy("name")`. It returns `ctx.k` distinct positions into the pool arrays of `ctx`
(rows of the still-unlabelled part of split B), best first; the active loop maps them to pool
indices. Scores that need an ensemble read `ctx.ensemble`, built by `fit_committee`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from w2s.active_learning import mistakes
from w2s.config import ConfigError
from w2s.registry import Registry


@dataclasses.dataclass(frozen=True)
class Context:
    """What the student knows when it chooses; every pool array has one row per unlabelled example."""

    probs: np.ndarray  # [N, 2] the student's class probabilities
    ensemble: np.ndarray  # [M, N, 2] class probabilities of M committee members
    embeddings: np.ndarray  # [N, H] the student's pooled features
    labelled: np.ndarray  # [L, H] the student's features of the examples labelled so far
    k: int  # how many to choose
    rng: np.random.Generator
    shortlist: int = 4  # the hybrid first keeps the k * shortlist most informative examples
    answers: np.ndarray | None = None  # [L, 2] the supervisor's answers on the labelled examples


Strategy = Callable[[Context], np.ndarray]
STRATEGIES: Registry[Strategy] = Registry("strategy", "strategies")


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Adds a strategy under `name`; names are unique so a config always means one function."""
    return STRATEGIES.register(name)


def known_strategies() -> list[str]:
    return STRATEGIES.names()


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name)


def select(name: str, ctx: Context) -> np.ndarray:
    """Runs strategy `name` and checks its answer, so a faulty plug-in never buys wrong labels."""
    n = len(ctx.probs)
    if not 0 < ctx.k <= n:
        raise ConfigError(f"cannot choose {ctx.k} of {n} unlabelled examples.")
    chosen = np.asarray(get_strategy(name)(ctx), np.int64)
    if chosen.shape != (ctx.k,) or len(np.unique(chosen)) != ctx.k or chosen.min() < 0 or chosen.max() >= n:
        raise ValueError(
            f"strategy {name!r} returned {chosen.tolist()[:8]}...; expected {ctx.k} distinct positions in [0, {n})."
        )
    return chosen


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis."""
    p = np.clip(probs, 1e-12, 1.0)
    return -np.sum(p * np.log(p), axis=-1)


def bald_scores(ensemble: np.ndarray) -> np.ndarray:
    """Mutual information between the label and the member: H(mean) - mean(H) per example.

    It equals each member's mean KL divergence to the consensus, so it is also the committee's
    KL disagreement: high where members are each confident but disagree.
    """
    return entropy(ensemble.mean(0)) - entropy(ensemble).mean(0)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def sq_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[N, C] squared Euclidean distances of points [N, H] to centres [C, H], clipped at 0."""
    return np.maximum(np.sum(points**2, 1)[:, None] - 2 * points @ centres.T + np.sum(centres**2, 1)[None], 0.0)


def k_center(points: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center: k times, the point farthest from every centre so far becomes a centre.

    With no centres yet, the first pick is the point farthest from the mean.
    """
    dist = sq_distances(points, centres if len(centres) else points.mean(0, keepdims=True)).min(1)
    chosen = []
    for _ in range(k):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, sq_distances(points, points[i : i + 1])[:, 0])
        dist[chosen] = -np.inf  # duplicates of a centre stay eligible, the centre itself does not
    return np.asarray(chosen, np.int64)


@register_strategy("random")
def random_choice(ctx: Context) -> np.ndarray:
    """The baseline every other strategy has to beat."""
    return ctx.rng.choice(len(ctx.probs), ctx.k, replace=False)


@register_strategy("entropy")
def max_entropy(ctx: Context) -> np.ndarray:
    """Where the student is least sure."""
    return _top(entropy(ctx.probs), ctx.k)


@register_strategy("margin")
def min_margin(ctx: Context) -> np.ndarray:
    """Smallest gap between the top two classes; with two classes it ranks as entropy does."""
    top2 = np.sort(ctx.probs, axis=-1)[:, -2:]
    return _top(top2[:, 0] - top2[:, 1], ctx.k)


@register_strategy("confident")
def most_confident(ctx: Context) -> np.ndarray:
    """Where the student is surest, alternating between the two classes it predicts: easy-first for a
    noisy supervisor, whose labels are likeliest right where the task is easy."""
    order = np.argsort(entropy(ctx.probs), kind="stable")
    predicted = ctx.probs[order].argmax(-1)
    by_class = [order[predicted == c] for c in range(ctx.probs.shape[-1])]
    n = min(len(b) for b in by_class)
    alternating = np.stack([b[:n] for b in by_class], 1).reshape(-1)
    rest = np.concatenate([b[n:] for b in by_class])  # one class's surplus, surest first
    return np.concatenate([alternating, rest])[: ctx.k]


@register_strategy("vote_entropy")
def vote_entropy(ctx: Context) -> np.ndarray:
    """Committee disagreement: entropy of the members' hard votes."""
    votes = np.eye(ctx.ensemble.shape[-1])[ctx.ensemble.argmax(-1)].mean(0)
    return _top(entropy(votes), ctx.k)


@register_strategy("bald")
def bald(ctx: Context) -> np.ndarray:
    """Expected information gain about the model (BALD) over the committee."""
    return _top(bald_scores(ctx.ensemble), ctx.k)


@register_strategy("kcenter")
def kcenter(ctx: Context) -> np.ndarray:
    """Coverage: the pool points farthest from everything labelled, in the student's feature space."""
    return k_center(ctx.embeddings, ctx.labelled, ctx.k)


@register_strategy("bald_kcenter")
def bald_kcenter(ctx: Context) -> np.ndarray:
    """Informative and diverse: k-center among the k * shortlist examples of highest BALD, so one
    batch does not spend its queries on near-duplicates."""
    shortlist = _top(bald_scores(ctx.ensemble), min(len(ctx.probs), ctx.k * ctx.shortlist))
    return shortlist[k_center(ctx.embeddings[shortlist], ctx.labelled, ctx.k)]


@register_strategy("typical")
def typical(ctx: Context) -> np.ndarray:
    """Typical examples of uncovered clusters (TypiClust, Hacohen et al. 2022, for small budgets):
    k-means over the labelled and unlabelled features into L + k clusters; from the largest
    clusters holding no labelled example first, each gives its densest unlabelled example
    (smallest mean distance to its nearest neighbours in the cluster)."""
    points = np.concatenate([ctx.embeddings, ctx.labelled])
    n = len(ctx.embeddings)
    assign = k_means(points, min(len(points), len(ctx.labelled) + ctx.k), ctx.rng)
    covered = set(assign[n:].tolist())
    sizes = np.bincount(assign[:n], minlength=assign.max() + 1)
    clusters = sorted(np.unique(assign[:n]), key=lambda c: (c in covered, -sizes[c], c))
    ranked = [members[np.argsort(_sparseness(ctx.embeddings[members]), kind="stable")]
              for members in (np.flatnonzero(assign[:n] == c) for c in clusters)]
    # Round-robin over the clusters in that order: each one's densest first, then the next densest.
    depth = max(len(r) for r in ranked)
    order = [r[i] for i in range(depth) for r in ranked if i < len(r)]
    return np.asarray(order[: ctx.k], np.int64)


def _sparseness(points: np.ndarray, neighbours: int = 20) -> np.ndarray:
    """Mean distance of each point to its nearest `neighbours` others (the inverse of typicality)."""
    if len(points) == 1:
        return np.zeros(1)
    dist = np.sqrt(sq_distances(points, points))
    m = min(neighbours, len(points) - 1)
    return np.sort(dist, axis=1)[:, 1 : m + 1].mean(1)


def k_means(points: np.ndarray, clusters: int, rng: np.random.Generator, iterations: int = 30) -> np.ndarray:
    """Cluster index of each point: Lloyd's algorithm from a k-means++ start."""
    chosen = [rng.integers(len(points))]
    closest = sq_distances(points, points[chosen])[:, 0]
    for _ in range(1, clusters):
        total = closest.sum()
        i = rng.choice(len(points), p=closest / total) if total > 0 else rng.integers(len(points))
        chosen.append(i)
        closest = np.minimum(closest, sq_distances(points, points[i : i + 1])[:, 0])
    c = points[chosen].copy()
    assign = np.full(len(points), -1)
    for _ in range(iterations):
        new = np.argmin(sq_distances(points, c), axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(c)
        np.add.at(sums, assign, points)
        counts = np.bincount(assign, minlength=clusters)
        c[counts > 0] = sums[counts > 0] / counts[counts > 0, None]  # an emptied centre stays put
    return assign


@register_strategy("diagnostic")
def diagnostic(ctx: Context) -> np.ndarray:
    """Cases that tell the student's hypotheses about its supervisor's mistakes apart: an ensemble
    of mistake models (w2s.active_learning.mistakes) fit to the answers so far; a case scores the information its
    true label carries about which model is right (BALD over their true-label heads) times the
    supervisor's expected accuracy on it under the ensemble, so the answer is likely the truth."""
    if ctx.answers is None:
        raise ConfigError("strategy 'diagnostic' needs the supervisor's answers on the labelled examples "
                          "(Context.answers).")
    scores, _ = diagnostic_scores(ctx.labelled, ctx.answers, ctx.embeddings, len(ctx.ensemble), ctx.rng)
    return _top(scores, ctx.k)


def diagnostic_scores(labelled: np.ndarray, answers: np.ndarray, pool: np.ndarray, size: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, mistakes.Predictions]:
    """Per pool case: BALD of the mistake ensemble's true labels x the mean P(supervisor right);
    and the ensemble's predictions. Features are standardised over labelled and pool together."""
    scale = mistakes.standardiser(np.concatenate([labelled, pool]))
    params = mistakes.fit(scale(labelled), answers, size, rng)
    pred = mistakes.predict(params, scale(pool))
    return bald_scores(pred.truth) * pred.supervisor_right.mean(0), pred


def fit_committee(
    features: np.ndarray, targets: np.ndarray, pool: np.ndarray, size: int, rng: np.random.Generator,
    steps: int = 100, l2: float = 1e-2,
) -> np.ndarray:
    """Probabilities [size, N, 2] on `pool` [N, H] of logistic-regression heads on frozen features.

    Each head is fit to a bootstrap resample of the labelled set (`features` [L, H], soft
    `targets` [L, 2]) by full-batch gradient descent with step 1/smoothness, which cannot diverge.
    This costs no backbone pass, so a committee of any size is cheap; the heads' spread on the
    pool reflects how much the labels bought so far pin down the student's decision.
    """
    mean, std = features.mean(0), features.std(0) + 1e-6
    x, xp = (features - mean) / std, (pool - mean) / std
    n = len(x)
    step = 1.0 / (0.25 * np.linalg.norm(x, 2) ** 2 / n + l2)
    rows = rng.integers(0, n, size=(size, n))
    xb, yb = x[rows], targets[rows, 1]  # [M, L, H], [M, L]
    w, b = np.zeros((size, x.shape[1])), np.zeros(size)
    for _ in range(steps):
        err = _sigmoid(np.einsum("mlh,mh->ml", xb, w) + b[:, None]) - yb
        w -= step * (np.einsum("mlh,ml->mh", xb, err) / n + l2 * w)
        b -= step * err.mean(1)
    p1 = _sigmoid(w @ xp.T + b[:, None])
    return np.stack([1.0 - p1, p1], axis=-1).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
