"""GPT-NeoX decoder (Pythia), as in HF GPTNeoXModel: LayerNorm with bias, RoPE on a leading
fraction of each head, a gelu MLP beside attention (parallel residual) or after it.

HF fuses query, key and value into one linear; checkpoint_names splits it into layers.Attention's
three, so the Megatron rules in sharding.py split whole heads as for the other decoders.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig, rope_theta
from w2s.models.family import register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged


def read_config(d: dict[str, Any]) -> TransformerConfig:
    """Defaults are GPTNeoXConfig's; Pythia's config.json uses the old rotary_* names."""
    hidden, heads = d["hidden_size"], d["num_attention_heads"]
    params = d.get("rope_parameters") or {}
    return TransformerConfig(
        arch="gpt_neox",
        vocab_size=d["vocab_size"],
        hidden_size=hidden,
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=d["intermediate_size"],
        max_position=d["max_position_embeddings"],
        norm_eps=d.get("layer_norm_eps", 1e-5),
        activation=d.get("hidden_act", "gelu"),
        rope_theta=rope_theta(d),
        rotary_fraction=float(params.get("partial_rotary_factor", d.get("rotary_pct", 0.25))),
        parallel_residual=d.get("use_parallel_residual", True),
        qkv_bias=d.get("attention_bias", True),
        tie_embeddings=d.get("tie_word_embeddings", False),
    )


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    m: NameMap = {
        ("token_embed", "embedding"): ("embed_in.weight", unchanged),
        **norm_names(("final_norm",), "final_layer_norm"),
    }
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"layers.{i}"
        # query_key_value's outputs are [heads, 3, head_dim]: part j of every head is one projection.
        fused = f"{hf}.attention.query_key_value"
        for j, name in enumerate(("query", "key", "value")):
            m[ours + ("attn", name, "kernel")] = (
                f"{fused}.weight", lambda w, j=j: _per_head_part(w, j, cfg.num_heads).T)
            if cfg.qkv_bias:
                m[ours + ("attn", name, "bias")] = (
                    f"{fused}.bias", lambda b, j=j: _per_head_part(b, j, cfg.num_heads))
        m |= linear_names(ours + ("attn", "out"), f"{hf}.attention.dense", bias=cfg.qkv_bias)
        m |= norm_names(ours + ("attn_norm",), f"{hf}.input_layernorm")
        m |= norm_names(ours + ("mlp_norm",), f"{hf}.post_attention_layernorm")
        m |= linear_names(ours + ("mlp_in",), f"{hf}.mlp.dense_h_to_4h")
        m |= linear_names(ours + ("mlp_out",), f"{hf}.mlp.dense_4h_to_h")
    return m


def _per_head_part(x: np.ndarray, j: int, heads: int) -> np.ndarray:
    """Rows [heads * head_dim, ...] of part j of a tensor whose rows are [heads, 3, head_dim]."""
    return x.reshape(heads, 3, -1, *x.shape[1:])[:, j].reshape(-1, *x.shape[1:])


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


# GPTNeoXForCausalLM nests it in "gpt_neox." and calls its untied LM head embed_out.
@register_family("gpt_neox", model_types=("gpt_neox",), read_config=read_config,
                 checkpoint_names=checkpoint_names, prefixes=("gpt_neox.",), pooling="last",
                 column_parallel=("query", "key", "value", "mlp_in"), row_parallel=("out", "mlp_out"),
                 lm_head="embed_out")
class GPTNeoX(layers.RotaryDecoder):
    block = GPTNeoXBlock
    norm = nnx.LayerNorm
