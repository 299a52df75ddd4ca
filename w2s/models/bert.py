"""BERT encoder (post-norm), as in HF BertModel without the pooler."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig
from w2s.models.family import register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged


def read_config(d: dict[str, Any]) -> TransformerConfig:
    heads = d["num_attention_heads"]
    return TransformerConfig(
        arch="bert",
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=d["hidden_size"] // heads,
        intermediate_size=d["intermediate_size"],
        max_position=d["max_position_embeddings"],
        norm_eps=d.get("layer_norm_eps", 1e-12),
        activation=d.get("hidden_act", "gelu"),
        qkv_bias=True,
        tie_embeddings=d.get("tie_word_embeddings", True),
        type_vocab_size=d.get("type_vocab_size", 2),
    )


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    m: NameMap = {
        ("token_embed", "embedding"): ("embeddings.word_embeddings.weight", unchanged),
        ("position_embed", "embedding"): ("embeddings.position_embeddings.weight", unchanged),
        ("type_embed", "embedding"): ("embeddings.token_type_embeddings.weight", unchanged),
        **norm_names(("embed_norm",), "embeddings.LayerNorm"),
    }
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            m |= linear_names(ours + ("attn", name), f"{hf}.attention.self.{name}")
        m |= linear_names(ours + ("attn", "out"), f"{hf}.attention.output.dense")
        m |= norm_names(ours + ("attn_norm",), f"{hf}.attention.output.LayerNorm")
        m |= linear_names(ours + ("mlp_in",), f"{hf}.intermediate.dense")
        m |= linear_names(ours + ("mlp_out",), f"{hf}.output.dense")
        m |= norm_names(ours + ("mlp_norm",), f"{hf}.output.LayerNorm")
    return m


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


# Tensor parallelism of a BertLayer: the projections that widen (q/k/v, MLP in) split their output
# features, the ones that narrow back (attention out, MLP out) their input features.
LAYER_COLUMN_PARALLEL = ("query", "key", "value", "mlp_in")
LAYER_ROW_PARALLEL = ("out", "mlp_out")


# Encoders read [CLS].
@register_family("bert", model_types=("bert",), read_config=read_config, checkpoint_names=checkpoint_names,
                 prefixes=("bert.",), pooling="first", column_parallel=LAYER_COLUMN_PARALLEL,
                 row_parallel=LAYER_ROW_PARALLEL)
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
        return layers.run_blocks(self.layers, x, attention_mask)
