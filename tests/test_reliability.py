"""Reliability: a run killed with SIGKILL at random points resumes to exactly the results of an
uninterrupted run and never redoes a finished stage; damaged checkpoints and result files are
reported with their path and recomputed; a non-finite loss keeps the last good checkpoint; results
carry the seed and every library version.

Run as a module (python -m tests.test_reliability OUT MODEL_DIR XLA_CACHE) it is the child process
that the kill test starts and kills: the tiny pipeline of tests/test_pipeline.py, then active learning.
"""
import dataclasses
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time
from importlib import metadata

import jax
import numpy as np
import pytest
from flax import nnx

from tests.test_active import active_config
from tests.test_pipeline import small_config
from tests.test_train import CFG, run, toy_data
from w2s import experiment, stages, runtime, sharding
from w2s.checkpoint import (CorruptFileWarning, finish_saves, read_npz, read_record, write_json_atomic,
                            write_npz_atomic)
from w2s.data import batch_indices, one_hot
from w2s.train import NonFiniteLossError
from w2s.train import train as real_train

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED_DIR = pathlib.Path("results") / "seed_0"
ACTIVE_DIR = SEED_DIR / "active" / "bald_kcenter"
CKPT_DIR = pathlib.Path("ckpt") / "quickstart" / "seed_0"
STAGES = {"weak": ("weak.json", "weak_labels.npz"), "ceiling": ("ceiling.json",),
          "student_xent": ("student_xent.json",)}
WEAK_STEPS = 6  # 32 examples of split A, batch 16, 3 epochs
CHILD_TIMEOUT_S = 240
CHILD_ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # 8 are slow on 2 cores


def chain_config(out: pathlib.Path, model_dir: str):
    """tests/test_active's loop after the pipeline's stages, with a loss logged every step and long
    enough stages (weak 6 steps, ceiling and student 8, rounds 2, 4 and 6) to be killed inside."""
    return active_config(out, model_dir, "--config.weak.train.epochs=3", "--config.weak.train.log_every=1",
                         "--config.strong.train.log_every=1", "--config.strong.train.eval_every=0")


def damage(path: pathlib.Path, how: str, rng: np.random.Generator) -> None:
    """Cuts a file to half its length, or overwrites it with as many random bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else rng.bytes(max(len(data), 16)))


def corrupt_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CorruptFileWarning)]


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


# -- killed with SIGKILL, resumed -------------------------------------------------------------------

def start_child(out: pathlib.Path, model_dir, log: pathlib.Path) -> subprocess.Popen:
    """All children of one test share a compilation cache (beside `out`), so that only the first
    compiles: the others spend their time on the stages they resume."""
    with open(log, "w") as f:  # the child holds its own descriptor; tqdm's progress lines go here
        return subprocess.Popen([sys.executable, "-m", "tests.test_reliability", str(out), str(model_dir),
                                 str(out.parent / "xla_cache")],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=CHILD_ENV)


def wait(proc: subprocess.Popen, log: pathlib.Path) -> int:
    try:
        return proc.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"child ran over {CHILD_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def has_step(folder: pathlib.Path) -> bool:
    """Whether an orbax step folder (a number; half-written ones carry a suffix) exists in `folder`."""
    try:
        return any(p.name.isdigit() for p in folder.iterdir())
    except FileNotFoundError:
        return False


def kill_when(proc: subprocess.Popen, ready, delay: float, log: pathlib.Path) -> None:
    """SIGKILLs the child `delay` seconds after `ready()` first holds; fails if it ends before."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"child ended (rc {proc.returncode}) before its kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"kill point not reached in {CHILD_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, f"child ended before the kill:\n{log.read_text()[-3000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def finished(out: pathlib.Path) -> dict[str, list[tuple[int, int]]]:
    """(inode, mtime) of each finished stage's files: a stage recomputed would change them."""
    run_dir = out / SEED_DIR
    return {stage: [((run_dir / f).stat().st_ino, (run_dir / f).stat().st_mtime_ns) for f in files]
            for stage, files in STAGES.items() if all((run_dir / f).exists() for f in files)}


def finished_rounds(out: pathlib.Path) -> list[dict]:
    path = out / ACTIVE_DIR / "rounds.json"
    return [r for r in json.loads(path.read_text()) if "test_accuracy" in r] if path.exists() else []


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("examples_per_s", "tokens_per_s")} for r in history]


