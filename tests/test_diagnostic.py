"""Diagnostic queries: the forward loss by hand, mistake models on synthetic supervisors, the
diagnostic strategy's score, rule-based supervisors, constructed cases and the probe-mode arms."""
import importlib.util
import math
import pathlib
import types

import jax.numpy as jnp
import numpy as np
import pytest

from w2s import losses
from w2s.active_learning import strategies
from w2s.active_learning import constructed, diagnostic, mistakes, systematic
from w2s.checkpoint import write_json_atomic
from w2s.config import ConfigError
from w2s.data import one_hot
from w2s.active_learning.strategies import Context, select
from w2s.active_learning.supervisor import make_supervisor
from w2s.tasks import wordnet

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _logits(p1):
    p1 = np.asarray(p1, np.float64)
    return jnp.asarray(np.stack([np.zeros_like(p1), np.log(p1 / (1 - p1))], -1), jnp.float32)


def test_forward_loss_by_hand():
    loss = losses.make_loss("forward")
    logits, weak = _logits([0.8, 0.2]), jnp.array([[0.0, 1.0], [0.0, 1.0]])
    value = lambda frac: float(loss(logits, weak, step_frac=jnp.float32(frac), class1_threshold=jnp.float32(0.5)))
    # At the start it is cross-entropy; where the student believes class 0 the weak labels say 1:
    # rho_0 = 1 capped at max_flip 0.3, rho_1 = 0, so P(weak=1) = p1 + 0.3 p0.
    assert value(0.0) == pytest.approx(-(math.log(0.8) + math.log(0.2)) / 2, rel=1e-5)
    assert value(1.0) == pytest.approx(-(math.log(0.86) + math.log(0.44)) / 2, rel=1e-5)
    assert value(0.1) == pytest.approx(-(math.log(0.83) + math.log(0.32)) / 2, rel=1e-5)  # half-way up its ramp


def _synthetic(n=400, seed=0):
    """Truth y = [x0 > 0]; a supervisor that is right except that it answers 0 wherever x1 > 0.8."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(int)
    answers = np.where(x[:, 1] > 0.8, 0, truth)
    return x, truth, answers


def test_logistic_mode_fits_clean_labels():
    x, truth, _ = _synthetic()
    params = mistakes.fit(x, one_hot(truth), 1, np.random.default_rng(0), flips=False, bootstrap=False)
    pred = mistakes.predict(params, x)
    assert pred.truth.shape == (1, len(x), 2) and (pred.truth[0].argmax(1) == truth).mean() > 0.97


def test_mistake_model_locates_the_supervisors_systematic_errors():
    x, truth, answers = _synthetic()
    # Weak penalties on both heads, so that in 4 dimensions the transition can bend to a half-space
    # (the defaults, chosen on held-out wordnet_living truth, keep it nearly constant).
    settings = mistakes.MistakeSettings(l2=1e-3, flip_l2=1e-3)
    params = mistakes.fit(x, one_hot(answers), 4, np.random.default_rng(0), settings=settings)
    pred = mistakes.predict(params, x)
    right = pred.supervisor_right.mean(0)
    wrong = answers != truth
    # It expects the supervisor to be wrong where it is (x1 large, truth 1), not elsewhere.
    assert right[wrong].mean() < right[~wrong].mean() - 0.2
    # Its true-label head is no worse than plain logistic regression on the same answers.
    plain = mistakes.predict(mistakes.fit(x, one_hot(answers), 1, np.random.default_rng(0), flips=False,
                                          bootstrap=False, settings=settings), x)
    assert (pred.truth.mean(0).argmax(1) == truth).mean() >= (plain.truth[0].argmax(1) == truth).mean()


def _dense(kind, n=1000, d=64, seed=0):
    """Truth y = [x.u > 0] for a random direction u in 64 dimensions; the supervisor flips 20% of the
    answers at random ("random") or answers 0 wherever x1 > 0.8 ("half-space"). Train and test halves."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, d)).astype(np.float32)
    u = rng.normal(size=d)
    truth = (x @ u > 0).astype(int)
    answers = np.where(rng.random(2 * n) < 0.2, 1 - truth, truth) if kind == "random" else \
        np.where(x[:, 1] > 0.8, 0, truth)
    return x[:n], answers[:n], x[n:], truth[n:]


