"""The stage engine: one task and seed's training stages, each a model trained on ground truth of a
split or on another stage's labels of split B, written atomically and skipped when its output exists.

A stage named `s` writes <run_dir>/<s>.json (accuracy, training history, timing) and, when it labels
split B for a later stage, <run_dir>/<s>_labels.npz; a stage killed while training resumes from its
last orbax checkpoint under <ckpt_dir>/<s>/. The weak-to-strong experiment (w2s.experiment) and the
sweeps (w2s.sweeps.sweep) are built from these stages.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import pathlib
import shutil
import time
from typing import Callable, Iterator, Literal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from w2s import distributed, folder_lock
from w2s.checkpoint import finish_saves, read_npz, read_record, write_json_atomic, write_npz_atomic
from w2s.config import ConfigError
from w2s.data import TextRows, one_hot
from w2s.losses import student_loss, train_prefix
from w2s.models import TransformerConfig, build_classifier, resolve_model_dir
from w2s.models.classifier import POOLINGS
from w2s.models.loading import read_hf_config
from w2s.probe import FeatureCache, Features, Probe, standardize
from w2s.progress import TensorBoardLog
from w2s.results import metrics
from w2s.tasks import TaskData, check_task_options, load_task
from w2s.train import TrainConfig, batch_widths, compile_ahead, predict_features, predict_logits, train


def check_model(settings: ml_collections.ConfigDict, where: str) -> None:
    """Finds the model of a spec (the config's `weak`/`strong` format) and reads its architecture, so
    that a wrong folder, hub id or layer count is named before any stage trains."""
    try:
        arch = TransformerConfig.from_hf(read_hf_config(resolve_model_dir(settings.model)))
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"{where}.model: {e}") from None
    if settings.num_layers is not None and not 0 <= settings.num_layers <= arch.num_layers:
        raise ConfigError(f"{where}.num_layers is {settings.num_layers}; {settings.model} has layers 0 to {arch.num_layers}.")
    if settings.get("pooling") not in (None, *POOLINGS):
        raise ConfigError(f"{where}.pooling must be None (the model's default) or one of {POOLINGS}, "
                          f"not {settings.pooling!r}.")



def check_task(task: str, options: ml_collections.ConfigDict) -> None:
    """Finds the task (registered or plug-in) and checks its options against its function."""
    try:
        check_task_options([task], dict(options))
    except ValueError as e:
        raise ConfigError(f"config.task_options of task {task!r}: {e}") from None



def split_halves(examples: list, seed: int) -> tuple[list, list]:
    """Split A (the weak model's ground truth) and split B (what the weak model labels)."""
    order = np.random.default_rng([seed, 1]).permutation(len(examples))
    half = len(examples) // 2
    return [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]


@dataclasses.dataclass
class ModelSpec:
    """A model spec (the config's `weak`/`strong` format) and its train config."""

    settings: ml_collections.ConfigDict  # the config's `weak` / `strong` section: model, layers, pooling, dtype
    train_cfg: TrainConfig
    probe: TrainConfig | None = None  # set: only a linear head trains, with this config, on frozen features

    @classmethod
    def from_config(cls, settings: ml_collections.ConfigDict, probe: TrainConfig | None = None) -> "ModelSpec":
        return cls(settings, TrainConfig.from_config(settings.train), probe)

    def features_key(self, seed: int) -> tuple:
        """What a probe's features depend on: the backbone (a random one's seed), how it is read, and
        the texts' truncation."""
        s = self.settings
        return (s.model, s.num_layers, s.pretrained, s.get("pooling"), s.dtype, self.train_cfg.max_length,
                None if s.pretrained else seed)

    def build(self, seed: int):
        dtype = jnp.bfloat16 if self.settings.dtype == "bfloat16" else jnp.float32
        return build_classifier(
            self.settings.model, num_layers=self.settings.num_layers, pretrained=self.settings.pretrained,
            dtype=dtype, param_dtype=jnp.float32, seed=seed, pooling=self.settings.get("pooling"),
        )

    def abstract(self, seed: int) -> tuple[nnx.Module, object]:
        """The model's structure and shapes without its weights (what compiling needs; nothing is
        read or initialised), and its tokenizer."""
        tokenizers = []

        def build() -> nnx.Module:
            model, tokenizer = ModelSpec(ml_collections.ConfigDict({**self.settings, "pretrained": False}),
                                         self.train_cfg).build(seed)
            tokenizers.append(tokenizer)
            return model

        return nnx.eval_shape(build), tokenizers[0]


AGREEMENT_SAMPLE = 512  # training rows a student's agreement is scored on before its final evaluation
LABEL_KEYS = ("probs", "labels")  # what a stage's <name>_labels.npz holds

@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A stage's targets: the ground truth of split A or B."""

    split: Literal["a", "b"]


@dataclasses.dataclass(frozen=True)
class LabelsOf:
    """A stage's targets: a finished stage's soft labels of split B."""

    stage: str


Source = GroundTruth | LabelsOf
GT_A, GT_B = GroundTruth("a"), GroundTruth("b")


class Stages:
    """The training stages of one task and seed, each keyed by the model it trains and the name of
    its output, so that any stage can feed any later one (weak labels, bootstrapping, relabelling).

    Stage `s` writes <run_dir>/<s>.json, and <run_dir>/<s>_labels.npz when it labels split B for
    a later stage; it is skipped when those exist. `w2s run` names its stages by role (weak,
    ceiling, student_<loss>), a sweep by model (w2s.sweeps.sweep). A spec with `probe` (a train config)
    trains only a linear head, on the frozen backbone's features computed once per model and split,
    and kept in `feature_cache` (w2s.probe.FeatureCache) when one is given, for every seed and run.
    With `tensorboard`, each stage's history is logged live under <run_dir>/tensorboard/<stage>;
    show_progress=False draws no step bars.
    """

    def __init__(self, task: str, task_options: dict, seed: int, *, run_dir: pathlib.Path, ckpt_dir: pathlib.Path,
                 mesh: jax.sharding.Mesh, loss_options: ml_collections.ConfigDict, keep_checkpoints: bool,
                 feature_cache: FeatureCache | None = None, show_progress: bool = True, tensorboard: bool = False):
        self.task_name, self.task_options, self.seed = task, dict(task_options), seed
        self.run_dir, self.ckpt_dir, self.mesh = run_dir, ckpt_dir, mesh
        self.loss_options, self.keep_checkpoints, self.feature_cache = loss_options, keep_checkpoints, feature_cache
        self.show_progress, self.tensorboard = show_progress, tensorboard
        self.timings: dict[str, float] = {}
        self.reused: set[str] = set()  # stages whose finished output was read, not trained
        self._task: TaskData | None = None
        self._features: dict[tuple, dict[str, np.ndarray]] = {}  # linear probes: per model, per split

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Holds this seed's run and checkpoint folders, so no other run writes them meanwhile. In a
        multi-process run process 0 holds them, as it writes the results."""
        with contextlib.ExitStack() as held:
            if distributed.is_main():
                held.enter_context(folder_lock.hold(self.run_dir, "another --config.output_dir"))
                held.enter_context(folder_lock.hold(self.ckpt_dir, "another --config.checkpoint_dir or name"))
            yield

    # -- data ---------------------------------------------------------------------------------
    @property
    def task(self) -> TaskData:
        if self._task is None:
            self._task = load_task(self.task_name, seed=self.seed, **self.task_options)
            if len(self._task.train) < 4 or len(self._task.test) < 2:
                raise ConfigError(
                    f"task {self.task_name!r} has {len(self._task.train)} train and {len(self._task.test)} "
                    "test examples; the pipeline needs at least 4 train (two halves) and 2 test."
                )
            for split, examples in (("train", self._task.train), ("test", self._task.test)):
                if len({label for _, label in examples}) < 2:
                    raise ValueError(
                        f"task {self.task_name!r}: every {split} example has label {examples[0][1]}; weak-to-strong "
                        "needs both classes in train and test (accuracies, and so PGR, mean nothing otherwise)."
                    )
        return self._task

    def splits(self) -> tuple[list, list]:
        return split_halves(self.task.train, self.seed)

    def examples(self, split: str) -> list:
        """'a', 'b' or 'test'."""
        return self.task.test if split == "test" else self.splits()[split == "b"]

    def _texts(self, tokenizer, model: ModelSpec, split: str) -> TextRows:
        """A split's texts, tokenized as batches ask for them (each process only its rows)."""
        return TextRows.of(tokenizer, [text for text, _ in self.examples(split)], model.train_cfg.max_length)

    def _trainable(self, spec: ModelSpec) -> tuple[nnx.Module, Callable[[str], TextRows | Features]]:
        """What trains (the classifier, or a zero head on features computed once per model) and its
        inputs per split."""
        if spec.probe is None:
            model, tokenizer = spec.build(self.seed)
            return model, functools.cache(functools.partial(self._texts, tokenizer, spec))  # tokens kept per split
        key = spec.features_key(self.seed)
        if key not in self._features:
            texts = {split: [text for text, _ in self.examples(split)] for split in ("a", "b", "test")}
            built = functools.cache(lambda: spec.build(self.seed))  # only when some text is not cached

            def embed(new_texts: list[str]) -> np.ndarray:
                model, tokenizer = built()
                return predict_features(model, TextRows.of(tokenizer, new_texts, spec.train_cfg.max_length),
                                        self.mesh, spec.train_cfg.eval_batch_size)

            if self.feature_cache is None:
                raw = {split: embed(t) for split, t in texts.items()}
            else:
                raw = self.feature_cache.features(key, texts, embed)
            self._features[key] = standardize(raw, ("a", "b"))
        features = self._features[key]
        return Probe(features["test"].shape[1]), lambda split: Features(features[split])

    def _predict(self, model: nnx.Module, inputs: TextRows | Features, batch_size: int) -> np.ndarray:
        if isinstance(inputs, Features):
            return np.asarray(model(jnp.asarray(inputs.features)), np.float32)
        return predict_logits(model, inputs, self.mesh, batch_size)

    # -- stages -------------------------------------------------------------------------------
    def compile_ahead(self, spec: ModelSpec, split: str, loss_name: str = "xent") -> None:
        """Starts compiling, on a background thread, the train step a coming stage of `spec` on
        `split` will run (one per model whatever its loss: w2s.losses.LossTable), for every batch
        width its batches will have, so the stage's first step does not wait for XLA. Linear probes
        and multi-process runs (whose widths are agreed batch by batch) compile as they go."""
        if spec.probe is not None or jax.process_count() > 1:
            return
        model, tokenizer = spec.abstract(self.seed)
        widths = batch_widths(self._texts(tokenizer, spec, split), spec.train_cfg, self.seed)
        compile_ahead(model, spec.train_cfg, student_loss(loss_name, self.loss_options), self.mesh, widths)

    def _fit(self, spec: ModelSpec, stage: str, split: str, targets: np.ndarray, loss_name: str,
             holdout_frac: float = 0.0, evals: int = 0, truth: np.ndarray | None = None,
             ) -> tuple[nnx.Module, Callable[[str], np.ndarray], dict]:
        """Trains `spec` on a split's examples; returns the model, its logits per split (a function) and
        the record.
        `loss_name` is a student's name (w2s.losses.student_loss).

        With `truth` (the split's ground truth, when the targets are another model's labels), every
        evaluation also records how the student's predictions on its training examples agree with
        the targets and with the truth, argmax and hardened as the confidence loss hardens them
        (metrics.agreement): over all of them at the final evaluation, over a fixed sample of
        AGREEMENT_SAMPLE of them at the others.

        holdout_frac > 0 keeps that part of the examples, with their targets, out of training and
        reports the test accuracy at the evaluation (one of `evals`, the last at the end) whose
        predictions agree best with the held-out targets: early stopping without ground truth.
        """
        model, inputs = self._trainable(spec)
        cfg = spec.train_cfg if spec.probe is None else spec.probe
        train_inputs, test_inputs = inputs(split), inputs("test")
        if prefix := train_prefix(loss_name, self.loss_options):
            if spec.probe is not None:
                raise ConfigError(f"{stage}: student {loss_name!r} prefixes its training inputs; a linear probe "
                                  "trains on features computed once without it. Finetune it (no probe).")
            train_inputs = train_inputs.prefixed(prefix)
        test_labels = np.asarray([label for _, label in self.task.test], np.int32)
        rows = np.arange(len(train_inputs))
        if holdout_frac:
            order = np.random.default_rng([self.seed, 4]).permutation(len(rows))
            held, rows = np.sort(order[: int(holdout_frac * len(rows))]), np.sort(order[int(holdout_frac * len(rows)):])
            if not len(held) or not len(rows):
                raise ConfigError(f"{stage}: holdout_frac {holdout_frac} leaves no examples to hold out or to train on.")
            cfg = dataclasses.replace(cfg, eval_every=max(1, cfg.total_steps(len(rows)) // max(evals, 1)))

        # Agreement is scored over every training row at the final evaluation and over a fixed sample
        # of them at the others: all of split B at every evaluation made a quickstart student stage
        # ~30% slower than the ceiling (benchmarks/README.md, "The quickstart's slowdown").
        sample = rows
        if len(rows) > AGREEMENT_SAMPLE:
            sample = np.sort(np.random.default_rng([self.seed, 5]).choice(rows, AGREEMENT_SAMPLE, replace=False))

        def evaluate(m, final: bool = False):
            scores = {"test_accuracy": metrics.accuracy(self._predict(m, test_inputs, cfg.eval_batch_size), test_labels)}
            if truth is not None:
                scored = rows if final else sample
                scores.update(metrics.agreement(self._predict(m, train_inputs.take(scored), cfg.eval_batch_size),
                                                targets[scored], truth[scored]))
            if holdout_frac:
                held_logits = self._predict(m, train_inputs.take(held), cfg.eval_batch_size)
                scores["holdout_agreement"] = metrics.accuracy(held_logits, targets[held])
            return scores

        loss = student_loss(loss_name, self.loss_options)
        log = TensorBoardLog(self.run_dir / "tensorboard" / stage) if self.tensorboard and distributed.is_main() else None
        start = time.perf_counter()
        model, history = train(
            model, train_inputs.take(rows), targets[rows], cfg, loss=loss, mesh=self.mesh, seed=self.seed,
            checkpoint_dir=str(self.ckpt_dir / stage), evaluate=evaluate, desc=f"{stage} (seed {self.seed})",
            checkpoint_last=self.keep_checkpoints,  # else deleted once the stage is written
            show_progress=self.show_progress, on_log=log,
        )
        final = evaluate(model, final=True)
        if log is not None:
            log({"step": history[-1]["step"], **final})
            log.close()
        self.timings[stage] = time.perf_counter() - start
        record = {**final, "history": history, "seconds": self.timings[stage]}
        if holdout_frac:
            evaluations = [r for r in history if "holdout_agreement" in r] + [{"step": history[-1]["step"], **final}]
            best = max(evaluations, key=lambda r: r["holdout_agreement"])  # the first of equals: stop early
            record.update(test_accuracy=best["test_accuracy"], final_test_accuracy=final["test_accuracy"],
                          selected_step=best["step"])
        return model, lambda which: self._predict(model, inputs(which), cfg.eval_batch_size), record

    def _finish(self, stage: str, record: dict) -> dict:
        """Writes a stage's output; its training checkpoints then have served their purpose. Every
        process waits until it is written: a later run of a sweep may skip the stage by reading it."""
        finish_saves()  # the stage's last checkpoint, written while it evaluated
        write_json_atomic(self.run_dir / f"{stage}.json", record)
        distributed.barrier(f"stage written: {self.run_dir / stage}")
        if not self.keep_checkpoints and distributed.is_main():
            shutil.rmtree(self.ckpt_dir / stage, ignore_errors=True)
        return record

    def stage(self, spec: ModelSpec, name: str, source: Source, loss_name: str = "xent", *, label_b: bool = False,
              holdout_frac: float = 0.0, evals: int = 0) -> dict:
        """Trains `spec` on `source`: the ground truth of split A or B, or a stage's soft labels of B.
        With label_b its own soft labels of B are saved."""
        record = read_record(self.run_dir / f"{name}.json", ("test_accuracy", "seconds"))  # damaged: rerun
        if record is not None and (not label_b or read_npz(self._labels_path(name), LABEL_KEYS) is not None):
            self.reused.add(name)
            return record
        if isinstance(source, GroundTruth):
            split = source.split
            targets, truth = one_hot(np.asarray([label for _, label in self.examples(split)])), None
        else:
            split, (targets, truth) = "b", self.labels(source.stage)
        _, predict, record = self._fit(spec, name, split, targets, loss_name, holdout_frac, evals, truth=truth)
        if label_b:
            probs_b = metrics.softmax(predict("b"))
            labels_b = np.asarray([label for _, label in self.examples("b")], np.int32)
            record["weak_label_accuracy"] = metrics.accuracy(probs_b, labels_b)
            self._save_labels(name, probs_b, labels_b)
        return self._finish(name, record)

    def _labels_path(self, stage: str) -> pathlib.Path:
        return self.run_dir / f"{stage}_labels.npz"

    def _save_labels(self, stage: str, probs: np.ndarray, labels: np.ndarray) -> None:
        """Process 0 writes them; every process waits until it has, as later stages read them."""
        path = self._labels_path(stage)
        write_npz_atomic(path, probs=probs, labels=labels)
        distributed.barrier(f"labels written: {path}")

    def labels(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """A stage's soft labels of split B, and B's ground truth."""
        arrays = read_npz(self._labels_path(stage), LABEL_KEYS)
        if arrays is None:
            raise ConfigError(f"{self._labels_path(stage)} is missing or unreadable: run stage {stage!r} first "
                              "(it runs again when its labels do not read back).")
        return arrays["probs"], arrays["labels"]


def use_compilation_cache(cfg: ml_collections.ConfigDict) -> None:
    """Keeps compiled XLA programs under <checkpoint_dir>/xla_cache: later seeds, stages and runs with
    the same shapes load them instead of compiling again."""
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.checkpoint_dir).absolute() / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
