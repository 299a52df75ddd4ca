"""Runners: what `w2s run FILE` does with a config, chosen by the config's own `runner` key.

A runner is a function `(cfg, overrides, **flags) -> results`, registered by name in the module
that defines it (`@register_runner("sweep")`). It applies the `--config.*` overrides itself (it
knows its open sections) and declares, as keyword parameters, the command-line switches it honours
(`quiet`, `tensorboard`, `dry_run`) and the context it records (`config_file`, `command`); a switch
it does not declare is refused, naming those it does. So an experiment file holds only its config,
and `w2s run` and `python experiments/x.py` take the same path.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import importlib
from typing import Any

import ml_collections

from w2s.config import ConfigError, OpenSections
from w2s.registry import Registry, accepted_options

Runner = Callable[..., Any]
RUNNERS: Registry[Runner] = Registry("runner")
# Per runner: the config sections whose new keys its `--config.*` overrides may add (w2s.config).
_OPEN_SECTIONS: dict[str, OpenSections] = {}
SWITCHES = ("quiet", "tensorboard", "dry_run")  # command-line flags a runner may honour
# The modules that register the built-in runners, imported on first use (they import this one).
BUILT_IN = ("w2s.experiment", "w2s.sweeps.sweep", "w2s.sweeps.per_task", "w2s.active_learning.active",
            "w2s.generation.nudging_eval", "w2s.finetuning.inoculation", "w2s.finetuning.abduction")


def register_runner(name: str, open_sections: OpenSections | None = None) -> Callable[[Runner], Runner]:
    """Registers a runner under `name`, with the open sections of the configs it runs."""

    def add(runner: Runner) -> Runner:
        RUNNERS.add(name, runner)
        _OPEN_SECTIONS[name] = dict(open_sections or {})
        return runner

    return add


def runner_name(cfg: ml_collections.ConfigDict) -> str:
    """The registered runner `cfg` names (the built-in ones imported first); refused when it names none."""
    for module in BUILT_IN:
        importlib.import_module(module)
    name = cfg.get("runner")
    if name is None:
        raise ConfigError(f"the config has no 'runner' key: set cfg.runner in its get_config() to one of "
                          f"{', '.join(map(repr, RUNNERS.names()))}.")
    RUNNERS.get(name, hint=" Set cfg.runner in the config file.")
    return name


def open_sections(cfg: ml_collections.ConfigDict) -> OpenSections:
    """The open sections of `cfg`'s runner: what `--config.*` overrides of it may add."""
    return _OPEN_SECTIONS[runner_name(cfg)]


def run(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = (), *, config_file: str | None = None,
        command: Sequence[str] | None = None, **switches: bool) -> Any:
    """Runs `cfg` with the runner its `runner` key names; only switches that are on are passed."""
    name = runner_name(cfg)
    runner = RUNNERS.get(name)
    accepted, _ = accepted_options(runner, fixed=2)
    on = {flag: True for flag, value in switches.items() if value}
    for flag in on:
        if flag not in accepted:
            takes = [f"--{s}" for s in SWITCHES if s in accepted]
            raise ConfigError(f"--{flag}: the {name!r} runner does not take it (it takes: "
                              f"{', '.join(takes) or 'no switches'}).")
    context = {k: v for k, v in (("config_file", config_file), ("command", command)) if k in accepted}
    return runner(cfg, overrides, **on, **context)

