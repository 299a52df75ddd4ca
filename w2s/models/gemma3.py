"""Gemma-3 text decoder, as HF Gemma3TextModel / Gemma3ForCausalLM (model_type gemma3_text).

What sets it apart from Llama: embeddings scaled by sqrt(hidden); RMSNorms that scale by (1 + w)
in float32, four per block (before and after attention, before and after the GeGLU MLP) and one
on each query and key head; attention scores scaled by query_pre_attn_scalar ** -0.5 with
head_dim independent of hidden / heads; and local layers that see only the last sliding_window
tokens with RoPE base 10,000, between global layers with base 1e6 (and optional linear scaling).
The LM head is the token embedding (tied).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.config import ConfigError
from w2s.models import layers
from w2s.models.config import TransformerConfig
from w2s.models.family import register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged

SLIDING, FULL = "sliding_attention", "full_attention"  # HF's layer_types


class RMSNorm(nnx.Module):
    """x / rms(x) * (1 + scale), computed in float32 as HF's Gemma3RMSNorm. `scale` holds HF's
    weight as stored (zero is the identity), so checkpoints load unchanged."""

    def __init__(self, num_features: int, *, epsilon: float, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        del rngs  # zeros need no randomness; the argument keeps nnx.RMSNorm's signature
        self.scale = nnx.Param(jnp.zeros(num_features, param_dtype))
        self.epsilon, self.dtype = epsilon, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(self.dtype)


class Gemma3Block(layers.RotaryBlock):
    def __init__(self, cfg: TransformerConfig, *, sliding: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(RMSNorm, epsilon=cfg.norm_eps, **kw)
        dense = functools.partial(layers.dense, bias=False, **kw)
        self.window = cfg.sliding_window if sliding else None
        self.attn_norm = norm(cfg.hidden_size)
        self.attn = layers.Attention(cfg, out_bias=cfg.qkv_bias, head_norm=norm, **kw)
        self.attn_out_norm = norm(cfg.hidden_size)
        self.mlp_norm = norm(cfg.hidden_size)
        self.mlp_gate = dense(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_up = dense(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_down = dense(cfg.intermediate_size, cfg.hidden_size)
        self.mlp_out_norm = norm(cfg.hidden_size)
        self.act = layers.activation(cfg.activation)

    def combine(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        x = x + self.attn_out_norm(attn)
        h = self.mlp_norm(x)
        return x + self.mlp_out_norm(self.mlp_down(self.act(self.mlp_gate(h)) * self.mlp_up(h)))


def read_config(d: dict[str, Any]) -> TransformerConfig:
    """A gemma3_text config.json (either HF layout of its RoPE keys), with Gemma3TextConfig's
    defaults for missing keys."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping", "use_bidirectional_attention"):
        if d.get(key):
            raise ConfigError(f"gemma3_text config sets {key}={d[key]!r}, which is not supported; "
                             f"Gemma-3 checkpoints leave it null/false")
    layers_n = d.get("num_hidden_layers", 26)
    pattern = d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 6))
    layer_types = d.get("layer_types") or [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers_n)]
    unknown = sorted(set(layer_types) - {SLIDING, FULL})
    if unknown or len(layer_types) != layers_n:
        raise ConfigError(f"gemma3_text layer_types must list {layers_n} of {SLIDING!r} or {FULL!r}; "
                         f"got {len(layer_types)} with unknown {unknown}")
    local_theta, local_factor = _rope(d, SLIDING, "rope_local_base_freq", 10_000.0)
    if local_factor != 1.0:
        raise ConfigError("gemma3_text: RoPE scaling of the sliding-window layers is not supported")
    global_theta, global_factor = _rope(d, FULL, "rope_theta", 1_000_000.0)
    hidden, heads = d.get("hidden_size", 2304), d.get("num_attention_heads", 8)
    return TransformerConfig(
        arch="gemma3",
        vocab_size=d.get("vocab_size", 262_208),
        hidden_size=hidden,
        num_layers=layers_n,
        num_heads=heads,
        num_kv_heads=d.get("num_key_value_heads", 4),
        head_dim=d.get("head_dim", 256),
        intermediate_size=d.get("intermediate_size", 9216),
        max_position=d.get("max_position_embeddings", 131_072),
        norm_eps=d.get("rms_norm_eps", 1e-6),
        activation=d.get("hidden_activation", "gelu_pytorch_tanh"),
        rope_theta=global_theta,
        qkv_bias=bool(d.get("attention_bias")),
        tie_embeddings=d.get("tie_word_embeddings", True),
        query_pre_attn_scalar=d.get("query_pre_attn_scalar", 256),
        sliding_window=d.get("sliding_window", 4096),
        sliding_layers=tuple(t == SLIDING for t in layer_types),
        rope_local_theta=local_theta,
        rope_factor=global_factor,
    )


