"""Who labels what the student asks about, the check on every answer, and the ledger of answers paid for.

A supervisor is any callable `(indices, texts) -> answers` over pool indices of split B: answers
are [n, 2] class probabilities, or [n] hard labels in {0, 1}. The default is the pipeline's
trained weak model (its soft labels of split B, computed once by the weak stage); a file of
per-example labels, e.g. from people, a supervisor registered by name (the rule supervisors of
w2s.active_learning.systematic) and a plain Python function work the same way. An arm that may
ask about constructed cases (w2s.active_learning.constructed) asks with pool indices from len(B)
on; registered supervisors answer them through the `Extension` they are built with.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Protocol

import numpy as np

from w2s.active_learning.constructed import Extension
from w2s.config import ConfigError
from w2s.data import one_hot
from w2s.registry import Registry


class Supervisor(Protocol):
    def __call__(self, indices: np.ndarray, texts: list[str]) -> np.ndarray: ...


class SupervisorError(ConfigError):
    """A supervisor's labels file or answers do not fit the queries."""


# Supervisors by name: each a function of the experiment (its split B, its task) and of the constructed
# cases it may be asked about (None: split B only) returning the supervisor.
SUPERVISORS: Registry[Callable[[Any, Extension | None], Supervisor]] = Registry("supervisor")


class Lookup:
    """Answers known for the whole pool in advance (row i answers pool index i)."""

    def __init__(self, answers: np.ndarray, source: str):
        self.answers, self.source = answers, source

    def __call__(self, indices: np.ndarray, texts: list[str]) -> np.ndarray:
        return self.answers[indices]


@SUPERVISORS.register("weak")
def weak_model(experiment: Any, extension: Extension | None = None) -> Lookup:
    """The pipeline's weak model: its soft labels of split B from the weak stage, not a retrained one;
    of constructed cases, the extension's weak answers."""
    probs, _ = experiment.weak_labels()
    if extension is not None:
        probs = np.concatenate([probs, extension.weak_answers()])
    return Lookup(probs, f"weak model ({experiment.run_dir / 'weak_labels.npz'})")


_READERS = {
    ".npy": lambda path: np.load(path, allow_pickle=False),
    ".json": lambda path: np.asarray(json.loads(path.read_text()), np.float64),
    ".csv": lambda path: np.loadtxt(path, delimiter=",", ndmin=1),
}


def labels_file(path: str | os.PathLike, pool_size: int) -> Lookup:
    """One row per example of split B, in its order: a label in {0, 1} or two class probabilities.

    .npy holds an array; .json a list of labels or of [p0, p1] pairs; .csv one or two numeric columns.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise SupervisorError(f"labels file {path} does not exist.")
    if path.suffix not in _READERS:
        raise SupervisorError(f"labels file {path}: expected a .npy, .json or .csv file.")
    try:
        answers = _READERS[path.suffix](path)
    except (ValueError, TypeError, EOFError, OSError) as e:  # unparsable, mixed, ragged, truncated
        raise SupervisorError(f"labels file {path} does not hold numbers per example: {e}") from e
    if answers.shape[:1] != (pool_size,):
        raise SupervisorError(
            f"labels file {path} has shape {answers.shape}, but split B has {pool_size} examples; "
            "give one row per example of split B, in its order."
        )
    # Every row is checked now, before anything is trained or bought; row i answers pool index i.
    return Lookup(check_answers(answers, np.arange(pool_size), f"labels file {path}"), f"labels file {path}")


def make_supervisor(spec: Any, experiment: Any, extension: Extension | None = None) -> Supervisor:
    """A registered name ('weak': the weak model) -> that supervisor; a path -> a labels file; a
    callable is used as it is (asked about constructed cases by their indices from len(B) on)."""
    if callable(spec):
        return spec
    if spec in SUPERVISORS.names():
        return SUPERVISORS.get(spec)(experiment, extension)
    if not pathlib.Path(spec).suffix:
        raise SupervisorError(f"active.supervisor={spec!r} is neither a supervisor's name "
                              f"({', '.join(SUPERVISORS.names())}) nor a labels file (.npy, .json or .csv).")
    if extension is not None:
        raise SupervisorError(f"active.supervisor={spec!r}: a labels file answers split B only, so it cannot "
                              "answer an arm's constructed cases; drop the +constructed arms or use a supervisor "
                              f"that reads text ({', '.join(SUPERVISORS.names())}).")
    return labels_file(spec, len(experiment.splits()[1]))


def describe(supervisor: Supervisor) -> str:
    return getattr(supervisor, "source", None) or getattr(supervisor, "__name__", type(supervisor).__name__)


def check_answers(answers: Any, indices: np.ndarray, source: str) -> np.ndarray:
    """[n, 2] float32 probabilities from a supervisor's answers, or an error naming the cause and pool index."""
    n = len(indices)
    try:
        a = np.asarray(answers, np.float64)
    except (ValueError, TypeError) as e:
        raise SupervisorError(f"{source} answered {n} queries with something that is not an array: {e}") from e
    if a.shape not in ((n,), (n, 2)):
        raise SupervisorError(
            f"{source} answered {n} queries with shape {a.shape}; expected ({n}, 2) class probabilities "
            f"or ({n},) labels in {{0, 1}}."
        )

    def fail(bad: np.ndarray, what: str) -> None:
        rows = np.flatnonzero(bad)
        if rows.size:
            i = rows[0]
            raise SupervisorError(
                f"{source}: {what} for pool index {int(indices[i])} (answer {a[i].tolist()}; "
                f"{rows.size} of {n} answers are bad)."
            )

    fail(~np.isfinite(a).all(axis=tuple(range(1, a.ndim))), "non-finite answer")
    if a.ndim == 1:
        fail((a != 0) & (a != 1), "label outside {0, 1}")
        return one_hot(a)
    fail(((a < 0) | (a > 1)).any(1), "probability outside [0, 1]")
    fail(np.abs(a.sum(1) - 1) > 1e-3, "probabilities do not sum to 1")
    return a.astype(np.float32)


def ask(supervisor: Supervisor, indices: np.ndarray, texts: list[str]) -> np.ndarray:
    """The supervisor's checked answers for pool `indices` (whose texts are `texts`)."""
    return check_answers(supervisor(indices, texts), indices, describe(supervisor))


class Ledger:
    """Every answer paid for, as append-only JSON lines {"round", "index", "probs"}.

    Lines are flushed and fsynced before an answer is used, and the file is reread on resume,
    so a killed run never asks for a label twice. A last line cut off by a kill is dropped.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.answers: dict[int, np.ndarray] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(whole)
        for number, line in enumerate(data[:whole].splitlines(), 1):
            try:
                record = json.loads(line)
                self.answers[int(record["index"])] = np.asarray(record["probs"], np.float32)
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{self.path}, line {number}, is not a query record ({e}).") from e

    def __len__(self) -> int:
        return len(self.answers)

    def missing(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray([i for i in indices if int(i) not in self.answers], np.int64)

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self.answers[int(i)] for i in indices])

    def record(self, round_: int, indices: np.ndarray, probs: np.ndarray) -> None:
        lines = "".join(
            json.dumps({"round": round_, "index": int(i), "probs": [float(x) for x in p]}) + "\n"
            for i, p in zip(indices, probs)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        self.answers.update({int(i): np.asarray(p, np.float32) for i, p in zip(indices, probs)})


# The rule supervisors register themselves; imported last, as they use the names above.
from w2s.active_learning import systematic  # noqa: E402,F401
