"""Two processes on loopback (2 simulated CPU devices each, JAX's gloo collectives) run the pipeline's
student stage as one program over a data=1 x fsdp=2 x model=2 mesh: its losses equal a single-process
run's on the same global batches, every process gets the full predictions and parameters, and a run
killed after step 3 (its last checkpoint at step 2) and started again ends exactly where the
uninterrupted run did.

A two-process `w2s sweep` writes each stage and each results row once and equals the one-process sweep.

Run as a script, this file is one of those processes: test_distributed.py student|sweep OUT OVERRIDE...
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # per launch of the two processes: a hang fails the test instead of blocking CI
STEPS = 4  # 32 examples of split B, batch 16, 2 epochs; checkpoints at steps 2 and 4
MESH = ("--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.model=2")


def numbered_items(seed: int, n_train: int = 64, n_test: int = 32) -> dict:
    """A plug-in task that loads in no time (the data do not matter here, only the arithmetic)."""
    examples = [(f"item number {i}", i % 2) for i in range(n_train + n_test)]
    return {"train": examples[:n_train], "test": examples[n_train:]}


def load_config(overrides: list[str], experiment_file: str = "quickstart"):
    from w2s.config import apply_overrides, load_config_file

    return apply_overrides(load_config_file(ROOT / "experiments" / f"{experiment_file}.py"), overrides)


def student_run(cfg, one_device: bool = False) -> dict:
    """The pipeline's student stage (xent); returns its losses, how many evaluations it ran, and its
    final test logits and parameters as this process sees them."""
    import jax
    from flax import nnx
    from jax.experimental import multihost_utils

    from w2s import data, experiment, stages, sharding
    from w2s import train as train_module

    exp = experiment.Experiment(cfg, 0)
    if one_device:
        exp.mesh = sharding.make_mesh(devices=jax.devices()[:1])
    seen = {"evaluations": 0, "rows": sharding.process_rows(exp.mesh, 16).tolist(), "batch_rows": set(),
            "tokenized": set()}
    real_train, real_predict, real_put = stages.train, stages.predict_logits, train_module._put_batch
    real_ids = data.TextRows.ids

    def put_batch(mesh, arrays, rows, leading_axes):
        batch = real_put(mesh, arrays, rows, leading_axes)
        seen["batch_rows"].add(batch["input_ids"].shape[leading_axes])  # global rows, as the config says
        return batch

    def ids(self, indices):
        seen["tokenized"].update(self.texts[p] for p in self.positions[indices] if p not in self.cache)
        return real_ids(self, indices)

    def count(model):
        seen["evaluations"] += 1
        return {}

    def train(*args, **kwargs):
        model, history = real_train(*args, **{**kwargs, "evaluate": count})
        seen["params"] = jax.tree.leaves(multihost_utils.process_allgather(nnx.state(model), tiled=True))
        seen["losses"] = [r["loss"] for r in history if "loss" in r]
        return model, history

    def predict_logits(*args, **kwargs):
        seen["logits"] = real_predict(*args, **kwargs)  # the last call: the trained model on the test split
        return seen["logits"]

    stages.train, stages.predict_logits, train_module._put_batch = train, predict_logits, put_batch
    data.TextRows.ids = ids
    try:
        exp.run_student("xent")
    finally:
        stages.train, stages.predict_logits, train_module._put_batch = real_train, real_predict, real_put
        data.TextRows.ids = real_ids
    return {**seen, "batch_rows": sorted(seen["batch_rows"]), "tokenized": sorted(seen["tokenized"]),
            "processes": jax.process_count(), "devices": jax.device_count()}


def config(tmp_path: pathlib.Path, model_dir: pathlib.Path, name: str, *extra: str) -> list[str]:
    """A tiny student stage; its weak labels are written here, as the weak stage would have."""
    out = tmp_path / name
    (out / "seed_0").mkdir(parents=True, exist_ok=True)
    probs = np.random.default_rng(0).dirichlet([1.0, 1.0], size=32).astype(np.float32)
    np.savez(out / "seed_0" / "weak_labels.npz", probs=probs, labels=(probs[:, 1] > 0.5).astype(np.int32))
    train = dict(batch_size=16, micro_batch_size=16, epochs=2, lr=3e-3, checkpoint_every=2, eval_every=0,
                 log_every=1, eval_batch_size=32)
    return [f"--config.strong.model={model_dir}", f"--config.task={__name__}:numbered_items",
            "--config.task_options.n_train=64", "--config.task_options.n_test=32", f"--config.name={name}",
            f"--config.output_dir={out}", f"--config.checkpoint_dir={tmp_path / 'ckpt'}",
            "--config.keep_checkpoints=True", *[f"--config.strong.train.{k}={v}" for k, v in train.items()], *extra]


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(out: pathlib.Path, overrides: list[str], mode: str = "student") -> list[dict]:
    """Runs this file as processes 0 and 1 (2 CPU devices each); returns what each reported."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    procs = []
    for pid in range(2):
        argv = [*overrides, f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
        log = open(out / f"log{pid}.txt", "w")
        procs.append((subprocess.Popen([sys.executable, __file__, mode, str(out / f"proc{pid}"), *argv],
                                       env=env, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for pid, (proc, _) in enumerate(procs):
        log = (out / f"log{pid}.txt").read_text()[-3000:]
        assert proc.returncode == 0, f"process {pid} exited with {proc.returncode} (timeout {TIMEOUT_S} s):\n{log}"
    return [_load(out / f"proc{pid}") for pid in range(2)]


def _save(path: pathlib.Path, result: dict) -> None:
    np.savez(path.with_suffix(".npz"), result.pop("logits"), *result.pop("params"))
    path.with_suffix(".json").write_text(json.dumps(result))


def _load(path: pathlib.Path) -> dict:
    result = json.loads(path.with_suffix(".json").read_text())
    if path.with_suffix(".npz").exists():
        with np.load(path.with_suffix(".npz")) as f:
            result["logits"], *result["params"] = [f[f"arr_{i}"] for i in range(len(f.files))]
    return result


def test_two_processes_match_one_and_resume_exactly(tmp_path, tiny_bert):
    full = launch_two(tmp_path / "full", config(tmp_path, tiny_bert, "two", *MESH))
    reference = student_run(load_config(config(tmp_path, tiny_bert, "one")), one_device=True)
    assert np.ptp(reference["losses"]) > 100 * 2e-5  # the trajectory moves: matching it means something
    assert [got["rows"] for got in full] == [list(range(8)), list(range(8, 16))]  # each feeds its half
    # ... and tokenizes only the texts of its rows: half of each evaluation batch, part of split B.
    test_texts = [f"item number {i}" for i in range(64, 96)]
    assert len(reference["tokenized"]) == 64 and set(test_texts) < set(reference["tokenized"])
    for pid, got in enumerate(full):
        assert set(test_texts[16 * pid: 16 * (pid + 1)]) == set(got["tokenized"]) & set(test_texts)
        assert len(set(got["tokenized"]) - set(test_texts)) < 32
    for got in full:
        assert got["processes"] == 2 and got["devices"] == 4 and len(got["losses"]) == STEPS
        assert got["batch_rows"] == [16, 32]  # train and eval batches: global, not one per process
        np.testing.assert_allclose(got["losses"], reference["losses"], rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(got["logits"], reference["logits"], atol=1e-4)  # all 32 rows on each process
        for a, b in zip(got["params"], reference["params"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(full[0]["logits"], full[1]["logits"])
    for a, b in zip(full[0]["params"], full[1]["params"], strict=True):
        np.testing.assert_array_equal(a, b)

    # What a kill during step 3 leaves: the checkpoint of step 2 (saved by both processes) and no output.
    stage = tmp_path / "ckpt" / "two" / "seed_0" / "student_xent"
    assert sorted(p.name for p in stage.iterdir() if p.name.isdigit()) == ["2", "4"]
    shutil.rmtree(stage / "4")
    (tmp_path / "two" / "seed_0" / "student_xent.json").unlink()
    resumed = launch_two(tmp_path / "resumed", config(tmp_path, tiny_bert, "two", *MESH,
                                                      "--config.strong.train.eval_every=1"))
    for got in resumed:
        assert got["evaluations"] == 1  # only step 3 ran again (evaluations skip the last step)
        assert got["losses"] == full[0]["losses"]
        np.testing.assert_array_equal(got["logits"], full[0]["logits"])
        for a, b in zip(got["params"], full[0]["params"], strict=True):
            np.testing.assert_array_equal(a, b)
    assert (tmp_path / "two" / "seed_0" / "student_xent.json").exists()  # written once, by process 0


def register_pair_ladder(model_dir: str) -> None:
    from w2s.sweeps import ladders

    ladders.register("pair", [ladders.Rung("pair-l0-mean", model_dir, 1e6, num_layers=0, pooling="mean"),
                              ladders.Rung("pair-l2", model_dir, 3e6, num_layers=2)])


def sweep_config(tmp_path: pathlib.Path, name: str, *extra: str) -> list[str]:
    """Two methods of one pair: the second run skips the weak and ceiling stages the first wrote.
    Both losses are smooth: aux_conf's hard labels would flip on near-ties between meshes."""
    train = dict(batch_size=8, micro_batch_size=8, epochs=1, checkpoint_every=0, eval_batch_size=16, lr=1e-3,
                 log_every=1)
    return ["--config.models=pair-l0-mean,pair-l2", "--config.seeds=0,", "--config.methods=xent,product",
            "--config.task_options.n_train=64", "--config.task_options.n_test=32",
            *[f"--config.train.{k}={v}" for k, v in train.items()],
            f"--config.output_dir={tmp_path / name}", f"--config.checkpoint_dir={tmp_path / 'ckpt'}", *extra]


def sweep_losses(out: pathlib.Path) -> dict[str, list[float]]:
    """Each stage's logged losses, from the stage files the sweep wrote."""
    return {p.stem: [r["loss"] for r in json.loads(p.read_text())["history"] if "loss" in r]
            for p in sorted(out.glob("wordnet_living/seed_0/**/*.json"))}


def test_two_process_sweep_writes_once_and_equals_one_process(tmp_path, tiny_bert):
    from w2s.sweeps import sweep
    from w2s.sweeps.results_table import ResultsTable

    register_pair_ladder(str(tiny_bert))
    launch_two(tmp_path / "logs", [str(tiny_bert), *sweep_config(tmp_path, "two", *MESH)], mode="sweep")
    sweep.run_sweep(load_config(sweep_config(tmp_path, "one", "--config.mesh.data=-1", *MESH[1:]), "sweep_offline"))
    two, one = ResultsTable(tmp_path / "two" / "results.sqlite").rows(), ResultsTable(tmp_path / "one" / "results.sqlite").rows()
    assert [r["method"] for r in two] == ["product", "xent"]  # one row per run
    for a, b in zip(two, one, strict=True):
        for key in ("weak_acc", "ceiling_acc", "student_acc"):
            assert abs(a[key] - b[key]) <= 1 / 32, (key, a, b)  # at most one near-tie of 32 test words
    losses_two, losses_one = sweep_losses(tmp_path / "two"), sweep_losses(tmp_path / "one")
    assert len(losses_two) == 4 and losses_two.keys() == losses_one.keys()  # weak, ceiling and two students
    for stage, losses in losses_two.items():
        np.testing.assert_allclose(losses, losses_one[stage], rtol=2e-5, atol=2e-5, err_msg=stage)


if __name__ == "__main__":
    from w2s import distributed, stages
    from w2s.sweeps import sweep

    mode, out = sys.argv[1], pathlib.Path(sys.argv[2])
    if mode == "sweep":
        register_pair_ladder(sys.argv[3])
        sweep.run_sweep(load_config(sys.argv[4:], "sweep_offline"))  # it joins the run itself
        import jax

        out.with_suffix(".json").write_text(json.dumps({"process": jax.process_index()}))
    else:
        child_cfg = load_config(sys.argv[3:])
        distributed.initialize(child_cfg.distributed)  # before anything touches a device
        stages.use_compilation_cache(child_cfg)
        _save(out, student_run(child_cfg))
