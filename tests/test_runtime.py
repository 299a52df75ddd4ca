"""Host memory for XLA:CPU: recycled blocks instead of a freshly faulted-in buffer at every call."""
import os
import subprocess
import sys
import types

import pytest

from w2s import runtime

GLIBC = runtime._glibc()

# A jitted call whose 256 MB intermediate (x @ x.T, the input of a second matmul, so it is
# materialised) lives in XLA's per-call temporary buffer;
# prints what recycle_host_memory did, then the page faults of one call once warm.
FAULTS_PER_CALL = """
import resource
import jax, jax.numpy as jnp
from w2s.runtime import recycle_host_memory
print(recycle_host_memory())
f = jax.jit(lambda x: jnp.sum((x @ x.T) @ x))
x = jnp.ones((8192, 64), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""

# Bytes a process gives back to the kernel when it frees a 2.6 GB block (past any trim threshold
# mallopt's int could set, so only "never trim" keeps it).
RETURNED_ON_FREE = """
import os
import numpy as np
from w2s.runtime import recycle_host_memory
print(recycle_host_memory())
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
block = np.ones(2_600_000_000, np.uint8)
held = rss()
del block
print(held - rss())
"""


def child(code: str, **env: str) -> list[str]:
    """stdout lines of `code` in a fresh CPU-only process, so JAX starts after the call under test."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_recycled_host_memory_stops_faulting_in_each_calls_temporary_buffer():
    recycled, recycled_faults = child(FAULTS_PER_CALL)
    default, default_faults = child(FAULTS_PER_CALL, **{runtime.OPT_OUT: "0"})
    assert recycled == runtime.RECYCLED and default == f"glibc defaults: {runtime.OPT_OUT}=0"
    # glibc's default maps the 256 MB afresh each call: one fault per 4 KiB page (or per huge page).
    assert int(default_faults) > 10_000, default_faults
    assert int(recycled_faults) < int(default_faults) // 20, (recycled_faults, default_faults)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_recycled_host_memory_keeps_even_the_largest_freed_block():
    recycled, recycled_returned = child(RETURNED_ON_FREE)
    default, default_returned = child(RETURNED_ON_FREE, **{runtime.OPT_OUT: "0"})
    assert int(default_returned) > 2_500_000_000, default_returned  # unmapped at once
    assert int(recycled_returned) < 100_000_000, recycled_returned


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_w2s_command_recycles_host_memory_before_its_work_starts_jax():
    code = ("import sys\nfrom w2s import cli, runtime\n"
            "sys.exit(cli.main(['run', '-'], entry=lambda args, rest: print(runtime.host_memory())))")
    assert child(code) == [runtime.RECYCLED]


def test_started_jax_keeps_glibc_defaults():
    import jax

    jax.devices()  # this process's JAX has started: its threads already have their own arenas
    assert "JAX had started" in runtime.recycle_host_memory() or not GLIBC
    assert runtime.host_memory().startswith("glibc defaults")


@pytest.mark.parametrize("platforms, plugins, expected", [
    ("cuda,cpu", [], "JAX_PLATFORMS=cuda,cpu: the CPU is not JAX's first backend"),
    ("", ["jax-cuda13-plugin"], "an accelerator plug-in is installed (jax-cuda13-plugin)"),
    ("cpu", ["jax-cuda13-plugin"], None),  # told to compute on the CPU: recycle despite the plug-in
    ("", [], None),
])
def test_only_a_cpu_backend_gets_recycled_memory(monkeypatch, platforms, plugins, expected):
    from jax._src import xla_bridge

    if not GLIBC:
        pytest.skip("mallopt is glibc's")
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setattr(runtime, "jax", types.SimpleNamespace(config=types.SimpleNamespace(jax_platforms=platforms)))
    monkeypatch.setattr(runtime, "accelerator_plugins", lambda: plugins)
    monkeypatch.delenv(runtime.OPT_OUT, raising=False)
    assert runtime._why_not() == expected
    monkeypatch.setenv(runtime.OPT_OUT, "0")
    assert runtime._why_not() == f"{runtime.OPT_OUT}=0"


def test_versions_record_how_host_memory_is_allocated():
    from w2s import experiment

    assert experiment.versions()["host_memory"] == runtime.host_memory()


def test_the_w2s_command_freezes_what_its_imports_made_and_later_garbage_is_still_freed():
    """Frozen objects are outside the collector's generations (its full collections skip them); a
    cycle made afterwards is still collected."""
    code = """
import gc, sys, weakref
from w2s import cli

def entry(args, rest):
    from w2s import experiment
    scanned = {id(o) for o in gc.get_objects()}
    print(gc.get_freeze_count() > 50_000, id(experiment.Experiment) in scanned, id(experiment.run_experiment) in scanned)
    class Node:
        pass
    node = Node()
    node.self = node
    ref = weakref.ref(node)
    del node
    gc.collect()
    print(ref() is None)

sys.exit(cli.main(["run", "-"], entry=entry))
"""
    assert child(code) == ["True False False", "True"]
