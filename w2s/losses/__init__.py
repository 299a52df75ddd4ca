"""Losses for training on (soft) labels, one module each, registered by name in LOSSES.

A loss is a function `loss(logits, targets, *, step_frac, class1_threshold, **options)` (it
declares only the reserved arguments it reads): `targets` are [B, 2] class probabilities (one-hot
for ground truth, soft for weak labels), `step_frac` is the fraction of training done, in [0, 1],
and a loss that declares `class1_threshold` gets the detached per-example threshold of
`balanced_threshold` that the train step computes (`Loss.thresholds`: over the whole effective
batch by default, also when gradients are accumulated over micro-batches). Its options are its
other keyword arguments, read from its signature; the train step passes their values as traced
data, so changing a value (a schedule, alpha_max) reuses the compiled step. The loss's kind is
data too: the train step computes a `LossTable` of every registered loss, picking the one its state
names with `lax.switch`, so the ceiling and every student of a model share one compiled step
(docs/compile.md). A new loss is one file here and one `@LOSSES.register(name)` in it, imported at
the end of this module.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from w2s.config import ConfigError, check_keys
from w2s.registry import Registry, accepted_options, check_options

Array = jax.Array
LOSSES: Registry[Callable[..., Array]] = Registry("loss", "losses")
# Text put before a student's training inputs (never its test inputs), by loss: a loss module that
# trains on prefixed inputs registers its default here (w2s/losses/inoculate.py).
TRAIN_PREFIXES: Registry[str] = Registry("train prefix", "train prefixes")
RESERVED = ("step_frac", "class1_threshold")  # passed by the train step, not options

# Options of every loss that needs the balanced threshold, read by the train step, not the loss:
# threshold_batch (int): the threshold is taken over consecutive groups of this many examples of
#   the effective batch (0: the whole effective batch);
# threshold_decay (float): a running estimate, the bias-corrected exponential moving average of
#   the effective batch's threshold with this decay (0: this batch's threshold alone).
THRESHOLD_OPTIONS = {"threshold_batch": 0, "threshold_decay": 0.0}


def soft_cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean cross-entropy of the model against target distributions (soft or one-hot)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def class1_probability(logits: Array) -> Array:
    """The detached class-1 probability of each row."""
    return jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)[..., 1]


def balanced_threshold(student_logits: Array, targets: Array) -> Array:
    """Threshold on the student's class-1 probability whose hard labels match the weak labels' balance.

    The weak labels put mean mass m on class 1, so the top fraction m of the student's class-1
    probabilities are labelled 1: the threshold is their (1 - m) quantile. Gradients are stopped.
    """
    weak_class1 = jnp.mean(targets[..., 1])
    return jnp.quantile(class1_probability(student_logits), 1.0 - weak_class1)


def grouped_thresholds(student_logits: Array, targets: Array, group_size: int) -> Array:
    """Per-example thresholds [B]: each consecutive group of `group_size` rows gets the balanced
    threshold of its own rows (0, or the batch size: one group)."""
    batch = student_logits.shape[0]
    if group_size in (0, batch):
        return jnp.broadcast_to(balanced_threshold(student_logits, targets), (batch,))
    if group_size < 0 or batch % group_size:
        raise ConfigError(f"loss option threshold_batch={group_size} must divide the effective batch ({batch}); "
                         "choose a divisor of train.batch_size, or 0 for the whole batch.")
    groups = jax.vmap(balanced_threshold)(student_logits.reshape(-1, group_size, 2), targets.reshape(-1, group_size, 2))
    return jnp.repeat(groups, group_size)


def hard_targets(logits: Array, class1_threshold: Array) -> Array:
    """One-hot labels from the student's own predictions, class 1 where p1 exceeds the threshold
    (a scalar, or one per row)."""
    is_one = (class1_probability(logits) > class1_threshold).astype(jnp.float32)
    return jnp.stack([1.0 - is_one, is_one], axis=-1)


def _reserved(fn: Callable[..., Array]) -> list[str]:
    """The reserved arguments `fn` declares: the step passes it only those."""
    return [r for r in RESERVED if r in inspect.signature(fn).parameters]


def _defaults(fn: Callable[..., Array]) -> dict[str, Any]:
    """A loss's options and their defaults."""
    names, _ = accepted_options(fn, fixed=2, reserved=RESERVED)
    return {n: inspect.signature(fn).parameters[n].default for n in names}


def needs_threshold(fn: Callable[..., Array]) -> bool:
    return "class1_threshold" in inspect.signature(fn).parameters


