"""One compiled train step per model: the step that picks its loss from the state (LossTable of every
registered loss) gives each loss the same losses, gradients and parameters as that loss's own
program, the ceiling and the students share it, and a step compiled ahead is the one `train` runs."""
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from tests.test_train import CFG, losses_of, tiny_model, toy_data
from w2s import sharding
from w2s import train as train_module
from w2s.data import one_hot
from w2s.losses import LOSSES, LossTable, make_loss
from w2s.train import TrainConfig, batch_widths, compile_ahead, init_train_state, jit_train_step, make_train_step, train

MESH = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
# Every registered loss, and the threshold's other paths: a running estimate, and accumulation
# (the confidence loss's threshold then comes from a forward pass over the whole effective batch).
CASES = [(name, {}, 1) for name in LOSSES.names()] + [
    ("aux_conf", {"threshold_decay": 0.5, "alpha_max": 0.5}, 1), ("aux_conf", {}, 2), ("xent", {}, 2)]


def soft_targets(labels):
    return np.clip(one_hot(labels) * 0.7 + 0.15 + 0.1 * np.random.default_rng(1).random((len(labels), 1)), 0, 1)


def trajectory(table: LossTable, loss, accum: int, steps: int = 4):
    """Per-step losses and parameter updates of plain gradient steps (optax.identity at rate 0.05,
    so each update is the gradient scaled), then the final parameters."""
    inputs, labels = toy_data(n=32)
    targets = soft_targets(labels)
    optimizer = optax.identity()
    graphdef, state, state_sh = init_train_state(tiny_model(), optimizer, MESH, steps, 1, 0.05, loss, table)
    state = {**state, "warmup_steps": jax.device_put(np.int32(0))}  # a full rate from the first step
    step = jit_train_step(make_train_step(graphdef, optimizer, table), MESH, state_sh)
    values, updates = [], []
    for s in range(steps):
        idx = np.arange(s * 8, s * 8 + 8).reshape(accum, -1)
        batch = {**{k: v.reshape(accum, 8 // accum, -1) for k, v in inputs.batch(idx.reshape(-1)).items()},
                 "targets": targets[idx].astype(np.float32)}
        before = jax.tree.map(np.asarray, state["params"])
        state, metrics = step(state, jax.device_put(batch))
        values.append(float(metrics["loss"]))
        updates.append(jax.tree.map(lambda new, old: np.asarray(new) - old, state["params"], before))
    return np.array(values), updates, jax.tree.map(np.asarray, state["params"])


@pytest.mark.parametrize("name,options,accum", CASES)
def test_shared_step_gives_each_loss_its_own_programs_results(name, options, accum):
    loss = make_loss(name, **options)
    own = trajectory(LossTable((name,)), loss, accum)
    shared = trajectory(LossTable.of(loss), loss, accum)
    np.testing.assert_allclose(shared[0], own[0], rtol=1e-6, atol=1e-7)
    assert own[0][-1] != own[0][0]  # it trained
    for a, b in zip(jax.tree.leaves(shared[1]), jax.tree.leaves(own[1])):  # gradients, step by step
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(shared[2]), jax.tree.leaves(own[2])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ceiling_and_students_share_one_compiled_step(monkeypatch):
    made = []
    monkeypatch.setattr(train_module, "jit_train_step", lambda *a: made.append(jit_train_step(*a)) or made[-1])
    monkeypatch.setattr(train_module, "_COMPILED_STEPS", {})
    inputs, labels = toy_data()
    cfg = TrainConfig(batch_size=16, micro_batch_size=16, epochs=1.0, lr=1e-3, log_every=1)
    runs = {name: losses_of(train(tiny_model(), inputs, soft_targets(labels), cfg, loss=make_loss(name), mesh=MESH,
                                  seed=0, desc="test")[1]) for name in ("xent", "aux_conf", "product")}
    assert len(made) == 1 and made[0]._cache_size() == 1
    assert not np.allclose(runs["xent"], runs["product"])


def test_a_step_compiled_ahead_is_the_one_train_runs(monkeypatch):
    """Compiled ahead from the abstract model, the step runs without jit compiling, to the same result."""
    made = []
    monkeypatch.setattr(train_module, "jit_train_step", lambda *a: made.append(jit_train_step(*a)) or made[-1])
    monkeypatch.setattr(train_module, "_COMPILED_STEPS", {})
    inputs, labels = toy_data()
    targets = soft_targets(labels)
    widths = batch_widths(inputs, CFG, seed=0)
    assert widths == [12]  # toy rows: 12 tokens, some right-padded
    futures = compile_ahead(nnx.eval_shape(tiny_model), CFG, make_loss("aux_conf"), MESH, widths)
    assert len(made) == 1 and len(futures) == 1
    model, history = train(tiny_model(), inputs, targets, CFG, loss=make_loss("aux_conf"), mesh=MESH, seed=0, desc="t")
    assert futures[0].done() and made[0]._cache_size() == 0  # jit itself compiled nothing
    monkeypatch.setattr(train_module, "_COMPILED_STEPS", {})
    _, expected = train(tiny_model(), inputs, targets, CFG, loss=make_loss("aux_conf"), mesh=MESH, seed=0, desc="t")
    np.testing.assert_array_equal(losses_of(history), losses_of(expected))
