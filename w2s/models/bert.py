"""BERT encoder (post-norm), as in HF BertModel without the pooler."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig


class BertLayer(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(nnx.LayerNorm, cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.attn = layers.Attention(cfg, out_bias=True, **kw)
        self.attn_norm = norm()
        self.mlp_in = layers.dense(cfg.hidden_size, cfg.intermediate_size, bias=True, **kw)
        self.mlp_out = layers.dense(cfg.intermediate_size, cfg.hidden_size, bias=True, **kw)
        self.mlp_norm = norm()
        self.act = layers.activation(cfg.activation)

    def __call__(self, x: jax.Array, attention_mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """bias: MPNet's relative position bias, added to the attention scores (see Attention)."""
        x = self.attn_norm(x + self.attn(x, attention_mask, causal=False, bias=bias))
        return self.mlp_norm(x + self.mlp_out(self.act(self.mlp_in(x))))


class Bert(nnx.Module):
    """Token type is always 0: the classifiers feed single segments."""

    def __init__(
        self,
        cfg: TransformerConfig,
        *,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.token_embed = layers.embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embed = layers.embed(cfg.max_position, cfg.hidden_size, **kw)
        self.type_embed = layers.embed(cfg.type_vocab_size, cfg.hidden_size, **kw)
        self.embed_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.layers = nnx.List([BertLayer(cfg, **kw) for _ in range(cfg.num_layers)])

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] ids and mask -> last layer's hidden states [B, T, H]."""
        positions = jnp.arange(layers.check_length(input_ids, self.cfg))
        x = self.token_embed(input_ids) + self.position_embed(positions)
        x = self.embed_norm(x + self.type_embed(jnp.zeros_like(positions)))
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x
