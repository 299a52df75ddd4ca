"""PNG plots of a results directory: PGR per loss, and student accuracy against the ceiling; of a
sweep, also the median PGR per method and PGR against the strong/weak size ratio and the strong size.

Figures are drawn on an explicit Agg canvas rather than through pyplot, so plotting works on
headless machines and never switches the backend of a notebook or script that imports w2s.
"""
from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from w2s.results import load, metrics, tables
from w2s.sweeps.results_table import load_records

_LOSS_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
# No "--": dashed lines are the weak models' own accuracy.
_LOSS_LINESTYLES = ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def color(i: int) -> str:
    return f"C{i % 10}"


def figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_pgr(rows: list[dict], path: pathlib.Path) -> None:
    """Bars of mean PGR per loss, one group per (task, weak -> strong) with a PGR, seeds as dots; the
    pairs with none are named below."""
    no_pgr = tables.no_pgr_lines(rows)
    rows = [r for r in rows if r["has_pgr"]]
    if not rows:
        fig = figure(max(7.0, 0.075 * max(map(len, no_pgr))), 1.0 + 0.3 * len(no_pgr))  # ~0.075 in per character
        fig.text(0.5, 0.5, "\n".join(no_pgr), ha="center", va="center", fontsize=9)
        fig.savefig(path, dpi=150)
        return
    losses = metrics.loss_names(rows)
    n_groups, n_losses = len(rows), len(losses)
    fig = figure(max(7.0, 2.5 + n_groups * (0.6 + 0.35 * n_losses)), 4.5)
    ax = fig.add_subplot()
    x = np.arange(n_groups)
    width = 0.8 / n_losses
    handles = []
    for j, loss in enumerate(losses):
        offset = (j - (n_losses - 1) / 2) * width
        stats = [row["losses"].get(loss, {}).get("pgr") for row in rows]
        means = [s["mean"] if s else math.nan for s in stats]
        stds = [s["std"] if s else math.nan for s in stats]
        handles.append(ax.bar(x + offset, means, width * 0.9, yerr=stds, capsize=3,
                              color=color(j), alpha=0.85, label=loss, error_kw=dict(lw=1)))
        for i, s in enumerate(stats):
            if not s:
                continue
            # Spread the seeds across the middle of the bar so equal values stay visible.
            n = len(s["values"])
            dx = (np.arange(n) - (n - 1) / 2) * width / (2 * max(n, 2))
            ax.scatter(x[i] + offset + dx, s["values"], s=12, color="black", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    handles += [
        Line2D([], [], color="black", marker="o", ms=4, ls="none", label="one seed"),
        Line2D([], [], color="gray", lw=0.8, ls="--", label="ceiling (PGR = 1)"),
    ]
    for i in range(1, n_groups):  # Separate tasks, whose groups are contiguous.
        if rows[i]["task"] != rows[i - 1]["task"]:
            ax.axvline(i - 0.5, color="lightgray", lw=0.8)
    ax.set_xticks(x, [f"{r['task']}\n{r['weak_model']} → {r['strong_model']}" for r in rows],
                  fontsize=8)
    ax.set_xlim(-0.6, n_groups - 0.4)
    ax.set_ylabel("PGR")
    fig.suptitle("Performance gap recovered per loss (bars: mean over seeds; error bars: sample std, ddof=1)")
    fig.legend(handles=handles, fontsize=8, loc="outside center right")
    if no_pgr:
        fig.supxlabel("\n".join(no_pgr), fontsize=8)  # constrained layout keeps it clear of the ticks
    fig.savefig(path, dpi=150)


def _plot_accuracy(rows: list[dict], path: pathlib.Path) -> None:
    """Per task: student accuracy against strong-ceiling accuracy, one line per weak model."""
    losses = metrics.loss_names(rows)
    tasks = sorted({r["task"] for r in rows})
    # Colours follow weak models across all subplots, ordered from weakest.
    weak_acc: dict[str, list[float]] = {}
    for r in rows:
        weak_acc.setdefault(r["weak_model"], []).append(r["weak_acc"])
    weaks = sorted(weak_acc, key=lambda w: (np.mean(weak_acc[w]), w))
    colors = {w: color(i) for i, w in enumerate(weaks)}

    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = figure(max(7.0, 4.2 * ncols + 2.2), 4.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(tasks):]:
        ax.set_visible(False)

    for ax, task in zip(axes, tasks):
        task_rows = [r for r in rows if r["task"] == task]
        for weak in [w for w in weaks if any(r["weak_model"] == w for r in task_rows)]:
            group = sorted((r for r in task_rows if r["weak_model"] == weak),
                           key=lambda r: r["ceiling_acc"])
            xs = [r["ceiling_acc"] for r in group]
            for j, loss in enumerate(losses):
                stats = [r["losses"].get(loss, {}).get("student_acc") for r in group]
                ax.errorbar(xs, [s["mean"] if s else math.nan for s in stats],
                            yerr=[s["std"] if s else math.nan for s in stats],
                            color=colors[weak], marker=_LOSS_MARKERS[j % len(_LOSS_MARKERS)],
                            ls=_LOSS_LINESTYLES[j % len(_LOSS_LINESTYLES)], ms=5, capsize=2)
            ax.axhline(np.mean([r["weak_acc"] for r in group]), color=colors[weak], ls="--",
                       lw=1)
        # The strong models themselves sit on the diagonal: name them there.
        ceilings: dict[str, list[float]] = {}
        for r in task_rows:
            ceilings.setdefault(r["strong_model"], []).append(r["ceiling_acc"])
        for strong, accs in ceilings.items():
            c = float(np.mean(accs))
            ax.plot([c], [c], marker="*", ms=9, color="black", ls="none", zorder=3)
            ax.annotate(strong, (c, c), xytext=(4, -10), textcoords="offset points", fontsize=7)
        values = [v for r in task_rows for v in (r["weak_acc"], r["ceiling_acc"])]
        values += [v for r in task_rows for s in r["losses"].values()
                   for v in s["student_acc"]["values"]]
        lo, hi = np.nanmin(values), np.nanmax(values)
        pad = max(0.05 * (hi - lo), 0.01)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.axline((lo, lo), slope=1, color="gray", lw=1, zorder=0)
        ax.set_title(task)
        ax.set_xlabel("strong ceiling accuracy")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)

    handles = [Line2D([], [], color=colors[w], lw=3, label=f"weak: {w}") for w in weaks]
    handles += [
        Line2D([], [], color="black", marker=_LOSS_MARKERS[j % len(_LOSS_MARKERS)],
               ls=_LOSS_LINESTYLES[j % len(_LOSS_LINESTYLES)], label=f"student, {loss}")
        for j, loss in enumerate(losses)
    ]
    handles += [
        Line2D([], [], color="black", ls="--", lw=1, label="weak model alone"),
        Line2D([], [], color="gray", lw=1, marker="*", mfc="black", mec="black", ms=9,
               label="strong ceiling (y = x)"),
    ]
    fig.legend(handles=handles, fontsize=8, loc="outside center right")
    fig.suptitle("Student vs. strong ceiling accuracy (mean over seeds; error bars: sample std, ddof=1)")
    fig.savefig(path, dpi=150)


