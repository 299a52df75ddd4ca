"""The offline ladder of real models: its rungs, how a sweep resolves their modes (finetune the small
rungs, probe the large, or one mode for all), a sweep mixing the two on tiny random BERTs, the
feature cache, and the ladder experiment's plan and findings."""
import importlib.util
import json

import jax
import numpy as np
import pytest
from flax import nnx

from tests.test_sweep import ROOT, tiny_config
from w2s import stages
from w2s.cli import main
from w2s.config import ConfigError, apply_overrides, load_config_file
from w2s.sweeps import ladders, per_task, sweep
from w2s.models import build_backbone
from w2s.models.classifier import POOLINGS
from w2s.models.sources import SOURCES, fetched_dir, installed_dir
from w2s.probe import FeatureCache
from w2s.sweeps.results_table import ResultsTable
from w2s.train import TrainConfig
from w2s.train import train as real_train


def _ladder_config():
    return load_config_file(ROOT / "experiments" / "sweep_ladder.py")


def test_offline_ladder_climbs_the_real_models_smallest_first():
    labels = ladders.ladder("offline")
    rungs = [ladders.rung(label) for label in labels]
    assert [r.model for r in rungs] == ["minilm", "minilm-l3", "minilm", "mpnet-base", "smollm2-135m-instruct",
                                        "gemma3-270m", "qwen2.5-coder-0.5b-instruct"]
    assert all(r.model in SOURCES for r in rungs)
    assert [r.params for r in rungs] == sorted(r.params for r in rungs)
    assert rungs[0].num_layers == 0  # the embeddings alone
    for r in rungs:
        assert r.pooling in POOLINGS and r.mode in ladders.MODES and dict(r.train)["lr"] > 0
        TrainConfig.from_config(r.spec(_ladder_config().sweep.train).train)  # its micro-batch divides the batch
    assert [r.mode for r in rungs] == ["finetune"] * 2 + ["probe"] * 5


def test_offline_rungs_count_their_backbones_parameters():
    for label in ladders.ladder("offline"):
        rung = ladders.rung(label)
        if fetched_dir(rung.model) is None and installed_dir(rung.model) is None:
            pytest.skip(f"{rung.model} is not fetched (w2s models fetch {rung.model})")
        model = nnx.eval_shape(lambda: build_backbone(rung.model, num_layers=rung.num_layers, pretrained=False))
        assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == rung.params, label


def test_a_rung_mode_must_be_known():
    with pytest.raises(ValueError, match="mode must be one of"):
        ladders.Rung("x", "minilm", 1.0, mode="distill")


def test_config_mode_resolves_each_rung_or_all_alike(tmp_path):
    cfg = per_task.task_sweep(_ladder_config(), "bbc_topic", 0)
    assert sweep.modes(cfg) == {label: ladders.rung(label).mode for label in ladders.ladder("offline")}
    for mode in ladders.MODES:  # one config finetunes every rung (a GPU), or probes every rung
        assert set(sweep.modes(apply_overrides(cfg, [f"--config.mode={mode}"])).values()) == {mode}
    with pytest.raises(ConfigError, match="config.mode must be one of"):
        sweep.validate(apply_overrides(cfg, ["--config.mode=all"]))
    ladder = apply_overrides(_ladder_config(), ["--config.sweep.mode=finetune"], per_task.OPEN_SECTIONS)
    assert set(sweep.modes(per_task.task_sweep(ladder, "bbc_topic", 0)).values()) == {"finetune"}


