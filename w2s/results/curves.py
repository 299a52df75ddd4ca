"""Training curves: every stage's stored history drawn against step (live: progress.TensorBoardLog).

A stage's record (<stage>.json, see w2s.experiment) holds `history`: a row every `log_every` steps
with loss, grad_norm and throughput, and a row per evaluation (`eval_every`) with test_accuracy;
the record's own test_accuracy is the evaluation at the end of training.
"""
from __future__ import annotations

import json
import pathlib

from w2s.results.plot import color, figure

# Stages of a seed in pipeline order; the rest (students, a sweep's stages) follow by name.
_ORDER = ("weak", "ceiling")


def stage_order(name: str) -> tuple[int, str]:
    """Sort key of a stage's name: weak, ceiling, then the rest by name."""
    base = name.rsplit("/", 1)[-1]
    return (_ORDER.index(base) if base in _ORDER else len(_ORDER), name)


def stage_records(seed_dir: str | pathlib.Path) -> dict[str, dict]:
    """Records with a training history below one seed's folder, by stage name (the path without
    .json, e.g. 'weak', 'student_xent', or a sweep's 'minilm-l1/weak'), weak first, then ceiling."""
    root = pathlib.Path(seed_dir)
    records = {}
    for path in root.rglob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a stage being written; results.json and config.json are not stages either
        if isinstance(record, dict) and isinstance(record.get("history"), list):
            records[path.relative_to(root).with_suffix("").as_posix()] = record
    return dict(sorted(records.items(), key=lambda item: stage_order(item[0])))


def seed_dirs(results_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Every seed_<s> folder below results_dir (a run's, or each task's of a sweep), in path order."""
    root = pathlib.Path(results_dir)
    return sorted(p for p in root.rglob("seed_*") if p.is_dir() and stage_records(p))


def test_accuracy_curve(record: dict) -> tuple[list[int], list[float]]:
    """(steps, test accuracies): the evaluations during training, then the one at its end."""
    rows = [r for r in record["history"] if "test_accuracy" in r]
    steps, accs = [r["step"] for r in rows], [r["test_accuracy"] for r in rows]
    last = max((r["step"] for r in record["history"]), default=0)
    # Early stopping reports the selected evaluation's accuracy; the curve ends at the final one.
    final = record.get("final_test_accuracy", record.get("test_accuracy"))
    if final is not None and (not steps or steps[-1] < last):
        steps.append(last)
        accs.append(final)
    return steps, accs


def plot_seed_curves(seed_dir: pathlib.Path, path: pathlib.Path, title: str) -> None:
    """Loss and test accuracy against step, one colour per stage of the seed."""
    records = stage_records(seed_dir)
    fig = figure(11.0, 4.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, (stage, record) in enumerate(records.items()):
        rows = [r for r in record["history"] if "loss" in r]
        loss_ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color=color(i), label=stage)
        steps, accs = test_accuracy_curve(record)
        acc_ax.plot(steps, accs, color=color(i), marker="o", ms=3, label=stage)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (each stage's own loss)")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.legend(*loss_ax.get_legend_handles_labels(), fontsize=8, loc="outside center right")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def plot_curves(results_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """Writes curves_<seed folder>.png for every seed folder below results_dir; returns the paths."""
    root = pathlib.Path(results_dir)
    out = pathlib.Path(results_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed_dir in seed_dirs(root):
        name = seed_dir.relative_to(root).as_posix()
        paths.append(out / f"curves_{name.replace('/', '_')}.png")
        plot_seed_curves(seed_dir, paths[-1], f"Training curves: {name}")
    return paths
