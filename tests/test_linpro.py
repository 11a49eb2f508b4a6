"""LinPro on hand-computed cases, plus agreement with the plain T-variable LP on small random problems."""

import numpy as np
import pytest
from scipy.optimize import linprog

from raytal.pseudo.linpro import dense_labels, linpro_batch, linpro_labels


def test_isolated_instance_closed_form():
    # [3, 7): inner 3..6 (length 4), outer ceil(0.25*4) = 1 snippet each side: {2, 7}.
    # Optimum y = s on the inner, 0 elsewhere: (4*0.6)/4 - 0 = 0.6; Σ y = 4*0.6 = 2.4.
    res = linpro_labels(np.array([[3, 7]]), np.array([0.6]), 12)
    np.testing.assert_allclose(res.y, [0, 0, 0, 0.6, 0.6, 0.6, 0.6, 0, 0, 0, 0, 0], atol=1e-12)
    assert res.objective == pytest.approx(2.4, abs=1e-12)
    assert not res.relaxed and res.status == "closed_form"


def test_instances_at_the_borders_have_clipped_outer():
    # [0, 4): left outer clipped away, right outer {4}; [8, 10) (length 2, margin 1): outer {7} only.
    # Spans [0, 5) and [7, 10) do not overlap: two closed forms, Σ y = 4*0.5 + 2*0.9 = 3.8.
    res = linpro_labels(np.array([[0, 4], [8, 10]]), np.array([0.5, 0.9]), 10)
    np.testing.assert_allclose(res.y, [0.5] * 4 + [0.0] * 4 + [0.9] * 2, atol=1e-12)
    assert res.objective == pytest.approx(3.8, abs=1e-12) and res.status == "closed_form"
    # An instance covering the whole video has no outer term: y = s everywhere, Σ y = 5*0.3 = 1.5.
    res = linpro_labels(np.array([[0, 5]]), np.array([0.3]), 5)
    np.testing.assert_allclose(res.y, [0.3] * 5, atol=1e-12)
    assert res.objective == pytest.approx(1.5, abs=1e-12)


def test_overlapping_feasible_pair_is_solved_over_groups():
    # A = [2, 6) s=0.8, outer {1, 6}; B = [4, 8) s=0.5, outer {3, 8}. Groups (value z):
    # {1} outer A, {2} inner A, {3} inner A + outer B, {4, 5} inner A + B, {6} outer A + inner B,
    # {7} inner B, {8} outer B.
    # A: (z2 + z3 + 2 z4)/4 - (z1 + z6)/2 = 0.8 ;  B: (2 z4 + z6 + z7)/4 - (z3 + z8)/2 = 0.5.
    # z1 = z8 = 0; eliminating z3 and z7, Σ y >= 9.6 + 6 z6 - 6 z4 >= 3.6 at z4 = 1, z6 = 0, z2 = 1,
    # so z3 = 3.2 - 1 - 2 = 0.2 and z7 = 2 + 2*0.2 - 2 = 0.4 (unique optimum).
    res = linpro_labels(np.array([[2, 6], [4, 8]]), np.array([0.8, 0.5]), 10)
    np.testing.assert_allclose(res.y, [0, 0, 1, 0.2, 1, 1, 0, 0.4, 0, 0], atol=1e-7)
    assert res.objective == pytest.approx(3.6, abs=1e-7)
    assert not res.relaxed and res.status == "optimal"


def test_overlapping_infeasible_pair_is_relaxed_and_finite():
    # A = [0, 2), B = [2, 4), both s = 1, T = 4. A's outer is {2}, B's outer is {1}:
    # A: (y0 + y1)/2 - y2 = 1 needs y1 = 1; B: (y2 + y3)/2 - y1 = 1 needs y1 = 0 -> infeasible.
    # Both left sides are <= 1, so slack = (1 - lhs_A) + (1 - lhs_B) = 2 - y0/2 + y1/2 + y2/2 - y3/2;
    # M = max(1e3, 10*2) = 1e3, so y0 = y3 = 1, y1 = y2 = 0, objective 2 + 1e3 * 1 = 1002.
    res = linpro_labels(np.array([[0, 2], [2, 4]]), np.array([1.0, 1.0]), 4)
    np.testing.assert_allclose(res.y, [1, 0, 0, 1], atol=1e-7)
    assert res.objective == pytest.approx(1002.0, abs=1e-6)
    assert res.relaxed and res.status == "relaxed"
    # Identical instances, scores 0.8 and 0.4: one group z; objective 4 z + M(|0.8 - z| + |0.4 - z|)
    # is 4 z + 400 on [0.4, 0.8] -> z = 0.4, objective 1.6 + 400 = 401.6.
    res = linpro_labels(np.array([[0, 4], [0, 4]]), np.array([0.8, 0.4]), 4)
    np.testing.assert_allclose(res.y, [0.4] * 4, atol=1e-7)
    assert res.objective == pytest.approx(401.6, abs=1e-6) and res.relaxed
    assert np.isfinite(res.y).all()


