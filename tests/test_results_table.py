"""The SQLite results table: upsert on the run key, and several processes writing one file at once."""
import multiprocessing
import sqlite3

import pytest

from w2s.sweeps.results_table import ResultsTable

WRITERS, ROWS_EACH = 6, 40


def row(writer: int, i: int, **extra) -> dict:
    return {"task": f"task{writer}", "weak": "w", "strong": "s", "method": "xent", "seed": i,
            "weak_acc": 0.5, "ceiling_acc": 0.9, "student_acc": writer / 100 + i / 10_000,
            "details": {"writer": writer, "i": i}, **extra}


def write_rows(path: str, writer: int, start, shared_key: bool) -> None:
    table = ResultsTable(path)
    start.wait()  # every writer starts at once, so their transactions collide
    for i in range(ROWS_EACH):
        table.put(row(writer, i))
        if shared_key:  # every writer also rewrites one row that all of them share
            table.put({**row(0, 0), "student_acc": writer + i / 1000})


def test_upsert_replaces_the_row_of_the_same_key(tmp_path):
    table = ResultsTable(tmp_path / "results.sqlite")
    table.put(row(1, 0))
    table.put(row(1, 0, student_acc=0.75))
    table.put(row(1, 1))
    rows = table.rows()
    assert [(r["seed"], r["student_acc"]) for r in rows] == [(0, 0.75), (1, 0.0101)]
    assert rows[0]["details"] == {"writer": 1, "i": 0}
    assert table.keys() == {("task1", "w", "s", "xent", 0), ("task1", "w", "s", "xent", 1)}


def test_bad_rows_are_refused(tmp_path):
    table = ResultsTable(tmp_path / "results.sqlite")
    with pytest.raises(ValueError, match=r"missing key column\(s\) \['seed'\]"):
        table.put({k: v for k, v in row(0, 0).items() if k != "seed"})
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['acc'\]"):
        table.put(row(0, 0, acc=1.0))
    assert table.rows() == []


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "results.sqlite")
    ResultsTable(path)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=write_rows, args=(path, w, start, True)) for w in range(1, WRITERS + 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    rows = ResultsTable(path).rows()
    expected = {(f"task{w}", i) for w in range(1, WRITERS + 1) for i in range(ROWS_EACH)} | {("task0", 0)}
    assert {(r["task"], r["seed"]) for r in rows} == expected
    for r in rows:
        if r["task"] != "task0":  # each row is whole: its values belong together
            writer, i = int(r["task"][4:]), r["seed"]
            assert r["student_acc"] == pytest.approx(writer / 100 + i / 10_000)
            assert r["details"] == {"writer": writer, "i": i}
    shared = next(r for r in rows if r["task"] == "task0")
    assert shared["student_acc"] in {w + i / 1000 for w in range(1, WRITERS + 1) for i in range(ROWS_EACH)}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