def _plot_pair_accuracy(rows: list[dict], path: pathlib.Path) -> None:
    """One (weak, strong) pair per task: the weak model, each student and the ceiling side by side,
    a bar for the mean over seeds with its sample std, each seed a dot."""
    losses = metrics.loss_names(rows)
    fig = figure(max(6.0, 1.2 * (len(losses) + 2) * len(rows) + 2.0), 4.5)
    axes = fig.subplots(1, len(rows), squeeze=False).ravel()
    for ax, row in zip(axes, rows):
        bars = [("weak\n" + row["weak_model"], row["weak"], "gray")]
        bars += [(f"student\n{loss}", row["losses"][loss]["student_acc"], color(j))
                 for j, loss in enumerate(losses) if loss in row["losses"]]
        bars += [("ceiling\n" + row["strong_model"], row["ceiling"], "black")]
        for i, (_, stats, c) in enumerate(bars):
            ax.bar(i, stats["mean"], 0.7, color=c, alpha=0.6, yerr=stats["std"], capsize=4)
            ax.scatter(i + np.linspace(-0.15, 0.15, len(stats["values"])), stats["values"], s=12,
                       color="black", zorder=3)
        values = [v for _, stats, _ in bars for v in stats["values"]]
        lo, hi = min(values), max(values)
        pad = max(0.15 * (hi - lo), 0.01)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticks(range(len(bars)), [label for label, _, _ in bars], fontsize=8)
        ax.set_title(row["task"])
        ax.set_ylabel("test accuracy")
        ax.grid(axis="y", alpha=0.3)
    seeds = max(len(r["seeds"]) for r in rows)
    fig.suptitle("Test accuracy of one seed" if seeds == 1 else
                 f"Test accuracy: bars the mean over {seeds} seeds, error bars the sample std (ddof=1), dots the seeds",
                 fontsize=10)
    fig.savefig(path, dpi=150)


