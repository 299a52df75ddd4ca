"""Batched text generation for the decoders (GPT-2, Llama, Qwen2) with a preallocated KV cache.

One jitted function does all device work: feed each row's right-padded new tokens after what its
cache holds, and draw the next token (greedy, or temperature and top-p sampling). A prompt is
fed once (its length rounded up to a power of two, so many lengths share a few programs), then
one token per step, always the same program. Stop rules (eos, stop strings, a regex, a length,
a caller's hand-off rule) run on the host while the device computes the next step.

The cache outlives a call: a row whose next prompt starts with tokens it already holds (the same
text grown, as when two models write one text in turn) feeds only the rest.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from w2s.config import ConfigError
from w2s.data import bucket_width
from w2s.models.causal_lm import CausalLM
from w2s.models.layers import KVCache

# (row, top-1 probability, entropy in nats) of the distribution a token is about to be drawn
# from -> True to stop that row before the token (it is then not part of the completion).
Handoff = Callable[[int, float, float], bool]
# Tokens of the prompt's end decoded with a completion, so its first token decodes as it does
# mid-text (SentencePiece decoders drop the leading space of a text's first token).
_CONTEXT_TOKENS = 4


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """temperature 0 is greedy; top_p < 1 samples from the smallest set of most likely tokens
    whose probability reaches top_p. Text is cut before the first stop string or stop_pattern
    match (a regex: r"(?<=\\S)\\s" ends the text at the end of its first word)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_pattern: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


@dataclasses.dataclass
class Completion:
    """One row's output. token_ids are every token drawn up to the stop (eos included); top1 and
    entropy describe the distribution behind each, plus, after a 'handoff', the refused one."""

    text: str
    token_ids: list[int]
    reason: str  # 'eos' | 'stop' | 'length' | 'handoff'
    top1: list[float]
    entropy: list[float]


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Logits outside the nucleus set to -inf: a token stays if the tokens more likely than it
    hold less than top_p of the mass (so the token crossing top_p stays, as in HF)."""
    descending = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(descending, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(before < top_p, descending, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= cutoff, logits, -jnp.inf)


def sample(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Next tokens [B] from float32 logits [B, V]; temperature and top_p are static."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits).astype(jnp.int32)


def _feed(graphdef: nnx.GraphDef, params: nnx.State, cache: KVCache, ids: jax.Array, mask: jax.Array,
          key: jax.Array, step: jax.Array, *, temperature: float, top_p: float):
    model = nnx.merge(graphdef, params)
    logits, cache = model.extend(ids, mask, cache)
    logp = jax.nn.log_softmax(logits, axis=-1)
    top1 = jnp.exp(jnp.max(logp, axis=-1))
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    token = sample(logits, jax.random.fold_in(key, step), temperature, top_p)
    return token[:, None], top1, entropy, cache  # [B, 1]: ready to be fed back


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def continuation(tokenizer: Any, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
    """The text new_ids add after prompt_ids, without special tokens."""
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    context = list(prompt_ids[-_CONTEXT_TOKENS:])
    head, full = decode(context), decode(context + list(new_ids))
    return full[len(head):] if full.startswith(head) else decode(list(new_ids))


def find_stop(text: str, stop: Sequence[str], pattern: re.Pattern | None) -> int | None:
    """Where text is cut: the earliest stop string or pattern match, or None."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if pattern is not None and (match := pattern.search(text)):
        cuts.append(match.start())
    return min(cuts) if cuts else None


@dataclasses.dataclass
class _Row:
    prompt: list[int]
    room: int
    ids: list[int] = dataclasses.field(default_factory=list)
    top1: list[float] = dataclasses.field(default_factory=list)
    entropy: list[float] = dataclasses.field(default_factory=list)
    reason: str | None = None
    cut: int | None = None


