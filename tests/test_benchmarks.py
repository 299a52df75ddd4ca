"""Smoke tests of the benchmark scripts on tiny shapes: they run end to end (JAX and torch), their
numbers are finite and positive, and the scaling losses agree across meshes. Timings are not checked."""
import gc
import json
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import active_learning  # noqa: E402
import harness  # noqa: E402
import matmul  # noqa: E402
import pipeline  # noqa: E402
import scaling  # noqa: E402
import scan_layers  # noqa: E402
import startup  # noqa: E402
import train_step  # noqa: E402

FAST = ["--seq", "16", "--steps", "2", "--rounds", "1", "--peak-size", "128"]


@pytest.fixture(autouse=True)
def unfreeze_gc():
    """pipeline.py and startup.py freeze what is alive, as the w2s command does; not this process's."""
    yield
    gc.unfreeze()


def positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_train_step_times_jax_and_torch(tmp_path, capsys):
    path = tmp_path / "train_step.json"
    out = train_step.main(["--model", "tiny-gpt2", "--batch", "8", "--warmup", "1", "--device", "cpu",
                           "--json", str(path), *FAST])
    assert set(out["results"]) == {"jax", "torch"}
    for r in out["results"].values():
        for key in ("step_ms", "examples_per_s", "tokens_per_s", "mfu", "loss"):
            assert positive(r[key]), (key, r)
    assert positive(out["peak_flops"]) and positive(out["torch_peak_flops"]) and positive(out["jax_over_torch"])
    assert 0 < out["mfu_params"] < out["params"]["jax"]
    assert json.loads(path.read_text())["jax_over_torch"] == out["jax_over_torch"]
    assert "JAX/torch throughput" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2"])
def test_matmul_times_every_product_of_the_step_in_both_libraries(tmp_path, model, capsys):
    path = tmp_path / "matmul.json"
    out = matmul.main(["--model", model, "--batch", "4", "--seq", "16", "--rounds", "1", "--json", str(path)])
    hf = harness.hf_config(model)
    hidden, inter, tokens = hf.hidden_size, 4 * hf.hidden_size, 4 * 16
    # Forward and backward of every dense weight: 6 FLOPs per weight and token, as MFU counts them.
    dense_flops = sum(r["per_layer"] * 2 * r["m"] * r["k"] * r["n"] for r in out["products"])
    assert dense_flops == 6 * (4 * hidden * hidden + 2 * hidden * inter) * tokens
    for r in out["products"]:
        dense = matmul.Dense(**{k: r[k] for k in ("name", "m", "k", "n", "transpose_a", "transpose_b")})
        assert dense.product(*dense.operands()).shape == (r["m"], r["n"])
        assert positive(r["jax_s"]) and positive(r["torch_s"])
    assert positive(out["attention"]["jax_s"]) and positive(out["attention"]["torch_s"])
    assert out["total_s"]["jax"] > out["dense_s"]["jax"] and json.loads(path.read_text())["total_s"] == out["total_s"]
    assert "the step's dense products" in capsys.readouterr().out


def test_host_cpu_names_the_model_cores_and_vector_unit():
    described = harness.host_cpu()
    assert f"{os.cpu_count()} cores" in described
    assert described.endswith(("AVX-512", "AVX2", "no AVX2"))


def test_scaling_losses_agree_and_fsdp_and_model_shard_state():
    out = scaling.main(["--model", "tiny-bert", "--batch", "8", "--devices", "1,2", "--loss-steps", "3", *FAST])
    rows = out["rows"]
    assert [(r["data"], r["fsdp"], r["model"]) for r in rows] == [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)]
    losses = np.array([r["loss"] for r in rows])
    assert abs(losses[0] - math.log(2)) > 1e-4  # trained states are compared, not the zero-head start
    np.testing.assert_allclose(losses, losses[0], rtol=1e-4)
    assert out["losses_agree"]
    assert rows[1]["bytes_per_device"] == rows[0]["bytes_per_device"]
    assert rows[2]["bytes_per_device"] < 0.6 * rows[0]["bytes_per_device"]
    assert rows[3]["bytes_per_device"] < 0.6 * rows[0]["bytes_per_device"]
    assert all(r["working_bytes"] > 0 for r in rows)  # XLA's plan is read on CPU
    for r in rows:
        for key in ("step_ms", "examples_per_s", "tokens_per_s", "mfu"):
            assert positive(r[key]), (key, r)


