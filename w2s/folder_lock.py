"""One writer per folder: a run holds an exclusive lock on each folder it writes, for as long as it writes.

The lock is an flock on `<folder>/.lock`, which names its holder (pid and host). The kernel drops it
when the holder exits in any way, a kill included, so the next run takes over a dead run's folder
without anyone deleting a stale file. Nested holds of one folder in one process share the lock.
"""
from __future__ import annotations

import collections.abc
import contextlib
import fcntl
import os
import pathlib
import socket

from w2s.config import ConfigError

LOCK_FILE = ".lock"
_held: dict[pathlib.Path, tuple[int, int]] = {}  # folder -> (open lock file, nested holds)


@contextlib.contextmanager
def hold(folder: str | pathlib.Path, other_folder_hint: str = "another output_dir") -> collections.abc.Iterator[None]:
    """Holds `folder` (created if missing) for the body; refuses it, naming the holder, while
    another process holds it."""
    folder = pathlib.Path(folder).absolute()
    if folder in _held:
        fd, count = _held[folder]
        _held[folder] = (fd, count + 1)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1000).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{folder} is being written by {holder}; wait for that run to end or "
                              f"give this one {other_folder_hint}.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        _held[folder] = (fd, 1)
    try:
        yield
    finally:
        fd, count = _held[folder]
        if count > 1:
            _held[folder] = (fd, count - 1)
        else:
            del _held[folder]
            os.close(fd)  # releases the flock; the file stays, as removing it would race a new holder
