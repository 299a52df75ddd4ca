"""Reading a folder of results.json files (one per run and seed) into records, for summaries."""
from __future__ import annotations

import json
import pathlib
import warnings
from typing import Any

from w2s.config import ConfigError

_REQUIRED = ("task", "weak_model", "strong_model", "seed", "accuracy")
_REQUIRED_ACC = ("weak", "ceiling", "student")


def _check(record: Any, path: pathlib.Path) -> None:
    """Fails early, naming the file, on records that summarize() cannot read."""
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(record).__name__}")
    acc = record.get("accuracy", {})
    if not isinstance(acc, dict) or not isinstance(acc.get("student", {}), dict):
        raise ConfigError(f"{path}: 'accuracy' must be {{weak, ceiling, student: {{loss: acc}}}}")
    missing = [k for k in _REQUIRED if k not in record]
    missing += [f"accuracy.{k}" for k in _REQUIRED_ACC if k not in acc]
    if missing:
        raise ConfigError(f"{path}: missing keys {missing}")


class UnreadableResultWarning(UserWarning):
    """A results.json that does not read back; the others are summarised without it."""


def load_results(results_dir: str | pathlib.Path) -> list[dict]:
    """Reads every results.json anywhere below results_dir, in path order, each record's students in
    its config's loss order.

    A corrupt or incomplete one is skipped with a warning naming it and the command that rebuilds it
    (so one crashed seed does not hide the others); no readable one at all is an error, since that
    almost always means a wrong path.
    """
    root = pathlib.Path(results_dir)
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ConfigError(f"no results.json found under {root}")
    results = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
            _check(record, path)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            warnings.warn(f"{path} skipped: {e}. {_rebuild_hint(path)}", UnreadableResultWarning, stacklevel=2)
            continue
        order = record.get("config", {}).get("losses") or []
        student = record["accuracy"]["student"]
        record["accuracy"]["student"] = {k: student[k] for k in sorted(
            student, key=lambda k: order.index(k) if k in order else len(order))}
        results.append(record)
    if not results:
        raise ConfigError(f"no readable results.json under {root}")
    return results


def _rebuild_hint(path: pathlib.Path) -> str:
    """How a seed's results.json is written again: its run, whose finished stages are reused."""
    seed = path.parent.name.removeprefix("seed_")
    seeds = f" --config.seeds={seed}," if seed.isdigit() else ""
    return (f"Rebuild it (finished stages are reused) with: "
            f"w2s run CONFIG --config.output_dir={path.parent.parent}{seeds}")