def plot_results(results_dir: str | pathlib.Path,
                 out_dir: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """Writes pgr.png and accuracy.png for all results.json below results_dir.

    Args:
        results_dir: searched recursively for results.json files.
        out_dir: where the PNGs go; defaults to results_dir.

    Returns:
        The paths written.

    Raises:
        ValueError: no results.json under results_dir, or none can be read (one that cannot is skipped
            with an UnreadableResultWarning).
    """
    rows = metrics.summarize(load.load_results(results_dir))
    out = pathlib.Path(results_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "pgr.png", out / "accuracy.png"]
    _plot_pgr(rows, paths[0])
    one_pair_per_task = len(rows) == len({r["task"] for r in rows})
    (_plot_pair_accuracy if one_pair_per_task else _plot_accuracy)(rows, paths[1])
    return paths


def _interval(stats: list[dict]) -> np.ndarray:
    """[2, N] distances from each mean to its interval's ends, as errorbar's yerr wants them."""
    return np.abs(np.asarray([[s["ci"][0] for s in stats], [s["ci"][1] for s in stats]])
                  - np.asarray([s["mean"] for s in stats]))


def _plot_median_pgr(rows: list[dict], path: pathlib.Path) -> None:
    """Median PGR per method over tasks and pairs (bars, 95% bootstrap interval), each pair a dot."""
    medians = metrics.median_pgr(rows)
    fig = figure(max(6.0, 1.2 * len(medians) + 2.5), 4.5)
    ax = fig.add_subplot()
    for i, (method, m) in enumerate(medians.items()):
        ax.bar(i, m["median"], 0.7, color=color(i), alpha=0.85,
               yerr=[[m["median"] - m["ci"][0]], [m["ci"][1] - m["median"]]], capsize=4)
        cells = [r["losses"][method]["pgr"]["mean"] for r in metrics.pgr_rows(rows) if method in r["losses"]]
        ax.scatter(i + np.linspace(-0.2, 0.2, len(cells)), cells, s=12, color="black", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(medians)), list(medians))
    ax.set_ylabel("PGR")
    ax.legend(handles=[Line2D([], [], color="black", marker="o", ms=4, ls="none",
                              label="one (task, weak, strong): mean over seeds"),
                       Line2D([], [], color="gray", lw=0.8, ls="--", label="ceiling (PGR = 1)")], fontsize=8)
    fig.suptitle("Median PGR per method over tasks and pairs\n(95% bootstrap interval over seeds)", fontsize=11)
    fig.savefig(path, dpi=150)


def _plot_pgr_vs_size(rows: list[dict], params: dict[str, float], path: pathlib.Path) -> None:
    """PGR (mean over seeds, 95% interval) against strong/weak parameter ratio, one colour per method."""
    rows = metrics.pgr_rows(rows)
    fig = figure(8.0, 4.8)
    ax = fig.add_subplot()
    methods = metrics.loss_names(rows)
    ratios: set[float] = set()
    for j, method in enumerate(methods):
        group = [r for r in rows if method in r["losses"]]
        ratio = [params[r["strong_model"]] / params[r["weak_model"]] for r in group]
        ratios.update(ratio)
        stats = [r["losses"][method]["pgr"] for r in group]
        # Methods side by side at each ratio, so equal ratios do not hide each other.
        shift = 1.0 + 0.012 * (j - (len(methods) - 1) / 2)
        ax.errorbar(np.asarray(ratio) * shift, [s["mean"] for s in stats], yerr=_interval(stats), color=color(j),
                    marker=_LOSS_MARKERS[j % len(_LOSS_MARKERS)], ls="none", ms=5, capsize=2, label=method)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ratios), [f"{r:.3g}×" for r in sorted(ratios)], minor=False)
    ax.set_xticks([], minor=True)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("strong / weak parameters")
    ax.set_ylabel("PGR")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside center right")
    fig.suptitle("PGR against the strong/weak size ratio, each task and pair\n(mean, 95% bootstrap interval over seeds)",
                 fontsize=11)
    fig.savefig(path, dpi=150)


