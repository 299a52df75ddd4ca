"""Losses for training on (soft) labels: naive cross-entropy, auxiliary confidence, product.

Every loss has one signature, `loss(logits, targets, *, step_frac, class1_threshold, **options)`,
where `targets` are [B, 2] class probabilities (one-hot for ground truth, soft for weak labels),
`step_frac` is the fraction of training done, in [0, 1], and `class1_threshold` is the detached
per-example threshold of `balanced_threshold` that the train step computes (`Loss.thresholds`: over
the whole effective batch by default, also when gradients are accumulated over micro-batches).
A loss's options are its keyword arguments with defaults; the train step passes their values as
traced data, so changing a value (a schedule, alpha_max) reuses the compiled step.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

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
        raise ValueError(f"loss option threshold_batch={group_size} must divide the effective batch ({batch}); "
                         "choose a divisor of train.batch_size, or 0 for the whole batch.")
    groups = jax.vmap(balanced_threshold)(student_logits.reshape(-1, group_size, 2), targets.reshape(-1, group_size, 2))
    return jnp.repeat(groups, group_size)


def hard_targets(logits: Array, class1_threshold: Array) -> Array:
    """One-hot labels from the student's own predictions, class 1 where p1 exceeds the threshold
    (a scalar, or one per row)."""
    is_one = (class1_probability(logits) > class1_threshold).astype(jnp.float32)
    return jnp.stack([1.0 - is_one, is_one], axis=-1)


def alpha_schedule(step_frac: Array, alpha_max: Any, warmup_frac: Any, delay_frac: Any = 0.0,
                   full_after_frac: Any = 1.0) -> Array:
    """The weight of the confidence term at `step_frac`: 0 until `delay_frac`, then rising linearly
    to alpha_max over `warmup_frac` of training (a step when it is 0), and alpha_max from
    `full_after_frac` on. OpenAI's public code (weak_to_strong/loss.py) is warmup_frac=1,
    full_after_frac=its warmup: alpha = alpha_max * step_frac, then alpha_max. Options may be traced."""
    since = step_frac - delay_frac
    ramp = jnp.where(warmup_frac > 0, jnp.clip(since / jnp.maximum(warmup_frac, 1e-12), 0.0, 1.0),
                     (since >= 0).astype(jnp.float32))
    return alpha_max * jnp.where(step_frac > full_after_frac, 1.0, ramp)


def xent_loss(logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array) -> Array:
    """Naive finetuning: cross-entropy against the (weak) targets."""
    del step_frac, class1_threshold
    return soft_cross_entropy(logits, targets)


def aux_conf_loss(
    logits: Array,
    targets: Array,
    *,
    step_frac: Array,
    class1_threshold: Array,
    alpha_max: float = 0.75,
    warmup_frac: float = 0.2,
    delay_frac: float = 0.0,
    full_after_frac: float = 1.0,
) -> Array:
    """Burns et al. (2023): (1-a)·CE(f, weak) + a·CE(f, hard(f)), letting the student disagree with W;
    a follows `alpha_schedule`."""
    alpha = alpha_schedule(step_frac, alpha_max, warmup_frac, delay_frac, full_after_frac)
    hard = hard_targets(logits, class1_threshold)
    return (1.0 - alpha) * soft_cross_entropy(logits, targets) + alpha * soft_cross_entropy(logits, hard)


def product_loss(
    logits: Array,
    targets: Array,
    *,
    step_frac: Array,
    class1_threshold: Array,
    weak_power: float = 1.0,
    student_power: float = 1.0,
) -> Array:
    """Product of experts: CE against weak^a · student^b (renormalised, detached)."""
    del step_frac, class1_threshold
    student = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    combined = jnp.power(targets, weak_power) * jnp.power(student, student_power)
    combined = combined / jnp.maximum(jnp.sum(combined, axis=-1, keepdims=True), 1e-30)
    return soft_cross_entropy(logits, combined)


_LOSSES: dict[str, tuple[Callable[..., Array], bool]] = {  # name: (function, needs the threshold)
    "xent": (xent_loss, False),
    "aux_conf": (aux_conf_loss, True),
    "product": (product_loss, False),
}


def _options_of(fn: Callable[..., Array]) -> dict[str, float]:
    """A loss's options and their defaults: its keyword-only arguments with defaults."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss with its options bound. `options` are passed to the loss as traced values
    (`option_values`); `threshold_batch` and `threshold_decay` shape the step's threshold, so a
    compiled step is shared by the losses with equal `compiled_key`s."""

    name: str
    options: tuple[tuple[str, float], ...] = ()
    threshold_batch: int = 0
    threshold_decay: float = 0.0

    @property
    def needs_threshold(self) -> bool:
        return _LOSSES[self.name][1]

    @property
    def compiled_key(self) -> tuple:
        """What the compiled train step depends on: everything but the options' values."""
        return (self.name, tuple(k for k, _ in self.options), self.threshold_batch, self.threshold_decay)

    def option_values(self) -> dict[str, np.ndarray]:
        return {k: np.float32(v) for k, v in self.options}

    def __call__(self, logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array,
                 options: Mapping[str, Array] | None = None) -> Array:
        """The loss; `options` (traced values of this loss's options) replace the bound ones."""
        values = dict(self.options) if options is None else dict(options)
        fn = _LOSSES[self.name][0]
        return fn(logits, targets, step_frac=step_frac, class1_threshold=class1_threshold, **values)

    def thresholds(self, logits: Array, targets: Array, running: Array, step: Array) -> tuple[Array, Array]:
        """Per-example class-1 thresholds [B] of the effective batch's (detached) logits and the new
        running estimate. The estimate is an exponential moving average of the batch threshold,
        bias-corrected as Adam's moments are (so it needs no initial value: `running` starts at 0);
        `step` counts the batches before this one."""
        if not self.threshold_decay:
            return grouped_thresholds(logits, targets, self.threshold_batch), running
        decay = self.threshold_decay
        running = decay * running + (1.0 - decay) * balanced_threshold(logits, targets)
        corrected = running / (1.0 - decay ** (step.astype(jnp.float32) + 1.0))
        return jnp.broadcast_to(corrected, logits.shape[:1]), running


