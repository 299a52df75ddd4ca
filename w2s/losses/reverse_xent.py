"""Reverse cross-entropy (Xu, Yao, Wang and Liu 2025, arXiv 2505.24313; Yao et al. 2025, 2502.11107):
the student's distribution takes the place of the target, -sum_k f(k) log w(k), which weighs an
example by how much the student believes each class rather than by the weak model's uncertainty."""
import jax
import jax.numpy as jnp

from w2s.losses import LOSSES, soft_cross_entropy


@LOSSES.register("reverse_xent")
def reverse_xent_loss(logits: jax.Array, targets: jax.Array, *, forward_weight: float = 0.0,
                      min_prob: float = 1e-4) -> jax.Array:
    """(1-forward_weight)·RCE + forward_weight·CE. The weak probabilities are clipped at `min_prob`,
    so a class the weak model rules out costs log(1/min_prob), not infinity."""
    student = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    reverse = -jnp.mean(jnp.sum(student * jnp.log(jnp.clip(targets, min_prob, 1.0)), axis=-1))
    return (1.0 - forward_weight) * reverse + forward_weight * soft_cross_entropy(logits, targets)
