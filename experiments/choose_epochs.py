"""Chooses the weak and strong models' training epochs on held-out ground truth, never a test split,
before a comparison runs on a task.

Each seed's training split is split again (task `held_out`, w2s/tasks/held_out.py): `--n_held_out`
of its examples become the test split the pipeline scores, the rest its splits A and B. Two
phases, each the plain pipeline (weak, ceiling, student on all weak answers by xent) per setting:

1. weak: each of --weak_epochs, the strong model at the first of --strong_epochs; the weak
   model's held-out accuracy, mean over seeds, chooses.
2. strong: the chosen weak epochs, each of --strong_epochs; the held-out accuracy of the student
   on all weak answers, mean over seeds, chooses (the ceiling is shown beside it).

The fewest epochs win among equal means. Prints both tables and the chosen overrides, and writes
them to <out>/choice.json; every run resumes from <out>/<setting>/.

    python experiments/choose_epochs.py --out results/bbc_epochs --weak_epochs 3,10,30 \\
        --strong_epochs 2,5,10,20 --config.task_options.task=bbc_topic \\
        --config.task_options.n_train=480 --config.task_options.n_test=160 \\
        --config.task_options.max_words=40 --config.weak.train.max_length=64 \\
        --config.strong.train.max_length=64
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from w2s.checkpoint import write_json_atomic  # noqa: E402
from w2s.config import ConfigError  # noqa: E402
from w2s.experiment import default_config, run_config  # noqa: E402


def _epochs(raw: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in raw.split(",") if v.strip())
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive epochs separated by commas, got {raw!r}")
    return values


def run_setting(out: pathlib.Path, overrides: list[str], weak: float, strong: float) -> list[dict]:
    """The pipeline on held-out data at these epochs; its results per seed."""
    name = f"weak{weak:g}_strong{strong:g}"
    fixed = [f"--config.name=choose_epochs_{name}", f"--config.output_dir={out / name}",
             f"--config.checkpoint_dir={out / 'checkpoints'}", "--config.losses=xent,",
             f"--config.weak.train.epochs={weak}", f"--config.strong.train.epochs={strong}"]
    return run_config(default_config(), [*overrides, *fixed], quiet=True, command=sys.argv)


def table(rows: dict[float, list[dict]], what: str) -> str:
    """Markdown: one row per setting, held-out accuracies per seed and their mean."""
    seeds = [r["seed"] for r in next(iter(rows.values()))]
    lines = [f"| {what} epochs | " + " | ".join(f"seed {s}: weak / ceiling / student" for s in seeds) + " | mean |",
             "|---" * (len(seeds) + 2) + "|"]
    for epochs, results in rows.items():
        cells = [" / ".join(f"{a:.3f}" for a in accuracies(r)) for r in results]
        mean = " / ".join(f"{a:.3f}" for a in np.mean([accuracies(r) for r in results], axis=0))
        lines.append(f"| {epochs:g} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def accuracies(result: dict) -> tuple[float, float, float]:
    acc = result["accuracy"]
    return acc["weak"], acc["ceiling"], acc["student"]["xent"]


def choose(rows: dict[float, list[dict]], role: int) -> float:
    """The epochs whose mean held-out accuracy of model `role` (0 weak, 2 student) is highest, the
    fewest among equals."""
    means = {e: float(np.mean([accuracies(r)[role] for r in results])) for e, results in rows.items()}
    return min(means, key=lambda e: (-round(means[e], 9), e))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder of every run and choice.json")
    parser.add_argument("--weak_epochs", type=_epochs, required=True)
    parser.add_argument("--strong_epochs", type=_epochs, required=True)
    parser.add_argument("--n_held_out", type=int, default=80, help="examples of each seed's training split held out")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("--config.task_options.task=") for o in overrides):
        raise ConfigError("name the task to choose for: --config.task_options.task=<task> (and its options "
                          "as --config.task_options.<option>=...).")
    overrides = ["--config.task=held_out", f"--config.task_options.n_held_out={args.n_held_out}", *overrides]
    weak_rows = {e: run_setting(args.out, overrides, e, args.strong_epochs[0]) for e in args.weak_epochs}
    weak = choose(weak_rows, 0)
    strong_rows = {e: (weak_rows[weak] if e == args.strong_epochs[0] else run_setting(args.out, overrides, weak, e))
                   for e in args.strong_epochs}
    strong = choose(strong_rows, 2)
    tables = {"weak": table(weak_rows, "weak"), "strong": table(strong_rows, "strong")}
    choice = {"weak_epochs": weak, "strong_epochs": strong, "n_held_out": args.n_held_out,
              "overrides": overrides, "tables": tables}
    write_json_atomic(args.out / "choice.json", choice)
    print("\nHeld-out accuracy (weak / ceiling / student on all weak answers):\n")
    print(tables["weak"], "\n\n" + tables["strong"])
    print(f"\nchosen: --config.weak.train.epochs={weak:g} --config.strong.train.epochs={strong:g}")
    return choice


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"choose_epochs: error: {e}")
