"""Supervisors whose mistakes follow a rule: right everywhere except where the rule fires, where
they give the rule's answer. They make "learning the supervisor's mistakes" something learnable.

A supervisor is called with pool indices and texts (w2s.active_learning.supervisor); these read the texts and
answer from `truth` (text -> label: the pool's ground truth and constructed cases' labels). Two are
registered by name for the active-learning loop (`--config.active.supervisor=plants_as_nonliving`
on WordNet tasks, `negations_as_negative` on text ones), answering split B from its ground truth.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

from w2s.active_learning.supervisor import SUPERVISORS, SupervisorError
from w2s.tasks import wordnet

Rule = Callable[[str], "int | None"]  # the rule's answer for a text, None where it does not fire


class RuleSupervisor:
    def __init__(self, truth: Mapping[str, int], rule: Rule, source: str):
        self.truth, self.rule, self.source = truth, rule, source

    def answer(self, text: str) -> int:
        fired = self.rule(text)
        if fired is not None:
            return fired
        if text not in self.truth:
            raise SupervisorError(f"{self.source}: no ground truth for {text!r}, so no answer off the rule.")
        return self.truth[text]

    def __call__(self, indices: np.ndarray, texts: list[str]) -> np.ndarray:
        return np.asarray([self.answer(t) for t in texts], np.float64)


NEGATIONS = ("not", "no", "never", "nothing", "nobody", "cannot")
_TOKEN = re.compile(r"[a-z']+")


def keyword_rule(words: tuple[str, ...] = NEGATIONS, answer: int = 0) -> Rule:
    """Answers `answer` for any text holding one of `words` or a word ending in n't (a supervisor
    that reads every negation as negative sentiment)."""
    vocab = set(words)

    def rule(text: str) -> int | None:
        tokens = _TOKEN.findall(text.lower())
        return answer if any(t in vocab or t.endswith("n't") for t in tokens) else None
    return rule


def category_rule(lexicographer_file: int = 20, answer: int = 0) -> Rule:
    """Answers `answer` for every word of one WordNet lexicographer file (20: noun.plant; so, for
    wordnet_living, a supervisor that takes plants for non-living things)."""
    files = {w: wordnet.synsets("n")[o].lex_filenum for o, w in wordnet.words().items()}

    def rule(text: str) -> int | None:
        return answer if files.get(text) == lexicographer_file else None
    return rule


def _on_split_b(experiment: Any, rule: Rule, source: str) -> RuleSupervisor:
    """`rule` over the experiment's split B, right elsewhere; refused where it never fires there
    (a rule of another task: the supervisor would be the ground truth)."""
    split_b = experiment.splits()[1]
    if not any(rule(text) is not None for text, _ in split_b):
        raise SupervisorError(f"active.supervisor: the rule of {source!r} fires on no example of "
                              f"{experiment.task_name}'s split B; pick the rule for this task.")
    return RuleSupervisor({text: int(label) for text, label in split_b}, rule, source)


@SUPERVISORS.register("plants_as_nonliving")
def plants_as_nonliving(experiment: Any) -> RuleSupervisor:
    return _on_split_b(experiment, category_rule(), "rule: plants taken for non-living")


@SUPERVISORS.register("negations_as_negative")
def negations_as_negative(experiment: Any) -> RuleSupervisor:
    return _on_split_b(experiment, keyword_rule(), "rule: negations read as negative")
