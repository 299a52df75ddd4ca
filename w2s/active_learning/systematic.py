"""Supervisors whose mistakes follow a rule: another supervisor's answers except where the rule fires,
where they give the rule's answer. They make "learning the supervisor's mistakes" something learnable.

A supervisor is called with pool indices and texts (w2s.active_learning.supervisor); a rule reads the
text. Over the ground truth (`rule_supervisor`: text -> label, the pool's and constructed cases'), the
rule's are the only mistakes; over the weak model, they come on top of its own. Registered by name
for the active-learning loop (`--config.active.supervisor=...`): `plants_as_nonliving` (WordNet
tasks) and `negations_as_negative` (text tasks) over split B's ground truth, and
`weak_plants_as_nonliving`, `weak_negations_as_negative` over the weak model's answers.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

from w2s.active_learning.constructed import Extension
from w2s.active_learning.supervisor import SUPERVISORS, Supervisor, SupervisorError, ask, weak_model
from w2s.tasks import wordnet

Rule = Callable[[str], "int | None"]  # the rule's answer for a text, None where it does not fire


class KnownLabels:
    """Answers from known labels, looked up by text (the pool's ground truth, constructed cases' labels)."""

    def __init__(self, truth: Mapping[str, int], source: str = "ground truth"):
        self.truth, self.source = truth, source

    def __call__(self, indices: np.ndarray, texts: list[str]) -> np.ndarray:
        missing = next((t for t in texts if t not in self.truth), None)
        if missing is not None:
            raise SupervisorError(f"{self.source}: no ground truth for {missing!r}, so no answer off the rule.")
        return np.asarray([self.truth[t] for t in texts], np.float64)


class RuleOver:
    """`otherwise`'s answers, except where `rule` fires: there the rule's answer. Answers are [n, 2]
    probabilities (the rule's one-hot)."""

    def __init__(self, rule: Rule, otherwise: Supervisor, source: str):
        self.rule, self.otherwise, self.source = rule, otherwise, source

    def __call__(self, indices: np.ndarray, texts: list[str]) -> np.ndarray:
        fired = [self.rule(t) for t in texts]
        answers = np.zeros((len(texts), 2), np.float32)
        rest = np.asarray([i for i, f in enumerate(fired) if f is None], np.int64)
        for i, f in enumerate(fired):
            if f is not None:
                answers[i, f] = 1.0
        if rest.size:
            asked = np.asarray(indices)[rest]
            answers[rest] = ask(self.otherwise, asked, [texts[i] for i in rest])
        return answers


def rule_supervisor(truth: Mapping[str, int], rule: Rule, source: str) -> RuleOver:
    """Right (from `truth`) everywhere except where `rule` fires."""
    return RuleOver(rule, KnownLabels(truth), source)


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


def _on_split_b(experiment: Any, rule: Rule, source: str, extension: Extension | None,
                otherwise: Supervisor | None = None) -> RuleOver:
    """`rule` over the experiment's split B (and the extension's cases), `otherwise` (default: the
    ground truth, and the label each constructed case implies) elsewhere; refused where the rule never
    fires on B (a rule of another task would change nothing)."""
    split_b = experiment.splits()[1]
    if not any(rule(text) is not None for text, _ in split_b):
        raise SupervisorError(f"active.supervisor: the rule of {source!r} fires on no example of "
                              f"{experiment.task_name}'s split B; pick the rule for this task.")
    if otherwise is None:
        cases = [] if extension is None else [(c.text, c.truth) for c in extension.cases]
        otherwise = KnownLabels({text: int(label) for text, label in [*split_b, *cases]})
    return RuleOver(rule, otherwise, source)


@SUPERVISORS.register("plants_as_nonliving")
def plants_as_nonliving(experiment: Any, extension: Extension | None = None) -> RuleOver:
    return _on_split_b(experiment, category_rule(), "rule: plants taken for non-living", extension)


@SUPERVISORS.register("negations_as_negative")
def negations_as_negative(experiment: Any, extension: Extension | None = None) -> RuleOver:
    return _on_split_b(experiment, keyword_rule(), "rule: negations read as negative", extension)


# The weak model with a rule's mistakes on top: below the finetuned ceiling, unlike the rules over
# the ground truth, so PGR has a meaning, and part of its mistakes follow a rule a student can learn.
@SUPERVISORS.register("weak_plants_as_nonliving")
def weak_plants_as_nonliving(experiment: Any, extension: Extension | None = None) -> RuleOver:
    return _on_split_b(experiment, category_rule(), "weak model, plants taken for non-living", extension,
                       weak_model(experiment, extension))


@SUPERVISORS.register("weak_negations_as_negative")
def weak_negations_as_negative(experiment: Any, extension: Extension | None = None) -> RuleOver:
    return _on_split_b(experiment, keyword_rule(), "weak model, negations read as negative", extension,
                       weak_model(experiment, extension))
