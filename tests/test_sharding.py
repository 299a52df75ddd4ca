"""The (data, fsdp, model) mesh on 8 simulated CPU devices: Megatron partition rules for every
architecture, a data x fsdp x model run that matches 1 device while each device holds a quarter of
the parameters, and shapes that do not divide refused with their numbers before anything compiles."""
import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests.test_train import CFG, TINY, losses_of, run, tiny_model, toy_data
from w2s import sharding
from w2s.models.classifier import Classifier
from w2s.models.family import new_backbone
from w2s.train import TrainConfig, predict_logits

WIDE = dataclasses.replace(TINY, hidden_size=128, head_dim=32, intermediate_size=512)  # k/v past min_size
ARCHS = {
    "bert": WIDE,
    "gpt2": dataclasses.replace(WIDE, arch="gpt2", activation="gelu_new", type_vocab_size=0),
    "llama": dataclasses.replace(WIDE, arch="llama", num_kv_heads=2, activation="silu", qkv_bias=True),  # Qwen2
}
COLUMN, ROW = P("fsdp", "model"), P("model", "fsdp")
EXPECTED = {  # (module, parameter) -> spec; the embedding is not tensor-parallel but is split both ways
    ("query", "kernel"): COLUMN, ("key", "kernel"): COLUMN, ("value", "kernel"): COLUMN, ("out", "kernel"): ROW,
    ("mlp_in", "kernel"): COLUMN, ("mlp_out", "kernel"): ROW,
    ("mlp_gate", "kernel"): COLUMN, ("mlp_up", "kernel"): COLUMN, ("mlp_down", "kernel"): ROW,
    ("token_embed", "embedding"): P("fsdp", "model"), ("mlp_norm", "scale"): P(),
}


def specs_by_name(mesh, arch):
    abstract = nnx.state(nnx.eval_shape(lambda: Classifier(new_backbone(ARCHS[arch], rngs=nnx.Rngs(0)), "last")))
    flat = jax.tree_util.tree_flatten_with_path(sharding.state_shardings(mesh, abstract))[0]
    return {tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))[-2:]: s.spec for path, s in flat}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_megatron_rules_split_heads_and_mlp_hidden_over_model(arch):
    specs = specs_by_name(sharding.make_mesh(data=2, fsdp=2, model=2), arch)
    present = {name: spec for name, spec in specs.items() if name in EXPECTED}
    assert present == {name: EXPECTED[name] for name in present}
    gated = {("mlp_gate", "kernel"), ("mlp_up", "kernel"), ("mlp_down", "kernel")}
    assert gated <= set(present) if arch == "llama" else ("mlp_in", "kernel") in present
    # model=1 leaves exactly the fsdp rule: the largest divisible axis of each large array.
    fsdp_only = specs_by_name(sharding.make_mesh(data=2, fsdp=4), arch)
    assert fsdp_only[("mlp_out", "kernel") if arch != "llama" else ("mlp_down", "kernel")] == P("fsdp", None)
    assert fsdp_only[("token_embed", "embedding")] == P("fsdp", None)


def test_data_fsdp_model_mesh_matches_one_device_on_a_quarter_of_the_memory():
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 2.0})  # 8 steps
    one = sharding.make_mesh(devices=jax.devices()[:1])
    cube = sharding.make_mesh(data=2, fsdp=2, model=2)
    model_1, hist_1 = run(one, cfg)
    model_8, hist_8 = run(cube, cfg)
    np.testing.assert_allclose(losses_of(hist_8), losses_of(hist_1), rtol=2e-5, atol=2e-5)
    assert np.ptp(losses_of(hist_1)) > 0.03  # the trajectory moves 1000x the tolerance: the match means something
    inputs, _ = toy_data()
    np.testing.assert_allclose(predict_logits(model_8, inputs, cube), predict_logits(model_1, inputs, one), atol=1e-4)

    params = nnx.state(tiny_model())
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    for mesh, share in ((sharding.make_mesh(data=2, fsdp=2, model=2), 1 / 4),
                        (sharding.make_mesh(data=1, fsdp=2, model=4), 1 / 8)):
        per_device = sharding.per_device_bytes(jax.device_put(params, sharding.state_shardings(mesh, params)))
        assert len(per_device) == 8
        assert share < max(per_device.values()) / total < share + 0.05  # small vectors stay replicated


def test_each_process_feeds_the_rows_its_devices_hold():
    mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
    np.testing.assert_array_equal(sharding.process_rows(mesh, 8), np.arange(8))  # one process holds all


def test_shapes_that_do_not_divide_are_refused_with_their_numbers():
    with pytest.raises(ValueError, match="data=2 x fsdp=2 x model=3 = 12 devices, but there are 8"):
        sharding.make_mesh(data=2, fsdp=2, model=3)
    with pytest.raises(ValueError, match="fsdp=1 x model=3 does not divide the 8 devices"):
        sharding.make_mesh(model=3)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.make_mesh(data=-1, model=-1)
    cube = sharding.make_mesh(data=2, fsdp=2, model=2)
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the 4 batch shards .*model=2"):
        sharding.check_batch_size(cube, 6)
    with pytest.raises(ValueError, match="micro_batch_size 6 is not divisible by the 4 batch shards"):
        run(cube, TrainConfig(batch_size=12, micro_batch_size=6))
    with pytest.raises(ValueError, match="model=8 does not divide its 4 attention heads and 2 key/value heads"):
        sharding.check_heads(sharding.make_mesh(data=1, model=8), 4, 2, "tiny llama")


def test_a_model_axis_that_splits_heads_is_refused_before_training(tmp_path, capsys):
    from w2s.cli import main

    quickstart = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "quickstart.py"
    code = main(["run", str(quickstart), "--config.mesh.data=1", "--config.mesh.model=8",
                 "--config.task_options.n_train=64", "--config.task_options.n_test=32", "--config.seeds=0,",
                 f"--config.output_dir={tmp_path / 'out'}", f"--config.checkpoint_dir={tmp_path / 'ck'}"])
    assert code == 2
    assert "weak (seed 0): mesh model=8 does not divide its 12 attention heads" in capsys.readouterr().err
    assert not (tmp_path / "ck" / "quickstart" / "seed_0").exists()  # nothing trained, nothing saved
