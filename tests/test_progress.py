"""The run's overall progress: its plan, its ETA from finished stages, quiet lines for logs."""
import ml_collections

from w2s.experiment import Experiment
from w2s.progress import PlannedStage, RunProgress, format_seconds


def test_plan_is_every_seed_times_every_stage_in_run_order():
    cfg = ml_collections.ConfigDict(dict(seeds=(3, 4), losses=("xent", "product")))
    plan = Experiment.plan(cfg)
    assert [s.label for s in plan[:4]] == ["seed 3 weak", "seed 3 ceiling", "seed 3 student_xent",
                                           "seed 3 student_product"]
    assert len(plan) == 8 and [s.model for s in plan[4:]] == ["weak", "strong", "strong", "strong"]


def test_eta_estimates_each_stage_left_from_finished_stages_of_its_model(capsys):
    plan = [PlannedStage(f"s{i}", model) for i, model in enumerate(["weak", "strong", "strong"] * 2)]
    progress = RunProgress(plan, quiet=True)
    assert progress.eta() is None
    progress.finished(None)  # read back from disk: no time to learn from
    assert progress.eta() is None
    progress.finished(30.0)  # a strong stage; no weak one has trained, so weak ones take the mean too
    assert progress.eta() == 30.0 * 4
    progress.finished(10.0)
    progress.finished(2.0)  # weak
    assert progress.eta() == 20.0 + 20.0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].endswith("s0: read back")
    assert lines[3].startswith("[4/6 stages, ") and lines[3].endswith("s3: 0m02s; ETA 0m40s")
    progress.close()


def test_bar_counts_stages_and_shows_the_eta(capsys):
    with RunProgress([PlannedStage("a", "weak"), PlannedStage("b", "weak")]) as progress:
        progress.finished(65.0)
        assert progress._bar.n == 1 and progress._bar.postfix == "ETA 1m05s"
    assert "1/2 stages" in capsys.readouterr().err
    assert format_seconds(7322) == "2h02m"
