"""Finetuning a classifier on (soft) targets: a pure, jitted, sharded train step and the loop around it."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from w2s import distributed, optimizers, sharding
from w2s.checkpoint import StageCheckpointer
from w2s.config import ConfigError
from w2s.data import TextRows, Tokenized, batch_indices
from w2s.losses import Loss, LossTable, StepObjective
from w2s.models.layers import remat_blocks, scan_blocks
from w2s.probe import Features


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one model is finetuned. `batch_size` is the effective batch; gradients are accumulated
    over micro-batches of `micro_batch_size` to reach it."""

    batch_size: int = 32
    micro_batch_size: int = 32
    epochs: float = 2.0
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    max_length: int = 64
    eval_every: int = 0
    checkpoint_every: int = 50
    eval_batch_size: int = 128
    log_every: int = 10
    # "block" recomputes each block's activations in the backward pass instead of keeping them.
    remat: str = "none"
    # True: the backbone's blocks run as one lax.scan (models/layers.py, run_blocks): the program holds
    # one block, the step a stacked copy of their parameters (docs/scale.md: no faster on XLA:CPU).
    scan_layers: bool = False
    optimizer: str = "adamw"  # a name in w2s.optimizers.OPTIMIZERS

    def __post_init__(self):
        if self.batch_size <= 0 or self.micro_batch_size <= 0:
            raise ConfigError("train: batch_size and micro_batch_size must be positive.")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"train: batch_size {self.batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}."
            )
        if self.epochs <= 0 or self.lr <= 0:
            raise ConfigError(f"train: epochs ({self.epochs}) and lr ({self.lr}) must be positive.")
        if self.remat not in REMAT:
            raise ConfigError(f"train.remat: {self.remat!r} is not one of {REMAT}.")
        optimizers.OPTIMIZERS.get(self.optimizer, " (train.optimizer)")

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainConfig":
        """From a ConfigDict or mapping; a misspelt key is named with the accepted ones."""
        values = dict(cfg.items() if hasattr(cfg, "items") else cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"train config: unknown key(s) {unknown}; accepted: {sorted(known)}.")
        return cls(**values)

    @property
    def accum_steps(self) -> int:
        return self.batch_size // self.micro_batch_size

    def total_steps(self, num_examples: int) -> int:
        return max(1, math.ceil(self.epochs * num_examples / self.batch_size))

    def warmup_steps(self, total_steps: int) -> int:
        return max(1, int(self.warmup_frac * total_steps))


REMAT = ("none", "block")


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """cfg.optimizer after global-norm clipping, at unit rate: the train step scales its updates by
    `learning_rate`, so the schedule's length is data and one compiled step serves every length."""
    return optimizers.make(cfg.optimizer, cfg.grad_clip, cfg.weight_decay)


def learning_rate(peak: float | jax.Array, step: jax.Array, warmup_steps: jax.Array, total_steps: jax.Array) -> jax.Array:
    """Linear warmup from 0 to `peak`, then cosine decay to 0 at `total_steps`; the same numbers as
    optax.warmup_cosine_decay_schedule(0, peak, warmup_steps, total_steps), but with traced lengths."""
    count = jnp.clip(step, 0, warmup_steps)
    warm = -peak * (1 - count / warmup_steps) + peak
    decay_steps = jnp.maximum(total_steps, warmup_steps + 1) - warmup_steps
    count = jnp.minimum(step - warmup_steps, decay_steps).astype(jnp.float32)
    cosine = peak * (0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps.astype(jnp.float32))))
    return jnp.where(step < warmup_steps, warm, cosine)


def _model_inputs(batch: dict) -> dict:
    """The arrays of a batch the model reads: everything but the targets."""
    return {k: v for k, v in batch.items() if k != "targets"}


