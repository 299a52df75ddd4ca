"""The pipeline end to end on a tiny random BERT (MiniLM's tokenizer) and real WordNet data:
results and PGR, cached stages, resume after a kill, and clear errors for bad input."""
import importlib.util
import json
import math
import pathlib
import re

import numpy as np
import pytest

from w2s import experiment, stages
from w2s.cli import main
from w2s.config import ConfigError, apply_overrides, load_config_file
from w2s.tasks import fingerprint, load_task

ROOT = pathlib.Path(__file__).resolve().parents[1]


def small_config(tmp_path, model_dir, *extra):
    return apply_overrides(load_config_file(ROOT / "experiments" / "quickstart.py"),
                           small_overrides(tmp_path, model_dir, *extra))


def small_overrides(tmp_path, model_dir, *extra):
    """Quickstart on the tiny model, 64 train and 32 test words, one seed, one epoch."""
    return [
        f"--config.weak.model={model_dir}", "--config.weak.num_layers=1",
        f"--config.strong.model={model_dir}",
        "--config.task_options.n_train=64", "--config.task_options.n_test=32", "--config.seeds=0,",
        "--config.losses=xent,aux_conf,product",
        f"--config.output_dir={tmp_path / 'results'}", f"--config.checkpoint_dir={tmp_path / 'ckpt'}",
        *[f"--config.{side}.train.{k}" for side in ("weak", "strong")
          for k in ("batch_size=16", "micro_batch_size=16", "epochs=1", "checkpoint_every=1", "eval_every=0")],
        *extra,
    ]


