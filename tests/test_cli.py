"""The `w2s` command's help, listings and `w2s config`: what a new user reads first must be right."""
import pathlib
import re

import pytest

from w2s.cli import OVERRIDES_HELP, main
from w2s.config import apply_overrides, load_config_file
from w2s.models.config import TransformerConfig
from w2s.experiment import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.py"


def test_the_help_s_override_examples_are_valid_keys_of_the_quickstart():
    examples = re.findall(r"--config\.[a-z_.]+=[^\s]+", OVERRIDES_HELP)
    assert examples
    validate(apply_overrides(load_config_file(QUICKSTART), [e.rstrip(".") for e in examples]))


@pytest.mark.parametrize("command", ["run", "sweep", "config"])
def test_subcommand_help_explains_overrides(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--config.KEY=VALUE" in " ".join(capsys.readouterr().out.split())


def test_config_prints_every_key_with_its_value_after_overrides(capsys):
    assert main(["config", str(QUICKSTART), "--config.strong.train.lr=3e-5", "--config.seeds=0,"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "strong.train.lr = 3e-05" in lines
    assert "seeds = (0,)" in lines
    assert "task_options.n_train = 4000" in lines
    assert main(["config", str(QUICKSTART), "--config.strong.train.lrr=1"]) == 2  # a typo is named


def test_models_names_every_supported_architecture(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    with pytest.raises(ValueError, match=r"Known model_types: (.*?)\. ") as unsupported:
        TransformerConfig.from_hf({"model_type": "none"})
    supported = re.search(r"Known model_types: (.*?)\. ", str(unsupported.value)).group(1).split(", ")
    assert "gpt_neox" in supported and all(arch in out for arch in supported), (supported, out)


def test_tasks_marks_the_tasks_that_need_the_hub(capsys):
    assert main(["tasks"]) == 0
    lines = dict(line.split(maxsplit=1) if " " in line else (line, "") for line in capsys.readouterr().out.splitlines())
    assert "HF hub: allenai/sciq" in lines["sciq"]
    assert lines["wordnet_living"] == ""
