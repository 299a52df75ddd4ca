"""Sweeps on a ladder of tiny random BERTs (MiniLM's tokenizer) and real WordNet data: the plan, each
method's stages, ground-truth stages shared across pairs, resume, linear probes, the plots and errors."""
import dataclasses
import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from w2s import sharding, stages
from w2s.sweeps import ladders, sweep
from w2s.stages import GroundTruth, LabelsOf
from w2s.results import metrics
from w2s.cli import main
from w2s.config import ConfigError, apply_overrides, load_config_file
from w2s.models import build_backbone
from w2s.sweeps.results_table import ResultsTable, load_records
from w2s.train import train as real_train

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("tiny-l0-mean", "tiny-l1", "tiny-l2")


@pytest.fixture(scope="module")
def tiny_ladder(tiny_bert):
    ladders.register("tiny", [
        ladders.Rung("tiny-l0-mean", str(tiny_bert), 1e6, num_layers=0, pooling="mean"),
        ladders.Rung("tiny-l1", str(tiny_bert), 2e6, num_layers=1),
        ladders.Rung("tiny-l2", str(tiny_bert), 3e6, num_layers=2),
    ])
    return TINY


def tiny_config(tmp_path, *overrides):
    cfg = load_config_file(ROOT / "experiments" / "sweep_offline.py")
    return apply_overrides(cfg, [
        f"--config.models={','.join(TINY)}", "--config.seeds=0,", "--config.methods=xent,",
        "--config.task_options.n_train=64", "--config.task_options.n_test=32",
        "--config.method_options.early_stop.evals=2",
        *[f"--config.{t}.{k}" for t in ("train", "probe_train")
          for k in ("batch_size=8", "micro_batch_size=8", "epochs=1", "checkpoint_every=0", "eval_batch_size=32")],
        "--config.train.lr=1e-3", "--config.probe_train.epochs=4",
        f"--config.output_dir={tmp_path / 'sweep'}", f"--config.checkpoint_dir={tmp_path / 'ckpt'}",
        *overrides,
    ])


def recording_train(monkeypatch):
    """Every training's stage name, in order, and its targets."""
    calls, targets = [], {}

    def record(*args, **kwargs):
        calls.append(kwargs["desc"].split(" (seed")[0])
        targets[calls[-1]] = np.asarray(args[2])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(stages, "train", record)
    return calls, targets


def test_minilm_rungs_count_their_parameters():
    for label in ladders.ladder("minilm"):
        rung = ladders.rung(label)
        model = nnx.eval_shape(lambda: build_backbone(rung.model, num_layers=rung.num_layers, pretrained=False))
        assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == rung.params, label
    assert ladders.family("qwen2.5-7b") == "qwen2.5"
    with pytest.raises(ValueError, match="unknown rung 'pythia-12b'.*Known rungs: .*minilm-l0-mean"):
        ladders.rung("pythia-12b")


def test_plan_pairs_weak_below_strong_and_chains_the_methods(tiny_ladder, tmp_path):
    cfg = tiny_config(tmp_path, "--config.methods=xent,bootstrap,relabel,early_stop",
                      "--config.method_options.relabel.rounds=2")
    runs = sweep.plan(cfg)
    assert sorted({(r.weak, r.strong) for r in runs}) == [
        ("tiny-l0-mean", "tiny-l1"), ("tiny-l0-mean", "tiny-l2"), ("tiny-l1", "tiny-l2")]
    by_key = {(r.weak, r.strong, r.method): r for r in runs}
    assert ("tiny-l0-mean", "tiny-l1", "bootstrap") not in by_key  # no rung between: nothing to bootstrap through
    boot = by_key[("tiny-l0-mean", "tiny-l2", "bootstrap")].steps
    assert [(s.stage, s.model, s.source) for s in boot] == [
        ("tiny-l0-mean/weak", "tiny-l0-mean", GroundTruth("a")), ("tiny-l2/ceiling", "tiny-l2", GroundTruth("b")),
        ("tiny-l0-mean_to_tiny-l1/xent", "tiny-l1", LabelsOf("tiny-l0-mean/weak")),
        ("tiny-l0-mean_to_tiny-l2/bootstrap", "tiny-l2", LabelsOf("tiny-l0-mean_to_tiny-l1/xent"))]
    relabel = by_key[("tiny-l1", "tiny-l2", "relabel")].steps[2:]
    assert [(s.stage, s.source) for s in relabel] == [
        ("tiny-l1_to_tiny-l2/xent", LabelsOf("tiny-l1/weak")),
        ("tiny-l1_to_tiny-l2/relabel_1", LabelsOf("tiny-l1_to_tiny-l2/xent")),
        ("tiny-l1_to_tiny-l2/relabel_2", LabelsOf("tiny-l1_to_tiny-l2/relabel_1"))]
    early = by_key[("tiny-l1", "tiny-l2", "early_stop")].steps[-1]
    assert (early.source, early.holdout_frac, early.evals) == (LabelsOf("tiny-l1/weak"), 0.2, 2)
    with_self = sweep.plan(apply_overrides(cfg, ["--config.self_pairs=true", "--config.seeds=0,1"]))
    assert len({(r.weak, r.strong) for r in with_self}) == 6 and {r.seed for r in with_self} == {0, 1}


