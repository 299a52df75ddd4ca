"""Optimizers by name (TrainConfig.optimizer), each at unit rate after global-norm clipping: the train
step scales updates by its schedule's learning rate, so every optimizer reads `lr` the same way, and
weight decay is decoupled (AdamW-style: scaled by the rate, not by the adaptive denominator).

A new one is a function (grad_clip, weight_decay) -> optax.GradientTransformation under
`@OPTIMIZERS.register("name")`. Its state's bytes per parameter are what `w2s plan` reports.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import optax

from w2s.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@functools.lru_cache(maxsize=None)
def make(name: str, grad_clip: float, weight_decay: float) -> optax.GradientTransformation:
    """One object per setting, so train.py's compiled-step cache recognises it."""
    return OPTIMIZERS.get(name)(grad_clip, weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(grad_clip: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW with float32 moments: 8 bytes of state per parameter."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(1.0, weight_decay=weight_decay))


@OPTIMIZERS.register("adamw_bf16_mu")
def adamw_bf16_mu(grad_clip: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW with its first moment in bfloat16 (6 bytes per parameter). Only the first: its 10% decay
    per step is far above bfloat16's 0.4% resolution, while the second moment's 0.1% decay would
    round away and it would only ever grow."""
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(1.0, weight_decay=weight_decay, mu_dtype=jnp.bfloat16))


@OPTIMIZERS.register("adafactor")
def adafactor(grad_clip: float, weight_decay: float) -> optax.GradientTransformation:
    """Adafactor without momentum: the second moment of a matrix is kept as its row and column means
    (float32), so the state is about (rows + cols) / (rows x cols) floats per parameter. Updates are
    clipped to RMS 1 per array and not scaled by the parameters' size, so `lr` means about what it
    means for AdamW (Shazeer & Stern 2018's relative step is left out)."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.scale_by_factored_rms(),
                       optax.clip_by_block_rms(1.0), optax.add_decayed_weights(weight_decay), optax.scale(-1.0))
