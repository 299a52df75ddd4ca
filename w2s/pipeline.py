"""The weak-to-strong experiment: weak supervisor -> weak labels -> strong students -> strong ceiling -> PGR.

Every stage writes its output atomically and is skipped when that output exists; a stage killed
while training resumes from its last orbax checkpoint. Stages are keyed by the model they train
and the name of their output (Stages), so sweeps (w2s.sweeps.sweep) chain and share them; `w2s run`
(Experiment) names them by role. Layout of one seed's run:

    <output_dir>/seed_<s>/config.json      the config the outputs belong to
    <output_dir>/seed_<s>/weak.json        weak accuracy and training history
    <output_dir>/seed_<s>/weak_labels.npz  weak soft labels of split B, ground truth beside them
    <output_dir>/seed_<s>/ceiling.json     strong model trained on ground truth of B
    <output_dir>/seed_<s>/student_<name>.json  one per student of config.losses (a loss, or a named
                                           variant of one: loss_options.<name>.loss)
    <output_dir>/seed_<s>/results.json     accuracies, PGR per student, config, timings, versions
    <checkpoint_dir>/<run>/seed_<s>/<stage>/   orbax checkpoints
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from w2s import distributed, folder_lock, runtime, sharding
from w2s.results import metrics
from w2s.checkpoint import finish_saves, read_json, read_npz, read_record, write_json_atomic, write_npz_atomic
from w2s.config import ConfigError, changed_leaves, check_keys
from w2s.data import TextRows, one_hot
from w2s.losses import known_losses, student_loss, train_prefix
from w2s.models import TransformerConfig, build_classifier, resolve_model_dir
from w2s.models.classifier import POOLINGS
from w2s.models.loading import read_hf_config
from w2s.probe import FeatureCache, Features, Probe, standardize
from w2s.progress import PlannedStage, RunProgress, TensorBoardLog
from w2s.runners import register_runner
from w2s.tasks import TaskData, check_task_options, fingerprint, load_task
from w2s.train import TrainConfig, batch_widths, compile_ahead, predict_features, predict_logits, train

def train_config(**overrides) -> ml_collections.ConfigDict:
    """A model's train config: TrainConfig's defaults with `overrides`."""
    return ml_collections.ConfigDict(dataclasses.asdict(TrainConfig(**overrides)))


def default_config() -> ml_collections.ConfigDict:
    """Every key of an experiment config, with its default: the offline quickstart (MiniLM-L6's
    embeddings supervise all of MiniLM-L6 on WordNet living things). Experiment files start from it
    and set only what differs; a key not here is refused."""
    words = dict(max_length=16, eval_every=50, eval_batch_size=256)  # WordNet lemmas are short
    return ml_collections.ConfigDict(dict(
        runner="experiment",  # w2s/runners.py: what `w2s run` does with this config
        name="quickstart",
        task="wordnet_living",
        task_options=dict(n_train=4000, n_test=2000),
        seeds=(0, 1, 2),
        weak=dict(model="minilm", num_layers=0, pretrained=True, pooling="mean", dtype="float32",
                  train=train_config(lr=1e-3, epochs=3.0, **words)),
        strong=dict(model="minilm", num_layers=None, pretrained=True, pooling=None, dtype="float32",
                    train=train_config(lr=1e-4, **words)),
        losses=("xent", "aux_conf"),
        loss_options=dict(aux_conf=dict(alpha_max=0.75, warmup_frac=0.2)),
        mesh=dict(data=-1, fsdp=1, model=1),
        # None: a single process, or whatever the launcher (srun, a TPU pod) tells JAX; see docs/multihost.md.
        distributed=dict(coordinator_address=None, num_processes=None, process_id=None),
        output_dir="results/quickstart",
        checkpoint_dir="checkpoints",
        keep_checkpoints=False,  # a finished stage's orbax checkpoints are deleted (~270 MB each)
    ))


TOP_KEYS = tuple(default_config())
MODEL_KEYS = tuple(default_config().strong)
# Keys that may change without invalidating finished stages.
RUNTIME_KEYS = ("runner", "output_dir", "checkpoint_dir", "keep_checkpoints", "mesh", "distributed", "seeds", "losses")
DATA_KEYS = ("task", "task_options")  # with the seed (the run folder's): every stage's examples


def stage_settings(cfg: dict, stage: str) -> dict:
    """The settings that determine a stage of `w2s run`, by dotted key: the weak stage does not depend
    on the strong model or the losses, the ceiling not on the weak model, a student on both and on its
    loss's options. Any other stage (e.g. active learning's) on every key but RUNTIME_KEYS."""
    if stage == "weak":
        keys = (*DATA_KEYS, "weak")
    elif stage == "ceiling":
        keys = (*DATA_KEYS, "strong")
    elif stage.startswith("student_"):
        keys = (*DATA_KEYS, "weak", "strong", f"loss_options.{stage.removeprefix('student_')}")
    else:
        keys = tuple(k for k in cfg if k not in RUNTIME_KEYS)
    return {k: _leaf(cfg, k) for k in keys}


def _stage_of(filename: str) -> str:
    """The stage a file of a run folder belongs to: weak.json and weak_labels.npz to 'weak'."""
    for suffix in ("_labels.npz", ".json"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _leaf(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


# --config.task_options.<option>=... takes any option of the config's task function, and
# --config.loss_options.<student>.<option>=... any option of that student's loss.
OPEN_SECTIONS = {"task_options": lambda cfg, options: check_task_options([cfg.task], options),
                 "loss_options": lambda cfg, options: check_students(cfg.losses, cfg.loss_options)}


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks the config's shape before any work, naming the key that is wrong."""
    check_keys(cfg, TOP_KEYS, "config")
    for side in ("weak", "strong"):
        check_keys(cfg[side], MODEL_KEYS, f"config.{side}")
        TrainConfig.from_config(cfg[side].train)
        if cfg[side].dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"config.{side}.dtype must be float32 or bfloat16, not {cfg[side].dtype!r}.")
    if not cfg.losses:
        raise ConfigError("config.losses is empty: name at least one student loss, e.g. ('xent',).")
    check_students(cfg.losses, cfg.loss_options)
    if not cfg.seeds:
        raise ConfigError("config.seeds is empty.")


