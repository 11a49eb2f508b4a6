import numpy as np
import torch

from raytal.pseudo.quality_selection import joint_score, positive_threshold, split_by_quality


def test_joint_score_numpy_and_torch():
    p_cls = np.array([0.8, 0.5, 1.0])
    tiou = np.array([0.9, 0.3, 0.5])
    tnd = np.array([0.1, 0.4, 0.5])
    # max(0.8, ε)*0.8 = 0.64; max(-0.1, ε)*0.5 = 5e-4; max(0, ε)*1 = 1e-3
    expected = [0.64, 5e-4, 1e-3]
    np.testing.assert_allclose(joint_score(p_cls, tiou, tnd, eps=1e-3), expected)
    out = joint_score(torch.tensor(p_cls), torch.tensor(tiou), torch.tensor(tnd), eps=1e-3)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected)


def test_split_by_quality_mean_plus_std():
    P = np.array([0.1, 0.2, 0.4, 0.6, 0.15])
    # kept (> 0.15): 0.2, 0.4, 0.6 -> mean 0.4, std sqrt((0.04 + 0 + 0.04)/3) = 0.1633 -> τ_pos = 0.5633
    np.testing.assert_allclose(positive_threshold(P, 0.15), 0.4 + np.sqrt(0.08 / 3))
    pos, cand = split_by_quality(P, tau_neg=0.15)
    np.testing.assert_array_equal(pos, [False, False, False, True, False])
    np.testing.assert_array_equal(cand, [False, True, True, False, False])


def test_split_two_values_and_all_equal_hit_tau_exactly():
    # [0.2, 0.6]: mean 0.4, std 0.2 -> τ_pos = 0.6, so 0.6 is positive despite rounding
    pos, cand = split_by_quality(np.array([0.2, 0.6]))
    np.testing.assert_array_equal(pos, [False, True])
    np.testing.assert_array_equal(cand, [True, False])
    # all equal: std 0, τ_pos = 0.3 -> all positive, no candidates
    pos, cand = split_by_quality(np.array([0.3, 0.3, 0.3]))
    np.testing.assert_array_equal(pos, [True, True, True])
    assert not cand.any()


def test_split_mean_plus_std_above_max_gives_no_positive():
    # [0.2, 0.6, 0.6, 0.6]: mean 0.5, std sqrt((0.09 + 3*0.01)/4) = 0.1732 -> τ_pos = 0.673 > max
    pos, cand = split_by_quality(np.array([0.2, 0.6, 0.6, 0.6]))
    assert not pos.any()
    assert cand.all()


def test_split_no_candidates():
    pos, cand = split_by_quality(np.zeros(0))
    assert pos.shape == cand.shape == (0,)
    pos, cand = split_by_quality(np.array([0.1, 0.15]))
    assert not pos.any() and not cand.any()
    assert positive_threshold(np.array([0.1]), 0.15) == float("inf")
