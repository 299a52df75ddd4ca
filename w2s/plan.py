"""Compiled memory plans: does a model's train step fit a device, and on how many?

`w2s plan CONFIG` lowers and compiles the real train step (w2s/train.py) of every model of a run or
sweep config, at its train config's micro-batch and max_length, on abstract arrays: no weights are
read and no accelerator is needed. The meshes are built from simulated CPU devices, and XLA's
buffer assignment for the compiled per-device program gives the arguments, outputs and temporaries
(compiled.memory_analysis()). Parameters and optimizer state per device come from their shardings.

A deep model's step compiles slowly on a CPU (Qwen2.5-7B's 28 layers: 71 s of CPU time), so
`extrapolate` compiles cuts of 2 and 4 layers and extends the step's memory linearly to all of
them (the layers are alike: every state array and kept activation is per layer); parameter and
optimizer bytes are always the whole model's. docs/scale.md compares it with whole compiles.

The numbers are XLA:CPU's plan. A GPU or TPU compiler fuses and schedules differently (and fused
attention keeps no [T, T] scores), so they are an estimate of the same program, not a measurement.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Iterator

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s import sharding, train
from w2s.config import ConfigError
from w2s.losses import LossTable, make_loss
from w2s.models import Classifier, TransformerConfig, resolve_model_dir
from w2s.models.family import family_of, new_backbone
from w2s.models.hub_configs import HUB_CONFIGS
from w2s.models.loading import read_hf_config
from w2s.models.sources import SOURCES

GiB = 2**30
# Memory per device; a plan fits when its peak leaves USABLE of it or less in use (the rest is the
# runtime's: CUDA context and libraries, allocator fragmentation). On GPUs JAX preallocates 75% by
# default: set XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 to use this much.
DEVICES = {"H100 80 GB": 80 * GiB, "A100 40 GB": 40 * GiB, "TPU v4 32 GiB": 32 * GiB, "TPU v5e 16 GiB": 16 * GiB}
USABLE = 0.9
MAX_DEVICES = 64  # the largest mesh searched
# LLVM's optimisation of the generated CPU code: a third of a compile, and no part of buffer
# assignment, whose sizes are what a plan reads (tests/test_plan.py compares with a default compile).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-device bytes of one compiled train step."""

    model: str
    mesh: tuple[int, int, int]  # data, fsdp, model
    remat: str
    optimizer: str
    micro_batch: int
    seq_len: int
    accum: int
    params: int  # parameter count (whole model)
    param_bytes: int  # per device, from the shardings
    opt_bytes: int
    grad_bytes: int  # one float32 parameter-shaped tree under the parameters' shardings
    argument_bytes: int  # memory_analysis(): the step's inputs (state and batch) ...
    output_bytes: int  # ... its outputs ...
    alias_bytes: int  # ... of which this much reuses donated inputs ...
    temp_bytes: int  # ... and its temporaries (activations kept for the backward pass, gradients, workspace)
    compile_s: float
    scan_layers: bool = False  # the blocks compiled as one scan (TrainConfig.scan_layers)
    compiled_layers: tuple[int, ...] = ()  # the layer cuts compiled and extrapolated from; () = all layers

    @property
    def peak_bytes(self) -> int:
        """What the step holds at once: inputs, outputs not written into donated inputs, temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def devices(self) -> int:
        return math.prod(self.mesh)

    def fits(self, capacity: int) -> bool:
        return self.peak_bytes <= USABLE * capacity

    def mesh_name(self) -> str:
        data, fsdp, model = self.mesh
        parts = [f"{k}={v}" for k, v in (("data", data), ("fsdp", fsdp), ("model", model)) if v > 1]
        return " ".join(parts) or "1 device"


def simulate_cpu_devices(n: int) -> int:
    """Asks for n CPU devices if JAX's CPU backend has not started yet and XLA_FLAGS does not set a
    count (the tests' 8 devices); returns how many there are."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return len(jax.devices("cpu"))
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # already started (a test's 8 devices): plans use what it has
        pass
    return len(jax.devices("cpu"))


def hf_config(name: str) -> dict[str, Any]:
    """A model's config.json: the hub ladders' from hub_configs (offline), offline names and folders
    from disk, other hub repos from the HF hub (config.json only, never the weights)."""
    if name in HUB_CONFIGS:
        return HUB_CONFIGS[name]
    if name in SOURCES or pathlib.Path(name).expanduser().is_dir():
        return read_hf_config(resolve_model_dir(name))
    try:
        return json.loads(pathlib.Path(huggingface_hub.hf_hub_download(name, "config.json")).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"plan: no config.json for model {name!r}: not a hub ladder model "
                          f"({', '.join(HUB_CONFIGS)}), an offline name, a folder, nor reachable on the hub "
                          f"({type(e).__name__}: {e}).") from e


def _bytes_per_device(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of abstract arrays under these shardings (shards are even, so any device)."""
    return sum(math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def abstract_classifier(cfg: TransformerConfig, pooling: str | None, dtype: Any) -> Classifier:
    """The classifier the pipeline builds (float32 parameters, `dtype` compute), without arrays."""
    return nnx.eval_shape(lambda: Classifier(new_backbone(cfg, dtype=dtype, param_dtype=jnp.float32,
                                                          rngs=nnx.Rngs(0)), pooling or family_of(cfg).pooling))


def abstract_train_state(params: Any, optimizer: Any, scalars: dict) -> dict:
    """ShapeDtypeStructs of init_train_state's state for these (abstract) params and host scalars."""
    return {**jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype), scalars),
            "params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params),
            "opt_state": jax.eval_shape(optimizer.init, params)}


