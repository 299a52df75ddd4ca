"""Named registries: one per kind of plug-in (tasks, losses, strategies, ladders, model families).

Every kind registers the same way, with a decorator in the module that defines the member:

    TASKS = Registry("task")          # in the module that owns the kind, e.g. w2s/tasks/__init__.py

    @TASKS.register("parity")         # in the member's own module
    def parity(seed, n_train=100): ...

A name means one thing: registering the same entry again is a no-op (a config file loaded twice),
a different one under a taken name is refused, naming the first. Looking up an unknown name lists
the known ones with the closest matches, and `check_options` reads the options a member accepts
from its signature. This module imports none of the members, so no registry import cycles: the
package that owns a kind imports its built-in members once, after creating the registry.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
import difflib
import inspect
from typing import Any, Generic, TypeVar

from w2s.config import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, known: Collection[str], n: int = 3) -> str:
    """' Did you mean 'a' or 'b'?' for the known names closest to `name`, or ''."""
    close = difflib.get_close_matches(name, list(known), n=n)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def _origin(entry: Any) -> str:
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(entry)[:200]


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}  # who registered each entry, for the duplicate-name error

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator adding its argument under `name`."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T, origin: str | None = None) -> None:
        """Adds `entry` under `name`; `origin` names its registrant in errors (default: its qualified name)."""
        self.refuse_taken(name, entry, origin)
        self._entries[name] = entry
        self._origins[name] = origin or _origin(entry)

    def refuse_taken(self, name: str, entry: T, origin: str | None = None) -> None:
        """Refuses `name` if another entry holds it (`add` checks this; check first to add to several at once)."""
        if name in self._entries and not (self._entries[name] is entry or self._entries[name] == entry):
            raise ValueError(f"{self.kind} {name!r} is already registered by {self._origins[name]}; "
                             f"{origin or _origin(entry)} needs another name.")

    def get(self, name: str, hint: str = "") -> T:
        """The entry named `name`; an unknown name is refused listing the known ones (then `hint`)."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                              f"Known {self.plural}: {', '.join(self.names())}.{hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def copy(self) -> Registry[T]:
        """An independent copy (tests register temporary members in one)."""
        other = Registry[T](self.kind, self.plural)
        other._entries, other._origins = dict(self._entries), dict(self._origins)
        return other


def accepted_options(fn: Callable, fixed: int = 0, reserved: Collection[str] = ()) -> tuple[list[str], bool]:
    """The option names `fn` takes after its first `fixed` parameters, less the `reserved` ones the
    caller passes itself; and whether it takes **options of any name."""
    params = list(inspect.signature(fn).parameters.values())[fixed:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = sorted(p.name for p in params if p.kind in kinds and p.name not in reserved)
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_options(what: str, fn: Callable, options: Mapping[str, Any], fixed: int = 0,
                  reserved: Collection[str] = ()) -> None:
    """Refuses an option `fn` does not take, naming the accepted ones, and a function that cannot be
    called with `fixed` positional arguments, the `reserved` keywords and these options, here,
    instead of letting a TypeError surface from inside it. `what` names it, e.g. "task 'sciq'"."""
    accepted, takes_any = accepted_options(fn, fixed, reserved)
    for option in options:
        if option not in accepted and not takes_any:
            raise ConfigError(f"{what} has no option {option!r}.{did_you_mean(option, accepted, n=1)} "
                              f"Accepted options: {', '.join(accepted) or '(none)'}.")
    try:
        inspect.signature(fn).bind(*[None] * fixed, **dict.fromkeys(reserved), **options)
    except TypeError as e:
        raise ConfigError(f"{what} cannot be called with {fixed} argument(s), {sorted(reserved)} "
                          f"and its options: {e}") from None
