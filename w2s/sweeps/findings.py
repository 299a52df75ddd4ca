"""Whether Burns et al.'s findings reproduce on a sweep's results, checked by rules fixed in advance:

1. the student beats its supervisor: the median over pairs of the `xent` students' per-seed PGR has
   a bootstrap interval above 0;
2. PGR grows with the strong model's size: for each weak model with at least 3 strong models that
   have a PGR, Spearman's rho between strong size and mean `xent` PGR; the median rho is above 0;
3. the confidence loss raises PGR at the largest gaps, less at small ones: PGR(method) - PGR(xent)
   per seed in the third of pairs with the largest strong/weak size ratio is above 0 (its interval)
   and above that of the third with the smallest.

Rows are metrics.summarize rows; a pair with no PGR (its ceiling not above its weak model) counts in
none of them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from w2s.results import metrics


def _fmt(value: float, low: float, high: float) -> str:
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


class Check(NamedTuple):
    """One finding on one task: whether it reproduces by its rule, the number the rule looks at (a
    table cell), and the full account."""
    reproduces: bool
    cell: str
    text: str


def student_beats_supervisor(rows: list[dict]) -> Check:
    """(1): the xent students' median PGR over pairs is above 0 with its bootstrap interval."""
    cells = [r for r in metrics.pgr_rows(rows) if "xent" in r["losses"]]
    if not cells:
        return Check(False, "no pair with a PGR", "no pair with a PGR")
    median, low, high = metrics.bootstrap_ci([r["losses"]["xent"]["pgr"]["values"] for r in cells])
    above = sum(r["losses"]["xent"]["student_acc"]["mean"] > r["weak_acc"] for r in cells)
    sure = sum(r["losses"]["xent"]["pgr"]["ci"][0] > 0 for r in cells)
    return Check(low > 0, _fmt(median, low, high),
                 f"xent median PGR {_fmt(median, low, high)} over {len(cells)} pairs; the student's mean accuracy "
                 f"is above its supervisor's in {above}/{len(cells)} pairs, its PGR interval above 0 in {sure}")


def pgr_grows_with_size(rows: list[dict], params: dict[str, float]) -> Check:
    """(2): per weak model with at least 3 strong models that have a PGR, Spearman's rho between the
    strong model's size and its xent PGR (mean over seeds); reproduces when the median rho is > 0."""
    rhos = {}
    for weak in sorted({r["weak_model"] for r in rows}, key=lambda w: params[w]):
        group = [r for r in metrics.pgr_rows(rows) if r["weak_model"] == weak and "xent" in r["losses"]]
        if len(group) >= 3:
            rho = scipy_stats.spearmanr([params[r["strong_model"]] for r in group],
                                        [r["losses"]["xent"]["pgr"]["mean"] for r in group]).statistic
            rhos[weak] = float(rho)
    if not rhos:
        text = "no weak model with 3 strong models that have a PGR"
        return Check(False, text, text)
    median = float(np.median(list(rhos.values())))
    per_weak = ", ".join(f"{w} {rho:.2f}" for w, rho in rhos.items())
    return Check(median > 0, f"{median:.2f} (per weak model: {', '.join(f'{rho:.2f}' for rho in rhos.values())})",
                 f"median Spearman rho {median:.2f}; per weak model: {per_weak}")


