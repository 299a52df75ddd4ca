"""Active learning: each strategy on hand-built scores, supervisor checks and labels files, the query
ledger, and the loop on a tiny random BERT (curve, resume after a kill without paying twice)."""
import dataclasses
import json
import pathlib

import ml_collections
import numpy as np
import pytest

from tests.test_pipeline import small_config
from w2s import experiment
from w2s.active_learning import active, strategies
from w2s.active_learning.active import ActiveConfig
from w2s.config import ConfigError, apply_overrides, load_config_file
from w2s.active_learning.strategies import Context, register_strategy, select
from w2s.active_learning.supervisor import Ledger, SupervisorError, ask, labels_file
from w2s.train import train as _real_train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def ctx(probs=None, ensemble=None, embeddings=None, labelled=None, k=1, n=6):
    probs = np.full((n, 2), 0.5) if probs is None else np.asarray(probs, float)
    n = len(probs)
    return Context(
        probs=probs, ensemble=np.repeat(probs[None], 3, 0) if ensemble is None else np.asarray(ensemble, float),
        embeddings=np.zeros((n, 2)) if embeddings is None else np.asarray(embeddings, float),
        labelled=np.zeros((0, 2)) if labelled is None else np.asarray(labelled, float),
        k=k, rng=np.random.default_rng(0),
    )


def two_class(p1):
    p1 = np.asarray(p1, float)
    return np.stack([1 - p1, p1], -1)


def test_uncertainty_picks_the_least_sure_first():
    c = ctx(two_class([0.9, 0.45, 0.02, 0.7, 0.51, 0.99]), k=3)
    assert select("entropy", c).tolist() == [4, 1, 3]
    assert select("margin", c).tolist() == [4, 1, 3]


def test_confident_picks_the_surest_of_each_predicted_class_in_turn():
    c = ctx(two_class([0.9, 0.45, 0.02, 0.7, 0.51, 0.99, 0.3]), k=5)
    # class 1 surest first: 5 (0.99), 0 (0.9), 3 (0.7), 4 (0.51); class 0: 2 (0.02), 6 (0.3), 1 (0.45)
    assert select("confident", c).tolist() == [2, 5, 6, 0, 1]
    one_sided = ctx(two_class([0.9, 0.8, 0.99, 0.6]), k=3)  # no class-0 prediction: surest class 1 first
    assert select("confident", one_sided).tolist() == [2, 0, 1]


def test_typical_takes_the_densest_example_of_the_largest_uncovered_clusters():
    rng = np.random.default_rng(0)
    # Blobs of 30, 50 and 40 points around 0, (5, 5) and (-5, -5); one labelled example covers the first.
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, -5.0]])
    emb = np.concatenate([rng.normal(m, 0.1, (n, 2)) for m, n in zip(centres, (30, 50, 40))])
    chosen = select("typical", ctx(np.full((len(emb), 2), 0.5), embeddings=emb, labelled=[[0.0, 0.0]], k=2))
    assert np.abs(emb[chosen] - centres[[1, 2]]).max() < 0.1  # the larger cluster first, each near its middle
    blob = emb[30:80]
    distances = np.linalg.norm(blob[:, None] - blob[None], axis=-1)
    assert chosen[0] == 30 + np.argmin(np.sort(distances, 1)[:, 1:21].mean(1))  # the densest of its 50


def test_committee_and_bald_prefer_confident_disagreement():
    # Members: 0 agree and are sure; 1 each unsure (high entropy, no disagreement);
    # 2 each sure but split; 3 mildly split.
    members = np.stack([two_class([0.99, 0.5, 0.99, 0.6]), two_class([0.99, 0.5, 0.01, 0.4]),
                        two_class([0.99, 0.5, 0.99, 0.6]), two_class([0.99, 0.5, 0.01, 0.4])])
    c = ctx(members.mean(0), ensemble=members, k=2)
    assert select("bald", c).tolist() == [2, 3]
    assert select("vote_entropy", c)[0] in (2, 3)
    assert select("entropy", c)[0] == 1  # the student alone ranks the merely unsure point first
    np.testing.assert_allclose(strategies.bald_scores(members)[1], 0.0, atol=1e-9)


