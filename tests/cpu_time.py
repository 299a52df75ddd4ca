"""A pytest plugin that prints the CPU seconds of each test file: user + system time of pytest and of
the subprocesses it waited for, from each test's setup to its teardown (a session fixture counts
where it is first built). On a shared machine wall-clock time depends on the load; CPU time does not.

    python -m pytest -q -p tests.cpu_time tests/test_reliability.py tests/test_sources.py
"""
from __future__ import annotations

import collections
import resource

import pytest

_per_file: collections.Counter[str] = collections.Counter()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    start = _cpu_seconds()
    yield
    _per_file[item.location[0]] += _cpu_seconds() - start


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_sep("-", "CPU seconds per test file (user + sys, with waited-for subprocesses)")
    for path, seconds in sorted(_per_file.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
    terminalreporter.write_line(f"{sum(_per_file.values()):8.1f}  all tests; "
                                f"{_cpu_seconds():.1f} for the whole session with imports and collection")
