"""Binary classification tasks: a name registry, plug-in loading and central validation.

Every task yields (text, label) pairs with label in {0, 1}. A task is a function
`(seed, **options) -> TaskData | {"train": [...], "test": [...]}`, either registered with
`@register_task("name")` or referred to as "package.module:function" (a plug-in), so a new
task is one small module. Validation lives here, once, so each task stays data wrangling.
"""
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import difflib
import importlib
import inspect
import numbers
from typing import Any

Example = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str
    train: list[Example]
    test: list[Example]


TaskFn = Callable[..., "TaskData | Mapping[str, Any]"]
_REGISTRY: dict[str, TaskFn] = {}


def register_task(name: str) -> Callable[[TaskFn], TaskFn]:
    """Registers a task function under `name`; a second task with the same name is an error."""

    def decorator(fn: TaskFn) -> TaskFn:
        if name in _REGISTRY:
            old = _REGISTRY[name]
            raise ValueError(
                f"task {name!r} is already registered by {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def hub_dataset(name: str) -> str | None:
    """The Hugging Face hub dataset a task reads by default (its `path` option's default), or None for
    a task that needs no hub."""
    path = inspect.signature(_resolve(name)).parameters.get("path")
    return path.default if path is not None and isinstance(path.default, str) else None


def check_task_options(names: Sequence[str], options: Mapping[str, Any]) -> None:
    """Refuses an option that one of the tasks `names` does not accept, naming the closest one."""
    for name in names:
        _check_options(name, _resolve(name), options)


def load_task(name: str, seed: int = 0, **options: Any) -> TaskData:
    """Builds task `name` (registered, or "module:function") and checks every example."""
    fn = _resolve(name)
    _check_options(name, fn, options)
    result = fn(seed, **options)
    if isinstance(result, TaskData):
        splits = {"train": result.train, "test": result.test}
    elif isinstance(result, Mapping):
        splits = result
    else:
        raise ValueError(
            f"task {name!r} returned {type(result).__name__}; expected TaskData or a dict "
            "with 'train' and 'test' lists"
        )
    return TaskData(name, _checked(name, "train", splits), _checked(name, "test", splits))


def _resolve(name: str) -> TaskFn:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except (ImportError, ValueError, TypeError) as e:  # no such module, or an empty or relative name
            raise ValueError(f"plug-in task {name!r}: cannot import module {module_name!r} ({e})") from e
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ValueError(
                f"plug-in task {name!r}: module {module_name!r} has no function {attr!r}"
            )
        return fn
    known = list_tasks()
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown task {name!r}.{hint} Known tasks: {', '.join(known)}. "
        "A plug-in task is named 'package.module:function'."
    )


def _check_options(name: str, fn: TaskFn, options: Mapping[str, Any]) -> None:
    """Names a misspelt option, or a function that cannot take (seed, **options), here instead of
    letting a TypeError surface from inside the task."""
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = sorted(p.name for p in params[1:] if p.kind in kinds)  # params[0] is the seed.
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    for option in options:
        if option not in accepted and not takes_any:
            close = difflib.get_close_matches(option, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"task {name!r} has no option {option!r}.{hint} "
                f"Accepted options: {', '.join(accepted) or '(none)'}."
            )
    try:
        signature.bind(0, **options)
    except TypeError as e:
        raise ValueError(f"task {name!r} cannot be called as {name}(seed, **options): {e}") from None


def _checked(name: str, split: str, splits: Mapping[str, Any]) -> list[Example]:
    if split not in splits:
        raise ValueError(f"task {name!r} returned no {split!r} split")
    examples = splits[split]
    if isinstance(examples, (str, bytes, Mapping)) or not hasattr(examples, "__iter__"):
        raise ValueError(f"task {name!r}: split {split!r} must be a list of (text, label) pairs")
    out = []
    for i, example in enumerate(examples):
        where = f"task {name!r}, split {split!r}, example {i}"
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise ValueError(f"{where}: expected a (text, label) pair, got {example!r:.200}")
        text, label = example
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: text must be a non-empty str, got {text!r:.200}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: the tokenizer would fail deep inside
            raise ValueError(f"{where}: text is not valid Unicode ({e.reason} at character {e.start})") from None
        # numbers.Integral admits bool and numpy integers but not 1.0 or '1'.
        if not isinstance(label, numbers.Integral) or label not in (0, 1):
            raise ValueError(
                f"{where}: label must be the int 0 or 1, got {label!r} ({type(label).__name__})"
            )
        out.append((text, int(label)))
    if not out:
        raise ValueError(f"task {name!r}: split {split!r} is empty")
    return out


# Imported last: these modules register the built-in tasks with the decorator above.
from w2s.tasks import hf, wordnet  # noqa: E402,F401