def test_kcenter_picks_far_points_away_from_the_labelled_set():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [0.0, 5.0]])
    c = ctx(np.full((5, 2), 0.5), embeddings=points, labelled=[[0.0, 0.1]], k=2)
    assert select("kcenter", c).tolist() == [3, 4]  # then 2 is next to 3
    duplicates = ctx(np.full((3, 2), 0.5), embeddings=np.ones((3, 2)), labelled=np.ones((1, 2)), k=3)
    assert sorted(select("kcenter", duplicates).tolist()) == [0, 1, 2]


def test_hybrid_takes_informative_points_but_not_near_duplicates():
    # 0 and 1: near-duplicates, most informative; 2: informative elsewhere; 3: far but uninformative.
    members = np.stack([two_class([0.99, 0.99, 0.95, 0.5, 0.7, 0.5]), two_class([0.01, 0.01, 0.05, 0.5, 0.3, 0.5])])
    points = np.array([[5.0, 0.0], [5.0, 0.01], [-5.0, 0.0], [0.0, 50.0], [0.0, 0.1], [0.0, 0.0]])
    c = dataclasses.replace(ctx(members.mean(0), ensemble=members, embeddings=points, labelled=[[0.0, 0.0]],
                                k=2), shortlist=2)
    assert select("bald", c).tolist() == [0, 1]
    assert select("kcenter", c)[0] == 3
    assert sorted(select("bald_kcenter", c).tolist()) == [1, 2]


def test_random_strategy_registry_and_checks():
    chosen = select("random", ctx(n=10, k=4))
    assert len(set(chosen.tolist())) == 4 and chosen.max() < 10
    with pytest.raises(ValueError, match=r"unknown strategy 'bold'\. Did you mean 'bald'.* strategies: bald, bald_kcenter"):
        select("bold", ctx())

    @register_strategy("test_first_twice")
    def first_twice(c):
        return np.zeros(c.k, np.int64)

    with pytest.raises(ValueError, match="expected 2 distinct positions"):
        select("test_first_twice", ctx(k=2))
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("entropy")(first_twice)


