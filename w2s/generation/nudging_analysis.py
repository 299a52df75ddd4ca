"""What nudging's records say beyond accuracy: bootstrap intervals over questions, which kind of
words the nudger writes, and where an aligned model's text departs from the base model's choice.

- Intervals: 95% percentile bootstrap over questions (resampled with replacement), for any
  statistic of a set of records, and paired for the difference of two methods on the same questions.
- Word kinds: each word of a text is a function word (closed-class English: determiners,
  pronouns, prepositions, conjunctions, auxiliaries), punctuation/formatting, a number, or content.
  Fei et al. observe that nudged words are mostly "transitional" words and formatting; here that is
  the share of function words and punctuation among the nudger's words against the same share
  among the base model's own words.
- Disagreement (Lin et al., 2024; Fei et al., 2024): the base model reads the aligned model's
  answer; at each of its tokens, is that token the base model's top-1, and how sure was it?
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s.data import bucket_width
from w2s.generation.generate import Generator

CONFIDENCE = 0.95
# English closed-class words: a fixed set of the language, not a tuned list.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no all both either neither such what which whose
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
myself yourself himself herself itself ourselves themselves who whom whoever
of in on at by for with from to into onto over under about above below between among through during
before after since until upon within without against across along around behind beyond near off out
up down than as like per via
and or but nor so yet if then else because although though while whereas unless whether
be am is are was were been being have has had having do does did doing
will would shall should can could may might must ought
not n't 's 're 've 'll 'd 'm there here when where why how also too very just only even still
""".split())
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
KINDS = ("function", "punctuation", "number", "content")


def word_kind(word: str) -> str:
    if not any(c.isalnum() for c in word):
        return "punctuation"
    if any(c.isdigit() for c in word):
        return "number"
    if len(word) == 1 and word.isupper() and word != "I":
        return "content"  # a multiple-choice answer's letter ("A"), not the article "a"
    return "function" if word.lower() in FUNCTION_WORDS else "content"


def word_kinds(texts: Sequence[str]) -> dict[str, int]:
    """How many words of each kind the texts hold (words and punctuation marks split apart)."""
    counts = dict.fromkeys(KINDS, 0)
    for text in texts:
        for word in _WORD.findall(text):
            counts[word_kind(word)] += 1
    return counts


def writer_texts(record: dict, writer: str) -> list[str]:
    """The pieces of a record's text that `writer` ('driver' or 'helper') wrote."""
    return [record["text"][s["start"]:s["end"]] for s in record["spans"] if s["writer"] == writer]


def bootstrap(n: int, statistic: Callable[[np.ndarray], float], *, samples: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of statistic(indices) over resamples of range(n)."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(samples)])
    if np.isnan(values).all():  # e.g. a writer that wrote no word: no interval, and no numpy warning
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float]:
    """Interval of sum(numerators) / sum(denominators), questions resampled."""
    num, den = np.asarray(numerators, float), np.asarray(denominators, float)

    def ratio(i: np.ndarray) -> float:
        total = den[i].sum()
        return num[i].sum() / total if total else np.nan

    return bootstrap(len(num), ratio)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, float)
    return bootstrap(len(v), lambda i: v[i].mean())


def word_shares(records: Sequence[dict], writer: str) -> dict:
    """Share of function words + punctuation among `writer`'s words in these records, with its
    interval (questions resampled), and the counts of every kind."""
    per = [word_kinds(writer_texts(r, writer)) for r in records]
    light = [c["function"] + c["punctuation"] for c in per]
    total = [sum(c.values()) for c in per]
    counts = {k: sum(c[k] for c in per) for k in KINDS}
    share = sum(light) / sum(total) if sum(total) else float("nan")
    return {"words": sum(total), "share": share, "interval": ratio_interval(light, total), "counts": counts}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _top1(graphdef: nnx.GraphDef, params: nnx.State, ids: jax.Array, mask: jax.Array, window: int,
          first: jax.Array):
    """Top-1 probability and token at positions first .. first + window of each row. Only those
    positions go through the head: with Gemma-3's 262k-word vocabulary, the head over a whole
    few-shot prompt costs more than the rest of the model."""
    model = nnx.merge(graphdef, params)
    hidden = model.backbone(ids, mask)
    at = jnp.minimum(first[:, None] + jnp.arange(window)[None, :], ids.shape[1] - 1)
    logp = jax.nn.log_softmax(model.logits(jnp.take_along_axis(hidden, at[..., None], axis=1)), axis=-1)
    return jnp.exp(jnp.max(logp, axis=-1)), jnp.argmax(logp, axis=-1)


def base_choices(base: Generator, prompts: Sequence[str], texts: Sequence[str]
                 ) -> list[tuple[list[float], list[bool]]]:
    """The base model reads each prompt + text, all in one batch: for each token of text (by its
    tokenizer), its top-1 probability before that token and whether that token is its top-1."""
    rows = []
    for prompt, text in zip(prompts, texts, strict=True):
        ids = base.encode(prompt + text)[:base.max_length]
        head = base.encode(prompt)
        start = next((i for i, (a, b) in enumerate(zip(head, ids)) if a != b), min(len(head), len(ids)))
        rows.append((ids, start))
    read = [(ids, start) for ids, start in rows if 0 < start < len(ids)]
    if not read:
        return [([], []) for _ in rows]
    width = bucket_width(max(len(ids) for ids, _ in read), base.max_length)
    # Position p predicts token p + 1: a text of n tokens needs positions start - 1 .. start + n - 2.
    window = bucket_width(max(len(ids) - start for ids, start in read), width)
    padded, mask = np.zeros((len(read), width), np.int32), np.zeros((len(read), width), np.int32)
    for b, (ids, _) in enumerate(read):
        padded[b, :len(ids)], mask[b, :len(ids)] = ids, 1
    first = np.array([start - 1 for _, start in read], np.int32)
    read_rows = zip(*(np.asarray(x) for x in _top1(base.graphdef, base.params, padded, mask, window, first)))
    out = []
    for ids, start in rows:
        if not 0 < start < len(ids):
            out.append(([], []))
            continue
        top1, choice = next(read_rows)
        text = ids[start:]
        out.append(([float(p) for p in top1[:len(text)]], [bool(c == t) for c, t in zip(choice, text)]))
    return out


def disagreement_histogram(top1: Sequence[float], agree: Sequence[bool], bins: int = 10) -> dict:
    """Positions per bin of the base model's top-1 probability, and how many disagree."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(top1, edges) - 1, 0, bins - 1)
    disagree = ~np.asarray(agree, bool)
    return {"edges": edges.tolist(),
            "positions": np.bincount(which, minlength=bins).tolist(),
            "disagree": np.bincount(which, weights=disagree, minlength=bins).astype(int).tolist()}
