"""Diagnostic queries against random and typical, on the pool and with constructed cases, against
the trained weak supervisor and a systematic one, in the linear-probe mode (w2s.active_learning.diagnostic).

The quickstart pair (MiniLM embeddings weak, MiniLM-L6 strong); the task is quickstart's
(wordnet_living; constructed cases: new WordNet lemmas; systematic supervisor: takes plants for
non-living) or tweet_sentiment (constructed: WordNet synonym/hypernym substitutions of pool
tweets; systematic: reads every negation as negative). Features are cached per task and seed.
The mistake model's settings were chosen before these runs, on held-out ground truth of split A
(experiments/mistake_settings.py).

    python experiments/diagnostic.py --task wordnet_living --out /work/runs/diag
    python experiments/diagnostic.py --task tweet_sentiment --out /work/runs/diag
    python benchmarks/diagnostic.py /work/runs/diag --plots docs   # tables with intervals, plots
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from w2s import sharding  # noqa: E402
from w2s.active_learning import constructed, diagnostic, mistakes, systematic  # noqa: E402
from w2s.active_learning.active import format_curves, load_active_results, plot_active  # noqa: E402
from w2s.config import load_config_file  # noqa: E402
from w2s.data import TextRows, one_hot  # noqa: E402
from w2s.stages import ModelSpec, split_halves  # noqa: E402
from w2s.tasks import load_task, wordnet  # noqa: E402
from w2s.train import predict_features  # noqa: E402

TASKS = {  # task options, max tokens, number of constructed cases
    "wordnet_living": (dict(n_train=4000, n_test=2000), 16, 2000),
    "tweet_sentiment": (dict(n_train=4000, n_test=2000), 48, 2000),
}
STRATEGIES = ["random", "typical", "diagnostic", "diagnostic" + constructed.CONSTRUCTED]


def features(side: str, texts: dict[str, list[str]], max_length: int, seed: int, cache: pathlib.Path) -> dict:
    """The pooled features of each text list under the quickstart's weak or strong model, cached."""
    if cache.exists():
        return dict(np.load(cache))
    spec = ModelSpec.from_config(getattr(load_config_file(ROOT / "experiments" / "quickstart.py"), side))
    model, tokenizer = spec.build(seed)
    mesh = sharding.make_mesh()
    out = {k: predict_features(model, TextRows.of(tokenizer, v, max_length), mesh, 256) for k, v in texts.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def rule(task_name: str) -> tuple[systematic.Rule, str]:
    if task_name in wordnet.CATEGORY_TASKS:
        return systematic.category_rule(), "systematic (plants taken for non-living)"
    return systematic.keyword_rule(), "systematic (negations read as negative)"


@dataclasses.dataclass(frozen=True)
class Seed:
    """One seed's split of the task into A (the weak model's ground truth) and B (the pool), with
    texts, ground truth and both models' cached features."""

    task: object
    made: list[constructed.Case]
    texts: dict[str, list[str]]  # "a", "b", "test", "constructed"
    labels: dict[str, np.ndarray]  # ground truth of "a", "b", "test"
    weak: dict[str, np.ndarray]  # the weak model's features of "a", "b", "test", "constructed"
    strong: dict[str, np.ndarray]  # the strong model's, the same keys


def load_seed(task_name: str, seed: int, out: pathlib.Path, task_seed: int) -> Seed:
    """The task's sample, its constructed cases and so the features are task_seed's, shared by all
    seeds (the backbone pass is what a 2-core CPU cannot afford three times); the A/B split is seed's."""
    options, max_length, n_constructed = TASKS[task_name]
    task = load_task(task_name, seed=task_seed, **options)
    # Synonyms and hypernyms only: the cases these documented runs were measured with.
    made = constructed.build(task_name, [t for t, _ in task.train], [t for t, _ in task.test],
                             split_halves(task.train, task_seed)[1], n_constructed, task_seed, ("synonym", "hypernym"))
    texts = {"train": [t for t, _ in task.train], "test": [t for t, _ in task.test],
             "constructed": [c.text for c in made]}
    start = time.process_time()
    cached = {side: features(side, texts, max_length, task_seed, out / "features" / f"{side}_task_seed_{task_seed}.npz")
              for side in ("weak", "strong")}
    print(f"{task_name} seed {seed}: features ready ({time.process_time() - start:.0f} s CPU in this process); "
          f"{len(made)} constructed cases")
    rows = dict(zip("ab", (np.asarray(r) for r in split_halves(list(range(len(task.train))), seed))))
    weak, strong = ({"a": f["train"][rows["a"]], "b": f["train"][rows["b"]], "test": f["test"],
                     "constructed": f["constructed"]} for f in (cached["weak"], cached["strong"]))
    labels = {k: np.asarray([task.train[i][1] for i in r], np.int64) for k, r in rows.items()}
    labels["test"] = np.asarray([y for _, y in task.test], np.int64)
    texts = {"a": [task.train[i][0] for i in rows["a"]], "b": [task.train[i][0] for i in rows["b"]],
             "test": texts["test"], "constructed": texts["constructed"]}
    return Seed(task, made, texts, labels, weak, strong)


def weak_answers(train: np.ndarray, labels: np.ndarray, asked: dict[str, np.ndarray], seed: int) -> dict:
    """The weak model in the linear-probe mode: a plain head on its features `train`, trained on
    ground truth `labels`; its answers [N, 2] on each of `asked`."""
    scale = mistakes.standardiser(train)
    params = mistakes.fit(scale(train), one_hot(labels), 1, np.random.default_rng([seed, 5]), flips=False,
                          bootstrap=False, settings=mistakes.PLAIN)
    return {k: mistakes.predict(params, scale(v)).truth[0].astype(np.float32) for k, v in asked.items()}


def rule_answers(task_name: str, s: Seed, keys: tuple[str, ...]) -> tuple[dict, str]:
    """The systematic supervisor's answers [N, 2] on the texts of each of `keys`, and its name."""
    truth = {t: int(y) for k in ("a", "b", "test") for t, y in zip(s.texts[k], s.labels[k])}
    truth |= {c.text: c.truth for c in s.made}
    fn, name = rule(task_name)
    sup = systematic.rule_supervisor(truth, fn, name)
    return {k: sup(np.arange(len(s.texts[k])), s.texts[k]) for k in keys}, name


def run_seed(task_name: str, seed: int, out: pathlib.Path, task_seed: int,
             supervisors: tuple[str, ...] = ("weak", "systematic"), strategies: tuple[str, ...] = tuple(STRATEGIES)
             ) -> list[dict]:
    """Every arm of one seed, against each supervisor."""
    s = load_seed(task_name, seed, out, task_seed)
    data = diagnostic.Data(b=s.strong["b"], test=s.strong["test"], constructed=s.strong["constructed"],
                           test_labels=s.labels["test"], b_labels=s.labels["b"])
    keys = ("b", "constructed", "test")
    answer = weak_answers(s.weak["a"], s.labels["a"], {k: s.weak[k] for k in keys}, seed)
    weak_sup = diagnostic.Supervision("weak model (linear probe)", answer["b"], answer["constructed"],
                                      float((answer["test"].argmax(1) == s.labels["test"]).mean()))
    ask, name = rule_answers(task_name, s, keys)
    rule_sup = diagnostic.Supervision(name, ask["b"], ask["constructed"],
                                      float((ask["test"].argmax(1) == s.labels["test"]).mean()))
    results = []
    for folder, sup in (("weak", weak_sup), ("systematic", rule_sup)):
        if folder in supervisors:
            results += diagnostic.run_comparison(data, sup, list(strategies), task=task_name, seed=seed,
                                                 out=out / folder)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="wordnet_living")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--supervisors", nargs="+", choices=["weak", "systematic"], default=["weak", "systematic"])
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES,
                        help="arms (strategies of w2s.active_learning.strategies; +constructed: may ask about "
                             "constructed cases), beside any already run")
    parser.add_argument("--task_seed", type=int, default=0, help="the task sample's seed, shared by the seeds")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/diagnostic"))
    args = parser.parse_args(argv)
    out = args.out / args.task if args.out.name != args.task else args.out
    for seed in args.seeds:
        run_seed(args.task, seed, out, args.task_seed, tuple(args.supervisors), tuple(args.strategies))
    for folder in args.supervisors:
        print(f"\n{folder} supervisor, {args.task} (linear probes):")
        print(format_curves(load_active_results(out / folder)))
        print(f"wrote {plot_active(out / folder)}")


if __name__ == "__main__":
    main()
