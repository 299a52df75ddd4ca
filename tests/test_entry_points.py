"""`python -m w2s` is the w2s command; shell completion offers commands, options and config keys."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from w2s.cli import main
from w2s.completion import SCRIPT

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = "experiments/quickstart.py"


def w2s_module(*args, **env):
    return subprocess.run([sys.executable, "-m", "w2s", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)


def test_python_dash_m_runs_the_cli():
    done = w2s_module("tasks")
    assert done.returncode == 0 and "wordnet_living" in done.stdout.split()
    bad = w2s_module("compare", "/nonexistent")
    assert bad.returncode == 2 and bad.stderr.startswith("w2s: error: no results.json found under /nonexistent")


@pytest.fixture
def candidates(monkeypatch, capsys):
    """What `w2s` prints when the shell asks it to complete `line` (as the completion script does)."""
    monkeypatch.chdir(ROOT)

    def ask(line):
        monkeypatch.setenv("COMP_LINE", line)
        monkeypatch.setenv("COMP_POINT", str(len(line)))
        monkeypatch.setenv("_W2S_COMPLETE", "1")
        assert main(["tasks"]) == 0  # the shell's question wins over the arguments
        return capsys.readouterr().out.split()

    return ask


def test_completion_offers_commands_options_and_config_keys(candidates):
    assert candidates("w2s re") == ["report"]
    assert {"run", "sweep", "plot", "compare", "report", "completion"} <= set(candidates("w2s "))
    assert candidates("w2s compare --a") == ["--allow_different_data"]
    assert set(candidates(f"w2s run {QUICKSTART} --")) >= {"--quiet", "--tensorboard", "--config."}
    keys = candidates(f"w2s run {QUICKSTART} --config.strong.train.l")
    assert sorted(keys) == ["--config.strong.train.log_every=", "--config.strong.train.lr="]
    assert candidates(f"w2s run {QUICKSTART} --config.seeds=") == []  # a value: the shell's own completion
    assert candidates("w2s run missing.py --config.") == []  # no file, no keys, no traceback
    assert candidates(f"w2s plot {QUICKSTART} --config.") == []  # plot takes no config


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_completion_script_completes_in_bash(tmp_path):
    # The script calls the command it completes: here a w2s that is `python -m w2s`.
    w2s = tmp_path / "w2s"
    w2s.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m w2s \"$@\"\n")
    w2s.chmod(0o755)
    line = f"{w2s} run {QUICKSTART} --config.weak.poo"
    script = SCRIPT + f"""
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({line}); COMP_CWORD=4
_w2s_complete; printf '%s\\n' "${{COMPREPLY[@]}}"
complete -p w2s"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.splitlines() == ["--config.weak.pooling=", "complete -o default -F _w2s_complete w2s"]
    assert main(["completion"]) == 0
