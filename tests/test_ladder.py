"""The offline ladder of real models: its rungs, how a sweep resolves their modes (finetune the small
rungs, probe the large, or one mode for all), a sweep mixing the two on tiny random BERTs, the
feature cache, and the ladder experiment's plan and findings."""
import importlib.util

import jax
import numpy as np
import pytest
from flax import nnx

from tests.test_sweep import ROOT, tiny_config
from w2s import stages
from w2s.sweeps import ladders, sweep
from w2s.results import metrics
from w2s.config import ConfigError, apply_overrides
from w2s.models import build_backbone
from w2s.models.classifier import POOLINGS
from w2s.models.sources import SOURCES, fetched_dir, installed_dir
from w2s.probe import FeatureCache
from w2s.sweeps.results_table import ResultsTable, load_records
from w2s.train import TrainConfig
from w2s.train import train as real_train


def _experiment():
    spec = importlib.util.spec_from_file_location("sweep_ladder", ROOT / "experiments" / "sweep_ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        TrainConfig.from_config(r.spec(_experiment().get_config().train).train)  # its micro-batch divides the batch
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
    cfg = _experiment().get_config("bbc_topic")
    assert sweep.modes(cfg) == {label: ladders.rung(label).mode for label in ladders.ladder("offline")}
    for mode in ladders.MODES:  # one config finetunes every rung (a GPU), or probes every rung
        assert set(sweep.modes(apply_overrides(cfg, [f"--config.mode={mode}"])).values()) == {mode}
    with pytest.raises(ConfigError, match="config.mode must be one of"):
        sweep.validate(apply_overrides(cfg, ["--config.mode=all"]))


def test_the_ladder_experiment_plans_every_task_and_pair(tmp_path, capsys):
    _experiment().main(["--dry_run", "--seeds", "0", "--out", str(tmp_path)])
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
    cfg = tiny_config(tmp_path, f"--config.models={','.join(mixed_ladder)}", "--config.methods=xent,aux_conf,bootstrap",
                      "--config.mode=rungs")
    trained = {}

    def record(model, *args, **kwargs):
        trained[kwargs["desc"].split(" (seed")[0]] = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(stages, "train", record)
    sweep.run_sweep(cfg)
    head = 32 * 2 + 2
    assert trained["mixed-l0-mean/weak"] > 100 * head  # the embeddings finetuned
    assert {stage: n for stage, n in trained.items() if stage != "mixed-l0-mean/weak"} == dict.fromkeys(
        set(trained) - {"mixed-l0-mean/weak"}, head)  # every stage of a probed rung: the head alone
    records = load_records(tmp_path / "sweep")
    assert len(ResultsTable(tmp_path / "sweep" / "results.sqlite").rows()) == 3 * 2 + 1
    rows = metrics.summarize(records)
    findings = _experiment().findings(rows, {label: ladders.rung(label).params for label in mixed_ladder})
    assert findings[1].startswith("## wordnet_living (seeds 0)")
    assert any(line.startswith("- (1) the student beats its supervisor: **") for line in findings)
    summary = "\n".join(_experiment().summary(rows))
    assert "### wordnet_living (seeds 0)" in summary and "| xent |" in summary and "| bootstrap |" in summary


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
