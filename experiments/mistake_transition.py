"""Does the mistake ensemble know where its supervisor errs? For one seed, the ensemble that the
diagnostic strategy fits (w2s.active_learning.mistakes, 4 members, default settings; and, to
compare, a transition 100 times less regularised) is fit to the supervisor's answers on the first
400 and 1300 cases of split B (a fixed random order); on the rest of B it reports the spread of
the ensemble's expected supervisor accuracy, the factor the strategy multiplies BALD by, and its
AUC for telling the cases the supervisor answers right from those it answers wrong (0.5: none).
Split B's ground truth is read only to score; no test case is used.

    python experiments/mistake_transition.py --task wordnet_living --out /work/runs/diag
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from w2s.active_learning import mistakes  # noqa: E402
import diagnostic as comparison  # noqa: E402  (experiments/diagnostic.py)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half."""
    pos, neg = score[positive], score[~positive]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(comparison.TASKS), default="wordnet_living")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task_seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/diagnostic"))
    args = parser.parse_args(argv)
    out = args.out / args.task if args.out.name != args.task else args.out
    s = comparison.load_seed(args.task, args.seed, out, args.task_seed)
    answers = {"weak": comparison.weak_answers(s.weak["a"], s.labels["a"], {"b": s.weak["b"]}, args.seed)["b"],
               "systematic": comparison.rule_answers(args.task, s, ("b",))[0]["b"]}
    order = np.random.default_rng([args.seed, 12]).permutation(len(s.labels["b"]))
    scale = mistakes.standardiser(s.strong["b"])
    default = mistakes.MistakeSettings()
    settings = {"defaults": default, f"flip_l2 {default.flip_l2 / 100:g}": mistakes.MistakeSettings(
        flip_l2=default.flip_l2 / 100)}
    print("| supervisor | answers | transition | supervisor right on the rest | expected accuracy: mean | sd "
          "| range | AUC for the right answers |")
    print("|---" * 8 + "|")
    for name, ans in answers.items():
        right = ans.argmax(1) == s.labels["b"]
        for n in (400, 1300):
            fit, rest = order[:n], order[n:]
            for label, st in settings.items():
                params = mistakes.fit(scale(s.strong["b"][fit]), ans[fit], 4, np.random.default_rng(args.seed),
                                      settings=st)
                r = mistakes.predict(params, scale(s.strong["b"][rest])).supervisor_right.mean(0)
                print(f"| {name} | {n} | {label} | {right[rest].mean():.3f} | {r.mean():.3f} | {r.std():.4f} | "
                      f"[{r.min():.3f}, {r.max():.3f}] | {auc(r, right[rest]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
