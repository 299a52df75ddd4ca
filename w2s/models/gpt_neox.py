"""GPT-NeoX decoder (Pythia), as in HF GPTNeoXModel: LayerNorm with bias, RoPE on a leading
fraction of each head, a gelu MLP beside attention (parallel residual) or after it.

HF fuses query, key and value into one linear; loading.py splits it into layers.Attention's three,
so the Megatron rules in sharding.py split whole heads as for the other decoders.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig


class GPTNeoXBlock(layers.RotaryBlock):
    def __init__(self, cfg: TransformerConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(nnx.LayerNorm, cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.attn_norm = norm()
        self.attn = layers.Attention(cfg, out_bias=cfg.qkv_bias, **kw)  # HF's attention_bias covers both
        self.mlp_norm = norm()
        self.mlp_in = layers.dense(cfg.hidden_size, cfg.intermediate_size, bias=True, **kw)
        self.mlp_out = layers.dense(cfg.intermediate_size, cfg.hidden_size, bias=True, **kw)
        self.act = layers.activation(cfg.activation)
        self.parallel_residual = cfg.parallel_residual

    def combine(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        """Adds the attention output and the MLP: Pythia's MLP reads the block input x, the
        sequential variant reads x + attn."""
        if self.parallel_residual:
            return x + attn + self._mlp(x)
        x = x + attn
        return x + self._mlp(x)

    def _mlp(self, x: jax.Array) -> jax.Array:
        return self.mlp_out(self.act(self.mlp_in(self.mlp_norm(x))))


class GPTNeoX(layers.RotaryDecoder):
    block = GPTNeoXBlock
    norm = nnx.LayerNorm
