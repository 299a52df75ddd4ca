"""The weak-to-strong NLP tasks of Burns et al. (2023), read with Hugging Face `datasets`.

Each task is a pure binarization function (one row and a random.Random -> examples), kept
apart from loading so it is testable without data, plus a registered loader. `path=` takes a
hub id, a local dataset directory, or a {split: file(s)} mapping of local json/jsonl/csv/parquet
files, for machines without the hub.
"""
from collections.abc import Callable, Mapping, Sequence
import pathlib
import random
from typing import Any

import numpy as np

from w2s.config import ConfigError
from w2s.tasks import Example, TaskData, register_task

Row = Mapping[str, Any]
Binarize = Callable[[Row, random.Random], list[Example]]
DataPath = str | Mapping[str, str | Sequence[str]]

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def sciq_examples(row: Row, rng: random.Random) -> list[Example]:
    """One true and one false answer per question, so classes balance exactly."""
    question, answer = row["question"].strip(), row["correct_answer"].strip()
    distractors = [
        d.strip() for d in (row["distractor1"], row["distractor2"], row["distractor3"])
        if d and d.strip() and d.strip() != answer
    ]
    if not distractors:
        return []
    return [(f"Q: {question} A: {answer}", 1), (f"Q: {question} A: {rng.choice(distractors)}", 0)]


