"""Config overrides and validation: typos are named, values take the type they replace."""
import pathlib

import ml_collections
import pytest

from w2s.config import ConfigError, apply_overrides, load_config_file
from w2s.experiment import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quickstart():
    return load_config_file(ROOT / "experiments" / "quickstart.py")


def test_overrides_take_the_type_of_the_value_they_replace():
    cfg = apply_overrides(quickstart(), [
        "--config.strong.train.lr=1e-5", "--config.weak.num_layers=2", "--config.seeds=0,1,2",
        "--config.losses", "xent,product", "--config.weak.pretrained=false", "--config.task=wordnet_food",
        "--config.strong.train.batch_size=64",
    ])
    assert cfg.strong.train.lr == 1e-5
    assert cfg.weak.num_layers == 2
    assert tuple(cfg.seeds) == (0, 1, 2)
    assert tuple(cfg.losses) == ("xent", "product")
    assert cfg.weak.pretrained is False
    assert cfg.task == "wordnet_food"
    assert cfg.strong.train.batch_size == 64 and isinstance(cfg.strong.train.batch_size, int)
    validate(cfg)


def test_original_config_is_not_mutated():
    cfg = quickstart()
    apply_overrides(cfg, ["--config.strong.train.lr=1e-5"])
    assert cfg.strong.train.lr != 1e-5


@pytest.mark.parametrize("arg, message", [
    ("--config.strong.train.lrr=1e-5", r"strong\.train\.lrr.*Did you mean: strong\.train\.lr"),
    ("--config.stong.train.lr=1", r"'stong'"),
    ("--config.strong.train.batch_size=big", "expected a number"),
    ("--config.strong.train.batch_size=1.5", "expected an integer"),
    ("--config.weak.pretrained=maybe", "true/false"),
    ("--lr=3", "overrides look like"),
])
def test_bad_overrides_name_the_key(arg, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(quickstart(), [arg])


def test_validation_names_unknown_keys_in_files():
    cfg = quickstart()
    cfg.strong.train.lrr = 1.0
    with pytest.raises(ValueError, match="lrr"):
        validate(cfg)
    cfg = quickstart()
    cfg.wek = ml_collections.ConfigDict()
    with pytest.raises(ConfigError, match="'wek' \\(did you mean 'weak'\\?\\)"):
        validate(cfg)
    cfg = quickstart()
    cfg.losses = ("xent", "aux-conf")
    with pytest.raises(ValueError, match="unknown loss .aux-conf.. Did you mean .aux_conf.?.*Known losses"):
        validate(cfg)
    cfg = quickstart()
    cfg.strong.train.batch_size = 30
    cfg.strong.train.micro_batch_size = 8
    with pytest.raises(ValueError, match="not a multiple"):
        validate(cfg)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.py")


def test_task_options_the_task_accepts_are_settable_from_the_command_line(tmp_path, monkeypatch):
    from w2s.experiment import OPEN_SECTIONS

    cfg = apply_overrides(quickstart(), ["--config.task=sciq", "--config.task_options.path=/data/sciq",
                                         "--config.task_options.n_test", "500"], OPEN_SECTIONS)
    assert (cfg.task_options.path, cfg.task_options.n_test) == ("/data/sciq", 500)
    # A plug-in task's own options, checked against its signature.
    (tmp_path / "my_tasks.py").write_text(
        "def colours(seed, n_colours=2, words=('red',)):\n    return {'train': [], 'test': []}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = apply_overrides(quickstart(), ["--config.task=my_tasks:colours", "--config.task_options.n_colours=5",
                                         "--config.task_options.words=('red','blue')"], OPEN_SECTIONS)
    assert cfg.task_options.n_colours == 5 and tuple(cfg.task_options.words) == ("red", "blue")
    with pytest.raises(ConfigError, match=r"task_options.n_colour\b.*Did you mean 'n_colours'"):
        apply_overrides(quickstart(), ["--config.task_options.n_colour=5", "--config.task=my_tasks:colours"],
                        OPEN_SECTIONS)
    with pytest.raises(ConfigError, match="no option 'n_trian'.*Did you mean 'n_train'"):
        apply_overrides(quickstart(), ["--config.task_options.n_trian=5"], OPEN_SECTIONS)
    with pytest.raises(ConfigError, match="no such key"):  # without open sections, as before
        apply_overrides(quickstart(), ["--config.task_options.path=x"])


def test_a_sweep_s_task_options_must_suit_every_task():
    from w2s.sweeps.sweep import OPEN_SECTIONS

    sweep = load_config_file(ROOT / "experiments" / "sweep_offline.py")
    cfg = apply_overrides(sweep, ["--config.tasks=sciq,boolq", "--config.task_options.path=/data/x"], OPEN_SECTIONS)
    assert cfg.task_options.path == "/data/x"
    with pytest.raises(ConfigError, match="task 'wordnet_living' has no option 'path'"):
        apply_overrides(sweep, ["--config.tasks=sciq,wordnet_living", "--config.task_options.path=/data/x"],
                        OPEN_SECTIONS)
