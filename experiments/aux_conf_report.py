"""Tables and plots of docs/aux_conf.md from the stage records of aux_conf_diagnosis.py runs.

    python experiments/aux_conf_report.py /tmp/aux_conf/main                  # PGR per student and seed
    python experiments/aux_conf_report.py /tmp/aux_conf/main --curves         # test accuracy at each evaluation
    python experiments/aux_conf_report.py /tmp/aux_conf/main --plot docs/aux_conf_agreement.png \\
        --students xent,aux_conf,aux_conf_ramp100
    python experiments/aux_conf_report.py results/aux_conf_ladder --ladder   # every pair of a ladder
    python experiments/aux_conf_report.py results/aux_conf_ladder --weak_labels   # what the weak labels hold

It reads the stage records (<dir>/seed_*/{weak,ceiling,student_*}.json of a run, or a sweep's), so
students finished before a run ends count.
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import statistics
import sys

import numpy as np

from w2s.results import metrics
from w2s.checkpoint import read_json
from w2s.sweeps.results_table import ResultsTable

WEAKEST = "minilm-embeddings"  # the offline ladder's weakest rung: its pairs have the largest gaps


def load_runs(results_dir: pathlib.Path) -> dict[int, dict]:
    """seed -> {"order": the config's students, "weak": acc, "ceiling": acc, "students": {name: record}}
    for seeds whose weak and ceiling stages are done: from a run's folder (w2s run) or a sweep's
    (w2s sweep, its first model the weak, its last the strong)."""
    runs = {}
    if (results_dir / "sweep_config.json").exists():  # one task, one pair: <weak>_to_<strong>
        seed_dirs, order = sorted(results_dir.glob("*/seed_*")), []
        stage_files = lambda d: next(  # noqa: E731
            (d / weak / "weak.json", d / strong / "ceiling.json", {p.stem: p for p in pair.glob("*.json")})
            for pair in d.glob("*_to_*") for weak, strong in [pair.name.split("_to_")])
    else:
        seed_dirs = sorted(results_dir.glob("seed_*"))
        order = None
        stage_files = lambda d: (d / "weak.json", d / "ceiling.json",  # noqa: E731
                                 {p.stem.removeprefix("student_"): p for p in d.glob("student_*.json")})
    for seed_dir in seed_dirs:
        if (results_dir / "sweep_config.json").exists() and not any(seed_dir.glob("*_to_*")):
            continue
        weak_file, ceiling_file, student_files = stage_files(seed_dir)
        if not weak_file.exists() or not ceiling_file.exists():
            continue
        runs[int(seed_dir.name.removeprefix("seed_"))] = {  # a sweep's students in the order they trained
            "order": order or list(read_json(seed_dir / "config.json")["losses"]) if not order and (
                seed_dir / "config.json").exists() else sorted(student_files, key=lambda n: student_files[n].stat().st_mtime),
            "weak": read_json(weak_file)["test_accuracy"],
            "weak_labels": read_json(weak_file)["weak_label_accuracy"],  # on split B, the students' data
            "ceiling": read_json(ceiling_file)["test_accuracy"],
            "students": {name: read_json(path) for name, path in sorted(student_files.items())},
        }
    return runs


def _mean_std(values: list[float]) -> str:
    """mean ± sample standard deviation (ddof=1)."""
    if len(values) < 2:
        return f"{values[0]:+.2f}" if values else "-"
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}"  # statistics.stdev: ddof=1


def _mean_ci(values: list[float]) -> str:
    """mean [95% percentile-bootstrap interval of the mean] (metrics.bootstrap_ci: with 3 seeds it
    cannot be wider than their range)."""
    if len(values) < 2:
        return f"{values[0]:+.2f}" if values else "-"
    mean, low, high = metrics.bootstrap_ci([values])
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def student_names(runs: dict[int, dict]) -> list[str]:
    """The students some seed has finished, in the order of its config."""
    names: dict[str, None] = {}
    for run in runs.values():
        for name in run["order"]:
            if name in run["students"]:
                names.setdefault(name)
    return list(names)


def pgr_table(runs: dict[int, dict], baseline: str = "xent") -> str:
    """Each student: PGR (mean ± std over seeds, and per seed), its test accuracy's difference from
    the `baseline` student's on the same seed (meaningful also where the gap is too small for PGR),
    its final test accuracies, and how many seeds ended below chance."""
    seeds = sorted(runs)
    lines = ["weak acc:    " + "  ".join(f"s{s} {runs[s]['weak']:.3f}" for s in seeds),
             "ceiling acc: " + "  ".join(f"s{s} {runs[s]['ceiling']:.3f}" for s in seeds),
             "weak labels' accuracy on B: " + "  ".join(f"s{s} {runs[s]['weak_labels']:.3f}" for s in seeds), "",
             f"| student | PGR mean [95% CI] | PGR per seed | PGR of seed means "
             f"| acc - {baseline} acc, mean ± std (per seed) | test acc per seed | below 0.5 |",
             "|---|---|---|---|---|---|---|"]
    for name in student_names(runs):
        done = [s for s in seeds if name in runs[s]["students"]]
        accs = [runs[s]["students"][name]["test_accuracy"] for s in done]
        pgrs = [metrics.pgr(runs[s]["weak"], a, runs[s]["ceiling"]) for s, a in zip(done, accs)]
        of_means = metrics.pgr(*(statistics.mean(v) for v in (
            [runs[s]["weak"] for s in done], accs, [runs[s]["ceiling"] for s in done])))
        paired = [(s, a - runs[s]["students"][baseline]["test_accuracy"]) for s, a in zip(done, accs)
                  if baseline in runs[s]["students"]]
        lines.append(f"| {name} | {_mean_ci(pgrs)} | " + ", ".join(f"s{s} {p:+.2f}" for s, p in zip(done, pgrs))
                     + f" | {of_means:+.2f} | {_mean_std([d * 100 for _, d in paired])} pt ("
                     + ", ".join(f"{d * 100:+.1f}" for _, d in paired) + ") | "
                     + ", ".join(f"{a:.3f}" for a in accs) + f" | {sum(a < 0.5 for a in accs)}/{len(accs)} |")
    return "\n".join(lines)


def _pairs_mean_ci(cells: dict[tuple, list[float]]) -> str:
    """Mean over pairs of each pair's mean over seeds, in points, with a 95% percentile bootstrap
    interval that resamples the pairs (the pairs, not the seeds, are the units compared: one cell
    of metrics.bootstrap_ci holding the pairs' means)."""
    means = [100 * statistics.mean(v) for v in cells.values()]
    if len(means) < 2:
        return f"{means[0]:+.1f}" if means else "-"
    mean, low, high = metrics.bootstrap_ci([means])
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def ladder_table(sweep_dir: pathlib.Path, baseline: str = "xent") -> str:
    """Per task of a per-task sweep (experiments/aux_conf_ladder.py) and method: the test accuracy's
    difference from `baseline` on the same pair and seed, and how far the student's hardened labels
    of its training examples beat the weak labels there (hard_agree_truth - the weak labels'
    accuracy), over the pairs whose weak model is the weakest rung (the largest gaps) and the rest."""
    lines = []
    for table in sorted(sweep_dir.glob("*/results.sqlite")):
        rows = ResultsTable(table).rows()
        base = {(r["weak"], r["strong"], r["seed"]): r["student_acc"] for r in rows if r["method"] == baseline}
        groups = {"weak = " + WEAKEST: lambda r: r["weak"] == WEAKEST, "other pairs": lambda r: r["weak"] != WEAKEST}
        lines += [f"### {table.parent.name} (seeds {', '.join(map(str, sorted({r['seed'] for r in rows})))})", "",
                  "| method | " + " | ".join(f"{g}: acc − {baseline} (pt) | {g}: hardened − weak labels (pt)"
                                             for g in groups) + " |",
                  "|---|" + "---|---|" * len(groups)]
        for method in dict.fromkeys(r["method"] for r in rows if "student" in r["details"]):
            cells = []
            for keep in groups.values():
                gain, hard = collections.defaultdict(list), collections.defaultdict(list)
                for r in rows:
                    key = (r["weak"], r["strong"], r["seed"])
                    if r["method"] != method or not keep(r) or key not in base:
                        continue
                    gain[key[:2]].append(r["student_acc"] - base[key])
                    student = r["details"]["student"]
                    if "hard_agree_truth" in student:
                        hard[key[:2]].append(student["hard_agree_truth"] - r["details"]["weak_label_accuracy"])
                cells += [_pairs_mean_ci(gain) + f" ({len(gain)} pairs)", _pairs_mean_ci(hard)]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def weak_label_table(sweep_dir: pathlib.Path) -> str:
    """Per task, weak rung and seed of a per-task sweep: how far its soft labels of split B leave 0.5,
    and their accuracy by argmax against cut at their own class-1 share (the balanced threshold the
    confidence loss applies to the student): what the labels' order holds beyond their argmax."""
    lines = ["| task | weak rung | seed | median abs(p - 0.5) | argmax accuracy | cut at their class share |",
             "|---|---|---|---|---|---|"]
    for path in sorted(sweep_dir.glob("*/*/seed_*/*/weak_labels.npz")):
        data = np.load(path)
        probs = data["probs"]
        # The labels scored as a student's predictions of themselves: argmax, and hardened as the loss hardens.
        agree = metrics.agreement(np.log(probs), probs, data["labels"])
        lines.append(f"| {path.parts[-4]} | {path.parent.name} | {path.parts[-3].removeprefix('seed_')} "
                     f"| {np.median(np.abs(probs[:, 1] - 0.5)):.3f} | {agree['agree_truth']:.3f} "
                     f"| {agree['hard_agree_truth']:.3f} |")
    return "\n".join(lines)


def evaluations(record: dict) -> list[dict]:
    """A student's evaluations in step order, the final one (the record itself) last."""
    during = [r for r in record["history"] if "test_accuracy" in r]
    last_step = max(r["step"] for r in record["history"])
    return during + [{**{k: v for k, v in record.items() if k != "history"}, "step": last_step}]


def curves_table(runs: dict[int, dict], key: str = "test_accuracy") -> str:
    """`key` at each evaluation step, per student: the seeds' values."""
    lines = []
    for name in student_names(runs):
        done = [s for s in sorted(runs) if name in runs[s]["students"]]
        per_seed = {s: evaluations(runs[s]["students"][name]) for s in done}
        steps = [r["step"] for r in per_seed[done[0]]]
        if not lines:
            lines = [f"| student | {key} at step " + " | ".join(str(t) for t in steps) + " |",
                     "|---|" + "---|" * len(steps)]
        cells = [" / ".join(f"{per_seed[s][i][key]:.3f}" for s in done) for i in range(len(steps))]
        lines.append(f"| {name} (seeds {','.join(map(str, done))}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_agreement(runs: dict[int, dict], students: list[str], path: pathlib.Path) -> None:
    """Per seed (columns) and student (lines): the hardened labels' agreement with the weak labels
    (dashed) and with the ground truth (solid) of the training examples, against step; dotted, the
    weak labels' own agreement with the ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted(runs)
    fig, axes = plt.subplots(1, len(seeds), figsize=(3.2 * len(seeds), 2.8), sharey=True, squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        for i, name in enumerate(n for n in students if n in runs[seed]["students"]):
            evals = evaluations(runs[seed]["students"][name])
            steps = [r["step"] for r in evals]
            color = f"C{i}"
            ax.plot(steps, [r["hard_agree_truth"] for r in evals], "-o", color=color, ms=3, label=f"{name}: truth")
            ax.plot(steps, [r["hard_agree_weak"] for r in evals], "--", color=color, label=f"{name}: weak")
        ax.axhline(0.5, color="grey", lw=0.5)
        # what the hardened labels must beat for the confidence term to help: the weak labels' accuracy
        ax.axhline(runs[seed]["weak_labels"], color="black", ls=":", lw=1, label="weak labels: truth")
        ax.set_title(f"seed {seed}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("agreement of hardened labels", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=pathlib.Path)
    parser.add_argument("--curves", action="store_true", help="test accuracy (and agreement) at each evaluation")
    parser.add_argument("--plot", type=pathlib.Path, help="write the agreement plot here")
    parser.add_argument("--students", default="xent,aux_conf", help="students of the plot, comma-separated")
    parser.add_argument("--seeds", help="only these seeds, comma-separated (default: all finished)")
    parser.add_argument("--ladder", action="store_true",
                        help="results_dir is a per-task sweep: every method against xent over its pairs")
    parser.add_argument("--weak_labels", action="store_true",
                        help="results_dir is a per-task sweep: each weak rung's labels, argmax against a balanced cut")
    args = parser.parse_args(argv)
    if args.ladder or args.weak_labels:
        print(ladder_table(args.results_dir) if args.ladder else weak_label_table(args.results_dir))
        return 0
    runs = load_runs(args.results_dir)
    if args.seeds:
        runs = {s: run for s, run in runs.items() if s in {int(x) for x in args.seeds.split(",")}}
    if not runs:
        print(f"{args.results_dir}: no seed with finished weak and ceiling stages", file=sys.stderr)
        return 1
    print(pgr_table(runs))
    if args.curves:
        for key in ("test_accuracy", "hard_agree_truth", "hard_agree_weak"):
            print("\n" + curves_table(runs, key))
    if args.plot:
        plot_agreement(runs, args.students.split(","), args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
