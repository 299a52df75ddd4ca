"""Result folders laid out as `w2s run` writes them (config, per-stage records with histories,
results.json, command.json), with made-up numbers: for compare, report and curves tests."""
import itertools
import json
import pathlib

import numpy as np

from w2s.results import metrics
from w2s.results.report import record_command

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "quickstart.py"
STAGES = ("weak", "ceiling", "student_xent", "student_aux_conf")


def history(steps: int, start_loss: float, final_acc: float, eval_every: int = 10) -> list[dict]:
    rows = []
    for step in range(eval_every, steps + 1, eval_every):
        rows.append({"step": step, "loss": start_loss * (1 - 0.5 * step / steps), "grad_norm": 1.0,
                     "examples_per_s": 100.0, "tokens_per_s": 1000.0})
        if step < steps:
            rows.append({"step": step, "test_accuracy": final_acc - 0.1 * (1 - step / steps)})
    return rows


def write_run(root: pathlib.Path, seeds=(0, 1, 2), overrides=(), test_split="0123456789abcdef",
              accuracies=(0.70, 0.85, {"xent": 0.76, "aux_conf": 0.80})) -> pathlib.Path:
    """A run of experiments/quickstart.py with `overrides` (--config.a=b strings) in `root`."""
    from w2s.config import apply_overrides, load_config_file

    cfg = apply_overrides(load_config_file(QUICKSTART), [*overrides, f"--config.output_dir={root}"])
    config = json.loads(json.dumps(cfg.to_dict()))
    weak, ceiling, students = accuracies
    for seed in seeds:
        noise = 0.01 * (seed - 1)
        accuracy = {"weak": weak + noise, "ceiling": ceiling,
                    "student": {k: v - noise for k, v in students.items() if k in cfg.losses}}
        seed_dir = root / f"seed_{seed}"
        seed_dir.mkdir(parents=True)
        (seed_dir / "config.json").write_text(json.dumps(config))
        tests = {"weak": accuracy["weak"], "ceiling": ceiling,
                 **{f"student_{k}": v for k, v in accuracy["student"].items()}}
        for stage, acc in tests.items():
            (seed_dir / f"{stage}.json").write_text(json.dumps(
                {"test_accuracy": acc, "seconds": 10.0 + seed, "history": history(40, 0.7, acc)}))
        (seed_dir / "results.json").write_text(json.dumps({
            "name": cfg.name, "task": cfg.task, "weak_model": "minilm-l0-mean", "strong_model": "minilm",
            "seed": seed, "accuracy": accuracy, "test_split": test_split,
            "pgr": {k: metrics.pgr(accuracy["weak"], v, ceiling) for k, v in accuracy["student"].items()},
            "timings": {stage: 10.0 + seed for stage in tests}, "config": config,
            "versions": {"python": "3.12.0", "jax": "0.10.2", "devices": "1 x cpu", "w2s_commit": f"c{seed}"},
        }))
    record_command(root, str(QUICKSTART), list(overrides), ["w2s", "run", str(QUICKSTART), *overrides])
    return root


def png_pixels(path: pathlib.Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)[..., :3]


def write_sweep(root: pathlib.Path, seeds=(0, 1, 2)) -> pathlib.Path:
    """A sweep's folder: sweep_config.json and a results table of two pairs and two methods."""
    from w2s.sweeps.results_table import ResultsTable

    root.mkdir(parents=True)
    (root / "sweep_config.json").write_text(json.dumps({"name": "sweep", "task_options": {"n_train": 4000, "n_test": 2000},
                                                        "train": {"lr": 1e-4}}))
    table = ResultsTable(root / "results.sqlite")
    accuracy = {"minilm-l0-mean": 0.70, "minilm-l2-mean": 0.78, "minilm-l6": 0.85}
    for (weak, strong), method, seed in itertools.product(
            [("minilm-l0-mean", "minilm-l2-mean"), ("minilm-l0-mean", "minilm-l6")], ["xent", "bootstrap"], seeds):
        gap = accuracy[strong] - accuracy[weak]
        table.put({"task": "wordnet_living", "weak": weak, "strong": strong, "method": method, "seed": seed,
                   "weak_acc": accuracy[weak], "ceiling_acc": accuracy[strong],
                   "student_acc": accuracy[weak] + (0.3 + 0.1 * seed) * gap, "weak_params": 1e6, "strong_params": 4e6})
    return root
