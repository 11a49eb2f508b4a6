import numpy as np
import pytest

from raytal.pseudo.boundary_ranking import adaptive_counts, boundary_variance_scores, class_adaptive_filter

# Dense points of one video: level 0 at t = 0..4 (indices 0..4), level 1 at t = 0, 2, 4 (indices 5..7).
T = np.array([0, 1, 2, 3, 4, 0, 2, 4], dtype=float)
LEVEL = np.array([0, 0, 0, 0, 0, 1, 1, 1])
START = np.array([-0.5, 1.0, 0.5, 1.0, 1.5, 0.0, 1.0, 3.5])
END = np.array([1.0, 4.0, 4.5, 4.5, 5.0, 0.0, 3.0, 4.5])


def test_boundary_variance_all_neighbours_inside():
    # j = 2 (t=2, [0.5, 4.5], d = 4): level-0 points inside are t = 1, 2, 3, 4 (level-1 t = 2, 4 excluded).
    # starts 1.0, 0.5, 1.0, 1.5: mean 1.0, var (0 + .25 + 0 + .25)/4 = 0.125
    # ends   4.0, 4.5, 4.5, 5.0: mean 4.5, var (.25 + 0 + 0 + .25)/4 = 0.125
    # σ̄ = (0.125 + 0.125)/4 = 0.0625 -> score = 0.5 / 0.0625 = 8
    s = boundary_variance_scores(T, LEVEL, START, END, np.array([2]), np.array([0.5]), eps=0.0)
    np.testing.assert_allclose(s, [8.0])


def test_boundary_variance_window_limited_to_n_adjacent():
    # n_adjacent = 1 -> t = 1, 2, 3. starts 1.0, 0.5, 1.0: mean 5/6, deviations 1/6, -1/3, 1/6,
    # var (1 + 4 + 1)/36/3 = 1/18; ends 4.0, 4.5, 4.5: mean 13/3, var (4 + 1 + 1)/36/3 = 1/18.
    # σ̄ = (2/18)/4 = 1/36 -> score = 0.5 * 36 = 18
    s = boundary_variance_scores(T, LEVEL, START, END, np.array([2]), np.array([0.5]), n_adjacent=1, eps=0.0)
    np.testing.assert_allclose(s, [18.0])


def test_boundary_variance_video_border_and_alone_and_degenerate():
    # j = 0 at the left border (t=0, [-0.5, 1], d = 1.5): points t = 0, 1 (no left neighbour exists).
    # starts -0.5, 1.0: mean .25, var (.75² + .75²)/2 = .5625; ends 1, 4: mean 2.5, var 2.25.
    # σ̄ = 2.8125 / 1.5 = 1.875 -> score 0.75 / 1.875 = 0.4
    # j = 6 (level 1, t=2, [1, 3]): level-1 neighbours t = 0, 4 lie outside -> only itself, var 0,
    # score = 0.3 / (0 + 1e-6) = 3e5. j = 5 has d = 0: degenerate -> 0.
    s = boundary_variance_scores(T, LEVEL, START, END, np.array([0, 6, 5]), np.array([0.75, 0.3, 0.9]), eps=1e-6)
    np.testing.assert_allclose(s, [0.75 / (1.875 + 1e-6), 3e5, 0.0])


def test_boundary_variance_independent_of_point_order():
    perm = np.array([7, 3, 0, 5, 2, 6, 1, 4])
    inv = np.argsort(perm)
    s = boundary_variance_scores(T[perm], LEVEL[perm], START[perm], END[perm], inv[[2, 0]], np.array([0.5, 0.75]),
                                 eps=0.0)
    np.testing.assert_allclose(s, [8.0, 0.4])


def test_boundary_variance_no_candidates_and_bad_input():
    assert boundary_variance_scores(T, LEVEL, START, END, np.zeros(0, int), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="cand"):
        boundary_variance_scores(T, LEVEL, START, END, np.array([8]), np.array([0.5]))
    with pytest.raises(ValueError, match="same length"):
        boundary_variance_scores(T, LEVEL[:3], START, END, np.array([0]), np.array([0.5]))


def test_class_adaptive_filter_with_k_adp_rounding_to_zero():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.99])
    # N_v = 7, N_pos = 3: K(0) = 4*3/7 = 1.71 -> 2, K(1) = 2*3/7 = 0.86 -> 1, K(2) = 3/7 = 0.43 -> 0
    assert adaptive_counts(labels, 3.0) == {0: 2, 1: 1, 2: 0}
    keep = class_adaptive_filter(labels, scores, n_pos=3.0)
    # class 0 keeps 0.9 (idx 1) and 0.7 (idx 3); class 1 keeps 0.3 (idx 5); class 2 none despite 0.99
    np.testing.assert_array_equal(keep, [False, True, False, True, False, True, False])


def test_class_adaptive_filter_rounds_half_up():
    labels = np.array([0, 0, 0, 0, 0, 1])
    scores = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.6])
    # N_v = 6, N_pos = 3: K(0) = 5*3/6 = 2.5 -> 3 (half-even would give 2); K(1) = 3/6 = 0.5 -> 1 (not 0)
    keep = class_adaptive_filter(labels, scores, n_pos=3.0)
    np.testing.assert_array_equal(keep, [True, True, True, False, False, True])


def test_class_adaptive_filter_one_class_equal_scores_and_empty():
    # one class, N_v = 3, N_pos = 2: K = 3*2/3 = 2; equal scores -> the first two (stable)
    keep = class_adaptive_filter(np.array([4, 4, 4]), np.array([0.5, 0.5, 0.5]), n_pos=2.0)
    np.testing.assert_array_equal(keep, [True, True, False])
    # N_pos larger than the candidates: K = 2*15/2 = 15 >= n_c, everything kept
    np.testing.assert_array_equal(class_adaptive_filter(np.array([1, 1]), np.array([0.2, 0.1])), [True, True])
    assert class_adaptive_filter(np.zeros(0, int), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="same length"):
        class_adaptive_filter(np.array([0, 1]), np.array([0.5]))
