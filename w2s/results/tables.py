"""Fixed-width text tables of summarized results (w2s.results.metrics.summarize), for the terminal, and
Markdown tables of experiments' rows."""
from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from w2s.results import metrics


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
    losses = metrics.loss_names(rows)
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
    return "\n".join([columns(header, body, left=range(3)), *notes, *no_pgr_lines(rows)])


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
               for loss, m in metrics.median_pgr(rows).items()]
    return "\n".join([
        columns(header, body, left=range(4)), "",
        columns(["method", "median PGR per seed [95% CI]", "of means", "pairs x tasks"], medians, left=range(1)),
        *no_pgr_lines(rows)])


def columns(header: list[str], body: list[list[str]], left: Collection[int]) -> str:
    """Fixed-width columns under a rule: those numbered in `left` (names) left-aligned, the rest
    (numbers) right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(cells) for cells in body])


def markdown_table(rows: list[dict]) -> list[str]:
    """The rows as a Markdown table, one column per key in the order first seen: a (value, low, high)
    triple prints as "value [low, high]", a float with 2 decimals, a missing key as an empty cell."""
    def cell(value) -> str:
        if isinstance(value, (tuple, list)):
            return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    keys = list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows)]