def test_penalty_raised_for_long_instances():
    # Identical [0, 200) with scores 0.8 / 0.4 and penalty 10 -> M = 10 * 200 = 2000 (not 10):
    # z = 0.4 and objective 200*0.4 + 2000*0.4 = 880. With M = 10 slack would be cheaper (z = 0,
    # objective 10*1.2 = 12), which the raise prevents.
    res = linpro_labels(np.array([[0, 200], [0, 200]]), np.array([0.8, 0.4]), 200, penalty=10.0)
    np.testing.assert_allclose(res.y, np.full(200, 0.4), atol=1e-7)
    assert res.objective == pytest.approx(880.0, abs=1e-5)


def test_feasible_problem_is_not_relaxed_when_the_penalty_is_not_exact():
    # Unit instances at 0, 1, 2, 3 (T = 5), all s = 0.01; outers {1}, {0, 2}, {1, 3}, {2, 4}; y4 = 0.
    # A: y0 - y1 = a;  B: y1 - (y0 + y2)/2 = b;  C: y2 - (y1 + y3)/2 = c;  D: y3 - y2/2 = d  give
    # y3 = 2d + 2c + 2b + a = 0.07, y2 = 2d + 4c + 4b + 2a = 0.12, y1 = 2d + 4c + 6b + 3a = 0.15,
    # y0 = 2d + 4c + 6b + 4a = 0.16; Σ y = 10a + 18b + 14c + 8d = 0.5.
    # With penalty 1e-6, M = 10 * 1 = 10 < 18 (the price of b), so the elastic optimum buys slack even
    # though the equalities are feasible: the result must still be the strict optimum, not relaxed.
    res = linpro_labels(np.array([[0, 1], [1, 2], [2, 3], [3, 4]]), np.full(4, 0.01), 5, penalty=1e-6)
    np.testing.assert_allclose(res.y, [0.16, 0.15, 0.12, 0.07, 0.0], atol=1e-7)
    assert res.objective == pytest.approx(0.5, abs=1e-7)
    assert not res.relaxed and res.status == "optimal"


def test_empty_and_equal_scores():
    res = linpro_labels(np.zeros((0, 2), dtype=np.int64), np.zeros(0), 7)
    np.testing.assert_array_equal(res.y, np.zeros(7))
    assert res.objective == 0.0 and res.status == "empty" and not res.relaxed
    # Identical instances with equal scores 0.5: feasible, y = 0.5 on [0, 4), Σ y = 2.
    res = linpro_labels(np.array([[0, 4], [0, 4]]), np.array([0.5, 0.5]), 6)
    np.testing.assert_allclose(res.y, [0.5] * 4 + [0, 0], atol=1e-7)
    assert res.objective == pytest.approx(2.0, abs=1e-7) and not res.relaxed


def test_batch_keeps_problems_apart():
    out = linpro_batch([
        (np.array([[0, 2], [2, 4]]), np.array([1.0, 1.0]), 4),  # relaxed, objective 1002 (above)
        (np.zeros((0, 2), dtype=np.int64), np.zeros(0), 3),
        (np.array([[3, 7]]), np.array([0.6]), 12),  # closed form 2.4
        (np.array([[2, 6], [4, 8]]), np.array([0.8, 0.5]), 10),  # optimal 3.6
    ])
    assert [r.status for r in out] == ["relaxed", "empty", "closed_form", "optimal"]
    np.testing.assert_allclose([r.objective for r in out], [1002.0, 0.0, 2.4, 3.6], atol=1e-6)
    assert [r.y.shape for r in out] == [(4,), (3,), (12,), (10,)]


