"""MPNet encoder, as HF MPNetModel without the pooler (all-mpnet-base-v2's backbone).

BERT's post-norm layers, with three differences: positions count from after the padding index
(RoBERTa's scheme), there are no token types, and one T5-style relative position bias, computed
once per forward, is added to the attention scores of every layer.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.config import ConfigError
from w2s.models import layers
from w2s.models.bert import LAYER_COLUMN_PARALLEL, LAYER_ROW_PARALLEL, BertLayer
from w2s.models.config import TransformerConfig
from w2s.models.family import register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged

# HF hard-codes these, whatever config.json says: MPNetEmbeddings' padding index (position ids
# start after it), and compute_position_bias' 32 buckets over a maximal distance of 128.
PADDING_IDX = 1
NUM_BUCKETS = 32
MAX_DISTANCE = 128


@functools.lru_cache(maxsize=64)
def relative_position_buckets(length: int) -> np.ndarray:
    """[T, T] int32 bucket of key j seen from query i, as HF's relative_position_bucket computes it:
    half the buckets for keys before the query, half for keys after; in each half, distances below
    a quarter of the buckets exact, longer ones log-spaced up to MAX_DISTANCE. The log is float32, as
    torch's, and the table is a host constant of the (static) length, so no device recomputes it."""
    distance = np.arange(length)[:, None] - np.arange(length)[None, :]  # query minus key
    half = NUM_BUCKETS // 2
    exact = half // 2
    n = np.abs(distance)
    # max(n, 1) only keeps log(0) out of the distances the exact branch takes anyway.
    scaled = np.maximum(n, 1).astype(np.float32) / np.float32(exact)
    log_ratio = np.log(scaled) / np.float32(math.log(MAX_DISTANCE / exact))
    far = exact + (log_ratio * np.float32(half - exact)).astype(np.int64)
    near_or_far = np.where(n < exact, n, np.minimum(far, half - 1))
    return (np.where(distance < 0, half, 0) + near_or_far).astype(np.int32)


def read_config(d: dict[str, Any]) -> TransformerConfig:
    """An HF MPNet config.json dict; max_position is the longest text, two short of the table."""
    if d.get("relative_attention_num_buckets", NUM_BUCKETS) != NUM_BUCKETS:
        raise ConfigError(
            f"relative_attention_num_buckets={d['relative_attention_num_buckets']}: transformers' MPNet "
            f"always buckets relative positions into {NUM_BUCKETS}, so only {NUM_BUCKETS} is supported"
        )
    heads = d["num_attention_heads"]
    return TransformerConfig(
        arch="mpnet",
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=d["hidden_size"] // heads,
        intermediate_size=d["intermediate_size"],
        max_position=d["max_position_embeddings"] - PADDING_IDX - 1,
        norm_eps=d.get("layer_norm_eps", 1e-12),
        activation=d.get("hidden_act", "gelu"),
        qkv_bias=True,
    )


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    """Our parameter paths -> HF MPNetModel tensor names."""
    m: NameMap = {
        ("token_embed", "embedding"): ("embeddings.word_embeddings.weight", unchanged),
        ("position_embed", "embedding"): ("embeddings.position_embeddings.weight", unchanged),
        **norm_names(("embed_norm",), "embeddings.LayerNorm"),
        ("relative_bias", "embedding"): ("encoder.relative_attention_bias.weight", unchanged),
    }
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"encoder.layer.{i}"
        for name, short in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
            m |= linear_names(ours + ("attn", name), f"{hf}.attention.attn.{short}")
        m |= norm_names(ours + ("attn_norm",), f"{hf}.attention.LayerNorm")
        m |= linear_names(ours + ("mlp_in",), f"{hf}.intermediate.dense")
        m |= linear_names(ours + ("mlp_out",), f"{hf}.output.dense")
        m |= norm_names(ours + ("mlp_norm",), f"{hf}.output.LayerNorm")
    return m


# sentence-transformers trained all-mpnet-base-v2 on the mean of its real tokens. The projections
# split over `model` as BERT's: the layers are BertLayers.
@register_family("mpnet", model_types=("mpnet",), read_config=read_config, checkpoint_names=checkpoint_names,
                 prefixes=("mpnet.",), pooling="mean", column_parallel=LAYER_COLUMN_PARALLEL,
                 row_parallel=LAYER_ROW_PARALLEL)
class MPNet(nnx.Module):
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
        # Rows 0..PADDING_IDX are never read by real tokens: the table is longer than max_position.
        self.position_embed = layers.embed(cfg.max_position + PADDING_IDX + 1, cfg.hidden_size, **kw)
        self.embed_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.relative_bias = layers.embed(NUM_BUCKETS, cfg.num_heads, **kw)  # [bucket, head]
        self.layers = nnx.List([BertLayer(cfg, **kw) for _ in range(cfg.num_layers)])

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] right-padded ids and mask -> last layer's hidden states [B, T, H]."""
        length = layers.check_length(input_ids, self.cfg)
        # HF counts non-pad ids; the mask says the same for right-padded text, whatever the pad id.
        positions = jnp.cumsum(attention_mask, axis=1) * attention_mask + PADDING_IDX
        x = self.embed_norm(self.token_embed(input_ids) + self.position_embed(positions))
        bias = self.relative_bias(jnp.asarray(relative_position_buckets(length)))  # [T, T, N]
        bias = jnp.transpose(bias, (2, 0, 1))[None]
        return layers.run_blocks(self.layers, x, attention_mask, bias)