def test_committee_heads_fit_and_disagree_off_the_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, (20, 3)), rng.normal(2, 0.5, (20, 3))])
    y = two_class(np.repeat([0.0, 1.0], 20))
    pool = np.array([[-2.0, -2, -2], [2, 2, 2]])
    probs = strategies.fit_committee(x, y, pool, 5, rng)
    assert probs.shape == (5, 2, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert (probs[:, 0, 1] < 0.2).all() and (probs[:, 1, 1] > 0.8).all()
    assert np.ptp(probs[:, 0, 1]) > 0  # bootstrap resamples give different heads


def test_supervisor_answers_are_checked_naming_the_pool_index():
    idx = np.array([7, 3, 9])
    cases = [
        (lambda i, t: np.ones((3, 3)) / 3, r"shape \(3, 3\); expected \(3, 2\)"),
        (lambda i, t: np.array([0, 2, 1]), r"label outside \{0, 1\} for pool index 3"),
        (lambda i, t: two_class([0.2, 0.3, np.nan]), "non-finite answer for pool index 9"),
        (lambda i, t: np.array([[0.5, 0.6], [0.5, 0.5], [1, 0]]), "do not sum to 1 for pool index 7"),
        (lambda i, t: np.array([[1.5, -0.5], [0.5, 0.5], [1, 0]]), r"outside \[0, 1\] for pool index 7"),
    ]
    for fn, message in cases:
        with pytest.raises(SupervisorError, match=message):
            ask(fn, idx, ["a", "b", "c"])
    np.testing.assert_array_equal(ask(lambda i, t: [1, 0, 1], idx, ["a", "b", "c"]), two_class([1, 0, 1]))


def test_labels_files(tmp_path):
    probs = two_class([0.9, 0.2, 0.6])
    (tmp_path / "p.json").write_text(json.dumps(probs.tolist()))
    (tmp_path / "l.csv").write_text("1\n0\n1\n")
    np.save(tmp_path / "p.npy", probs)
    idx = np.array([2, 0])
    for name, expected in (("p.json", probs[idx]), ("l.csv", two_class([1, 1])), ("p.npy", probs[idx])):
        np.testing.assert_allclose(ask(labels_file(tmp_path / name, 3), idx, ["", ""]), expected, rtol=1e-6)
    with pytest.raises(SupervisorError, match=r"shape \(3, 2\), but split B has 4 examples"):
        labels_file(tmp_path / "p.npy", 4)
    (tmp_path / "bad.csv").write_text("1\nyes\n0\n")
    with pytest.raises(SupervisorError, match="does not hold numbers"):
        labels_file(tmp_path / "bad.csv", 3)
    (tmp_path / "l.txt").write_text("1\n")
    with pytest.raises(SupervisorError, match="expected a .npy, .json or .csv"):
        labels_file(tmp_path / "l.txt", 1)


def test_ledger_survives_reopening_and_a_cut_off_line(tmp_path):
    ledger = Ledger(tmp_path / "q.jsonl")
    ledger.record(0, np.array([4, 1]), two_class([0.25, 1.0]).astype(np.float32))
    with open(tmp_path / "q.jsonl", "a") as f:
        f.write('{"round": 1, "index": 7, "pro')  # killed mid-write
    again = Ledger(tmp_path / "q.jsonl")
    assert len(again) == 2 and again.missing(np.array([1, 7])).tolist() == [7]
    np.testing.assert_array_equal(again.lookup(np.array([1, 4])), ledger.lookup(np.array([1, 4])))
    again.record(1, np.array([7]), two_class([0.5]))
    assert len(Ledger(tmp_path / "q.jsonl")) == 3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="budget 40 exceeds the pool: split B has 32"):
        ActiveConfig(budget=40).check_pool(32)
    with pytest.raises(ValueError, match="pool .split B. is empty"):
        ActiveConfig().check_pool(0)
    with pytest.raises(ConfigError, match="smaller than seed_size"):
        ActiveConfig(seed_size=10, budget=5)
    with pytest.raises(ValueError, match="unknown strategy"):
        ActiveConfig(strategies=("uncertainty",))
    with pytest.raises(ConfigError, match="did you mean 'budget'"):
        ActiveConfig.from_config(ml_collections.ConfigDict(dict(budgt=3)))
    with pytest.raises(ConfigError, match="train_on must be 'all' or 'new', not 'old'"):
        ActiveConfig(train_on="old")
    with pytest.raises(ConfigError, match="train_on='new' needs warm_start=True"):
        ActiveConfig(train_on="new", warm_start=False)
    with pytest.raises(ConfigError, match="epochs must be positive"):
        ActiveConfig(epochs=-1.0)


# -- the loop on a tiny model --------------------------------------------------------------------

def active_config(tmp_path, model_dir, *extra):
    """3 rounds of 8 queries on a 32-example pool, 2-6 train steps per round."""
    cfg = small_config(tmp_path, model_dir, "--config.losses=xent,", "--config.strong.train.eval_every=1")
    cfg.active = load_config_file(ROOT / "experiments" / "active_learning.py").active
    return apply_overrides(cfg, [
        "--config.active.strategies=bald_kcenter,", "--config.active.seed_size=8",
        "--config.active.query_batch=8", "--config.active.budget=24", "--config.active.rounds=4",
        "--config.active.ensemble_size=4",
        *[f"--config.strong.train.{k}" for k in ("batch_size=8", "micro_batch_size=8", "lr=3e-3", "epochs=2", "eval_batch_size=32")],
        *extra,
    ])


