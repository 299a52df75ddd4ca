"""Constructed cases written by a chat model on request: each request hands it a source case of the
pool and asks for a rewrite that keeps its meaning ("paraphrase": the source's label implied) or
turns it around ("opposite": the other label implied, an assumption a small model often breaks by
copying). Like every constructed case (w2s.active_learning.constructed), a written one is labelled
only by the supervisor; the implied label is what a rule over the ground truth answers from.

Writing is greedy, so the same model, sources and seed write the same cases. A reply is kept as
its first non-empty line, unquoted; replies that are empty, echo the request, run over three times
the source's length, equal their source, a test case or an earlier case are dropped.
"""
from __future__ import annotations

import random
from typing import Protocol, Sequence

from w2s.active_learning.constructed import Case, check_unseen, normalised
from w2s.config import ConfigError
from w2s.finetuning.sft import Chat, PretrainedChat, chat
from w2s.generation.generate import Completion, GenerationConfig
from w2s.tasks import wordnet

REQUESTS = {  # kind -> (the request, whether the implied label flips)
    "paraphrase": ("Rewrite this text in other words, keeping what it says. Reply with the new text only.\n\n"
                   "Text: {text}", False),
    "opposite": ("Rewrite this text so that it says the opposite. Reply with the new text only.\n\n"
                 "Text: {text}", True),
}


WRITER_ROWS, WRITER_LENGTH = 64, 256  # requests written at once; tokens of a request with its reply
MAX_SOURCE_CHARS = 400  # longer sources are not sent: a request and its reply must fit WRITER_LENGTH


class Writer(Protocol):
    """What writes: w2s.finetuning.sft.ChatSampler (a chat model), or anything that completes chats."""

    def complete(self, chats: Sequence[Chat], cfg: GenerationConfig, *, desc: str | None = None
                 ) -> list[Completion]: ...


def clean(reply: str, source: str) -> str | None:
    """The case a reply holds, or None where it holds none (see the module's rules)."""
    line = next((l.strip() for l in reply.splitlines() if l.strip()), "")
    for prefix in ("Text:", "New text:", "Tweet:"):
        line = line.removeprefix(prefix).strip()
    line = line.strip("\"'“”").strip()
    if not line or line.lower().startswith("rewrite this") or len(line) > 3 * max(len(source), 20):
        return None
    return line


def written(writer: Writer, examples: list[tuple[str, int]], test_texts: list[str], n: int, seed: int,
            max_new_tokens: int = 64, batch: int = WRITER_ROWS) -> list[Case]:
    """Up to `n` cases written from `examples` (text, label in {0, 1}; those up to MAX_SOURCE_CHARS)
    in a seeded order, the two requests in turn; none equals a test case, a source or another case."""
    excluded = {normalised(t) for t in test_texts} | {normalised(t) for t, _ in examples}
    short = [i for i, (text, _) in enumerate(examples) if len(text) <= MAX_SOURCE_CHARS]
    order = random.Random(seed).sample(short, len(short))
    kinds = list(REQUESTS)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    cases: list[Case] = []
    for start in range(0, len(order), batch):
        chunk = [(i, kinds[(start + j) % len(kinds)]) for j, i in enumerate(order[start:start + batch])]
        replies = writer.complete([chat(REQUESTS[kind][0].format(text=examples[i][0])) for i, kind in chunk],
                                  cfg, desc=f"writing cases {start}-{start + len(chunk)}")
        for (i, kind), reply in zip(chunk, replies):
            text, label = examples[i]
            case = clean(reply.text, text)
            if case is None or normalised(case) in excluded:
                continue
            excluded.add(normalised(case))
            cases.append(Case(case, 1 - label if REQUESTS[kind][1] else label, kind, i))
            if len(cases) == n:
                return cases
    return cases


def build(writer_name: str, task_name: str, split_b: list[tuple[str, int]], test_texts: list[str], n: int,
          seed: int) -> list[Case]:
    """Up to `n` cases written by the chat model `writer_name` (a name of `w2s models list`) from split
    B's cases, checked against the test split."""
    if task_name in wordnet.CATEGORY_TASKS:
        raise ConfigError(f"active.writer={writer_name!r}: {task_name}'s constructed cases are new lemmas of "
                          "WordNet's lexicon, labelled by it; a writer rewrites text tasks' cases. Set "
                          "active.writer=None.")
    model = PretrainedChat(writer_name, rows=WRITER_ROWS, max_length=WRITER_LENGTH)
    made = written(model.sampler, split_b, test_texts, n, seed)
    check_unseen(made, test_texts)
    return made