def test_pipeline_writes_results_and_skips_finished_stages(tmp_path, tiny_bert, monkeypatch, capsys):
    cfg = small_config(tmp_path, tiny_bert)
    (results,) = experiment.run_experiment(cfg)
    acc = results["accuracy"]
    for name in ("xent", "aux_conf", "product"):
        gap = acc["ceiling"] - acc["weak"]
        expected = (acc["student"][name] - acc["weak"]) / gap if gap > 0 else math.nan  # no gap: no PGR
        assert results["pgr"][name] == pytest.approx(expected, nan_ok=True)
    run_dir = tmp_path / "results" / "seed_0"
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["seed"] == 0 and on_disk["config"]["task"] == "wordnet_living"
    assert {"jax", "flax", "optax", "transformers", "python"} <= set(on_disk["versions"])
    assert set(on_disk["timings"]) == {"weak", "ceiling", "student_xent", "student_aux_conf", "student_product"}
    with np.load(run_dir / "weak_labels.npz") as f:
        assert f["probs"].shape == (32, 2) and set(np.unique(f["labels"])) <= {0, 1}
        np.testing.assert_allclose(f["probs"].sum(1), 1.0, rtol=1e-5)

    assert main(["plot", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "pgr.png").stat().st_size > 0
    assert (tmp_path / "results" / "accuracy.png").stat().st_size > 0
    assert not (tmp_path / "ckpt" / "quickstart" / "seed_0" / "weak").exists()  # finished: removed

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(stages, "train", no_training)
    capsys.readouterr()
    (again,) = experiment.run_experiment(cfg)
    assert again["accuracy"] == results["accuracy"]
    assert (f"seed 0: every stage (weak, ceiling, student_xent, student_aux_conf, student_product) reused from "
            f"{run_dir}; nothing trained") in capsys.readouterr().out

    # Only the stage whose output is gone runs again.
    (run_dir / "student_product.json").unlink()
    calls = []
    monkeypatch.setattr(stages, "train", lambda *a, **k: calls.append(k["desc"]) or _real_train(*a, **k))
    experiment.run_experiment(cfg)
    assert calls == ["student_product (seed 0)"]
    assert "nothing trained" not in capsys.readouterr().out


def test_a_task_with_one_class_is_refused_before_training(tmp_path, tiny_bert, monkeypatch):
    (tmp_path / "one_class.py").write_text(
        "def task(seed):\n    return {'train': [(f'word {i}', 1) for i in range(8)], 'test': [('a', 1), ('b', 1)]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("trained on a task with one class"))
    cfg = apply_overrides(small_config(tmp_path, tiny_bert), ["--config.task=one_class:task"], experiment.OPEN_SECTIONS)
    cfg.task_options = {}
    with pytest.raises(ValueError, match="every train example has label 1; weak-to-strong needs both classes"):
        experiment.run_experiment(cfg)


from w2s.train import train as _real_train  # noqa: E402


def test_killed_stage_resumes_to_the_uninterrupted_result(tmp_path, tiny_bert, monkeypatch):
    longer = ("--config.losses=xent,", "--config.task_options.n_train=128")  # 4 steps per stage
    reference = experiment.run_experiment(small_config(tmp_path / "ref", tiny_bert, *longer))[0]

    class Killed(Exception):
        pass

    def killed_in_ceiling(*args, **kwargs):
        if kwargs["desc"].startswith("ceiling"):
            kwargs["evaluate"] = lambda model: (_ for _ in ()).throw(Killed())  # at eval_every=2
        return _real_train(*args, **kwargs)

    cfg = small_config(tmp_path / "run", tiny_bert, *longer, "--config.strong.train.eval_every=3")
    monkeypatch.setattr(stages, "train", killed_in_ceiling)
    with pytest.raises(Killed):
        experiment.run_experiment(cfg)
    run_dir = tmp_path / "run" / "results" / "seed_0"
    assert (run_dir / "weak.json").exists() and (run_dir / "weak_labels.npz").exists()  # nothing lost
    assert not (run_dir / "ceiling.json").exists()
    assert any((tmp_path / "run" / "ckpt" / "quickstart" / "seed_0" / "ceiling").iterdir())
    monkeypatch.setattr(stages, "train", _real_train)
    resumed = experiment.run_experiment(cfg)[0]
    assert resumed["accuracy"] == reference["accuracy"]


def test_stage_killed_while_labelling_resumes_from_its_last_periodic_save(tmp_path, tiny_bert, monkeypatch):
    """keep_checkpoints=False (the quickstart's): a stage's finished state is not saved, only every
    checkpoint_every steps; killed after training, the stage redoes the steps after step 4 of 6."""
    from w2s.checkpoint import StageCheckpointer, finish_saves

    weak = ("--config.weak.train.epochs=3", "--config.weak.train.checkpoint_every=4", "--config.weak.train.log_every=1")
    experiments = {}
    for name in ("reference", "killed"):
        experiments[name] = experiment.Experiment(small_config(tmp_path / name, tiny_bert, *weak), 0)
        experiments[name].run_dir.mkdir(parents=True)
    expected = experiments["reference"].run_weak()

    class Killed(Exception):
        pass

    def killed(*args):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(stages.Stages, "_save_labels", killed)
        with pytest.raises(Killed):
            experiments["killed"].run_weak()
    finish_saves()
    saved = StageCheckpointer(experiments["killed"].ckpt_dir / "weak", save_every=4)
    assert saved.latest_step() == 4  # not 6: the finished state was not written
    saved.close()
    resumed = experiment.Experiment(small_config(tmp_path / "killed", tiny_bert, *weak), 0)
    record = resumed.run_weak()
    assert record["test_accuracy"] == expected["test_accuracy"]
    losses = [[r["loss"] for r in rec["history"] if "loss" in r] for rec in (record, expected)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    for got, want in zip(resumed.labels("weak"), experiments["reference"].labels("weak")):
        np.testing.assert_array_equal(got, want)


def test_a_finished_stage_of_other_settings_is_refused_naming_its_leaf_keys(tmp_path, tiny_bert):
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,")
    run_dir = experiment.Experiment(cfg, 0).run_dir
    run_dir.mkdir(parents=True)
    experiment.Experiment(cfg, 0)._check_config()
    changed = apply_overrides(cfg, ["--config.strong.train.lr=0.5"])
    experiment.Experiment(changed, 0)._check_config()  # nothing finished yet: the new config is taken
    for stage in ("weak", "ceiling", "student_xent"):
        (run_dir / f"{stage}.json").write_text("{}")
    with pytest.raises(ConfigError) as refused:
        experiment.Experiment(cfg, 0)._check_config()
    message = str(refused.value)
    assert "ceiling (strong.train.lr: 0.5 -> 0.0001); student_xent (strong.train.lr: 0.5 -> 0.0001)" in message
    assert "weak (" not in message and "strong'" not in message
    with pytest.raises(ConfigError, match=r"settings: student_xent \(weak.num_layers: 1 -> 0\); weak \(weak.num_layers: 1 -> 0\)\."):
        experiment.Experiment(apply_overrides(changed, ["--config.weak.num_layers=0"]), 0)._check_config()
    # Runtime keys, the name, and options of a loss no finished stage used may change.
    experiment.Experiment(apply_overrides(changed, ["--config.seeds=0,1,2", "--config.name=other",
                                                  "--config.loss_options.aux_conf.alpha_max=0.5"]), 0)._check_config()


def test_a_run_folder_written_before_a_key_existed_is_reused_at_that_keys_default(tmp_path, tiny_bert):
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,")
    run_dir = experiment.Experiment(cfg, 0).run_dir
    run_dir.mkdir(parents=True)
    experiment.Experiment(cfg, 0)._check_config()
    old = json.loads((run_dir / "config.json").read_text())
    for role in ("weak", "strong"):  # as written before train.remat and train.optimizer were added
        del old[role]["train"]["remat"], old[role]["train"]["optimizer"]
    (run_dir / "config.json").write_text(json.dumps(old))
    for stage in ("weak", "ceiling", "student_xent"):
        (run_dir / f"{stage}.json").write_text("{}")
    experiment.Experiment(cfg, 0)._check_config()  # the defaults: nothing changed
    (run_dir / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"ceiling \(strong.train.remat: 'none' -> 'block'\)"):
        experiment.Experiment(apply_overrides(cfg, ["--config.strong.train.remat=block"]), 0)._check_config()


def test_changing_the_strong_model_keeps_the_weak_stage_and_restarts_the_strong_ones(tmp_path, tiny_bert, monkeypatch,
                                                                                       capsys):
    class Killed(Exception):
        pass

    def killed_in_ceiling(*args, **kwargs):
        if kwargs["desc"].startswith("ceiling"):
            kwargs["evaluate"] = lambda model: (_ for _ in ()).throw(Killed())  # at step 3 of 4, saved
        return _real_train(*args, **kwargs)

    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,", "--config.task_options.n_train=128",
                       "--config.strong.train.eval_every=3")
    monkeypatch.setattr(stages, "train", killed_in_ceiling)
    with pytest.raises(Killed):
        experiment.run_experiment(cfg)
    ceiling_ckpt = tmp_path / "ckpt" / "quickstart" / "seed_0" / "ceiling"
    assert any(ceiling_ckpt.iterdir())

    trained = []

    def spy(*args, **kwargs):
        trained.append(kwargs["desc"])
        assert not ceiling_ckpt.exists() or not any(ceiling_ckpt.iterdir())  # none of the old strong model's steps
        return _real_train(*args, **kwargs)

    monkeypatch.setattr(stages, "train", spy)
    (results,) = experiment.run_experiment(apply_overrides(cfg, ["--config.strong.train.lr=3e-4"]))
    assert trained == ["ceiling (seed 0)", "student_xent (seed 0)"]  # the weak stage is reused
    assert "ceiling: an unfinished stage of other settings (strong.train.lr)" in capsys.readouterr().out
    assert results["config"]["strong"]["train"]["lr"] == 3e-4


@pytest.mark.parametrize("override, message", [
    ("--config.strong.model={missing}", "config.strong.model: model folder {missing} does not exist"),
    ("--config.strong.num_layers=7", "config.strong.num_layers is 7; {model} has layers 0 to 2"),
    ("--config.strong.pooling=max", "config.strong.pooling must be None"),
    ("--config.task=no_such_module:fn", "cannot import module 'no_such_module'"),
])
def test_every_model_and_the_task_are_checked_before_any_stage_trains(tmp_path, tiny_bert, monkeypatch, override,
                                                                      message):
    missing = tmp_path / "no_such_model"
    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("a stage trained before the inputs were checked"))
    cfg = small_config(tmp_path, tiny_bert, override.format(missing=missing))
    with pytest.raises(ConfigError, match=re.escape(message.format(missing=missing, model=tiny_bert))):
        experiment.run_experiment(cfg)


def test_bad_input_gets_one_clear_line(tmp_path, tiny_bert, capsys):
    config = ROOT / "experiments" / "quickstart.py"
    cases = [
        (["--config.task=wordnet_lving"], "wordnet_living"),
        (["--config.weak.model=no-such-model"], "minilm-l3, mpnet-base"),
        ([f"--config.weak.model={tmp_path / 'missing'}"], str(tmp_path / "missing")),
        (["--config.task_options.n_train=200000"], "WordNet has"),
        (["--config.strong.train.lrr=1"], "strong.train.lr"),
    ]
    for overrides, message in cases:
        code = main(["run", str(config), f"--config.output_dir={tmp_path / 'out'}",
                     f"--config.checkpoint_dir={tmp_path / 'ck'}", *overrides])
        err = capsys.readouterr().err
        assert code == 2, overrides
        assert message in err and "Traceback" not in err, err


def test_named_students_share_the_weak_and_ceiling_stages(tmp_path, tiny_bert, monkeypatch):
    """Variants of a loss are students of one run: the weak model and ceiling train once, every
    student is filed and tabled by its name, and its evaluations record its agreement with the
    weak labels and with the truth."""
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,aux_conf_slow", "--config.strong.train.eval_every=1")
    cfg.loss_options.aux_conf_slow = dict(loss="aux_conf", warmup_frac=1.0)
    calls = []
    monkeypatch.setattr(stages, "train", lambda *a, **k: calls.append(k["desc"]) or _real_train(*a, **k))
    (results,) = experiment.run_experiment(cfg)
    assert calls == ["weak (seed 0)", "ceiling (seed 0)", "student_xent (seed 0)", "student_aux_conf_slow (seed 0)"]
    assert set(results["pgr"]) == {"xent", "aux_conf_slow"}
    record = json.loads((tmp_path / "results" / "seed_0" / "student_aux_conf_slow.json").read_text())
    evaluations = [r for r in record["history"] if "test_accuracy" in r]
    assert evaluations and all(0 <= r[k] <= 1 for r in evaluations
                               for k in ("agree_weak", "agree_truth", "hard_agree_weak", "hard_agree_truth"))
    ceiling = json.loads((tmp_path / "results" / "seed_0" / "ceiling.json").read_text())
    assert not any("agree_weak" in r for r in ceiling["history"])  # trained on the truth: nothing to compare


def test_a_student_that_is_no_loss_must_name_its_loss(tmp_path, tiny_bert):
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,aux_conf_slow")
    with pytest.raises(ConfigError, match=r"config.losses: .*a variant names its loss: loss_options.aux_conf_slow = dict\(loss="):
        experiment.validate(cfg)
    cfg.loss_options.aux_conf_slow = dict(loss="aux_conf", warmup_fraction=1.0)
    with pytest.raises(ConfigError, match="warmup_fraction"):
        experiment.validate(cfg)


def test_a_variant_defined_and_not_trained_stays_checked(tmp_path, tiny_bert):
    """A config may define named variants and train a subset (--config.losses=xent,): each variant's
    options still bind, and a key that is neither a loss nor a variant is refused."""
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,")
    cfg.loss_options.aux_conf_slow = dict(loss="aux_conf", warmup_frac=1.0)
    experiment.validate(cfg)
    cfg.loss_options.aux_conf_slow.warmup_fraction = 1.0
    with pytest.raises(ConfigError, match="config.loss_options.aux_conf_slow: .*warmup_fraction"):
        experiment.validate(cfg)
    del cfg.loss_options["aux_conf_slow"]
    cfg.loss_options.aux_cnof = dict(alpha_max=0.5)
    with pytest.raises(ConfigError, match="unknown key.*'aux_cnof' \\(did you mean 'aux_conf'"):
        experiment.validate(cfg)


def test_choose_epochs_runs_the_pipeline_on_held_out_examples_and_picks_the_best(tmp_path, tiny_bert, capsys):
    spec = importlib.util.spec_from_file_location("choose_epochs", ROOT / "experiments" / "choose_epochs.py")
    choose_epochs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(choose_epochs)
    args = ["--out", str(tmp_path / "choice"), "--weak_epochs", "1,2", "--strong_epochs", "1,2", "--n_held_out", "8",
            *small_overrides(tmp_path, tiny_bert)]
    with pytest.raises(ConfigError, match="--config.task_options.task=<task>"):
        choose_epochs.main(args)
    choice = choose_epochs.main([*args, "--config.task_options.task=wordnet_living"])
    folders = sorted(p.name for p in (tmp_path / "choice").iterdir() if p.name.startswith("weak"))
    assert folders == sorted({"weak1_strong1", "weak2_strong1", f"weak{choice['weak_epochs']:g}_strong2"})
    read = lambda folder: json.loads((tmp_path / "choice" / folder / "seed_0" / "results.json").read_text())
    weak = {e: read(f"weak{e}_strong1")["accuracy"]["weak"] for e in (1, 2)}
    assert choice["weak_epochs"] == (2 if weak[2] > weak[1] else 1)
    student = {e: read(f"weak{choice['weak_epochs']:g}_strong{e}")["accuracy"]["student"]["xent"] for e in (1, 2)}
    assert choice["strong_epochs"] == (2 if student[2] > student[1] else 1)
    result = read("weak1_strong1")
    assert result["num_examples"]["test"] == 8 and result["task"] == "held_out"  # held out, not the test split
    assert result["test_split"] != fingerprint(load_task("wordnet_living", seed=0, n_train=64, n_test=32).test)
    assert json.loads((tmp_path / "choice" / "choice.json").read_text())["strong_epochs"] == choice["strong_epochs"]
    assert f"chosen: --config.weak.train.epochs={choice['weak_epochs']:g}" in capsys.readouterr().out