def make_train_step(
    graphdef: Any, optimizer: optax.GradientTransformation, losses: StepObjective, remat: str = "none",
    scan_layers: bool = False,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """The pure train step: (state, batch) -> (state, metrics).

    The batch holds [accum, micro, ...] arrays; gradients are averaged over the accumulation axis.
    A loss that needs the balanced threshold gets it from a forward pass over the whole effective
    batch, so accumulating gradients does not change what it computes. Which loss of `losses` runs,
    its option values, the peak learning rate and the schedule's lengths are state, so one compiled
    step serves the ceiling and every student of a model (LossTable).
    remat="block" rematerialises every block of the backbone, scan_layers runs them as one scan
    (models/layers.py, run_blocks).
    """

    def forward(params, inputs: dict):
        with remat_blocks(remat == "block"), scan_blocks(scan_layers):
            return nnx.merge(graphdef, params)(**inputs)

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
        params = state["params"]
        step_frac = state["step"].astype(jnp.float32) / state["total_steps"]
        accum = batch["targets"].shape[0]

        def thresholds(logits, targets):
            return losses.thresholds(logits, targets, state["threshold_running"], state["step"], state["loss"])

        def batch_thresholds():
            logits = jax.lax.map(lambda mb: forward(params, _model_inputs(mb)), batch)
            flat, new_running = thresholds(logits.reshape(-1, 2), batch["targets"].reshape(-1, 2))
            return flat.reshape(accum, -1), new_running

        needs = losses.needs_threshold(state["loss"]["kind"]) if accum > 1 else False
        if needs is True:
            per_example, running = batch_thresholds()
        elif needs is not False:  # only the chosen loss's branch runs: xent pays no extra forward pass
            per_example, running = jax.lax.cond(
                needs, batch_thresholds,
                lambda: (jnp.zeros(batch["targets"].shape[:2], jnp.float32), state["threshold_running"]))
        else:  # one micro-batch (or no loss reads it): the threshold comes from the logits the loss differentiates
            per_example, running = None, state["threshold_running"]

        def micro_loss(p, mb, mb_thresholds):
            logits, targets = forward(p, _model_inputs(mb)), mb["targets"]
            t, new_running = (thresholds(logits, targets) if mb_thresholds is None
                              else (mb_thresholds, running))
            value = losses(logits, targets, step_frac=step_frac, class1_threshold=t, state=state["loss"])
            return value, new_running

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def accumulate(carry, xs):
            total_loss, total_grads, _ = carry
            (value, new_running), grads = grad_fn(params, *xs)
            return (total_loss + value, jax.tree.map(jnp.add, total_grads, grads), new_running), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (total_loss, grads, running), _ = jax.lax.scan(
            accumulate, (jnp.zeros((), jnp.float32), zeros, running), (batch, per_example))
        grads = jax.tree.map(lambda g: g / accum, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        lr = learning_rate(state["peak_lr"], state["step"], state["warmup_steps"], state["total_steps"])
        updates = jax.tree.map(lambda u: lr.astype(u.dtype) * u, updates)
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "threshold_running": running,
        }
        metrics = {"loss": total_loss / accum, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics

    return step


def loss_table(loss: Loss) -> StepObjective:
    """The table a step computes for `loss`: every registered loss (LossTable.of), or the table an
    objective outside the registry brings as its `table` (w2s.finetuning.sft's next-token loss)."""
    return getattr(loss, "table", None) or LossTable.of(loss)


def state_scalars(total_steps: int, warmup_steps: int, peak_lr: float, losses: StepObjective, loss: Loss) -> dict:
    """The train state's host scalars: step, schedule, peak rate, the loss's kind and options
    (LossTable.state) and the running threshold."""
    return {"step": np.int32(0), "total_steps": np.int32(total_steps), "warmup_steps": np.int32(warmup_steps),
            "peak_lr": np.float32(peak_lr), "loss": losses.state(loss), "threshold_running": np.float32(0)}


def state_shardings(mesh: jax.sharding.Mesh, optimizer: optax.GradientTransformation, params: Any,
                    scalars: dict) -> dict:
    """Shardings of a train state: scalars replicated, params and optimizer state by the fsdp rule
    (`params` may be abstract)."""
    scalar = sharding.replicated(mesh)
    return {**jax.tree.map(lambda _: scalar, scalars), "params": sharding.state_shardings(mesh, params),
            "opt_state": sharding.state_shardings(mesh, jax.eval_shape(optimizer.init, params))}


def init_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, mesh: jax.sharding.Mesh,
    total_steps: int, warmup_steps: int, peak_lr: float, loss: Loss, losses: StepObjective,
) -> tuple[Any, dict, dict]:
    """(graphdef, state, state shardings): the scalars of `_scalars`, params and optimizer state,
    the last two placed by the fsdp rule. `losses` is the table the step computes (it holds `loss`)."""
    graphdef, params = nnx.split(model)
    scalars = state_scalars(total_steps, warmup_steps, peak_lr, losses, loss)
    state_sh = state_shardings(mesh, optimizer, params, scalars)
    params = jax.device_put(params, state_sh["params"])
    state = {
        # From host values: jnp would compile a tiny program for each.
        **jax.device_put(scalars, {k: state_sh[k] for k in scalars}),
        "params": params,
        "opt_state": jax.jit(optimizer.init, out_shardings=state_sh["opt_state"])(params),
    }
    return graphdef, state, state_sh


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh, state_sh: dict) -> Callable:
    """The step compiled with explicit shardings; the old state's buffers are donated."""
    return jax.jit(
        step,
        in_shardings=(state_sh, sharding.batch_sharding(mesh, leading_axes=1)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )


class StepProgram:
    """A jitted train step, and the executables compiled ahead of time for the batch shapes a coming
    stage will feed it (`compile_ahead`): a call whose batch has such a shape runs that executable,
    waiting for its compilation if it is still under way; any other shape compiles through jit."""

    def __init__(self, jitted: Callable):
        self.jitted = jitted
        self._ahead: dict[tuple, concurrent.futures.Future] = {}

    def compile_ahead(self, state: dict, batch: dict) -> concurrent.futures.Future:
        """Lowers and compiles the step for abstract `state` and `batch` (ShapeDtypeStructs with
        shardings) on the background compiler thread; a shape already requested is not compiled twice."""
        key = _signature(batch)
        if key not in self._ahead:
            self._ahead[key] = _COMPILER.submit(lambda: self.jitted.lower(state, batch).compile())
        return self._ahead[key]

    def __call__(self, state: dict, batch: dict) -> tuple[dict, dict]:
        key = _signature(batch)
        future = self._ahead.get(key)
        if future is None:
            return self.jitted(state, batch)
        try:
            return future.result()(state, batch)
        except TypeError as e:  # checked before it runs (nothing donated): the state was not the one foreseen
            warnings.warn(f"the train step compiled ahead does not take this state ({e}); compiling it again")
            del self._ahead[key]
            return self.jitted(state, batch)


def _signature(batch: dict) -> tuple:
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


# One thread: compilations ahead queue up in the order asked (the next stage's first shape first),
# and XLA's own compile uses the host's cores beyond it.
_COMPILER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="w2s-compile-ahead")