def test_pipeline_splits_every_stage_into_compile_in_step_and_outside(tmp_path, tiny_bert, capsys):
    path = tmp_path / "pipeline.json"
    out = pipeline.main([
        f"--config.weak.model={tiny_bert}", "--config.weak.num_layers=1", f"--config.strong.model={tiny_bert}",
        "--config.task_options.n_train=64", "--config.task_options.n_test=32", "--config.seeds=0,1",
        "--config.losses=xent,",
        *[f"--config.{side}.train.{k}" for side in ("weak", "strong")  # 2 steps per stage
          for k in ("batch_size=16", "micro_batch_size=16", "epochs=1", "eval_every=0")],
        "--json", str(path),
    ])
    rows = {(r["stage"], r["seed"]): r for r in out["rows"]}
    stages = ["weak", "ceiling", "student_xent"]
    assert list(rows) == [(s, seed) for seed in (0, 1) for s in stages] + [("total", None)]
    for r in rows.values():
        for key in ("wall_s", "compile_s", "in_step_s", "outside_s", "peak_rss_mib"):
            assert math.isfinite(r[key]), (key, r)
        assert r["wall_s"] > 0 and r["compile_s"] >= 0 and r["in_step_s"] > 0 and r["outside_s"] >= 0, r
        # Outside is the remainder, so it is only non-negative if no compiled time was counted twice.
        assert r["compile_s"] + r["in_step_s"] + r["outside_s"] == pytest.approx(r["wall_s"], rel=0.05)
    total = rows.pop(("total", None))
    assert sum(r["calls"] for r in rows.values()) == total["calls"]
    # The student reuses the ceiling's compiled step and forward (same model, loss and rate), and
    # the second seed every compiled function of the first.
    assert rows["weak", 0]["compile_s"] > 0 and rows["ceiling", 0]["compile_s"] > 0
    assert rows["student_xent", 0]["compile_s"] == 0 and all(rows[s, 1]["compile_s"] == 0 for s in stages)
    assert json.loads(path.read_text())["rows"] == out["rows"]
    printed = capsys.readouterr().out
    assert "outside %" in printed and printed.count("PASS") + printed.count("FAIL") == len(rows) + 1


def test_pipeline_weak_only_with_blocking_timing(tiny_bert, capsys):
    out = pipeline.main([
        f"--config.weak.model={tiny_bert}", "--config.weak.num_layers=1", "--config.task_options.n_train=64",
        "--config.task_options.n_test=32", "--config.seeds=0,",
        *[f"--config.weak.train.{k}" for k in ("batch_size=16", "micro_batch_size=16", "epochs=1", "eval_every=0")],
        "--weak-only", "--timing", "blocking",
    ])
    assert [(r["stage"], r["seed"]) for r in out["rows"]] == [("weak", 0), ("total", None)]
    assert out["timing"] == "blocking" and out["weak_only"] and out["rows"][0]["in_step_s"] > 0
    assert "timing blocking, weak stages only" in capsys.readouterr().out


def test_covered_counts_overlapping_intervals_once_and_clips_to_the_window():
    intervals = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7), (9.0, 12.0)]
    assert pipeline.covered(intervals, 0.0, 10.0) == pytest.approx(3.0 + 1.0 + 1.0)
    assert pipeline.covered(intervals, 2.5, 5.5) == pytest.approx(0.5 + 0.5)
    assert pipeline.covered([], 0.0, 1.0) == 0.0


