"""A backbone plus a 2-way linear head on one pooled token."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.config import ConfigError


def zero_linear(in_features: int, out_features: int) -> nnx.Linear:
    """A Linear layer of zeros, placed from host memory: nnx's eager init would compile a few tiny
    programs for it (its Rngs, each initializer), about 0.3 s on a CPU, for a constant."""
    abstract = nnx.eval_shape(lambda: nnx.Linear(in_features, out_features, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    return nnx.merge(graphdef, jax.tree.map(lambda v: jax.device_put(np.zeros(v.shape, v.dtype)), state))


POOLINGS = ("first", "last", "mean")


class Classifier(nnx.Module):
    """pooling='first' reads [CLS] (encoders); 'last' reads the last real token (decoders);
    'mean' averages the real tokens (how sentence-transformers trained MiniLM).

    The head starts at zero, so a fresh classifier predicts exactly 50/50 and training starts
    from the backbone's features alone.
    """

    def __init__(self, backbone: nnx.Module, pooling: str):
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.head = zero_linear(backbone.cfg.hidden_size, 2)

    def features(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] ids and mask -> pooled float32 features [B, H]."""
        hidden = self.backbone(input_ids, attention_mask)
        if self.pooling == "first":
            pooled = hidden[:, 0]
        elif self.pooling == "mean":
            weights = attention_mask.astype(jnp.float32)[:, :, None]
            pooled = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1) / jnp.maximum(weights.sum(1), 1.0)
        else:
            # From the mask, never from a pad id: GPT-2's pad id is a real token (eos).
            positions = jnp.arange(input_ids.shape[1])
            last = jnp.max(jnp.where(attention_mask == 1, positions, 0), axis=1)
            pooled = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        return pooled.astype(jnp.float32)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] ids and mask -> float32 logits [B, 2]."""
        return self.head(self.features(input_ids, attention_mask))
