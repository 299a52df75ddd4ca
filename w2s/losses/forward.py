"""Forward correction (Patrini et al. 2017): the logits are the student's belief about the true
label, and the weak label is predicted through a transition, P(weak = k) = sum_c p(c) T[c, k].

A loss sees only logits, so here the transition is class-conditional, not input-dependent: each
batch estimates it by one EM step from the student's detached beliefs, T[c, not c] = the mass of
weak labels on the other class among the examples the student puts in class c (capped at
max_flip), switched on over the first warmup_frac of training while the student's beliefs are
still the weak labels'. The input-dependent transition, learned with its own parameters, is
w2s.active_learning.mistakes (linear probes and active learning).
"""
import jax
import jax.numpy as jnp

from w2s.losses import LOSSES, soft_cross_entropy


def batch_flip_rates(student: jax.Array, targets: jax.Array, max_flip: float) -> jax.Array:
    """[2]: for each class c, the weak labels' mass on the other class where the (detached) student
    believes c, weighted by that belief; capped below 1/2 so the transition stays invertible."""
    other = targets[:, ::-1]
    rates = jnp.sum(student * other, 0) / jnp.maximum(jnp.sum(student, 0), 1e-6)
    return jnp.clip(rates, 0.0, max_flip)


@LOSSES.register("forward")
def forward_loss(logits: jax.Array, targets: jax.Array, *, step_frac: jax.Array, max_flip: float = 0.3,
                 warmup_frac: float = 0.2) -> jax.Array:
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    ramp = jnp.clip(step_frac / jnp.maximum(warmup_frac, 1e-12), 0.0, 1.0)
    rho = ramp * batch_flip_rates(jax.lax.stop_gradient(probs), targets, max_flip)
    # P(weak = 1) = p1 (1 - rho_1) + p0 rho_0; P(weak = 0) its complement.
    weak1 = probs[:, 1] * (1.0 - rho[1]) + probs[:, 0] * rho[0]
    predicted = jnp.stack([1.0 - weak1, weak1], -1)
    return soft_cross_entropy(jnp.log(jnp.clip(predicted, 1e-7, 1.0)), targets)
