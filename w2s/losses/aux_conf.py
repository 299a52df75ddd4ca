"""The auxiliary confidence loss of Burns et al. (2023) and its alpha schedule."""
from typing import Any

import jax
import jax.numpy as jnp

from w2s.losses import LOSSES, hard_targets, soft_cross_entropy


def alpha_schedule(step_frac: jax.Array, alpha_max: Any, warmup_frac: Any, delay_frac: Any = 0.0,
                   full_after_frac: Any = 1.0) -> jax.Array:
    """The weight of the confidence term at `step_frac`: 0 until `delay_frac`, then rising linearly
    to alpha_max over `warmup_frac` of training (a step when it is 0), and alpha_max from
    `full_after_frac` on. OpenAI's public code (weak_to_strong/loss.py) is warmup_frac=1,
    full_after_frac=its warmup: alpha = alpha_max * step_frac, then alpha_max. Options may be traced."""
    since = step_frac - delay_frac
    ramp = jnp.where(warmup_frac > 0, jnp.clip(since / jnp.maximum(warmup_frac, 1e-12), 0.0, 1.0),
                     (since >= 0).astype(jnp.float32))
    return alpha_max * jnp.where(step_frac > full_after_frac, 1.0, ramp)


@LOSSES.register("aux_conf")
def aux_conf_loss(logits: jax.Array, targets: jax.Array, *, step_frac: jax.Array, class1_threshold: jax.Array,
                  alpha_max: float = 0.75, warmup_frac: float = 0.2, delay_frac: float = 0.0,
                  full_after_frac: float = 1.0) -> jax.Array:
    """(1-a)·CE(f, weak) + a·CE(f, hard(f)), letting the student disagree with its supervisor;
    a follows `alpha_schedule`. The defaults are Burns et al.'s (alpha_max 0.75, a 20% ramp): no
    variant measured beat plain cross-entropy on the quickstart's pair (docs/aux_conf.md)."""
    alpha = alpha_schedule(step_frac, alpha_max, warmup_frac, delay_frac, full_after_frac)
    hard = hard_targets(logits, class1_threshold)
    return (1.0 - alpha) * soft_cross_entropy(logits, targets) + alpha * soft_cross_entropy(logits, hard)