def _step_program(graphdef: Any, optimizer: optax.GradientTransformation, losses: StepObjective, remat: str,
                  scan_layers: bool, mesh: jax.sharding.Mesh, state_sh: dict) -> StepProgram:
    """The step program, reused by every later run of the same model, loss table, optimizer and mesh
    in this process (the ceiling and every student, active-learning rounds, seeds): schedule
    lengths, the peak rate and the loss's kind and option values are state, so nothing recompiles."""
    leaves, treedef = jax.tree.flatten(state_sh)
    key = (graphdef, optimizer, losses, remat, scan_layers, mesh, tuple(leaves), treedef)
    if key not in _COMPILED_STEPS:
        if len(_COMPILED_STEPS) >= 8:  # the oldest goes: a process rarely trains more kinds of model
            _COMPILED_STEPS.pop(next(iter(_COMPILED_STEPS)))
        _COMPILED_STEPS[key] = StepProgram(
            jit_train_step(make_train_step(graphdef, optimizer, losses, remat, scan_layers), mesh, state_sh))
    return _COMPILED_STEPS[key]


_COMPILED_STEPS: dict[tuple, StepProgram] = {}


def batch_shapes(cfg: TrainConfig, width: int, mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract global batch of a token-input train step whose rows are padded to `width`."""
    shard = sharding.batch_sharding(mesh, leading_axes=1)
    rows = (cfg.accum_steps, cfg.micro_batch_size)
    return {"input_ids": jax.ShapeDtypeStruct((*rows, width), np.int32, sharding=shard),
            "attention_mask": jax.ShapeDtypeStruct((*rows, width), np.int32, sharding=shard),
            "targets": jax.ShapeDtypeStruct((*rows, 2), np.float32, sharding=shard)}


def batch_widths(inputs: Tokenized | TextRows, cfg: TrainConfig, seed: int) -> list[int]:
    """The widths `train` pads its batches of `inputs` to, in the order they first occur (one process)."""
    steps = range(cfg.total_steps(len(inputs)))
    widths = (inputs.batch(batch_indices(len(inputs), cfg.batch_size, seed, s))["input_ids"].shape[1] for s in steps)
    return list(dict.fromkeys(widths))


def compile_ahead(model: nnx.Module, cfg: TrainConfig, loss: Loss, mesh: jax.sharding.Mesh,
                  widths: Sequence[int]) -> list[concurrent.futures.Future]:
    """Starts compiling, in the background, the train step `train(model, ..., cfg, loss=loss,
    mesh=mesh)` will run, for batches padded to each of `widths` (in that order). `model` may be
    abstract (nnx.eval_shape): only its structure and shapes matter. The futures are returned for
    whoever wants to wait; `train` picks the executables up by itself."""
    optimizer, losses = make_optimizer(cfg), loss_table(loss)
    graphdef, params = nnx.split(model)
    scalars = state_scalars(1, 1, cfg.lr, losses, loss)  # values do not matter, only shapes
    state_sh = state_shardings(mesh, optimizer, params, scalars)
    program = _step_program(graphdef, optimizer, losses, cfg.remat, cfg.scan_layers, mesh, state_sh)
    abstract = {**scalars, "params": params, "opt_state": jax.eval_shape(optimizer.init, params)}
    state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh,
                                                            weak_type=getattr(x, "weak_type", False)),
                         abstract, state_sh)
    return [program.compile_ahead(state, batch_shapes(cfg, width, mesh)) for width in widths]


def _put_batch(mesh, arrays: dict[str, np.ndarray], rows: int, leading_axes: int) -> dict[str, jax.Array]:
    """Global arrays of a batch of `rows` rows (after `leading_axes` axes) from this process's rows
    of it (sharding.process_rows): no process holds, or tokenized, the others' rows."""
    shard = sharding.batch_sharding(mesh, leading_axes)
    if jax.process_count() == 1:
        # What make_array_from_process_local_data does for one process, without its per-call checks
        # of every leaf: this runs at every step (~0.06 s less host time a quickstart weak stage).
        return jax.device_put(arrays, shard)
    shapes = {k: (*v.shape[:leading_axes], rows, *v.shape[leading_axes + 1:]) for k, v in arrays.items()}
    return jax.make_array_from_process_local_data(shard, arrays, shapes)


class NonFiniteLossError(RuntimeError):
    pass


def _check_finite(pending: list[tuple[int, np.ndarray, jax.Array]], desc: str,
                  checkpointer: StageCheckpointer | None) -> None:
    """Raises on the first non-finite loss among (step, batch indices, loss) of the steps since the
    last check. Called before every checkpoint, so a saved state never comes after a bad step."""
    for (done, idx, _), value in zip(pending, jax.device_get([loss for _, _, loss in pending])):
        if not np.isfinite(value):
            last = checkpointer.latest_step() if checkpointer is not None else None
            kept = ("no checkpoint was saved" if last is None
                    else f"the last good checkpoint (step {last}) is kept in {checkpointer.directory}")
            raise NonFiniteLossError(
                f"{desc}: loss became {float(value)} at step {done} (the batch of example indices "
                f"{idx[:8].tolist()}{'...' if len(idx) > 8 else ''}); {kept}."
            )


def train(
    model: nnx.Module,
    inputs: Tokenized | TextRows | Features,
    targets: np.ndarray | None,
    cfg: TrainConfig,
    *,
    loss: Loss,
    mesh: jax.sharding.Mesh,
    seed: int,
    checkpoint_dir: str | None = None,
    evaluate: Callable[[nnx.Module], dict[str, float]] | None = None,
    desc: str = "train",
    checkpoint_last: bool = True,
    show_progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[nnx.Module, list[dict[str, float]]]:
    """Finetunes `model` on `targets` ([N, 2] distributions) of `inputs` (token ids, or a linear probe's
    features: each batch is passed to the model by keyword), or, with targets None, on the "targets"
    each of the inputs' batches carries (w2s.finetuning.sft: next tokens, cut to the batch's width); resumes from `checkpoint_dir` if it has
    a checkpoint. Returns the trained model and the logged history (loss, throughput, evaluations).
    The last checkpoint may still be writing when it returns: `checkpoint.finish_saves` waits for it.
    checkpoint_last=False saves only every `checkpoint_every` steps, not the finished state too: for a
    caller that deletes the checkpoints once it has used the model (a kill before then resumes from
    the last periodic save and redoes at most `checkpoint_every` steps, to the same parameters).
    on_log receives each history row as it is logged (e.g. progress.TensorBoardLog); show_progress=False
    draws no bar (quiet logs)."""
    num_examples = len(inputs)
    if targets is not None and targets.shape != (num_examples, 2):
        raise ValueError(f"{desc}: targets have shape {targets.shape}, expected ({num_examples}, 2).")
    sharding.check_batch_size(mesh, cfg.micro_batch_size, f"{desc}: micro_batch_size")
    if hasattr(model, "backbone"):  # a linear probe has no attention heads to split
        sharding.check_heads(mesh, model.backbone.cfg.num_heads, model.backbone.cfg.num_kv_heads, desc)
    total_steps = cfg.total_steps(num_examples)
    optimizer = make_optimizer(cfg)
    losses = loss_table(loss)
    graphdef, state, state_sh = init_train_state(model, optimizer, mesh, total_steps, cfg.warmup_steps(total_steps),
                                                 cfg.lr, loss, losses)
    checkpointer = StageCheckpointer(checkpoint_dir, cfg.checkpoint_every) if checkpoint_dir else None
    start, history = 0, []
    restored = checkpointer.restore(state) if checkpointer is not None else None
    if restored is not None:
        state, history = restored
        start = int(state["step"])
    step_fn = _step_program(graphdef, optimizer, losses, cfg.remat, cfg.scan_layers, mesh, state_sh)
    accum, micro = cfg.accum_steps, cfg.micro_batch_size
    # leave=None: the bar stays only at the top line, not below a run's overall bar (w2s.progress).
    bar = tqdm(total=total_steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=None,
               disable=not (show_progress and distributed.is_main()))
    window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
    pending = []  # (step, batch indices, loss) of steps whose loss is not checked yet
    rows = sharding.process_rows(mesh, micro)  # this process's rows of every micro-batch
    finished = False
    try:
        for step in range(start, total_steps):
            idx = batch_indices(num_examples, cfg.batch_size, seed, step)
            local = idx.reshape(accum, micro)[:, rows]
            host = {k: v.reshape(accum, len(rows), *v.shape[1:])
                    for k, v in inputs.batch(local.reshape(-1), distributed.widest).items()}
            if targets is not None:
                host["targets"] = targets[local].astype(np.float32)
            state, metrics = step_fn(state, _put_batch(mesh, host, micro, leading_axes=1))
            window_examples += cfg.batch_size
            window_tokens += int(host["attention_mask"].sum()) if "attention_mask" in host else 0
            done = step + 1
            pending.append((done, idx, metrics["loss"]))
            saving = checkpointer is not None and checkpointer.due(done, force=checkpoint_last and done == total_steps)
            if saving or done % cfg.log_every == 0 or done == total_steps:
                _check_finite(pending, desc, checkpointer)
                pending = []
            if done % cfg.log_every == 0 or done == total_steps:
                loss_value = float(metrics["loss"])
                window_tokens = distributed.total(window_tokens)
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": done,
                    "loss": loss_value,
                    "grad_norm": float(metrics["grad_norm"]),
                    "examples_per_s": window_examples / elapsed,
                    "tokens_per_s": window_tokens / elapsed,
                }
                history.append(record)
                if on_log is not None:
                    on_log(record)
                bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{record['examples_per_s']:.1f}")
                window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
            if evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
                scores = evaluate(nnx.merge(graphdef, state["params"]))
                history.append({"step": done, **scores})
                if on_log is not None:
                    on_log(history[-1])
                bar.write(f"{desc} step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            if saving:
                checkpointer.save(done, state, history)
            bar.update(1)
        finished = True
    finally:
        bar.close()
        if checkpointer is not None:
            # An error or interrupt waits for the save in flight; a finished run lets its last save
            # write while the caller evaluates (checkpoint.finish_saves waits for it).
            checkpointer.close(wait=not finished)
    return nnx.merge(graphdef, state["params"]), history


@functools.lru_cache(maxsize=16)
def _compiled_apply(graphdef: Any, mesh: jax.sharding.Mesh, method: str) -> Callable:
    """One compiled forward per (model structure, mesh, method), reused by every evaluation."""
    return jax.jit(
        lambda params, ids, mask: getattr(nnx.merge(graphdef, params), method)(ids, mask),
        out_shardings=sharding.replicated(mesh),
    )


def _apply_in_batches(model: nnx.Module, inputs: Tokenized | TextRows, mesh: jax.sharding.Mesh,
                      batch_size: int, method: str) -> np.ndarray:
    """Runs `model.<method>` over all examples, every process feeding (and tokenizing) only its rows
    of each batch; the last batch is padded to the compiled shape. Every process gets all outputs."""
    shards = sharding.batch_size_per_step(mesh)
    batch_size = max(shards, batch_size // shards * shards)
    graphdef, params = nnx.split(model)
    params = jax.device_put(params, sharding.state_shardings(mesh, params))
    forward = _compiled_apply(graphdef, mesh, method)
    rows = sharding.process_rows(mesh, batch_size)
    n = len(inputs)
    outputs, in_flight = [], None
    for start in range(0, n, batch_size):
        idx = start + rows
        real = idx[idx < n]  # rows past the end pad the last batch
        chunk = inputs.batch(real, distributed.widest)
        ids = np.zeros((len(rows), chunk["input_ids"].shape[1]), np.int32)
        mask = np.zeros_like(ids)
        ids[: len(real)] = chunk["input_ids"]
        mask[: len(real)] = chunk["attention_mask"]
        mask[len(real):, 0] = 1  # padding rows get one real token, so no row is empty
        batch = _put_batch(mesh, {"input_ids": ids, "attention_mask": mask}, batch_size, leading_axes=0)
        # The previous batch is read back once this one is queued: the host builds each next batch
        # while the device computes, and holds at most two batches' outputs.
        computing = forward(params, batch["input_ids"], batch["attention_mask"])
        if in_flight is not None:
            outputs.append(np.asarray(in_flight))
        in_flight = computing
    outputs.append(np.asarray(in_flight))
    return np.concatenate(outputs)[:n].astype(np.float32)


def predict_logits(model: nnx.Module, inputs: Tokenized | TextRows, mesh: jax.sharding.Mesh, batch_size: int = 128) -> np.ndarray:
    """Logits [N, 2] for every example."""
    return _apply_in_batches(model, inputs, mesh, batch_size, "__call__")


def predict_features(model: nnx.Module, inputs: Tokenized | TextRows, mesh: jax.sharding.Mesh, batch_size: int = 128) -> np.ndarray:
    """Pooled features [N, H] for every example (what the head reads)."""
    return _apply_in_batches(model, inputs, mesh, batch_size, "features")