def _apply(name: str, logits: Array, targets: Array, step_frac: Array, class1_threshold: Array,
           options: Mapping[str, Any]) -> Array:
    """Registered loss `name` with these option values, given only the reserved arguments it declares."""
    fn = LOSSES.get(name)
    reserved = {"step_frac": step_frac, "class1_threshold": class1_threshold}
    return fn(logits, targets, **{k: reserved[k] for k in _reserved(fn)}, **options)


def step_thresholds(logits: Array, targets: Array, running: Array, step: Array, decay: Any,
                    group_size: int) -> tuple[Array, Array]:
    """Per-example class-1 thresholds [B] of the effective batch's (detached) logits and the new
    running estimate. With decay > 0 (a float or traced) the threshold is an exponential moving
    average of the batch threshold, bias-corrected as Adam's moments are (so it needs no initial
    value: `running` starts at 0; `step` counts the batches before this one); with decay 0 it is
    this batch's, per group of `group_size` rows (make_loss refuses both at once), and `running`
    is kept. At decay 0 the corrected average is exactly the batch threshold, so one formula serves
    a traced decay."""
    if group_size:
        return grouped_thresholds(logits, targets, group_size), running
    average = decay * running + (1.0 - decay) * balanced_threshold(logits, targets)
    corrected = average / (1.0 - decay ** (step.astype(jnp.float32) + 1.0))
    return jnp.broadcast_to(corrected, logits.shape[:1]), jnp.where(decay > 0, average, running)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss with its options bound. `options` are passed to the loss as traced values
    (`LossTable.state`); `threshold_batch` shapes the step's threshold, so a compiled step is
    shared by every loss with the same `threshold_batch` (LossTable.of)."""

    name: str
    options: tuple[tuple[str, float], ...] = ()
    threshold_batch: int = 0
    threshold_decay: float = 0.0

    @property
    def needs_threshold(self) -> bool:
        return needs_threshold(LOSSES.get(self.name))

    def option_values(self) -> dict[str, np.ndarray]:
        return {k: np.float32(v) for k, v in self.options}

    def __call__(self, logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array) -> Array:
        return _apply(self.name, logits, targets, step_frac, class1_threshold, dict(self.options))

    def thresholds(self, logits: Array, targets: Array, running: Array, step: Array) -> tuple[Array, Array]:
        """step_thresholds with this loss's threshold options."""
        return step_thresholds(logits, targets, running, step, self.threshold_decay, self.threshold_batch)


class StepObjective(Protocol):
    """What a compiled train step computes (w2s.train): LossTable for the registered losses; an
    objective outside the registry (w2s.finetuning.sft's next-token loss) brings its own. The step
    reads `state(loss)` as traced data, so every loss the objective serves shares its program."""

    threshold_batch: int

    def state(self, loss: Any) -> dict[str, Any]: ...

    def needs_threshold(self, kind: Array) -> bool | Array: ...

    def __call__(self, logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array,
                 state: Mapping[str, Any]) -> Array: ...

    def thresholds(self, logits: Array, targets: Array, running: Array, step: Array,
                   state: Mapping[str, Any]) -> tuple[Array, Array]: ...


@dataclasses.dataclass(frozen=True)
class LossTable:
    """The losses one compiled train step computes, the one it runs chosen by its state: the step
    reads `state(loss)` (the loss's index in `names`, every listed loss's option values and the
    threshold decay) as traced data and calls the loss through `lax.switch`, which runs only the
    chosen branch. `of` lists every registered loss, so the ceiling and all students of a model
    share one program; a table of one loss is that loss's own program (no switch)."""

    names: tuple[str, ...]
    threshold_batch: int = 0

    @classmethod
    def of(cls, loss: Loss) -> "LossTable":
        """The table of every registered loss, for `loss`'s threshold grouping (a shape)."""
        return cls(tuple(LOSSES.names()), loss.threshold_batch)

    def state(self, loss: Loss) -> dict[str, Any]:
        """What the step reads for `loss`: its index, the option values of every loss of the table
        (`loss`'s own, the others' defaults: the state's structure is the same for every loss)."""
        if loss.name not in self.names or loss.threshold_batch != self.threshold_batch:
            raise ValueError(f"loss {loss.name!r} (threshold_batch {loss.threshold_batch}) is not in {self}.")
        options = {n: {k: np.float32(v) for k, v in _defaults(LOSSES.get(n)).items()} for n in self.names}
        options[loss.name] = loss.option_values()
        return {"kind": np.int32(self.names.index(loss.name)), "options": options,
                "threshold_decay": np.float32(loss.threshold_decay)}

    def needs_threshold(self, kind: Array) -> bool | Array:
        """Whether the loss of index `kind` reads the balanced threshold: a Python bool when every
        loss of the table agrees, else traced."""
        needs = [needs_threshold(LOSSES.get(n)) for n in self.names]
        return needs[0] if len(set(needs)) == 1 else jnp.asarray(needs)[kind]

    def __call__(self, logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array,
                 state: Mapping[str, Any]) -> Array:
        def branch(name: str) -> Callable[..., Array]:
            return lambda *args, options: _apply(name, *args, options[name])

        branches = [branch(name) for name in self.names]
        args = (logits, targets, step_frac, class1_threshold)
        if len(branches) == 1:
            return branches[0](*args, options=state["options"])
        return jax.lax.switch(state["kind"], [functools.partial(b, options=state["options"]) for b in branches], *args)

    def thresholds(self, logits: Array, targets: Array, running: Array, step: Array,
                   state: Mapping[str, Any]) -> tuple[Array, Array]:
        return step_thresholds(logits, targets, running, step, state["threshold_decay"], self.threshold_batch)


