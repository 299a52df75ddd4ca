"""The weak-to-strong experiment: weak supervisor -> weak labels -> strong students -> strong ceiling -> PGR.

The stages are the stage engine's (w2s.stages), named by role: `weak`, `ceiling`, `student_<name>`.
Layout of one seed's run:

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

import dataclasses
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Sequence

import jax
import ml_collections
import numpy as np

from w2s import distributed, runtime, sharding
from w2s.checkpoint import finish_saves, read_json, read_record, write_json_atomic
from w2s.config import ConfigError, changed_leaves, check_keys, with_defaults
from w2s.data import TextRows, one_hot
from w2s.losses import check_loss_options, student_loss
from w2s.progress import PlannedStage, RunProgress, TensorBoardLog
from w2s.results import metrics, tables
from w2s.runners import register_runner
from w2s.stages import GT_A, GT_B, LabelsOf, ModelSpec, Stages, check_model, check_task, use_compilation_cache
from w2s.tasks import check_task_options, fingerprint
from w2s.train import TrainConfig


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


# Largest difference allowed between the weak stage's labels of split B and those of the weak model
# trained again: XLA's float reductions may reassociate between builds, nothing more.
WEAK_AGAIN_TOLERANCE = 1e-3

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
    for role in ("weak", "strong"):
        check_keys(cfg[role], MODEL_KEYS, f"config.{role}")
        TrainConfig.from_config(cfg[role].train)
        if cfg[role].dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"config.{role}.dtype must be float32 or bfloat16, not {cfg[role].dtype!r}.")
    if not cfg.losses:
        raise ConfigError("config.losses is empty: name at least one student loss, e.g. ('xent',).")
    check_students(cfg.losses, cfg.loss_options)
    if not cfg.seeds:
        raise ConfigError("config.seeds is empty.")


def check_students(students: Sequence[str], loss_options: ml_collections.ConfigDict) -> None:
    """Every student is a loss or a named variant of one; loss_options names only those."""
    for name in students:
        try:
            student_loss(name, loss_options)
        except ValueError as e:
            raise ConfigError(f"config.losses: {e}") from None
    check_loss_options(loss_options)



def check_inputs(cfg: ml_collections.ConfigDict) -> None:
    """Resolves and checks every model and the task before the first stage starts."""
    check_task(cfg.task, cfg.task_options)
    for role in ("weak", "strong"):
        check_model(cfg[role], f"config.{role}")


def model_label(settings: ml_collections.ConfigDict) -> str:
    """A short name for a model spec, e.g. 'minilm-l1' or 'minilm-scratch'."""
    label = settings.model
    if settings.num_layers is not None:
        label += f"-l{settings.num_layers}"
    if not settings.pretrained:
        label += "-scratch"
    if settings.get("pooling"):
        label += f"-{settings.pooling}"
    return label


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
            stored = with_defaults(read_json(path), default_config().to_dict())
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
        return self.stage(self.weak, "weak", GT_A, label_b=True)

    def _save_weak_labels(self, probs: np.ndarray, labels: np.ndarray) -> None:
        self._save_labels("weak", probs, labels)

    def weak_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The weak stage's labels of B; a missing or damaged file makes the weak stage run again."""
        self.run_weak()
        return self.labels("weak")

    def weak_answers(self, texts: list[str]) -> np.ndarray:
        """The weak model's soft labels of texts outside the task (e.g. constructed cases), [n, 2].

        A finished weak stage keeps no model, so it is trained again as the stage trained it (same
        seed, settings and examples); it must give the stage's labels of split B again (to
        WEAK_AGAIN_TOLERANCE), so these answers are the same supervisor's as split B's.
        """
        if self.weak.probe is not None:
            raise ConfigError("the weak model is a linear probe on features computed for the task's splits only; "
                              "answering other texts needs a weak model that reads text (no weak.probe).")
        stored, _ = self.weak_labels()
        targets = one_hot(np.asarray([label for _, label in self.examples("a")]))
        model, predict, _ = self._fit(self.weak, "weak_again", "a", targets, "xent")
        finish_saves()  # its last checkpoint, before the folder goes
        shutil.rmtree(self.ckpt_dir / "weak_again", ignore_errors=True)
        gap = float(np.abs(metrics.softmax(predict("b")) - stored).max())
        if gap > WEAK_AGAIN_TOLERANCE:
            raise ConfigError(
                f"the weak model trained again answers split B differently from {self.run_dir / 'weak_labels.npz'} "
                f"(by up to {gap:.3g}): the stage was trained by other code or on another backend. Delete "
                "weak.json and weak_labels.npz to train it again here, with every stage that reads them.")
        _, tokenizer = self.weak.build(self.seed)
        rows = TextRows.of(tokenizer, texts, self.weak.train_cfg.max_length)
        return metrics.softmax(self._predict(model, rows, self.weak.train_cfg.eval_batch_size))

    def run_ceiling(self) -> dict:
        """The strong model on ground truth of B: the best a perfect supervisor could give."""
        return self.stage(self.strong, "ceiling", GT_B)

    def run_student(self, name: str) -> dict:
        """The strong model on the weak model's soft labels of B, as student `name` of config.losses."""
        return self.stage(self.strong, f"student_{name}", LabelsOf("weak"), name)

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


@register_runner("experiment", OPEN_SECTIONS)
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
    print(tables.format_table(metrics.summarize(results)))
    if "aux_conf" in cfg.losses:
        print("aux_conf: why it hurts on the quickstart, measured: docs/aux_conf.md")
    print(f"\nresults: {cfg.output_dir}   (plot them with: w2s plot {cfg.output_dir})")
    return results
