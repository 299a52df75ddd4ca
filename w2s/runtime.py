"""The process JAX runs in: which accelerator plug-ins it has, and host memory set up for XLA:CPU.

On the CPU, every call of a compiled program gets one temporary buffer for its intermediates
(679 MB for a MiniLM train step of 32 x 64 tokens), allocated by one of XLA's worker threads. glibc
serves so large a block from a fresh mmap and unmaps it when it is freed, so each step faults the
whole buffer in again, page by page (README, "Speed", has the measurements).
`recycle_host_memory` makes glibc keep freed blocks for reuse instead (one arena, no per-block
mmap, no trimming), which removes those faults. The price: the process keeps its peak host memory
until it exits, and compiles take longer (XLA's compiler threads share the one arena). The `w2s`
command and the benchmarks call it first thing; W2S_RECYCLE_HOST_MEMORY=0 keeps glibc's defaults.

`freeze_startup_objects` takes what the imports made out of Python's cyclic garbage collector's
view, so the full collections a run's allocations trigger scan only what the run made.
"""
from __future__ import annotations

import ctypes
import gc
import os
from importlib import metadata

import jax

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")
OPT_OUT = "W2S_RECYCLE_HOST_MEMORY"  # set to 0 to keep glibc's defaults

RECYCLED = "recycled: one glibc arena, no mmap per block, no trimming"
NOT_CALLED = "glibc defaults (recycle_host_memory was not called)"
_host_memory = NOT_CALLED


def accelerator_plugins() -> list[str]:
    """Installed distributions that give JAX a GPU or TPU backend, e.g. jax-cuda13-plugin."""
    names = {d.metadata["Name"] for d in metadata.distributions()}
    return sorted(n for n in names if n and n.lower().startswith(_ACCELERATOR_PLUGINS))


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError):  # no such name outside glibc
        return False


def _why_not() -> str | None:
    """Why host memory should keep its defaults here, or None if it may be recycled."""
    from jax._src import xla_bridge  # jax.distributed.initialize asks the same question

    if os.environ.get(OPT_OUT) == "0":
        return f"{OPT_OUT}=0"
    if not _glibc():
        return "not a glibc system"
    if xla_bridge.backends_are_initialized():
        return "JAX had started before recycle_host_memory was called (its threads had their arenas)"
    platforms = jax.config.jax_platforms
    if platforms:
        if platforms.split(",")[0].strip() != "cpu":
            return f"JAX_PLATFORMS={platforms}: the CPU is not JAX's first backend"
    elif plugins := accelerator_plugins():
        return f"an accelerator plug-in is installed ({', '.join(plugins)})"
    return None


def recycle_host_memory() -> str:
    """Lets XLA:CPU reuse freed host memory instead of faulting in a new buffer at every call.

    Only where JAX will compute on the CPU and has not started yet: its worker threads must find
    the one-arena setting on their first allocation. Returns what host memory now does, which
    `host_memory()` also reports (results record it beside their timings).
    """
    global _host_memory
    if reason := _why_not():
        _host_memory = f"glibc defaults: {reason}"
        return _host_memory
    mallopt = ctypes.CDLL(None).mallopt
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)):  # -1: never
        if mallopt(param, value) != 1:
            _host_memory = f"partly recycled: glibc refused mallopt({param}, {value})"
            return _host_memory
    _host_memory = RECYCLED
    return _host_memory


def host_memory() -> str:
    """How this process allocates host memory, in words."""
    return _host_memory


def freeze_startup_objects() -> int:
    """Moves every object alive now (the modules, classes and functions the imports made: some
    170,000 for a run) to the collector's permanent generation, which its collections skip; returns
    how many are frozen. Called by the `w2s` command once its imports are done, so that a full
    collection scans only what the run made (README, "Speed", has what it saves). The price: a
    frozen object that later becomes cyclic garbage is never freed, which import-time objects
    rarely become."""
    gc.collect()  # garbage made while importing is freed, not frozen
    gc.freeze()
    return gc.get_freeze_count()