def fake_pipeline(cfg):
    """Finished pipeline stages on disk (their training is tested in test_pipeline), weak labels 75% right."""
    exp = experiment.Experiment(active.pipeline_config(cfg), 0)
    exp.run_dir.mkdir(parents=True)
    exp._check_config()
    labels = np.asarray([label for _, label in exp.splits()[1]])
    flipped = np.where(np.arange(len(labels)) % 4 == 0, 1 - labels, labels)
    exp._save_weak_labels(two_class(np.where(flipped == 1, 0.8, 0.3)).astype(np.float32), labels)
    for stage, acc in (("weak", 0.6), ("ceiling", 0.9), ("student_xent", 0.7)):
        (exp.run_dir / f"{stage}.json").write_text(json.dumps(
            {"test_accuracy": acc, "weak_label_accuracy": 0.75, "seconds": 0.0, "history": []}))
    return exp


def losses(run_dir):
    """Training losses of every round: equal only if the parameters were."""
    rounds = json.loads((run_dir / "rounds.json").read_text())
    return [[h["loss"] for h in r["history"] if "loss" in h] for r in rounds]


class Counting:
    """The weak model's labels, counting what is asked; fails on call `fail_on` with a bad answer."""

    def __init__(self, exp, fail_on=None):
        self.probs, _ = exp.weak_labels()
        self.asked, self.fail_on = [], fail_on

    def __call__(self, indices, texts):
        self.asked.append(indices.tolist())
        if len(self.asked) == self.fail_on:
            return np.full(len(indices), 2)
        return self.probs[indices]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert):  # noqa: F811
    tmp_path = tmp_path_factory.mktemp("reference")
    cfg = active_config(tmp_path, tiny_bert)
    supervisor = Counting(fake_pipeline(cfg))
    (results,) = active.run_active_experiment(cfg, supervisor)
    return tmp_path, results, supervisor.asked


