"""Accuracy, PGR, and the path from results.json files to a summary table.

Every pipeline run writes one results.json; this module turns a directory of them into
per-(task, weak, strong) statistics over seeds, for the terminal table and the plots.
"""
from __future__ import annotations

import json
import math
import pathlib
import warnings
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
    supervisor. With no gap (the ceiling not above the weak model) there is no gap to recover and
    the ratio would flip sign: this returns nan, never inf. When the gap is small, the ratio is
    dominated by evaluation noise: read it next to the gap.
    """
    gap = ceiling_acc - weak_acc
    if gap <= 0:
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


class UnreadableResultWarning(UserWarning):
    """A results.json that does not read back; the others are summarised without it."""


def load_results(results_dir: str | pathlib.Path) -> list[dict]:
    """Reads every results.json anywhere below results_dir, in path order, each record's students in
    its config's loss order.

    A corrupt or incomplete one is skipped with a warning naming it and the command that rebuilds it
    (so one crashed seed does not hide the others); no readable one at all is an error, since that
    almost always means a wrong path.
    """
    root = pathlib.Path(results_dir)
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ConfigError(f"no results.json found under {root}")
    results = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
            _check(record, path)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            warnings.warn(f"{path} skipped: {e}. {_rebuild_hint(path)}", UnreadableResultWarning, stacklevel=2)
            continue
        order = record.get("config", {}).get("losses") or []
        student = record["accuracy"]["student"]
        record["accuracy"]["student"] = {k: student[k] for k in sorted(
            student, key=lambda k: order.index(k) if k in order else len(order))}
        results.append(record)
    if not results:
        raise ConfigError(f"no readable results.json under {root}")
    return results


def _rebuild_hint(path: pathlib.Path) -> str:
    """How a seed's results.json is written again: its run, whose finished stages are reused."""
    seed = path.parent.name.removeprefix("seed_")
    seeds = f" --config.seeds={seed}," if seed.isdigit() else ""
    return (f"Rebuild it (finished stages are reused) with: "
            f"w2s run CONFIG --config.output_dir={path.parent.parent}{seeds}")


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


def _mean_sd(stats: dict, digits: int) -> str:
    """'mean ± sample sd', or the mean alone when one seed gives no spread."""
    if math.isnan(stats["std"]):
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def no_pgr_lines(rows: Iterable[dict]) -> list[str]:
    """One line per pair whose strong ceiling is not above its weak model: it has no PGR."""
    return [f"no PGR (the strong ceiling is not above the weak model): {r['task']} {r['weak_model']} -> "
            f"{r['strong_model']}, ceiling {r['ceiling_acc']:.3f} <= weak {r['weak_acc']:.3f}"
            for r in rows if not r["has_pgr"]]


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of summarize() rows, for printing to a terminal: means over seeds ±
    their sample standard deviation; PGR per seed (mean ± sd) and of the seed-mean accuracies."""
    losses = loss_names(rows)
    header = ["task", "weak", "strong", "seeds", "weak acc", "ceiling acc"]
    for loss in losses:
        header += [f"{loss} acc", f"{loss} PGR", "of means"]
    body = []
    for row in rows:
        cells = [
            row["task"], row["weak_model"], row["strong_model"], str(len(row["seeds"])),
            _mean_sd(row["weak"], 3), _mean_sd(row["ceiling"], 3),
        ]
        for loss in losses:
            if loss not in row["losses"]:
                cells += ["-", "-", "-"]
                continue
            stats = row["losses"][loss]
            cells.append(_mean_sd(stats["student_acc"], 3))
            cells += ([_mean_sd(stats["pgr"], 2), f"{stats['pgr_of_means']:.2f}"] if row["has_pgr"]
                      else ["no PGR", "no PGR"])
        body.append(cells)
    notes = ["(mean ± sample standard deviation over seeds; PGR per seed, and of the seed-mean accuracies)"]
    return "\n".join([_columns(header, body, names=3), *notes, *no_pgr_lines(rows)])


def format_pgr_table(rows: list[dict]) -> str:
    """One line per (task, weak, strong, loss or method) of summarize() rows with a PGR: mean
    accuracies, the mean PGR over seeds with its 95% bootstrap interval and the PGR of the seed-mean
    accuracies; then the median PGR of each (median_pgr); then the pairs with no PGR."""
    header = ["task", "weak", "strong", "method", "seeds", "weak acc", "ceiling acc", "student acc",
              "PGR per seed [95% CI]", "PGR of means"]
    body = [
        [row["task"], row["weak_model"], row["strong_model"], loss, str(len(row["seeds"])),
         f"{row['weak_acc']:.3f}", f"{row['ceiling_acc']:.3f}", f"{stats['student_acc']['mean']:.3f}",
         f"{stats['pgr']['mean']:.2f} [{stats['pgr']['ci'][0]:.2f}, {stats['pgr']['ci'][1]:.2f}]",
         f"{stats['pgr_of_means']:.2f}"]
        for row in rows if row["has_pgr"] for loss, stats in row["losses"].items()
    ]
    medians = [[loss, f"{m['median']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]", f"{m['of_means']:.2f}", str(m["cells"])]
               for loss, m in median_pgr(rows).items()]
    return "\n".join([
        _columns(header, body, names=4), "",
        _columns(["method", "median PGR per seed [95% CI]", "of means", "pairs x tasks"], medians, names=1),
        *no_pgr_lines(rows)])


def _columns(header: list[str], body: list[list[str]], names: int) -> str:
    """Fixed-width columns: the first `names` left-aligned, the numbers right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(cells) for cells in body])