def outcome(out: pathlib.Path) -> tuple[str, dict[str, np.ndarray]]:
    """Everything a run computed, less wall-clock times and paths, as JSON (so a NaN PGR of equal
    accuracies equals itself), and its weak labels."""
    run_dir, active_dir = out / SEED_DIR, out / ACTIVE_DIR
    results = json.loads((run_dir / "results.json").read_text())
    active = json.loads((active_dir / "active_results.json").read_text())
    rounds = json.loads((active_dir / "rounds.json").read_text())
    stages = {stage: json.loads((run_dir / files[0]).read_text()) for stage, files in STAGES.items()}
    with np.load(run_dir / "weak_labels.npz") as f:
        labels = {k: f[k] for k in f.files}
    return json.dumps({
        "results": {k: results[k] for k in ("seed", "accuracy", "pgr", "weak_label_accuracy", "num_examples")},
        "stages": {s: (r["test_accuracy"], without_timing(r["history"])) for s, r in stages.items()},
        "active": {k: active[k] for k in ("accuracy", "curve", "pool_size")},
        "rounds": [(r["selected"], r["queries"], r["test_accuracy"], without_timing(r["history"])) for r in rounds],
        "queries": (active_dir / "queries.jsonl").read_text(),
    }, indent=1, sort_keys=True), labels


def test_sigkilled_run_resumes_exactly_without_redoing_finished_stages(tmp_path, tiny_bert):
    reference = tmp_path / "reference"
    assert wait(start_child(reference, tiny_bert, tmp_path / "reference.log"), tmp_path / "reference.log") == 0, \
        (tmp_path / "reference.log").read_text()[-3000:]
    expected, expected_labels = outcome(reference)
    recorded = json.loads((reference / SEED_DIR / "results.json").read_text())["versions"]
    assert recorded == {**experiment.versions(), "devices": "1 x cpu", "xla_flags": CHILD_ENV["XLA_FLAGS"],
                        "host_memory": runtime.NOT_CALLED}  # the child runs the library, not the w2s command

    out, rng = tmp_path / "killed", random.Random(7)
    ckpt, run_dir = out / CKPT_DIR, out / SEED_DIR
    round_ = rng.choice([1, 2])

    def training(stage: str):  # a step of `stage` is saved (or, if a kill came late, the stage is done)
        return lambda: has_step(ckpt / stage) or (run_dir / f"{stage}.json").exists()

    kill_points = [  # (what runs then, when the kill is due) in pipeline order; each plus a random delay
        ("weak training", training("weak")),
        ("weak labelling", lambda: (ckpt / "weak" / str(WEAK_STEPS)).is_dir() or (run_dir / "weak.json").exists()),
        ("ceiling training", training("ceiling")),
        ("student training", training("student_xent")),
        (f"active round {round_}", lambda: has_step(ckpt / "active_bald_kcenter" / f"round_{round_}")),
    ]
    first_seen: dict[str, list] = {}
    rounds_seen: list[dict] = []
    for i, (what, ready) in enumerate([*kill_points, ("nothing: runs to the end", None)]):
        done_before, log = finished(out), tmp_path / f"run_{i}.log"
        proc = start_child(out, tiny_bert, log)
        if ready is None:
            assert wait(proc, log) == 0, log.read_text()[-3000:]
        else:
            kill_when(proc, ready, rng.uniform(0.0, 0.4), log)
        for stage in done_before:  # a finished stage never trains (or logs) again
            assert f"{stage} (seed 0)" not in log.read_text(), f"{stage} recomputed after a kill in {what}"
        for stage, stat in finished(out).items():
            first_seen.setdefault(stage, stat)
        rounds_seen = rounds_seen + finished_rounds(out)[len(rounds_seen):]
    assert set(first_seen) == set(STAGES) and finished(out) == first_seen  # same files, never rewritten
    assert finished_rounds(out) == rounds_seen  # finished rounds kept as they were (their times too)

    got, labels = outcome(out)
    assert got == expected
    for key in expected_labels:
        np.testing.assert_array_equal(labels[key], expected_labels[key])

    # A damaged rounds.json is reported; the rounds run again on the labels already bought.
    damage(out / ACTIVE_DIR / "rounds.json", "garbage", np.random.default_rng(0))
    log = tmp_path / "damaged.log"
    assert wait(start_child(out, tiny_bert, log), log) == 0, log.read_text()[-3000:]
    assert re.search(rf"CorruptFileWarning: {re.escape(str(out / ACTIVE_DIR / 'rounds.json'))} is unreadable",
                     log.read_text())
    assert not any(f"{stage} (seed 0)" in log.read_text() for stage in STAGES)
    assert outcome(out)[0] == expected  # queries.jsonl included: nothing bought twice


