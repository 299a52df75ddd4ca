"""Cross-entropy against the weak labels' argmax: the student is told only which class the weak
model prefers, not how sure it is. Where a weak model's probabilities barely leave 0.5 (an
under-trained finetuned rung), soft targets carry almost no gradient and hard ones carry it all."""
import jax
import jax.numpy as jnp

from w2s.losses import LOSSES, soft_cross_entropy


@LOSSES.register("hard_xent")
def hard_xent_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return soft_cross_entropy(logits, jax.nn.one_hot(jnp.argmax(targets, axis=-1), targets.shape[-1]))
