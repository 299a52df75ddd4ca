"""The sharded train step on tiny random models: 8 simulated devices agree with 1, fsdp shards the
parameters, gradient accumulation is exact, runs resume exactly, and bad losses stop clearly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s import sharding
from w2s.data import Tokenized, one_hot
from w2s.losses import make_loss
from w2s.models.bert import Bert
from w2s.models.classifier import Classifier
from w2s.models.config import TransformerConfig
from w2s.train import NonFiniteLossError, TrainConfig, jit_train_step, predict_features, predict_logits, train

TINY = TransformerConfig(
    arch="bert", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
    intermediate_size=256, max_position=32, norm_eps=1e-12, activation="gelu", qkv_bias=True,
    type_vocab_size=2,
)


def tiny_model(dtype=jnp.float32, seed=0):
    return Classifier(Bert(TINY, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(seed)), pooling="first")


def toy_data(n=64, length=12, seed=0):
    """Label 1 when token 7 occurs: learnable, so the loss must fall."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 512, size=(n, length)).astype(np.int32)
    labels = rng.integers(0, 2, size=n)
    ids[labels == 1, rng.integers(1, length)] = 7
    mask = np.ones_like(ids)
    mask[::3, length // 2 :] = 0  # some right padding
    return Tokenized(ids, mask), labels


def run(mesh, cfg, loss="xent", targets=None, model=None, **kw):
    inputs, labels = toy_data()
    targets = one_hot(labels) if targets is None else targets
    return train(model or tiny_model(), inputs, targets, cfg, loss=make_loss(loss), mesh=mesh, seed=0,
                 desc="test", **kw)


CFG = TrainConfig(batch_size=16, micro_batch_size=16, epochs=6.0, lr=1e-3, log_every=1, checkpoint_every=2)


def losses_of(history):
    return np.array([r["loss"] for r in history if "loss" in r])


def test_eight_devices_match_one_and_fsdp_shards_parameters():
    one = sharding.make_mesh(devices=jax.devices()[:1])
    eight = sharding.make_mesh(data=2, fsdp=4)
    model_1, hist_1 = run(one, CFG)
    model_8, hist_8 = run(eight, CFG)
    np.testing.assert_allclose(losses_of(hist_8), losses_of(hist_1), rtol=2e-5, atol=2e-5)
    assert losses_of(hist_1)[-3:].mean() < losses_of(hist_1)[0] - 0.05
    inputs, _ = toy_data()
    np.testing.assert_allclose(predict_logits(model_8, inputs, eight), predict_logits(model_1, inputs, one),
                               atol=1e-4)

    params = nnx.state(tiny_model())
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    fsdp8 = sharding.make_mesh(data=1, fsdp=8)
    placed = jax.device_put(params, sharding.state_shardings(fsdp8, params))
    per_device = sharding.per_device_bytes(placed)
    assert len(per_device) == 8
    assert max(per_device.values()) / total < 1 / 8 + 0.05  # only small vectors stay replicated


@pytest.mark.parametrize("loss", ["xent", "aux_conf"])
def test_gradient_accumulation_equals_one_big_batch(loss):
    mesh = sharding.make_mesh(data=2, fsdp=1, devices=jax.devices()[:2])
    accumulated = TrainConfig(**{**CFG.__dict__, "micro_batch_size": 4})
    _, big = run(mesh, CFG, loss=loss)
    _, small = run(mesh, accumulated, loss=loss)
    np.testing.assert_allclose(losses_of(small), losses_of(big), rtol=1e-4, atol=1e-5)


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    reference, ref_hist = run(mesh, CFG, checkpoint_dir=str(tmp_path / "ref"))

    class Killed(Exception):
        pass

    def kill_at_step_3(model):
        if kill_at_step_3.calls == 2:
            raise Killed
        kill_at_step_3.calls += 1
        return {}

    kill_at_step_3.calls = 0
    eval_every = TrainConfig(**{**CFG.__dict__, "eval_every": 1})
    with pytest.raises(Killed):
        run(mesh, eval_every, checkpoint_dir=str(tmp_path / "run"), evaluate=kill_at_step_3)
    resumed, hist = run(mesh, CFG, checkpoint_dir=str(tmp_path / "run"))
    for a, b in zip(jax.tree.leaves(nnx.state(reference)), jax.tree.leaves(nnx.state(resumed))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(losses_of(hist), losses_of(ref_hist))


def test_without_a_last_checkpoint_a_finished_run_resumes_from_its_last_periodic_save(tmp_path):
    """checkpoint_last=False (a caller that deletes the checkpoints once used) saves only every
    checkpoint_every steps; a rerun then redoes the steps after the last save, to the same parameters."""
    from w2s import checkpoint

    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    every_5 = TrainConfig(**{**CFG.__dict__, "checkpoint_every": 5})  # 24 steps: saves at 5, 10, 15, 20
    reference, ref_hist = run(mesh, every_5, checkpoint_dir=str(tmp_path / "ref"))
    checkpoint.finish_saves()
    assert checkpoint.StageCheckpointer(tmp_path / "ref", save_every=5).latest_step() == 24
    run(mesh, every_5, checkpoint_dir=str(tmp_path / "run"), checkpoint_last=False)
    checkpoint.finish_saves()
    assert checkpoint.StageCheckpointer(tmp_path / "run", save_every=5).latest_step() == 20
    resumed, hist = run(mesh, every_5, checkpoint_dir=str(tmp_path / "run"), checkpoint_last=False)
    assert [r["step"] for r in hist if "loss" in r][-4:] == [21, 22, 23, 24]
    for a, b in zip(jax.tree.leaves(nnx.state(reference)), jax.tree.leaves(nnx.state(resumed))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(losses_of(hist), losses_of(ref_hist))


def test_non_finite_loss_names_the_step(tmp_path):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    inputs, labels = toy_data()
    targets = one_hot(labels)
    targets[:] = np.nan
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        run(mesh, CFG, targets=targets, checkpoint_dir=str(tmp_path))


def test_bf16_compute_keeps_float32_master_weights():
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model, hist = run(mesh, CFG, model=tiny_model(dtype=jnp.bfloat16))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
    _, ref = run(mesh, CFG)
    np.testing.assert_allclose(losses_of(hist), losses_of(ref), atol=0.05)


def test_batch_not_dividing_the_mesh_is_refused_before_compiling():
    mesh = sharding.make_mesh(data=8)
    with pytest.raises(ValueError, match="micro_batch_size 12 is not divisible by the 8 batch shards"):
        run(mesh, TrainConfig(batch_size=12, micro_batch_size=12))


def test_mesh_shape_errors_name_the_numbers():
    with pytest.raises(ValueError, match="fsdp=3 does not divide the 8 devices"):
        sharding.make_mesh(fsdp=3)
    with pytest.raises(ValueError, match="data=2 x fsdp=2 = 4 devices, but there are 8"):
        sharding.make_mesh(data=2, fsdp=2)


def test_batched_prediction_matches_the_model_called_directly():
    mesh = sharding.make_mesh(data=4, fsdp=2)
    model = tiny_model()
    model.head.kernel[...] = jax.random.normal(jax.random.key(0), model.head.kernel.shape)
    inputs, _ = toy_data(n=37)  # not a multiple of the batch: the last batch is padded and trimmed
    direct_logits = model(jnp.asarray(inputs.input_ids), jnp.asarray(inputs.attention_mask))
    direct_features = model.features(jnp.asarray(inputs.input_ids), jnp.asarray(inputs.attention_mask))
    np.testing.assert_allclose(predict_logits(model, inputs, mesh, batch_size=16), direct_logits, atol=1e-5)
    features = predict_features(model, inputs, mesh, batch_size=16)
    assert features.shape == (37, 64)
    np.testing.assert_allclose(features, direct_features, atol=1e-5)


def test_traced_schedule_updates_equal_optax_scheduled_adamw():
    """The rate is applied in the step so its length can be data; the updates must not change
    (up to float32 rounding: XLA may evaluate cos and fuse the multiplies differently)."""
    import optax

    from w2s.train import learning_rate, make_optimizer

    cfg = TrainConfig(lr=3e-4, warmup_frac=0.1, weight_decay=0.01, grad_clip=1.0)
    total, warmup = 23, cfg.warmup_steps(23)
    reference = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(
        optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1)), weight_decay=cfg.weight_decay))
    ours = make_optimizer(cfg)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    ref_state, our_state = reference.init(params), ours.init(params)
    rng = np.random.default_rng(0)
    for step in range(total + 2):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        ref_updates, ref_state = jax.jit(reference.update)(grads, ref_state, params)
        our_updates, our_state = jax.jit(ours.update)(grads, our_state, params)
        lr = jax.jit(learning_rate, static_argnums=0)(cfg.lr, jnp.int32(step), jnp.int32(warmup), jnp.int32(total))
        our_updates = jax.tree.map(lambda u: lr * u, our_updates)
        for key in params:
            np.testing.assert_allclose(np.asarray(our_updates[key]), np.asarray(ref_updates[key]), rtol=2e-6, atol=0)