@pytest.mark.parametrize("kind", ["random", "half-space"])
def test_mistake_models_true_head_keeps_up_with_the_plain_head(kind):
    """The old defaults (true head l2 0.1, transition l2 0.001) let the transition explain the
    answers: the true-label head stayed near chance (0.53 and 0.49 here against the plain head's
    0.84 and 0.76). With the defaults it is not far below the plain head (mistakes.PLAIN, as the
    comparison's) where the supervisor errs at random (0.87), and above it where the supervisor
    errs on a half-space (0.81; mostly the true head's lower l2: a plain head at l2 0.01 gets 0.81)."""
    x, answers, x_test, truth = _dense(kind)
    accuracy = {}
    for flips in (False, True):
        params = mistakes.fit(x, one_hot(answers), 1, np.random.default_rng(0), flips=flips, bootstrap=False)
        accuracy[flips] = (mistakes.predict(params, x_test).truth[0].argmax(1) == truth).mean()
    assert accuracy[False] > 0.75  # the plain head is accurate
    if kind == "random":
        assert accuracy[True] >= accuracy[False] - 0.02
    else:
        assert accuracy[True] > accuracy[False] + 0.02


def test_diagnostic_scores_are_disagreement_times_expected_supervisor_accuracy(monkeypatch):
    truth = np.array([[[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9], [0.9, 0.1]]])
    right = np.array([[0.9, 0.9, 0.9], [0.9, 0.5, 0.9]])
    monkeypatch.setattr(mistakes, "fit", lambda *a, **k: None)
    monkeypatch.setattr(mistakes, "predict", lambda *a: mistakes.Predictions(truth, right))
    scores, _ = strategies.diagnostic_scores(np.zeros((2, 3)), one_hot([0, 1]), np.ones((3, 3)), 2,
                                             np.random.default_rng(0))
    np.testing.assert_allclose(scores, strategies.bald_scores(truth) * right.mean(0))
    assert scores[0] == 0 and scores[1] > scores[2] > 0  # agreement scores nothing


def test_diagnostic_strategy_needs_the_answers_and_returns_k_positions():
    x, _, answers = _synthetic(60)
    c = dict(probs=np.full((40, 2), 0.5), ensemble=np.full((3, 40, 2), 0.5), embeddings=x[20:], labelled=x[:20],
             k=5, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="answers"):
        select("diagnostic", Context(**c))
    chosen = select("diagnostic", Context(**c, answers=one_hot(answers[:20])))
    assert len(set(chosen.tolist())) == 5


