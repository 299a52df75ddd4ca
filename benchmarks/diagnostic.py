"""The diagnostic-queries comparison as tables: per task and supervisor, each arm's label
efficiency (w2s.active_learning.active.label_efficiency: the first query count whose mean PGR over seeds reaches
95% of the full-answers student's), its accuracy at a few query counts, and the accuracy of the
student with a mistake model (w2s.active_learning.mistakes) on the same answers.

    python experiments/diagnostic.py --task wordnet_living --out /work/runs/diagnostic   # the runs
    python benchmarks/diagnostic.py /work/runs/diagnostic [--plots docs] [--json PATH]

PGR is only meaningful where the supervisor is worse than the ceiling; where it is not (a
systematic supervisor can beat a linear probe's ceiling) the table says so, and the count to
compare is the first query count whose mean accuracy is within 0.01 of the full-answers student's.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil

import numpy as np

from w2s.active_learning.active import curves, label_efficiency, load_active_results, plot_active
from w2s.checkpoint import write_json_atomic


def _first(queries: list[int], values: list[float], target: float) -> int | None:
    return next((q for q, v in zip(queries, values) if v >= target), None)


def summary(results: list[dict], fraction: float = 0.95) -> dict:
    """Per arm: first reach of the PGR target, of the accuracy target, and mean accuracies."""
    efficiency = label_efficiency(results, fraction)
    first = {(r["seed"]): r["accuracy"] for r in results}.values()
    mean = {k: float(np.mean([a[k] for a in first])) for k in ("weak", "ceiling", "student_xent", "student_mistakes")}
    out = {"accuracy": mean, "pgr_meaningful": mean["weak"] < mean["ceiling"], "arms": {}}
    for strategy, points in curves(results).items():
        queries = sorted(points)
        acc = [float(np.mean(points[q]["test_accuracy"])) for q in queries]
        arm = [r for r in results if r["strategy"] == strategy]
        mistake = {q: float(np.mean([p["mistake_test_accuracy"] for r in arm for p in r["curve"] if p["queries"] == q]))
                   for q in queries}
        built = float(np.mean([r["curve"][-1]["constructed_queries"] / r["curve"][-1]["queries"] for r in arm]))
        out["arms"][strategy] = {
            "seeds": len(arm), "first_reach_pgr": efficiency[strategy]["first_reach"],
            "first_reach_accuracy": _first(queries, acc, mean["student_xent"] - 0.01),
            "accuracy": dict(zip(queries, acc)), "mistake_accuracy": mistake, "constructed_share": built,
        }
    return out


def _fmt(q: int | None) -> str:
    return "not reached" if q is None else str(q)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=pathlib.Path, help="experiments/diagnostic.py's --out")
    parser.add_argument("--plots", type=pathlib.Path, help="copy each comparison's plot here")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    out = {}
    for folder in sorted({p.parent for p in args.runs.glob("*/*/seed_*")}):
        results = load_active_results(folder)
        s = summary(results)
        out[str(folder)] = s
        a = s["accuracy"]
        task, supervisor = folder.parent.name, folder.name
        print(f"\n{task}, {supervisor} supervisor ({results[0]['supervisor']}); pool {results[0]['pool_size']}; "
              f"accuracy: supervisor {a['weak']:.3f}, ceiling {a['ceiling']:.3f}, students on all answers: "
              f"plain {a['student_xent']:.3f}, mistake model {a['student_mistakes']:.3f}"
              + ("" if s["pgr_meaningful"] else "; supervisor >= ceiling: PGR not meaningful"))
        counts = sorted(next(iter(s["arms"].values()))["accuracy"])
        shown = [counts[0], counts[len(counts) // 3], counts[2 * len(counts) // 3], counts[-1]]
        print("| arm | seeds | first reach 95% PGR | first within 0.01 of full acc | "
              + " | ".join(f"acc@{q}" for q in shown) + f" | mistake-model acc@{shown[-1]} | constructed share |")
        print("|---" * (7 + len(shown) - 1) + "|")
        for strategy, arm in s["arms"].items():
            print(f"| {strategy} | {arm['seeds']} | {_fmt(arm['first_reach_pgr'])} | "
                  f"{_fmt(arm['first_reach_accuracy'])} | "
                  + " | ".join(f"{arm['accuracy'][q]:.3f}" for q in shown)
                  + f" | {arm['mistake_accuracy'][shown[-1]]:.3f} | {arm['constructed_share']:.0%} |")
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            shutil.copy(plot_active(folder), args.plots / f"diagnostic_{task}_{supervisor}.png")
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