def test_loop_writes_the_label_efficiency_curve(reference):
    tmp_path, results, asked = reference
    assert [p["queries"] for p in results["curve"]] == [8, 16, 24]  # the budget ends the 4th round
    assert [len(a) for a in asked] == [8, 8, 8] and len({i for a in asked for i in a}) == 24
    run_dir = tmp_path / "results" / "seed_0" / "active" / "bald_kcenter"
    assert json.loads((run_dir / "active_results.json").read_text())["curve"] == results["curve"]
    assert results["accuracy"] == {"weak": 0.6, "ceiling": 0.9, "student_xent": 0.7}
    for point in results["curve"]:
        assert point["pgr"] == pytest.approx((point["test_accuracy"] - 0.6) / 0.3)
    lines = (run_dir / "queries.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0] * 8 + [1] * 8 + [2] * 8
    assert not (tmp_path / "ckpt" / "quickstart" / "seed_0" / "active_bald_kcenter").exists()
    path = active.plot_active(tmp_path / "results")
    assert path.name == "active.png" and path.read_bytes().startswith(b"\x89PNG")
    assert "bald_kcenter" in active.format_curves([results])


def test_bad_answer_then_kill_resume_without_paying_twice(tmp_path, tiny_bert, reference, monkeypatch):  # noqa: F811
    reference_dir, expected, expected_asked = reference
    cfg = active_config(tmp_path, tiny_bert)
    exp = fake_pipeline(cfg)
    run_dir = exp.run_dir / "active" / "bald_kcenter"

    bad = Counting(exp, fail_on=3)  # round 2's answer has a label outside {0, 1}
    with pytest.raises(SupervisorError, match=r"label outside \{0, 1\} for pool index"):
        active.run_active_experiment(cfg, bad)
    assert len(Ledger(run_dir / "queries.jsonl")) == 16  # rounds 0 and 1 stay bought

    class Killed(Exception):
        pass

    def killed_in_round_2(*args, **kwargs):
        if "round 2" in kwargs["desc"]:
            evaluations = []

            def evaluate(model):  # at step 2 of 6, after step 1 was checkpointed
                evaluations.append(model)
                if len(evaluations) == 2:
                    raise Killed()
                return {}

            kwargs["evaluate"] = evaluate
        return _real_train(*args, **kwargs)

    monkeypatch.setattr(active, "train", killed_in_round_2)
    killed = Counting(exp)
    with pytest.raises(Killed):
        active.run_active_experiment(cfg, killed)
    assert killed.asked == [expected_asked[2]]  # only round 2, once

    monkeypatch.setattr(active, "train", _real_train)
    resumed = Counting(exp)
    (results,) = active.run_active_experiment(cfg, resumed)
    assert resumed.asked == []
    assert results["curve"] == expected["curve"]
    assert losses(run_dir) == losses(reference_dir / "results" / "seed_0" / "active" / "bald_kcenter")

    with pytest.raises(ConfigError, match=r"keys \['query_batch'\] differ"):
        active.run_active_experiment(apply_overrides(cfg, ["--config.active.query_batch=4"]), resumed)


def test_budget_larger_than_the_pool_fails_before_training(tmp_path, tiny_bert, monkeypatch):  # noqa: F811
    cfg = active_config(tmp_path, tiny_bert, "--config.active.budget=33")
    monkeypatch.setattr(active, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="budget 33 exceeds the pool: split B has 32 examples"):
        active.run_active_experiment(cfg)


def round_steps(run_dir):
    return [max(h["step"] for h in r["history"]) for r in json.loads((run_dir / "rounds.json").read_text())]


def test_train_on_new_trains_each_round_on_its_own_labels(tmp_path, tiny_bert, reference):  # noqa: F811
    ref_dir, _, _ = reference
    # 2 epochs of batch 8: every label bought so far (8, 16, 24), or only the round's 8.
    assert round_steps(ref_dir / "results" / "seed_0" / "active" / "bald_kcenter") == [2, 4, 6]
    cfg = active_config(tmp_path, tiny_bert, "--config.active.train_on=new", "--config.active.strategies=random,")
    (results,) = active.run_active_experiment(cfg, Counting(fake_pipeline(cfg)))
    run_dir = tmp_path / "results" / "seed_0" / "active" / "random"
    assert round_steps(run_dir) == [2, 2, 2]
    assert [p["queries"] for p in results["curve"]] == [8, 16, 24]

    # Other settings are refused, naming them; settings written before `epochs` existed still resume.
    longer = apply_overrides(cfg, ["--config.active.epochs=3"])
    with pytest.raises(ConfigError, match=r"holds rounds of other active settings \(keys \['epochs'\] differ\)"):
        active.run_active_experiment(longer, Counting(experiment.Experiment(active.pipeline_config(cfg), 0)))
    older = json.loads((run_dir / "settings.json").read_text())
    del older["epochs"]
    (run_dir / "settings.json").write_text(json.dumps(older))
    supervisor = Counting(experiment.Experiment(active.pipeline_config(cfg), 0))
    (again,) = active.run_active_experiment(cfg, supervisor)
    assert again["curve"] == results["curve"] and supervisor.asked == []


def test_another_supervisor_is_measured_against_its_own_full_answers(tmp_path, tiny_bert, monkeypatch):  # noqa: F811
    labels_path = tmp_path / "answers.npy"
    cfg = active_config(tmp_path, tiny_bert, "--config.active.strategies=random,", "--config.active.budget=16",
                        f"--config.active.supervisor={labels_path}")
    exp = fake_pipeline(cfg)
    truth = np.asarray([label for _, label in exp.splits()[1]])
    answers = np.where(np.arange(len(truth)) % 3 == 0, 1 - truth, truth)  # two thirds right
    np.save(labels_path, answers)
    (results,) = active.run_active_experiment(cfg)
    full = json.loads((exp.run_dir / "active" / "full_answers.json").read_text())
    assert full["queries"] == len(truth) and full["supervisor_accuracy"] == pytest.approx((answers == truth).mean())
    assert max(h["step"] for h in full["history"]) == 2 * len(truth) // 8  # all of split B, from pretrained
    # PGR's W is the supervisor on split B, the reference its full-answers student, not the weak stages.
    assert results["accuracy"] == {"weak": full["supervisor_accuracy"], "ceiling": 0.9,
                                   "student_xent": full["test_accuracy"]}
    assert results["supervisor_scored_on"] == "split B"
    for point in results["curve"]:
        assert point["pgr"] == pytest.approx((point["test_accuracy"] - full["supervisor_accuracy"])
                                             / (0.9 - full["supervisor_accuracy"]))
    assert not (tmp_path / "ckpt" / "quickstart" / "seed_0" / "active_full_answers").exists()
    monkeypatch.setattr(active, "train", lambda *a, **k: pytest.fail("trained again"))
    (again,) = active.run_active_experiment(cfg)
    assert again == results


def test_constructed_arm_asks_the_weak_model_trained_again_about_built_cases(tmp_path, tiny_bert):  # noqa: F811
    cfg = active_config(tmp_path, tiny_bert, "--config.active.strategies=random+constructed,",
                        "--config.active.constructed=16")
    (built,) = active.run_active_experiment(cfg)  # the real stages: the weak model must be trained again
    exp = experiment.Experiment(active.pipeline_config(cfg), 0)
    record = json.loads((exp.run_dir / "active" / "constructed.json").read_text())
    texts = [c["text"] for c in record["cases"]]
    split_b = [t for t, _ in exp.splits()[1]]
    assert len(texts) == 16 and not set(texts) & {t for t, _ in exp.task.train + exp.task.test}
    assert built["constructed_size"] == 16 and built["pool_size"] == 32
    rounds = json.loads((exp.run_dir / "active" / "random+constructed" / "rounds.json").read_text())
    seed_set = np.random.default_rng([0, 2]).choice(32, 8, replace=False)  # every arm's, from split B
    assert rounds[0]["selected"] == seed_set.tolist() and built["curve"][0]["constructed_queries"] == 0
    ledger = Ledger(exp.run_dir / "active" / "random+constructed" / "queries.jsonl")
    asked = np.asarray(sorted(ledger.answers))
    assert built["curve"][-1]["constructed_queries"] == (asked >= 32).sum() > 0
    # Constructed cases answered by the weak model trained again; split B's by the weak stage's labels.
    weak_answers = np.asarray(record["weak_answers"], np.float32)
    stored, _ = exp.weak_labels()
    np.testing.assert_allclose(ledger.lookup(asked[asked >= 32]), weak_answers[asked[asked >= 32] - 32])
    np.testing.assert_allclose(ledger.lookup(asked[asked < 32]), stored[asked[asked < 32]])
    # Trained again, it answers split B's texts as the stage did; asked about them as new texts too.
    np.testing.assert_allclose(exp.weak_answers(split_b), stored, atol=1e-5)
    exp._save_weak_labels(stored[::-1].copy(), np.asarray([label for _, label in exp.splits()[1]]))
    with pytest.raises(ConfigError, match="trained again answers split B differently"):
        exp.weak_answers(texts)
    # Neither this arm nor a new one may rebuild the cases the answers bought refer to.
    with pytest.raises(ConfigError, match="holds the cases built for active.constructed=16, active.writer=None"):
        active.run_active_experiment(apply_overrides(cfg, ["--config.active.constructed=8"]))
    other = apply_overrides(cfg, ["--config.active.strategies=bald+constructed,",
                                  "--config.active.writer=some-chat-model"])
    with pytest.raises(ConfigError, match="holds the cases built for active.constructed=16, active.writer=None"):
        active.run_active_experiment(other)


def test_overrides_take_any_option_of_the_task_as_the_pipeline_does(capsys):
    from w2s.cli import main

    path = str(ROOT / "experiments" / "active_learning.py")
    assert main(["config", path, "--config.task=bbc_topic", "--config.task_options.max_words=40"]) == 0
    assert "task_options.max_words = 40" in capsys.readouterr().out
    assert main(["config", path, "--config.task=bbc_topic", "--config.task_options.max_wrds=40"]) != 0
    assert "has no option 'max_wrds'. Did you mean 'max_words'?" in capsys.readouterr().err
