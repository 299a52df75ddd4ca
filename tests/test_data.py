"""Batch order is a pure function of (seed, step): resuming reads the same batches."""
import numpy as np

from w2s.data import batch_indices, one_hot


def test_batches_cover_each_epoch_once_and_are_resumable():
    n, b = 10, 4
    steps = [batch_indices(n, b, seed=3, step=s) for s in range(5)]  # 20 indices = 2 epochs
    flat = np.concatenate(steps)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    np.testing.assert_array_equal(batch_indices(n, b, seed=3, step=3), steps[3])
    assert not np.array_equal(np.concatenate([batch_indices(n, b, 4, s) for s in range(3)]), flat[:12])


def test_batch_larger_than_dataset_wraps_epochs():
    idx = batch_indices(3, 7, seed=0, step=0)
    assert len(idx) == 7 and set(idx) == {0, 1, 2}


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([0, 1])), [[1, 0], [0, 1]])
