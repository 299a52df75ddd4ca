"""Where each stage of a weak-to-strong experiment spends its time and memory: inside compiled steps,
compiling, or outside them (task loading, model building, tokenization, transfers, Python, checkpoints).

    python benchmarks/pipeline.py [--config experiments/quickstart.py] [--config.x=y ...] [--json PATH]

The config's seeds run one after another in this process, as `w2s run` runs them, into a temporary
output folder, so no stage is skipped as cached: the first seed's stages pay the process's one-time
costs (task files parsed, libraries' first use, compiles), later seeds' do not
(`--config.seeds=0,` measures the first alone). Nothing in `w2s` is changed: `jax.jit` is wrapped
while the experiment runs, and so are the `Experiment` stage methods.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Iterator
from unittest import mock

import jax
import ml_collections

from w2s.config import apply_overrides, load_config_file
from w2s import train as w2s_train
from w2s.checkpoint import write_json_atomic
from w2s.pipeline import Experiment
from w2s.runtime import host_memory, recycle_host_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOAL_OUTSIDE_FRAC = 0.10
STATUS = pathlib.Path("/proc/self/status")
NOTES = (
    "compile s: calls of a jitted function that grew its cache (trace + compile + that first run); "
    "counted as neither in-step nor outside.",
    "in-step s: all other calls of the jitted functions w2s builds (train step, predict forward, "
    "optimizer init), each blocked until its outputs are ready.",
    "outside s = wall - compile - in-step: task loading, model building, tokenization, host<->device "
    "transfers, eager ops, the Python loop, checkpoints; outside % is of the stage's wall time.",
    "Blocking every compiled call removes the overlap of host and device work that async dispatch "
    "gives, so a normal run hides part of the outside time behind device work.",
    "peak RSS: the kernel's high-water mark, reset at each stage start; peak device: the backend's "
    "high-water mark up to the stage's end (it cannot be reset; n/a where the backend reports none).",
)


@dataclasses.dataclass
class Clock:
    """Running totals of compiled calls; a stage's share is the difference across it."""

    compile_s: float = 0.0
    in_step_s: float = 0.0
    compiles: int = 0
    calls: int = 0
    busy: bool = False


CLOCK = Clock()


class TimedJit:
    """A jitted function whose calls are timed to completion. Calls made while another is running
    (i.e. while it is being traced) pass straight through, so no time is counted twice."""

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
            out = jax.block_until_ready(self._jitted(*args, **kwargs))
        finally:
            CLOCK.busy = False
        elapsed = time.perf_counter() - start
        if self._jitted._cache_size() > cached:
            CLOCK.compile_s += elapsed
            CLOCK.compiles += 1
        else:
            CLOCK.in_step_s += elapsed
            CLOCK.calls += 1
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
    rss_start, before = status_mib("VmRSS"), dataclasses.replace(CLOCK)
    start = time.perf_counter()
    yield
    wall = time.perf_counter() - start
    compile_s, in_step_s = CLOCK.compile_s - before.compile_s, CLOCK.in_step_s - before.in_step_s
    outside = wall - compile_s - in_step_s
    peak_rss = status_mib("VmHWM")
    rows.append(Row(
        stage, seed, wall, compile_s, in_step_s, outside, outside / wall, CLOCK.compiles - before.compiles,
        CLOCK.calls - before.calls, peak_rss, peak_rss - rss_start, device_peak_mib(),
    ))


def stage_wrapper(method: Callable[..., dict], stage: Callable[..., str], rows: list[Row]) -> Callable[..., dict]:
    def wrapper(self: Experiment, *args: Any) -> dict:
        with measure(stage(*args), self.seed, rows):
            return method(self, *args)

    return wrapper


def run_measured(experiments: list[Experiment]) -> list[Row]:
    """Runs every stage of each experiment (seed) in turn with timed compiled calls; the last row is
    the whole run."""
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


def experiment_config(argv: list[str] | None, description: str
                      ) -> tuple[argparse.Namespace, list[str], ml_collections.ConfigDict]:
    """(args, overrides, config) of a benchmark that runs an experiment config: --config FILE (the
    quickstart by default) and --json PATH; every other argument is a --config.x=y override."""
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.py"), help="experiment config file")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args, overrides = p.parse_known_args(argv)
    return args, overrides, apply_overrides(load_config_file(args.config), overrides)


def main(argv: list[str] | None = None) -> dict:
    args, overrides, cfg = experiment_config(argv, __doc__.split("\n\n")[0])
    print(f"host memory: {recycle_host_memory()}")
    seeds = list(cfg.seeds)
    with tempfile.TemporaryDirectory(prefix="w2s_pipeline_bench_") as tmp:
        cfg = apply_overrides(cfg, [f"--config.output_dir={tmp}/results", f"--config.checkpoint_dir={tmp}/ckpt"])
        rows = run_measured([Experiment(cfg, seed) for seed in seeds])
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}) x {jax.device_count()}; config {args.config}, "
          f"seeds {seeds}, task {cfg.task} {dict(cfg.task_options)}")
    print_table(rows)
    print(f"goal: at most {100 * GOAL_OUTSIDE_FRAC:.0f}% of each stage's wall time outside compiled steps "
          "(reported, not enforced).")
    for note in NOTES:
        print("- " + note)
    out = {
        "device": f"{device.platform} ({device.device_kind}) x {jax.device_count()}",
        "config": args.config, "overrides": overrides, "seeds": seeds, "goal_outside_frac": GOAL_OUTSIDE_FRAC,
        "rows": [{**dataclasses.asdict(r), "passed": r.passed} for r in rows], "notes": list(NOTES),
        "host_memory": host_memory(),
    }
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
