"""Pieces every backbone shares: HF-style initialisers, activations, RoPE and attention."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.models.config import TransformerConfig

# HF initialises weights with normal(initializer_range=0.02); biases are zero, norms one.
INIT = nnx.initializers.normal(0.02)

# HF names: BERT's "gelu" is the exact erf form, GPT-2's "gelu_new" the tanh approximation.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def activation(name: str) -> Any:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(
    d_in: int, d_out: int, *, bias: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.Linear:
    return nnx.Linear(
        d_in, d_out, use_bias=bias, kernel_init=INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def embed(num: int, features: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(num, features, embedding_init=INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def check_length(input_ids: jax.Array, cfg: TransformerConfig) -> int:
    """Sequence length, refusing lengths past learned position tables (take would return NaN)."""
    length = input_ids.shape[1]
    if length > cfg.max_position:
        raise ValueError(f"sequence length {length} exceeds max_position {cfg.max_position}")
    return length


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin [T, head_dim/2] of positions 0..T-1, as HF Llama computes them (float32)."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    angles = np.arange(seq_len, dtype=np.float32)[:, None] * inv_freq[None, :]
    return jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates [B, T, N, D] by position; HF pairs dimension i with i + D/2 (rotate_half)."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention_impl(q: jax.Array) -> str | None:
    """cuDNN's fused attention on GPUs for 16-bit inputs it supports; XLA's otherwise."""
    fused_ok = q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128
    return "cudnn" if fused_ok and jax.default_backend() == "gpu" else None


class Attention(nnx.Module):
    """Multi-head attention with grouped-query heads, a key padding mask and an optional causal mask."""

    def __init__(
        self, cfg: TransformerConfig, *, out_bias: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
    ):
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        d = functools.partial(dense, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.query = d(cfg.hidden_size, q_size, bias=cfg.qkv_bias)
        self.key = d(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.value = d(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.out = d(q_size, cfg.hidden_size, bias=out_bias)

    def __call__(
        self,
        x: jax.Array,
        attention_mask: jax.Array,
        *,
        causal: bool,
        rope: tuple[jax.Array, jax.Array] | None = None,
    ) -> jax.Array:
        """x [B, T, H], attention_mask [B, T] (1 = real tokens, then padding) -> [B, T, H].

        Only keys are masked: outputs at padded query positions are computed but never meaningful.
        """
        b, t, _ = x.shape
        q = self.query(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.key(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.value(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # Query head n reads kv head n // (num_heads / num_kv_heads), as HF's repeat_kv does.
        # Right padding makes the key mask a per-row length, which cuDNN's fused kernel accepts.
        lengths = jnp.sum(attention_mask, axis=-1, dtype=jnp.int32)
        y = jax.nn.dot_product_attention(
            q, k, v, is_causal=causal, key_value_seq_lengths=lengths, implementation=attention_impl(q)
        )
        return self.out(y.reshape(b, t, self.num_heads * self.head_dim))
