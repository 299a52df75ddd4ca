"""Sweeps: every weak ≤ strong pair of model ladders, over tasks, methods and seeds, into one table.

A run is one (task, weak, strong, method, seed). It is a chain of pipeline stages keyed by model
(w2s.stages.Stages): the weak model on ground truth of A (its labels of B), the strong ceiling on
ground truth of B, then the method's students. Stages are shared by every run that needs them, so a
model's weak labels and ceiling train once per (task, seed); a finished stage is skipped, a run
whose row is in the table is skipped, and a killed sweep resumes where it stopped.

Methods (config.methods):
    xent, aux_conf, ...       the strong model on the weak labels of B with that loss (w2s.losses), or
                              with a named variant of one: loss_options.<name> = dict(loss=..., ...)
    bootstrap                 through every rung in between: weak -> mid -> ... -> strong, each model
                              trained on its predecessor's labels of B (xent); pairs with a rung between
    early_stop                xent on B less a held-out part; the test accuracy reported is that of the
                              evaluation whose predictions agree best with the held-out weak labels
    relabel                   strong-to-strong: the xent student labels B, a fresh strong model trains
                              on those labels; `rounds` times
A rung is finetuned or linear-probed (only a head trains, on the frozen backbone's features) as its
ladder says (w2s.sweeps.ladders.Rung.mode), or every rung alike with config.mode = "finetune" or "probe"
(config.mode = "rungs": each its own). A probed rung embeds each text once per sweep
(<output_dir>/features, w2s.probe.FeatureCache), for every seed, pair and method.

Layout:
    <output_dir>/sweep_config.json                      the settings its finished stages belong to
    <output_dir>/results.sqlite                         one row per finished run (w2s.sweeps.results_table)
    <output_dir>/features/<key>.npz                     probed rungs' features of every text seen
    <output_dir>/<task>/seed_<s>/<model>/weak.json      the model on ground truth of A, with
    <output_dir>/<task>/seed_<s>/<model>/weak_labels.npz  its labels of B
    <output_dir>/<task>/seed_<s>/<model>/ceiling.json   the model on ground truth of B
    <output_dir>/<task>/seed_<s>/<weak>_to_<strong>/<method>.json   students (and their labels of B)
    <checkpoint_dir>/<name>/<task>/seed_<s>/...         orbax checkpoints of unfinished stages

Concurrent sweeps may share an output folder and its table when they split the work by seeds or
tasks (`--config.seeds=0,` here, `--config.seeds=1,` there); a sweep holds each (task, seed) folder it
writes until it ends (w2s.folder_lock), so a second sweep on one is refused.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import pathlib
from typing import Sequence

import ml_collections
from tqdm.auto import tqdm

from w2s import distributed, sharding
from w2s.sweeps import ladders
from w2s.results import metrics, tables
from w2s.checkpoint import read_json, write_json_atomic
from w2s.config import ConfigError, apply_overrides, check_keys, refuse_changes, with_defaults
from w2s.losses import check_loss_options, known_losses, loss_variants
from w2s.stages import GT_A, GT_B, LabelsOf, ModelSpec, Source, Stages, check_model, check_task, use_compilation_cache
from w2s.experiment import default_config as experiment_defaults, train_config
from w2s.probe import FeatureCache
from w2s.sweeps.results_table import FILENAME, ResultsTable, load_records
from w2s.tasks import check_task_options
from w2s.train import TrainConfig
from w2s.runners import register_runner


def default_config() -> ml_collections.ConfigDict:
    """Every key of a sweep config, with its default: the quickstart's task, train config and losses
    over MiniLM cuts (w2s.sweeps.ladders). Sweep files start from it and set only what differs."""
    experiment = experiment_defaults()
    train = ml_collections.ConfigDict(dict(experiment.strong.train, eval_every=0))  # rungs' overrides go on top
    return ml_collections.ConfigDict(dict(
        runner="sweep",
        name="sweep",
        tasks=(experiment.task,),
        task_options=experiment.task_options,
        seeds=experiment.seeds,
        models=("minilm-l0-mean", "minilm-l2-mean", "minilm-l6"),  # ladder rungs, weakest first
        self_pairs=False,  # also weak == strong (its gap is only noise)
        train=train,
        methods=("xent", "aux_conf", "bootstrap", "early_stop", "relabel"),
        loss_options=experiment.loss_options,
        method_options=dict(early_stop=dict(holdout_frac=0.2, evals=4), relabel=dict(rounds=1)),
        mode="rungs",  # each rung as its ladder says (w2s.sweeps.ladders); "probe" or "finetune": all alike
        probe_train=dict(train, lr=1e-3, epochs=20.0, checkpoint_every=0),
        mesh=experiment.mesh,
        distributed=experiment.distributed,
        output_dir="results/sweep",
        checkpoint_dir=experiment.checkpoint_dir,
        keep_checkpoints=experiment.keep_checkpoints,
    ))


TOP_KEYS = tuple(default_config())
# Keys that may change without invalidating finished stages.
# config.mode is checked as each rung's resolved mode (_check_settings).
RUNTIME_KEYS = ("runner", "name", "tasks", "seeds", "models", "self_pairs", "methods", "mesh", "distributed", "output_dir",
                "checkpoint_dir", "keep_checkpoints", "mode")
MODES = ("rungs", *ladders.MODES)  # config.mode: each rung's own, or all alike
# --config.task_options.<option>=... takes any option that every task of the sweep accepts;
# --config.loss_options.<loss or variant>.<option>=... any option of that loss.
OPEN_SECTIONS = {"task_options": lambda cfg, options: check_task_options(cfg.tasks, options),
                 "loss_options": lambda cfg, options: check_loss_options(cfg.loss_options)}
METHOD_OPTIONS = {"bootstrap": (), "early_stop": ("holdout_frac", "evals"), "relabel": ("rounds",)}


def known_methods(loss_options: ml_collections.ConfigDict | None = None) -> list[str]:
    return known_losses() + loss_variants(loss_options or ml_collections.ConfigDict()) + sorted(METHOD_OPTIONS)


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks the config's shape before any work, naming the key that is wrong."""
    check_keys(cfg, TOP_KEYS, "config")
    check_keys(cfg.get("distributed") or ml_collections.ConfigDict(), distributed.KEYS, "config.distributed")
    for key in ("tasks", "seeds", "models", "methods"):
        if not cfg[key]:
            raise ConfigError(f"config.{key} is empty.")
    for label in cfg.models:
        ladders.rung(label)
    if cfg.mode not in MODES:
        raise ConfigError(f"config.mode must be one of {MODES} ('rungs': each rung's own, w2s.sweeps.ladders), "
                          f"not {cfg.mode!r}.")
    if len(set(cfg.models)) != len(cfg.models):
        raise ConfigError(f"config.models names a rung twice: {list(cfg.models)}.")
    TrainConfig.from_config(cfg.train)
    TrainConfig.from_config(cfg.probe_train)
    known = known_methods(cfg.loss_options)
    unknown = sorted(set(cfg.methods) - set(known))
    if unknown:
        raise ConfigError(f"config.methods: unknown method(s) {unknown}; known: {', '.join(known)}.")
    check_loss_options(cfg.loss_options)
    check_keys(cfg.method_options, list(METHOD_OPTIONS), "config.method_options")
    for name, accepted in METHOD_OPTIONS.items():
        check_keys(cfg.method_options.get(name, ml_collections.ConfigDict()), accepted, f"config.method_options.{name}")
    early = cfg.method_options.get("early_stop", {})
    if "early_stop" in cfg.methods and not (0 < early.get("holdout_frac", 0) < 1 and early.get("evals", 0) >= 1):
        raise ConfigError("config.method_options.early_stop needs 0 < holdout_frac < 1 and evals >= 1.")
    if "relabel" in cfg.methods and cfg.method_options.get("relabel", {}).get("rounds", 0) < 1:
        raise ConfigError("config.method_options.relabel.rounds must be at least 1.")


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage (Stages.stage): `model` trained on `source`, ground truth or a stage's labels of B."""

    stage: str
    model: str
    source: Source
    loss: str = "xent"
    label_b: bool = False
    holdout_frac: float = 0.0
    evals: int = 0


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the table. Its steps: the weak model's, the ceiling's, then the method's; the last
    step's test accuracy is the student's."""

    task: str
    seed: int
    weak: str
    strong: str
    method: str
    steps: tuple[Step, ...]

    @property
    def key(self) -> tuple:
        return (self.task, self.weak, self.strong, self.method, self.seed)


def method_steps(method: str, weak: str, strong: str, models: Sequence[str],
                 options: ml_collections.ConfigDict) -> tuple[Step, ...]:
    """The stages that make `method`'s student of (weak, strong); () where it does not apply."""
    pair, weak_labels = f"{weak}_to_{strong}", LabelsOf(f"{weak}/weak")
    xent = Step(f"{pair}/xent", strong, weak_labels, label_b=True)  # others relabel from it
    if method not in METHOD_OPTIONS:  # a loss, or a named variant of one (validate checked which)
        return (xent,) if method == "xent" else (Step(f"{pair}/{method}", strong, weak_labels, loss=method),)
    if method == "early_stop":
        o = options.early_stop
        return (Step(f"{pair}/early_stop", strong, weak_labels, holdout_frac=o.holdout_frac, evals=o.evals),)
    if method == "relabel":
        steps = [xent]
        for r in range(1, options.relabel.rounds + 1):
            steps.append(Step(f"{pair}/relabel_{r}", strong, LabelsOf(steps[-1].stage), label_b=True))
        return tuple(steps)
    between = list(models[models.index(weak) + 1: models.index(strong)])  # bootstrap
    if not between:
        return ()
    steps = [Step(f"{weak}_to_{between[0]}/xent", between[0], weak_labels, label_b=True)]
    for model in between[1:] + [strong]:
        steps.append(Step(f"{weak}_to_{model}/bootstrap", model, LabelsOf(steps[-1].stage), label_b=True))
    return tuple(steps)