def _label(value: Any) -> int:
    """An integer label from a bool, an int or a whole float (a csv column with gaps reads as floats);
    anything else is refused rather than truncated (int(0.7) would be 0)."""
    if isinstance(value, (bool, int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise ValueError(f"label {value!r} is not an integer")


def boolq_examples(row: Row, rng: random.Random) -> list[Example]:
    del rng  # The label is the answer itself.
    return [(f"{row['passage'].strip()}\nQ: {row['question'].strip()}?", _label(row["answer"]))]


def amazon_polarity_examples(row: Row, rng: random.Random) -> list[Example]:
    del rng  # The label is the review's polarity itself.
    text = f"{row['title'].strip()}\n{row['content'].strip()}".strip()
    return [(text, _label(row["label"]))] if text else []


def cosmos_qa_examples(row: Row, rng: random.Random) -> list[Example]:
    """The correct answer and one random wrong one of the four, so classes balance exactly."""
    answers = [row[f"answer{i}"].strip() for i in range(4)]
    right = _label(row["label"])
    if right not in range(4):  # -1 marks an unlabeled row; it would silently pick answer3
        raise ValueError(f"label {right} is not one of 0, 1, 2, 3")
    wrong = [a for i, a in enumerate(answers) if i != right and a and a != answers[right]]
    if not wrong:
        return []
    prompt = f"{row['context'].strip()}\nQ: {row['question'].strip()} A:"
    return [(f"{prompt} {answers[right]}", 1), (f"{prompt} {rng.choice(wrong)}", 0)]


def anthropic_hh_examples(row: Row, rng: random.Random) -> list[Example]:
    """Either the chosen (1) or the rejected (0) dialogue, never both: showing both would let
    a model match the shared prefix. Identical pairs carry no label and are dropped."""
    chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
    if chosen == rejected:
        return []
    return [(chosen, 1)] if rng.random() < 0.5 else [(rejected, 0)]


def _load_splits(name: str, path: DataPath) -> Any:
    try:
        import datasets  # Optional and slow to import.
    except ImportError as e:
        raise ImportError("hub tasks need Hugging Face datasets: pip install 'w2s[hub]'") from e
    if not isinstance(path, str):  # {split: file(s)}; dict() also takes a config's ConfigDict.
        files = {split: f if isinstance(f, str) else list(f) for split, f in dict(path).items()}
        first = next(iter(files.values()))
        suffix = pathlib.Path(first if isinstance(first, str) else first[0]).suffix
        if suffix not in _BUILDERS:
            raise ConfigError(f"cannot read {suffix!r} files; use one of {', '.join(_BUILDERS)}")
        try:
            return datasets.load_dataset(_BUILDERS[suffix], data_files=files)
        except Exception as e:  # datasets, pyarrow and pandas raise many types for malformed files
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            raise ConfigError(f"{name}: cannot read {files}: {type(e).__name__}: {e}{cause}"[:1000]) from e
    try:
        return datasets.load_dataset(path)
    except OSError as e:  # ConnectionError, DatasetNotFoundError.
        raise ConfigError(
            f"{name}: cannot load {path!r}: {e}. Offline, pass path= a local dataset directory "
            "or {'train': file(s), 'test': file(s)} of json/jsonl/csv/parquet."
        ) from e


def _labeled(split: Any, label_column: str) -> bool:
    """Unlabeled test splits (e.g. cosmos_qa's) hold -1 or nothing in the label column."""
    return label_column in split.column_names and any(
        v not in (None, -1, "") for v in split[label_column]
    )


def _sample(
    name: str, split_name: str, split: Any, binarize: Binarize, n: int | None, seed: int
) -> list[Example]:
    """Binarizes rows in a seeded random order until `n` examples (None: every row). `name` says
    where the rows come from; a row that is not what the task expects is named by its index."""
    order = np.random.default_rng(seed).permutation(len(split))
    rng = random.Random(seed)
    examples = []
    chunk = max(len(split) if n is None else n, 1)  # Rows yield one example or more, nearly all.
    for start in range(0, len(split), chunk):
        for index, row in zip(order[start : start + chunk], split.select(order[start : start + chunk])):
            try:
                examples += binarize(row, rng)
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
                raise ConfigError(f"{name}: split {split_name!r}, row {index} (from 0): {type(e).__name__}: "
                                  f"{e} (columns: {', '.join(split.column_names)})") from e
        if n is not None and len(examples) >= n:
            break
    if n is not None:
        if len(examples) < n:
            raise ConfigError(
                f"{name}: split {split_name!r} yields only {len(examples)} examples, fewer than "
                f"the {n} asked for (pass None to take them all)"
            )
        examples = examples[:n]
    rng.shuffle(examples)  # Parts the two examples of one question.
    return examples


def _task(
    name: str,
    binarize: Binarize,
    label_column: str,
    seed: int,
    n_train: int | None,
    n_test: int | None,
    path: DataPath,
) -> TaskData:
    splits = _load_splits(name, path)
    test = "test" if "test" in splits and _labeled(splits["test"], label_column) else "validation"
    for needed in ("train", test):
        if needed not in splits:
            raise ConfigError(
                f"{name}: {path!r} has splits {sorted(splits)}, needs 'train' and a labeled "
                "'test' or 'validation'; for local files pass path={'train': ..., 'test': ...}"
            )
    source = f"{name} from {path!r}"
    return TaskData(
        name,
        _sample(source, "train", splits["train"], binarize, n_train, seed),
        _sample(source, test, splits[test], binarize, n_test, seed + 1),
    )


@register_task("sciq")
def sciq(
    seed: int,
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    path: DataPath = "allenai/sciq",
) -> TaskData:
    return _task("sciq", sciq_examples, "correct_answer", seed, n_train, n_test, path)


@register_task("boolq")
def boolq(
    seed: int,
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    path: DataPath = "google/boolq",
) -> TaskData:
    return _task("boolq", boolq_examples, "answer", seed, n_train, n_test, path)


@register_task("amazon_polarity")
def amazon_polarity(
    seed: int,
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    path: DataPath = "fancyzhx/amazon_polarity",
) -> TaskData:
    return _task("amazon_polarity", amazon_polarity_examples, "label", seed, n_train, n_test, path)


@register_task("cosmos_qa")
def cosmos_qa(
    seed: int,
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    path: DataPath = "allenai/cosmos_qa",
) -> TaskData:
    return _task("cosmos_qa", cosmos_qa_examples, "label", seed, n_train, n_test, path)


@register_task("anthropic_hh")
def anthropic_hh(
    seed: int,
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    path: DataPath = "Anthropic/hh-rlhf",
) -> TaskData:
    return _task("anthropic_hh", anthropic_hh_examples, "chosen", seed, n_train, n_test, path)
