"""Tests for w2s.results.plot: both PNGs are written from fake results, and an empty dir is an error."""
import itertools
import json

import pytest

from tests.test_metrics import make_result, write_results
from w2s.results import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two tasks, two weak models, two strong models, three seeds, two losses.
CEILING = {"minilm": 0.85, "bert-base": 0.92}
WEAK = {"minilm-l1": 0.65, "minilm-l3": 0.72}


def fake_results():
    results = []
    for task, (weak, w_acc), (strong, c_acc), seed in itertools.product(
            ["sciq", "boolq"], WEAK.items(), CEILING.items(), range(3)):
        noise = 0.01 * (seed - 1)
        gap = c_acc - w_acc
        student = {"xent": w_acc + 0.4 * gap + noise, "aux_conf": w_acc + 0.7 * gap - noise}
        results.append(make_result(seed, w_acc + noise, c_acc, student, task=task,
                                   weak_model=weak, strong_model=strong))
    return results


def test_plot_results_writes_pngs(tmp_path):
    write_results(tmp_path / "results", fake_results())
    paths = plot.plot_results(tmp_path / "results", tmp_path / "plots")
    assert [p.name for p in paths] == ["pgr.png", "accuracy.png"]
    for p in paths:
        assert p.parent == tmp_path / "plots"
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000


def test_one_pair_gets_bars_of_weak_students_and_ceiling_and_pairs_get_lines(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "_plot_pair_accuracy", lambda rows, path: drawn.append("bars"))
    monkeypatch.setattr(plot, "_plot_accuracy", lambda rows, path: drawn.append("lines"))
    write_results(tmp_path / "one", [make_result(s, 0.7, 0.9, {"xent": 0.8}) for s in range(3)])
    write_results(tmp_path / "many", fake_results())
    plot.plot_results(tmp_path / "one")
    plot.plot_results(tmp_path / "many")
    assert drawn == ["bars", "lines"]


def test_a_corrupt_seed_does_not_stop_the_plot(tmp_path, capsys):
    from w2s.cli import main
    from w2s.results.load import UnreadableResultWarning

    for seed in range(3):
        (tmp_path / f"seed_{seed}").mkdir()
        (tmp_path / f"seed_{seed}" / "results.json").write_text(json.dumps(make_result(seed, 0.7, 0.9, {"xent": 0.8})))
    (tmp_path / "seed_1" / "results.json").write_text("{")
    with pytest.warns(UnreadableResultWarning, match=r"seed_1/results.json skipped.*--config.seeds=1,"):
        assert main(["plot", str(tmp_path)]) == 0
    assert "  2  " in capsys.readouterr().out  # two seeds in the table
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_results_defaults_to_results_dir(tmp_path):
    write_results(tmp_path, [make_result(0, 0.7, 0.9, {"xent": 0.8})])
    paths = plot.plot_results(tmp_path)
    assert paths == [tmp_path / "pgr.png", tmp_path / "accuracy.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_plot_results_empty_dir(tmp_path):
    with pytest.raises(ValueError, match=f"no results.json found under {tmp_path}"):
        plot.plot_results(tmp_path)
    assert not list(tmp_path.iterdir())


def test_plot_sweep_writes_its_five_figures_from_the_table(tmp_path):
    from w2s.sweeps.results_table import ResultsTable

    table = ResultsTable(tmp_path / "results.sqlite")
    params = {"s": 1e6, "m": 4e6, "l": 16e6}
    accuracy = {"s": 0.7, "m": 0.8, "l": 0.9}
    for (weak, strong), method, seed in itertools.product(
            [("s", "m"), ("s", "l"), ("m", "l"), ("l", "l")], ["xent", "aux_conf", "bootstrap"], range(3)):
        gap = accuracy[strong] - accuracy[weak]
        table.put({"task": "sciq", "weak": weak, "strong": strong, "method": method, "seed": seed,
                   "weak_acc": accuracy[weak], "ceiling_acc": accuracy[strong],
                   "student_acc": accuracy[weak] + (0.3 + 0.1 * seed) * gap,
                   "weak_params": params[weak], "strong_params": params[strong]})
    paths = plot.plot_sweep(tmp_path, tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy.png", "pgr.png", "median_pgr.png", "pgr_vs_size.png", "pgr_vs_strong.png"]
    for p in paths:
        assert p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 10_000
