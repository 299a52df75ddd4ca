"""Losses for training on (soft) labels: naive cross-entropy, auxiliary confidence, product.

Every loss has one signature, `loss(logits, targets, *, step_frac, class1_threshold)`, where
`targets` are [B, 2] class probabilities (one-hot for ground truth, soft for weak labels),
`step_frac` is the fraction of training done, in [0, 1], and `class1_threshold` is the detached
threshold of `balanced_threshold` computed over the whole effective batch (the train step does
that, also when gradients are accumulated over micro-batches).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def soft_cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean cross-entropy of the model against target distributions (soft or one-hot)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def balanced_threshold(student_logits: Array, targets: Array) -> Array:
    """Threshold on the student's class-1 probability whose hard labels match the weak labels' balance.

    The weak labels put mean mass m on class 1, so the top fraction m of the student's class-1
    probabilities are labelled 1: the threshold is their (1 - m) quantile. Gradients are stopped.
    """
    p1 = jax.nn.softmax(jax.lax.stop_gradient(student_logits).astype(jnp.float32), axis=-1)[:, 1]
    weak_class1 = jnp.mean(targets[:, 1])
    return jnp.quantile(p1, 1.0 - weak_class1)


def hard_targets(logits: Array, class1_threshold: Array) -> Array:
    """One-hot labels from the student's own predictions, class 1 where p1 exceeds the threshold."""
    p1 = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)[:, 1]
    is_one = (p1 > class1_threshold).astype(jnp.float32)
    return jnp.stack([1.0 - is_one, is_one], axis=-1)


def linear_ramp(step_frac: Array, alpha_max: float, warmup_frac: float) -> Array:
    """alpha rises linearly from 0 to alpha_max over the first warmup_frac of training, then stays."""
    if warmup_frac <= 0:
        return jnp.asarray(alpha_max, jnp.float32)
    return alpha_max * jnp.clip(step_frac / warmup_frac, 0.0, 1.0)


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
) -> Array:
    """Burns et al. (2023): (1-a)·CE(f, weak) + a·CE(f, hard(f)), letting the student disagree with W."""
    alpha = linear_ramp(step_frac, alpha_max, warmup_frac)
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


@dataclasses.dataclass(frozen=True)
class Loss:
    """A named loss with its options bound. Equal names and options make equal (hashable) losses,
    so a compiled train step is reused for the same loss."""

    name: str
    options: tuple[tuple[str, float], ...] = ()

    @property
    def needs_threshold(self) -> bool:
        return _LOSSES[self.name][2]

    def __call__(self, logits: Array, targets: Array, *, step_frac: Array, class1_threshold: Array) -> Array:
        fn = _LOSSES[self.name][0]
        return fn(logits, targets, step_frac=step_frac, class1_threshold=class1_threshold, **dict(self.options))


_LOSSES: dict[str, tuple[Callable[..., Array], tuple[str, ...], bool]] = {
    "xent": (xent_loss, (), False),
    "aux_conf": (aux_conf_loss, ("alpha_max", "warmup_frac"), True),
    "product": (product_loss, ("weak_power", "student_power"), False),
}


def known_losses() -> list[str]:
    return sorted(_LOSSES)


def make_loss(name: str, **options: float) -> Loss:
    """Binds a registered loss's options (unknown names and options are refused by name)."""
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {name!r}; known losses: {', '.join(known_losses())}.")
    _, accepted, _ = _LOSSES[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Loss {name!r} got unknown option(s) {unknown}; it accepts: {list(accepted) or 'none'}."
        )
    return Loss(name=name, options=tuple(sorted(options.items())))
