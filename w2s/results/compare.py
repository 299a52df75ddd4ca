"""Several result folders side by side: PGR per method and student vs ceiling accuracy, one colour per
folder, each folder labelled by the settings in which its config differs from the others'.

A folder is a run's output (results.json per seed) or a sweep's (results.sqlite). Folders are only
compared on the same data: their tasks, task options and, where recorded, the fingerprints of their
test splits must agree, unless the caller allows otherwise.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from w2s.results import load, metrics
from w2s.config import ConfigError
from w2s.results.document import Table, markdown_table
from w2s.results.plot import color, figure
from w2s.sweeps.results_table import FILENAME as SWEEP_TABLE, load_records

# Where and how a run ran, not what it measured: never a difference worth naming.
WHERE = ("output_dir", "checkpoint_dir", "keep_checkpoints", "mesh", "distributed")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_MAX_LABEL_KEYS = 3  # more differing settings than this: the folder's name labels it instead


@dataclasses.dataclass
class Folder:
    """One result folder: its results records, its config as stored, and its label."""

    path: pathlib.Path
    records: list[dict]
    settings: dict[str, Any]
    label: str = ""

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The config flattened to dotted keys."""
        return flatten(self.settings)

    @functools.cached_property
    def rows(self) -> list[dict]:
        return metrics.summarize(self.records)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists (a config's tuples, after JSON) stay values."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_folder(path: str | pathlib.Path) -> Folder:
    """A run's folder (its first seed's config) or a sweep's (sweep_config.json and its table)."""
    path = pathlib.Path(path)
    if (path / SWEEP_TABLE).exists():
        settings = path / "sweep_config.json"
        config = json.loads(settings.read_text()) if settings.exists() else {}
        return Folder(path, load_records(path), config)
    records = load.load_results(path)
    return Folder(path, records, records[0].get("config", {}))


def format_value(value: Any) -> str:
    """A config value as a label shows it: lists as a,b."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def differing_keys(configs: list[dict[str, Any]], ignore: tuple[str, ...] = WHERE) -> list[str]:
    """Dotted keys whose values are not the same in every config (missing counts as a value), but
    for those under the top-level keys `ignore`."""
    keys = sorted({k for c in configs for k in c if k.split(".")[0] not in ignore})
    return [k for k in keys if len({json.dumps(c[k], sort_keys=True) if k in c else None for c in configs}) > 1]


def label_folders(folders: list[Folder]) -> None:
    """Labels each folder by its values of the keys that differ ('strong.train.lr=3e-05'), or by its
    folder name where nothing or too much differs to read as a label."""
    keys = differing_keys([f.config for f in folders], WHERE + ("seeds",))  # the tables count finished seeds
    names = [f.path.name for f in folders]
    if len(set(names)) < len(names):
        names = [str(f.path) for f in folders]
    for folder, name in zip(folders, names):
        if 0 < len(keys) <= _MAX_LABEL_KEYS:
            folder.label = "; ".join(f"{k}={format_value(folder.config.get(k, '-'))}" for k in keys)
        else:
            folder.label = name
    if len({f.label for f in folders}) < len(folders):  # equal on every key shown: add the names
        for folder, name in zip(folders, names):
            folder.label = f"{name}: {folder.label}"


def data_differences(folders: list[Folder]) -> list[str]:
    """What makes the folders' numbers not comparable: other tasks, task options or test splits."""
    problems = []
    tasks = [sorted({r["task"] for r in f.records}) for f in folders]
    if any(t != tasks[0] for t in tasks):
        problems.append("tasks differ: " + "; ".join(f"{f.path}: {', '.join(t)}" for f, t in zip(folders, tasks)))
    options = [{k: v for k, v in f.config.items() if k.startswith("task_options.")} for f in folders]
    for key in differing_keys(options):
        problems.append(f"{key} differs: " + "; ".join(f"{f.path}: {format_value(o.get(key, '-'))}"
                                                       for f, o in zip(folders, options)))
    splits: dict[tuple[str, int], dict[str, list[pathlib.Path]]] = {}
    for f in folders:
        for r in f.records:
            if "test_split" in r:
                splits.setdefault((r["task"], r["seed"]), {}).setdefault(r["test_split"], []).append(f.path)
    for (task, seed), by_print in sorted(splits.items()):
        if len(by_print) > 1:
            problems.append(f"test split of {task} seed {seed} differs: " + "; ".join(
                f"{', '.join(map(str, paths))}: {fp}" for fp, paths in by_print.items()))
    return problems


def load_folders(paths: list[str | pathlib.Path], allow_different_data: bool = False) -> list[Folder]:
    """Loads and labels the folders; refuses ones measured on different data unless allowed."""
    folders = [load_folder(p) for p in paths]
    problems = data_differences(folders)
    if problems and not allow_different_data:
        raise ConfigError("the folders were not measured on the same data (" + "; ".join(problems)
                         + "); pass --allow_different_data to compare them anyway.")
    label_folders(folders)
    return folders


def _interval(stats: dict, digits: int) -> str:
    return f"{stats['mean']:.{digits}f} [{stats['ci'][0]:.{digits}f}, {stats['ci'][1]:.{digits}f}]"


def results_table(folders: list[Folder]) -> Table:
    """One row per folder (a column only when there are several), task, pair and method: mean
    accuracies and PGR over seeds with 95% intervals."""
    header = ["folder", "task", "weak", "strong", "method", "seeds", "weak acc", "ceiling acc",
              "student acc [95% CI]", "PGR [95% CI]"]
    rows = [[f.label, row["task"], row["weak_model"], row["strong_model"], method, str(len(row["seeds"])),
             f"{row['weak_acc']:.3f}", f"{row['ceiling_acc']:.3f}", _interval(stats["student_acc"], 3),
             _interval(stats["pgr"], 2)]
            for f in folders for row in f.rows for method, stats in row["losses"].items()]
    if len(folders) == 1:
        return Table(header[1:], [r[1:] for r in rows], names=4)
    return Table(header, rows, names=5)


def median_table(folders: list[Folder]) -> Table:
    """Per folder and method, the median over tasks and pairs of the mean PGR (metrics.median_pgr)."""
    rows = [[f.label, method, f"{m['median']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]", str(m["cells"])]
            for f in folders for method, m in metrics.median_pgr(f.rows).items()]
    return Table(["folder", "method", "median PGR [95% CI]", "tasks x pairs"], rows, names=2)


def format_tables(folders: list[Folder]) -> str:
    """The tables as Markdown: the per-cell numbers, then (when a folder has several cells) medians."""
    out = markdown_table(results_table(folders))
    if any(len(f.rows) > 1 for f in folders):
        out += "\n\n" + markdown_table(median_table(folders))
    return out


def plot_pgr(folders: list[Folder], path: pathlib.Path) -> None:
    """Bars of PGR per method, one per folder: the median over its tasks and pairs of the mean over
    seeds (for a single run, that mean), with its 95% bootstrap interval; each run's PGR as a dot."""
    medians = [metrics.median_pgr(f.rows) for f in folders]
    methods = list(dict.fromkeys(m for per in medians for m in per))
    n = len(folders)
    width = 0.8 / n
    fig = figure(max(6.5, 2.0 + len(methods) * (0.5 + 0.45 * n) + 3.0), 4.6)
    ax = fig.add_subplot()
    for i, (folder, per) in enumerate(zip(folders, medians)):
        offset = (i - (n - 1) / 2) * width
        for j, method in enumerate(methods):
            if method not in per:
                continue
            first = method == next(iter(per))  # the folder's legend entry, once
            m = per[method]
            ax.bar(j + offset, m["median"], width * 0.9, color=color(i), alpha=0.85,
                   yerr=[[m["median"] - m["ci"][0]], [m["ci"][1] - m["median"]]], capsize=3,
                   error_kw=dict(lw=1), label=folder.label if first else None)
            values = [v for row in folder.rows if method in row["losses"] and row["weak_model"] != row["strong_model"]
                      for v in row["losses"][method]["pgr"]["values"] if not math.isnan(v)]
            spread = (np.arange(len(values)) - (len(values) - 1) / 2) * width / (2 * max(len(values), 2))
            ax.scatter(j + offset + spread, values, s=10, color="black", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("PGR")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="black", marker="o", ms=4, ls="none", label="one seed of one pair"),
                Line2D([], [], color="gray", lw=0.8, ls="--", label="ceiling (PGR = 1)")]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=min(3, len(handles)))
    several = any(len(f.rows) > 1 for f in folders)
    fig.suptitle("PGR per method and folder\n(" + ("median over tasks and pairs of the " if several else "")
                 + "mean over seeds; 95% bootstrap interval)", fontsize=11)
    fig.savefig(path, dpi=120)


