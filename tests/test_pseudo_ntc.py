import numpy as np
import pytest
import torch

from raytal.pseudo.nontarget_partition import partition_nontarget, scores_to_distribution


def test_scores_to_distribution_by_hand():
    # [0.6, 0.2] -> background 1 - 0.6 = 0.4; sum 1.2 -> [0.5, 1/6, 1/3]
    # [0, 0]     -> background 1 -> [0, 0, 1]
    p = scores_to_distribution(np.array([[0.6, 0.2], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.5, 1 / 6, 1 / 3], [0.0, 0.0, 1.0]])


def test_scores_to_distribution_torch_keeps_gradient_and_rejects_non_probabilities():
    s = torch.tensor([[0.6, 0.2]], requires_grad=True)
    p = scores_to_distribution(s)
    assert isinstance(p, torch.Tensor) and p.shape == (1, 3)
    p[0, 1].backward()
    assert s.grad is not None
    with pytest.raises(ValueError, match="sigmoid"):
        scores_to_distribution(np.array([[1.5, 0.2]]))


# Each row: p, expected target, expected Ω_pos, expected Ω_neg (worked out below).
CASES = [
    # m = 0.5; ascending non-target .0625(3) .0625(4) .125(2) .25(1): cumsum .0625 .125 .25 .5 <= .5 -> all
    # negative (Σ non-target = 1 - m <= m whenever m >= 0.5); pos needs >= .425: none
    ([0.5, 0.25, 0.125, 0.0625, 0.0625], 0, [], [1, 2, 3, 4]),
    # m = .4; ascending .1(3) .15(2) .35(1): cumsum .1 .25 .6 -> neg {3, 2}; pos: .35 >= .34 -> {1}
    ([0.4, 0.35, 0.15, 0.1, 0.0], 0, [1], [4, 3, 2]),
    # background (last column) is the target: m = .5625; ascending .0625(1) .125(0) .25(2): cumsum
    # .0625 .1875 .4375 -> all negative
    ([0.125, 0.0625, 0.25, 0.0, 0.5625], 4, [], [0, 1, 2, 3]),
    # tie at the Ω_neg border: m = .4375; ascending 0(4) .0625(3) .25(1) .25(2) (lower index first):
    # cumsum 0 .0625 .3125 .5625 -> neg {4, 3, 1}; class 2 (also .25) ambiguous; pos needs >= .371875
    ([0.4375, 0.25, 0.25, 0.0625, 0.0], 0, [], [1, 3, 4]),
    # all equal: target = lowest index 0, m = .2; ascending 1, 2, 3, 4: cumsum .2 .4 -> neg {1};
    # pos: p >= .17 and not neg -> {2, 3, 4}
    ([0.2, 0.2, 0.2, 0.2, 0.2], 0, [2, 3, 4], [1]),
    # m = .3; ascending .2(3) .22(2): cumsum .2 <= .3, .42 > .3 -> neg {3}; pos >= .255: .28 -> {1}; 2, 4 amb.
    ([0.3, 0.28, 0.22, 0.2, 0.0], 0, [1], [4, 3]),
]


def _expected(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.array([c[0] for c in CASES])
    target = np.array([c[1] for c in CASES])
    pos = np.zeros((len(CASES), k), bool)
    neg = np.zeros((len(CASES), k), bool)
    for r, c in enumerate(CASES):
        pos[r, c[2]] = True
        neg[r, c[3]] = True
    return p, target, pos, neg


def test_partition_batched_by_hand():
    p, target, pos, neg = _expected(5)
    t, ps, ng = partition_nontarget(p, lam=0.85)
    np.testing.assert_array_equal(t, target)
    np.testing.assert_array_equal(ps, pos)
    np.testing.assert_array_equal(ng, neg)


def test_partition_torch_and_leading_dims():
    p, target, pos, neg = _expected(5)
    t, ps, ng = partition_nontarget(torch.tensor(p[:4]).reshape(2, 2, 5))
    assert isinstance(t, torch.Tensor) and t.shape == (2, 2) and ps.shape == (2, 2, 5)
    np.testing.assert_array_equal(t.reshape(-1).numpy(), target[:4])
    np.testing.assert_array_equal(ps.reshape(4, 5).numpy(), pos[:4])
    np.testing.assert_array_equal(ng.reshape(4, 5).numpy(), neg[:4])


def test_partition_one_class_plus_background_and_empty():
    # [.7, .3]: target 0, .3 <= .7 -> background negative. [.5, .5]: target 0 (tie), .5 <= .5 -> negative,
    # which also keeps it out of Ω_pos although .5 >= .85 * .5
    t, pos, neg = partition_nontarget(np.array([[0.7, 0.3], [0.5, 0.5]]))
    np.testing.assert_array_equal(t, [0, 0])
    assert not pos.any()
    np.testing.assert_array_equal(neg, [[False, True], [False, True]])
    t, pos, neg = partition_nontarget(np.zeros((0, 3)))
    assert t.shape == (0,) and pos.shape == neg.shape == (0, 3)
    with pytest.raises(ValueError, match="at least 2"):
        partition_nontarget(np.ones((3, 1)))