def test_rule_supervisors():
    sup = systematic.rule_supervisor({"so good": 1, "not bad at all": 1, "awful": 0}, systematic.keyword_rule(),
                                     "keyword")
    assert sup(np.arange(3), ["so good", "not bad at all", "awful"]).argmax(1).tolist() == [1, 0, 0]
    assert sup(np.arange(1), ["I can't wait"]).tolist() == [[1, 0]]  # fires without knowing the truth
    with pytest.raises(ConfigError, match="no ground truth"):
        sup(np.arange(1), ["unknown"])
    plants = systematic.category_rule()
    files = {w: wordnet.synsets("n")[o].lex_filenum for o, w in wordnet.words().items()}
    plant = next(w for w, f in files.items() if f == 20)
    animal = next(w for w, f in files.items() if f == 5)
    assert plants(plant) == 0 and plants(animal) is None
    # By name in the active-learning loop: split B's ground truth but where the rule fires.
    split_b = [(plant, 1), (animal, 1), ("stone", 0)]
    weak = np.array([[0.2, 0.8], [0.7, 0.3], [0.6, 0.4]], np.float32)  # the weak model's answers on split B
    pipeline = types.SimpleNamespace(splits=lambda: ([], split_b), task_name="wordnet_living",
                                     weak_labels=lambda: (weak, None), run_dir=pathlib.Path("run"))
    named = make_supervisor("plants_as_nonliving", pipeline)
    assert named(np.arange(3), [t for t, _ in split_b]).argmax(1).tolist() == [0, 1, 0]
    # Over the weak model: its soft answers, the rule's where it fires, looked up by pool index.
    over_weak = make_supervisor("weak_plants_as_nonliving", pipeline)
    np.testing.assert_allclose(over_weak(np.array([2, 0, 1]), [split_b[i][0] for i in (2, 0, 1)]),
                               [weak[2], [1, 0], weak[1]])
    for name in ("negations_as_negative", "weak_negations_as_negative"):
        with pytest.raises(ConfigError, match="fires on no example of wordnet_living's split B"):
            make_supervisor(name, pipeline)
    # Constructed cases come after split B's indices: the rule where it fires, else the label the
    # case's construction implies, or the weak model's answer to it.
    plant2 = next(w for w, f in files.items() if f == 20 and w != plant)
    animal2 = next(w for w, f in files.items() if f == 5 and w != animal)
    cases = (constructed.Case(plant2, 1, "lemma"), constructed.Case(animal2, 1, "lemma"))
    extension = constructed.Extension(cases, lambda: np.array([[0.1, 0.9], [0.6, 0.4]], np.float32))
    np.testing.assert_allclose(make_supervisor("weak", pipeline, extension)(np.array([3, 0]), [plant2, plant]),
                               [[0.1, 0.9], weak[0]])
    named = make_supervisor("plants_as_nonliving", pipeline, extension)
    assert named(np.array([3, 4, 1]), [plant2, animal2, animal]).argmax(1).tolist() == [0, 1, 1]
    np.testing.assert_allclose(make_supervisor("weak_plants_as_nonliving", pipeline, extension)(
        np.array([3, 4, 2]), [plant2, animal2, "stone"]), [[1, 0], [0.6, 0.4], weak[2]])
    with pytest.raises(ConfigError, match="a labels file answers split B only"):
        make_supervisor("answers.npy", pipeline, extension)
    with pytest.raises(ConfigError, match="neither a supervisor's name .*plants_as_nonliving"):
        make_supervisor("plants", pipeline)


def test_constructed_cases_avoid_every_split_and_the_test_split_is_checked():
    task = wordnet.wordnet_living(seed=0, n_train=200, n_test=100)
    seen = [t for t, _ in task.train + task.test]
    made = constructed.new_lemmas("wordnet_living", seen, 50, seed=0)
    assert len(made) == 50 and {c.truth for c in made} == {0, 1}
    assert not {constructed.normalised(c.text) for c in made} & {constructed.normalised(t) for t in seen}
    inside = wordnet.descendants(wordnet.category_roots("wordnet_living"))
    by_word = {w: o for o, w in wordnet.words().items()}
    assert all(c.truth == (by_word[c.text] in inside) for c in made)
    constructed.check_unseen(made, [t for t, _ in task.test])
    with pytest.raises(ConfigError, match="equal test cases"):
        constructed.check_unseen(made[:1], [made[0].text.upper()])