def pairs(models: Sequence[str], self_pairs: bool) -> list[tuple[str, str]]:
    """(weak, strong) with weak before strong (or equal, with self_pairs) in the same ladder."""
    return [(w, s) for i, w in enumerate(models) for s in models[i if self_pairs else i + 1:]
            if ladders.family(w) == ladders.family(s)]


def plan(cfg: ml_collections.ConfigDict) -> list[Run]:
    """Every run of the sweep, grouped by task and seed (the stages they share)."""
    runs = []
    for task in cfg.tasks:
        for seed in cfg.seeds:
            for weak, strong in pairs(cfg.models, cfg.self_pairs):
                family = [m for m in cfg.models if ladders.family(m) == ladders.family(weak)]
                ground_truth = (Step(f"{weak}/weak", weak, GT_A, label_b=True), Step(f"{strong}/ceiling", strong, GT_B))
                for method in cfg.methods:
                    steps = method_steps(method, weak, strong, family, cfg.method_options)
                    if steps:
                        runs.append(Run(task, seed, weak, strong, method, ground_truth + steps))
    return runs


def _run_dir(cfg: ml_collections.ConfigDict, task: str, seed: int) -> pathlib.Path:
    return pathlib.Path(cfg.output_dir) / task / f"seed_{seed}"


