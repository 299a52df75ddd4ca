"""Training curves from stored histories (w2s plot), and the live TensorBoard log of train()."""
import dataclasses
import struct

import jax
import pytest

from tests.run_folders import png_pixels, write_run
from tests.test_train import CFG, run
from w2s import sharding
from w2s.results import curves
from w2s.cli import main


def test_plot_curves_draws_one_figure_per_seed_with_every_stage(tmp_path, capsys):
    root = write_run(tmp_path / "run", seeds=(0, 1))
    assert list(curves.stage_records(root / "seed_0")) == ["weak", "ceiling", "student_aux_conf", "student_xent"]
    assert main(["plot", str(root)]) == 0
    assert "curves_seed_1.png" in capsys.readouterr().out
    for seed in (0, 1):
        pixels = png_pixels(root / f"curves_seed_{seed}.png")
        assert ((pixels.max(-1) - pixels.min(-1)) > 0.3).mean() > 0.002  # coloured lines, not an empty frame


def test_accuracy_curve_ends_with_the_final_evaluation():
    history = [{"step": 5, "test_accuracy": 0.6}, {"step": 10, "loss": 0.5}]
    assert curves.test_accuracy_curve({"history": history, "test_accuracy": 0.7}) == ([5, 10], [0.6, 0.7])
    # Early stopping reports the selected evaluation; the curve still ends where training ended.
    stopped = {"history": history, "test_accuracy": 0.6, "final_test_accuracy": 0.65}
    assert curves.test_accuracy_curve(stopped) == ([5, 10], [0.6, 0.65])


def read_scalars(logdir):
    """(tag, step) -> value from tensorboardX's event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in logdir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset: offset + 8])
            event = Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_train_logs_every_history_row_to_tensorboard_as_it_goes(tmp_path):
    pytest.importorskip("tensorboardX")
    from w2s.progress import TensorBoardLog

    log = TensorBoardLog(tmp_path / "tb")
    seen = []

    def on_log(row):
        seen.append(row)
        log(row)

    _, history = run(sharding.make_mesh(devices=jax.devices()[:1]), dataclasses.replace(CFG, eval_every=6),
                     evaluate=lambda model: {"test_accuracy": 0.5}, on_log=on_log, show_progress=False)
    log.close()
    assert seen == history and any("test_accuracy" in r for r in history)
    expected = {(k, r["step"]): v for r in history for k, v in r.items() if k != "step"}
    assert read_scalars(tmp_path / "tb") == pytest.approx(expected)