def test_runs_of_different_lengths_share_one_compiled_step(monkeypatch):
    """Active-learning rounds train on growing sets: the step must not be recompiled for each."""
    from w2s import train as train_module

    made = []
    monkeypatch.setattr(train_module, "jit_train_step", lambda *a: made.append(jit_train_step(*a)) or made[-1])
    monkeypatch.setattr(train_module, "_COMPILED_STEPS", {})
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    inputs, labels = toy_data()
    for n in (16, 32, 48):
        train(tiny_model(), inputs.take(np.arange(n)), one_hot(labels[:n]), CFG, loss=make_loss("xent"),
              mesh=mesh, seed=0, desc="test")
    assert len(made) == 1 and made[0]._cache_size() == 1


def test_variants_of_a_loss_share_one_compiled_step_and_differ_in_result(monkeypatch):
    """Option values are state: schedules and alpha_max reuse the step, and still change training."""
    from w2s import train as train_module

    made = []
    monkeypatch.setattr(train_module, "jit_train_step", lambda *a: made.append(jit_train_step(*a)) or made[-1])
    monkeypatch.setattr(train_module, "_COMPILED_STEPS", {})
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    inputs, labels = toy_data()
    soft = np.clip(one_hot(labels) * 0.8 + 0.1, 0, 1)
    runs = [train(tiny_model(), inputs, soft, CFG, loss=make_loss("aux_conf", alpha_max=a, warmup_frac=w),
                  mesh=mesh, seed=0, desc="test")[1] for a, w in ((0.75, 0.2), (0.25, 1.0))]
    assert len(made) == 1 and made[0]._cache_size() == 1
    assert not np.allclose(losses_of(runs[0]), losses_of(runs[1]))


