import math

import numpy as np
import pytest

from raytal.postprocess.nms import nms, soft_nms, vote

# A, B, C, D, E: B overlaps A strongly, E touches A and B a little, D is another class.
SEGS = np.array([[0, 10], [1, 11], [20, 30], [0.5, 10.5], [9, 19]], dtype=float)
SCORES = np.array([0.9, 0.8, 0.7, 0.5, 0.6])
LABELS = np.array([0, 0, 0, 1, 0])


def test_soft_nms_hand_worked():
    seg, sc, lab = soft_nms(SEGS, SCORES, LABELS, sigma=0.5, min_score=0.001)
    # ActionFormer's Gaussian decays every overlap, however small. Pick A (.9): IoU(A,B) = 9/11 ->
    # B *= exp(-(9/11)^2/.5); IoU(A,E) = 1/19 -> E *= exp(-(1/19)^2/.5) = .597; IoU(A,C) = 0. D is class 1:
    # never touched by class-0 picks. Pick C (.7): no overlap with B or E. Pick E (.597):
    # IoU(E,B) = 2/18 -> B *= exp(-(1/9)^2/.5). Pick D (.5), then B.
    e = 0.6 * math.exp(-((1 / 19) ** 2) / 0.5)
    b = 0.8 * math.exp(-((9 / 11) ** 2) / 0.5) * math.exp(-((2 / 18) ** 2) / 0.5)
    np.testing.assert_allclose(sc, [0.9, 0.7, e, 0.5, b], rtol=1e-9)
    np.testing.assert_array_equal(lab, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(seg, SEGS[[0, 2, 4, 3, 1]])


def test_soft_nms_min_score_and_max_segments():
    # After A, B = .8 * exp(-(9/11)^2/.5) ~ .2097 < .21 -> dropped.
    _, sc, _ = soft_nms(SEGS, SCORES, LABELS, sigma=0.5, min_score=0.21)
    np.testing.assert_allclose(sc, [0.9, 0.7, 0.6 * math.exp(-((1 / 19) ** 2) / 0.5), 0.5])
    seg, sc, _ = soft_nms(SEGS, SCORES, LABELS, max_segments=2)
    np.testing.assert_allclose(sc, [0.9, 0.7])
    np.testing.assert_array_equal(seg, SEGS[[0, 2]])


def test_hard_nms():
    # thr .5: B (IoU 9/11 with A) suppressed; E (1/19) and C kept; D kept (other class).
    keep = nms(SEGS, SCORES, LABELS, iou_threshold=0.5)
    np.testing.assert_array_equal(keep, [0, 2, 4, 3])
    # All one class, thr .04: A suppresses B (9/11), D (9.5/10.5) and E (1/19 ~ .053); C survives.
    np.testing.assert_array_equal(nms(SEGS, SCORES, np.zeros(5, int), iou_threshold=0.04), [0, 2])
    np.testing.assert_array_equal(nms(SEGS, SCORES, LABELS, iou_threshold=0.5, max_keep=2), [0, 2])


def test_vote_hand_worked():
    # Kept A [0, 10]; candidates A (.9), B [1, 11] (.8, IoU 9/11), E [9, 19] (.6, IoU 1/19), C far away.
    # Threshold .5: A and B vote -> (.9 [0, 10] + .8 [1, 11]) / 1.7 = [0.8/1.7, 10 + 0.8/1.7].
    got = vote(SEGS[[0]], SEGS[[0, 1, 4, 2]], SCORES[[0, 1, 4, 2]], 0.5)
    np.testing.assert_allclose(got, [[0.8 / 1.7, 10 + 0.8 / 1.7]], rtol=1e-12)
    # threshold .05 lets E in too: weights .9, .8, .6 over starts 0, 1, 9
    got = vote(SEGS[[0]], SEGS[[0, 1, 4]], SCORES[[0, 1, 4]], 0.05)
    np.testing.assert_allclose(got, [[(0.8 + 5.4) / 2.3, (9 + 8.8 + 11.4) / 2.3]], rtol=1e-12)


def test_empty_and_bad_input():
    assert len(nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, int), 0.5)) == 0
    seg, sc, lab = soft_nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, int))
    assert seg.shape == (0, 2) and len(sc) == 0 and len(lab) == 0
    with pytest.raises(ValueError, match="expected segments"):
        nms(np.zeros((3, 3)), np.zeros(3), np.zeros(3), 0.5)
