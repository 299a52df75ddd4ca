"""Device mesh and shardings: a `data` axis for data parallelism, an `fsdp` axis that shards
parameters and optimizer state (and also splits the batch, as FSDP does), and a `model` axis that
splits attention heads and the MLP hidden Megatron-style (tensor parallelism).

The mesh spans every process's devices; each process feeds only the batch rows its own devices hold.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s.config import ConfigError
from w2s.models.family import parallel_modules

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Tensor parallelism: the projections that widen (q/k/v, MLP in) split their output features over
# `model`, the ones that narrow back (attention out, MLP out) their input features, so each device
# computes whole heads and a slice of the MLP hidden and only the narrowing matmul all-reduces. Each
# model family names its modules of either kind (w2s/models/family.py); causal_lm.py's lm_head
# splits the vocabulary.
LM_HEAD = "lm_head"


def _describe(sizes: dict[str, int]) -> str:
    """'data=2 x fsdp=4' (a model axis of 1 is left out, as it splits nothing)."""
    return " x ".join(f"{k}={v}" for k, v in sizes.items() if k != "model" or v != 1)


def make_mesh(data: int = -1, fsdp: int = 1, model: int = 1, *, devices: list[Any] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh over all processes' devices; -1 on one axis takes what the others leave.

    Checked before anything compiles, so a bad shape names the numbers.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = {"data": data, "fsdp": fsdp, "model": model}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got {_describe(sizes)}.")
    for name, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"mesh: {name}={size} must be a positive size or -1.")
    fixed = {name: size for name, size in sizes.items() if size != -1}
    product = math.prod(fixed.values())
    if free:
        if n % product:
            raise ConfigError(f"mesh: {_describe(fixed)} does not divide the {n} devices.")
        sizes[free[0]] = n // product
    elif product != n:
        raise ConfigError(f"mesh: {_describe(sizes)} = {product} devices, but there are {n}.")
    shape = tuple(sizes[name] for name in AXES)
    return Mesh(mesh_utils.create_device_mesh(shape, devices), AXES)


def batch_size_per_step(mesh: Mesh) -> int:
    """How many devices split each batch: batches must be a multiple of this."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(mesh: Mesh, batch_size: int, what: str = "batch size") -> None:
    shards = batch_size_per_step(mesh)
    if batch_size % shards:
        raise ConfigError(
            f"{what} {batch_size} is not divisible by the {shards} batch shards of the mesh "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}; the model={mesh.shape['model']} axis "
            "does not split batches)."
        )


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Batch arrays split their example axis (after `leading_axes` unsplit axes) over data and fsdp."""
    return NamedSharding(mesh, P(*([None] * leading_axes), BATCH_AXES))


def process_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
    """The rows of a batch this process feeds: those its own devices hold, in order.

    That is what jax.make_array_from_process_local_data expects, whatever the device layout.
    """
    check_batch_size(mesh, batch_size)
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    starts = sorted({index[0].indices(batch_size)[:2] for index in index_map.values()})
    return np.concatenate([np.arange(start, stop) for start, stop in starts])


def check_heads(mesh: Mesh, num_heads: int, num_kv_heads: int, what: str) -> None:
    """Megatron splits whole heads, so the model axis must divide the query and key/value heads."""
    model = mesh.shape["model"]
    if num_heads % model or num_kv_heads % model:
        raise ConfigError(
            f"{what}: mesh model={model} does not divide its {num_heads} attention heads and "
            f"{num_kv_heads} key/value heads; choose a model axis that divides both."
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _tensor_parallel_axis(names: tuple[str, ...]) -> int | None:
    """The axis a Megatron rule splits over `model` for a parameter at this path, if any."""
    if len(names) < 2:
        return None
    module, param = names[-2], names[-1]
    column, row = parallel_modules()
    if module in column or module == LM_HEAD:
        return {"kernel": 1, "bias": 0}.get(param)
    if module in row and param == "kernel":
        return 0
    return None


def param_spec(names: tuple[str, ...], shape: tuple[int, ...], fsdp_size: int, model_size: int,
               min_size: int = 2**12) -> P:
    """A tensor-parallel layer gives `model` its Megatron axis and fsdp the largest remaining
    divisible axis; other arrays (embeddings) give fsdp their largest divisible axis and `model` the
    largest remaining one. Small arrays stay replicated."""
    if math.prod(shape) < min_size:
        return P()
    spec: list[str | None] = [None] * len(shape)
    by_size = sorted(range(len(shape)), key=lambda a: -shape[a])
    tp = _tensor_parallel_axis(names)
    if tp is not None and (tp >= len(shape) or shape[tp] % model_size):
        # e.g. GPT-2's lm_head over 50257 words, or Adafactor's row means of a kernel (one axis):
        # this array takes the generic rule
        tp = None
    order = [("model", model_size, tp), ("fsdp", fsdp_size, None)]
    if tp is None:
        order.reverse()
    for axis_name, size, preferred in order:
        if size == 1:
            continue
        candidates = [preferred] if preferred is not None else by_size
        free = [a for a in candidates if spec[a] is None and shape[a] % size == 0]
        if free:
            spec[free[0]] = axis_name
    return P(*spec)


def _names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """Module and parameter names of a pytree path (optimizer moments mirror the parameters' paths)."""
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str))


def state_shardings(mesh: Mesh, tree: Any) -> Any:
    """NamedShardings for a pytree of arrays (parameters, optimizer state) by `param_spec`."""
    fsdp_size, model_size = mesh.shape["fsdp"], mesh.shape["model"]

    def one(path, x):
        shape = tuple(getattr(x, "shape", ()))
        return NamedSharding(mesh, param_spec(_names(path), shape, fsdp_size, model_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def per_device_bytes(tree: Any) -> dict[Any, int]:
    """Bytes each of this process's devices holds of a pytree of sharded arrays (for memory checks)."""
    totals: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals
