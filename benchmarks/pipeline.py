"""Where each stage of a weak-to-strong experiment spends its time and memory: inside compiled steps,
compiling, or outside them (task loading, model building, tokenization, transfers, Python, checkpoints).

    python benchmarks/pipeline.py [--config experiments/quickstart.py] [--config.x=y ...] [--json PATH]

The config's seeds run one after another in this process, as `w2s run` runs them, into a temporary
output folder, so no stage is skipped as cached: the first seed's stages pay the process's one-time
costs (task files parsed, libraries' first use, compiles), later seeds' do not
(`--config.seeds=0,` measures the first alone). Nothing in `w2s` is changed: `jax.jit` is wrapped
while the experiment runs, and so are the `Experiment` stage methods.

`--timing async` (the default) leaves the run as it runs: each compiled call is timed from its
dispatch until its outputs are ready by a watcher thread, so host work done while a call computes
is not outside. `--timing blocking` blocks every call until it is done: nothing overlaps, and all
host work counts as outside (an upper bound).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import queue
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator
from unittest import mock

import jax
import ml_collections

from harness import host_cpu
from w2s.config import apply_overrides, load_config_file
from w2s import train as w2s_train
from w2s.checkpoint import write_json_atomic
from w2s.experiment import Experiment
from w2s.runtime import freeze_startup_objects, host_memory, recycle_host_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOAL_OUTSIDE_FRAC = 0.10
STATUS = pathlib.Path("/proc/self/status")
NOTES = {
    "common": (
        "compile s: calls of a jitted function that grew its cache (trace + compile + that first run, "
        "blocked until done); counted as neither in-step nor outside.",
        "outside s = wall - compile - in-step: task loading, model building, tokenization, host<->device "
        "transfers, eager ops, the Python loop, checkpoints; outside % is of the stage's wall time.",
        "peak RSS: the kernel's high-water mark, reset at each stage start; peak device: the backend's "
        "high-water mark up to the stage's end (it cannot be reset; n/a where the backend reports none).",
    ),
    "async": (
        "in-step s: time in which at least one other call of the jitted functions w2s builds (train step, "
        "predict forward, optimizer init) is in flight, from its dispatch until a watcher thread sees its "
        "outputs ready; host work done meanwhile is hidden behind it, as in a normal run.",
    ),
    "blocking": (
        "in-step s: all other calls of the jitted functions w2s builds (train step, predict forward, "
        "optimizer init), each blocked until its outputs are ready.",
        "Blocking every compiled call removes the overlap of host and device work that async dispatch "
        "gives, so this counts as outside host work a normal run hides behind device work (an upper bound).",
    ),
}


@dataclasses.dataclass
class Clock:
    """(start, end, compiled?) of every timed call; a stage's share is what falls inside its wall time."""

    blocking: bool = False
    calls: list[tuple[float, float, bool]] = dataclasses.field(default_factory=list)
    in_flight: queue.Queue = dataclasses.field(default_factory=queue.Queue)  # (start, outputs) to watch
    busy: bool = False
    watcher: threading.Thread | None = None

    def dispatched(self, start: float, outputs: Any) -> None:
        """A call is in flight from `start` until its outputs are ready, which the watcher records."""
        if self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, daemon=True, name="pipeline-bench-watcher")
            self.watcher.start()
        self.in_flight.put((start, outputs))

    def _watch(self) -> None:
        """Ends each dispatched call when its outputs are ready, in dispatch order."""
        while True:
            start, outputs = self.in_flight.get()
            for leaf in jax.tree.leaves(outputs):
                # A leaf donated to a later call (in flight until after this one) raises, as does a
                # failed computation (whose error the caller sees): neither stops the watcher.
                with contextlib.suppress(Exception):
                    leaf.block_until_ready()
            self.calls.append((start, time.perf_counter(), False))
            self.in_flight.task_done()


CLOCK = Clock()


def covered(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] inside at least one interval."""
    total, reach = 0.0, lo
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, hi)
        if end > start:
            total, reach = total + end - start, end
    return total


class TimedJit:
    """A jitted function whose calls are timed from dispatch to completion: waited for when they
    compile or under blocking timing, else handed to the watcher thread. Calls made while another
    is running (i.e. while it is being traced) pass straight through, so no time is counted twice."""

    def __init__(self, jitted: Any):
        self._jitted = jitted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jitted, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if CLOCK.busy:
            return self._jitted(*args, **kwargs)
        cached = self._jitted._cache_size()
        CLOCK.busy = True
        start = time.perf_counter()
        try:
            out = self._jitted(*args, **kwargs)
            compiled = self._jitted._cache_size() > cached
            if compiled or CLOCK.blocking:
                jax.block_until_ready(out)
                CLOCK.calls.append((start, time.perf_counter(), compiled))
            else:
                CLOCK.dispatched(start, out)
        finally:
            CLOCK.busy = False
        return out


def timing_jit(real_jit: Callable[..., Any]) -> Callable[..., Any]:
    """`jax.jit` that times what `w2s` compiles; jits made elsewhere (libraries) stay untouched."""

    def jit(*args: Any, **kwargs: Any) -> Any:
        jitted = real_jit(*args, **kwargs)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return TimedJit(jitted) if caller.startswith("w2s.") and hasattr(jitted, "_cache_size") else jitted

    return jit


@dataclasses.dataclass
class Row:
    stage: str
    seed: int | None  # None: the whole run
    wall_s: float
    compile_s: float
    in_step_s: float
    outside_s: float
    outside_frac: float
    compiles: int
    calls: int
    peak_rss_mib: float
    rss_growth_mib: float
    peak_device_mib: float | None

    @property
    def passed(self) -> bool:
        return self.outside_frac <= GOAL_OUTSIDE_FRAC


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    line = next(l for l in STATUS.read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def device_peak_mib() -> float | None:
    stats = jax.devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


@contextlib.contextmanager
def measure(stage: str, seed: int | None, rows: list[Row]) -> Iterator[None]:
    """Appends the stage's row once it finishes; VmHWM is reset first (clear_refs 5) so the peak is its own."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    rss_start = status_mib("VmRSS")
    start = time.perf_counter()
    yield
    end = time.perf_counter()
    CLOCK.in_flight.join()  # calls dispatched in the stage have ended (their time past `end` is clipped)
    calls = [c for c in CLOCK.calls if c[1] > start and c[0] < end]
    compile_s = covered([(a, b) for a, b, compiled in calls if compiled], start, end)
    in_step_s = covered([(a, b) for a, b, _ in calls], start, end) - compile_s
    wall = end - start
    outside = wall - compile_s - in_step_s
    peak_rss = status_mib("VmHWM")
    compiles = sum(compiled for a, _, compiled in calls if a >= start)
    rows.append(Row(
        stage, seed, wall, compile_s, in_step_s, outside, outside / wall, compiles,
        sum(a >= start for a, _, _ in calls) - compiles, peak_rss, peak_rss - rss_start, device_peak_mib(),
    ))


def stage_wrapper(method: Callable[..., dict], stage: Callable[..., str], rows: list[Row]) -> Callable[..., dict]:
    def wrapper(self: Experiment, *args: Any) -> dict:
        with measure(stage(*args), self.seed, rows):
            return method(self, *args)

    return wrapper


