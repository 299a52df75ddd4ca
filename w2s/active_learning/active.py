"""Active learning: the strong student chooses which examples of split B its supervisor labels.

Round 0 labels a random seed set. Each later round the student trained on every label bought so
far scores the rest of split B (for an arm named `<strategy>+constructed`, also cases built for it:
w2s.active_learning.constructed), a strategy (w2s.active_learning.strategies) picks the next batch within the query
budget, the supervisor (w2s.active_learning.supervisor) labels it, and the student trains again on all labels
bought: on from where it was (warm_start) or from the pretrained weights. The label-efficiency
curve is the student's test accuracy and PGR against the number of supervisor queries.

Every round is checkpointed; a killed run resumes in the round it was in and never pays twice for
a label. Layout, beside the finished pipeline stages of the same seed, which it reuses:

    <output_dir>/seed_<s>/active/<strategy>/settings.json     the active settings of these rounds
    <output_dir>/seed_<s>/active/<strategy>/queries.jsonl     every answer paid for (append-only)
    <output_dir>/seed_<s>/active/<strategy>/rounds.json       per round: its batch, then its scores
    <output_dir>/seed_<s>/active/<strategy>/active_results.json   the curve, weak and ceiling accuracy
    <output_dir>/seed_<s>/active/full_answers.json            a supervisor other than the weak model:
                                                                the student on all its answers of split B
    <output_dir>/seed_<s>/active/constructed.json             the +constructed arms' cases (pool index
                                                                len(B) + i), the weak model's answers to them
    <checkpoint_dir>/<name>/seed_<s>/active_<strategy>/round_<r>/  orbax checkpoints
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s import distributed, experiment, stages
from w2s.results import metrics, plot
from w2s.checkpoint import finish_saves, read_json, read_record, write_json_atomic
from w2s.config import ConfigError, apply_overrides, check_keys, refuse_changes
from w2s.data import TextRows
from w2s.losses import make_loss
from w2s.active_learning import constructed, written
from w2s.active_learning.strategies import Context, fit_committee, get_strategy, select
from w2s.active_learning.supervisor import Ledger, Supervisor, ask, describe, make_supervisor
from w2s.train import predict_features, train
from w2s.runners import register_runner


@dataclasses.dataclass(frozen=True)
class ActiveConfig:
    """The config's `active` section. Round 0 asks for `seed_size` labels, each later round for
    `query_batch`, for at most `rounds` rounds and `budget` queries in all."""

    strategies: tuple[str, ...] = ("random",)
    supervisor: str = "weak"  # the weak model, a registered rule supervisor, or a labels file (.npy, .json, .csv)
    seed_size: int = 32
    query_batch: int = 32
    budget: int = 256
    rounds: int = 8
    warm_start: bool = True
    train_on: str = "all"  # each round trains on every label bought so far, or on this round's ("new")
    epochs: float = 0.0  # epochs of each round's training; 0: the strong model's train.epochs
    ensemble_size: int = 8  # bootstrap logistic heads on the student's features (fit_committee)
    shortlist: int = 4  # bald_kcenter runs k-center over the query_batch * shortlist top-BALD examples
    constructed: int = 2000  # cases built for the +constructed arms (at most; constructed.build)
    writer: str | None = None  # a chat model that writes them instead (text tasks; w2s.active_learning.written)

    def __post_init__(self):
        for name in ("seed_size", "query_batch", "budget", "rounds", "ensemble_size", "shortlist", "constructed"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.active.{name} must be positive, not {getattr(self, name)}.")
        if self.epochs < 0:
            raise ConfigError(f"config.active.epochs must be positive (or 0: the strong model's), not {self.epochs}.")
        if self.budget < self.seed_size:
            raise ConfigError(f"config.active.budget {self.budget} is smaller than seed_size {self.seed_size}.")
        if not self.strategies:
            raise ConfigError("config.active.strategies is empty.")
        if self.train_on not in ("all", "new"):
            raise ConfigError(f"config.active.train_on must be 'all' or 'new', not {self.train_on!r}.")
        if self.train_on == "new" and not self.warm_start:
            raise ConfigError("config.active.train_on='new' needs warm_start=True: a student retrained from "
                              "the pretrained weights on one round's labels would forget the others.")
        for name in self.strategies:
            get_strategy(constructed.arm(name)[0])

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "ActiveConfig":
        check_keys(cfg, [f.name for f in dataclasses.fields(cls)], "config.active")
        values = dict(cfg.items())
        values["strategies"] = tuple(values.get("strategies", cls.strategies))
        return cls(**values)

    def check_pool(self, pool_size: int) -> None:
        """Checked before anything is trained or bought."""
        if pool_size == 0:
            raise ConfigError("the unlabelled pool (split B) is empty: there is nothing to ask the supervisor.")
        if self.budget > pool_size:
            raise ConfigError(f"config.active.budget {self.budget} exceeds the pool: split B has {pool_size} examples.")

    def batch_size(self, round_: int, spent: int) -> int:
        return min(self.query_batch if round_ else self.seed_size, self.budget - spent)


def pipeline_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config without its `active` section: the pipeline stages an active run reuses."""
    return ml_collections.ConfigDict({k: v for k, v in cfg.to_dict().items() if k != "active"})


