"""The diagnostic-queries comparison as tables: per task and supervisor, each arm's label
efficiency (w2s.active_learning.active.label_efficiency: the first query count whose mean PGR over seeds reaches
95% of the full-answers student's), its accuracy at every query count and that of the student
with a mistake model (w2s.active_learning.mistakes) on the same answers, with 95% bootstrap
intervals over seeds, and each arm's paired difference from random, typical and bald (where run);
an arm that also asks about constructed cases (`<strategy>+constructed`) from its pool arm too.

    python experiments/diagnostic.py --task wordnet_living --out /work/runs/diagnostic   # the runs
    python benchmarks/diagnostic.py /work/runs/diagnostic [--plots docs] [--json PATH]
    python benchmarks/diagnostic.py results/al_diagnostic    # a finetuning-mode folder (experiments/active_learning.py)

A linear-probe folder holds task/supervisor/seed_* comparisons and a student with a mistake model
beside each plain one; a finetuning folder is one comparison (seed_* directly), plain students only.

PGR is only meaningful where the supervisor is worse than the ceiling; where it is not (a
systematic supervisor can beat a linear probe's ceiling) the table says so, and the count to
compare is the first query count whose mean accuracy is within 0.01 of the full-answers student's.
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from w2s.active_learning import constructed
from w2s.active_learning.active import curves, label_efficiency, load_active_results
from w2s.checkpoint import read_json, read_npz, write_json_atomic
from w2s.results import metrics, plot


def _first(queries: list[int], values: list[float], target: float) -> int | None:
    return next((q for q, v in zip(queries, values) if v >= target), None)


def interval(values: list[float]) -> list[float]:
    """[mean, low, high]: the mean over seeds and its 95% bootstrap interval (with 3 seeds it is
    never wider than their range)."""
    return list(metrics.bootstrap_ci([values]))


def _by_seed(arm: list[dict], key: str) -> dict[int, dict[int, float]]:
    return {r["seed"]: {p["queries"]: p[key] for p in r["curve"]} for r in arm}


BASELINES = ("random", "typical", "bald")  # the existing strategies each arm is compared with, where run


def summary(results: list[dict], fraction: float = 0.95, baselines: tuple[str, ...] = BASELINES) -> dict:
    """Per arm: first reach of the PGR target (mean curve, and per seed), of the accuracy target,
    accuracies with intervals over seeds, and paired differences from each baseline arm (the arms of
    a seed share its split, seed set and supervisor, so a difference is taken seed by seed); a
    baseline arm only from the baselines before it (typical - random, not also random - typical)."""
    efficiency = label_efficiency(results, fraction)
    first = {r["seed"]: r["accuracy"] for r in results}
    keys = [k for k in ("weak", "ceiling", "student_xent", "student_mistakes") if k in results[0]["accuracy"]]
    spread = {k: interval([a[k] for a in first.values()]) for k in keys}
    mean = {k: v[0] for k, v in spread.items()}
    full_pgr = next(iter(efficiency.values()))["full_weak_pgr"]
    # 95% of a PGR is a target only where the full-answers student gains on its supervisor at all.
    out = {"accuracy": mean, "accuracy_interval": spread, "pgr_meaningful": mean["weak"] < mean["ceiling"],
           "pgr_target_meaningful": bool(mean["weak"] < mean["ceiling"] and full_pgr > 0), "full_pgr": full_pgr,
           "seeds": sorted(first), "target_pgr": fraction * full_pgr, "arms": {}}
    arms = {r["strategy"] for r in results}
    students = {k: key for k, key in (("plain", "test_accuracy"), ("mistake model", "mistake_test_accuracy"))
                if key in results[0]["curve"][0]}
    by_seed = {(s, k): _by_seed([r for r in results if r["strategy"] == s], key) for s in arms
               for k, key in students.items()}
    for strategy, points in curves(results).items():
        queries = sorted(points)
        acc = [float(np.mean(points[q]["test_accuracy"])) for q in queries]
        arm = [r for r in results if r["strategy"] == strategy]
        mistake = by_seed.get((strategy, "mistake model"), {})
        built = float(np.mean([r["curve"][-1].get("constructed_queries", 0) / r["curve"][-1]["queries"] for r in arm]))
        differences = {}  # baseline -> student -> queries -> interval
        pool_arm, asks_constructed = constructed.arm(strategy)
        for base in (*baselines, pool_arm) if asks_constructed else baselines:  # constructed: against its pool arm too
            if base == strategy:
                break
            if base in arms and base not in differences:
                differences[base] = {}
                for student in students:
                    mine, theirs = by_seed[strategy, student], by_seed[base, student]
                    seeds = sorted(set(mine) & set(theirs))
                    differences[base][student] = {q: interval([mine[s][q] - theirs[s][q] for s in seeds])
                                                  for q in queries}
        out["arms"][strategy] = {
            "seeds": len(arm), "first_reach_pgr": efficiency[strategy]["first_reach"],
            "first_reach_pgr_per_seed": efficiency[strategy]["per_seed"],
            "first_reach_accuracy": _first(queries, acc, mean["student_xent"] - 0.01),
            "accuracy": {q: interval(points[q]["test_accuracy"]) for q in queries},
            "pgr": {q: interval(points[q]["pgr"]) for q in queries},
            "mistake_accuracy": {q: interval([m[q] for m in mistake.values()]) for q in queries} if mistake else {},
            "difference": differences, "constructed_share": built,
        }
    return out


def _fmt(q: int | None) -> str:
    return "not reached" if q is None else str(q)


def _ci(cell: list[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{cell[0]:{sign}.3f} [{cell[1]:{sign}.3f}, {cell[2]:{sign}.3f}]"


def format_summary(s: dict, title: str) -> str:
    a = s["accuracy_interval"]
    names = {"weak": "supervisor", "ceiling": "ceiling", "student_xent": "student, plain, all answers",
             "student_mistakes": "student, mistake model, all answers"}
    lines = [f"{title}; seeds {s['seeds']}; mean [95% bootstrap interval] over seeds", "",
             "| " + " | ".join(names[k] for k in a) + " |", "|---" * len(a) + "|",
             "| " + " | ".join(_ci(v) for v in a.values()) + " |", ""]
    if not s["pgr_meaningful"]:
        lines += ["supervisor >= ceiling: PGR not meaningful; read the accuracy columns.", ""]
    elif not s["pgr_target_meaningful"]:
        lines += [f"the full-answers student's mean PGR is {s['full_pgr']:.2f} (not above its supervisor): 95% of it "
                  "is no target, so first reach is not meaningful; read the accuracy columns.", ""]
    arms = s["arms"]
    counts = sorted(next(iter(arms.values()))["accuracy"])
    lines += [f"First reach: the first query count whose mean PGR over seeds reaches 95% of the full-answers "
              f"plain student's (target PGR {s['target_pgr']:.3f}); per seed in brackets. First within 0.01: the "
              "first count whose mean accuracy is within 0.01 of the full-answers plain student's.", "",
              "| arm | first reach 95% PGR | first within 0.01 of full acc | "
              + " | ".join(f"acc@{q}" for q in counts) + " | constructed share |",
              "|---" * (4 + len(counts)) + "|"]
    for strategy, arm in arms.items():
        per_seed = ", ".join(_fmt(q) if q is not None else "-" for _, q in sorted(arm["first_reach_pgr_per_seed"].items()))
        reach = f"{_fmt(arm['first_reach_pgr'])} ({per_seed})" if s["pgr_target_meaningful"] else "n/a"
        lines.append(f"| {strategy} | {reach} | {_fmt(arm['first_reach_accuracy'])} | "
                     + " | ".join(_ci(arm["accuracy"][q]) for q in counts) + f" | {arm['constructed_share']:.0%} |")
    if s["pgr_meaningful"]:
        lines += ["", "PGR of the plain student:", "",
                  "| arm | " + " | ".join(f"PGR@{q}" for q in counts) + " |", "|---" * (1 + len(counts)) + "|"]
        for strategy, arm in arms.items():
            lines.append(f"| {strategy} | " + " | ".join(_ci(arm["pgr"][q], signed=True) for q in counts) + " |")
    if any(arm["mistake_accuracy"] for arm in arms.values()):
        lines += ["", "The student with a mistake model on the same answers (its true-label head):", "",
                  "| arm | " + " | ".join(f"acc@{q}" for q in counts) + " |", "|---" * (1 + len(counts)) + "|"]
        for strategy, arm in arms.items():
            lines.append(f"| {strategy} | " + " | ".join(_ci(arm["mistake_accuracy"][q]) for q in counts) + " |")
    bases = sorted({b for arm in arms.values() for b in arm["difference"]})
    lines += ["", "Paired accuracy difference from each baseline arm (same seeds), mean [95% bootstrap interval]:", "",
              "| arm | minus | student | " + " | ".join(f"@{q}" for q in counts[1:]) + " |",
              "|---" * (3 + len(counts) - 1) + "|"]
    for strategy, arm in arms.items():
        for base in bases:
            for student, cells in arm["difference"].get(base, {}).items():
                lines.append(f"| {strategy} | {base} | {student} | "
                             + " | ".join(_ci(cells[q], signed=True) for q in counts[1:]) + " |")
    return "\n".join(lines)


def plot_comparison(s: dict, title: str, path: pathlib.Path) -> pathlib.Path:
    """Test accuracy against supervisor queries per arm (mean and 95% interval over seeds) of the
    plain student, with the supervisor, the ceiling and the student on all answers as lines; beside
    it the student with a mistake model (linear-probe folders) or else the plain student's PGR."""
    fig = plot.figure(12.0, 4.5)
    axes = fig.subplots(1, 2)
    a = s["accuracy"]
    mistakes = any(arm["mistake_accuracy"] for arm in s["arms"].values())
    panels = [("accuracy", "student_xent", "plain student", "test accuracy"),
              ("mistake_accuracy", "student_mistakes", "student with a mistake model", "test accuracy")
              if mistakes else ("pgr", None, "plain student's PGR", "PGR")]
    for ax, (key, full, name, measure) in zip(axes, panels):
        for i, (strategy, arm) in enumerate(sorted(s["arms"].items())):
            queries = sorted(arm[key])
            mean, low, high = (np.array([arm[key][q][j] for q in queries]) for j in range(3))
            ax.errorbar(queries, mean, yerr=[mean - low, high - mean], color=plot.color(i), marker="o", ms=4,
                        capsize=2, label=strategy)
        lines = ((("supervisor", "-.", a["weak"]), ("strong ceiling", "--", a["ceiling"]),
                  ("this student on all answers", ":", a[full])) if full else
                 (("supervisor", "-.", 0.0), ("this student on all answers", ":", s["full_pgr"])))
        for label, style, y in lines:
            ax.axhline(y, color="gray" if style != "--" else "black", ls=style, lw=1, label=label)
        ax.set_title(name)
        ax.set_xlabel("supervisor queries")
        ax.set_ylabel(measure)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside center right")
    fig.suptitle(f"{title} (mean and 95% interval over seeds {s['seeds']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def comparisons(runs: pathlib.Path) -> list[tuple[pathlib.Path, str, str, list[dict]]]:
    """(folder, task, name, its arms' results) of each comparison under `runs`: a finetuning folder
    (seed_* directly) is one (named "finetuned", and by its supervisor where that is not the weak
    model), a linear-probe folder one per task/supervisor (named by its supervisor)."""
    if any(runs.glob("seed_*")):
        results = load_active_results(runs)
        supervisor = pathlib.Path(results[0]["active"]["supervisor"]).stem  # a name, or a labels file's
        return [(runs, results[0]["task"], "finetuned" if supervisor == "weak" else f"finetuned_{supervisor}",
                 results)]
    return [(folder, folder.parent.name, folder.name, load_active_results(folder))
            for folder in sorted({p.parent for p in runs.glob("*/*/seed_*")})]


def constructed_cases(folder: pathlib.Path) -> dict | None:
    """A finetuning folder's constructed cases, per kind over seeds: how many were built, the share
    whose weak-model answer differs from its source's (a contrast case; sources only for variants),
    and the share of each +constructed arm's bought answers that were of this kind. None where no
    seed has constructed.json."""
    kinds: dict[str, dict] = {}
    for path in sorted(folder.glob("seed_*/active/constructed.json")):
        record = read_json(path)
        weak = np.asarray(record.get("weak_answers", []))
        sources = read_npz(path.parent.parent / "weak_labels.npz", ("probs",))
        pool = 0 if sources is None else len(sources["probs"])
        bought = {arm.parent.name: {int(json.loads(line)["index"]) for line in arm.read_text().splitlines()}
                  for arm in sorted(path.parent.glob(f"*{constructed.CONSTRUCTED}/queries.jsonl"))}
        for i, case in enumerate(record["cases"]):
            cell = kinds.setdefault(case["kind"], {"built": 0, "flipped": [], "bought": {}})
            cell["built"] += 1
            if len(weak) and sources is not None and case.get("source") is not None:
                cell["flipped"].append(bool(weak[i].argmax() != sources["probs"][case["source"]].argmax()))
            for arm, indices in bought.items():
                cell["bought"].setdefault(arm, []).append(pool + i in indices)
    if not kinds:
        return None
    return {kind: {"built": c["built"], "weak_flipped": float(np.mean(c["flipped"])) if c["flipped"] else None,
                   "bought": {arm: int(np.sum(b)) for arm, b in c["bought"].items()}} for kind, c in kinds.items()}


def format_constructed(cases: dict) -> str:
    arms = sorted({arm for c in cases.values() for arm in c["bought"]})
    lines = ["Constructed cases over seeds: built, the share the weak model answers otherwise than their source, "
             "and how many each arm bought:", "",
             "| kind | built | weak answer flipped | " + " | ".join(f"bought by {a}" for a in arms) + " |",
             "|---" * (3 + len(arms)) + "|"]
    for kind, c in sorted(cases.items()):
        flipped = "-" if c["weak_flipped"] is None else f"{c['weak_flipped']:.2f}"
        bought = " | ".join(str(c["bought"].get(a, 0)) for a in arms)
        lines.append(f"| {kind} | {c['built']} | {flipped} | {bought} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=pathlib.Path,
                        help="experiments/diagnostic.py's --out, or an experiments/active_learning.py output_dir")
    parser.add_argument("--plots", type=pathlib.Path, help="write each comparison's plot here")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    out = {}
    for folder, task, name, results in comparisons(args.runs):
        s = summary(results)
        out[str(folder)] = s
        print(f"\n### {task}, {'students finetuned' if name.startswith('finetuned') else f'{name} supervisor'}\n")
        print(format_summary(s, f"{results[0]['supervisor']}; pool {results[0]['pool_size']}"))
        if (cases := constructed_cases(folder)) is not None:
            s["constructed_cases"] = cases
            print("\n" + format_constructed(cases))
        if args.plots:
            supervisor = results[0]["supervisor"].split(" (")[0]  # without the labels file's path
            print("\nwrote", plot_comparison(s, f"{task}, {supervisor}",
                                             args.plots / f"diagnostic_{task}_{name}.png"))
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