def known_losses() -> list[str]:
    return LOSSES.names()


def make_loss(name: str, **options: float) -> Loss:
    """Binds a registered loss's options (unknown names and options are refused by name)."""
    fn = LOSSES.get(name)
    defaults = _defaults(fn)
    step_options = THRESHOLD_OPTIONS if needs_threshold(fn) else {}  # read by the step, not the loss
    try:
        check_options(f"loss {name!r}", fn, {k: v for k, v in options.items() if k not in step_options},
                      fixed=2, reserved=_reserved(fn))
    except ConfigError as e:
        if not step_options:
            raise
        raise ConfigError(f"{e} The train step reads {', '.join(step_options)} too.") from None
    threshold = {k: options.pop(k) for k in step_options if k in options}
    batch, decay = int(threshold.get("threshold_batch", 0)), float(threshold.get("threshold_decay", 0.0))
    if batch and decay:
        raise ConfigError(f"loss {name!r}: threshold_batch and threshold_decay cannot both be set; "
                          "the running estimate is over whole effective batches.")
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"loss {name!r}: threshold_decay must be in [0, 1), got {decay}.")
    # Every option is bound, defaults too: the variants of a loss then share one compiled step.
    return Loss(name=name, options=tuple(sorted((k, float(v)) for k, v in {**defaults, **options}.items())),
                threshold_batch=batch, threshold_decay=decay)


def student_loss(student: str, loss_options: Mapping[str, Mapping[str, Any]]) -> Loss:
    """The loss of a named student: `loss_options[student]` binds its options, and its `loss` key
    names the registered loss when the student is a variant, e.g. students ("xent", "aux_conf_slow")
    with loss_options.aux_conf_slow = dict(loss="aux_conf", warmup_frac=1.0)."""
    options = dict(loss_options.get(student, {}))
    name = options.pop("loss", student)
    options.pop("train_prefix", None)  # read by train_prefix, not the loss
    LOSSES.get(name, hint=f" (student {student!r}: a variant names its loss: "
                          f"loss_options.{student} = dict(loss='aux_conf', ...))")
    return make_loss(name, **options)


def loss_variants(loss_options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The named variants of a loss that `loss_options` defines (those with a `loss` key)."""
    return sorted(name for name, options in loss_options.items() if "loss" in options)


def check_loss_options(loss_options: Mapping[str, Mapping[str, Any]]) -> None:
    """Options only for registered losses and named variants of them, each binding to its loss's
    signature: a variant defined and not trained is still checked, and may stay in a config."""
    named = known_losses() + loss_variants(loss_options)
    check_keys(loss_options, named, "config.loss_options (a loss, or a named variant of one: <name> = dict(loss=...))")
    for name in named:
        try:
            student_loss(name, loss_options)
        except ValueError as e:
            raise ConfigError(f"config.loss_options.{name}: {e}") from None


def train_prefix(student: str, loss_options: Mapping[str, Mapping[str, Any]]) -> str:
    """The text put before each of a student's training inputs, never its test inputs: its own
    `loss_options.<student>.train_prefix`, else its loss's registered TRAIN_PREFIXES entry, else ''."""
    options = dict(loss_options.get(student, {}))
    if "train_prefix" in options:
        if not isinstance(options["train_prefix"], str):
            raise ConfigError(f"loss_options.{student}.train_prefix must be a string, not {options['train_prefix']!r}.")
        return options["train_prefix"]
    name = options.get("loss", student)
    return TRAIN_PREFIXES.get(name) if name in TRAIN_PREFIXES.names() else ""


# The built-in losses register themselves; imported last, as they use the helpers above.
from w2s.losses import aux_conf, forward, hard_xent, inoculate, product, reverse_xent, trust_filter, xent  # noqa: E402,F401