def test_named_loss_variants_are_methods(tiny_ladder, tmp_path):
    """aux_conf at alpha_max 0.5 beside the 0.75 default: one loss_options entry, then a method."""
    cfg = tiny_config(tmp_path, "--config.methods=aux_conf,aux_conf_a50,reverse_xent")
    cfg.loss_options.aux_conf_a50 = dict(loss="aux_conf", alpha_max=0.5)
    students = {r.method: r.steps[-1] for r in sweep.plan(cfg) if (r.weak, r.strong) == ("tiny-l1", "tiny-l2")}
    assert {m: (s.stage, s.loss) for m, s in students.items()} == {
        "aux_conf": ("tiny-l1_to_tiny-l2/aux_conf", "aux_conf"),
        "aux_conf_a50": ("tiny-l1_to_tiny-l2/aux_conf_a50", "aux_conf_a50"),
        "reverse_xent": ("tiny-l1_to_tiny-l2/reverse_xent", "reverse_xent")}
    cfg.loss_options.aux_conf_a50 = dict(loss="aux_conf", alpha=0.5)
    with pytest.raises(ConfigError, match="config.loss_options.aux_conf_a50: .*Did you mean 'alpha_max'"):
        sweep.validate(cfg)


def test_sweep_shares_ground_truth_resumes_and_plots(tiny_ladder, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, "--config.methods=xent,bootstrap,relabel")
    calls, targets = recording_train(monkeypatch)
    runs = sweep.run_sweep(cfg)
    # Each stage trains once: ground truth once per model however many pairs use it, the xent
    # student once though bootstrap and relabel start from it.
    assert sorted(c for c in calls if "_to_" not in c) == [
        "tiny-l0-mean/weak", "tiny-l1/ceiling", "tiny-l1/weak", "tiny-l2/ceiling"]
    assert sorted(calls) == sorted({s.stage for r in runs for s in r.steps})
    run_dir = tmp_path / "sweep" / "wordnet_living" / "seed_0"
    with np.load(run_dir / "tiny-l0-mean_to_tiny-l1" / "xent_labels.npz") as f:  # bootstrap's mid labels B ...
        np.testing.assert_array_equal(targets["tiny-l0-mean_to_tiny-l2/bootstrap"], f["probs"])  # ... for the strong
    with np.load(run_dir / "tiny-l1_to_tiny-l2" / "xent_labels.npz") as f:
        np.testing.assert_array_equal(targets["tiny-l1_to_tiny-l2/relabel_1"], f["probs"])
    with np.load(run_dir / "tiny-l0-mean" / "weak_labels.npz") as f:
        np.testing.assert_array_equal(targets["tiny-l0-mean_to_tiny-l2/xent"], f["probs"])

    rows = ResultsTable(tmp_path / "sweep" / "results.sqlite").rows()
    assert {(r["task"], r["weak"], r["strong"], r["method"], r["seed"]) for r in rows} == {r.key for r in runs}
    for row in rows:
        weak = json.loads((run_dir / row["weak"] / "weak.json").read_text())
        assert row["weak_acc"] == weak["test_accuracy"] and row["strong_params"] > row["weak_params"]
        assert row["details"]["stages"][-1].startswith(f"{row['weak']}_to_{row['strong']}/")

    calls.clear()
    sweep.run_sweep(cfg)  # every run is in the table: nothing trains
    assert calls == []
    with ResultsTable(tmp_path / "sweep" / "results.sqlite")._connect() as db:
        db.execute("DELETE FROM runs WHERE method = 'relabel'")
    (run_dir / "tiny-l1_to_tiny-l2" / "relabel_1.json").unlink()
    sweep.run_sweep(cfg)
    assert calls == ["tiny-l1_to_tiny-l2/relabel_1"]  # the rest of its stages are on disk
    def values(rows):
        return [{k: v for k, v in r.items() if k not in ("updated_at", "seconds")} for r in rows]

    assert values(ResultsTable(tmp_path / "sweep" / "results.sqlite").rows()) == values(rows)  # deterministic

    capsys.readouterr()
    assert main(["plot", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "median PGR per seed [95% CI]" in out
    for row in metrics.summarize(load_records(tmp_path / "sweep")):  # each pair: PGR rows, or listed as having none
        pair = f"{row['weak_model']} -> {row['strong_model']}"
        assert (f"no PGR (the strong ceiling is not above the weak model): {row['task']} {pair}" in out) != row["has_pgr"]
    for name in ("accuracy.png", "pgr.png", "median_pgr.png", "pgr_vs_size.png", "pgr_vs_strong.png"):
        assert (tmp_path / "sweep" / name).read_bytes().startswith(b"\x89PNG")


def test_early_stop_reports_the_evaluation_that_agrees_best_with_held_out_weak_labels(tiny_ladder, tmp_path):
    cfg = tiny_config(tmp_path, "--config.models=tiny-l0-mean,tiny-l1", "--config.methods=early_stop",
                      "--config.train.epochs=4", "--config.method_options.early_stop.evals=4")
    sweep.run_sweep(cfg)
    record = json.loads((tmp_path / "sweep" / "wordnet_living" / "seed_0" / "tiny-l0-mean_to_tiny-l1"
                         / "early_stop.json").read_text())
    evaluations = [h for h in record["history"] if "holdout_agreement" in h]
    # 26 of split B's 32 examples train (6 held out), 4 epochs in batches of 8: 13 steps, evaluated
    # every 13 // 4 = 3 steps and at the end.
    assert [h["step"] for h in evaluations] == [3, 6, 9, 12]
    final = {"step": 13, "holdout_agreement": record["holdout_agreement"], "test_accuracy": record["final_test_accuracy"]}
    best = max(evaluations + [final], key=lambda h: h["holdout_agreement"])
    assert (record["selected_step"], record["test_accuracy"]) == (best["step"], best["test_accuracy"])


def test_linear_probe_embeds_each_text_once_and_trains_only_a_head(tiny_ladder, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "--config.models=tiny-l0-mean,tiny-l2", "--config.methods=xent,aux_conf",
                      "--config.mode=probe", "--config.seeds=0,1")
    embedded, trained = [], []
    real_features = stages.predict_features
    monkeypatch.setattr(stages, "predict_features",
                        lambda m, rows, *a, **k: embedded.append(list(rows.texts)) or real_features(m, rows, *a, **k))

    def record(model, *args, **kwargs):
        trained.append(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(stages, "train", record)
    sweep.run_sweep(cfg)
    texts = {seed: {t for t, _ in (lambda d: d.train + d.test)(stages.load_task("wordnet_living", seed=seed,
                                                                                  **cfg.task_options))}
             for seed in (0, 1)}
    # Each model embeds a seed's texts in one pass, and the second seed only those the first had not.
    assert [len(e) for e in embedded] == [len(texts[0]), len(texts[0]), len(texts[1] - texts[0]), len(texts[1] - texts[0])]
    assert all(len(e) == len(set(e)) for e in embedded)
    assert trained == [32 * 2 + 2] * 8  # a head on the tiny BERT's 32 features, nothing else
    rows = ResultsTable(tmp_path / "sweep" / "results.sqlite").rows()
    assert len(rows) == 4 and all(0 <= r["student_acc"] <= 1 for r in rows)
    sweep.run_sweep(apply_overrides(cfg, ["--config.methods=xent,aux_conf,reverse_xent"]))  # a new method...
    assert len(embedded) == 4  # ...reads every feature from <output_dir>/features
    with pytest.raises(ConfigError, match=r"keys \['rungs.tiny-l0-mean.mode', 'rungs.tiny-l2.mode'\] differ"):
        sweep.run_sweep(apply_overrides(cfg, ["--config.mode=finetune"]))  # probes never mix with finetuning


def test_changed_settings_are_refused_and_new_rungs_are_not(tiny_ladder, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "--config.models=tiny-l0-mean,tiny-l1")
    monkeypatch.setattr(stages.Stages, "stage", lambda *a, **k: {"test_accuracy": 0.5, "seconds": 0.0,
                                                                   "weak_label_accuracy": 0.5})
    sweep.run_sweep(cfg)
    sweep.run_sweep(apply_overrides(cfg, [f"--config.models={','.join(TINY)}", "--config.methods=xent,product"]))
    # A named variant is a new method, and a sweep's name only a label: both may be added to a folder...
    variant = ml_collections.ConfigDict(cfg.to_dict())
    variant.name, variant.methods = "renamed", ("xent", "aux_late")
    variant.loss_options.aux_late = dict(loss="aux_conf", delay_frac=0.5)
    sweep.run_sweep(variant)
    # ...but a variant trained there before keeps its options.
    with pytest.raises(ConfigError, match=r"keys \['loss_options.aux_late.delay_frac'\] differ"):
        sweep.run_sweep(apply_overrides(variant, ["--config.loss_options.aux_late.delay_frac=0.25"]))
    with pytest.raises(ConfigError, match=r"keys \['rungs.tiny-l0-mean.train.lr', 'rungs.tiny-l1.train.lr', 'train.lr'\] differ"):
        sweep.run_sweep(apply_overrides(cfg, ["--config.train.lr=0.5"]))
    monkeypatch.setitem(ladders.RUNGS._entries, "tiny-l1", dataclasses.replace(ladders.rung("tiny-l1"), num_layers=2))
    with pytest.raises(ConfigError, match=r"keys \['rungs.tiny-l1.num_layers'\] differ"):
        sweep.run_sweep(cfg)
    # A sweep folder written before train.remat and train.optimizer existed ran as their defaults do.
    path = tmp_path / "sweep" / "sweep_config.json"
    stored = json.loads(path.read_text())
    for section in (stored["train"], stored["probe_train"], *(rung["train"] for rung in stored["rungs"].values())):
        del section["remat"], section["optimizer"]
    stored["name"] = "written when a folder kept its sweep's name"
    path.write_text(json.dumps(stored))
    monkeypatch.undo()
    monkeypatch.setattr(stages.Stages, "stage", lambda *a, **k: {"test_accuracy": 0.5, "seconds": 0.0,
                                                                   "weak_label_accuracy": 0.5})
    sweep.run_sweep(apply_overrides(cfg, ["--config.methods=xent,aux_conf,product"]))
    # So does a config that sets a whole train section without them (as experiments/sweep_ladder.py does).
    cfg.train = {k: v for k, v in cfg.train.items() if k not in ("remat", "optimizer")}
    sweep.run_sweep(cfg)


def test_shipped_configs_print_their_plans_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stages.Stages, "stage", lambda *a, **k: pytest.fail("a dry run trained"))
    for name, runs in (("sweep_offline", 39), ("sweep_paper", 3915)):
        code = main(["sweep", str(ROOT / "experiments" / f"{name}.py"), "--dry_run",
                     f"--config.output_dir={tmp_path / name}"])
        out = capsys.readouterr().out
        assert code == 0 and f"{runs} runs, 0 done" in out, out[-500:]
        assert len(out.splitlines()) == runs + 4  # header, runs, a blank line, totals, the probed rungs
        assert not (tmp_path / name).exists()
    cfg = load_config_file(ROOT / "experiments" / "sweep_paper.py")
    assert {ladders.family(m) for m in cfg.models} == {"gpt2", "pythia", "qwen2.5"}


@pytest.mark.parametrize("override, message", [
    ("--config.methods=xent,distill", "unknown method(s) ['distill']"),
    ("--config.models=minilm-l0-mean,minilm-l7", "unknown rung 'minilm-l7'"),
    ("--config.method_options.early_stop.holdout_frac=1.5", "needs 0 < holdout_frac < 1"),
    ("--config.method_options.relabel.rounds=0", "rounds must be at least 1"),
    ("--config.seeds=", "config.seeds is empty"),
])
def test_bad_sweep_configs_get_one_clear_line(override, message, tmp_path, capsys):
    code = main(["sweep", str(ROOT / "experiments" / "sweep_offline.py"), "--dry_run", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_early_stop_needs_examples_on_both_sides(tiny_ladder, tmp_path):
    cfg = tiny_config(tmp_path)
    engine = stages.Stages("wordnet_living", cfg.task_options, 0, run_dir=tmp_path / "run", ckpt_dir=tmp_path / "ck",
                           mesh=sharding.make_mesh(-1, 1), loss_options=ml_collections.ConfigDict(),
                           keep_checkpoints=False)
    spec = stages.ModelSpec.from_config(ladders.rung("tiny-l1").spec(cfg.train))
    with pytest.raises(ValueError, match="leaves no examples"):
        engine.stage(spec, "s", stages.GT_B, holdout_frac=0.01, evals=1)