def abstract_batch(accum: int, micro: int, seq_len: int) -> dict:
    tokens = jax.ShapeDtypeStruct((accum, micro, seq_len), jnp.int32)
    return {"input_ids": tokens, "attention_mask": tokens,
            "targets": jax.ShapeDtypeStruct((accum, micro, 2), jnp.float32)}


def plan_step(model: nnx.Module, mesh: jax.sharding.Mesh, train_cfg: train.TrainConfig, *, name: str = "",
              compile: bool = True) -> Plan:
    """Compiles the train step of `model` (abstract or concrete: only shapes are read) on `mesh` with
    train_cfg's optimizer, remat, micro-batch, accumulation and max_length, and reads its memory.
    compile=False reads only the state's bytes (the step's fields are then 0)."""
    sharding.check_batch_size(mesh, train_cfg.micro_batch_size, "plan: micro_batch_size")
    backbone_cfg = model.backbone.cfg
    sharding.check_heads(mesh, backbone_cfg.num_heads, backbone_cfg.num_kv_heads, f"plan: {name}")
    graphdef, params = nnx.split(model)
    optimizer, loss = train.make_optimizer(train_cfg), make_loss("xent")
    losses = LossTable.of(loss)
    scalars = train.state_scalars(1, 1, train_cfg.lr, losses, loss)  # values do not matter, only shapes
    state_sh = train.state_shardings(mesh, optimizer, params, scalars)
    state = abstract_train_state(params, optimizer, scalars)
    start, sizes = time.perf_counter(), dict.fromkeys(("argument", "output", "alias", "temp"), 0)
    if compile:
        step = train.make_train_step(graphdef, optimizer, losses, train_cfg.remat, train_cfg.scan_layers)
        batch = abstract_batch(train_cfg.accum_steps, train_cfg.micro_batch_size, train_cfg.max_length)
        lowered = train.jit_train_step(step, mesh, state_sh).lower(state, batch)
        memory = lowered.compile(compiler_options=FAST_COMPILE).memory_analysis()
        sizes = {k: getattr(memory, f"{k}_size_in_bytes") for k in sizes}
    compile_s = time.perf_counter() - start
    param_bytes = _bytes_per_device(state["params"], state_sh["params"])
    return Plan(
        model=name, mesh=tuple(mesh.shape[a] for a in sharding.AXES), remat=train_cfg.remat,
        optimizer=train_cfg.optimizer, micro_batch=train_cfg.micro_batch_size, seq_len=train_cfg.max_length,
        accum=train_cfg.accum_steps, params=sum(math.prod(x.shape) for x in jax.tree.leaves(params)),
        param_bytes=param_bytes, opt_bytes=_bytes_per_device(state["opt_state"], state_sh["opt_state"]),
        grad_bytes=param_bytes,  # gradients are float32 like the parameters and sharded like them
        argument_bytes=sizes["argument"], output_bytes=sizes["output"], alias_bytes=sizes["alias"],
        temp_bytes=sizes["temp"], compile_s=compile_s, scan_layers=train_cfg.scan_layers)


def candidate_mesh(devices: int, micro_batch: int, cfg: TransformerConfig) -> tuple[int, int, int] | None:
    """The mesh of `devices` devices that shards the most: fsdp as large as the micro-batch allows
    (it must divide it), the rest on `model` if that divides the heads; data parallelism never
    lowers per-device memory, so data=1. None if no such mesh."""
    for fsdp in sorted((f for f in range(1, devices + 1) if devices % f == 0 and micro_batch % f == 0), reverse=True):
        model = devices // fsdp
        if cfg.num_heads % model == 0 and cfg.num_kv_heads % model == 0:
            return 1, fsdp, model
    return None