def test_background_save_holds_its_steps_state_while_training_donates_it(tmp_path):
    """StageCheckpointer writes while the next steps run; those steps donate the saved buffers,
    and the step on disk must still be the state it was given."""
    from w2s.checkpoint import StageCheckpointer

    step = jax.jit(lambda s: jax.tree.map(lambda x: x * 2.0 + 1.0, s), donate_argnums=0)
    state = {"w": jnp.arange(2_000_000, dtype=jnp.float32), "b": jnp.ones((3, 5))}
    expected = jax.tree.map(np.array, state)
    checkpointer = StageCheckpointer(tmp_path / "stage", save_every=1)
    checkpointer.save(1, state, [{"step": 1}])
    for _ in range(5):
        state = step(state)
    jax.block_until_ready(state)
    checkpointer.close()
    restored, history = StageCheckpointer(tmp_path / "stage", save_every=1).restore(state)
    assert history == [{"step": 1}]
    for key in expected:
        np.testing.assert_array_equal(np.asarray(restored[key]), expected[key])


def test_finished_run_leaves_its_last_save_writing_until_finish_saves(tmp_path):
    """A finished run returns while its last checkpoint is written (the caller evaluates meanwhile);
    finish_saves, or the next checkpointer, waits for it. A run that fails waits at once."""
    from w2s import checkpoint

    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    run(mesh, CFG, checkpoint_dir=str(tmp_path / "a"))
    assert [c.directory for c in checkpoint._LEFT_IN_FLIGHT] == [tmp_path / "a"]
    checkpoint.finish_saves()
    assert not checkpoint._LEFT_IN_FLIGHT
    assert checkpoint.StageCheckpointer(tmp_path / "a", save_every=2).latest_step() == 24

    run(mesh, CFG, checkpoint_dir=str(tmp_path / "b"))
    later = checkpoint.StageCheckpointer(tmp_path / "c", save_every=2)  # waits for b's last save first
    assert not checkpoint._LEFT_IN_FLIGHT and (tmp_path / "b" / "24").is_dir()
    later.close()

    with pytest.raises(NonFiniteLossError):
        run(mesh, CFG, targets=np.full((64, 2), np.nan, np.float32), checkpoint_dir=str(tmp_path / "d"))
    assert not checkpoint._LEFT_IN_FLIGHT
