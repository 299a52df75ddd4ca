"""Accuracy, PGR, and the path from results.json files to a summary table.

Every pipeline run writes one results.json; this module turns a directory of them into
per-(task, weak, strong) statistics over seeds, for the terminal table and the plots.
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

from w2s.config import ConfigError

_REQUIRED = ("task", "weak_model", "strong_model", "seed", "accuracy")
_REQUIRED_ACC = ("weak", "ceiling", "student")


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
    supervisor. When the gap (ceiling - weak) is small, the ratio is dominated by evaluation
    noise and can take arbitrarily large values, so PGR is meaningless there: read it next to
    the gap. With no gap at all this returns nan, never inf.
    """
    gap = ceiling_acc - weak_acc
    if gap == 0:
        return math.nan
    return (student_acc - weak_acc) / gap


def _check(record: Any, path: pathlib.Path) -> None:
    """Fails early, naming the file, on records that summarize() cannot read."""
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(record).__name__}")
    acc = record.get("accuracy", {})
    if not isinstance(acc, dict) or not isinstance(acc.get("student", {}), dict):
        raise ConfigError(f"{path}: 'accuracy' must be {{weak, ceiling, student: {{loss: acc}}}}")
    missing = [k for k in _REQUIRED if k not in record]
    missing += [f"accuracy.{k}" for k in _REQUIRED_ACC if k not in acc]
    if missing:
        raise ConfigError(f"{path}: missing keys {missing}")


def load_results(results_dir: str | pathlib.Path) -> list[dict]:
    """Reads every results.json anywhere below results_dir, in path order.

    Raises ValueError naming the file for a corrupt or incomplete one (so a crashed run is easy
    to find), and when there are none at all, since that almost always means a wrong path.
    """
    root = pathlib.Path(results_dir)
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ConfigError(f"no results.json found under {root}")
    results = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot parse results.json: {e}") from e
        _check(record, path)
        results.append(record)
    return results


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

    std is the population std (ddof=0), so a single seed gives 0 rather than nan. nan values
    (PGR with no weak-ceiling gap) stay in `values` but are left out of the statistics.
    """
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return dict(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, ci=(math.nan, math.nan),
                    values=list(values))
    return dict(
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
        ci=bootstrap_ci([finite])[1:],
        values=list(values),
    )


def summarize(results: Iterable[dict]) -> list[dict]:
    """Groups runs by (task, weak_model, strong_model) and aggregates over seeds.

    PGR is recomputed per seed from the stored accuracies, so it always agrees with them.
    Each row is
        {task, weak_model, strong_model, seeds, weak_acc, ceiling_acc,
         losses: {loss: {student_acc: stats, pgr: stats}}}
    with stats = {mean, std, min, max, values} and weak_acc / ceiling_acc the means over
    seeds. Rows are sorted by key; losses keep their first-seen order.
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
        rows.append(dict(
            task=task,
            weak_model=weak,
            strong_model=strong,
            seeds=[r["seed"] for r in runs],
            weak_acc=float(np.mean([r["accuracy"]["weak"] for r in runs])),
            ceiling_acc=float(np.mean([r["accuracy"]["ceiling"] for r in runs])),
            losses={
                loss: dict(student_acc=_stats(student_accs[loss]), pgr=_stats(pgrs[loss]))
                for loss in student_accs
            },
        ))
    return rows


def loss_names(rows: Iterable[dict]) -> list[str]:
    """All losses over summarize() rows in first-seen order: a stable column and colour order."""
    return list(dict.fromkeys(loss for row in rows for loss in row["losses"]))


def median_pgr(rows: Iterable[dict]) -> dict[str, dict]:
    """Per loss or method: the median over (task, weak, strong) cells of the mean PGR over seeds, as
    Burns et al. summarise across tasks, with its bootstrap interval (bootstrap_ci). Cells whose weak
    and strong model are the same are left out: their gap is only noise."""
    rows = [r for r in rows if r["weak_model"] != r["strong_model"]]
    out = {}
    for loss in loss_names(rows):
        cells = [r["losses"][loss]["pgr"]["values"] for r in rows if loss in r["losses"]]
        median, low, high = bootstrap_ci(cells)
        out[loss] = dict(median=median, ci=(low, high), cells=len(cells))
    return out


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of summarize() rows, for printing to a terminal."""
    losses = loss_names(rows)
    header = ["task", "weak", "strong", "seeds", "weak acc", "ceiling acc"]
    for loss in losses:
        header += [f"{loss} acc", f"{loss} PGR"]
    body = []
    for row in rows:
        cells = [
            row["task"], row["weak_model"], row["strong_model"], str(len(row["seeds"])),
            f"{row['weak_acc']:.3f}", f"{row['ceiling_acc']:.3f}",
        ]
        for loss in losses:
            if loss not in row["losses"]:
                cells += ["-", "-"]
                continue
            stats = row["losses"][loss]
            cells.append(f"{stats['student_acc']['mean']:.3f}")
            cells.append(f"{stats['pgr']['mean']:.2f} ± {stats['pgr']['std']:.2f}")
        body.append(cells)
    return _columns(header, body, names=3)


def format_pgr_table(rows: list[dict]) -> str:
    """One line per (task, weak, strong, loss or method) of summarize() rows: mean accuracies and the
    mean PGR over seeds with its 95% bootstrap interval; then the median PGR of each (median_pgr)."""
    header = ["task", "weak", "strong", "method", "seeds", "weak acc", "ceiling acc", "student acc", "PGR [95% CI]"]
    body = [
        [row["task"], row["weak_model"], row["strong_model"], loss, str(len(row["seeds"])),
         f"{row['weak_acc']:.3f}", f"{row['ceiling_acc']:.3f}", f"{stats['student_acc']['mean']:.3f}",
         f"{stats['pgr']['mean']:.2f} [{stats['pgr']['ci'][0]:.2f}, {stats['pgr']['ci'][1]:.2f}]"]
        for row in rows for loss, stats in row["losses"].items()
    ]
    medians = [[loss, f"{m['median']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]", str(m["cells"])]
               for loss, m in median_pgr(rows).items()]
    return (_columns(header, body, names=4) + "\n\n"
            + _columns(["method", "median PGR [95% CI]", "pairs x tasks"], medians, names=1))


def _columns(header: list[str], body: list[list[str]], names: int) -> str:
    """Fixed-width columns: the first `names` left-aligned, the numbers right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(cells) for cells in body])