class PlanCache:
    """Plans already compiled, one JSON line each, so an interrupted table resumes where it stopped."""

    def __init__(self, path: str | pathlib.Path | None):
        self.path = None if path is None else pathlib.Path(path)
        self.plans: dict[tuple, Plan] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                plan = Plan(**{**row, "mesh": tuple(row["mesh"]), "compiled_layers": tuple(row["compiled_layers"])})
                self.plans[self.key(plan.model, plan.mesh, plan.remat, plan.optimizer, plan.micro_batch,
                                    plan.seq_len, plan.accum, plan.compiled_layers, plan.scan_layers)] = plan

    @staticmethod
    def key(*parts: Any) -> tuple:
        return tuple(parts)

    def get(self, key: tuple) -> Plan | None:
        return self.plans.get(key)

    def add(self, key: tuple, plan: Plan) -> None:
        self.plans[key] = plan
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(dataclasses.asdict(plan)) + "\n")


EXTRAPOLATE_FROM = (2, 3)  # layer cuts compiled when extrapolating


def plan_extrapolated(model_cfg: TransformerConfig, pooling: str | None, dtype: Any, mesh: jax.sharding.Mesh,
                      train_cfg: train.TrainConfig, *, name: str = "") -> Plan:
    """plan_step of the whole model, its step's memory extended linearly from cuts of EXTRAPOLATE_FROM
    layers (a model that shallow is compiled whole)."""
    full = abstract_classifier(model_cfg, pooling, dtype)
    low, high = EXTRAPOLATE_FROM
    if model_cfg.num_layers <= high:
        return plan_step(full, mesh, train_cfg, name=name)
    cuts = [plan_step(abstract_classifier(dataclasses.replace(model_cfg, num_layers=k), pooling, dtype),
                      mesh, train_cfg, name=name) for k in EXTRAPOLATE_FROM]
    layers = (model_cfg.num_layers - low) / (high - low)

    def extend(field: str) -> int:
        a, b = getattr(cuts[0], field), getattr(cuts[1], field)
        return round(a + layers * (b - a))

    exact = plan_step(full, mesh, train_cfg, name=name, compile=False)  # the state bytes of all layers
    return dataclasses.replace(
        exact, argument_bytes=extend("argument_bytes"), output_bytes=extend("output_bytes"),
        alias_bytes=extend("alias_bytes"), temp_bytes=extend("temp_bytes"),
        compile_s=sum(c.compile_s for c in cuts), compiled_layers=EXTRAPOLATE_FROM)


def plan_model(name: str, model_cfg: TransformerConfig, pooling: str | None, dtype: Any,
               train_cfg: train.TrainConfig, cache: PlanCache, devices: dict[str, int] = DEVICES,
               max_devices: int = MAX_DEVICES, extrapolate: bool = False) -> Iterator[Plan]:
    """Plans on 1, 2, 4, ... devices (candidate_mesh) until every device of `devices` is fitted or
    max_devices is reached: the first plan that fits a device is its smallest mesh. A mesh of n
    devices is skipped while 1/n of the 1-device plan's peak would not fit the largest device not
    fitted yet (no device of the mesh holds less than its share)."""
    unfitted, one_device = dict(devices), None
    cut = EXTRAPOLATE_FROM if extrapolate and model_cfg.num_layers > EXTRAPOLATE_FROM[1] else ()
    n = 1
    while unfitted and n <= max_devices:
        shape = candidate_mesh(n, train_cfg.micro_batch_size, model_cfg)
        hopeless = one_device is not None and one_device.peak_bytes / n > USABLE * max(unfitted.values())
        if shape is not None and not hopeless:
            key = cache.key(name, shape, train_cfg.remat, train_cfg.optimizer, train_cfg.micro_batch_size,
                            train_cfg.max_length, train_cfg.accum_steps, cut, train_cfg.scan_layers)
            plan = cache.get(key)
            if plan is None:
                mesh = sharding.make_mesh(*shape, devices=jax.devices("cpu")[:n])
                if cut:
                    plan = plan_extrapolated(model_cfg, pooling, dtype, mesh, train_cfg, name=name)
                else:
                    plan = plan_step(abstract_classifier(model_cfg, pooling, dtype), mesh, train_cfg, name=name)
                cache.add(key, plan)
            one_device = one_device or plan
            unfitted = {d: c for d, c in unfitted.items() if not plan.fits(c)}
            yield plan
        n *= 2


