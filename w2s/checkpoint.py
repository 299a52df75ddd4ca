"""Checkpoints and result files that survive a kill at any instant, and are not trusted when damaged.

Orbax writes each training step into a temporary folder and renames it when complete, so a step
folder that exists is whole; a half-written one is never picked up as the latest. Result files
are written to a temporary file, fsynced, then renamed over the old one. A file damaged later
(truncated, overwritten) is reported with its path as a CorruptFileWarning and the work it held
is done again: a step that does not restore gives way to an older kept step, or to a fresh start.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import warnings
import zipfile
from typing import Any, BinaryIO, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from w2s import distributed
from w2s.config import ConfigError


class CorruptFileWarning(UserWarning):
    """A checkpoint or result file that does not read back; the work it held is redone."""


def report_corrupt(path: str | os.PathLike, error: BaseException, action: str) -> None:
    """One warning line naming the damaged file, what was wrong with it and what happens instead."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    warnings.warn(f"{path} is unreadable ({type(error).__name__}: {reason}); {action}", CorruptFileWarning,
                  stacklevel=3)


class StageCheckpointer:
    """Saves and restores one training stage's state (step, params, optimizer state) with the
    history logged up to it, in one orbax step, so the two always belong together. The newest
    `keep` steps are kept, so a damaged newest step still leaves an older one to resume from.

    A save is written in the background while training goes on: `save` returns once orbax has
    copied the state to host memory (a later train step that donates the state's buffers does not
    touch those copies), and the next save, a restore, latest_step and close wait for it. A kill
    mid-write leaves only orbax's temporary folder, which is never read as a step."""

    def __init__(self, directory: str | os.PathLike, save_every: int, keep: int = 2):
        finish_saves()  # another stage's last save may still be writing (or into this folder)
        self.directory = pathlib.Path(directory).absolute()
        self.save_every = save_every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                                 cleanup_tmp_directories=True),
        )
        self._last_saved = self._manager.latest_step()  # the newest step written or being written

    def latest_step(self) -> int | None:
        """The newest complete step on disk (after any save in flight has finished)."""
        self._manager.wait_until_finished()
        return self._manager.latest_step()

    def restore(self, like: Any) -> tuple[Any, list[dict]] | None:
        """(state, history) of the newest step that reads back onto the shapes, dtypes and shardings
        of `like`; None when no step does. An unreadable step is reported and deleted."""
        self._manager.wait_until_finished()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore())
        self._last_saved = None
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(step, args=args)
                self._last_saved = step
                return restored["state"], list(restored["history"])
            except Exception as e:  # orbax and tensorstore raise many types for damaged files
                older = [s for s in self._manager.all_steps() if s < step]
                action = f"deleted; trying step {max(older)}" if older else "deleted; the stage starts over"
                report_corrupt(self.directory / str(step), e, action)
                if distributed.is_main():
                    shutil.rmtree(self.directory / str(step), ignore_errors=True)
                distributed.barrier(f"checkpoint step deleted: {self.directory / str(step)}")
                self._manager.reload()
        return None

    def due(self, step: int, *, force: bool = False) -> bool:
        """Whether `save` would write step `step` (every `save_every` steps, or when forced)."""
        if not force and (self.save_every <= 0 or step % self.save_every):
            return False
        return self._last_saved != step

    def save(self, step: int, state: Any, history: list[dict]) -> None:
        """Starts writing `step`; returns once the state is copied, before it is on disk."""
        self._manager.wait_until_finished()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(list(history)))
        self._manager.save(step, args=args, force=True)
        self._last_saved = step

    def close(self, *, wait: bool = True) -> None:
        """Waits for the save in flight, if any, to be complete on disk. With wait=False it goes on
        in the background (a stage's last save, while the stage evaluates) until `finish_saves`,
        the next StageCheckpointer, or the interpreter's exit waits for it."""
        if not wait:
            _LEFT_IN_FLIGHT.append(self)
            return
        self._manager.wait_until_finished()
        self._manager.close()


# Checkpointers closed with wait=False; the next StageCheckpointer waits first, so at most one.
_LEFT_IN_FLIGHT: list[StageCheckpointer] = []


def finish_saves() -> None:
    """Waits until every save left in the background by `close(wait=False)` is on disk: before its
    folder is read or deleted, and before a stage counts as finished."""
    while _LEFT_IN_FLIGHT:
        _LEFT_IN_FLIGHT.pop().close()


atexit.register(finish_saves)


def _write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Writes to a temporary file in the same folder, fsyncs it, renames it over `path` and fsyncs the
    folder: a kill leaves the old file or the new one, never a part of one.

    In a multi-process run only process 0 writes (every process computed the same payload into a
    shared folder); a reader that needs the file at once waits at a `distributed.barrier`.
    """
    if not distributed.is_main():
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; colleagues on a shared disk read results
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Writes `payload` as JSON, atomically (see _write_atomic)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_jsonable)
    _write_atomic(path, lambda f: f.write(text.encode()))


def write_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Writes arrays as an .npz, atomically (see _write_atomic); zip's CRCs catch later damage."""
    _write_atomic(path, lambda f: np.savez(f, **arrays))


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file; a corrupt one is reported with its path rather than a bare decode error."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path} is not valid JSON ({e}); delete it to recompute that stage.") from e


def read_record(path: str | os.PathLike, keys: Sequence[str] = ()) -> Any | None:
    """A finished stage's JSON record, or None when it is missing or damaged (then reported), so
    that stage runs again instead of failing the run or being trusted."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_bytes())
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        return record
    except ValueError as e:
        report_corrupt(path, e, "recomputing it")
        return None


def read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of an .npz, or None when it is missing or damaged (then reported)."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys}
    except (ValueError, KeyError, EOFError, OSError, zipfile.BadZipFile) as e:
        report_corrupt(path, e, "recomputing it")
        return None


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, pathlib.Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")
