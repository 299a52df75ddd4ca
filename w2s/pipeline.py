"""The weak-to-strong experiment: weak supervisor -> weak labels -> strong students -> strong ceiling -> PGR.

Every stage writes its output atomically and is skipped when that output exists; a stage killed
while training resumes from its last orbax checkpoint. Layout of one seed's run:

    <output_dir>/seed_<s>/config.json      the config the outputs belong to
    <output_dir>/seed_<s>/weak.json        weak accuracy and training history
    <output_dir>/seed_<s>/weak_labels.npz  weak soft labels of split B, ground truth beside them
    <output_dir>/seed_<s>/ceiling.json     strong model trained on ground truth of B
    <output_dir>/seed_<s>/student_<loss>.json
    <output_dir>/seed_<s>/results.json     accuracies, PGR per loss, config, timings, versions
    <checkpoint_dir>/<run>/seed_<s>/<stage>/   orbax checkpoints
"""
from __future__ import annotations

import dataclasses
import pathlib
import platform
import shutil
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from w2s import metrics, sharding
from w2s.checkpoint import read_json, write_json_atomic
from w2s.config import ConfigError, check_keys, refuse_changes
from w2s.data import Tokenized, one_hot, tokenize
from w2s.losses import known_losses, make_loss
from w2s.models import build_classifier
from w2s.tasks import TaskData, load_task
from w2s.train import TrainConfig, predict_logits, train

TOP_KEYS = ("name", "task", "task_options", "seeds", "weak", "strong", "losses", "loss_options",
            "mesh", "output_dir", "checkpoint_dir", "keep_checkpoints")
