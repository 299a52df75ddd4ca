"""The arithmetic of results: accuracy, agreement, PGR, bootstrap intervals, and the summary of
results records over seeds per (task, weak, strong) that tables and plots show.

Reading results.json files is w2s.results.load's; printing the summary, w2s.results.tables'.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np


def accuracy(logits_or_probs: Any, labels: Any) -> float:
    """Fraction of argmax predictions that match the labels.

    Args:
        logits_or_probs: [N, C] logits or probabilities (their argmax is the same).
        labels: [N] int labels, or [N, C] soft labels (e.g. weak-model outputs), hardened by argmax.
    """
    scores = np.asarray(logits_or_probs)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"expected [N, C] scores, got shape {scores.shape}")
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    if labels.shape != scores.shape[:1]:
        raise ValueError(f"labels of shape {labels.shape} do not match scores {scores.shape}")
    return float(np.mean(scores.argmax(-1) == labels))


def softmax(logits: Any) -> np.ndarray:
    """Class probabilities [N, C] float32 from logits, on the host: labels for a later stage are
    computed where they are saved, with no device op to compile."""
    z = np.asarray(logits, np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def agreement(student_logits: Any, targets: Any, truth: Any) -> dict[str, float]:
    """How a student's predictions on its training examples agree with its (weak) soft targets and
    with the ground truth: by argmax (`agree_weak`, `agree_truth`), and hardened as the confidence
    loss hardens them (`hard_agree_weak`, `hard_agree_truth`): class 1 for the top fraction of
    class-1 probabilities equal to the targets' mean class-1 mass, here over all the examples
    rather than one batch."""
    probs, targets = softmax(np.asarray(student_logits, np.float64)), np.asarray(targets, np.float64)
    threshold = np.quantile(probs[:, 1], 1.0 - targets[:, 1].mean())
    hardened = (probs[:, 1] > threshold).astype(np.int64)
    weak, truth = targets.argmax(-1), np.asarray(truth)
    return {"agree_weak": accuracy(probs, weak), "agree_truth": accuracy(probs, truth),
            "hard_agree_weak": float(np.mean(hardened == weak)), "hard_agree_truth": float(np.mean(hardened == truth))}


def pgr(weak_acc: float, student_acc: float, ceiling_acc: float) -> float:
    """Performance gap recovered: (student - weak) / (ceiling - weak).

    1 means the student matched the ground-truth ceiling, 0 that it only matched its weak
    supervisor. With no gap (the ceiling not above the weak model) there is no gap to recover and
    the ratio would flip sign: this returns nan, never inf. When the gap is small, the ratio is
    dominated by evaluation noise: read it next to the gap.
    """
    gap = ceiling_acc - weak_acc
    if gap <= 0:
        return math.nan
    return (student_acc - weak_acc) / gap


def bootstrap_ci(cells: Sequence[Sequence[float]], level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(median over cells of each cell's mean, low, high): a percentile bootstrap interval that
    resamples every cell's values (its seeds) with replacement.

    One cell gives its mean over seeds and that mean's interval; several (e.g. the tasks and pairs
    of one method) give Burns et al.'s median with an interval for seed noise. nan values (PGR with
    no gap) are left out, and a cell with none left is dropped. With few seeds the interval cannot
    be wider than the seeds' range: read it with the number of seeds.
    """
    arrays = [np.asarray([v for v in c if not math.isnan(v)], float) for c in cells]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = np.stack([a[rng.integers(0, a.size, (n_boot, a.size))].mean(1) for a in arrays])  # [cells, n_boot]
    low, high = np.quantile(np.median(draws, axis=0), [(1 - level) / 2, (1 + level) / 2])
    return float(np.median([a.mean() for a in arrays])), float(low), float(high)


