"""The sweep's results table: one row per finished run, in one SQLite file that several sweeps write.

Concurrent writers (sweeps over other seeds or tasks, on other processes of one machine) are safe:
the file is in WAL mode (readers never block the writer), a writer waits up to `busy_timeout_s`
for the lock instead of failing, and each row is one short transaction that inserts it or
replaces the row of the same run key. WAL needs a local file system, not NFS.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import time
from typing import Any, Iterator

from w2s.config import ConfigError

FILENAME = "results.sqlite"  # in a sweep's output folder
KEY = ("task", "weak", "strong", "method", "seed")
COLUMNS = {
    "task": "TEXT", "weak": "TEXT", "strong": "TEXT", "method": "TEXT", "seed": "INTEGER",
    "weak_acc": "REAL", "ceiling_acc": "REAL", "student_acc": "REAL", "pgr": "REAL",
    "weak_params": "REAL", "strong_params": "REAL", "seconds": "REAL", "details": "TEXT",
    "updated_at": "REAL",
}
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS runs ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())}, "
           f"PRIMARY KEY ({', '.join(KEY)}))")
_UPSERT = (f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
           f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY))


class ResultsTable:
    """Rows keyed by (task, weak, strong, method, seed); `details` holds any JSON-able extra."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 60.0):
        self.path = os.fspath(path)
        self.busy_timeout_s = busy_timeout_s
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are explicit, so each write is exactly one.
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            yield db
        finally:
            db.close()

    def put(self, row: dict[str, Any]) -> None:
        """Inserts the run's row, or replaces the row with the same key, in one transaction."""
        missing = [c for c in KEY if c not in row]
        unknown = sorted(set(row) - set(COLUMNS))
        if missing or unknown:
            raise ValueError(f"results row: missing key column(s) {missing}, unknown column(s) {unknown}.")
        values = {**row, "details": json.dumps(row.get("details") or {}, sort_keys=True),
                  "updated_at": time.time()}
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_UPSERT, [values.get(c) for c in COLUMNS])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def keys(self) -> set[tuple]:
        """Run keys of every finished run."""
        with self._connect() as db:
            return set(db.execute(f"SELECT {', '.join(KEY)} FROM runs").fetchall())

    def rows(self) -> list[dict[str, Any]]:
        """Every row, ordered by key, with `details` parsed."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(f"SELECT * FROM runs ORDER BY {', '.join(KEY)}").fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


def load_records(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """A sweep's rows as the pipeline's results records (one per task, pair and seed, its methods as
    'losses', plus the models' parameter counts), so metrics.summarize and the plots read a sweep as
    they read runs."""
    path = pathlib.Path(sweep_dir) / FILENAME
    if not path.exists():
        raise ConfigError(f"no sweep table {path}")
    records: dict[tuple, dict[str, Any]] = {}
    for row in ResultsTable(path).rows():
        record = records.setdefault((row["task"], row["weak"], row["strong"], row["seed"]), {
            "task": row["task"], "weak_model": row["weak"], "strong_model": row["strong"], "seed": row["seed"],
            "accuracy": {"weak": row["weak_acc"], "ceiling": row["ceiling_acc"], "student": {}},
            "params": {"weak": row["weak_params"], "strong": row["strong_params"]},
        })
        record["accuracy"]["student"][row["method"]] = row["student_acc"]
    return list(records.values())