def specs(cfg: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """Each rung's model spec with the sweep's train config and the rung's overrides."""
    return {label: ladders.rung(label).spec(cfg.train) for label in cfg.models}


def modes(cfg: ml_collections.ConfigDict) -> dict[str, str]:
    """How each rung trains: 'finetune' or 'probe', its own (config.mode 'rungs') or the config's."""
    return {label: ladders.rung(label).mode if cfg.mode == "rungs" else cfg.mode for label in cfg.models}


def format_plan(cfg: ml_collections.ConfigDict, runs: list[Run], finished: set[tuple]) -> str:
    """The runs, whether each is in the table, and how many trainings of each model are left."""
    lines = [f"{'task':<16} {'seed':>4}  {'weak':<16} {'strong':<16} {'method':<10} status"]
    left: dict[tuple, str] = {}
    for run in runs:
        done = run.key in finished
        lines.append(f"{run.task:<16} {run.seed:>4}  {run.weak:<16} {run.strong:<16} {run.method:<10} "
                     f"{'done' if done else 'to run'}")
        for step in () if done else run.steps:
            if not (_run_dir(cfg, run.task, run.seed) / f"{step.stage}.json").exists():
                left[(run.task, run.seed, step.stage)] = step.model
    per_model = collections.Counter(left.values())
    lines.append(f"\n{len(runs)} runs, {sum(r.key in finished for r in runs)} done; {len(left)} stages to train"
                 + (": " + ", ".join(f"{m} x{per_model[m]}" for m in cfg.models if per_model[m]) if left else "")
                 + "\nlinear probes: " + (", ".join(m for m, mode in modes(cfg).items() if mode == "probe") or "none"))
    return "\n".join(lines)


def _check_settings(cfg: ml_collections.ConfigDict) -> None:
    """Refuses to mix finished stages of other settings into this output folder, naming the keys.
    Rungs and methods, named loss variants among them, may be added; a rung whose spec changed is refused."""
    path = pathlib.Path(cfg.output_dir) / "sweep_config.json"
    current = json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS}))
    current["rungs"] = {label: {**spec.to_dict(), "mode": modes(cfg)[label]} for label, spec in specs(cfg).items()}
    if path.exists():
        stored = {k: v for k, v in read_json(path).items() if k not in RUNTIME_KEYS}  # e.g. a folder's old name
        defaults = {k: v for k, v in default_config().to_dict().items() if k not in RUNTIME_KEYS}
        # A key missing from either side (written before it existed, or a config that sets a whole
        # section) trains as its default does.
        stored, current = (with_defaults(side, {**defaults, "rungs": {label: {"train": train_config().to_dict()}
                                                                      for label in side.get("rungs", {})}})
                           for side in (stored, current))
        shared = sorted(set(stored.get("rungs", {})) & set(current["rungs"]))
        # A named variant on one side only is a method the other does not train; a base loss's
        # options (set or not) and a variant both define must match.
        options = stored["loss_options"], current["loss_options"]
        compared = [{name: o for name, o in side.items() if "loss" not in o or all(name in s for s in options)}
                    for side in options]
        refuse_changes({**stored, "rungs": {k: stored["rungs"][k] for k in shared}, "loss_options": compared[0]},
                       {**current, "rungs": {k: current["rungs"][k] for k in shared}, "loss_options": compared[1]},
                       f"{cfg.output_dir} holds a sweep of other settings")
        current["rungs"] = {**stored["rungs"], **current["rungs"]}
        current["loss_options"] = {**stored["loss_options"], **current["loss_options"]}
    distributed.barrier(f"sweep settings checked: {path}")  # every process looked before it changes
    write_json_atomic(path, current)


