"""Shell completion for `w2s`: commands, their options, and the `--config.*` keys of the config file
already on the line (its get_config() is loaded to list them).

The shell function below runs `w2s` with the line in COMP_LINE/COMP_POINT and _W2S_COMPLETE set;
w2s.cli.main then prints the candidates instead of running a command. Works in bash, and in zsh
after `autoload -U +X bashcompinit && bashcompinit`. Values after `=` and positional arguments fall
back to the shell's file completion.
"""
from __future__ import annotations

import argparse

from w2s.config import load_config_file

SCRIPT = r"""# w2s completion: eval "$(w2s completion)" (add it to ~/.bashrc or ~/.zshrc)
_w2s_complete() {
    local IFS=$'\n'
    COMPREPLY=($(COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" _W2S_COMPLETE=1 "${COMP_WORDS[0]}" 2>/dev/null))
    # A key waits for its value, a prefix for its key: no space after --config.a.b= or --config.
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=.] ]] && type compopt &>/dev/null; then
        compopt -o nospace
    fi
}
complete -o default -F _w2s_complete w2s"""

CONFIG_PREFIX = "--config."
_CONFIG_COMMANDS = ("run", "sweep")  # commands whose first argument is a config file


def config_keys(path: str) -> list[str]:
    """Every leaf key of the config file's get_config(), dotted."""
    def leaves(node, prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            out += leaves(value, f"{prefix}{key}.") if hasattr(value, "items") else [prefix + key]
        return out

    return leaves(load_config_file(path), "")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def complete(parser: argparse.ArgumentParser, line: str, point: int) -> list[str]:
    """Candidates for the word being typed at `point` of the command line `line`."""
    before = line[:point]
    words = before.split()[1:]  # without the program's name
    current = "" if not words or before.endswith(" ") else words.pop()
    commands = _commands(parser)
    if not words:
        return [c for c in (*commands, "-h", "--help") if c.startswith(current)]
    command = commands.get(words[0])
    if command is None or "=" in current:  # an unknown command, or a value: the shell's file names
        return []
    if current.startswith(CONFIG_PREFIX) and words[0] in _CONFIG_COMMANDS:
        config = next((w for w in words[1:] if not w.startswith("-")), None)
        try:
            keys = config_keys(config) if config else []
        except Exception:  # noqa: BLE001  a broken or missing file has no keys to offer, only no traceback
            keys = []
        return [f"{CONFIG_PREFIX}{k}=" for k in keys if f"{CONFIG_PREFIX}{k}".startswith(current)]
    if current.startswith("-"):
        options = [o for a in command._actions for o in a.option_strings]
        options += [CONFIG_PREFIX] if words[0] in _CONFIG_COMMANDS else []
        return [o for o in options if o.startswith(current)]
    return []