@pytest.mark.parametrize("blocking", [False, True])
def test_async_timing_hides_host_work_done_while_a_call_computes(monkeypatch, blocking):
    """A call that computes for d seconds while the host works (sleeps) for d: with async timing that
    host work is not outside; with blocking timing it is, since the call is waited for first."""
    def matmuls(x, n):
        return jax.lax.fori_loop(0, n, lambda i, y: jnp.tanh(y @ x), x)

    monkeypatch.setattr(pipeline, "CLOCK", pipeline.Clock(blocking=blocking))
    work = pipeline.TimedJit(jax.jit(matmuls))
    x = jnp.full((512, 512), 1e-3, jnp.float32)
    work(x, 1).block_until_ready()  # compiles
    n, d = 1, 0.0
    while d < 0.3:  # as many matmuls as take 0.3 s here
        n *= 2
        start = time.perf_counter()
        work(x, n).block_until_ready()
        d = time.perf_counter() - start
    rows = []
    with pipeline.measure("stage", 0, rows):
        out = work(x, n)
        time.sleep(d)  # host work
        out.block_until_ready()
    (row,) = rows
    assert row.compiles == 0 and row.calls == 1 and row.in_step_s >= 0.5 * d
    if blocking:
        assert row.outside_s >= 0.9 * d
    else:
        assert row.outside_s < 0.5 * d


def _active_result(strategy, seed, pgrs, full_student=0.8):
    # weak 0.7, ceiling 0.9: PGR = (acc - 0.7) / 0.2; the full-weak-labels student has PGR 0.5.
    curve = [{"round": i, "queries": 50 * (i + 1), "test_accuracy": 0.7 + 0.2 * p, "pgr": p} for i, p in enumerate(pgrs)]
    return {"task": "t", "seed": seed, "strategy": strategy, "pool_size": 400, "curve": curve,
            "accuracy": {"weak": 0.7, "ceiling": 0.9, "student_xent": full_student}}


def test_active_learning_benchmark_finds_the_fewest_queries(tmp_path, capsys):
    from w2s.checkpoint import write_json_atomic

    runs = [
        _active_result("fast", 0, [0.1, 0.5, 0.4, 0.6]), _active_result("fast", 1, [0.1, 0.48, 0.5, 0.6]),
        _active_result("slow", 0, [0.1, 0.2, 0.3, 0.3]), _active_result("slow", 1, [0.1, 0.2, 0.3, 0.5]),
    ]
    for r in runs:
        write_json_atomic(tmp_path / f"seed_{r['seed']}" / "active" / r["strategy"] / "active_results.json", r)
    out = active_learning.main([str(tmp_path), "--json", str(tmp_path / "bench.json")])
    fast, slow = out["strategies"]["fast"], out["strategies"]["slow"]
    assert fast["target_pgr"] == pytest.approx(0.475)
    # Mean PGR of "fast": 0.1, 0.49, 0.45, 0.6 -> first at 100 queries, for good only from 200.
    assert (fast["first_reach"], fast["stays_from"]) == (100, 200)
    assert fast["per_seed"] == {0: 100, 1: 100}
    assert (slow["first_reach"], slow["stays_from"], slow["per_seed"]) == (None, None, {0: None, 1: 200})
    assert out["best_pool_frac"] == pytest.approx(0.25) and out["passed"]
    printed = capsys.readouterr().out
    assert "100 (25.0%)" in printed and "not reached" in printed and "PASS" in printed


def test_startup_times_each_one_time_cost(tmp_path, tiny_bert, capsys):
    path = tmp_path / "startup.json"
    out = startup.main([f"--config.weak.model={tiny_bert}", "--config.weak.num_layers=1",
                        "--config.task_options.n_train=64", "--config.task_options.n_test=32", "--json", str(path)])
    assert list(out["seconds"]) == ["task", "first tokenizer load", "first weak model build", "second weak model build"]
    assert all(positive(s) for s in out["seconds"].values())
    assert json.loads(path.read_text())["seconds"] == out["seconds"]
    assert "first tokenizer load" in capsys.readouterr().out


def test_scan_layers_benchmark_compiles_each_depth_looped_and_scanned(tmp_path, capsys):
    out = tmp_path / "scan.json"
    assert scan_layers.main(["--model", "EleutherAI/pythia-70m", "--depths", "1,2", "--micro_batch", "2",
                             "--seq_len", "16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["layers"], r["scan_layers"]) for r in rows] == [(1, False), (1, True), (2, False), (2, True)]
    assert all(r["peak_gib"] > 0 and r["compile_cpu_s"] > 0 for r in rows)
