"""A decoder backbone with its language-model head, for generation (w2s/generation/generate.py).

The classifiers use the bare backbones; generation also needs the head HF's *ForCausalLM models
carry: GPT-2 ties it to the token embedding, Llama/Qwen2 have their own lm_head unless
tie_word_embeddings says otherwise, and GPT-NeoX (Pythia) its own embed_out. All load from the same
checkpoint files as the backbones.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import transformers
from flax import nnx

from w2s.config import ConfigError
from w2s.models import layers, resolve_model_dir
from w2s.models.config import TransformerConfig
from w2s.models.family import MODEL_TYPES, family_of, new_backbone
from w2s.models.loading import load_pretrained, read_hf_config


class CausalLM(nnx.Module):
    def __init__(self, backbone: nnx.Module, *, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.backbone = backbone
        self.cfg: TransformerConfig = backbone.cfg
        self.lm_head = None if self.cfg.tie_embeddings else layers.dense(
            self.cfg.hidden_size, self.cfg.vocab_size, bias=False, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 next-token logits [..., V] of hidden states [..., H]."""
        if self.lm_head is None:
            return self.backbone.token_embed.attend(hidden).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] right-padded ids and mask -> logits [B, T, V] at every position, no cache."""
        return self.logits(self.backbone(input_ids, attention_mask))

    def extend(
        self, input_ids: jax.Array, attention_mask: jax.Array, cache: layers.KVCache
    ) -> tuple[jax.Array, layers.KVCache]:
        """Feeds [B, T] right-padded new tokens after each row's cached ones; returns the logits
        [B, V] after each row's last real new token (a prefill, or one decode step at T = 1) and
        the cache holding the new tokens. Only that row's logits are computed: [B, T, V] would be
        most of a long prefill's memory."""
        hidden, cache = self.backbone.cached(input_ids, attention_mask, cache)
        last = jnp.maximum(jnp.sum(attention_mask, axis=1) - 1, 0)
        return self.logits(jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]), cache


def build_causal_lm(
    name: str, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32
) -> tuple[CausalLM, Any]:
    """The pretrained decoder `name` (a folder, or a hub id through resolve_model_dir) with its
    LM head, and its tokenizer."""
    folder = resolve_model_dir(name)
    cfg = TransformerConfig.from_hf(read_hf_config(folder))
    if not family_of(cfg).decoder:
        raise ConfigError(f"{name} is a {cfg.arch} encoder; generation needs a decoder: one of "
                          f"{', '.join(decoder_model_types())}")

    def make() -> CausalLM:
        backbone = new_backbone(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        return CausalLM(backbone, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(1))

    model = load_pretrained(nnx.eval_shape(make), folder, lm_head=True)
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def decoder_model_types() -> list[str]:
    """The config.json model_types whose family generates."""
    return [name for name, family in MODEL_TYPES.items() if family.decoder]


def eos_ids(name: str, tokenizer: Any) -> list[int]:
    """Every token that ends a text: the tokenizer's eos and those of generation_config.json
    (chat models often end turns with a token other than their tokenizer's eos)."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    path = resolve_model_dir(name) / "generation_config.json"
    if path.is_file():
        listed = json.loads(path.read_text()).get("eos_token_id")
        ids += listed if isinstance(listed, list) else [] if listed is None else [listed]
    return sorted(set(ids))
