"""Δ pseudo labels and the regeneration schedule on hand-computed cases."""

import numpy as np
import pytest

from raytal.pseudo.delta_labels import delta_labels, regeneration_epochs


def test_delta_is_difference_of_generations():
    prev = np.array([[0.5, 0.0], [0.25, 1.0]])
    cur = np.array([[0.75, 0.0], [0.0, 0.5]])
    # 0.75-0.5 = 0.25, 0-0 = 0, 0-0.25 = -0.25, 0.5-1 = -0.5
    out = delta_labels(prev, cur)
    np.testing.assert_array_equal(out, [[0.25, 0.0], [-0.25, -0.5]])
    assert out.dtype == np.float32


def test_first_generation_is_the_labels_themselves():
    cur = np.array([[0.5, 1.0]], dtype=np.float32)
    out = delta_labels(None, cur)
    np.testing.assert_array_equal(out, [[0.5, 1.0]])
    out[0, 0] = 9.0  # a copy: the caller's labels stay intact
    assert cur[0, 0] == 0.5


def test_delta_bad_input():
    with pytest.raises(ValueError, match="shape"):
        delta_labels(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[T, C\]"):
        delta_labels(None, np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        delta_labels(np.array([[np.nan]]), np.zeros((1, 1)))


def test_regeneration_epochs_sorted_and_validated():
    # the paper's schedule (200, 215, ... 290) out of order, 350 epochs
    assert regeneration_epochs([215, 200, 290, 230, 270, 245], 350) == [200, 215, 230, 245, 270, 290]
    assert regeneration_epochs([], 10) == []
    with pytest.raises(ValueError, match="outside"):
        regeneration_epochs([10], 10)
    with pytest.raises(ValueError, match="outside"):
        regeneration_epochs([-1], 10)
    with pytest.raises(ValueError, match="outside"):
        regeneration_epochs([0], 10)  # epoch 0 would relabel with the untrained student
    with pytest.raises(ValueError, match="distinct"):
        regeneration_epochs([3, 3], 10)
    with pytest.raises(ValueError, match="int"):
        regeneration_epochs([2.5], 10)
    with pytest.raises(ValueError, match="epochs"):
        regeneration_epochs([1], 0)