def _stats(values: list[float]) -> dict:
    """mean/std/min/max of the non-nan values, a 95% bootstrap interval of the mean (ci), plus the
    values themselves.

    std is the sample standard deviation (ddof=1): with few seeds the population one understates
    the spread; with one seed it is nan (no spread is known). nan values (PGR of a seed with no
    weak-ceiling gap) stay in `values` but are left out of the statistics.
    """
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return dict(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, ci=(math.nan, math.nan),
                    values=list(values))
    return dict(
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        min=float(finite.min()),
        max=float(finite.max()),
        ci=bootstrap_ci([finite])[1:],
        values=list(values),
    )


def summarize(results: Iterable[dict]) -> list[dict]:
    """Groups runs by (task, weak_model, strong_model) and aggregates over seeds.

    PGR is recomputed per seed from the stored accuracies, so it always agrees with them, and also
    from the seed-mean accuracies, as Burns et al. aggregate. Each row is
        {task, weak_model, strong_model, seeds, weak_acc, ceiling_acc, weak, ceiling, has_pgr,
         losses: {loss: {student_acc: stats, pgr: stats, pgr_of_means: float}}}
    with stats = {mean, std, min, max, ci, values}, weak / ceiling the stats of their accuracies and
    weak_acc / ceiling_acc their means. has_pgr is False when the mean ceiling is not above the mean
    weak accuracy: such a pair has no PGR (pgr_of_means is nan) and PGR tables and medians leave it
    out. Rows are sorted by key; losses keep their first-seen order.
    """
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["weak_model"], r["strong_model"]), []).append(r)

    rows = []
    for (task, weak, strong), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        student_accs: dict[str, list[float]] = {}
        pgrs: dict[str, list[float]] = {}
        for r in runs:
            acc = r["accuracy"]
            for loss, student_acc in acc["student"].items():
                student_accs.setdefault(loss, []).append(student_acc)
                pgrs.setdefault(loss, []).append(pgr(acc["weak"], student_acc, acc["ceiling"]))
        weak_stats = _stats([r["accuracy"]["weak"] for r in runs])
        ceiling_stats = _stats([r["accuracy"]["ceiling"] for r in runs])
        rows.append(dict(
            task=task,
            weak_model=weak,
            strong_model=strong,
            seeds=[r["seed"] for r in runs],
            weak_acc=weak_stats["mean"],
            ceiling_acc=ceiling_stats["mean"],
            weak=weak_stats,
            ceiling=ceiling_stats,
            has_pgr=ceiling_stats["mean"] > weak_stats["mean"],
            losses={
                loss: dict(student_acc=_stats(student_accs[loss]), pgr=_stats(pgrs[loss]),
                           pgr_of_means=pgr(weak_stats["mean"], float(np.mean(student_accs[loss])),
                                            ceiling_stats["mean"]))
                for loss in student_accs
            },
        ))
    return rows


def loss_names(rows: Iterable[dict]) -> list[str]:
    """All losses over summarize() rows in first-seen order: a stable column and colour order."""
    return list(dict.fromkeys(loss for row in rows for loss in row["losses"]))


def pgr_rows(rows: Iterable[dict]) -> list[dict]:
    """The rows that have a PGR: a weak and a strong model that differ, the ceiling above the weak."""
    return [r for r in rows if r["has_pgr"] and r["weak_model"] != r["strong_model"]]


def median_pgr(rows: Iterable[dict]) -> dict[str, dict]:
    """Per loss or method: the median over (task, weak, strong) cells of the mean PGR over seeds, as
    Burns et al. summarise across tasks, with its bootstrap interval (bootstrap_ci), and the median of
    the cells' PGR of seed-mean accuracies. Cells with no PGR, or whose weak and strong model are the
    same (their gap is only noise), are left out (pgr_rows)."""
    rows = pgr_rows(rows)
    out = {}
    for loss in loss_names(rows):
        cells = [r["losses"][loss] for r in rows if loss in r["losses"]]
        median, low, high = bootstrap_ci([c["pgr"]["values"] for c in cells])
        out[loss] = dict(median=median, ci=(low, high), of_means=float(np.median([c["pgr_of_means"] for c in cells])),
                         cells=len(cells))
    return out


