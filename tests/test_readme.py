"""The README's four recipes, run as written there: its code blocks are extracted and executed, and
its commands are run (on the tiny test model, one seed, few words)."""
import pathlib
import re
import shlex
import sys

import numpy as np

from tests.test_pipeline import small_overrides
from w2s.active_learning import strategies
from w2s.cli import main
from w2s.losses import LOSSES
from w2s.results import load

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def recipe(first_line: str) -> str:
    """The README's python block that starts with `first_line`."""
    (code,) = [code for lang, code in BLOCKS if lang == "python" and code.startswith(first_line)]
    return code


def command(containing: str) -> list[str]:
    """The arguments after `w2s` of the README's command line that contains `containing`."""
    (line,) = [line for lang, code in BLOCKS if lang == "bash" for line in code.splitlines()
               if line.startswith("w2s run") and containing in line]
    return shlex.split(line)[1:]


def test_task_and_loss_recipes_run_as_written(tmp_path, tiny_bert, monkeypatch, capsys):
    """A plug-in task module in the folder w2s runs from, and a new loss file; the README's two
    commands, on the tiny model."""
    monkeypatch.setattr(LOSSES, "_entries", dict(LOSSES._entries))  # the new loss leaves with the test
    monkeypatch.setattr("sys.path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)  # another test's module of that name
    (tmp_path / "my_tasks.py").write_text(recipe("# my_tasks.py"))
    loss_file = recipe("# w2s/losses/smoothed_xent.py")
    exec(compile(loss_file, "smoothed_xent.py", "exec"), {"__name__": "smoothed_xent"})  # the import line
    task_args, loss_args = command("my_tasks:even_numbers"), command("smoothed_xent")
    assert task_args[:2] == loss_args[:2] == ["run", "experiments/quickstart.py"]
    args = [str(ROOT / task_args[1]), *task_args[2:], *loss_args[2:]]
    tiny = [a for a in small_overrides(tmp_path, tiny_bert) if "losses" not in a and "n_train" not in a]
    assert main(["run", *args, *tiny]) == 0
    (results,) = load.load_results(tmp_path / "results")
    assert results["config"]["task"] == "my_tasks:even_numbers"
    assert results["config"]["loss_options"]["smoothed_xent"] == {"smoothing": 0.2}
    assert set(results["accuracy"]["student"]) == {"xent", "smoothed_xent"}
    assert "smoothed_xent" in capsys.readouterr().out  # in the printed table


def test_strategy_recipe_chooses_k_distinct_pool_positions(monkeypatch):
    monkeypatch.setattr(strategies.STRATEGIES, "_entries", dict(strategies.STRATEGIES._entries))
    namespace = {"__name__": "far_from_labelled"}
    exec(compile(recipe("# far_from_labelled.py"), "far_from_labelled.py", "exec"), namespace)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(50, 8))
    embeddings[7] += 100.0  # far from everything labelled
    ctx = strategies.Context(probs=np.full((50, 2), 0.5), ensemble=np.full((4, 50, 2), 0.5),
                             embeddings=embeddings, labelled=rng.normal(size=(10, 8)), k=5, rng=rng)
    chosen = strategies.get_strategy("far_from_labelled")(ctx)
    assert len(set(chosen.tolist())) == 5 and chosen[0] == 7


def test_model_family_recipe_is_the_tested_toy_family():
    """The README shows the registration of tests/test_model_family.py's family, which that file
    loads, trains sharded and generates with."""
    (code,) = [code for lang, code in BLOCKS if lang == "python" and code.startswith("@register_family")]
    assert code in (ROOT / "tests" / "test_model_family.py").read_text()