def check_students(students: Sequence[str], loss_options: ml_collections.ConfigDict) -> None:
    """Every student's loss and options bind; loss_options names only students or losses."""
    for name in students:
        try:
            student_loss(name, loss_options)
        except ValueError as e:
            raise ConfigError(f"config.losses: {e}") from None
    check_keys(loss_options, [*known_losses(), *students], "config.loss_options")


def check_model(side: ml_collections.ConfigDict, where: str) -> None:
    """Finds the model of a spec (the config's `weak`/`strong` format) and reads its architecture, so
    that a wrong folder, hub id or layer count is named before any stage trains."""
    try:
        arch = TransformerConfig.from_hf(read_hf_config(resolve_model_dir(side.model)))
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"{where}.model: {e}") from None
    if side.num_layers is not None and not 0 <= side.num_layers <= arch.num_layers:
        raise ConfigError(f"{where}.num_layers is {side.num_layers}; {side.model} has layers 0 to {arch.num_layers}.")
    if side.get("pooling") not in (None, *POOLINGS):
        raise ConfigError(f"{where}.pooling must be None (the model's default) or one of {POOLINGS}, "
                          f"not {side.pooling!r}.")


def check_task(task: str, options: ml_collections.ConfigDict) -> None:
    """Finds the task (registered or plug-in) and checks its options against its function."""
    try:
        check_task_options([task], dict(options))
    except ValueError as e:
        raise ConfigError(f"config.task_options of task {task!r}: {e}") from None


def check_inputs(cfg: ml_collections.ConfigDict) -> None:
    """Resolves and checks every model and the task before the first stage starts."""
    check_task(cfg.task, cfg.task_options)
    for side in ("weak", "strong"):
        check_model(cfg[side], f"config.{side}")


def model_label(side: ml_collections.ConfigDict) -> str:
    """A short name for a model spec, e.g. 'minilm-l1' or 'minilm-scratch'."""
    label = side.model
    if side.num_layers is not None:
        label += f"-l{side.num_layers}"
    if not side.pretrained:
        label += "-scratch"
    if side.get("pooling"):
        label += f"-{side.pooling}"
    return label


def split_halves(examples: list, seed: int) -> tuple[list, list]:
    """Split A (the weak model's ground truth) and split B (what the weak model labels)."""
    order = np.random.default_rng([seed, 1]).permutation(len(examples))
    half = len(examples) // 2
    return [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]


def _recorded_packages() -> tuple[str, ...]:
    """w2s, jaxlib and every requirement of setup.py and its hub extra (read from the installed
    metadata, so a new requirement is recorded without a list kept by hand)."""
    names = ["w2s", "jaxlib"]
    for requirement in metadata.requires("w2s") or ():
        spec, _, marker = requirement.partition(";")
        if not marker or "hub" in marker:
            names.append(re.match(r"[A-Za-z0-9._-]+", spec).group())
    return tuple(dict.fromkeys(names))


