"""Device mesh and shardings: a `data` axis for data parallelism and an `fsdp` axis that shards
parameters and optimizer state (and also splits the batch, as FSDP does)."""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: list[Any] | None = None) -> Mesh:
    """A (data, fsdp) mesh over all devices; -1 on one axis takes whatever the other leaves.

    Checked before anything compiles, so a bad shape names the numbers.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of data and fsdp may be -1.")
    for name, size in (("data", data), ("fsdp", fsdp)):
        if size == 0 or size < -1:
            raise ValueError(f"mesh: {name}={size} must be a positive size or -1.")
    if data == -1:
        if n % fsdp:
            raise ValueError(f"mesh: fsdp={fsdp} does not divide the {n} devices.")
        data = n // fsdp
    if fsdp == -1:
        if n % data:
            raise ValueError(f"mesh: data={data} does not divide the {n} devices.")
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh: data={data} x fsdp={fsdp} = {data * fsdp} devices, but there are {n}.")
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def batch_size_per_step(mesh: Mesh) -> int:
    """How many devices split each batch: batches must be a multiple of this."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(mesh: Mesh, batch_size: int, what: str = "batch size") -> None:
    shards = batch_size_per_step(mesh)
    if batch_size % shards:
        raise ValueError(
            f"{what} {batch_size} is not divisible by the {shards} batch shards of the mesh "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})."
        )


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Batch arrays split their example axis (after `leading_axes` unsplit axes) over data and fsdp."""
    return NamedSharding(mesh, P(*([None] * leading_axes), BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2**12) -> P:
    """Shards the largest axis divisible by the fsdp size; small arrays stay replicated."""
    if fsdp_size == 1 or math.prod(shape) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, tree: Any) -> Any:
    """NamedShardings for a pytree of arrays (parameters, optimizer state) by the fsdp rule."""
    fsdp_size = mesh.shape["fsdp"]

    def one(x):
        shape = getattr(x, "shape", ())
        return NamedSharding(mesh, fsdp_spec(tuple(shape), fsdp_size))

    return jax.tree.map(one, tree)


def per_device_bytes(tree: Any) -> dict[Any, int]:
    """Bytes each device holds of a pytree of sharded arrays (for memory checks)."""
    totals: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals
