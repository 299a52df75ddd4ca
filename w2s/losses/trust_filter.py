"""Training only on the weak labels the weak model is most confident about (a trust score: its
largest class probability), as in the label-filtering baselines of the weak-to-strong literature."""
import jax
import jax.numpy as jnp

from w2s.losses import LOSSES


@LOSSES.register("trust_filter")
def trust_filter_loss(logits: jax.Array, targets: jax.Array, *, keep_frac: float = 0.5) -> jax.Array:
    """Cross-entropy over the `keep_frac` of each micro-batch with the most confident weak labels
    (ties at the cut are kept). Batches are random, so this keeps about that fraction of the weak
    labels overall, each step the most trusted of its batch."""
    confidence = jnp.max(targets, axis=-1)
    kept = (confidence >= jnp.quantile(confidence, 1.0 - keep_frac)).astype(jnp.float32)
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    return jnp.sum(kept * per_example) / jnp.maximum(jnp.sum(kept), 1.0)