def versions() -> dict[str, str]:
    """What a result depends on besides config and seed: every library (and JAX's accelerator plug-ins),
    the w2s commit, the devices, their driver, the XLA flags and how host memory is allocated."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in (*_recorded_packages(), *runtime.accelerator_plugins()):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        commit = subprocess.run(["git", "-C", str(pathlib.Path(__file__).parent), "describe", "--always",
                                 "--dirty", "--abbrev=40"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):  # no git
        commit = ""
    out["w2s_commit"] = commit.strip() or "unknown (not a git checkout)"
    device = jax.devices()[0]
    out["devices"] = f"{jax.device_count()} x {device.device_kind}"
    out["backend"] = f"{device.platform} {device.client.platform_version}"
    out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    out["host_memory"] = runtime.host_memory()
    return out


@dataclasses.dataclass
class ModelSpec:
    """A model spec (the config's `weak`/`strong` format) and its train config."""

    side: ml_collections.ConfigDict
    train_cfg: TrainConfig
    probe: TrainConfig | None = None  # set: only a linear head trains, with this config, on frozen features

    @classmethod
    def from_config(cls, side: ml_collections.ConfigDict, probe: TrainConfig | None = None) -> "ModelSpec":
        return cls(side, TrainConfig.from_config(side.train), probe)

    def features_key(self, seed: int) -> tuple:
        """What a probe's features depend on: the backbone (a random one's seed), how it is read, and
        the texts' truncation."""
        side = self.side
        return (side.model, side.num_layers, side.pretrained, side.get("pooling"), side.dtype, self.train_cfg.max_length,
                None if side.pretrained else seed)

    def build(self, seed: int):
        dtype = jnp.bfloat16 if self.side.dtype == "bfloat16" else jnp.float32
        return build_classifier(
            self.side.model, num_layers=self.side.num_layers, pretrained=self.side.pretrained,
            dtype=dtype, param_dtype=jnp.float32, seed=seed, pooling=self.side.get("pooling"),
        )

    def abstract(self, seed: int) -> tuple[nnx.Module, object]:
        """The model's structure and shapes without its weights (what compiling needs; nothing is
        read or initialised), and its tokenizer."""
        tokenizers = []

        def build() -> nnx.Module:
            model, tokenizer = ModelSpec(ml_collections.ConfigDict({**self.side, "pretrained": False}),
                                         self.train_cfg).build(seed)
            tokenizers.append(tokenizer)
            return model

        return nnx.eval_shape(build), tokenizers[0]


AGREEMENT_SAMPLE = 512  # training rows a student's agreement is scored on before its final evaluation
LABEL_KEYS = ("probs", "labels")  # what a stage's <name>_labels.npz holds
GROUND_TRUTH = {"gt_a": 0, "gt_b": 1}  # a stage's source: ground truth of split A or B, or a stage's labels of B


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
             ) -> tuple[Callable[[str], np.ndarray], dict]:
        """Trains `spec` on a split's examples; returns its logits per split (a function) and the record.
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
        return lambda which: self._predict(model, inputs(which), cfg.eval_batch_size), record

    def _finish(self, stage: str, record: dict) -> dict:
        """Writes a stage's output; its training checkpoints then have served their purpose. Every
        process waits until it is written: a later run of a sweep may skip the stage by reading it."""
        finish_saves()  # the stage's last checkpoint, written while it evaluated
        write_json_atomic(self.run_dir / f"{stage}.json", record)
        distributed.barrier(f"stage written: {self.run_dir / stage}")
        if not self.keep_checkpoints and distributed.is_main():
            shutil.rmtree(self.ckpt_dir / stage, ignore_errors=True)
        return record

    def stage(self, spec: ModelSpec, name: str, source: str, loss_name: str = "xent", *, label_b: bool = False,
              holdout_frac: float = 0.0, evals: int = 0) -> dict:
        """Trains `spec` on `source`: 'gt_a' or 'gt_b' (ground truth of split A or B), or the name of a
        stage whose soft labels of B are the targets. With label_b its own soft labels of B are saved."""
        record = read_record(self.run_dir / f"{name}.json", ("test_accuracy", "seconds"))  # damaged: rerun
        if record is not None and (not label_b or read_npz(self._labels_path(name), LABEL_KEYS) is not None):
            self.reused.add(name)
            return record
        if source in GROUND_TRUTH:
            split = "ab"[GROUND_TRUTH[source]]
            targets, truth = one_hot(np.asarray([label for _, label in self.examples(split)])), None
        else:
            split, (targets, truth) = "b", self.labels(source)
        predict, record = self._fit(spec, name, split, targets, loss_name, holdout_frac, evals, truth=truth)
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


class Experiment(Stages):
    """One seed of one weak-to-strong configuration, its stages named by role."""

    def __init__(self, cfg: ml_collections.ConfigDict, seed: int, progress: RunProgress | None = None,
                 tensorboard: bool = False):
        validate(cfg)
        self.cfg, self.progress = cfg, progress
        super().__init__(
            cfg.task, cfg.task_options, seed,
            run_dir=pathlib.Path(cfg.output_dir) / f"seed_{seed}",
            ckpt_dir=pathlib.Path(cfg.checkpoint_dir).absolute() / cfg.name / f"seed_{seed}",
            mesh=sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.model),
            loss_options=cfg.loss_options, keep_checkpoints=cfg.keep_checkpoints,
            show_progress=progress is None or not progress.quiet, tensorboard=tensorboard,
        )
        self.weak = ModelSpec.from_config(cfg.weak)
        self.strong = ModelSpec.from_config(cfg.strong)

    def _check_config(self) -> None:
        """Keeps every finished stage whose own settings (stage_settings) are unchanged; refuses one
        that would be mixed in under other settings, naming its changed keys; drops the checkpoints of
        an unfinished stage whose settings changed (it starts over). Then records this config."""
        path = self.run_dir / "config.json"
        current = json.loads(json.dumps(self.cfg.to_dict()))  # tuples as they read back: lists
        changed: dict[str, list[str]] = {}
        if path.exists():
            stored = read_json(path)
            finished = {_stage_of(p.name) for p in self.run_dir.glob("*")
                        if p.name not in ("config.json", "results.json") and not p.name.startswith(".")}
            started = {p.name for p in self.ckpt_dir.glob("*") if not p.name.startswith(".")} - finished
            changed = {stage: keys for stage in sorted(finished | started)
                       if (keys := changed_leaves(stage_settings(stored, stage), stage_settings(current, stage)))}
            if finished & set(changed):
                raise ConfigError(
                    f"{self.run_dir} holds finished stages of other settings: " + "; ".join(
                        f"{stage} ({', '.join(f'{k}: {_leaf(stored, k)!r} -> {_leaf(current, k)!r}' for k in keys)})"
                        for stage, keys in changed.items() if stage in finished)
                    + ". Choose another --config.output_dir, or delete those stages' files to train them again.")
        distributed.barrier(f"config checked: {path}")  # every process looked before anything changes
        for stage, keys in changed.items():
            print(f"{self.ckpt_dir / stage}: an unfinished stage of other settings ({', '.join(keys)}); it starts over")
            if distributed.is_main():
                shutil.rmtree(self.ckpt_dir / stage, ignore_errors=True)
        write_json_atomic(path, self.cfg.to_dict())

    def run_weak(self) -> dict:
        """Weak model on ground truth of A; its soft labels of B are saved with B's ground truth."""
        return self.stage(self.weak, "weak", "gt_a", label_b=True)

    def _save_weak_labels(self, probs: np.ndarray, labels: np.ndarray) -> None:
        self._save_labels("weak", probs, labels)

    def weak_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The weak stage's labels of B; a missing or damaged file makes the weak stage run again."""
        self.run_weak()
        return self.labels("weak")

    def run_ceiling(self) -> dict:
        """The strong model on ground truth of B: the best a perfect supervisor could give."""
        return self.stage(self.strong, "ceiling", "gt_b")

    def run_student(self, name: str) -> dict:
        """The strong model on the weak model's soft labels of B, as student `name` of config.losses."""
        return self.stage(self.strong, f"student_{name}", "weak", name)

    @staticmethod
    def plan(cfg: ml_collections.ConfigDict) -> list[PlannedStage]:
        """The stages `run` goes through for every seed, in order, for the overall progress bar."""
        names = [("weak", "weak"), ("ceiling", "strong"), *((f"student_{n}", "strong") for n in cfg.losses)]
        return [PlannedStage(f"seed {seed} {name}", model) for seed in cfg.seeds for name, model in names]

    def _counted(self, stage: str, record: dict) -> dict:
        """Tells the progress a stage is done (trained here, or read back when it has no timing)."""
        if self.progress is not None:
            self.progress.finished(self.timings.get(stage))
        return record

    def run(self) -> dict:
        """All stages, then results.json with accuracies and PGR per loss."""
        with self.writing():
            return self._run()

    def _run(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_config()
        strong = ["ceiling", *(f"student_{name}" for name in self.cfg.losses)]
        coming = [s for s in strong if read_record(self.run_dir / f"{s}.json", ("test_accuracy", "seconds")) is None]
        if coming:  # compiles while the weak stage trains: ceiling and students share the step
            self.compile_ahead(self.strong, "b", "xent" if coming[0] == "ceiling" else coming[0].removeprefix("student_"))
        weak = self._counted("weak", self.run_weak())
        ceiling = self._counted("ceiling", self.run_ceiling())
        students = {name: self._counted(f"student_{name}", self.run_student(name)) for name in self.cfg.losses}
        accuracy = {
            "weak": weak["test_accuracy"],
            "ceiling": ceiling["test_accuracy"],
            "student": {name: s["test_accuracy"] for name, s in students.items()},
        }
        results = {
            "name": self.cfg.name,
            "task": self.cfg.task,
            "weak_model": model_label(self.cfg.weak),
            "strong_model": model_label(self.cfg.strong),
            "seed": self.seed,
            "accuracy": accuracy,
            "weak_label_accuracy": weak["weak_label_accuracy"],
            "pgr": {
                name: metrics.pgr(accuracy["weak"], acc, accuracy["ceiling"])
                for name, acc in accuracy["student"].items()
            },
            "test_split": fingerprint(self.task.test),
            "num_examples": {"train_a": len(self.task.train) // 2,
                             "train_b": len(self.task.train) - len(self.task.train) // 2,
                             "test": len(self.task.test)},
            "timings": {"weak": weak["seconds"], "ceiling": ceiling["seconds"],
                        **{f"student_{n}": s["seconds"] for n, s in students.items()}},
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }
        write_json_atomic(self.run_dir / "results.json", results)
        stages = ["weak", "ceiling", *(f"student_{name}" for name in students)]
        if distributed.is_main() and set(stages) <= self.reused:
            print(f"seed {self.seed}: every stage ({', '.join(stages)}) reused from {self.run_dir}; nothing trained")
        return results


def use_compilation_cache(cfg: ml_collections.ConfigDict) -> None:
    """Keeps compiled XLA programs under <checkpoint_dir>/xla_cache: later seeds, stages and runs with
    the same shapes load them instead of compiling again."""
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.checkpoint_dir).absolute() / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_experiment(cfg: ml_collections.ConfigDict, quiet: bool = False, tensorboard: bool = False) -> list[dict]:
    """Runs every configured seed and returns their results (on every process of a multi-process run).
    An overall bar counts seeds × stages above each stage's bar; quiet prints a line per stage instead.
    tensorboard logs every stage's history live under <output_dir>/seed_<s>/tensorboard/."""
    validate(cfg)
    check_inputs(cfg)
    if tensorboard:
        TensorBoardLog.writer_class()
    distributed.initialize(cfg.distributed)
    use_compilation_cache(cfg)
    with RunProgress(Experiment.plan(cfg), quiet) as progress:
        return [Experiment(cfg, seed, progress, tensorboard).run() for seed in cfg.seeds]


@register_runner("experiment")
def run_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = (), *, quiet: bool = False,
               tensorboard: bool = False, config_file: str | None = None,
               command: Sequence[str] | None = None) -> list[dict]:
    """Applies overrides, runs every seed, prints the results table; returns the results. The command
    line (default: sys.argv), config_file and overrides are recorded beside the results, for `w2s report`."""
    from w2s.config import apply_overrides
    from w2s.results.report import record_command

    cfg = apply_overrides(cfg, overrides, OPEN_SECTIONS)
    validate(cfg)
    distributed.initialize(cfg.distributed)  # before is_main() asks JAX which process this is
    if distributed.is_main():  # first, so a run stopped early still has it
        record_command(cfg.output_dir, config_file, list(overrides), list(command or sys.argv))
    results = run_experiment(cfg, quiet=quiet, tensorboard=tensorboard)
    print()
    print(metrics.format_table(metrics.summarize(results)))
    if "aux_conf" in cfg.losses:
        print("aux_conf: why it hurts on the quickstart, measured: docs/aux_conf.md")
    print(f"\nresults: {cfg.output_dir}   (plot them with: w2s plot {cfg.output_dir})")
    return results
