"""Two models writing one text in turn: nudging (Fei et al., 2024) and its reverse.

A driver writes; before each of its tokens a rule reads the driver's next-token distribution, and
when it fires the helper writes one unit (a word, or k tokens) instead, then the driver goes on.

- Nudging: a strong base model drives, a small aligned model helps, the rule is "the base model's
  top-1 probability < γ": the base model mostly knows what to say, and alignment changes a few
  uncertain tokens.
- Reverse: a weak trusted model drives (its chain of thought), a strong model inserts tokens where
  the weak one is unsure, under a token budget or a per-token penalty; every inserted span, with
  the driver's uncertainty that caused it, is reported for audit.

Text is the interface: each model reads its own prompt followed by the shared text, tokenized by
its own tokenizer, so the two may have different vocabularies. Each Generator keeps its KV cache
for the part of the text it has already read, so a turn feeds only what the other model wrote.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from tqdm.auto import tqdm

from w2s.config import ConfigError
from w2s.generation.generate import Completion, GenerationConfig, Generator, find_stop

RULES = ("top1", "entropy", "never")
UNITS = ("word", "tokens")
# The helper's text ends where its first word does: at a whitespace after a non-whitespace.
WORD_END = r"(?<=\S)\s"


@dataclasses.dataclass(frozen=True)
class CoWriteConfig:
    """How two models share a text.

    rule: when the helper takes over, read off the driver's next-token distribution: 'top1' when
      its top-1 probability < threshold (Fei et al.'s γ), 'entropy' when its entropy in nats >
      threshold, 'never' (the driver writes alone).
    penalty: every helper token already in the text moves the threshold by this much against
      handing over again (top1: threshold − penalty·n; entropy: threshold + penalty·n).
    budget: the most tokens the helper may write in one text (None: no limit).
    unit: what the helper writes per turn: 'word' (up to its first word's end, at most
      unit_tokens tokens) or 'tokens' (unit_tokens tokens).
    max_new_tokens: the most tokens of shared text, both writers' together, each counted by its
      own tokenizer. stop strings end the text; temperature/top_p/seed sample both models.
    """

    rule: str = "top1"
    threshold: float = 0.4
    unit: str = "word"
    unit_tokens: int = 8
    budget: int | None = None
    penalty: float = 0.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.unit_tokens < 1 or self.max_new_tokens < 1 or (self.budget is not None and self.budget < 0):
            raise ConfigError("unit_tokens and max_new_tokens must be >= 1, budget >= 0 or None")

    def fires(self, top1: float, entropy: float, spent: int) -> bool:
        """Whether the helper writes next, given the driver's distribution and the helper's tokens so far."""
        if self.budget is not None and spent >= self.budget:
            return False
        if self.rule == "top1":
            return top1 < self.threshold - self.penalty * spent
        if self.rule == "entropy":
            return entropy > self.threshold + self.penalty * spent
        return False


@dataclasses.dataclass(frozen=True)
class Span:
    """text[start:end] was written by `writer` ('driver' or 'helper'): `tokens` tokens by its own
    tokenizer. A helper span's trigger is the driver's (top-1 probability, entropy) it answered."""

    start: int
    end: int
    writer: str
    tokens: int
    trigger: tuple[float, float] | None = None


@dataclasses.dataclass
class CoWritten:
    """reason: 'eos' (either model ended the text), 'stop' (a stop string; the text ends before
    it), 'length', or 'stalled' (the helper wrote nothing)."""

    text: str
    spans: list[Span]
    reason: str

    def tokens(self, writer: str) -> int:
        return sum(s.tokens for s in self.spans if s.writer == writer)

    def helper_words(self) -> list[str]:
        """What each helper turn wrote, stripped of surrounding whitespace unless that is all."""
        parts = [self.text[s.start:s.end] for s in self.spans if s.writer == "helper"]
        return [p.strip() or p for p in parts]


class _Text:
    """One shared text being written: its spans, the helper's spend and whether it is done."""

    def __init__(self, writers: dict[str, Generator], stop: Sequence[str]):
        self.writers, self.stop = writers, stop
        self.text, self.spans, self.reason = "", [], None
        self.spent = 0
        self.trigger: tuple[float, float] | None = None

    def add(self, part: str, writer: str) -> int:
        """Appends what `writer` wrote, ending the text before a stop string that now appears
        (possibly across the seam); returns the tokens it added."""
        start = len(self.text)
        self.text += part
        cut = find_stop(self.text, self.stop, None)
        if cut is not None:
            self.text, self.reason = self.text[:cut], "stop"
            self.spans = [self._span(s.start, s.writer, s.trigger) for s in self.spans if s.start < cut]
        if len(self.text) <= start:
            return 0
        self.spans.append(self._span(start, writer, self.trigger if writer == "helper" else None))
        return self.spans[-1].tokens

    def _span(self, start: int, writer: str, trigger: tuple[float, float] | None) -> Span:
        """The span from start to the next span's start or the text's end."""
        end = next((s.start for s in self.spans if s.start > start), len(self.text))
        end = min(end, len(self.text))
        return Span(start, end, writer, self.writers[writer].count_tokens(self.text[start:end]), trigger)

    def written(self) -> int:
        return sum(s.tokens for s in self.spans)


def co_write(driver: Generator, helper: Generator, driver_prompts: Sequence[str],
             helper_prompts: Sequence[str], cfg: CoWriteConfig, *, progress: bool = True,
             desc: str = "co-write") -> list[CoWritten]:
    """One shared text per question, written after driver_prompts[i] (as the driver reads it) and
    helper_prompts[i] (as the helper reads it), in batches of the generators' rows."""
    if len(driver_prompts) != len(helper_prompts):
        raise ValueError(f"{len(driver_prompts)} driver prompts but {len(helper_prompts)} helper prompts")
    rows = min(driver.rows, helper.rows)
    out: list[CoWritten] = []
    with tqdm(total=len(driver_prompts), desc=desc, unit="text", disable=not progress) as bar:
        for i in range(0, len(driver_prompts), rows):
            out += _co_write_batch(driver, helper, driver_prompts[i:i + rows], helper_prompts[i:i + rows], cfg)
            bar.update(len(out) - bar.n)
    return out


def _co_write_batch(driver: Generator, helper: Generator, driver_prompts: Sequence[str],
                    helper_prompts: Sequence[str], cfg: CoWriteConfig) -> list[CoWritten]:
    texts = [_Text({"driver": driver, "helper": helper}, cfg.stop) for _ in driver_prompts]
    sampling = dict(temperature=cfg.temperature, top_p=cfg.top_p)
    unit = GenerationConfig(max_new_tokens=cfg.unit_tokens, stop=cfg.stop,
                            stop_pattern=WORD_END if cfg.unit == "word" else None, **sampling)
    # Each turn adds a token to every open text or closes it, so this many turns end them all.
    for turn in range(cfg.max_new_tokens + 1):
        _close_full(texts, cfg.max_new_tokens)
        open_ = [t.reason is None for t in texts]
        if not any(open_):
            break
        drafts = driver.generate(
            [p + t.text if o else None for p, t, o in zip(driver_prompts, texts, open_)],
            GenerationConfig(max_new_tokens=cfg.max_new_tokens, stop=cfg.stop, seed=cfg.seed + turn, **sampling),
            limits=[cfg.max_new_tokens - t.written() for t in texts],
            handoff=lambda b, top1, entropy: cfg.fires(top1, entropy, texts[b].spent))
        for t, draft in zip(texts, drafts):
            if draft is not None:
                _driver_turn(t, draft)
        _close_full(texts, cfg.max_new_tokens)  # re-tokenized, the driver's text may fill it
        asked = [t.reason is None and t.trigger is not None for t in texts]
        if not any(asked):
            continue
        limits = [min(cfg.unit_tokens, cfg.max_new_tokens - t.written(),
                      cfg.unit_tokens if cfg.budget is None else cfg.budget - t.spent) for t in texts]
        words = helper.generate(
            [p + t.text if a else None for p, t, a in zip(helper_prompts, texts, asked)],
            dataclasses.replace(unit, seed=cfg.seed + turn), limits=limits)
        for t, word in zip(texts, words):
            if word is not None:
                _helper_turn(t, word)
    return [CoWritten(t.text, t.spans, t.reason or "length") for t in texts]


def _close_full(texts: Sequence[_Text], max_new_tokens: int) -> None:
    for t in texts:
        if t.reason is None and t.written() >= max_new_tokens:
            t.reason = "length"


def _driver_turn(t: _Text, draft: Completion) -> None:
    t.add(draft.text, "driver")
    if t.reason is None:
        if draft.reason == "handoff":
            t.trigger = (draft.top1[-1], draft.entropy[-1])
        else:
            t.reason = draft.reason


def _helper_turn(t: _Text, word: Completion) -> None:
    tokens = t.add(word.text, "helper")
    t.spent += tokens
    t.trigger = None
    if t.reason is None and word.reason == "eos":
        t.reason = "eos"
    elif t.reason is None and not tokens:
        t.reason = "stalled"