def _row(run: Run, records: list[dict]) -> dict:
    weak, ceiling, student = records[0], records[1], records[-1]
    return {
        "task": run.task, "weak": run.weak, "strong": run.strong, "method": run.method, "seed": run.seed,
        "weak_acc": weak["test_accuracy"], "ceiling_acc": ceiling["test_accuracy"],
        "student_acc": student["test_accuracy"],
        "pgr": metrics.pgr(weak["test_accuracy"], student["test_accuracy"], ceiling["test_accuracy"]),
        "weak_params": ladders.rung(run.weak).params, "strong_params": ladders.rung(run.strong).params,
        "seconds": sum(r["seconds"] for r in records[2:]),  # the method's stages, shared ones included
        "details": {"weak_label_accuracy": weak["weak_label_accuracy"], "stages": [s.stage for s in run.steps],
                    "student": {k: v for k, v in student.items() if k not in ("history", "test_accuracy", "seconds")}},
    }


def run_sweep(cfg: ml_collections.ConfigDict, dry_run: bool = False) -> list[Run]:
    """Runs every run not in the table yet (or, with dry_run, prints the plan); returns the plan."""
    validate(cfg)
    runs = plan(cfg)
    table_path = pathlib.Path(cfg.output_dir) / FILENAME
    finished = ResultsTable(table_path).keys() if table_path.exists() else set()
    print(format_plan(cfg, runs, finished))
    if dry_run:
        return runs
    for task in cfg.tasks:  # every input found before the first stage trains
        check_task(task, cfg.task_options)
    for label, spec in specs(cfg).items():
        check_model(spec, f"rung {label}")
    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    pathlib.Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    _check_settings(cfg)
    use_compilation_cache(cfg)
    table = ResultsTable(table_path) if distributed.is_main() else None  # process 0 writes the rows
    mesh = sharding.make_mesh(**cfg.mesh)
    probe = TrainConfig.from_config(cfg.probe_train)
    models = {label: ModelSpec.from_config(spec, probe if modes(cfg)[label] == "probe" else None)
              for label, spec in specs(cfg).items()}
    cache = FeatureCache(pathlib.Path(cfg.output_dir) / "features")
    stages = None
    with contextlib.ExitStack() as held:  # every (task, seed) folder the sweep wrote, until it ends
        for run in tqdm([r for r in runs if r.key not in finished], desc="sweep", unit="run",
                        disable=not distributed.is_main()):
            if stages is None or (stages.task_name, stages.seed) != (run.task, run.seed):
                ckpt_dir = pathlib.Path(cfg.checkpoint_dir).absolute() / cfg.name / run.task / f"seed_{run.seed}"
                stages = Stages(run.task, cfg.task_options, run.seed, run_dir=_run_dir(cfg, run.task, run.seed),
                                ckpt_dir=ckpt_dir, mesh=mesh, loss_options=cfg.loss_options,
                                keep_checkpoints=cfg.keep_checkpoints, feature_cache=cache)
                held.enter_context(stages.writing())
            records = [stages.stage(models[s.model], s.stage, s.source, s.loss, label_b=s.label_b,
                                    holdout_frac=s.holdout_frac, evals=s.evals) for s in run.steps]
            if table is not None:
                table.put(_row(run, records))
    return runs


@register_runner("sweep", OPEN_SECTIONS)
def sweep_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = (), *,
                 dry_run: bool = False) -> list[Run]:
    """Applies overrides, runs the sweep (or prints its plan), prints the PGR table; returns the plan."""
    cfg = apply_overrides(cfg, overrides, OPEN_SECTIONS)
    runs = run_sweep(cfg, dry_run)
    if not dry_run and distributed.is_main():
        print()
        print(tables.format_pgr_table(metrics.summarize(load_records(cfg.output_dir))))
        print(f"\nresults: {pathlib.Path(cfg.output_dir) / FILENAME}   (plot them with: w2s plot {cfg.output_dir})")
    return runs