def smallest_fits(plans: Iterable[Plan], devices: dict[str, int] = DEVICES) -> dict[str, Plan | None]:
    """Per device: the plan on the fewest devices that fits it (None: none of these fits)."""
    ordered = sorted(plans, key=lambda p: p.devices)
    return {d: next((p for p in ordered if p.fits(c)), None) for d, c in devices.items()}


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"


PLAN_HEADER = ("| model | params | micro × seq (accum) | remat | optimizer | mesh | params GiB | optimizer GiB "
               "| gradients GiB | temporaries GiB | peak GiB/device | fits | layers compiled | compile s |\n"
               "| --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")


def plan_row(p: Plan, devices: dict[str, int] = DEVICES) -> str:
    fits = ", ".join(d for d, c in devices.items() if p.fits(c)) or "none"
    return (f"| {p.model} | {p.params / 1e6:,.0f}M | {p.micro_batch} × {p.seq_len} ({p.accum}) | {p.remat} "
            f"| {p.optimizer} | {p.mesh_name()} | {_gib(p.param_bytes)} | {_gib(p.opt_bytes)} | {_gib(p.grad_bytes)} "
            f"| {_gib(p.temp_bytes)} | {_gib(p.peak_bytes)} | {fits} "
            f"| {'all' if not p.compiled_layers else ', '.join(map(str, p.compiled_layers)) + ' → extrapolated'} "
            f"| {p.compile_s:.0f} |")


def summary_table(results: dict[tuple[str, str], list[Plan]], devices: dict[str, int] = DEVICES) -> str:
    """Per model and remat: the smallest mesh that fits each device, and its peak GiB per device."""
    lines = ["| model | remat | 1-device peak GiB | " + " | ".join(devices) + " |",
             "| --- | --- | ---: |" + " --- |" * len(devices)]
    for (name, remat), plans in results.items():
        one = next((p for p in plans if p.devices == 1), None)
        cells = []
        largest = max(plans, key=lambda p: p.devices, default=None)
        for plan in smallest_fits(plans, devices).values():
            if plan is not None:
                cells.append(f"{plan.mesh_name()} ({_gib(plan.peak_bytes)})")
            else:  # the largest mesh planned says where the search stopped (see candidate_mesh)
                cells.append("no plan fits" + (f" (largest: {largest.mesh_name()}, {_gib(largest.peak_bytes)})"
                                               if largest else ""))
        lines.append(f"| {name} | {remat} | {_gib(one.peak_bytes) if one else '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def config_models(cfg: Any) -> list[tuple[str, Any]]:
    """(label, model spec) of every model a config trains, by its runner: an experiment's weak and
    strong models, a sweep's rungs (for sweeps per task, those of its `sweep` section)."""
    from w2s.sweeps import ladders

    runner = cfg.get("runner")
    sweep = {"sweep": cfg, "sweeps_per_task": cfg.get("sweep")}.get(runner)
    if sweep is not None:
        return [(label, ladders.rung(label).spec(sweep.train)) for label in sweep.models]
    if runner == "experiment":
        return [(role, cfg[role]) for role in ("weak", "strong")]
    raise ConfigError(f"w2s plan plans the models of experiment and sweep configs; this config's runner is {runner!r}.")


def plan_config(cfg: Any, remats: Iterable[str], cache: PlanCache, out: Any = None,
                max_devices: int = MAX_DEVICES, extrapolate: bool = False) -> dict[tuple[str, str], list[Plan]]:
    """Plans every model of the config with each remat setting; prints each plan's row as it is
    compiled (a table of hours streams), then the summary table. Returns the plans."""
    from w2s.stages import ModelSpec

    out = out or sys.stdout  # read when called: a default bound at import would keep a replaced stream
    results: dict[tuple[str, str], list[Plan]] = {}
    print(PLAN_HEADER, file=out, flush=True)
    for label, settings in config_models(cfg):
        spec = ModelSpec.from_config(settings)
        model_cfg = TransformerConfig.from_hf(hf_config(spec.settings.model))
        if spec.settings.num_layers is not None:
            model_cfg = dataclasses.replace(model_cfg, num_layers=spec.settings.num_layers)
        dtype = jnp.bfloat16 if spec.settings.dtype == "bfloat16" else jnp.float32
        for remat in remats:
            train_cfg = dataclasses.replace(spec.train_cfg, remat=remat)
            plans = results.setdefault((label, remat), [])
            for plan in plan_model(label, model_cfg, spec.settings.get("pooling"), dtype, train_cfg, cache,
                                   max_devices=max_devices, extrapolate=extrapolate):
                plans.append(plan)
                print(plan_row(plan), file=out, flush=True)
    print("\nSmallest mesh that fits each device (its peak GiB per device):\n", file=out)
    print(summary_table(results), file=out, flush=True)
    return results
