"""Cases built for the student to ask about, beyond the pool: new WordNet lemmas for the WordNet
category tasks, and WordNet word substitutions (synonyms, hypernyms, antonyms) of pool texts for text
tasks. An arm named `<strategy>+constructed` may ask about them as well as about split B.

Each case carries the label its construction implies (`truth`): WordNet's own category for a new
lemma; for a synonym or hypernym, its source's label, on the assumption that it keeps a text's class
(true of sentiment for most content words); for an antonym the other label, on the assumption that
it flips it (the contrast a sentiment word's opposite makes; a guess for other words). It is what a
rule over the ground truth answers from, never what the student trains on: students train only on
the supervisor's answers. No case may equal a test case: `check_unseen` refuses them, and every
builder filters them first.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable

import numpy as np

from w2s.config import ConfigError
from w2s.tasks import wordnet

CONSTRUCTED = "+constructed"  # an arm's suffix: it may also ask about constructed cases
SUBSTITUTIONS = ("synonym", "hypernym", "antonym")


@dataclasses.dataclass(frozen=True)
class Case:
    text: str
    truth: int
    kind: str  # "lemma", one of SUBSTITUTIONS, or a request of w2s.active_learning.written
    source: int | None = None  # the index of the example it varies (substitutions, written cases)


def arm(name: str) -> tuple[str, bool]:
    """The strategy an arm runs, and whether it may ask about constructed cases."""
    return name.removesuffix(CONSTRUCTED), name.endswith(CONSTRUCTED)


@dataclasses.dataclass(frozen=True)
class Extension:
    """Constructed cases a supervisor may be asked about beyond split B: pool index len(B) + i is
    cases[i]. `weak_answers` gives the weak model's answers to them, [n, 2], computed when first asked."""

    cases: tuple[Case, ...]
    weak_answers: Callable[[], np.ndarray]


def normalised(text: str) -> str:
    """What counts as the same case: case and spacing ignored."""
    return " ".join(text.lower().split())


def check_unseen(cases: list[Case], test_texts: list[str]) -> None:
    """Refuses any constructed case equal to a test case."""
    test = {normalised(t) for t in test_texts}
    equal = [c.text for c in cases if normalised(c.text) in test]
    if equal:
        raise ConfigError(f"{len(equal)} constructed cases equal test cases, e.g. {equal[0]!r}; "
                          "the test split must stay untouched.")


def new_lemmas(task: str, seen_texts: list[str], n: int, seed: int) -> list[Case]:
    """Up to `n` words of a WordNet category task's lexicon that are in no split (`seen_texts`:
    train and test), half of each class where there are enough, labelled by WordNet."""
    inside = wordnet.descendants(wordnet.category_roots(task))
    seen = {normalised(t) for t in seen_texts}
    rng = random.Random(seed)
    cases = []
    for label in (0, 1):
        words = sorted(w for o, w in wordnet.words().items()
                       if (o in inside) == bool(label) and normalised(w) not in seen)
        cases += [Case(w, label, "lemma") for w in rng.sample(words, min(n // 2, len(words)))]
    rng.shuffle(cases)
    return cases


_WORD = re.compile(r"[A-Za-z]{3,}")


def _alternatives() -> dict[str, dict[str, list[str]]]:
    """Lower-cased word -> {"synonym": other lemmas of its first sense, "hypernym": lemmas of that
    sense's hypernyms, "antonym": the word's own antonyms there}, over nouns, verbs, adjectives and
    adverbs (first sense only: the usual one)."""
    out: dict[str, dict[str, list[str]]] = {}
    for pos in ("n", "v", "a", "r"):
        synsets = wordnet.synsets(pos)
        for word, offset in wordnet.first_senses(pos).items():
            if "_" in word or offset not in synsets:
                continue
            s = synsets[offset]
            own = {i + 1 for i, l in enumerate(s.lemmas) if l.lower() == word}
            entry = out.setdefault(word, {kind: [] for kind in SUBSTITUTIONS})
            entry["synonym"] += [l.lower() for l in s.lemmas if "_" not in l and l.lower() != word]
            entry["hypernym"] += [l.lower() for h in s.hypernyms if h in synsets
                                  for l in synsets[h].lemmas[:1] if "_" not in l]
            entry["antonym"] += [synsets[t].lemmas[j - 1].lower() for i, t, j in s.antonyms
                                 if i in own and t in synsets and "_" not in synsets[t].lemmas[j - 1]]
    return out


def substitutions(examples: list[tuple[str, int]], test_texts: list[str], n: int, seed: int,
                  kinds: tuple[str, ...] = SUBSTITUTIONS) -> list[Case]:
    """Up to `n` variants of `examples` (text, label in {0, 1}), each one word replaced by a WordNet
    alternative of one of `kinds`; none equals a test case or a source text."""
    unknown = set(kinds) - set(SUBSTITUTIONS)
    if unknown:
        raise ConfigError(f"substitution kinds {sorted(unknown)} unknown; choose from {', '.join(SUBSTITUTIONS)}.")
    alternatives = {word: {k: entry[k] for k in kinds} for word, entry in _alternatives().items()}
    excluded = {normalised(t) for t in test_texts} | {normalised(t) for t, _ in examples}
    rng = random.Random(seed)
    cases, made = [], set()
    for i in rng.sample(range(len(examples)), len(examples)):
        text, label = examples[i]
        options = [(m, kind, alt) for m in _WORD.finditer(text) if (entry := alternatives.get(m.group().lower()))
                   for kind, alts in entry.items() for alt in alts]
        if not options:
            continue
        m, kind, alt = rng.choice(options)
        variant = text[: m.start()] + alt + text[m.end():]
        if normalised(variant) not in excluded | made:
            made.add(normalised(variant))
            cases.append(Case(variant, 1 - label if kind == "antonym" else label, kind, i))
        if len(cases) == n:
            break
    return cases


def build(task_name: str, train_texts: list[str], test_texts: list[str], split_b: list[tuple[str, int]],
          n: int, seed: int, kinds: tuple[str, ...] = SUBSTITUTIONS) -> list[Case]:
    """Up to `n` constructed cases for a task: new lemmas for a WordNet category task, else
    substitutions of split B's texts; checked against the test split."""
    if task_name in wordnet.CATEGORY_TASKS:
        made = new_lemmas(task_name, train_texts + test_texts, n, seed)
    else:
        made = substitutions(split_b, test_texts, n, seed, kinds)
    check_unseen(made, test_texts)
    return made