MODEL_KEYS = ("model", "num_layers", "pretrained", "pooling", "dtype", "train")
# Keys that may change without invalidating finished stages.
RUNTIME_KEYS = ("output_dir", "checkpoint_dir", "keep_checkpoints", "mesh", "seeds", "losses")


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
    for name in cfg.losses:
        make_loss(name, **dict(cfg.loss_options.get(name, {})))
    check_keys(cfg.loss_options, known_losses(), "config.loss_options")
    if not cfg.seeds:
        raise ConfigError("config.seeds is empty.")


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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("w2s", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    out["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    return out


@dataclasses.dataclass
class _Model:
    """A model spec with its tokenizer and tokenized splits (tokenized once per tokenizer)."""

    side: ml_collections.ConfigDict
    train_cfg: TrainConfig

    def build(self, seed: int):
        dtype = jnp.bfloat16 if self.side.dtype == "bfloat16" else jnp.float32
        return build_classifier(
            self.side.model, num_layers=self.side.num_layers, pretrained=self.side.pretrained,
            dtype=dtype, param_dtype=jnp.float32, seed=seed, pooling=self.side.get("pooling"),
        )


class Experiment:
    """One seed of one weak-to-strong configuration."""

    def __init__(self, cfg: ml_collections.ConfigDict, seed: int):
        validate(cfg)
        self.cfg, self.seed = cfg, seed
        self.run_dir = pathlib.Path(cfg.output_dir) / f"seed_{seed}"
        self.ckpt_dir = pathlib.Path(cfg.checkpoint_dir).absolute() / cfg.name / f"seed_{seed}"
        self.mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
        self.weak = _Model(cfg.weak, TrainConfig.from_config(cfg.weak.train))
        self.strong = _Model(cfg.strong, TrainConfig.from_config(cfg.strong.train))
        self.timings: dict[str, float] = {}
        self._task: TaskData | None = None

    # -- data ---------------------------------------------------------------------------------
    @property
    def task(self) -> TaskData:
        if self._task is None:
            self._task = load_task(self.cfg.task, seed=self.seed, **dict(self.cfg.task_options))
            if len(self._task.train) < 4 or len(self._task.test) < 2:
                raise ValueError(
                    f"task {self.cfg.task!r} has {len(self._task.train)} train and {len(self._task.test)} "
                    "test examples; the pipeline needs at least 4 train (two halves) and 2 test."
                )
        return self._task

    def splits(self) -> tuple[list, list]:
        return split_halves(self.task.train, self.seed)

    def _tokenize(self, tokenizer, model: _Model, examples: list) -> tuple[Tokenized, np.ndarray]:
        texts = [text for text, _ in examples]
        labels = np.asarray([label for _, label in examples], np.int32)
        return tokenize(tokenizer, texts, model.train_cfg.max_length), labels

    # -- stages -------------------------------------------------------------------------------
    def _check_config(self) -> None:
        """Refuses to mix finished stages of a different config into this run's results."""
        path = self.run_dir / "config.json"
        current = {k: v for k, v in self.cfg.to_dict().items() if k not in RUNTIME_KEYS}
        finished = [p for p in self.run_dir.glob("*") if p.name not in ("config.json", "results.json")]
        if path.exists() and finished:
            stored = {k: v for k, v in read_json(path).items() if k not in RUNTIME_KEYS}
            refuse_changes(stored, current, f"{self.run_dir} holds results of a different config")
        else:
            write_json_atomic(path, self.cfg.to_dict())

    def _fit(self, model_spec: _Model, stage: str, examples: list, targets: np.ndarray, loss_name: str):
        """Builds, tokenizes and trains one model; returns its test accuracy, test logits and more."""
        model, tokenizer = model_spec.build(self.seed)
        inputs, _ = self._tokenize(tokenizer, model_spec, examples)
        test_inputs, test_labels = self._tokenize(tokenizer, model_spec, self.task.test)
        cfg = model_spec.train_cfg

        def evaluate(m):
            logits = predict_logits(m, test_inputs, self.mesh, cfg.eval_batch_size)
            return {"test_accuracy": metrics.accuracy(logits, test_labels)}

        loss = make_loss(loss_name, **dict(self.cfg.loss_options.get(loss_name, {})))
        start = time.perf_counter()
        model, history = train(
            model, inputs, targets, cfg, loss=loss, mesh=self.mesh, seed=self.seed,
            checkpoint_dir=str(self.ckpt_dir / stage), evaluate=evaluate, desc=f"{stage} (seed {self.seed})",
        )
        test_logits = predict_logits(model, test_inputs, self.mesh, cfg.eval_batch_size)
        self.timings[stage] = time.perf_counter() - start
        return model, tokenizer, {
            "test_accuracy": metrics.accuracy(test_logits, test_labels),
            "history": history,
            "seconds": self.timings[stage],
        }

    def _finish(self, stage: str, record: dict) -> dict:
        """Writes a stage's output; its training checkpoints then have served their purpose."""
        write_json_atomic(self.run_dir / f"{stage}.json", record)
        if not self.cfg.keep_checkpoints:
            shutil.rmtree(self.ckpt_dir / stage, ignore_errors=True)
        return record

    def run_weak(self) -> dict:
        """Weak model on ground truth of A; its soft labels of B are saved with B's ground truth."""
        out = self.run_dir / "weak.json"
        if out.exists() and (self.run_dir / "weak_labels.npz").exists():
            return read_json(out)
        split_a, split_b = self.splits()
        gt_a = one_hot(np.asarray([label for _, label in split_a]))
        model, tokenizer, record = self._fit(self.weak, "weak", split_a, gt_a, "xent")
        inputs_b, labels_b = self._tokenize(tokenizer, self.weak, split_b)
        logits_b = predict_logits(model, inputs_b, self.mesh, self.weak.train_cfg.eval_batch_size)
        probs_b = np.asarray(jax.nn.softmax(logits_b), np.float32)
        record["weak_label_accuracy"] = metrics.accuracy(probs_b, labels_b)
        self._save_weak_labels(probs_b, labels_b)
        return self._finish("weak", record)

    def _save_weak_labels(self, probs: np.ndarray, labels: np.ndarray) -> None:
        path = self.run_dir / "weak_labels.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, probs=probs, labels=labels)
        tmp.replace(path)

    def weak_labels(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.run_dir / "weak_labels.npz"
        try:
            with np.load(path) as f:
                return f["probs"], f["labels"]
        except Exception as e:  # a truncated file is recomputed, not trusted
            raise ValueError(f"{path} is unreadable ({e}); delete it and weak.json to relabel.") from e

    def run_ceiling(self) -> dict:
        """The strong model on ground truth of B: the best a perfect supervisor could give."""
        out = self.run_dir / "ceiling.json"
        if out.exists():
            return read_json(out)
        _, split_b = self.splits()
        gt_b = one_hot(np.asarray([label for _, label in split_b]))
        _, _, record = self._fit(self.strong, "ceiling", split_b, gt_b, "xent")
        return self._finish("ceiling", record)

    def run_student(self, loss_name: str) -> dict:
        """The strong model on the weak model's soft labels of B, with one loss."""
        out = self.run_dir / f"student_{loss_name}.json"
        if out.exists():
            return read_json(out)
        _, split_b = self.splits()
        probs_b, _ = self.weak_labels()
        _, _, record = self._fit(self.strong, f"student_{loss_name}", split_b, probs_b, loss_name)
        return self._finish(f"student_{loss_name}", record)

    def run(self) -> dict:
        """All stages, then results.json with accuracies and PGR per loss."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_config()
        weak = self.run_weak()
        ceiling = self.run_ceiling()
        students = {name: self.run_student(name) for name in self.cfg.losses}
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
            "num_examples": {"train_a": len(self.task.train) // 2,
                             "train_b": len(self.task.train) - len(self.task.train) // 2,
                             "test": len(self.task.test)},
            "timings": {"weak": weak["seconds"], "ceiling": ceiling["seconds"],
                        **{f"student_{n}": s["seconds"] for n, s in students.items()}},
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }
        write_json_atomic(self.run_dir / "results.json", results)
        return results


def use_compilation_cache(cfg: ml_collections.ConfigDict) -> None:
    """Keeps compiled XLA programs under <checkpoint_dir>/xla_cache: later seeds, stages and runs with
    the same shapes load them instead of compiling again."""
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.checkpoint_dir).absolute() / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_experiment(cfg: ml_collections.ConfigDict) -> list[dict]:
    """Runs every configured seed and returns their results."""
    validate(cfg)
    use_compilation_cache(cfg)
    return [Experiment(cfg, seed).run() for seed in cfg.seeds]
