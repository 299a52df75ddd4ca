"""Chooses the mistake model's regularisation (w2s.active_learning.mistakes.MistakeSettings) on
held-out ground truth of split A, never the test split, before the diagnostic comparison runs.

Per seed, split A is halved: A1 trains the weak supervisor (a plain head on the weak model's
features, as in experiments/diagnostic.py, which trains it on all of A), A2 is held out. The
students are heads on the strong model's features trained on the supervisor's answers to the
first 100, 400, 1300 and 2000 cases of split B (a fixed random order per seed), as the
comparison's rounds and its full-answers student are; each is scored by its true-label head's
accuracy on A2's ground truth, against the trained weak supervisor and the systematic one. The
mistake-model setting chosen is the one with the highest mean over seeds, sizes and both
supervisors (the first in the grid's order among equals). Plain heads at each l2 of the grid are
scored beside them, so a gain can be told from the true-label head's l2 alone.

    python experiments/mistake_settings.py --task wordnet_living --out /work/runs/diag
"""
from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from w2s.active_learning import mistakes  # noqa: E402
from w2s.checkpoint import write_json_atomic  # noqa: E402
import diagnostic as comparison  # noqa: E402  (experiments/diagnostic.py)

SIZES = (100, 400, 1300, 2000)
GRID = {"l2": (1e-3, 1e-2, 1e-1), "flip_l2": (1e-3, 1e-2, 1e-1, 1.0, 10.0), "warm_start": (False, True)}


def students() -> dict[str, tuple[bool, mistakes.MistakeSettings]]:
    """Row label -> (with a transition, settings): plain heads at each l2 of the grid (the one the
    comparison uses, mistakes.PLAIN, first), then the mistake models of the grid."""
    plain = {"plain head": (False, mistakes.PLAIN)}
    plain |= {f"plain head, l2 {l2:g}": (False, mistakes.MistakeSettings(l2=l2)) for l2 in GRID["l2"]
              if l2 != mistakes.PLAIN.l2}
    return plain | {f"l2 {l2:g}, flip_l2 {f:g}, warm {'yes' if w else 'no'}":
                    (True, mistakes.MistakeSettings(l2=l2, flip_l2=f, warm_start=w))
                    for l2, f, w in itertools.product(*GRID.values())}


def held_out(task: str, seed: int, out: pathlib.Path, task_seed: int) -> dict:
    """{supervisor: {"supervisor": its A2 accuracy, label: {size: A2 accuracy of the student}}}."""
    s = comparison.load_seed(task, seed, out, task_seed)
    order = np.random.default_rng([seed, 11]).permutation(len(s.labels["a"]))
    a1, a2 = order[: len(order) // 2], order[len(order) // 2:]
    weak = comparison.weak_answers(s.weak["a"][a1], s.labels["a"][a1], {"b": s.weak["b"], "a": s.weak["a"]}, seed)
    rule, _ = comparison.rule_answers(task, s, ("b", "a"))
    scale = mistakes.standardiser(s.strong["b"])
    pool = np.random.default_rng([seed, 12]).permutation(len(s.labels["b"]))
    x_test, y_test = scale(s.strong["a"][a2]), s.labels["a"][a2]
    out_ = {}
    for name, answers in (("weak", weak), ("systematic", rule)):
        row = {"supervisor": float((answers["a"][a2].argmax(1) == y_test).mean())}
        for key, (flips, settings) in students().items():
            row[key] = {}
            for size in SIZES:
                rows = pool[:size]
                params = mistakes.fit(scale(s.strong["b"][rows]), answers["b"][rows], 1,
                                      np.random.default_rng([seed, 7]), flips=flips, bootstrap=False,
                                      settings=settings)
                truth = mistakes.predict(params, x_test).truth[0]
                row[key][size] = float((truth.argmax(1) == y_test).mean())
        out_[name] = row
        print(f"seed {seed} {name}: supervisor {row['supervisor']:.3f}; plain head "
              + " ".join(f"{v:.3f}" for v in row["plain head"].values()), flush=True)
    return out_


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(comparison.TASKS), default="wordnet_living")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--task_seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/diagnostic"))
    args = parser.parse_args(argv)
    out = args.out / args.task if args.out.name != args.task else args.out
    path = out / "mistake_settings.json"
    runs = {str(seed): held_out(args.task, seed, out, args.task_seed) for seed in args.seeds}
    write_json_atomic(path, runs)
    sups = ("weak", "systematic")
    print(f"\nHeld-out accuracy on A2 (mean over seeds {args.seeds}), {args.task}; students trained on the "
          f"supervisor's answers to {', '.join(map(str, SIZES))} cases of B")
    print("| student | " + " | ".join(f"{sup} @{n}" for sup in sups for n in SIZES) + " | mean |")
    print("|---" * (2 + len(sups) * len(SIZES)) + "|")
    means = {}
    for key in students():
        cells = [float(np.mean([runs[str(seed)][sup][key][n] for seed in args.seeds])) for sup in sups for n in SIZES]
        means[key] = float(np.mean(cells))
        print(f"| {key} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {means[key]:.4f} |")
    sup_acc = {sup: float(np.mean([runs[str(seed)][sup]["supervisor"] for seed in args.seeds])) for sup in sups}
    print("supervisors on A2: " + ", ".join(f"{k} {v:.3f}" for k, v in sup_acc.items()))
    best = max((k for k, (flips, _) in students().items() if flips), key=means.get)
    print(f"chosen: {best} (mean {means[best]:.4f}; plain head {means['plain head']:.4f}); wrote {path}")
    return runs


if __name__ == "__main__":
    main()