def test_substitutions_replace_one_word_keep_the_label_and_antonyms_flip_it():
    examples = [("what a happy day", 1), ("the movie was dull", 0), ("a good day", 1), ("i love it", 1),
                ("zzz qqq", 1)]
    sources = {t: y for t, y in examples}
    for kinds in (("synonym", "hypernym"), constructed.SUBSTITUTIONS):
        made = constructed.substitutions(examples, ["what a glad day"], 10, seed=0, kinds=kinds)
        assert made and {c.kind for c in made} <= set(kinds)
        for c in made:
            source = examples[c.source][0]
            assert len(source.split()) == len(c.text.split())
            assert sum(a != b for a, b in zip(source.split(), c.text.split())) == 1
            assert c.truth == (1 - sources[source] if c.kind == "antonym" else sources[source])
        assert "what a glad day" not in [c.text for c in made]
    # WordNet's lexical antonym links, read from data.adj / data.verb.
    opposites = constructed.substitutions(examples, [], 10, seed=0, kinds=("antonym",))
    assert {"a bad day", "i hate it", "what a unhappy day"} <= {c.text for c in opposites}
    assert all(c.kind == "antonym" for c in opposites)
    with pytest.raises(ConfigError, match="unknown; choose from synonym, hypernym, antonym"):
        constructed.substitutions(examples, [], 10, seed=0, kinds=("meronym",))


def test_build_picks_the_construction_by_task_and_checks_the_test_split():
    lemmas = constructed.build("wordnet_living", ["dog"], ["cat"], [], 20, seed=0)
    assert len(lemmas) == 20 and {c.kind for c in lemmas} == {"lemma"}
    assert not {"dog", "cat"} & {c.text for c in lemmas}
    texts = constructed.build("tweet_sentiment", [], ["the movie was boring"], [("the movie was dull", 0)], 5, seed=0)
    assert texts and all(c.kind in constructed.SUBSTITUTIONS and c.text != "the movie was boring" for c in texts)
    assert constructed.arm("diagnostic+constructed") == ("diagnostic", True)
    assert constructed.arm("bald") == ("bald", False)


