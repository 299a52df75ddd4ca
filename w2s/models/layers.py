"""Pieces every backbone shares: HF-style initialisers, activations, RoPE and attention."""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.config import ConfigError
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
        raise ConfigError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(
    d_in: int, d_out: int, *, bias: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.Linear:
    return nnx.Linear(
        d_in, d_out, use_bias=bias, kernel_init=INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def embed(num: int, features: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(num, features, embedding_init=INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


# Set while a train step traces its forward pass (w2s/train.py, TrainConfig.remat): blocks are then
# rematerialised. A trace-time switch, so every family's layer loop honours it through run_block
# without a model option, and the parameters (checkpoints, shardings) keep their layout.
_REMAT_BLOCKS = contextvars.ContextVar("remat_blocks", default=False)


@contextlib.contextmanager
def remat_blocks(on: bool):
    """Within it, run_block keeps only each block's inputs for the backward pass and recomputes the
    rest there: activation memory of one block instead of all, for about one more forward pass."""
    token = _REMAT_BLOCKS.set(on)
    try:
        yield
    finally:
        _REMAT_BLOCKS.reset(token)


# Set while a train step traces its forward pass with TrainConfig.scan_layers: run_blocks then runs
# blocks of one structure as a lax.scan, so the program holds one block, not one per layer.
_SCAN_BLOCKS = contextvars.ContextVar("scan_blocks", default=False)


@contextlib.contextmanager
def scan_blocks(on: bool):
    """Within it, run_blocks scans over blocks alike in structure (see there)."""
    token = _SCAN_BLOCKS.set(on)
    try:
        yield
    finally:
        _SCAN_BLOCKS.reset(token)


def _block_fn(graphdef: nnx.GraphDef) -> Callable[..., Any]:
    """The block as a pure function of its arrays (a block's forward changes no state), under
    jax.checkpoint inside remat_blocks(True); nnx.remat would write its variables back, which fails
    inside the step's lax.switch/cond."""
    fn = lambda state, *args: nnx.merge(graphdef, state)(*args)  # noqa: E731
    return jax.checkpoint(fn) if _REMAT_BLOCKS.get() else fn


def run_block(block: nnx.Module, *args: Any) -> Any:
    """block(*args), rematerialised inside remat_blocks(True)."""
    if not _REMAT_BLOCKS.get():
        return block(*args)
    graphdef, state = nnx.split(block)
    return _block_fn(graphdef)(state, *args)


def run_blocks(blocks: Sequence[nnx.Module], x: jax.Array, *args: Any, per_block: Sequence[Any] | None = None) -> Any:
    """x through every block in turn: x = block(x, *args, per_block[i]) (per_block: an argument that
    may differ by block, e.g. its RoPE tables; None: none). Inside scan_blocks(True), blocks of one
    structure run as one lax.scan over their arrays stacked along a new leading axis: the program
    holds one block instead of one per layer, and the step a stacked copy of the blocks' parameters.
    Blocks that differ in structure (Gemma-3's sliding and global layers) run one after another."""
    extra = [()] * len(blocks) if per_block is None else [(e,) for e in per_block]
    if _SCAN_BLOCKS.get() and len(blocks) > 1:
        graphdefs, states = zip(*(nnx.split(b) for b in blocks))
        if all(g == graphdefs[0] for g in graphdefs[1:]):
            stack = lambda *leaves: jnp.stack(leaves)  # noqa: E731
            fn = _block_fn(graphdefs[0])
            x, _ = jax.lax.scan(lambda h, xs: (fn(xs[0], h, *args, *xs[1]), None), x,
                                (jax.tree.map(stack, *states), jax.tree.map(stack, *extra)))
            return x
    for block, e in zip(blocks, extra):
        x = run_block(block, x, *args, *e)
    return x


def check_length(input_ids: jax.Array, cfg: TransformerConfig) -> int:
    """Sequence length, refusing lengths past learned position tables (take would return NaN)."""
    length = input_ids.shape[1]
    if length > cfg.max_position:
        raise ConfigError(f"sequence length {length} exceeds max_position {cfg.max_position}")
    return length


def rope_tables(positions: Any, dim: int, theta: float, factor: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """cos and sin [..., dim/2] at integer positions [...] ([T], or [B, T] when rows sit at
    their own offsets in a KV cache), as HF Llama computes them (float32). dim is the rotated
    part of a head: all of it, or GPT-NeoX's leading cfg.rotary_dim. factor > 1 is HF's linear
    RoPE scaling (frequencies divided by it)."""
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim) / np.float32(factor)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates the first R = 2 * cos.shape[-1] dimensions of [B, T, N, D] by position and passes
    the rest (partial rotary when R < D); HF pairs dimension i with i + R/2 (rotate_half)."""
    rotated = 2 * cos.shape[-1]
    x1, x2 = jnp.split(x[..., :rotated].astype(jnp.float32), 2, axis=-1)
    cos, sin = cos[..., None, :], sin[..., None, :]
    y = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
    return jnp.concatenate([y, x[..., rotated:]], axis=-1)


def attention_impl(q: jax.Array) -> str | None:
    """cuDNN's fused attention on GPUs for 16-bit inputs it supports; XLA's otherwise."""
    fused_ok = q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128
    return "cudnn" if fused_ok and jax.default_backend() == "gpu" else None


class Attention(nnx.Module):
    """Multi-head attention with grouped-query heads, a key padding mask, an optional causal mask
    and an optional sliding window.

    head_norm, if given, builds a norm over head_dim that each query and key head passes through
    before RoPE (Gemma-3's q/k norms). Scores are scaled by cfg.query_pre_attn_scalar ** -0.5
    where the config sets it, else by head_dim ** -0.5.
    """

    def __init__(
        self, cfg: TransformerConfig, *, out_bias: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs,
        head_norm: Callable[[int], nnx.Module] | None = None,
    ):
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.scale = None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar**-0.5
        d = functools.partial(dense, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.query = d(cfg.hidden_size, q_size, bias=cfg.qkv_bias)
        self.key = d(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.value = d(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.out = d(q_size, cfg.hidden_size, bias=out_bias)
        self.query_norm = None if head_norm is None else head_norm(cfg.head_dim)
        self.key_norm = None if head_norm is None else head_norm(cfg.head_dim)

    def __call__(
        self,
        x: jax.Array,
        attention_mask: jax.Array,
        *,
        causal: bool,
        rope: tuple[jax.Array, jax.Array] | None = None,
        bias: jax.Array | None = None,
        window: int | None = None,
    ) -> jax.Array:
        """x [B, T, H], attention_mask [B, T] (1 = real tokens, then padding) -> [B, T, H];
        bias [1, N, T, T], if given, is added to every row's scaled scores (MPNet's relative positions).

        window: each query sees only the last `window` keys up to itself (causal only).
        Only keys are masked: outputs at padded query positions are computed but never meaningful.
        """
        q, k, v = self._project(x, rope)
        # Query head n reads kv head n // (num_heads / num_kv_heads), as HF's repeat_kv does.
        # Right padding makes the key mask a per-row length, which cuDNN's fused kernel accepts.
        lengths = jnp.sum(attention_mask, axis=-1, dtype=jnp.int32)
        y = jax.nn.dot_product_attention(
            q, k, v, None if bias is None else bias.astype(q.dtype), scale=self.scale, is_causal=causal,
            key_value_seq_lengths=lengths, local_window_size=None if window is None else (window - 1, 0),
            implementation=attention_impl(q),
        )
        return self.out(y.reshape(*x.shape[:2], -1))

    def cached(
        self,
        x: jax.Array,
        kv: tuple[jax.Array, jax.Array],
        step: CacheStep,
        rope: tuple[jax.Array, jax.Array] | None = None,
        window: int | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Causal attention of new tokens x [B, T, H] to a layer's cached keys and values
        ([B, S, Nkv, D] each) plus their own (the last `window` of them, if given); returns the
        output and the updated cache."""
        q, k, v = self._project(x, rope)
        keys, values = write_slots(kv[0], k, step.slots), write_slots(kv[1], v, step.slots)
        y = jax.nn.dot_product_attention(q, keys, values, scale=self.scale, mask=step.visible(window)[:, None])
        return self.out(y.reshape(*x.shape[:2], -1)), (keys, values)

    def _project(
        self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, t, _ = x.shape
        q = self.query(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.key(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.value(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.query_norm is not None:
            q, k = self.query_norm(q), self.key_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v


class KVCache(NamedTuple):
    """Keys and values of every layer for B rows of up to S tokens, preallocated once.

    Row b holds its first lengths[b] tokens in slots [0, lengths[b]): a token's slot is its
    position, so rows of different lengths need no left padding, and a row can be cut back to a
    shorter prefix (to reuse it for a text that shares that prefix) by lowering its length alone.
    """

    keys: tuple[jax.Array, ...]  # per layer [B, S, Nkv, D]
    values: tuple[jax.Array, ...]
    lengths: jax.Array  # [B] int32

    @classmethod
    def empty(cls, cfg: TransformerConfig, rows: int, capacity: int, dtype: Any) -> KVCache:
        shape = (rows, capacity, cfg.num_kv_heads, cfg.head_dim)

        def zeros() -> tuple[jax.Array, ...]:  # distinct buffers, so each can be donated
            return tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))

        return cls(zeros(), zeros(), jnp.zeros(rows, jnp.int32))

    @classmethod
    def filled(
        cls, kvs: list[tuple[jax.Array, jax.Array]], before: KVCache, attention_mask: jax.Array
    ) -> KVCache:
        """The cache after a step wrote every layer's kvs: each row grew by its real new tokens."""
        keys, values = zip(*kvs)
        return cls(keys, values, before.lengths + jnp.sum(attention_mask, axis=1, dtype=jnp.int32))


class CacheStep(NamedTuple):
    """Where T new tokens go, shared by every layer: slots [B, T] (= their positions) and which
    slots each may read, read [B, T, S] (its row's earlier tokens and itself)."""

    slots: jax.Array
    read: jax.Array

    @classmethod
    def after(cls, cache: KVCache, num_new: int) -> CacheStep:
        slots = cache.lengths[:, None] + jnp.arange(num_new, dtype=jnp.int32)
        capacity = cache.keys[0].shape[1]
        read = jnp.arange(capacity, dtype=jnp.int32)[None, None, :] <= slots[:, :, None]
        return cls(slots, read)

    def visible(self, window: int | None) -> jax.Array:
        """read, less the slots more than `window` - 1 before each token (a sliding window)."""
        if window is None:
            return self.read
        capacity = self.read.shape[-1]
        return self.read & (jnp.arange(capacity, dtype=jnp.int32)[None, None, :] > self.slots[:, :, None] - window)


def write_slots(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
    """cache [B, S, ...] with new [B, T, ...] written at slots [B, T].

    A scatter, since each row writes at its own offset (a dynamic_update_slice per row would
    clamp its start and overwrite earlier tokens near the end); slots past S are padding of a
    right-padded batch and are dropped. Under jit with the cache donated it updates in place.
    """
    rows = jnp.arange(cache.shape[0])[:, None]
    return cache.at[rows, slots].set(new.astype(cache.dtype), mode="drop")


class RotaryBlock(nnx.Module):
    """A rotary decoder block: attention over `attn_norm(x)`, whole or against a KV cache, then the
    subclass's `combine(x, attention output)` (its residuals and MLP). A subclass that sets
    `window` attends only to that many last tokens."""

    window: int | None = None

    def __call__(self, x: jax.Array, attention_mask: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        y = self.attn(self.attn_norm(x), attention_mask, causal=True, rope=rope, window=self.window)
        return self.combine(x, y)

    def cached(self, x: jax.Array, kv: tuple[jax.Array, jax.Array], step: CacheStep,
               rope: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        y, kv = self.attn.cached(self.attn_norm(x), kv, step, rope, window=self.window)
        return self.combine(x, y), kv


class RotaryDecoder(nnx.Module):
    """What the rotary decoders (Llama/Qwen2, GPT-NeoX, Gemma-3) share: token embeddings, blocks
    that take RoPE tables (and a KV cache), a final norm. A subclass names its `block` and `norm`
    classes, and may build blocks that differ by layer (`make_block`), embed tokens otherwise
    (`embed`) or give layers different RoPE (`ropes`)."""

    block: type[nnx.Module]
    norm: type[nnx.Module]

    def __init__(self, cfg: TransformerConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.token_embed = embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.layers = nnx.List([self.make_block(i, **kw) for i in range(cfg.num_layers)])
        self.final_norm = self.norm(cfg.hidden_size, epsilon=cfg.norm_eps, **kw)

    def make_block(self, index: int, **kw: Any) -> nnx.Module:
        """Block `index`; here every block is alike."""
        return self.block(self.cfg, **kw)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, T] right-padded ids and mask -> hidden states after the final norm [B, T, H]."""
        x = self.embed(input_ids)
        x = run_blocks(self.layers, x, attention_mask, per_block=self.ropes(jnp.arange(input_ids.shape[1])))
        return self.final_norm(x)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.token_embed(input_ids)

    def ropes(self, positions: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Each layer's RoPE tables at integer positions ([T] or [B, T]); here all share one."""
        return [rope_tables(positions, self.cfg.rotary_dim, self.cfg.rope_theta)] * len(self.layers)

    def cached(self, input_ids: jax.Array, attention_mask: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """[B, T] right-padded new ids and mask after each row's cached tokens -> their hidden
        states [B, T, H] and the cache holding them too."""
        step = CacheStep.after(cache, input_ids.shape[1])
        x = self.embed(input_ids)
        kvs = []
        for layer, kv, rope in zip(self.layers, zip(cache.keys, cache.values), self.ropes(step.slots)):
            x, kv = layer.cached(x, kv, step, rope)
            kvs.append(kv)
        return self.final_norm(x), KVCache.filled(kvs, cache, attention_mask)