class Generator:
    """Generation for up to `rows` prompts at a time, each up to `max_length` tokens with its
    completion; the cache ([rows, max_length] per layer) is allocated once."""

    def __init__(self, model: CausalLM, tokenizer: Any | None, *, rows: int, max_length: int,
                 eos_ids: Sequence[int] | None = None, add_special_tokens: bool = True):
        cfg = model.cfg
        if max_length > cfg.max_position:
            raise ConfigError(f"max_length {max_length} exceeds the model's {cfg.max_position} positions")
        self.tokenizer, self.rows, self.max_length = tokenizer, rows, max_length
        self.add_special_tokens = add_special_tokens
        if eos_ids is None:
            eos_ids = [] if tokenizer is None or tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        self.eos_ids = frozenset(eos_ids)
        self.graphdef, self.params = nnx.split(model)
        self.cache = KVCache.empty(cfg, rows, max_length, model.backbone.token_embed.dtype)
        self.held: list[list[int]] = [[] for _ in range(rows)]  # the tokens each row's cache holds
        self._feed = jax.jit(functools.partial(_feed, self.graphdef), donate_argnums=(1,),
                             static_argnames=("temperature", "top_p"))

    def load(self, model: CausalLM) -> None:
        """Generates with `model`'s parameters from now on (a model of the same structure: the
        compiled programs and the cache's memory are kept, its contents forgotten)."""
        self.params = nnx.state(model)
        self.held = [[] for _ in range(self.rows)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens)

    def count_tokens(self, text: str) -> int:
        """Tokens of a piece of text on its own, no special tokens: how much a model wrote."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompts: Sequence[str | None], cfg: GenerationConfig, *,
                 limits: Sequence[int] | None = None, handoff: Handoff | None = None,
                 progress: bool = False) -> list[Completion | None]:
        """Completions of `prompts` (None: that row sits this call out); see generate_ids."""
        ids = [None if p is None else self.encode(p) for p in prompts]
        return self.generate_ids(ids, cfg, limits=limits, handoff=handoff, progress=progress)

    def generate_ids(self, prompts: Sequence[Sequence[int] | None], cfg: GenerationConfig, *,
                     limits: Sequence[int] | None = None, handoff: Handoff | None = None,
                     progress: bool = False) -> list[Completion | None]:
        """Completions of up to `rows` tokenized prompts, one per row (None: the row sits out).

        limits: per row, at most this many new tokens (below cfg.max_new_tokens).
        handoff: called before each token is accepted; True stops the row without it.
        """
        if len(prompts) > self.rows:
            raise ValueError(f"{len(prompts)} prompts for a generator of {self.rows} rows")
        if (cfg.stop or cfg.stop_pattern) and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        n = len(prompts)
        prompts = list(prompts) + [None] * (self.rows - n)
        rows: dict[int, _Row] = {}
        for b, p in enumerate(prompts):
            if p is None:
                continue
            if not 0 < len(p) < self.max_length:
                raise ConfigError(f"a prompt of {len(p)} tokens: need 1 to {self.max_length - 1} (max_length)")
            limit = cfg.max_new_tokens if limits is None else min(cfg.max_new_tokens, limits[b])
            if limit < 1:
                raise ValueError(f"row {b} may add {limit} tokens; a limit must be at least 1")
            rows[b] = _Row(list(p), min(limit, self.max_length - len(p)))
        if not rows:
            return [None] * n
        pattern = re.compile(cfg.stop_pattern) if cfg.stop_pattern else None
        sampling = dict(temperature=cfg.temperature, top_p=cfg.top_p)
        key = jax.random.key(cfg.seed)

        # Feed each row what its cache lacks; a row keeps at least its last token to feed, whose
        # logits give the first new token. Rows sitting out feed nothing and keep their cache.
        keep = [len(self.held[b]) for b in range(self.rows)]
        for b, row in rows.items():
            keep[b] = min(_common_prefix(self.held[b], row.prompt), len(row.prompt) - 1)
        chunks = {b: row.prompt[keep[b]:] for b, row in rows.items()}
        width = bucket_width(max(len(c) for c in chunks.values()), self.max_length)
        ids = np.zeros((self.rows, width), np.int32)
        mask = np.zeros((self.rows, width), np.int32)
        for b, chunk in chunks.items():
            ids[b, :len(chunk)], mask[b, :len(chunk)] = chunk, 1
        self.cache = self.cache._replace(lengths=jnp.asarray(keep, jnp.int32))
        token, top1, entropy, self.cache = self._feed(self.params, self.cache, ids, mask, key, 0, **sampling)

        fed: list[list[int]] = [[] for _ in range(self.rows)]
        steps = max(row.room for row in rows.values())
        ones = jnp.ones((self.rows, 1), jnp.int32)
        with tqdm(total=steps, desc="generate", unit="tok", disable=not progress, leave=False) as bar:
            for i in range(steps):
                drawn = token, top1, entropy
                if i + 1 < steps:  # dispatched before the host reads this step's tokens: they overlap
                    token, top1, entropy, self.cache = self._feed(
                        self.params, self.cache, token, ones, key, i + 1, **sampling)
                tokens, probs, entropies = (np.asarray(x) for x in drawn)
                if i + 1 < steps:
                    for b in range(self.rows):
                        fed[b].append(int(tokens[b, 0]))
                for b, row in rows.items():
                    if row.reason is None:
                        self._take(b, row, int(tokens[b, 0]), float(probs[b]), float(entropies[b]),
                                   cfg, pattern, handoff)
                bar.update()
                if all(row.reason is not None for row in rows.values()):
                    break
        for b, row in rows.items():
            self.held[b] = (row.prompt + fed[b])[:self.max_length]
        return [self._completion(rows[b]) if b in rows else None for b in range(n)]

    def _take(self, b: int, row: _Row, token: int, top1: float, entropy: float, cfg: GenerationConfig,
              pattern: re.Pattern | None, handoff: Handoff | None) -> None:
        row.top1.append(top1)
        row.entropy.append(entropy)
        if handoff is not None and handoff(b, top1, entropy):
            row.reason = "handoff"
            return
        row.ids.append(token)
        if token in self.eos_ids:
            row.reason = "eos"
        elif (cfg.stop or pattern) and (cut := find_stop(
                continuation(self.tokenizer, row.prompt, row.ids), cfg.stop, pattern)) is not None:
            row.reason, row.cut = "stop", cut
        elif len(row.ids) >= row.room:
            row.reason = "length"

    def _completion(self, row: _Row) -> Completion:
        text = "" if self.tokenizer is None else continuation(self.tokenizer, row.prompt, row.ids)
        if row.cut is not None:
            text = text[:row.cut]
        return Completion(text, row.ids, row.reason or "length", row.top1, row.entropy)
