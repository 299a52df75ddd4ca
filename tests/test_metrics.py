"""Tests for w2s.results.metrics: PGR by hand, loading results.json, the seed summary and the table."""
import json
import math
import re

import numpy as np
import pytest

from w2s.results import load, metrics, tables

# Three seeds of one (task, weak, strong) pair. PGR per seed, by hand:
#   xent:     (0.65-0.60)/0.20 = 0.25, (0.80-0.70)/0.20 = 0.50, (0.75-0.60)/0.20 = 0.75
#   aux_conf: (0.78-0.60)/0.20 = 0.90, (0.86-0.70)/0.20 = 0.80, (0.80-0.60)/0.20 = 1.00
SEEDS = [
    dict(seed=0, weak=0.60, ceiling=0.80, student=dict(xent=0.65, aux_conf=0.78)),
    dict(seed=1, weak=0.70, ceiling=0.90, student=dict(xent=0.80, aux_conf=0.86)),
    dict(seed=2, weak=0.60, ceiling=0.80, student=dict(xent=0.75, aux_conf=0.80)),
]


def make_result(seed, weak, ceiling, student, task="sciq", weak_model="minilm-l1",
                strong_model="minilm"):
    return {
        "task": task, "weak_model": weak_model, "strong_model": strong_model, "seed": seed,
        "accuracy": {"weak": weak, "ceiling": ceiling, "student": dict(student)},
        "pgr": {k: metrics.pgr(weak, v, ceiling) for k, v in student.items()},
        "config": {}, "timings": {}, "versions": {},
    }


def write_results(root, results):
    for r in results:
        run = root / f"{r['task']}_{r['weak_model']}_{r['strong_model']}" / f"seed{r['seed']}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(r))