# -- damaged result files and checkpoints -----------------------------------------------------------

def test_damaged_stage_files_are_reported_and_only_their_stage_reruns(tmp_path, tiny_bert, monkeypatch):
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,")
    (expected,) = experiment.run_experiment(cfg)
    run_dir = tmp_path / "results" / "seed_0"
    with np.load(run_dir / "weak_labels.npz") as f:
        expected_probs = f["probs"]
    rng = np.random.default_rng(0)
    for damaged in ({"weak_labels.npz": "truncate", "ceiling.json": "garbage"},
                    {"weak.json": "garbage", "student_xent.json": "truncate"}):
        for name, how in damaged.items():
            damage(run_dir / name, how, rng)
        trained = []
        monkeypatch.setattr(stages, "train", lambda *a, **k: trained.append(k["desc"]) or real_train(*a, **k))
        with pytest.warns(CorruptFileWarning) as caught:
            (results,) = experiment.run_experiment(cfg)
        assert {m.split(" is unreadable")[0] for m in corrupt_warnings(caught)} == {str(run_dir / n) for n in damaged}
        retrained = {"weak" if n.startswith("weak") else n.removesuffix(".json") for n in damaged}
        assert sorted(trained) == sorted(f"{stage} (seed 0)" for stage in retrained)  # each once, nothing else
        assert results["accuracy"] == expected["accuracy"] and results["pgr"] == expected["pgr"]
        with np.load(run_dir / "weak_labels.npz") as f:
            np.testing.assert_array_equal(f["probs"], expected_probs)


@pytest.mark.parametrize("how", ["truncate", "garbage", "flip"])
def test_damaged_npz_and_json_read_as_missing_with_a_warning(tmp_path, how):
    write_npz_atomic(tmp_path / "a.npz", probs=np.linspace(0, 1, 64).reshape(32, 2), labels=np.arange(32) % 2)
    write_json_atomic(tmp_path / "a.json", {"test_accuracy": 0.5, "seconds": 1.0})
    assert read_npz(tmp_path / "a.npz", ("probs", "labels")) is not None and read_record(tmp_path / "a.json")
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    for path in (tmp_path / "a.npz", tmp_path / "a.json"):
        if how == "flip":  # one bit in the middle: zip's CRC catches it; JSON may still parse, so no claim
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 1
            path.write_bytes(bytes(data))
        else:
            damage(path, how, np.random.default_rng(2))
    with pytest.warns(CorruptFileWarning, match=re.escape(f"{tmp_path / 'a.npz'} is unreadable")):
        assert read_npz(tmp_path / "a.npz", ("probs", "labels")) is None
    if how != "flip":
        with pytest.warns(CorruptFileWarning, match=re.escape(f"{tmp_path / 'a.json'} is unreadable")):
            assert read_record(tmp_path / "a.json") is None
    assert read_record(tmp_path / "missing.json") is None and read_npz(tmp_path / "missing.npz", ()) is None


