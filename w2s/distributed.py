"""Joining a multi-process run (jax.distributed): the same program on every process and host.

A single-process run needs nothing. A run becomes multi-process when the config names any of
coordinator_address / num_processes / process_id (JAX finds the others from the cluster: SLURM,
Cloud TPU metadata), or when a launcher that JAX reads on its own started several processes.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

KEYS = ("coordinator_address", "num_processes", "process_id")


def launched_by_cluster() -> bool:
    """srun with more than one task, a GKE TPU slice of several hosts, or JAX's own variable."""
    env = os.environ
    return (
        "JAX_COORDINATOR_ADDRESS" in env
        or (int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env)
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def _is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def initialize(cfg: Any = None) -> None:
    """Joins the run before any JAX computation; a no-op for a single process or when already joined.

    `cfg` is the config's `distributed` block (a mapping of KEYS; None = find it or not needed).
    A loopback coordinator listens on loopback only (JAX would otherwise bind every interface).
    """
    settings = {key: (cfg or {}).get(key) for key in KEYS}
    if jax.distributed.is_initialized():
        return
    if all(value is None for value in settings.values()) and not launched_by_cluster():
        return
    address = settings["coordinator_address"]
    jax.distributed.initialize(**settings, coordinator_bind_address=address if _is_loopback(address) else None)


def is_main() -> bool:
    """Whether this process writes the files every process shares (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here for all others, e.g. until process 0 has written a file they read."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def widest(longest: int) -> int:
    """The longest row of a batch across processes, given this process's longest row: one small
    collective per batch, so that every process pads its rows of the batch to the same width."""
    if jax.process_count() == 1:
        return longest
    return int(np.max(multihost_utils.process_allgather(np.int32(longest))))


def total(count: int) -> int:
    """The sum of a host-side count (e.g. tokens fed since the last log) over all processes."""
    if jax.process_count() == 1:
        return count
    return int(np.sum(multihost_utils.process_allgather(np.int32(count))))
