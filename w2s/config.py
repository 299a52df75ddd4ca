"""Loading experiment configs (Python files with `get_config()`) and `--config.a.b=value` overrides."""
from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
from typing import Any, Callable, Mapping, Sequence

import ml_collections


class ConfigError(ValueError):
    """A configuration or input error (a key, a value, a file, a model, data): `w2s` prints it as one
    line. Anything else that goes wrong is a bug and shows its traceback."""


class MissingFileError(ConfigError, FileNotFoundError):
    """A file or folder that a config names, or that an input needs, does not exist."""


def load_config_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Imports a config file and calls its `get_config()`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    spec = importlib.util.spec_from_file_location(f"w2s_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config().")
    return module.get_config()


def _leaf(node: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node[part]
    return node


def _parse_value(raw: str, current: Any, key: str) -> Any:
    """Parses an override by the type of the value it replaces."""
    if isinstance(current, bool):
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ConfigError(f"--config.{key}: expected true/false, got {raw!r}.")
        return lowered in ("true", "1")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise ConfigError(f"--config.{key}: expected a number, got {raw!r}.") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"--config.{key}: expected a number, got {raw!r}.")
        if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"--config.{key}: expected an integer, got {raw!r}.")
        return type(current)(value)
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    if isinstance(current, str):
        return raw
    try:  # None or other: a Python literal if it reads as one, else the string.
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        out.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            out.extend(_keys(v, prefix + k + "."))
    return out


def flat_items(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf, in the config's order: what --config.KEY=VALUE can set."""
    out = []
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            out.extend(flat_items(v, prefix + k + "."))
        else:
            out.append((prefix + k, v))
    return out


# A section that takes keys its config file does not hold, and the check of the new ones: e.g.
# task_options takes whatever the chosen task's function accepts.
OpenSections = Mapping[str, Callable[[ml_collections.ConfigDict, dict[str, Any]], None]]


def apply_overrides(cfg: ml_collections.ConfigDict, argv: Sequence[str],
                    open_sections: OpenSections | None = None) -> ml_collections.ConfigDict:
    """Applies `--config.a.b=value` (or `--config.a.b value`) arguments; a misspelt key is named.

    A key new to a section of `open_sections` is added (its value read as a Python literal, else as a
    string) and, once every override is applied, checked by that section's function.
    """
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    open_sections = open_sections or {}
    added: dict[str, dict[str, Any]] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unrecognised argument {arg!r}; overrides look like --config.strong.train.lr=1e-5.")
        if "=" in arg:
            key, raw = arg[len("--config.") :].split("=", 1)
        elif i + 1 < len(args):
            key, raw = arg[len("--config.") :], args[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg} has no value.")
        node = cfg
        parts = key.split(".")
        # The open section the key lies in (its nearest enclosing one), if any.
        section = next((".".join(parts[:d]) for d in range(len(parts) - 1, 0, -1)
                        if ".".join(parts[:d]) in open_sections), None)
        for depth, part in enumerate(parts):
            if section is not None and depth >= section.count(".") + 1 and isinstance(node, ml_collections.ConfigDict) \
                    and part not in node:
                added.setdefault(section, {})[".".join(parts[section.count(".") + 1:])] = None
                for new_part in parts[depth:-1]:  # a new subsection, e.g. loss_options.<new loss>
                    node[new_part] = ml_collections.ConfigDict()
                    node = node[new_part]
                break
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                close = difflib.get_close_matches(key, _keys(cfg), n=3)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise ConfigError(f"--config.{key}: no such key ({'.'.join(parts[: depth + 1])!r}).{hint}")
            if depth < len(parts) - 1:
                node = node[part]
        current = node.get(parts[-1])
        if isinstance(current, ml_collections.ConfigDict):
            example = next(iter(current.keys()), "key")
            raise ConfigError(f"--config.{key} is a section: set one of its keys, e.g. --config.{key}.{example}.")
        try:
            node[parts[-1]] = _parse_value(raw, current, key)
        except (TypeError, ValueError) as e:  # ml_collections refusing the value's type
            raise ConfigError(f"--config.{key}: cannot take {raw!r:.100} ({e}).") from None
        i += 1
    for section, keys in added.items():
        node = cfg
        for part in section.split("."):
            node = node[part]
        try:
            open_sections[section](cfg, {k: _leaf(node, k) for k in keys})
        except ValueError as e:
            raise ConfigError(f"--config.{section}.{', '.join(keys)}: {e}") from None
    return cfg


def check_keys(cfg: ml_collections.ConfigDict, accepted: Sequence[str], where: str) -> None:
    """Refuses keys a component does not read, so a typo in a config file is not silently ignored."""
    unknown = sorted(set(cfg.keys()) - set(accepted))
    if unknown:
        hints = {k: difflib.get_close_matches(k, accepted, n=1) for k in unknown}
        named = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ConfigError(f"{where}: unknown key(s) {named}; accepted: {sorted(accepted)}.")


def changed_leaves(stored: Any, current: Any, prefix: str = "") -> list[str]:
    """The dotted leaf keys whose values differ between two nested dicts (a missing key reads as None)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        return [leaf for k in sorted(set(stored) | set(current))
                for leaf in changed_leaves(stored.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if stored == current else [prefix.rstrip(".")]


def with_defaults(stored: Any, defaults: Any) -> Any:
    """`stored` settings with every key of `defaults` they lack added, at any depth: settings written
    before a key existed ran as its default does (a new key's default keeps the old behaviour), so an
    old run folder's finished work stays reusable."""
    if not isinstance(stored, dict) or not isinstance(defaults, dict):
        return stored
    return {**{k: v for k, v in defaults.items() if k not in stored},
            **{k: with_defaults(v, defaults.get(k)) for k, v in stored.items()}}


def refuse_changes(stored: dict, current: dict, holder: str) -> None:
    """Refuses to mix finished work made under other settings with this run, naming the leaf keys."""
    changed = changed_leaves(stored, current)
    if changed:
        raise ConfigError(
            f"{holder} (keys {changed} differ); choose another --config.output_dir or delete that folder."
        )
