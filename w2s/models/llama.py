"""Llama / Qwen2 decoder: RMSNorm, RoPE, grouped-query attention and a SwiGLU MLP."""
from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from w2s.models import layers
from w2s.models.config import TransformerConfig, rope_theta
from w2s.models.family import register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged


def read_config(d: dict[str, Any]) -> TransformerConfig:
    if d.get("use_sliding_window"):
        raise ValueError("sliding-window attention is not supported")
    hidden, heads = d["hidden_size"], d["num_attention_heads"]
    return TransformerConfig(
        arch="llama",
        vocab_size=d["vocab_size"],
        hidden_size=hidden,
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=d.get("num_key_value_heads") or heads,
        head_dim=d.get("head_dim") or hidden // heads,
        intermediate_size=d["intermediate_size"],
        max_position=d["max_position_embeddings"],
        norm_eps=d.get("rms_norm_eps", 1e-6),
        activation=d.get("hidden_act", "silu"),
        rope_theta=rope_theta(d),
        qkv_bias=d["model_type"] == "qwen2" or bool(d.get("attention_bias")),
        tie_embeddings=d.get("tie_word_embeddings", False),
    )


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    m: NameMap = {
        ("token_embed", "embedding"): ("embed_tokens.weight", unchanged),
        **norm_names(("final_norm",), "norm", bias=False),
    }
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"layers.{i}"
        for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            m |= linear_names(ours + ("attn", name), f"{hf}.self_attn.{proj}", bias=cfg.qkv_bias)
        m |= linear_names(ours + ("attn", "out"), f"{hf}.self_attn.o_proj", bias=False)
        m |= norm_names(ours + ("attn_norm",), f"{hf}.input_layernorm", bias=False)
        m |= norm_names(ours + ("mlp_norm",), f"{hf}.post_attention_layernorm", bias=False)
        for name in ("gate", "up", "down"):
            m |= linear_names(ours + (f"mlp_{name}",), f"{hf}.mlp.{name}_proj", bias=False)
    return m


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


# LlamaForCausalLM and Qwen2ForCausalLM nest it in "model.".
@register_family("llama", model_types=("llama", "qwen2"), read_config=read_config,
                 checkpoint_names=checkpoint_names, prefixes=("model.",), pooling="last",
                 column_parallel=("query", "key", "value", "mlp_gate", "mlp_up"), row_parallel=("out", "mlp_down"))
class Llama(layers.RotaryDecoder):
    block = LlamaBlock
    norm = nnx.RMSNorm
