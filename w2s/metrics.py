"""Accuracy, PGR, and the path from results.json files to a summary table.

Every pipeline run writes one results.json; this module turns a directory of them into
per-(task, weak, strong) statistics over seeds, for the terminal table and the plots.
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Iterable

import numpy as np

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
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    acc = record.get("accuracy", {})
    if not isinstance(acc, dict) or not isinstance(acc.get("student", {}), dict):
        raise ValueError(f"{path}: 'accuracy' must be {{weak, ceiling, student: {{loss: acc}}}}")
    missing = [k for k in _REQUIRED if k not in record]
    missing += [f"accuracy.{k}" for k in _REQUIRED_ACC if k not in acc]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")


def load_results(results_dir: str | pathlib.Path) -> list[dict]:
    """Reads every results.json anywhere below results_dir, in path order.

    Raises ValueError naming the file for a corrupt or incomplete one (so a crashed run is easy
    to find), and when there are none at all, since that almost always means a wrong path.
    """
    root = pathlib.Path(results_dir)
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ValueError(f"no results.json found under {root}")
    results = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot parse results.json: {e}") from e
        _check(record, path)
        results.append(record)
    return results


def _stats(values: list[float]) -> dict:
    """mean/std/min/max of the non-nan values, plus the values themselves.

    std is the population std (ddof=0), so a single seed gives 0 rather than nan. nan values
    (PGR with no weak-ceiling gap) stay in `values` but are left out of the statistics.
    """
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return dict(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, values=list(values))
    return dict(
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
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

    widths = [max(len(c) for c in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        # The three name columns read best left-aligned, the numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(cells) for cells in body])
