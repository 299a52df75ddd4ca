"""Binary classification tasks: a name registry, plug-in loading and central validation.

Every task yields (text, label) pairs with label in {0, 1}. A task is a function
`(seed, **options) -> TaskData | {"train": [...], "test": [...]}`, either registered with
`@register_task("name")` or referred to as "package.module:function" (a plug-in), so a new
task is one small module. Validation lives here, once, so each task stays data wrangling.
"""
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import hashlib
import importlib
import inspect
import numbers
from typing import Any

from w2s.config import ConfigError
from w2s.registry import Registry, check_options

Example = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str
    train: list[Example]
    test: list[Example]


TaskFn = Callable[..., "TaskData | Mapping[str, Any]"]
TASKS: Registry[TaskFn] = Registry("task")


def register_task(name: str) -> Callable[[TaskFn], TaskFn]:
    """Registers a task function under `name`; a second task with the same name is an error."""
    return TASKS.register(name)


def list_tasks() -> list[str]:
    return TASKS.names()


def hub_dataset(name: str) -> str | None:
    """The Hugging Face hub dataset a task reads by default (its `path` option's default), or None for
    a task that needs no hub."""
    path = inspect.signature(_resolve(name)).parameters.get("path")
    return path.default if path is not None and isinstance(path.default, str) else None


def check_task_options(names: Sequence[str], options: Mapping[str, Any]) -> None:
    """Refuses an option that one of the tasks `names` does not accept, naming the closest one."""
    for name in names:
        check_options(f"task {name!r}", _resolve(name), options, fixed=1)  # the first parameter is the seed


def load_task(name: str, /, seed: int = 0, **options: Any) -> TaskData:
    """Builds task `name` (registered, or "module:function") and checks every example."""
    fn = _resolve(name)
    check_options(f"task {name!r}", fn, options, fixed=1)  # the first parameter is the seed
    result = fn(seed, **options)
    if isinstance(result, TaskData):
        splits = {"train": result.train, "test": result.test}
    elif isinstance(result, Mapping):
        splits = result
    else:
        raise ConfigError(
            f"task {name!r} returned {type(result).__name__}; expected TaskData or a dict "
            "with 'train' and 'test' lists"
        )
    return TaskData(name, _checked(name, "train", splits), _checked(name, "test", splits))


def fingerprint(examples: list[Example]) -> str:
    """A short hash of a split's texts and labels in order: results with equal fingerprints were
    measured on the same examples (w2s compare checks it)."""
    digest = hashlib.sha256()
    for text, label in examples:
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()[:16]


def _resolve(name: str) -> TaskFn:
    if name in TASKS or ":" not in name:
        return TASKS.get(name, hint=" A plug-in task is named 'package.module:function'.")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError) as e:  # no such module, or an empty or relative name
        raise ConfigError(f"plug-in task {name!r}: cannot import module {module_name!r} ({e})") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"plug-in task {name!r}: module {module_name!r} has no function {attr!r}")
    return fn


def _checked(name: str, split: str, splits: Mapping[str, Any]) -> list[Example]:
    if split not in splits:
        raise ConfigError(f"task {name!r} returned no {split!r} split")
    examples = splits[split]
    if isinstance(examples, (str, bytes, Mapping)) or not hasattr(examples, "__iter__"):
        raise ConfigError(f"task {name!r}: split {split!r} must be a list of (text, label) pairs")
    out = []
    for i, example in enumerate(examples):
        where = f"task {name!r}, split {split!r}, example {i}"
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise ConfigError(f"{where}: expected a (text, label) pair, got {example!r:.200}")
        text, label = example
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: text must be a non-empty str, got {text!r:.200}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: the tokenizer would fail deep inside
            raise ConfigError(f"{where}: text is not valid Unicode ({e.reason} at character {e.start})") from None
        # numbers.Integral admits bool and numpy integers but not 1.0 or '1'.
        if not isinstance(label, numbers.Integral) or label not in (0, 1):
            raise ConfigError(
                f"{where}: label must be the int 0 or 1, got {label!r} ({type(label).__name__})"
            )
        out.append((text, int(label)))
    if not out:
        raise ConfigError(f"task {name!r}: split {split!r} is empty")
    return out


# Imported last: these modules register the built-in tasks with the decorator above.
from w2s.tasks import bbc, held_out, hf, tweets, wordnet  # noqa: E402,F401
