"""Naive finetuning: cross-entropy against the (weak) targets."""
import jax

from w2s.losses import LOSSES, soft_cross_entropy


@LOSSES.register("xent")
def xent_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return soft_cross_entropy(logits, targets)