def test_softmax_matches_jax_and_survives_large_logits():
    import jax

    logits = np.random.default_rng(0).normal(0, 30, (64, 2)).astype(np.float32)
    logits[0] = [1e4, -1e4]  # exp would overflow without the shift
    probs = metrics.softmax(logits)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, np.asarray(jax.nn.softmax(logits)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_accuracy_logits_and_probs():
    logits = np.array([[2.0, -1.0], [0.0, 3.0], [1.0, 0.5], [-2.0, 0.0]])
    labels = np.array([0, 1, 1, 1])
    assert metrics.accuracy(logits, labels) == 0.75
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert metrics.accuracy(probs, labels) == 0.75


def test_accuracy_soft_labels_are_hardened():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    soft = np.array([[0.6, 0.4], [0.6, 0.4]])
    assert metrics.accuracy(probs, soft) == 0.5


def test_accuracy_rejects_flat_scores():
    with pytest.raises(ValueError, match="expected"):
        metrics.accuracy(np.array([0.1, 0.9]), np.array([0, 1]))


@pytest.mark.parametrize("weak, student, ceiling, expected", [
    (0.6, 0.7, 0.8, 0.5),
    (0.6, 0.8, 0.8, 1.0),
    (0.6, 0.6, 0.8, 0.0),
    (0.6, 0.9, 0.8, 1.5),   # Student beats the ceiling.
    (0.6, 0.5, 0.8, -0.5),  # Student is worse than its supervisor.
    (0.5, 0.8, 0.9, 0.75),
])
def test_pgr_by_hand(weak, student, ceiling, expected):
    assert metrics.pgr(weak, student, ceiling) == pytest.approx(expected)


def test_pgr_nan_on_zero_gap():
    value = metrics.pgr(0.7, 0.75, 0.7)
    assert math.isnan(value)
    assert not math.isinf(value)


def test_no_pgr_when_the_ceiling_is_below_the_weak_model():
    assert math.isnan(metrics.pgr(0.8, 0.9, 0.7))  # not the sign-flipped (0.9 - 0.8) / (0.7 - 0.8) = -1


def test_load_results_recursive(tmp_path):
    write_results(tmp_path, [make_result(**s) for s in SEEDS])
    (tmp_path / "notes.json").write_text("not a result")
    results = load.load_results(tmp_path)
    assert sorted(r["seed"] for r in results) == [0, 1, 2]


def test_a_corrupt_or_incomplete_results_json_is_skipped_naming_it_and_its_rebuild(tmp_path):
    write_results(tmp_path, [make_result(**s) for s in SEEDS])
    crashed = tmp_path / "crashed" / "seed_4" / "results.json"
    crashed.parent.mkdir(parents=True)
    crashed.write_text('{"task": "sciq", "accuracy": ')
    incomplete = tmp_path / "run" / "results.json"
    incomplete.parent.mkdir()
    incomplete.write_text(json.dumps({"task": "sciq", "seed": 0, "accuracy": {"weak": 0.6}}))
    with pytest.warns(load.UnreadableResultWarning) as warned:
        results = load.load_results(tmp_path)
    assert sorted(r["seed"] for r in results) == [0, 1, 2]  # the readable ones
    messages = sorted(str(w.message) for w in warned)
    assert messages[0].startswith(f"{crashed} skipped: Expecting value")
    assert f"w2s run CONFIG --config.output_dir={tmp_path / 'crashed'} --config.seeds=4," in messages[0]
    assert messages[1].startswith(f"{incomplete} skipped") and "weak_model" in messages[1]
    for path in (tmp_path / "sciq_minilm-l1_minilm").rglob("results.json"):
        path.unlink()
    with pytest.raises(ValueError, match="no readable results.json"), pytest.warns(load.UnreadableResultWarning):
        load.load_results(tmp_path)


def test_losses_keep_the_config_s_order_through_results_json(tmp_path):
    result = make_result(**SEEDS[0])
    result["config"] = {"losses": ["xent", "product", "aux_conf"]}
    result["accuracy"]["student"]["product"] = 0.7
    (tmp_path / "results.json").write_text(json.dumps(result, sort_keys=True))  # as the pipeline writes it
    rows = metrics.summarize(load.load_results(tmp_path))
    assert metrics.loss_names(rows) == ["xent", "product", "aux_conf"]
    header = tables.format_table(rows).splitlines()[0]
    assert header.index("xent acc") < header.index("product acc") < header.index("aux_conf acc")


def test_load_results_empty_dir(tmp_path):
    with pytest.raises(ValueError, match="no results.json found under"):
        load.load_results(tmp_path)


def test_summarize_three_seeds():
    results = [make_result(**s) for s in reversed(SEEDS)]
    (row,) = metrics.summarize(results)
    assert (row["task"], row["weak_model"], row["strong_model"]) == ("sciq", "minilm-l1", "minilm")
    assert row["seeds"] == [0, 1, 2]
    assert row["weak_acc"] == pytest.approx((0.60 + 0.70 + 0.60) / 3)
    assert row["ceiling_acc"] == pytest.approx((0.80 + 0.90 + 0.80) / 3)
    assert list(row["losses"]) == ["xent", "aux_conf"]

    xent = row["losses"]["xent"]
    assert xent["pgr"]["values"] == pytest.approx([0.25, 0.50, 0.75])
    assert xent["pgr"]["mean"] == pytest.approx(0.5)
    # Sample std (ddof=1): sqrt((0.25^2 + 0 + 0.25^2) / 2).
    assert xent["pgr"]["std"] == pytest.approx(0.25)
    assert xent["pgr"]["min"] == pytest.approx(0.25)
    assert xent["pgr"]["max"] == pytest.approx(0.75)
    assert xent["student_acc"]["mean"] == pytest.approx((0.65 + 0.80 + 0.75) / 3)
    assert xent["student_acc"]["min"] == pytest.approx(0.65)
    assert xent["student_acc"]["max"] == pytest.approx(0.80)

    aux = row["losses"]["aux_conf"]["pgr"]
    assert aux["mean"] == pytest.approx(0.9)
    assert aux["std"] == pytest.approx(0.1)  # sqrt((0.1^2 + 0.1^2 + 0) / 2)
    assert (aux["min"], aux["max"]) == pytest.approx((0.8, 1.0))


def test_summarize_groups_and_skips_nan():
    results = [make_result(**s) for s in SEEDS]
    results.append(make_result(0, 0.7, 0.95, {"xent": 0.9}, weak_model="tiny"))
    results.append(make_result(1, 0.7, 0.70, {"xent": 0.9}, weak_model="tiny"))  # No gap.
    rows = metrics.summarize(results)
    assert [r["weak_model"] for r in rows] == ["minilm-l1", "tiny"]
    tiny = rows[1]["losses"]["xent"]["pgr"]
    assert math.isnan(tiny["values"][1])
    assert tiny["mean"] == pytest.approx(0.8)  # Only the seed with a gap counts.
    assert math.isnan(tiny["std"])  # one value: no spread is known


def test_format_table_contains_numbers():
    rows = metrics.summarize([make_result(**s) for s in SEEDS])
    rows += metrics.summarize([make_result(0, 0.7, 0.9, {"xent": 0.85}, task="boolq")])
    table = tables.format_table(rows)
    print(table)
    lines = table.splitlines()
    assert len(lines) == 5  # Header, rule, two rows, what the numbers are.
    assert len({len(line) for line in lines[:2]}) == 1
    for heading in ["task", "weak", "strong", "seeds", "weak acc", "ceiling acc",
                    "xent acc", "xent PGR", "aux_conf acc", "aux_conf PGR", "of means"]:
        assert heading in lines[0]
    sciq = next(line for line in lines if line.startswith("sciq"))
    for cell in ["minilm-l1", "minilm", " 3 ", "0.633 ± 0.058", "0.833 ± 0.058", "0.733 ± 0.076",
                 "0.50 ± 0.25  ", "0.813 ± 0.042", "0.90 ± 0.10  "]:
        assert cell in sciq
    boolq = next(line for line in lines if line.startswith("boolq"))
    for cell in ["0.700", "0.900", "0.850", " 0.75  ", " - "]:  # one seed: no spread shown
        assert cell in boolq
    assert "± nan" not in table and lines[4] == "(mean ± sample standard deviation over seeds; PGR per seed, and of the seed-mean accuracies)"


def test_bootstrap_ci_of_one_cell_brackets_its_mean_within_the_seeds():
    mean, low, high = metrics.bootstrap_ci([[0.2, 0.4, 0.6, math.nan]])
    assert mean == pytest.approx(0.4)
    assert 0.2 <= low < 0.4 < high <= 0.6
    assert metrics.bootstrap_ci([[0.2, 0.4, 0.6]]) == (mean, low, high)  # nan left out; seeded, so repeatable
    assert all(math.isnan(v) for v in metrics.bootstrap_ci([[math.nan]]))


def test_bootstrap_ci_of_several_cells_is_their_median():
    # Cells without seed noise give the median with no width; a noisy cell widens it.
    assert metrics.bootstrap_ci([[1.0, 1.0], [2.0, 2.0], [10.0, 10.0]]) == (2.0, 2.0, 2.0)
    median, low, high = metrics.bootstrap_ci([[1.0, 1.0], [1.5, 2.5], [10.0, 10.0]])
    assert median == 2.0 and 1.5 <= low < 2.0 < high <= 2.5


def test_median_pgr_leaves_out_self_pairs_and_formats_with_intervals():
    results = [make_result(**s) for s in SEEDS]  # xent PGR 0.25, 0.5, 0.75
    results += [make_result(s, 0.6, 0.8, {"xent": 0.8}, weak_model="minilm-l6", strong_model="minilm-l9")
                for s in range(3)]  # xent PGR 1.0
    results += [make_result(s, 0.6, 0.65, {"xent": 0.9}, weak_model="minilm", strong_model="minilm")
                for s in range(3)]  # same model: left out
    rows = metrics.summarize(results)
    medians = metrics.median_pgr(rows)
    assert medians["xent"]["cells"] == 2 and medians["xent"]["median"] == pytest.approx(0.75)
    assert medians["aux_conf"]["cells"] == 1 and medians["aux_conf"]["median"] == pytest.approx(0.9)
    low, high = rows[1]["losses"]["xent"]["pgr"]["ci"]
    assert 0.25 <= low < 0.5 < high <= 0.75
    table = tables.format_pgr_table(rows)
    assert f"0.50 [{low:.2f}, {high:.2f}]" in table
    assert re.search(r"xent\s+0\.75 \[\d\.\d\d, \d\.\d\d\]\s+0\.75\s+2", table)


def test_agreement_by_argmax_and_hardened_by_hand():
    p1 = np.array([0.9, 0.45, 0.4, 0.2])
    logits = np.stack([np.zeros(4), np.log(p1 / (1 - p1))], -1)
    weak = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])  # class-1 mass 0.45; argmax 1, 0, 1, 0
    truth = np.array([1, 1, 1, 0])
    # argmax: 1, 0, 0, 0. Hardened: the 0.55 quantile of p1 (0.4325) -> 1, 1, 0, 0.
    assert metrics.agreement(logits, weak, truth) == pytest.approx(
        {"agree_weak": 0.75, "agree_truth": 0.5, "hard_agree_weak": 0.5, "hard_agree_truth": 0.75})


