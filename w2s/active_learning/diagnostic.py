"""Diagnostic queries in the linear-probe mode: does asking where hypotheses about the supervisor's
mistakes disagree buy labels that random and pool strategies do not?

The backbones stay frozen (their features are computed once per task, seed and model), and every
student is a head trained on them, so a whole label-efficiency curve costs seconds, not hours of
finetuning. One comparison (`run_comparison`) is a task, a seed and a supervisor:

- the weak supervisor is the weak model in the same mode: a logistic head on its features,
  trained on ground truth of split A; a systematic supervisor (w2s.active_learning.systematic) follows a rule;
- the weak accuracy, the ceiling (a head on the strong features with ground truth of B) and the
  students on all of B's answers (plain: xent; with a mistake model: w2s.active_learning.mistakes) set the PGR;
- each arm starts from the same random seed set of B, then a strategy (w2s.active_learning.strategies) picks
  each round's batch from the rest of B or, in the "+constructed" arm, from B and cases built
  for it (w2s.active_learning.constructed); the supervisor answers; a head trains on every answer bought.

Results are written as active_results.json files in the layout w2s.active_learning.active reads (label_efficiency,
plot_active), one per arm; an arm whose file exists is skipped, so a killed run resumes.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import numpy as np

from w2s.results import metrics
from w2s.active_learning import constructed as constructed_cases, mistakes
from w2s.checkpoint import read_json, write_json_atomic
from w2s.active_learning.strategies import Context, fit_committee, select

Scale = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Data:
    """One task and seed in features: the strong model's, and the truth where a split has it."""

    b: np.ndarray  # [NB, H] split B (the pool)
    test: np.ndarray  # [NT, H]
    constructed: np.ndarray  # [NC, H] constructed cases
    test_labels: np.ndarray  # [NT]
    b_labels: np.ndarray  # [NB] ground truth of B: the ceiling's labels, never a student's


@dataclasses.dataclass(frozen=True)
class Supervision:
    """A supervisor's answers [N, 2] on B and on the constructed cases, and its test accuracy."""

    name: str
    b: np.ndarray
    constructed: np.ndarray
    test_accuracy: float


@dataclasses.dataclass(frozen=True)
class Schedule:
    seed_size: int = 100
    query_batch: int = 300
    budget: int = 1300
    ensemble_size: int = 4

    def rounds(self) -> int:
        """The seed round and as many query rounds as the rest of the budget needs (the last may be smaller)."""
        return 1 + -(-(self.budget - self.seed_size) // self.query_batch)


def head_accuracy(scale: Scale, train: np.ndarray, answers: np.ndarray, test: np.ndarray,
                  test_labels: np.ndarray, flips: bool, seed: int) -> float:
    """Test accuracy of one head trained on `answers` [L, 2] (the true-label head where flips)."""
    params = mistakes.fit(scale(train), answers, 1, np.random.default_rng([seed, 7]), flips=flips, bootstrap=False)
    return metrics.accuracy(mistakes.predict(params, scale(test)).truth[0], test_labels)


def head_probs(scale: Scale, train: np.ndarray, answers: np.ndarray, pool: np.ndarray, seed: int) -> np.ndarray:
    """[N, 2] class probabilities on `pool` of a plain logistic head trained on `answers`."""
    params = mistakes.fit(scale(train), answers, 1, np.random.default_rng([seed, 8]), flips=False, bootstrap=False)
    return mistakes.predict(params, scale(pool)).truth[0]


def run_arm(data: Data, sup: Supervision, strategy: str, seed: int, schedule: Schedule) -> list[dict]:
    """The curve of one arm: per round the queries so far, how many were constructed, and the test
    accuracy of the plain student and of the student with a mistake model on every answer bought."""
    name, constructed = constructed_cases.arm(strategy)
    features = np.concatenate([data.b, data.constructed]) if constructed else data.b
    answers = np.concatenate([sup.b, sup.constructed]) if constructed else sup.b
    scale = mistakes.standardiser(data.b)  # by the pool's spread: a few labels estimate it badly
    bought = np.random.default_rng([seed, 2]).choice(len(data.b), schedule.seed_size, replace=False)
    curve = []
    for r in range(schedule.rounds()):
        if r:
            rest = np.setdiff1d(np.arange(len(features)), bought)
            rng = np.random.default_rng([seed, 3, r])
            probs = head_probs(scale, features[bought], answers[bought], features[rest], seed)
            ensemble = fit_committee(features[bought], answers[bought], features[rest], schedule.ensemble_size, rng)
            k = min(schedule.query_batch, schedule.budget - len(bought))
            ctx = Context(probs=probs, ensemble=ensemble, embeddings=features[rest], labelled=features[bought],
                          k=k, rng=rng, answers=answers[bought])
            bought = np.concatenate([bought, rest[select(name, ctx)]])
        x, y = features[bought], answers[bought]
        curve.append({
            "round": r, "queries": len(bought), "constructed_queries": int((bought >= len(data.b)).sum()),
            "test_accuracy": head_accuracy(scale, x, y, data.test, data.test_labels, False, seed),
            "mistake_test_accuracy": head_accuracy(scale, x, y, data.test, data.test_labels, True, seed),
        })
    return curve


def run_comparison(data: Data, sup: Supervision, strategies: list[str], *, task: str, seed: int, out: pathlib.Path,
                   schedule: Schedule = Schedule(), log: Callable[[str], None] = print) -> list[dict]:
    """Every arm of one task, seed and supervisor not finished yet; returns all arms' results."""
    scale = mistakes.standardiser(data.b)
    accuracy = {
        "weak": sup.test_accuracy,
        "ceiling": head_accuracy(scale, data.b, np.eye(2)[data.b_labels], data.test, data.test_labels, False, seed),
        "student_xent": head_accuracy(scale, data.b, sup.b, data.test, data.test_labels, False, seed),
        "student_mistakes": head_accuracy(scale, data.b, sup.b, data.test, data.test_labels, True, seed),
    }
    results = []
    for strategy in strategies:
        path = out / f"seed_{seed}" / strategy / "active_results.json"
        if not path.exists():
            curve = run_arm(data, sup, strategy, seed, schedule)
            for point in curve:
                point["pgr"] = metrics.pgr(accuracy["weak"], point["test_accuracy"], accuracy["ceiling"])
                point["mistake_pgr"] = metrics.pgr(accuracy["weak"], point["mistake_test_accuracy"],
                                                   accuracy["ceiling"])
            write_json_atomic(path, {
                "name": "diagnostic", "task": task, "seed": seed, "strategy": strategy, "supervisor": sup.name,
                "pool_size": len(data.b), "constructed_size": len(data.constructed), "accuracy": accuracy,
                "curve": curve, "active": dataclasses.asdict(schedule), "mode": "linear probe",
            })
            log(f"{task} seed {seed} {sup.name} {strategy}: final accuracy {curve[-1]['test_accuracy']:.3f}")
        results.append(read_json(path))
    return results