def plot_accuracy(folders: list[Folder], path: pathlib.Path) -> None:
    """Student against strong-ceiling accuracy (means over seeds, 95% intervals): colour = folder,
    marker = method; the ceiling as a star on the diagonal, the weak model's own accuracy as a
    triangle below it."""
    methods = list(dict.fromkeys(m for f in folders for m in metrics.loss_names(f.rows)))
    fig = figure(8.5, 5.2)
    ax = fig.add_subplot()
    values = []
    for i, folder in enumerate(folders):
        for row in folder.rows:
            ax.plot([row["ceiling_acc"]], [row["weak_acc"]], marker="v", mfc="none", mec=color(i), ms=7, ls="none")
            ax.plot([row["ceiling_acc"]], [row["ceiling_acc"]], marker="*", color=color(i), ms=10, ls="none")
            values += [row["ceiling_acc"], row["weak_acc"]]
            for j, method in enumerate(methods):
                if method not in row["losses"]:
                    continue
                stats = row["losses"][method]["student_acc"]
                ax.errorbar([row["ceiling_acc"]], [stats["mean"]],
                            yerr=[[stats["mean"] - stats["ci"][0]], [stats["ci"][1] - stats["mean"]]],
                            color=color(i), marker=_MARKERS[j % len(_MARKERS)], ms=6, capsize=3, ls="none")
                values += list(stats["ci"])
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = max(0.08 * (hi - lo), 0.01)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.axline((lo, lo), slope=1, color="gray", lw=1, zorder=0)
    ax.set_xlabel("strong ceiling accuracy (mean over seeds)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=color(i), lw=4, label=f.label) for i, f in enumerate(folders)]
    handles += [Line2D([], [], color="black", marker=_MARKERS[j % len(_MARKERS)], ls="none", label=f"student, {m}")
                for j, m in enumerate(methods)]
    handles += [Line2D([], [], color="black", marker="v", mfc="none", ls="none", label="weak model alone"),
                Line2D([], [], color="gray", lw=1, marker="*", mfc="black", mec="black", ms=10,
                       label="strong ceiling (y = x)")]
    fig.legend(handles=handles, fontsize=8, loc="outside right center")
    fig.suptitle("Student vs. strong ceiling accuracy per folder\n(mean over seeds, 95% bootstrap interval)", fontsize=11)
    fig.savefig(path, dpi=120)


def compare(paths: list[str | pathlib.Path], out_dir: str | pathlib.Path,
            allow_different_data: bool = False) -> tuple[str, list[pathlib.Path]]:
    """Writes compare_pgr.png, compare_accuracy.png and compare.md (the tables) to out_dir; returns
    the tables (Markdown) and the paths written."""
    folders = load_folders(paths, allow_different_data)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = format_tables(folders)
    written = [out / "compare_pgr.png", out / "compare_accuracy.png", out / "compare.md"]
    plot_pgr(folders, written[0])
    plot_accuracy(folders, written[1])
    written[2].write_text("\n".join(f"- {f.label}: {f.path}" for f in folders) + "\n\n" + tables + "\n")
    return tables, written