def confidence_loss_at_large_gaps(rows: list[dict], params: dict[str, float], method: str) -> Check:
    """(3): PGR(method) - PGR(xent) per seed, in the third of pairs with the largest strong/weak size
    ratio and the third with the smallest; reproduces when its median at the large gaps is above 0
    (bootstrap interval) and above the median at the small ones."""
    cells = sorted((r for r in metrics.pgr_rows(rows) if method in r["losses"] and "xent" in r["losses"]),
                   key=lambda r: params[r["strong_model"]] / params[r["weak_model"]])
    if len(cells) < 3:
        text = f"{len(cells)} pairs with a PGR: too few to compare gaps"
        return Check(False, text, text)
    third = max(1, len(cells) // 3)
    parts = {}
    for name, group in (("small", cells[:third]), ("large", cells[-third:])):
        gains = [[a - x for a, x in zip(r["losses"][method]["pgr"]["values"], r["losses"]["xent"]["pgr"]["values"])]
                 for r in group]
        ratios = [params[r["strong_model"]] / params[r["weak_model"]] for r in group]
        parts[name] = (*metrics.bootstrap_ci(gains), min(ratios), max(ratios), len(group))
    large, small = parts["large"], parts["small"]
    text = "; ".join(f"{name} gaps ({p[5]} pairs, size ratio {p[3]:.3g}-{p[4]:.3g}x): PGR gain over xent "
                     f"{_fmt(*p[:3])}" for name, p in parts.items())
    return Check(large[1] > 0 and large[0] > small[0], f"{_fmt(*large[:3])} vs {_fmt(*small[:3])}", text)


def findings(rows: list[dict], params: dict[str, float], confidence_methods: Sequence[str]) -> list[str]:
    """Per task, whether each finding reproduces and its numbers: (1) and (2) from the xent students,
    (3) for each of `confidence_methods` that ran (the confidence loss, or variants of it)."""
    lines = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        seeds = sorted({s for r in task_rows for s in r["seeds"]})
        lines += ["", f"## {task} (seeds {', '.join(map(str, seeds))})", ""]
        checks = [("(1) the student beats its supervisor", student_beats_supervisor(task_rows)),
                  ("(2) PGR grows with the strong model's size", pgr_grows_with_size(task_rows, params))]
        checks += [(f"(3) {m} raises PGR at the largest gaps, less at small ones",
                    confidence_loss_at_large_gaps(task_rows, params, m))
                   for m in confidence_methods if m in metrics.loss_names(task_rows)]
        lines += [f"- {name}: **{'reproduces' if c.reproduces else 'does not reproduce'}**. {c.text}." for name, c in checks]
    return lines


def at_a_glance(rows: list[dict], params: dict[str, float], confidence_methods: Sequence[str]) -> list[str]:
    """A Markdown table, one column per task: each finding's verdict by its rule and the number the rule
    looks at ((3), for each of `confidence_methods` that ran: the median gain at the largest gaps vs at
    the smallest), then the method with the highest median PGR (metrics.median_pgr)."""
    tasks = sorted({r["task"] for r in rows})
    by_task = {t: [r for r in rows if r["task"] == t] for t in tasks}
    checks = {"(1) student beats supervisor: median `xent` PGR": student_beats_supervisor,
              "(2) PGR grows with strong size: median Spearman ρ": lambda r: pgr_grows_with_size(r, params)}
    for m in (m for m in confidence_methods if m in metrics.loss_names(rows)):
        checks[f"(3) `{m}` gain over `xent`, largest vs smallest gaps"] = (
            lambda r, m=m: confidence_loss_at_large_gaps(r, params, m))
    lines = [f"| finding | {' | '.join(tasks)} |", "|---" * (len(tasks) + 1) + "|"]
    for name, check in checks.items():
        cells = [check(by_task[t]) for t in tasks]
        lines.append(f"| {name} | " + " | ".join(f"{'yes' if c.reproduces else 'no'}: {c.cell}" for c in cells) + " |")
    best = []
    for t in tasks:
        medians = metrics.median_pgr(by_task[t])
        top = max(medians, key=lambda m: medians[m]["median"]) if medians else None
        best.append(f"`{top}` {_fmt(medians[top]['median'], *medians[top]['ci'])}" if top else "no pair with a PGR")
    lines.append("| best median PGR | " + " | ".join(best) + " |")
    return lines


def summary(rows: list[dict], models: Sequence[str]) -> list[str]:
    """Per task: each model's accuracy as weak model (trained on A) and as ceiling (on B), in the
    order of `models`, the median PGR per method, and the pairs with no PGR."""
    lines = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        seeds = sorted({s for r in task_rows for s in r["seeds"]})
        weak = {r["weak_model"]: r["weak"] for r in task_rows}
        ceiling = {r["strong_model"]: r["ceiling"] for r in task_rows}
        lines += ["", f"### {task} (seeds {', '.join(map(str, seeds))})", "",
                  "| rung | as weak model (trained on A) | as ceiling (trained on B) |", "|---|---|---|"]
        for label in models:
            cells = [f"{s[label]['mean']:.3f}" + (f" ± {s[label]['std']:.3f}" if not math.isnan(s[label]["std"]) else "")
                     if label in s else "-" for s in (weak, ceiling)]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        lines += ["", "| method | median PGR per seed [95% CI] | median PGR of seed means | pairs |", "|---|---|---|---|"]
        lines += [f"| {m} | {_fmt(v['median'], *v['ci'])} | {v['of_means']:.2f} | {v['cells']} |"
                  for m, v in metrics.median_pgr(task_rows).items()]
        missing = [f"{r['weak_model']} → {r['strong_model']} ({r['weak_acc']:.3f} ≥ {r['ceiling_acc']:.3f})"
                   for r in task_rows if not r["has_pgr"]]
        lines += ["", f"No PGR (ceiling not above the weak model), {len(missing)} of {len(task_rows)} pairs: "
                  + (", ".join(missing) if missing else "none") + "."]
    return lines
