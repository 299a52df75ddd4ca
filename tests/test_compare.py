"""w2s compare: labels from config differences, the numbers of metrics, refusals naming the data
that differs, and the CLI."""
import pytest

from tests.run_folders import png_pixels, write_run
from w2s.results import compare, load, metrics
from w2s.cli import main


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(tmp_path / "quickstart")
    b = write_run(tmp_path / "slow_lr", overrides=["--config.strong.train.lr=3e-5"],
                  accuracies=(0.70, 0.83, {"xent": 0.72, "aux_conf": 0.78}))
    return a, b


def test_folders_are_labelled_by_the_settings_that_differ(two_runs, tmp_path):
    folders = compare.load_folders(two_runs)
    assert [f.label for f in folders] == ["strong.train.lr=0.0001", "strong.train.lr=3e-05"]
    # Nothing differs: the folder names label them.
    same = compare.load_folders([two_runs[0], write_run(tmp_path / "again")])
    assert [f.label for f in same] == ["quickstart", "again"]


def test_many_differences_fall_back_to_the_folder_name(two_runs, tmp_path):
    c = write_run(tmp_path / "other", overrides=["--config.strong.train.lr=1e-5", "--config.weak.train.lr=1e-4",
                                                   "--config.strong.train.epochs=3", "--config.name=x"])
    assert [f.label for f in compare.load_folders([two_runs[0], c])] == ["quickstart", "other"]


def test_tables_hold_the_summary_numbers(two_runs):
    folders = compare.load_folders(two_runs)
    table = compare.results_table(folders)
    assert len(table.rows) == 4  # 2 folders x 2 methods
    row = metrics.summarize(load.load_results(two_runs[1]))[0]
    pgr = row["losses"]["aux_conf"]["pgr"]
    expected = f"{pgr['mean']:.2f} [{pgr['ci'][0]:.2f}, {pgr['ci'][1]:.2f}]"
    assert ["strong.train.lr=3e-05", "aux_conf", expected] == [table.rows[3][0], table.rows[3][4], table.rows[3][-1]]
    assert pgr["ci"][0] < pgr["mean"] < pgr["ci"][1]  # three seeds that differ: a real interval


def test_compare_writes_figures_and_markdown(two_runs, tmp_path):
    tables, paths = compare.compare(two_runs, tmp_path / "out")
    assert [p.name for p in paths] == ["compare_pgr.png", "compare_accuracy.png", "compare.md"]
    for png in paths[:2]:
        pixels = png_pixels(png)
        assert pixels.std() > 0.05  # drawn, not blank
    text = paths[2].read_text()
    assert "strong.train.lr=3e-05" in text and tables in text
    assert text.count("\n| ") == 6  # header, rule and four rows


def test_refuses_other_tasks_test_splits_and_task_options(two_runs, tmp_path):
    a = two_runs[0]
    cases = {
        "tasks differ": write_run(tmp_path / "artifact", overrides=["--config.task=wordnet_artifact"]),
        "task_options.n_test differs": write_run(tmp_path / "n_test", overrides=["--config.task_options.n_test=500"]),
        "test split of wordnet_living seed 0 differs": write_run(tmp_path / "split", test_split="ffffffffffffffff"),
    }
    for message, other in cases.items():
        with pytest.raises(ValueError, match=message + ".*--allow_different_data"):
            compare.load_folders([a, other])
        assert len(compare.load_folders([a, other], allow_different_data=True)) == 2


def test_cli_compare(two_runs, tmp_path, capsys):
    assert main(["compare", *map(str, two_runs), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "strong.train.lr=0.0001" in out and "compare_pgr.png" in out
    other = write_run(tmp_path / "n_test", overrides=["--config.task_options.n_test=500"])
    assert main(["compare", str(two_runs[0]), str(other), "--out", str(tmp_path / "out2")]) == 2
    assert "task_options.n_test differs" in capsys.readouterr().err


def test_a_sweep_beside_a_run(two_runs, tmp_path):
    from tests.run_folders import write_sweep

    folders = compare.load_folders([two_runs[0], write_sweep(tmp_path / "sweep")])
    assert [f.label for f in folders] == ["quickstart", "sweep"]  # the configs differ in too much to read
    median = compare.median_table(folders)
    assert [r[:2] for r in median.rows] == [["quickstart", "xent"], ["quickstart", "aux_conf"],
                                            ["sweep", "bootstrap"], ["sweep", "xent"]]
    assert median.rows[3][3] == "2"  # the sweep's median is over its two pairs
    tables, _ = compare.compare([two_runs[0], tmp_path / "sweep"], tmp_path / "out")
    assert "median PGR [95% CI]" in tables
