"""Llama / Qwen2 decoder: RMSNorm, RoPE, grouped-query attention and a SwiGLU MLP."""
from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig


class LlamaBlock(layers.RotaryBlock):
    def __init__(self, cfg: TransformerConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(nnx.RMSNorm, cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        dense = functools.partial(layers.dense, bias=False, **kw)
        self.attn_norm = norm()
        self.attn = layers.Attention(cfg, out_bias=False, **kw)
        self.mlp_norm = norm()
        self.mlp_gate = dense(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_up = dense(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_down = dense(cfg.intermediate_size, cfg.hidden_size)
        self.act = layers.activation(cfg.activation)

    def combine(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        x = x + attn
        h = self.mlp_norm(x)
        return x + self.mlp_down(self.act(self.mlp_gate(h)) * self.mlp_up(h))


class Llama(layers.RotaryDecoder):
    block = LlamaBlock
    norm = nnx.RMSNorm