def run_measured(experiments: list[Experiment], weak_only: bool = False) -> list[Row]:
    """Runs every stage of each experiment (seed) in turn, or only its weak stage, with timed
    compiled calls; the last row is the whole run."""
    rows: list[Row] = []
    # w2s.train caches compiled forwards: start and end without timing wrappers in that cache.
    w2s_train._compiled_apply.cache_clear()
    with contextlib.ExitStack() as stack:
        stack.callback(w2s_train._compiled_apply.cache_clear)
        stack.enter_context(mock.patch.object(jax, "jit", timing_jit(jax.jit)))
        for name, stage in (("run_weak", lambda: "weak"), ("run_ceiling", lambda: "ceiling"),
                            ("run_student", lambda loss: f"student_{loss}")):
            wrapped = stage_wrapper(getattr(Experiment, name), stage, rows)
            stack.enter_context(mock.patch.object(Experiment, name, wrapped))
        total: list[Row] = []
        with measure("total", None, total):
            for experiment in experiments:
                if weak_only:
                    experiment.run_dir.mkdir(parents=True, exist_ok=True)
                    experiment.run_weak()
                else:
                    experiment.run()
    # Each stage reset the high-water mark, so the run's peak is the largest of all.
    total[0].peak_rss_mib = max(r.peak_rss_mib for r in rows + total)
    return rows + total


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def print_table(rows: list[Row]) -> None:
    print(f"{'stage':<18}{'seed':>5}{'wall s':>9}{'compile s':>11}{'in-step s':>11}{'outside s':>11}{'outside %':>11}"
          f"{'compiles':>10}{'calls':>7}{'peak RSS MiB':>14}{'+RSS MiB':>10}{'peak dev MiB':>14}  goal")
    for r in rows:
        print(f"{r.stage:<18}{'' if r.seed is None else r.seed:>5}{r.wall_s:>9.2f}{r.compile_s:>11.2f}{r.in_step_s:>11.2f}{r.outside_s:>11.2f}"
              f"{100 * r.outside_frac:>10.1f}%{r.compiles:>10}{r.calls:>7}{r.peak_rss_mib:>14.0f}"
              f"{r.rss_growth_mib:>10.0f}{fmt(r.peak_device_mib, '.0f'):>14}  {'PASS' if r.passed else 'FAIL'}")


def experiment_config(argv: list[str] | None, description: str,
                      add_options: Callable[[argparse.ArgumentParser], Any] = lambda p: None,
                      ) -> tuple[argparse.Namespace, list[str], ml_collections.ConfigDict]:
    """(args, overrides, config) of a benchmark that runs an experiment config: --config FILE (the
    quickstart by default), --json PATH and what `add_options` adds; every other argument is a
    --config.x=y override."""
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.py"), help="experiment config file")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    add_options(p)
    args, overrides = p.parse_known_args(argv)
    return args, overrides, apply_overrides(load_config_file(args.config), overrides)


def pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timing", choices=("async", "blocking"), default="async",
                   help="async: compiled calls run as in a normal run, host work done meanwhile is hidden; "
                        "blocking: every call is waited for, so all host work counts as outside")
    p.add_argument("--weak-only", action="store_true", help="run only each seed's weak stage (quick)")


def main(argv: list[str] | None = None) -> dict:
    args, overrides, cfg = experiment_config(argv, __doc__.split("\n\n")[0], pipeline_options)
    print(f"host memory: {recycle_host_memory()}")
    freeze_startup_objects()  # as the `w2s` command does once it has imported what a run needs
    CLOCK.blocking = args.timing == "blocking"
    seeds = list(cfg.seeds)
    with tempfile.TemporaryDirectory(prefix="w2s_pipeline_bench_") as tmp:
        cfg = apply_overrides(cfg, [f"--config.output_dir={tmp}/results", f"--config.checkpoint_dir={tmp}/ckpt"])
        rows = run_measured([Experiment(cfg, seed) for seed in seeds], args.weak_only)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}) x {jax.device_count()}; host: {host_cpu()}; config {args.config}, "
          f"seeds {seeds}, task {cfg.task} {dict(cfg.task_options)}; timing {args.timing}"
          f"{', weak stages only' if args.weak_only else ''}")
    print_table(rows)
    print(f"goal: at most {100 * GOAL_OUTSIDE_FRAC:.0f}% of each stage's wall time outside compiled steps "
          "(reported, not enforced).")
    notes = NOTES["common"] + NOTES[args.timing]
    for note in notes:
        print("- " + note)
    out = {
        "device": f"{device.platform} ({device.device_kind}) x {jax.device_count()}", "host_cpu": host_cpu(),
        "config": args.config, "overrides": overrides, "seeds": seeds, "goal_outside_frac": GOAL_OUTSIDE_FRAC,
        "timing": args.timing, "weak_only": args.weak_only,
        "rows": [{**dataclasses.asdict(r), "passed": r.passed} for r in rows], "notes": list(notes),
        "host_memory": host_memory(),
    }
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
