"""Question-answer tasks for generation: GSM8K-style math and multiple choice.

Rows come from Hugging Face `datasets`: a hub id, or a local json/jsonl/csv/parquet file on
machines without the hub. Offline sets: `wordnet_definitions` (WordNet), `arithmetic` (word problems
from templates, numbers drawn per seed) and `bbc_news_section` (BBC News articles, which section?).
Each row becomes a Question whose gold answer is checked against the answer a model writes, read
off its text.
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
import re
from typing import Any, Callable

from w2s.config import ConfigError

LETTERS = "ABCDEFGHIJ"
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@dataclasses.dataclass(frozen=True)
class Question:
    """text fills a prompt template's {question}; answer is a number ('math') or a letter
    ('choice', of `choices` options)."""

    text: str
    answer: str
    kind: str
    choices: int = 0


def load_rows(path: str, name: str | None = None, split: str = "test") -> list[dict[str, Any]]:
    """A split's rows from a local file (its only split) or a hub dataset."""
    try:
        import datasets  # Optional and slow to import.
    except ImportError as e:
        raise ImportError("question tasks need Hugging Face datasets: pip install 'w2s[hub]'") from e
    suffix = pathlib.Path(path).suffix
    try:
        if pathlib.Path(path).is_file():
            if suffix not in _BUILDERS:
                raise ConfigError(f"cannot read {suffix!r} files; use one of {', '.join(_BUILDERS)}")
            return list(datasets.load_dataset(_BUILDERS[suffix], data_files=path, split="train"))
        return list(datasets.load_dataset(path, name, split=split))
    except OSError as e:  # ConnectionError, DatasetNotFoundError
        raise ConfigError(f"cannot load {path!r} ({name}, {split}): {e}. Offline, pass the path of a local "
                          "json/jsonl/csv/parquet file of the split") from e


def _sample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows if n is None else rows[:n]


def gsm8k(n: int | None = None, seed: int = 0, path: str = "openai/gsm8k", name: str | None = "main",
          split: str = "test") -> list[Question]:
    """GSM8K rows: `question`, and `answer` whose last line is '#### <number>'."""
    return [Question(r["question"].strip(), _clean_number(r["answer"].split("####")[-1]), "math")
            for r in _sample(load_rows(path, name, split), n, seed)]


def multiple_choice(n: int | None = None, seed: int = 0, path: str = "allenai/ai2_arc",
                    name: str | None = "ARC-Challenge", split: str = "test") -> list[Question]:
    """Rows with `question` and `choices` (a list, or ARC's {'text', 'label'}) and the right one as
    `answer` (an index, or a letter) or ARC's `answerKey` (a label); choices are shown as A, B, ..."""
    out = []
    for r in _sample(load_rows(path, name, split), n, seed):
        choices = r["choices"]
        labels = None
        if isinstance(choices, dict):
            choices, labels = choices["text"], list(choices["label"])
        key = r.get("answerKey", r.get("answer"))
        if labels is not None:
            right = labels.index(str(key))
        elif isinstance(key, str) and not key.isdigit():
            right = LETTERS.index(key.strip().upper())
        else:
            right = int(key)
        lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
        out.append(Question("\n".join([r["question"].strip(), *lines]), LETTERS[right], "choice", len(lines)))
    return out


def wordnet_definitions(n: int | None = 200, seed: int = 0, choices: int = 4) -> list[Question]:
    """Offline multiple choice from WordNet, which ships with the default: which definition fits
    the word? The distractors define other nouns of the word's lexicographer file (its coarse topic),
    so the topic alone does not give the answer away."""
    from w2s.tasks import wordnet  # Reads the WordNet files only when this task is used.

    if not 2 <= choices <= len(LETTERS):
        raise ConfigError(f"wordnet_definitions: choices must be 2 to {len(LETTERS)}, got {choices}")
    nouns, vocab = wordnet.synsets("n"), wordnet.words()
    eligible = wordnet.glossed_nouns(nouns, vocab)
    definitions = {file: list(dict.fromkeys(nouns[x].definition for x in group))  # each once, in order
                   for file, group in wordnet.by_lexicographer_file(eligible, nouns).items()}
    rng = random.Random(seed)
    rng.shuffle(eligible)
    out = []
    for o in eligible:
        if n is not None and len(out) == n:
            break
        others = [d for d in definitions[nouns[o].lex_filenum] if d != nouns[o].definition]
        if len(others) < choices - 1:
            continue
        options = rng.sample(others, choices - 1)
        right = rng.randrange(choices)
        options.insert(right, nouns[o].definition)
        lines = [f"{LETTERS[i]}. {d}" for i, d in enumerate(options)]
        out.append(Question("\n".join([f"Which is the meaning of the word '{vocab[o]}'?", *lines]),
                            LETTERS[right], "choice", choices))
    return out


