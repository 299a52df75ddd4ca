"""Losses against values computed by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import losses
from w2s.losses.aux_conf import alpha_schedule


def _logits_for_p1(p1):
    """Two-class logits [0, log(p1/(1-p1))] whose softmax gives class-1 probability p1."""
    p1 = np.asarray(p1, np.float64)
    return jnp.asarray(np.stack([np.zeros_like(p1), np.log(p1 / (1 - p1))], -1), jnp.float32)


def test_soft_cross_entropy_by_hand():
    logits = _logits_for_p1([0.5, 0.25])
    targets = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    expected = (-math.log(0.5) - math.log(0.75)) / 2
    assert float(losses.soft_cross_entropy(logits, targets)) == pytest.approx(expected, rel=1e-6)
    soft = jnp.array([[0.3, 0.7], [0.6, 0.4]])
    expected_soft = -(0.3 * math.log(0.5) + 0.7 * math.log(0.5) + 0.6 * math.log(0.75) + 0.4 * math.log(0.25)) / 2
    assert float(losses.soft_cross_entropy(logits, soft)) == pytest.approx(expected_soft, rel=1e-6)


def test_balanced_threshold_matches_weak_class_balance():
    logits = _logits_for_p1([0.1, 0.4, 0.6, 0.9])
    weak = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.1, 0.9]])  # mean class-1 mass 0.25
    threshold = losses.balanced_threshold(logits, weak)
    # (1 - 0.25) quantile of [0.1, 0.4, 0.6, 0.9] by linear interpolation: 0.6 + 0.25 * 0.3.
    assert float(threshold) == pytest.approx(0.675, abs=1e-5)
    hard = losses.hard_targets(logits, threshold)
    np.testing.assert_array_equal(np.asarray(hard), [[1, 0], [1, 0], [1, 0], [0, 1]])
    assert float(hard[:, 1].mean()) == pytest.approx(float(weak[:, 1].mean()))


FRACS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.6, 0.7, 0.99)


def schedule(**options):
    return [float(alpha_schedule(jnp.float32(f), **options)) for f in FRACS]


def test_alpha_ramps_linearly_then_holds():
    assert schedule(alpha_max=0.5, warmup_frac=0.2) == pytest.approx(
        [0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert schedule(alpha_max=0.5, warmup_frac=1.0) == pytest.approx([0.5 * f for f in FRACS])
    assert schedule(alpha_max=0.5, warmup_frac=0.0) == pytest.approx([0.5] * len(FRACS))


def test_openai_schedule_is_step_fraction_then_full():
    # weak_to_strong/loss.py: coef = aux_coef * (step_frac if step_frac <= warmup_frac else 1).
    assert schedule(alpha_max=0.5, warmup_frac=1.0, full_after_frac=0.1) == pytest.approx(
        [0.0, 0.025, 0.05, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])


def test_delayed_start_is_zero_then_ramps():
    assert schedule(alpha_max=0.5, warmup_frac=0.2, delay_frac=0.5) == pytest.approx(
        [0, 0, 0, 0, 0, 0.0, 0.25, 0.5, 0.5], abs=1e-6)
    assert schedule(alpha_max=0.5, warmup_frac=0.0, delay_frac=0.5) == pytest.approx(
        [0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5])


def test_schedule_options_may_be_traced():
    alpha = jax.jit(alpha_schedule)(jnp.float32(0.3), 0.5, jnp.float32(0.6), jnp.float32(0.1), jnp.float32(1.0))
    assert float(alpha) == pytest.approx(0.5 * 0.2 / 0.6)


def test_grouped_thresholds_take_each_groups_balance():
    p1 = [0.1, 0.4, 0.6, 0.9, 0.2, 0.3, 0.5, 0.8]
    weak = jnp.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] + [[0.5, 0.5]] * 4)  # class-1 mass 0.3, then 0.5
    whole = losses.grouped_thresholds(_logits_for_p1(p1), weak, 0)
    # Whole batch: mass 0.4 -> the 0.6 quantile of the sorted eight (position 4.2): 0.5 + 0.2 * 0.1.
    np.testing.assert_allclose(np.asarray(whole), [0.52] * 8, atol=1e-5)
    halves = losses.grouped_thresholds(_logits_for_p1(p1), weak, 4)
    # First half: the 0.7 quantile of [0.1, 0.4, 0.6, 0.9] (position 2.1); second: the median.
    np.testing.assert_allclose(np.asarray(halves), [0.63] * 4 + [0.4] * 4, atol=1e-5)
    with pytest.raises(ValueError, match="threshold_batch=3 must divide"):
        losses.grouped_thresholds(_logits_for_p1(p1), weak, 3)


def test_running_threshold_is_a_bias_corrected_moving_average():
    weak = jnp.array([[0.5, 0.5]] * 2)
    loss = losses.make_loss("aux_conf", threshold_decay=0.5)
    running, seen = jnp.float32(0.0), []
    for step, p1 in enumerate(([0.2, 0.4], [0.6, 0.8])):  # batch thresholds (medians) 0.3, then 0.7
        t, running = loss.thresholds(_logits_for_p1(p1), weak, running, jnp.int32(step))
        seen.append(np.asarray(t))
    np.testing.assert_allclose(seen[0], [0.3, 0.3], atol=1e-5)  # the first batch's own threshold
    # (0.5 * 0.5 * 0.3 + 0.5 * 0.7) / (1 - 0.5 ** 2): weights 1/3 and 2/3.
    np.testing.assert_allclose(seen[1], [0.3 / 3 + 0.7 * 2 / 3] * 2, atol=1e-5)
    without = losses.make_loss("aux_conf")
    t, kept = without.thresholds(_logits_for_p1([0.6, 0.8]), weak, jnp.float32(0.123), jnp.int32(1))
    np.testing.assert_allclose(np.asarray(t), [0.7, 0.7], atol=1e-5)
    assert float(kept) == pytest.approx(0.123)


def test_threshold_options_are_checked():
    with pytest.raises(ValueError, match="cannot both be set"):
        losses.make_loss("aux_conf", threshold_batch=8, threshold_decay=0.9)
    with pytest.raises(ValueError, match=r"threshold_decay must be in \[0, 1\)"):
        losses.make_loss("aux_conf", threshold_decay=1.0)
    with pytest.raises(ValueError, match="threshold_batch"):
        losses.make_loss("xent", threshold_batch=8)  # xent takes no threshold


def test_students_name_variants_of_a_loss():
    options = {"aux_conf": {"alpha_max": 0.5}, "slow": {"loss": "aux_conf", "warmup_frac": 1.0}}
    assert losses.student_loss("slow", options) == losses.make_loss("aux_conf", warmup_frac=1.0)
    assert losses.student_loss("aux_conf", options) == losses.make_loss("aux_conf", alpha_max=0.5)
    assert losses.student_loss("xent", options) == losses.make_loss("xent")
    with pytest.raises(ValueError, match=r"student .fast.: a variant names its loss: loss_options.fast"):
        losses.student_loss("fast", options)


def test_aux_conf_by_hand():
    p1 = [0.2, 0.7]
    logits = _logits_for_p1(p1)
    weak = jnp.array([[0.4, 0.6], [0.8, 0.2]])  # class-1 mass 0.4 -> threshold at the 0.6 quantile
    threshold = losses.balanced_threshold(logits, weak)
    assert float(threshold) == pytest.approx(0.2 + 0.6 * 0.5, abs=1e-5)  # 0.5: only 0.7 is above
    loss = losses.make_loss("aux_conf", alpha_max=0.5, warmup_frac=0.2)
    ce_weak = -(0.4 * math.log(0.8) + 0.6 * math.log(0.2) + 0.8 * math.log(0.3) + 0.2 * math.log(0.7)) / 2
    ce_hard = -(math.log(0.8) + math.log(0.7)) / 2
    at_start = loss(logits, weak, step_frac=jnp.float32(0.0), class1_threshold=threshold)
    assert float(at_start) == pytest.approx(ce_weak, rel=1e-5)
    mid_ramp = loss(logits, weak, step_frac=jnp.float32(0.1), class1_threshold=threshold)
    assert float(mid_ramp) == pytest.approx(0.75 * ce_weak + 0.25 * ce_hard, rel=1e-5)
    after = loss(logits, weak, step_frac=jnp.float32(0.9), class1_threshold=threshold)
    assert float(after) == pytest.approx(0.5 * ce_weak + 0.5 * ce_hard, rel=1e-5)


def test_product_loss_by_hand():
    logits = _logits_for_p1([0.5, 0.8])
    weak = jnp.array([[0.25, 0.75], [0.5, 0.5]])
    # Row 1: 0.25*0.5, 0.75*0.5 -> [0.25, 0.75]; row 2: 0.5*0.2, 0.5*0.8 -> [0.2, 0.8].
    expected = -(0.25 * math.log(0.5) + 0.75 * math.log(0.5) + 0.2 * math.log(0.2) + 0.8 * math.log(0.8)) / 2
    loss = losses.make_loss("product")
    value = loss(logits, weak, step_frac=jnp.float32(0.5), class1_threshold=jnp.float32(0.5))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_threshold_and_hard_targets_carry_no_gradient():
    weak = jnp.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])

    def only_hard_part(logits):
        threshold = losses.balanced_threshold(logits, weak)
        return losses.soft_cross_entropy(jax.lax.stop_gradient(logits), losses.hard_targets(logits, threshold))

    grads = jax.grad(only_hard_part)(_logits_for_p1([0.2, 0.6, 0.9]))
    np.testing.assert_array_equal(np.asarray(grads), 0.0)


def test_unknown_loss_and_option_are_named():
    with pytest.raises(ValueError, match="Did you mean 'aux_conf'.*Known losses: aux_conf, .*reverse_xent"):
        losses.make_loss("auxconf")
    with pytest.raises(ValueError, match="alpha"):
        losses.make_loss("aux_conf", alpha=0.5)


def test_reverse_xent_by_hand():
    logits = _logits_for_p1([0.25, 0.5])
    weak = jnp.array([[0.8, 0.2], [1.0, 0.0]])  # the second clipped at min_prob
    # -sum_k f(k) log w(k): row 1: -(0.75 log 0.8 + 0.25 log 0.2); row 2: -(0.5 log 1 + 0.5 log 1e-4).
    reverse = (-(0.75 * math.log(0.8) + 0.25 * math.log(0.2)) - 0.5 * math.log(1e-4)) / 2
    loss = losses.make_loss("reverse_xent")
    assert float(loss(logits, weak, step_frac=jnp.float32(0), class1_threshold=None)) == pytest.approx(reverse, rel=1e-5)
    mixed = losses.make_loss("reverse_xent", forward_weight=0.25)
    forward = float(losses.soft_cross_entropy(logits, jnp.clip(weak, 0, 1)))
    value = mixed(logits, weak, step_frac=jnp.float32(0), class1_threshold=None)
    assert float(value) == pytest.approx(0.75 * reverse + 0.25 * forward, rel=1e-5)


def test_reverse_xent_gradient_moves_the_student_towards_the_weak_class():
    weak = jnp.array([[0.9, 0.1]])
    grad = jax.grad(lambda z: losses.make_loss("reverse_xent")(z, weak, step_frac=0.0, class1_threshold=None))(
        _logits_for_p1([0.5]))
    assert float(grad[0, 1]) > 0 > float(grad[0, 0])  # descent raises class 0's logit


def test_trust_filter_keeps_the_most_confident_weak_labels():
    logits = _logits_for_p1([0.5, 0.25, 0.9, 0.6])
    weak = jnp.array([[0.55, 0.45], [0.05, 0.95], [0.3, 0.7], [0.9, 0.1]])  # confidences .55 .95 .7 .9
    loss = losses.make_loss("trust_filter", keep_frac=0.5)
    kept = jnp.array([1, 3])  # the two most confident
    expected = float(losses.soft_cross_entropy(logits[kept], weak[kept]))
    assert float(loss(logits, weak, step_frac=0.0, class1_threshold=None)) == pytest.approx(expected, rel=1e-5)
    everything = losses.make_loss("trust_filter", keep_frac=1.0)
    assert float(everything(logits, weak, step_frac=0.0, class1_threshold=None)) == pytest.approx(
        float(losses.soft_cross_entropy(logits, weak)), rel=1e-5)


def test_hard_xent_is_cross_entropy_against_the_weak_labels_argmax():
    logits = _logits_for_p1([0.3, 0.8])
    weak = jnp.array([[0.49, 0.51], [0.7, 0.3]])  # barely class 1; clearly class 0
    expected = -(math.log(0.3) + math.log(0.2)) / 2
    loss = losses.make_loss("hard_xent")
    assert float(loss(logits, weak, step_frac=0.0, class1_threshold=None)) == pytest.approx(expected, rel=1e-5)
    # A weak label at 0.51 pulls as a sure one would; in soft cross-entropy it pulls towards 0.51 only.
    grad = lambda name: jax.grad(lambda z: losses.make_loss(name)(z, weak[:1], step_frac=0.0,  # noqa: E731
                                                                   class1_threshold=None))(logits[:1])
    assert float(grad("hard_xent")[0, 1]) == pytest.approx(0.3 - 1.0, rel=1e-4)  # p1 - 1
    assert float(grad("xent")[0, 1]) == pytest.approx(0.3 - 0.51, rel=1e-4)  # p1 - 0.51


def test_a_loss_declares_the_threshold_it_needs():
    assert losses.make_loss("aux_conf").needs_threshold
    assert not any(losses.make_loss(n).needs_threshold for n in ("xent", "product", "reverse_xent", "trust_filter"))