def _plot_pgr_vs_strong(rows: list[dict], params: dict[str, float], methods: Sequence[str],
                        path: pathlib.Path) -> None:
    """Per task: PGR (mean over seeds, 95% interval) against the strong model's parameters, one colour
    per weak model, one line style per method: does PGR grow with the student's size?"""
    rows = metrics.pgr_rows(rows)
    tasks = sorted({r["task"] for r in rows})
    weaks = sorted({r["weak_model"] for r in rows}, key=lambda w: (params[w], w))
    fig = figure(max(7.0, 4.6 * len(tasks) + 2.4), 4.4)
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        for i, weak in enumerate(weaks):
            for j, method in enumerate(methods):
                group = sorted((r for r in rows if r["task"] == task and r["weak_model"] == weak and method in r["losses"]),
                               key=lambda r: params[r["strong_model"]])
                if not group:
                    continue
                stats = [r["losses"][method]["pgr"] for r in group]
                ax.errorbar([params[r["strong_model"]] * (1 + 0.03 * j) for r in group], [s["mean"] for s in stats],
                            yerr=_interval(stats), color=color(i), ls=_LOSS_LINESTYLES[j % len(_LOSS_LINESTYLES)],
                            marker=_LOSS_MARKERS[j % len(_LOSS_MARKERS)], ms=4, capsize=2)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a decade's minor labels overlap
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(1, color="gray", lw=0.8, ls="--")
        ax.set_title(task)
        ax.set_xlabel("strong model parameters")
        ax.set_ylabel("PGR")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=color(i), lw=3, label=f"weak: {w}") for i, w in enumerate(weaks)]
    handles += [Line2D([], [], color="black", ls=_LOSS_LINESTYLES[j % len(_LOSS_LINESTYLES)],
                       marker=_LOSS_MARKERS[j % len(_LOSS_MARKERS)], label=m) for j, m in enumerate(methods)]
    fig.legend(handles=handles, fontsize=8, loc="outside center right")
    fig.suptitle("PGR against the strong model's size, per weak model\n(mean, 95% bootstrap interval over seeds)",
                 fontsize=11)
    fig.savefig(path, dpi=150)


def plot_sweep(sweep_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """Writes the plots of plot_records for the results table of a sweep; returns the paths."""
    return plot_records(load_records(sweep_dir), pathlib.Path(sweep_dir if out_dir is None else out_dir))


def plot_records(records: list[dict], out: pathlib.Path,
                 size_methods: Sequence[str] = ("xent", "aux_conf")) -> list[pathlib.Path]:
    """Writes accuracy.png (Burns et al.'s main figure), pgr.png, median_pgr.png, pgr_vs_size.png
    and pgr_vs_strong.png (`size_methods` that were run) for sweep records (load_records, of one
    sweep or several); returns the paths."""
    rows = metrics.summarize(records)
    params = {r[f"{side}_model"]: r["params"][side] for r in records for side in ("weak", "strong")}
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in ("accuracy.png", "pgr.png", "median_pgr.png", "pgr_vs_size.png", "pgr_vs_strong.png")]
    _plot_accuracy(rows, paths[0])
    _plot_pgr(rows, paths[1])
    _plot_median_pgr(rows, paths[2])
    _plot_pgr_vs_size(rows, params, paths[3])
    _plot_pgr_vs_strong(rows, params, [m for m in size_methods if m in metrics.loss_names(rows)], paths[4])
    return paths