def _plain(segments, scores, T, margin=0.25, penalty=1e3):
    """T-variable reference: strict LP, elastic LP when infeasible."""
    W = np.zeros((len(segments), T))
    for k, (s, e) in enumerate(segments):
        m = int(np.ceil(margin * (e - s) - 1e-9))
        a, b = max(s - m, 0), min(e + m, T)
        W[k, s:e] = 1.0 / (e - s)
        if (s - a) + (b - e):
            W[k, a:s] = W[k, e:b] = -1.0 / ((s - a) + (b - e))
    res = linprog(np.ones(T), A_eq=W, b_eq=scores, bounds=(0, 1), method="highs")
    if res.status == 0:
        return res.fun, False
    K = len(segments)
    M = max(penalty, 10.0 * max(e - s for s, e in segments))
    A = np.hstack([W, np.eye(K), -np.eye(K)])
    res = linprog(np.r_[np.ones(T), np.full(2 * K, M)], A_eq=A, b_eq=scores,
                  bounds=[(0, 1)] * T + [(0, None)] * (2 * K), method="highs")
    return res.fun, True


def test_matches_plain_lp_on_random_problems():
    rng = np.random.default_rng(0)
    problems = []
    for _ in range(30):
        T = int(rng.integers(8, 30))
        K = int(rng.integers(1, 6))
        s = rng.integers(0, T - 1, K)
        e = np.minimum(s + rng.integers(1, 8, K), T)
        problems.append((np.stack([s, e], axis=1), rng.uniform(0, 1, K), T))
    out = linpro_batch(problems)
    for (seg, sc, T), r in zip(problems, out):
        fun, relaxed = _plain(seg, sc, T)
        assert r.objective == pytest.approx(fun, abs=1e-6)
        assert r.relaxed == relaxed
        assert np.isfinite(r.y).all() and (r.y >= 0).all() and (r.y <= 1).all()


def test_dense_labels_rounding_and_classes():
    seg = np.array([[1.2, 4.0], [6.6, 6.9], [-3.0, -1.0], [8.7, 12.0], [0.0, 3.0], [0.0, 3.0]])
    sc = np.array([0.6, 0.3, 0.9, 0.7, 0.8, 0.4])
    lab = np.array([1, 0, 0, 0, 2, 2])
    y, n_relaxed = dense_labels(seg, sc, lab, num_snippets=10, num_classes=4)
    # [1.2, 4.0] -> centres 2, 3, 4 -> [2, 5), isolated: 0.6 there.
    # [6.6, 6.9] holds no centre -> nearest to midpoint 6.75 is 7 -> [7, 8): 0.3.
    # [-3, -1] lies outside [-0.5, 9.5] -> dropped. [8.7, 12] -> [9, 13) clipped to [9, 10): 0.7
    # ([7, 8) has span [6, 9), [9, 10) has span [8, 10): they overlap, but both equalities hold with
    # the closed-form values since neither inner touches the other's outer: the LP optimum is the same).
    # Class 2: [0, 3] -> [0, 4) twice, scores 0.8 / 0.4: infeasible, z = 0.4 (see the identical case).
    expected = np.zeros((10, 4), dtype=np.float32)
    expected[2:5, 1] = 0.6
    expected[7, 0] = 0.3
    expected[9, 0] = 0.7
    expected[0:4, 2] = 0.4
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert y.dtype == np.float32 and n_relaxed == 1


def test_bad_input():
    with pytest.raises(ValueError, match="integer"):
        linpro_labels(np.array([[0.0, 2.0]]), np.array([0.5]), 4)
    with pytest.raises(ValueError, match="half-open"):
        linpro_labels(np.array([[2, 2]]), np.array([0.5]), 4)
    with pytest.raises(ValueError, match="half-open"):
        linpro_labels(np.array([[2, 5]]), np.array([0.5]), 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        linpro_labels(np.array([[0, 2]]), np.array([1.5]), 4)
    with pytest.raises(ValueError, match="margin"):
        linpro_labels(np.array([[0, 2]]), np.array([0.5]), 4, margin=-1.0)
    with pytest.raises(ValueError, match="class ids"):
        dense_labels(np.array([[0.0, 2.0]]), np.array([0.5]), np.array([3]), 4, 3)