def test_the_ladder_experiment_plans_every_task_and_pair(tmp_path, capsys):
    assert main(["run", str(ROOT / "experiments" / "sweep_ladder.py"), "--dry_run", "--config.seeds=0,",
                 f"--config.output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    # 21 pairs x 5 losses, and bootstrap for the 15 pairs with a rung between, per task.
    assert out.count("120 runs, 0 done") == 3
    assert "linear probes: all-minilm-l6, mpnet-base, smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b" in out
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def mixed_ladder(tiny_bert):
    ladders.register("tiny-mixed", [
        ladders.Rung("mixed-l0-mean", str(tiny_bert), 1e6, num_layers=0, pooling="mean"),
        ladders.Rung("mixed-l1", str(tiny_bert), 2e6, num_layers=1, pooling="mean", mode="probe"),
        ladders.Rung("mixed-l2", str(tiny_bert), 3e6, num_layers=2, pooling="mean", mode="probe"),
    ])
    return ladders.ladder("tiny-mixed")


def test_a_sweep_finetunes_small_rungs_and_probes_large_ones(mixed_ladder, tmp_path, monkeypatch):
    """Through the per-task runner the ladder experiment uses: the task's own sizes and max_length,
    then the report with the findings."""
    tiny = tiny_config(tmp_path, f"--config.models={','.join(mixed_ladder)}", "--config.methods=xent,aux_conf,bootstrap",
                       "--config.mode=rungs", "--config.task_options.n_train=16")
    cfg = per_task.default_config()
    cfg.sweep = {k: v for k, v in tiny.items() if k not in per_task.PER_RUN}
    cfg.tasks, cfg.seeds, cfg.name, cfg.output_dir = ("wordnet_living",), (0,), "tiny_ladder", str(tmp_path / "ladder")
    cfg.task_settings = {"wordnet_living": {"task_options": {"n_train": 64}, "max_length": 12},
                         "bbc_topic": {"max_length": 64}}  # a task left out: its settings unused
    trained = {}

    def record(model, *args, **kwargs):
        trained[kwargs["desc"].split(" (seed")[0]] = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(stages, "train", record)
    per_task.run_sweeps_per_task(cfg)
    head = 32 * 2 + 2
    assert trained["mixed-l0-mean/weak"] > 100 * head  # the embeddings finetuned
    assert {stage: n for stage, n in trained.items() if stage != "mixed-l0-mean/weak"} == dict.fromkeys(
        set(trained) - {"mixed-l0-mean/weak"}, head)  # every stage of a probed rung: the head alone
    folder = tmp_path / "ladder" / "wordnet_living"
    assert len(ResultsTable(folder / "results.sqlite").rows()) == 3 * 2 + 1
    stored = json.loads((folder / "sweep_config.json").read_text())
    assert stored["task_options"]["n_train"] == 64 and stored["train"]["max_length"] == 12
    assert stored["probe_train"]["max_length"] == 12
    findings = (tmp_path / "ladder" / "findings.md").read_text()
    assert "## wordnet_living (seeds 0)" in findings and "- (1) the student beats its supervisor: **" in findings
    assert "| finding | wordnet_living |" in findings and "| (3) `aux_conf` gain over `xent`, largest vs" in findings
    summary = (tmp_path / "ladder" / "summary.md").read_text()
    assert "### wordnet_living (seeds 0)" in summary and "| xent |" in summary and "| bootstrap |" in summary
    assert (tmp_path / "ladder" / "tables.md").exists() and (tmp_path / "ladder" / "pgr_vs_strong.png").exists()
    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("a finished run trained again"))
    per_task.run_sweeps_per_task(cfg)  # resumes: every run is in the table


def test_task_settings_are_checked_by_name():
    cfg = per_task.default_config()
    with pytest.raises(ConfigError, match=r"config.task_settings.wordnet_living: unknown key\(s\) 'max_lenght'"):
        per_task.run_sweeps_per_task(cfg, ["--config.task_settings.wordnet_living.max_lenght=4"], dry_run=True)
    with pytest.raises(ConfigError, match="task_settings.wordnet_living.task_options"):
        per_task.run_sweeps_per_task(cfg, ["--config.task_settings.wordnet_living.task_options.n_trian=4"],
                                     dry_run=True)


def test_feature_cache_embeds_only_texts_it_has_not_seen(tmp_path):
    cache, calls = FeatureCache(tmp_path), []

    def embed(texts):
        calls.append(list(texts))
        return np.asarray([[len(t), t.count("a")] for t in texts], np.float32)

    first = cache.features(("m", 1), {"a": ["bb", "a"], "test": ["aaa", "bb"]}, embed)
    assert calls == [["a", "bb", "aaa"]]  # unique, shortest first
    np.testing.assert_array_equal(first["test"], [[3, 3], [2, 0]])
    again = FeatureCache(tmp_path).features(("m", 1), {"b": ["a", "cccc"]}, embed)  # from disk, plus one new
    assert calls[1:] == [["cccc"]]
    np.testing.assert_array_equal(again["b"], [[1, 1], [4, 0]])
    FeatureCache(tmp_path).features(("m", 2), {"a": ["a"]}, embed)  # another backbone key: its own file
    assert calls[2:] == [["a"]] and len(list(tmp_path.glob("*.npz"))) == 2


def test_the_aux_conf_ladder_plans_every_variant_and_reports_it_against_xent(tmp_path, capsys):
    assert main(["run", str(ROOT / "experiments" / "aux_conf_ladder.py"), "--dry_run", "--config.seeds=0,",
                 f"--config.output_dir={tmp_path}"]) == 0
    assert capsys.readouterr().out.count("210 runs, 0 done") == 2  # 21 pairs x 10 students, BBC and tweets
    spec = importlib.util.spec_from_file_location("aux_conf_report", ROOT / "experiments" / "aux_conf_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    (tmp_path / "bbc_topic").mkdir()
    table = ResultsTable(tmp_path / "bbc_topic" / "results.sqlite")
    accs = {("minilm-embeddings", "a"): (0.70, 0.90), ("minilm-embeddings", "b"): (0.60, 0.70),
            ("minilm-l3", "b"): (0.80, 0.78)}  # (xent, aux_conf) test accuracy, seed 0
    for (weak, strong), pair in accs.items():
        for method, acc in zip(("xent", "aux_conf"), pair):
            table.put({"task": "bbc_topic", "weak": weak, "strong": strong, "method": method, "seed": 0,
                       "weak_acc": 0.6, "ceiling_acc": 0.9, "student_acc": acc, "pgr": None, "weak_params": 1,
                       "strong_params": 2, "seconds": 0.0,
                       "details": {"weak_label_accuracy": 0.6, "student": {"hard_agree_truth": acc + 0.05}}})
    lines = report.ladder_table(tmp_path).splitlines()
    aux_conf = next(line for line in lines if line.startswith("| aux_conf |"))
    # The weakest rung's two pairs gain 20 and 10 points (mean 15, the bootstrap over pairs between);
    # the other pair loses 2; hardened labels beat the weak labels by acc + 5 - 60 points.
    assert aux_conf.startswith("| aux_conf | +15.0 [+10.0, +20.0] (2 pairs) | +25.0 [+15.0, +35.0] | "
                               "-2.0 (1 pairs) | +23.0 |"), aux_conf
    # Weak labels near 0.5 and shifted: the argmax is right on half, a cut at their class share on all.
    folder = tmp_path / "bbc_topic" / "bbc_topic" / "seed_0" / "minilm-embeddings"
    folder.mkdir(parents=True)
    p1 = np.array([0.40, 0.42, 0.44, 0.46, 0.47, 0.48, 0.55, 0.60])  # class-1 share 0.4775
    np.savez(folder / "weak_labels.npz", probs=np.stack([1 - p1, p1], 1), labels=np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    row = report.weak_label_table(tmp_path).splitlines()[-1]
    assert row == "| bbc_topic | minilm-embeddings | 0 | 0.055 | 0.750 | 1.000 |", row
