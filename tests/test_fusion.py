"""Gaussian weighted fusion on hand-computed cases (weights softmax(s / T) worked out below)."""

import numpy as np
import pytest

import raytal.postprocess.fusion as fusion_module
from raytal.postprocess.fusion import gaussian_fusion


@pytest.fixture(autouse=True, params=["fixed_point", "sequential", "dense", "dense_then_pairs"])
def grouping_path(request, monkeypatch):
    """Every case runs through each exact grouping path: the pair fixed point (allowed to converge),
    the sequential leader scan (no fixed-point rounds), the dense phase (every class, to the end) and
    the dense phase handing over to the pair phase after the first group of fewer than 3."""
    if request.param == "fixed_point":
        monkeypatch.setattr(fusion_module, "_MAX_ROUNDS", 1000)
    elif request.param == "sequential":
        monkeypatch.setattr(fusion_module, "_MAX_ROUNDS", 0)
    else:
        monkeypatch.setattr(fusion_module, "_DENSE_CLASS", 1)
        monkeypatch.setattr(fusion_module, "_DENSE_GROUP", 1 if request.param == "dense" else 3)
    return request.param


def test_two_instances_fused_third_apart_other_class_untouched():
    seg = np.array([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 10.0]])
    sc = np.array([0.9, 0.8, 0.7, 0.85])
    lab = np.array([0, 0, 0, 1])
    out_seg, out_sc, out_lab = gaussian_fusion(seg, sc, lab, iou_threshold=0.25, temperature=0.1)
    # IoU([0,10],[1,11]) = 9/11 > 0.25 -> one group; [20,30] has IoU 0 -> its own group.
    # softmax(0.9/0.1, 0.8/0.1) = (e^9, e^8)/(e^9+e^8): q_A = 1/(1+e^-1) = 0.7310585786, q_B = 0.2689414214
    q_a = 1.0 / (1.0 + np.exp(-1.0))
    q_b = 1.0 - q_a
    fused = [0.0 * q_a + 1.0 * q_b, 10.0 * q_a + 11.0 * q_b]  # [0.26894, 10.26894]
    fused_score = 0.9 * q_a + 0.8 * q_b  # 0.87311
    # sorted by score: fused (0.873) > class-1 instance (0.85) > [20, 30] (0.7)
    np.testing.assert_allclose(out_seg, [fused, [0.0, 10.0], [20.0, 30.0]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_sc, [fused_score, 0.85, 0.7], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out_lab, [0, 1, 0])
    assert abs(fused_score - 0.8731058579) < 1e-9


def test_three_instances_with_tie():
    # A=[0,10] 0.9, B=[2,10] 0.9 (IoU 8/10), C=[0,6] 0.6 (IoU with A 6/10): all in A's group.
    seg = np.array([[0.0, 10.0], [2.0, 10.0], [0.0, 6.0]])
    sc = np.array([0.9, 0.9, 0.6])
    # T = 0.3: logits 3, 3, 2 -> weights 1, 1, e^-1 over 2 + e^-1
    e = np.exp(-1.0)
    q = np.array([1.0, 1.0, e]) / (2.0 + e)  # 0.42232, 0.42232, 0.15536
    out_seg, out_sc, out_lab = gaussian_fusion(seg, sc, np.zeros(3, dtype=np.int64), temperature=0.3)
    start = 0.0 * q[0] + 2.0 * q[1] + 0.0 * q[2]  # 0.84464
    end = 10.0 * q[0] + 10.0 * q[1] + 6.0 * q[2]  # 10 - 4 q_C = 9.37855
    score = 0.9 * (q[0] + q[1]) + 0.6 * q[2]  # 0.9 - 0.3 q_C = 0.85339
    np.testing.assert_allclose(out_seg, [[start, end]], atol=1e-12)
    np.testing.assert_allclose(out_sc, [score], atol=1e-12)
    np.testing.assert_array_equal(out_lab, [0])
    assert abs(end - (10.0 - 4.0 * e / (2.0 + e))) < 1e-12


def test_all_scores_equal_gives_plain_mean():
    seg = np.array([[0.0, 4.0], [1.0, 5.0], [0.0, 5.0]])
    # leader = first listed (ties); IoU([0,4],[1,5]) = 3/5, IoU([0,4],[0,5]) = 4/5: one group,
    # equal weights 1/3: start = (0+1+0)/3, end = (4+5+5)/3
    out_seg, out_sc, _ = gaussian_fusion(seg, np.full(3, 0.5), np.zeros(3, dtype=np.int64))
    np.testing.assert_allclose(out_seg, [[1.0 / 3.0, 14.0 / 3.0]], atol=1e-12)
    np.testing.assert_allclose(out_sc, [0.5], atol=1e-12)


def test_greedy_groups_are_not_transitive_and_threshold_is_strict():
    # A=[0,10] .9, B=[5,15] .8 (IoU 5/15), C=[10,20] .7 (IoU with A 0): groups {A, B}, {C}.
    seg = np.array([[0.0, 10.0], [5.0, 15.0], [10.0, 20.0]])
    out_seg, out_sc, _ = gaussian_fusion(seg, np.array([0.9, 0.8, 0.7]), np.zeros(3, dtype=np.int64))
    q_a = 1.0 / (1.0 + np.exp(-1.0))  # T = 0.1: e^9 vs e^8
    np.testing.assert_allclose(out_seg, [[5.0 * (1 - q_a), 10.0 + 5.0 * (1 - q_a)], [10.0, 20.0]], atol=1e-12)
    np.testing.assert_allclose(out_sc, [0.8 + 0.1 * q_a, 0.7], atol=1e-12)
    # IoU([0,5],[3,8]) = 2/8 = 0.25 exactly: not > 0.25, so both survive unfused.
    out_seg, out_sc, _ = gaussian_fusion(np.array([[0.0, 5.0], [3.0, 8.0]]), np.array([0.9, 0.8]),
                                         np.array([2, 2]))
    np.testing.assert_array_equal(out_seg, [[0.0, 5.0], [3.0, 8.0]])
    np.testing.assert_array_equal(out_sc, [0.9, 0.8])


def test_sliding_window_chain():
    # 60 windows [i, i + 10], equal scores: IoU(i, i + k) = (10 - k)/(10 + k) > 0.25 iff k < 6, so the
    # greedy takes 0 (absorbing 1..5), then 6 (7..11), ... : 10 groups of 6. Equal weights: fused
    # start = mean(6g .. 6g + 5) = 6g + 2.5, end = 6g + 12.5, score 0.5. The chain needs many
    # fixed-point rounds (each settles only a few more windows).
    start = np.arange(60, dtype=np.float64)
    seg = np.stack([start, start + 10.0], axis=1)
    out_seg, out_sc, out_lab = gaussian_fusion(seg, np.full(60, 0.5), np.full(60, 3))
    g = np.arange(10, dtype=np.float64)
    np.testing.assert_allclose(out_seg, np.stack([6 * g + 2.5, 6 * g + 12.5], axis=1), atol=1e-12)
    np.testing.assert_allclose(out_sc, np.full(10, 0.5), atol=1e-12)
    np.testing.assert_array_equal(out_lab, np.full(10, 3))


def test_empty_and_bad_input():
    seg, sc, lab = gaussian_fusion(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert seg.shape == (0, 2) and sc.shape == (0,) and lab.shape == (0,) and lab.dtype == np.int64
    with pytest.raises(ValueError, match="shape"):
        gaussian_fusion(np.zeros((2, 3)), np.zeros(2), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="temperature"):
        gaussian_fusion(np.zeros((1, 2)), np.zeros(1), np.zeros(1, dtype=np.int64), temperature=0.0)
    with pytest.raises(ValueError, match="finite"):
        gaussian_fusion(np.array([[0.0, np.nan]]), np.zeros(1), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="start <= end"):
        gaussian_fusion(np.array([[2.0, 1.0]]), np.zeros(1), np.zeros(1, dtype=np.int64))


def _loop_reference(seg, sc, lab, thr, temp):
    """The design's greedy (docs/design.md §5 "GauFuse Gaussian weighted fusion"), one instance at a
    time (output in class, then greedy order)."""
    out = []
    for c in sorted(set(lab.tolist())):
        idx = [i for i in np.argsort(-sc, kind="stable") if lab[i] == c]
        while idx:
            m = idx[0]
            inter = np.clip(np.minimum(seg[idx, 1], seg[m, 1]) - np.maximum(seg[idx, 0], seg[m, 0]), 0, None)
            union = (seg[idx, 1] - seg[idx, 0]) + (seg[m, 1] - seg[m, 0]) - inter
            grp = [i for i, it, un in zip(idx, inter, union) if i == m or (un > 0 and it / un > thr)]
            w = np.exp((sc[grp] - sc[m]) / temp)
            out.append((*(w @ seg[grp] / w.sum()), w @ sc[grp] / w.sum(), c))
            idx = [i for i in idx if i not in grp]
    return np.array(out)


def test_matches_loop_reference_on_random_clusters():
    rng = np.random.default_rng(1)
    centre = rng.uniform(0, 100, 8)[rng.integers(0, 8, 120)] + rng.normal(0, 2, 120)
    length = rng.uniform(2, 20, 120)
    seg = np.stack([centre - length / 2, centre + length / 2], axis=1)
    sc, lab = rng.uniform(0, 1, 120), rng.integers(0, 3, 120)
    out_seg, out_sc, out_lab = gaussian_fusion(seg, sc, lab, iou_threshold=0.3, temperature=0.05)
    ref = _loop_reference(seg, sc, lab, 0.3, 0.05)
    ref = ref[np.argsort(-ref[:, 2], kind="stable")]
    np.testing.assert_allclose(out_seg, ref[:, :2], atol=1e-9)
    np.testing.assert_allclose(out_sc, ref[:, 2], atol=1e-9)
    np.testing.assert_array_equal(out_lab, ref[:, 3].astype(np.int64))
    assert 3 < out_sc.shape[0] < 120  # real grouping happened