# (story, answer) templates of one or two steps; {a} {b} {c} are numbers, {name} a person, {thing}
# a plural noun. Each holds its own arithmetic so the answer is always exact and non-negative.
_PROBLEMS: tuple[tuple[str, Callable[[int, int, int], int]], ...] = (
    ("{name} has {a} {thing}. {name} buys {b} more. How many {thing} does {name} have now?",
     lambda a, b, c: a + b),
    ("{name} had {a_plus_b} {thing} and gave {b} of them to a friend. How many {thing} does {name} have left?",
     lambda a, b, c: a),
    ("{name} buys {a} bags with {b} {thing} in each bag. How many {thing} does {name} buy?",
     lambda a, b, c: a * b),
    ("{name} has {a} {thing}, finds {b} more and then loses {c}. How many {thing} does {name} have now?",
     lambda a, b, c: a + b - c),
    ("{name} packs {a} boxes of {b} {thing} and has {c} {thing} left over. How many {thing} did {name} have?",
     lambda a, b, c: a * b + c),
)
_NAMES = ("Tom", "Anna", "Ravi", "Mia", "Leo", "Sara", "Omar", "Lena", "Ken", "Zoe")
_THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells")


def arithmetic(n: int | None = 200, seed: int = 0, low: int = 2, high: int = 12) -> list[Question]:
    """Offline math word problems (GSM8K-style answers): one of a few one- and two-step templates,
    a name, an object and numbers in [low, high] drawn per seed."""
    if not 0 <= low < high:
        raise ConfigError(f"arithmetic: need 0 <= low < high, got low={low}, high={high}")
    rng = random.Random(seed)
    out = []
    for i in range(200 if n is None else n):
        story, answer = _PROBLEMS[i % len(_PROBLEMS)]
        a, b = rng.randint(low, high), rng.randint(low, high)
        c = rng.randint(low, min(high, a + b))  # a + b - c stays >= 0
        text = story.format(name=rng.choice(_NAMES), thing=rng.choice(_THINGS), a=a, b=b, c=c, a_plus_b=a + b)
        out.append(Question(text, str(answer(a, b, c)), "math"))
    rng.shuffle(out)
    return out


def bbc_news_section(n: int | None = 200, seed: int = 0, max_words: int = 40) -> list[Question]:
    """Offline multiple choice from the BBC News corpus (w2s/tasks/bbc.py): which of its five
    sections is this article from, shown as its headline and first max_words words? Each distinct
    article once, sections in the corpus's proportions."""
    from w2s.tasks import bbc  # Reads the corpus package only when this task is used.

    if max_words < 1:
        raise ConfigError(f"bbc_news_section: max_words must be at least 1, got {max_words}")
    articles = list(zip(bbc.corpus().examples, bbc.corpus().groups))
    random.Random(seed).shuffle(articles)
    sections = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(bbc.TOPICS))
    out, groups = [], set()
    for (article, label), group in articles:
        if group in groups:  # one version of a rewritten story
            continue
        groups.add(group)
        text = f"Which section of BBC News is this article from?\n{bbc.excerpt(article, max_words)}\n{sections}"
        out.append(Question(text, LETTERS[label], "choice", len(bbc.TOPICS)))
        if n is not None and len(out) == n:
            break
    return out


TASKS: dict[str, Callable[..., list[Question]]] = {
    "gsm8k": gsm8k, "arc_challenge": multiple_choice, "wordnet_definitions": wordnet_definitions,
    "arithmetic": arithmetic, "bbc_news_section": bbc_news_section}


def _clean_number(s: str) -> str:
    return s.strip().replace(",", "").replace("$", "").rstrip(".")


def extract_number(text: str) -> str | None:
    """The answer of a math solution: after '####' or 'answer is', else its last number."""
    for marker in ("####", "answer is"):
        if marker in text.lower():
            tail = text[text.lower().rindex(marker) + len(marker):]
            if match := _NUMBER.search(tail):
                return _clean_number(match.group())
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The letter a multiple-choice answer picks: after 'answer is', or the letter it opens with."""
    letters = LETTERS[:n_choices]
    for pattern in (rf"answer is:?\s*\(?([{letters}])\b", rf"^\W*([{letters}])\b"):
        if match := re.search(pattern, text.strip()):
            return match.group(1)
    return None


def answer_of(question: Question, text: str) -> str | None:
    """The answer `text` gives to `question`, in the form of its gold answer."""
    if question.kind == "math":
        return extract_number(text)
    return extract_choice(text, question.choices)


def is_correct(question: Question, text: str) -> bool:
    got = answer_of(question, text)
    if got is None or question.kind != "math":
        return got == question.answer
    try:
        return float(got) == float(question.answer)
    except ValueError:
        return False