def known_losses() -> list[str]:
    return sorted(_LOSSES)


def make_loss(name: str, **options: float) -> Loss:
    """Binds a registered loss's options (unknown names and options are refused by name)."""
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {name!r}; known losses: {', '.join(known_losses())}.")
    fn, needs_threshold = _LOSSES[name]
    defaults = _options_of(fn)
    accepted = {**defaults, **(THRESHOLD_OPTIONS if needs_threshold else {})}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Loss {name!r} got unknown option(s) {unknown}; it accepts: {sorted(accepted) or 'none'}."
        )
    threshold = {k: options.pop(k) for k in THRESHOLD_OPTIONS if k in options}
    batch, decay = int(threshold.get("threshold_batch", 0)), float(threshold.get("threshold_decay", 0.0))
    if batch and decay:
        raise ValueError(f"Loss {name!r}: threshold_batch and threshold_decay cannot both be set; "
                         "the running estimate is over whole effective batches.")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"Loss {name!r}: threshold_decay must be in [0, 1), got {decay}.")
    # Every option is bound, defaults too: the variants of a loss then share one compiled step.
    return Loss(name=name, options=tuple(sorted((k, float(v)) for k, v in {**defaults, **options}.items())),
                threshold_batch=batch, threshold_decay=decay)


def student_loss(student: str, loss_options: Mapping[str, Mapping[str, Any]]) -> Loss:
    """The loss of a named student: `loss_options[student]` binds its options, and its `loss` key
    names the registered loss when the student is a variant, e.g. students ("xent", "aux_conf_slow")
    with loss_options.aux_conf_slow = dict(loss="aux_conf", warmup_frac=1.0)."""
    options = dict(loss_options.get(student, {}))
    name = options.pop("loss", student)
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {name!r} (student {student!r}); known losses: {', '.join(known_losses())}. "
                         f"A variant names its loss: loss_options.{student} = dict(loss='aux_conf', ...).")
    return make_loss(name, **options)