@pytest.fixture(scope="module")
def clean_params():
    """Parameters after an uninterrupted run of tests/test_train's tiny model (24 steps)."""
    return params_of(run(sharding.make_mesh(devices=jax.devices()[:1]), CFG)[0])


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_damaged_checkpoint_falls_back_to_an_older_step_then_starts_over(tmp_path, how, clean_params):
    mesh, ckpt, rng = sharding.make_mesh(devices=jax.devices()[:1]), tmp_path / "stage", np.random.default_rng(1)

    class Killed(Exception):
        pass

    def killed_at_step_5(model):
        killed_at_step_5.calls += 1
        if killed_at_step_5.calls == 5:
            raise Killed
        return {}

    killed_at_step_5.calls = 0
    with pytest.raises(Killed):
        run(mesh, dataclasses.replace(CFG, eval_every=1), checkpoint_dir=str(ckpt), evaluate=killed_at_step_5)
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["2", "4"]  # the two newest are kept

    def damage_step(step: int) -> None:
        for path in sorted((ckpt / str(step)).rglob("*")):
            if path.is_file():
                damage(path, how, rng)

    damage_step(4)
    with pytest.warns(CorruptFileWarning) as caught:
        resumed, _ = run(mesh, CFG, checkpoint_dir=str(ckpt))
    (message,) = corrupt_warnings(caught)
    assert message.startswith(f"{ckpt / '4'} is unreadable") and message.endswith("deleted; trying step 2")
    for a, b in zip(params_of(resumed), clean_params):
        np.testing.assert_array_equal(a, b)

    finish_saves()  # a finished run's last step may still be writing when train returns
    damage_step(24)  # the finished run keeps steps 22 and 24; with both damaged it starts over
    damage_step(22)
    with pytest.warns(CorruptFileWarning) as caught:
        again, _ = run(mesh, CFG, checkpoint_dir=str(ckpt))
    messages = corrupt_warnings(caught)
    assert [m.split(" is unreadable")[0] for m in messages] == [str(ckpt / "24"), str(ckpt / "22")]
    assert messages[1].endswith("the stage starts over")
    for a, b in zip(params_of(again), clean_params):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_names_step_and_batch_and_keeps_the_last_good_checkpoint(tmp_path, clean_params):
    mesh, ckpt = sharding.make_mesh(devices=jax.devices()[:1]), str(tmp_path / "stage")
    _, labels = toy_data()
    targets = one_hot(labels)
    step_3 = batch_indices(len(labels), CFG.batch_size, seed=0, step=2)
    targets[step_3] = np.nan  # only the third step's batch is bad
    logged_rarely = dataclasses.replace(CFG, log_every=10)  # checkpoints at 2, 4, ...: step 4 must not be saved
    message = (rf"at step 3 \(the batch of example indices {re.escape(str(step_3[:8].tolist()))}\.\.\.\); "
               rf"the last good checkpoint \(step 2\) is kept in {re.escape(ckpt)}")
    with pytest.raises(NonFiniteLossError, match=message):
        run(mesh, logged_rarely, targets=targets, checkpoint_dir=ckpt)
    resumed, history = run(mesh, CFG, checkpoint_dir=ckpt)  # good targets, on from the kept step
    assert [r["step"] for r in history if "loss" in r][0] == 3  # steps 1 and 2 came from the checkpoint
    for a, b in zip(params_of(resumed), clean_params):
        np.testing.assert_array_equal(a, b)


# -- what a result records ------------------------------------------------------------------------

def test_versions_cover_every_requirement():
    recorded = experiment.versions()
    for requirement in metadata.requires("w2s"):
        name, _, marker = requirement.partition(";")
        name = re.match(r"[A-Za-z0-9._-]+", name).group()
        if not marker or "hub" in marker:
            assert recorded[name] == metadata.version(name), name
    assert recorded["w2s_commit"] and recorded["python"] and recorded["devices"].endswith("cpu")


def share_compilation_cache(folder: str) -> None:
    """The pipeline's cache (<checkpoint_dir>/xla_cache, programs that took over 1 s to compile) moved
    to `folder` and made to keep every program."""
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


if __name__ == "__main__":
    from w2s.active_learning import active

    stages.use_compilation_cache = lambda cfg: share_compilation_cache(sys.argv[3])
    active.run_active_experiment(chain_config(pathlib.Path(sys.argv[1]), sys.argv[2]))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_result_files_get_the_mode_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        write_npz_atomic(tmp_path / "b.npz", x=np.zeros(2))
        (tmp_path / "plain").touch()  # what open() gives any other file
    finally:
        os.umask(old)
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    assert [(tmp_path / name).stat().st_mode & 0o777 for name in ("a.json", "b.npz")] == [expected, expected]