def test_arms_share_the_seed_set_buy_within_budget_and_resume(tmp_path):
    x, truth, answers = _synthetic(500)
    data = diagnostic.Data(b=x[:300], test=x[300:400], constructed=x[400:], test_labels=truth[300:400],
                           b_labels=truth[:300])
    sup = diagnostic.Supervision("rule", one_hot(answers[:300]), one_hot(answers[400:]), 0.8)
    schedule = diagnostic.Schedule(seed_size=20, query_batch=20, budget=60, ensemble_size=3)
    arms = ["random", "diagnostic", "diagnostic+constructed"]
    results = diagnostic.run_comparison(data, sup, arms, task="synthetic", seed=0, out=tmp_path, schedule=schedule)
    for r in results:
        assert [p["queries"] for p in r["curve"]] == [20, 40, 60]
    assert diagnostic.Schedule().rounds() == 5  # 100, 400, 700, 1000, 1300: the budget is spent
    assert diagnostic.Schedule(seed_size=100, query_batch=300, budget=1200).rounds() == 5  # the last buys 200
    first = {r["curve"][0]["test_accuracy"] for r in results}
    assert len(first) == 1  # the same seed set, so the same first point
    assert results[0]["curve"][-1]["constructed_queries"] == 0
    again = diagnostic.run_comparison(data, sup, arms, task="synthetic", seed=0, out=tmp_path, schedule=schedule,
                                      log=lambda line: pytest.fail(f"re-ran an arm: {line}"))
    assert again == results
    # The benchmark's table: per arm, accuracies over seeds and paired differences from random.
    spec = importlib.util.spec_from_file_location("benchmark_diagnostic", ROOT / "benchmarks" / "diagnostic.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    s = benchmark.summary(results)
    assert set(s["arms"]) == set(arms) and "random" not in s["arms"]["random"]["difference"]
    d = s["arms"]["diagnostic"]
    acc = {r["strategy"]: {p["queries"]: p["test_accuracy"] for p in r["curve"]} for r in results}
    assert d["difference"]["random"]["plain"][60] == pytest.approx([acc["diagnostic"][60] - acc["random"][60]] * 3)
    assert set(d["difference"]["random"]) == {"plain", "mistake model"}
    assert d["accuracy"][20] == pytest.approx([acc["random"][20]] * 3)  # one seed: a point interval
    built = s["arms"]["diagnostic+constructed"]["difference"]  # also against its own pool arm
    assert set(built) == {"random", "diagnostic"}
    assert built["diagnostic"]["plain"][60] == pytest.approx(
        [acc["diagnostic+constructed"][60] - acc["diagnostic"][60]] * 3)
    table = benchmark.format_summary(s, "synthetic")
    assert "| diagnostic | random | mistake model |" in table and "| diagnostic+constructed |" in table
    assert benchmark.plot_comparison(s, "synthetic", tmp_path / "plot.png").stat().st_size > 0
    # A finetuning-mode folder (experiments/active_learning.py's layout): plain students only, with PGR.
    for r in results:
        plain = {**r, "accuracy": {k: v for k, v in r["accuracy"].items() if k != "student_mistakes"},
                 "curve": [{k: v for k, v in p.items() if k in ("queries", "round", "test_accuracy", "pgr")}
                           for p in r["curve"]], "active": {**r.get("active", {}), "supervisor": "weak"}}
        write_json_atomic(tmp_path / "ft" / "seed_0" / "active" / r["strategy"] / "active_results.json", plain)
        ruled = {**plain, "active": {"supervisor": "weak_plants_as_nonliving"}}
        write_json_atomic(tmp_path / "ft_rule" / "seed_0" / "active" / r["strategy"] / "active_results.json", ruled)
    ((folder, task, name, loaded),) = benchmark.comparisons(tmp_path / "ft")
    assert (folder, task, name) == (tmp_path / "ft", "synthetic", "finetuned")
    assert benchmark.comparisons(tmp_path / "ft_rule")[0][2] == "finetuned_weak_plants_as_nonliving"  # its own plot
    s = benchmark.summary(loaded)
    assert set(s["arms"]["diagnostic"]["difference"]["random"]) == {"plain"}
    assert s["arms"]["diagnostic"]["pgr"][60] == pytest.approx(
        [next(p["pgr"] for p in results[1]["curve"] if p["queries"] == 60)] * 3)
    table = benchmark.format_summary(s, "synthetic")
    assert "mistake model" not in table and ("| PGR@20 |" in table) == s["pgr_meaningful"]
    # Its constructed cases: per kind, contrast with the source's weak answer, and what each arm bought.
    assert benchmark.constructed_cases(tmp_path / "ft") is None
    active_dir = tmp_path / "ft" / "seed_0" / "active"
    np.savez(tmp_path / "ft" / "seed_0" / "weak_labels.npz", probs=np.array([[0.9, 0.1], [0.2, 0.8]]), labels=[0, 1])
    write_json_atomic(active_dir / "constructed.json", {
        "requested": 3, "writer": None, "weak_answers": [[0.3, 0.7], [0.1, 0.9], [0.6, 0.4]],
        "cases": [{"text": "a", "truth": 1, "kind": "antonym", "source": 0},
                  {"text": "b", "truth": 1, "kind": "synonym", "source": 1},
                  {"text": "c", "truth": 0, "kind": "antonym", "source": 1}]})
    (active_dir / "diagnostic+constructed" / "queries.jsonl").write_text(
        "".join(f'{{"round": 1, "index": {i}, "probs": [1, 0]}}\n' for i in (0, 2, 4)))
    cases = benchmark.constructed_cases(tmp_path / "ft")
    assert cases == {"antonym": {"built": 2, "weak_flipped": 1.0, "bought": {"diagnostic+constructed": 2}},
                     "synonym": {"built": 1, "weak_flipped": 0.0, "bought": {"diagnostic+constructed": 0}}}
    assert "| antonym | 2 | 1.00 | 2 |" in benchmark.format_constructed(cases)
    assert benchmark.plot_comparison(s, "synthetic", tmp_path / "ft.png").stat().st_size > 0