def _rope(d: dict[str, Any], layer_type: str, old_key: str, default: float) -> tuple[float, float]:
    """(base, linear factor) of one layer type's RoPE: from v5's rope_parameters[layer_type], or the
    older top-level keys (rope_scaling applied to the global layers only, as HF does)."""
    params = d.get("rope_parameters") or {}
    if layer_type in params:
        params = params[layer_type] or {}
    else:
        params = dict(d.get("rope_scaling") or {}) if layer_type == FULL else {}
        params.setdefault("rope_theta", d.get(old_key, default))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise ConfigError(f"gemma3_text {layer_type}: RoPE scaling {rope_type!r} is not supported, "
                         "only plain or 'linear'")
    factor = float(params["factor"]) if rope_type == "linear" else 1.0
    return float(params.get("rope_theta", default)), factor


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    """Our parameter paths -> HF Gemma3TextModel tensor names."""
    m: NameMap = {
        ("token_embed", "embedding"): ("embed_tokens.weight", unchanged),
        **norm_names(("final_norm",), "norm", bias=False),
    }
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"layers.{i}"
        for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "o_proj")):
            m |= linear_names(ours + ("attn", name), f"{hf}.self_attn.{proj}", bias=cfg.qkv_bias)
        m |= norm_names(ours + ("attn", "query_norm"), f"{hf}.self_attn.q_norm", bias=False)
        m |= norm_names(ours + ("attn", "key_norm"), f"{hf}.self_attn.k_norm", bias=False)
        for name, norm in (("attn_norm", "input_layernorm"), ("attn_out_norm", "post_attention_layernorm"),
                           ("mlp_norm", "pre_feedforward_layernorm"),
                           ("mlp_out_norm", "post_feedforward_layernorm")):
            m |= norm_names(ours + (name,), f"{hf}.{norm}", bias=False)
        for name in ("gate", "up", "down"):
            m |= linear_names(ours + (f"mlp_{name}",), f"{hf}.mlp.{name}_proj", bias=False)
    return m


# Gemma3ForCausalLM nests it in "model."; its LM head is the token embedding.
@register_family("gemma3", model_types=("gemma3_text",), read_config=read_config,
                 checkpoint_names=checkpoint_names, prefixes=("model.",), pooling="last",
                 column_parallel=("query", "key", "value", "mlp_gate", "mlp_up"), row_parallel=("out", "mlp_down"))
class Gemma3(layers.RotaryDecoder):
    norm = RMSNorm

    def make_block(self, index: int, **kw: Any) -> Gemma3Block:
        return Gemma3Block(self.cfg, sliding=self.cfg.sliding_layers[index], **kw)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        # HF rounds sqrt(hidden) to float32, then to the compute dtype (bfloat16 gives 25.25 for 640).
        x = self.token_embed(input_ids)
        return x * jnp.asarray(np.float32(self.cfg.hidden_size**0.5), x.dtype)

    def ropes(self, positions: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        cfg = self.cfg
        local = layers.rope_tables(positions, cfg.rotary_dim, cfg.rope_local_theta)
        full = layers.rope_tables(positions, cfg.rotary_dim, cfg.rope_theta, cfg.rope_factor)
        return [local if layer.window is not None else full for layer in self.layers]
