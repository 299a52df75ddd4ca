"""GPT-2 decoder (pre-norm, learned positions, causal attention), as in HF GPT2Model."""
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
    hidden, heads = d["n_embd"], d["n_head"]
    return TransformerConfig(
        arch="gpt2",
        vocab_size=d["vocab_size"],
        hidden_size=hidden,
        num_layers=d["n_layer"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=d.get("n_inner") or 4 * hidden,
        max_position=d["n_positions"],
        norm_eps=d.get("layer_norm_epsilon", 1e-5),
        activation=d.get("activation_function", "gelu_new"),
        qkv_bias=True,
        tie_embeddings=d.get("tie_word_embeddings", True),
    )


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    m: NameMap = {
        ("token_embed", "embedding"): ("wte.weight", unchanged),
        ("position_embed", "embedding"): ("wpe.weight", unchanged),
        **norm_names(("final_norm",), "ln_f"),
    }
    h = cfg.hidden_size
    for i in range(cfg.num_layers):
        ours, hf = ("layers", i), f"h.{i}"
        # c_attn fuses query, key and value along its output axis.
        for j, name in enumerate(("query", "key", "value")):
            part = slice(j * h, (j + 1) * h)
            m[ours + ("attn", name, "kernel")] = (f"{hf}.attn.c_attn.weight", lambda w, p=part: w[:, p])
            m[ours + ("attn", name, "bias")] = (f"{hf}.attn.c_attn.bias", lambda b, p=part: b[p])
        # Conv1D already stores [in, out].
        m |= linear_names(ours + ("attn", "out"), f"{hf}.attn.c_proj", transpose=False)
        m |= norm_names(ours + ("attn_norm",), f"{hf}.ln_1")
        m |= norm_names(ours + ("mlp_norm",), f"{hf}.ln_2")
        m |= linear_names(ours + ("mlp_in",), f"{hf}.mlp.c_fc", transpose=False)
        m |= linear_names(ours + ("mlp_out",), f"{hf}.mlp.c_proj", transpose=False)
    return m


class GPT2Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(nnx.LayerNorm, cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.attn_norm = norm()
        self.attn = layers.Attention(cfg, out_bias=True, **kw)
        self.mlp_norm = norm()
        self.mlp_in = layers.dense(cfg.hidden_size, cfg.intermediate_size, bias=True, **kw)
        self.mlp_out = layers.dense(cfg.intermediate_size, cfg.hidden_size, bias=True, **kw)
        self.act = layers.activation(cfg.activation)

    def __call__(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        return self._mlp(x + self.attn(self.attn_norm(x), attention_mask, causal=True))

    def cached(
        self, x: jax.Array, kv: tuple[jax.Array, jax.Array], step: layers.CacheStep
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        y, kv = self.attn.cached(self.attn_norm(x), kv, step)
        return self._mlp(x + y), kv

    def _mlp(self, x: jax.Array) -> jax.Array:
        return x + self.mlp_out(self.act(self.mlp_in(self.mlp_norm(x))))


# GPT2LMHeadModel nests it in "transformer."; the LM head is tied to the token embedding.
@register_family("gpt2", model_types=("gpt2",), read_config=read_config, checkpoint_names=checkpoint_names,
                 prefixes=("transformer.",), pooling="last", column_parallel=("query", "key", "value", "mlp_in"),
                 row_parallel=("out", "mlp_out"))
class GPT2(nnx.Module):
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
        self.layers = nnx.List([GPT2Block(cfg, **kw) for _ in range(cfg.num_layers)])
        self.final_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.norm_eps, **kw)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] right-padded ids and mask -> hidden states after the final LayerNorm [B, T, H]."""
        positions = jnp.arange(layers.check_length(input_ids, self.cfg))
        x = self.token_embed(input_ids) + self.position_embed(positions)
        return self.final_norm(layers.run_blocks(self.layers, x, attention_mask))

    def cached(
        self, input_ids: jax.Array, attention_mask: jax.Array, cache: layers.KVCache
    ) -> tuple[jax.Array, layers.KVCache]:
        """[B, T] right-padded new ids and mask after each row's cached tokens -> their hidden
        states [B, T, H] and the cache holding them too."""
        step = layers.CacheStep.after(cache, input_ids.shape[1])
        # Slots past the table are padding only; clamped, so their (unread) keys stay finite.
        positions = jnp.minimum(step.slots, self.cfg.max_position - 1)
        x = self.token_embed(input_ids) + self.position_embed(positions)
        kvs = []
        for layer, kv in zip(self.layers, zip(cache.keys, cache.values)):
            x, kv = layer.cached(x, kv, step)
            kvs.append(kv)
        return self.final_norm(x), layers.KVCache.filled(kvs, cache, attention_mask)
