"""Orbax checkpoints of a training stage, so a killed run resumes from its last saved step.

Orbax writes each step into a temporary folder and renames it when complete, so a step folder
that exists is whole; a half-written one is never picked up as the latest.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp


class StageCheckpointer:
    """Saves and restores one training stage's state (step, params, optimizer state)."""

    def __init__(self, directory: str | os.PathLike, save_every: int, keep: int = 1):
        self.directory = pathlib.Path(directory).absolute()
        self.save_every = save_every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, like: Any) -> Any:
        """Restores the latest step onto the shapes, dtypes and shardings of `like`."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        return self._manager.restore(self.latest_step(), args=ocp.args.StandardRestore(abstract))

    def maybe_save(self, step: int, state: Any, *, force: bool = False) -> bool:
        if not force and (self.save_every <= 0 or step % self.save_every):
            return False
        if self.latest_step() == step:
            return False
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        return True

    def close(self) -> None:
        self._manager.close()


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Writes JSON to a temporary file in the same folder, then renames it over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file; a corrupt one is reported with its path rather than a bare decode error."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to recompute that stage.") from e


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, pathlib.Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")
