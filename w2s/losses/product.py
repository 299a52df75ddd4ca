"""Product of experts: cross-entropy against weak^a · student^b, renormalised and detached."""
import jax
import jax.numpy as jnp

from w2s.losses import LOSSES, soft_cross_entropy


@LOSSES.register("product")
def product_loss(logits: jax.Array, targets: jax.Array, *, weak_power: float = 1.0,
                 student_power: float = 1.0) -> jax.Array:
    student = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    combined = jnp.power(targets, weak_power) * jnp.power(student, student_power)
    combined = combined / jnp.maximum(jnp.sum(combined, axis=-1, keepdims=True), 1e-30)
    return soft_cross_entropy(logits, combined)
