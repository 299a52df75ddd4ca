"""Sweeps per task: the same sweep (w2s.sweeps.sweep) on several tasks, each with its own sizes and
max_length, run seed by seed so that a stopped run leaves whole seeds of every task, then a report
over all of them: plots, tables, the rungs' accuracies and whether Burns et al.'s findings reproduce.

Layout under output_dir: one sweep folder per task (<task>/results.sqlite, its stages and features),
and, rewritten after each (seed, task), the plots of w2s.results.plot.plot_records, tables.md (per
task: PGR per seed with its bootstrap interval, PGR of seed-mean accuracies, the pairs with no PGR),
summary.md (per task: each rung's accuracies, the median PGR per method) and findings.md
(w2s.sweeps.findings, per task).
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import ml_collections

from w2s import distributed
from w2s.config import ConfigError, apply_overrides, check_keys
from w2s.losses import check_loss_options
from w2s.results import metrics, plot, tables
from w2s.runners import register_runner
from w2s.sweeps import findings, ladders, sweep
from w2s.sweeps.results_table import FILENAME, load_records
from w2s.tasks import check_task_options

# Keys of a sweep config that the runner sets per task and seed.
PER_RUN = ("runner", "name", "tasks", "seeds", "output_dir")
TASK_SETTINGS = ("task_options", "max_length")  # what config.task_settings.<task> may set


def default_config() -> ml_collections.ConfigDict:
    """Every key, with its default: the sweep's defaults on its default task."""
    base = sweep.default_config()
    return ml_collections.ConfigDict(dict(
        runner="sweeps_per_task",
        name="sweeps",
        tasks=tuple(base.tasks),
        # Per task, over the sweep's: task_options (merged over sweep.task_options) and max_length
        # (of sweep.train and sweep.probe_train).
        task_settings={},
        seeds=tuple(base.seeds),
        sweep={k: v for k, v in base.items() if k not in PER_RUN},
        confidence_methods=("aux_conf",),  # finding (3) is checked for each of these that ran
        output_dir="results/sweeps",
    ))


def _check_task_settings(cfg: ml_collections.ConfigDict, options: dict | None = None) -> None:
    for task, settings in cfg.task_settings.items():
        check_keys(settings, TASK_SETTINGS, f"config.task_settings.{task}")
        try:
            check_task_options([task], {**cfg.sweep.task_options, **settings.get("task_options", {})})
        except ValueError as e:
            raise ConfigError(f"config.task_settings.{task}.task_options: {e}") from None


# --config.sweep.loss_options.<loss or variant>.<option>=... as for a sweep; task_options per task.
OPEN_SECTIONS = {"sweep.loss_options": lambda cfg, options: check_loss_options(cfg.sweep.loss_options),
                 "sweep.task_options": lambda cfg, options: check_task_options(cfg.tasks, options),
                 "task_settings": _check_task_settings}


def validate(cfg: ml_collections.ConfigDict) -> None:
    check_keys(cfg, tuple(default_config()), "config")
    check_keys(cfg.sweep, [k for k in sweep.TOP_KEYS if k not in PER_RUN], "config.sweep")
    if not cfg.tasks or not cfg.seeds:
        raise ConfigError("config.tasks and config.seeds must each name at least one.")
    _check_task_settings(cfg)  # settings of a task left out of config.tasks are kept, and unused


def task_sweep(cfg: ml_collections.ConfigDict, task: str, seed: int) -> ml_collections.ConfigDict:
    """The sweep config of one task and seed: config.sweep with the task's own settings."""
    settings = cfg.task_settings.get(task, ml_collections.ConfigDict())
    out = ml_collections.ConfigDict(cfg.sweep.to_dict())
    out.runner, out.name, out.tasks, out.seeds = "sweep", f"{cfg.name}_{task}", (task,), (seed,)
    out.output_dir = str(pathlib.Path(cfg.output_dir) / task)
    out.task_options.update(settings.get("task_options", {}))
    if settings.get("max_length") is not None:
        out.train.max_length = out.probe_train.max_length = settings.max_length
    return out


def write_report(cfg: ml_collections.ConfigDict) -> None:
    """Plots, tables.md, summary.md and findings.md of every task sweep under output_dir with rows."""
    out = pathlib.Path(cfg.output_dir)
    records = [r for task in cfg.tasks if (out / task / FILENAME).exists() for r in load_records(out / task)]
    if not records:
        return
    for r in records:  # the ladder's counts, also for rows written before a count was corrected
        r["params"] = {role: ladders.rung(r[f"{role}_model"]).params for role in ("weak", "strong")}
    rows = metrics.summarize(records)
    params = {r[f"{role}_model"]: r["params"][role] for r in records for role in ("weak", "strong")}
    plot.plot_records(records, out)
    lines = [f"# {cfg.name}: results", "",
             "Per task: mean accuracies over seeds, mean PGR over seeds with its 95% bootstrap interval, PGR "
             "of the seed-mean accuracies, the median per method; then mean ± sample sd of every accuracy."]
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        lines += ["", f"## {task}", "", "```", tables.format_pgr_table(task_rows), "", tables.format_table(task_rows),
                  "```"]
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    (out / "summary.md").write_text("\n".join([f"# {cfg.name}: summary", *findings.summary(rows, cfg.sweep.models)])
                                    + "\n")
    (out / "findings.md").write_text("\n".join([
        f"# {cfg.name}: Burns et al.'s findings", "",
        "Each finding's verdict by its rule (below), the number the rule looks at, and the best method:", "",
        *findings.at_a_glance(rows, params, cfg.confidence_methods),
        *findings.findings(rows, params, cfg.confidence_methods)]) + "\n")


@register_runner("sweeps_per_task", OPEN_SECTIONS)
def run_sweeps_per_task(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = (), *,
                        dry_run: bool = False) -> list[sweep.Run]:
    """Applies overrides; for each seed, each task's sweep (or its plan, with dry_run), then the report."""
    cfg = apply_overrides(cfg, overrides, OPEN_SECTIONS)
    validate(cfg)
    runs = []
    for seed in cfg.seeds:  # seed-major: a stopped run leaves whole seeds of every task
        for task in cfg.tasks:
            runs += sweep.run_sweep(task_sweep(cfg, task, seed), dry_run=dry_run)
            if not dry_run and distributed.is_main():
                write_report(cfg)
                out = pathlib.Path(cfg.output_dir)
                print(f"\n{out / 'tables.md'}, {out / 'findings.md'} and the plots updated (task {task}, seed {seed})",
                      flush=True)
    return runs