def embed(model: nnx.Module, inputs: TextRows, mesh: jax.sharding.Mesh, batch_size: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features [N, H] and class probabilities [N, 2] of every example, from one pass."""
    features = predict_features(model, inputs, mesh, batch_size)
    logits = features @ np.asarray(model.head.kernel[...]) + np.asarray(model.head.bias[...])
    return features, metrics.softmax(logits)


def _labelled(rounds: list[dict]) -> np.ndarray:
    return np.asarray([i for r in rounds for i in r["selected"]], np.int64)


class ActiveRun:
    """One strategy on one seed of an experiment: rounds of choose, buy, train and evaluate."""

    def __init__(self, experiment: experiment.Experiment, strategy: str, settings: ActiveConfig,
                 supervisor: Supervisor | None = None):
        self.base_strategy, asks_constructed = constructed.arm(strategy)
        get_strategy(self.base_strategy)
        self.exp, self.strategy, self.settings = experiment, strategy, settings
        self.dir = experiment.run_dir / "active" / strategy
        self.ckpt_dir = experiment.ckpt_dir / f"active_{strategy}"
        self.train_cfg = experiment.strong.train_cfg
        if settings.epochs:
            self.train_cfg = dataclasses.replace(self.train_cfg, epochs=settings.epochs)
        _, split_b = experiment.splits()
        settings.check_pool(len(split_b))
        self.pool_size = len(split_b)
        self.cases_path = self.dir.parent / "constructed.json"  # this seed's constructed cases, shared by arms
        cases = self._constructed() if asks_constructed else []
        self.texts = [text for text, _ in split_b] + [c.text for c in cases]  # what may be asked: B, then cases
        extension = constructed.Extension(tuple(cases), self._weak_answers) if cases else None
        self.supervisor = make_supervisor(settings.supervisor if supervisor is None else supervisor, experiment,
                                          extension)
        # PGR's W and the full-answers student: the pipeline's weak stages, or this supervisor's own.
        self.by_weak_model = settings.supervisor == "weak"
        self.ledger = Ledger(self.dir / "queries.jsonl")
        _, tokenizer = experiment.strong.build(experiment.seed)
        self.pool = TextRows.of(tokenizer, self.texts, self.train_cfg.max_length)
        self.test = TextRows.of(tokenizer, [text for text, _ in experiment.task.test], self.train_cfg.max_length)
        self.test_labels = np.asarray([label for _, label in experiment.task.test], np.int32)

    def run(self) -> dict:
        """Every round not finished yet, then active_results.json with the curve."""
        self._check_settings()
        path = self.dir / "rounds.json"
        rounds = read_record(path) or []  # damaged: reported; rounds start over, bought labels are reused
        student = None  # the model after the latest round trained or restored in this process
        for r in range(self.settings.rounds):
            if r < len(rounds) and "test_accuracy" in rounds[r]:
                continue
            labelled = _labelled(rounds[:r])
            choosing = r == len(rounds)
            if choosing and self.settings.batch_size(r, len(labelled)) == 0:
                break
            if r > 0 and student is None and (choosing or self.settings.warm_start):
                student, _ = self._train(r - 1, rounds, self._pretrained())  # restored from its checkpoint
            if choosing:
                k = self.settings.batch_size(r, len(labelled))
                chosen = self._seed_set(k) if r == 0 else self._choose(student, labelled, k, r)
                rounds.append({"round": r, "selected": chosen.tolist()})
                write_json_atomic(path, rounds)  # the decision survives a kill while buying
            self._buy(r, np.asarray(rounds[r]["selected"], np.int64))
            start = time.perf_counter()
            warm = self.settings.warm_start and r > 0
            student, history = self._train(r, rounds, student if warm else self._pretrained())
            rounds[r].update(queries=len(_labelled(rounds[: r + 1])), history=history,
                             seconds=time.perf_counter() - start, **self._scores(student))
            finish_saves()  # the round's last checkpoint (written while it was scored) is on disk first
            write_json_atomic(path, rounds)
            self._drop_checkpoint(self.ckpt_dir / f"round_{r - 1}")
        results = self._results(rounds)
        write_json_atomic(self.dir / "active_results.json", results)
        self._drop_checkpoint(self.ckpt_dir)
        return results

    def _check_settings(self) -> None:
        """Refuses to continue rounds bought under other active settings (strategies may change).
        A setting added after the rounds were written counts as its default there."""
        current = {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "strategies"}
        path = self.dir / "settings.json"
        if path.exists() and (self.dir / "rounds.json").exists():
            defaults = {k: v for k, v in dataclasses.asdict(ActiveConfig()).items() if k in current}
            refuse_changes({**defaults, **read_json(path)}, current, f"{self.dir} holds rounds of other active settings")
        write_json_atomic(path, current)

    def _pretrained(self) -> nnx.Module:
        return self.exp.strong.build(self.exp.seed)[0]

    def _constructed(self) -> list[constructed.Case]:
        """This seed's constructed cases: built once (constructed.build), then read back, so the pool
        indices of answers paid for keep their meaning when the builders change."""
        path = self.cases_path
        record = read_record(path, ("requested", "cases"))
        wanted = {"requested": self.settings.constructed, "writer": self.settings.writer}
        if record is None:
            test, split_b = [t for t, _ in self.exp.task.test], self.exp.splits()[1]
            if self.settings.writer is None:
                cases = constructed.build(self.exp.task_name, [t for t, _ in self.exp.task.train], test, split_b,
                                          self.settings.constructed, self.exp.seed)
            else:
                cases = written.build(self.settings.writer, self.exp.task_name, split_b, test,
                                      self.settings.constructed, self.exp.seed)
            record = {**wanted, "cases": [dataclasses.asdict(c) for c in cases]}
            write_json_atomic(path, record)
        elif (built := {k: record.get(k) for k in wanted}) != wanted:  # written before `writer`: None
            raise ConfigError(f"{path} holds the cases built for active.constructed={built['requested']}, "
                              f"active.writer={built['writer']}; the +constructed arms' answers refer to them. Use "
                              "another --config.output_dir, or delete it with those arms' folders.")
        return [constructed.Case(**c) for c in record["cases"]]

    def _weak_answers(self) -> np.ndarray:
        """The weak model's answers to the constructed cases: the weak model is trained again once
        per seed (Experiment.weak_answers), then they are read back."""
        record = read_json(self.cases_path)
        if "weak_answers" not in record:
            record["weak_answers"] = self.exp.weak_answers([c["text"] for c in record["cases"]]).tolist()
            write_json_atomic(self.cases_path, record)
        return np.asarray(record["weak_answers"], np.float32)

    def _seed_set(self, k: int) -> np.ndarray:
        """Random from split B, and the same for every arm of a seed, so their curves share the first point."""
        return np.random.default_rng([self.exp.seed, 2]).choice(self.pool_size, k, replace=False)

    def _choose(self, student: nnx.Module, labelled: np.ndarray, k: int, round_: int) -> np.ndarray:
        """Pool indices of the next batch: the strategy on the student's view of the unlabelled rest."""
        features, probs = embed(student, self.pool, self.exp.mesh, self.train_cfg.eval_batch_size)
        rest = np.setdiff1d(np.arange(len(self.texts)), labelled)
        rng = np.random.default_rng([self.exp.seed, 3, round_])
        ensemble = fit_committee(features[labelled], self.ledger.lookup(labelled), features[rest],
                                 self.settings.ensemble_size, rng)
        ctx = Context(probs=probs[rest], ensemble=ensemble, embeddings=features[rest],
                      labelled=features[labelled], k=k, rng=rng, shortlist=self.settings.shortlist,
                      answers=self.ledger.lookup(labelled))
        return rest[select(self.base_strategy, ctx)]

    def _buy(self, round_: int, chosen: np.ndarray) -> None:
        """Asks for the labels of `chosen` not paid for yet; they are on disk before they are used."""
        missing = self.ledger.missing(chosen)
        if missing.size:
            self.ledger.record(round_, missing, ask(self.supervisor, missing, [self.texts[i] for i in missing]))

    def _train(self, round_: int, rounds: list[dict], start: nnx.Module) -> tuple[nnx.Module, list[dict]]:
        """The student of round `round_` on every label bought up to it, or on that round's alone
        (train_on='new'); restored if that round finished."""
        labelled = _labelled(rounds[round_ if self.settings.train_on == "new" else 0: round_ + 1])
        return train(
            start, self.pool.take(labelled), self.ledger.lookup(labelled), self.train_cfg,
            loss=make_loss("xent"), mesh=self.exp.mesh, seed=self.exp.seed,
            checkpoint_dir=str(self.ckpt_dir / f"round_{round_}"), evaluate=self._scores,
            desc=f"active {self.strategy} round {round_} (seed {self.exp.seed})",
        )

    def _scores(self, model: nnx.Module) -> dict[str, float]:
        _, probs = embed(model, self.test, self.exp.mesh, self.train_cfg.eval_batch_size)
        return {"test_accuracy": metrics.accuracy(probs, self.test_labels)}

    def _drop_checkpoint(self, path: pathlib.Path) -> None:
        if not self.exp.cfg.keep_checkpoints:
            shutil.rmtree(path, ignore_errors=True)

    def _full_answers(self) -> dict:
        """The student on the supervisor's answers to all of split B, from the pretrained weights, and
        the supervisor's accuracy there: a supervisor other than the weak model is PGR's W, and this
        student the full-answers reference a budget is measured against. Trained once per seed."""
        path = self.dir.parent / "full_answers.json"
        if (record := read_record(path, ("test_accuracy", "supervisor_accuracy"))) is not None:
            return record
        everything = np.arange(self.pool_size)
        answers = ask(self.supervisor, everything, self.texts[: self.pool_size])
        truth = np.asarray([label for _, label in self.exp.splits()[1]])
        checkpoints = self.ckpt_dir.parent / "active_full_answers"
        start = time.perf_counter()
        student, history = train(
            self._pretrained(), self.pool.take(everything), answers, self.train_cfg, loss=make_loss("xent"),
            mesh=self.exp.mesh, seed=self.exp.seed, checkpoint_dir=str(checkpoints), evaluate=self._scores,
            desc=f"active: student on all answers (seed {self.exp.seed})")
        record = {"supervisor": describe(self.supervisor), "queries": self.pool_size,
                  "supervisor_accuracy": metrics.accuracy(answers, truth), "history": history,
                  "seconds": time.perf_counter() - start, **self._scores(student)}
        finish_saves()
        write_json_atomic(path, record)
        self._drop_checkpoint(checkpoints)
        return record

    def _results(self, rounds: list[dict]) -> dict:
        cfg = self.exp.cfg
        if self.by_weak_model:  # the student on all weak labels of B
            supervisor, full = self.exp.run_weak()["test_accuracy"], self.exp.run_student("xent")["test_accuracy"]
        else:  # the supervisor scored on split B, the only cases it answers
            record = self._full_answers()
            supervisor, full = record["supervisor_accuracy"], record["test_accuracy"]
        accuracy = {"weak": supervisor, "ceiling": self.exp.run_ceiling()["test_accuracy"], "student_xent": full}
        curve = [
            {"round": r["round"], "queries": r["queries"], "test_accuracy": r["test_accuracy"],
             "pgr": metrics.pgr(accuracy["weak"], r["test_accuracy"], accuracy["ceiling"]),
             "constructed_queries": int((_labelled(rounds[: i + 1]) >= self.pool_size).sum())}
            for i, r in enumerate(rounds) if "test_accuracy" in r
        ]
        return {
            "name": cfg.name, "task": cfg.task, "seed": self.exp.seed, "strategy": self.strategy,
            "weak_model": experiment.model_label(cfg.weak), "strong_model": experiment.model_label(cfg.strong),
            "supervisor": describe(self.supervisor), "pool_size": self.pool_size,
            "constructed_size": len(self.texts) - self.pool_size,
            "supervisor_scored_on": "test" if self.by_weak_model else "split B",
            "accuracy": accuracy, "curve": curve, "active": dataclasses.asdict(self.settings),
        }


def run_active_experiment(cfg: ml_collections.ConfigDict, supervisor: Supervisor | None = None) -> list[dict]:
    """The pipeline's stages of every seed (finished ones are reused), then each strategy on each seed.

    `supervisor` replaces config.active.supervisor, e.g. with a Python function. PGR is measured
    against the pipeline's weak model and its student on all weak labels when config.active.supervisor
    is "weak", else against the supervisor (its accuracy on split B) and a student on all its answers.
    """
    settings = ActiveConfig.from_config(cfg.active)
    base = pipeline_config(cfg)
    experiment.validate(base)
    distributed.initialize(base.get("distributed"))
    stages.use_compilation_cache(base)
    experiments = [experiment.Experiment(base, seed) for seed in cfg.seeds]
    for exp in experiments:
        settings.check_pool(len(exp.splits()[1]))
    results = []
    for exp in experiments:
        with exp.writing():
            exp.run()
            results += [ActiveRun(exp, name, settings, supervisor).run() for name in settings.strategies]
    return results


def load_active_results(results_dir: str | pathlib.Path) -> list[dict]:
    paths = sorted(pathlib.Path(results_dir).rglob("active_results.json"))
    if not paths:
        raise ConfigError(f"no active_results.json found under {results_dir}")
    return [read_json(p) for p in paths]


def curves(results: list[dict]) -> dict[str, dict[int, dict[str, list[float]]]]:
    """strategy -> queries -> {test_accuracy, pgr: values over seeds}."""
    out: dict[str, dict[int, dict[str, list[float]]]] = {}
    for r in results:
        for point in r["curve"]:
            cell = out.setdefault(r["strategy"], {}).setdefault(point["queries"], {"test_accuracy": [], "pgr": []})
            cell["test_accuracy"].append(point["test_accuracy"])
            cell["pgr"].append(point["pgr"])
    return out


def label_efficiency(results: list[dict], fraction: float = 0.95) -> dict[str, dict]:
    """Per strategy: the fewest supervisor queries at which the mean PGR over seeds reaches
    `fraction` of the full-answers student's mean PGR (None if it never does), the fewest from
    which it stays there, and the same first-reach count per seed."""
    full = {(r["task"], r["seed"]): metrics.pgr(r["accuracy"]["weak"], r["accuracy"]["student_xent"],
                                                 r["accuracy"]["ceiling"]) for r in results}
    target = fraction * float(np.nanmean(list(full.values())))
    pool = {r["strategy"]: r["pool_size"] for r in results}
    out = {}
    for strategy, points in curves(results).items():
        queries = sorted(points)
        mean = [float(np.nanmean(points[q]["pgr"])) for q in queries]
        reached = [q for q, m in zip(queries, mean) if m >= target]
        stays = [q for i, q in enumerate(queries) if all(m >= target for m in mean[i:])]
        per_seed = {}
        for r in results:
            if r["strategy"] == strategy:
                seed_target = fraction * full[(r["task"], r["seed"])]
                hits = [p["queries"] for p in r["curve"] if p["pgr"] >= seed_target]
                per_seed[r["seed"]] = min(hits) if hits else None
        out[strategy] = {
            "pool_size": pool[strategy], "target_pgr": target, "full_weak_pgr": target / fraction,
            "first_reach": reached[0] if reached else None, "stays_from": stays[0] if stays else None,
            "per_seed": per_seed, "curve": dict(zip(queries, mean)),
        }
    return out


def format_curves(results: list[dict]) -> str:
    """One line per strategy and query count: mean accuracy and PGR over seeds."""
    lines = [f"{'strategy':<14} {'queries':>7} {'accuracy':>9} {'PGR':>6} seeds"]
    for strategy, points in curves(results).items():
        for queries, cell in sorted(points.items()):
            lines.append(f"{strategy:<14} {queries:>7} {np.mean(cell['test_accuracy']):>9.3f} "
                         f"{np.nanmean(cell['pgr']):>6.2f} {len(cell['pgr'])}")
    return "\n".join(lines)


def plot_active(results_dir: str | pathlib.Path) -> pathlib.Path:
    """active.png: accuracy and PGR against supervisor queries per strategy (mean ± std over
    seeds), with the student on all the supervisor's answers, the supervisor and the strong ceiling
    as reference lines."""
    results = load_active_results(results_dir)
    by_seed = {(r["task"], r["seed"]): r["accuracy"] for r in results}.values()
    mean = {key: float(np.mean([a[key] for a in by_seed])) for key in ("weak", "ceiling", "student_xent")}
    full_pgr = float(np.nanmean([metrics.pgr(a["weak"], a["student_xent"], a["ceiling"]) for a in by_seed]))
    fig = plot.figure(12.0, 4.5)
    axes = fig.subplots(1, 2)
    for i, (strategy, points) in enumerate(sorted(curves(results).items())):
        queries = sorted(points)
        for ax, key in zip(axes, ("test_accuracy", "pgr")):
            values = [points[q][key] for q in queries]
            ax.errorbar(queries, [np.nanmean(v) for v in values], yerr=[np.nanstd(v) for v in values],
                        color=plot.color(i), marker="o", ms=4, capsize=2, label=strategy)
    references = (("strong ceiling", "black", "--", mean["ceiling"], 1.0),
                  ("student on all answers", "gray", ":", mean["student_xent"], full_pgr),
                  ("supervisor", "gray", "-.", mean["weak"], 0.0))
    for label, color, style, acc, pgr in references:
        for ax, y in zip(axes, (acc, pgr)):
            ax.axhline(y, color=color, ls=style, lw=1, label=label)
    for ax, ylabel in zip(axes, ("student test accuracy", "PGR")):
        ax.set_xlabel("supervisor queries")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside center right")
    fig.suptitle("Label efficiency of active learning (mean ± std over seeds)")
    path = pathlib.Path(results_dir) / "active.png"
    fig.savefig(path, dpi=150)
    return path


@register_runner("active_learning", experiment.OPEN_SECTIONS)  # the pipeline's: any option of the task or a loss
def run_active_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = ()) -> list[dict]:
    """Applies overrides, runs the comparison, prints the curves and plots them; returns the results."""
    cfg = apply_overrides(cfg, overrides, experiment.OPEN_SECTIONS)
    results = run_active_experiment(cfg)
    print()
    print(format_curves(results))
    print(f"\nwrote {plot_active(cfg.output_dir)}")
    return results