def test_a_pair_whose_ceiling_is_not_above_its_weak_model_has_no_pgr_anywhere():
    results = [make_result(0, 0.6, 0.7, {"xent": 0.65}), make_result(1, 0.6, 0.9, {"xent": 0.9})]  # PGR 0.5, 1.0
    # The ceiling below the weak model: per seed PGR would be -1 and -0.5, entering the median.
    results += [make_result(s, 0.8, 0.7, {"xent": 0.9 - 0.05 * s}, weak_model="big", strong_model="small")
                for s in range(2)]
    rows = metrics.summarize(results)
    good, flipped = sorted(rows, key=lambda r: r["weak_model"] == "big")
    assert good["has_pgr"] and not flipped["has_pgr"]
    assert good["losses"]["xent"]["pgr"]["mean"] == pytest.approx(0.75)  # per seed
    assert good["losses"]["xent"]["pgr_of_means"] == pytest.approx((0.775 - 0.6) / (0.8 - 0.6))  # Burns et al.
    assert all(math.isnan(v) for v in flipped["losses"]["xent"]["pgr"]["values"])
    assert math.isnan(flipped["losses"]["xent"]["pgr_of_means"])
    medians = metrics.median_pgr(rows)["xent"]
    assert medians["cells"] == 1 and medians["median"] == pytest.approx(0.75)
    assert medians["of_means"] == pytest.approx(0.875)
    listed = "no PGR (the strong ceiling is not above the weak model): sciq big -> small, ceiling 0.700 <= weak 0.800"
    pgr_table = tables.format_pgr_table(rows)
    assert listed in pgr_table.splitlines() and not any(line.startswith("sciq  big") for line in pgr_table.splitlines())
    table = tables.format_table(rows).splitlines()
    assert listed in table
    assert re.search(r"no PGR\s+no PGR$", next(line for line in table if line.startswith("sciq  big")))
