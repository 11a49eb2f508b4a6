import numpy as np
import pytest

from raytal.pseudo.noise_correction import aic, cala, mic


def test_cala_by_hand():
    segs = np.array([[0, 10], [2, 10], [0, 8], [20, 30], [1, 9]], dtype=float)
    scores = np.array([0.9, 0.6, 0.4, 0.45, 0.8])
    labels = np.array([0, 0, 0, 0, 1])
    # NMS class 0: 0 kept, 1 and 2 (IoU .8 with 0) suppressed, 3 kept; class 1: 4 kept.
    # anchors with score > .5: 0 (.9), 4 (.8); 3 (.45) is not.
    # anchor 0: A = {0 (IoU 1), 1 (.8), 2 (.8)}, w = .9, .6*.8 = .48, .4*.8 = .32, Σ = 1.7
    #   start = (.48*2)/1.7; end = (9 + 4.8 + 2.56)/1.7; score = (.81 + .288 + .128)/1.7
    # anchor 4: only itself -> unchanged
    s, sc, lab = cala(segs, scores, labels)
    np.testing.assert_allclose(s, [[0.96 / 1.7, 16.36 / 1.7], [1.0, 9.0]])
    np.testing.assert_allclose(sc, [1.226 / 1.7, 0.8])
    np.testing.assert_array_equal(lab, [0, 1])


def test_cala_equal_scores_and_no_candidates():
    # equal scores: stable NMS keeps idx 0; IoU([0,4],[1,5]) = 3/5 = .6 > .5 -> idx 1 suppressed and in A.
    # w = .6, .6*.6 = .36, Σ = .96: start = .36/.96 = .375; end = (2.4 + 1.8)/.96 = 4.375;
    # score = (.36 + .216)/.96 = .6
    s, sc, lab = cala(np.array([[0.0, 4.0], [1.0, 5.0]]), np.array([0.6, 0.6]), np.array([2, 2]))
    np.testing.assert_allclose(s, [[0.375, 4.375]])
    np.testing.assert_allclose(sc, [0.6])
    np.testing.assert_array_equal(lab, [2])
    s, sc, lab = cala(np.zeros((0, 2)), np.zeros(0), np.zeros(0, int))
    assert s.shape == (0, 2) and sc.shape == (0,) and lab.shape == (0,)
    # nothing above θ_c
    assert cala(np.array([[0.0, 1.0]]), np.array([0.5]), np.array([0]))[0].shape == (0, 2)
    with pytest.raises(ValueError, match="segments"):
        cala(np.zeros((2, 3)), np.zeros(2), np.zeros(2, int))


Q_SEG = np.array([[0, 10], [20, 30], [40, 50]], dtype=float)
Q_LAB = np.array([0, 1, 0])
Q_W = np.array([1.0, 0.5, 0.8])
P_SEG = np.array([[2, 10], [0, 12], [0, 10], [21, 31], [45, 60]], dtype=float)
P_LAB = np.array([0, 0, 1, 1, 0])
P_SCORE = np.array([0.6, 0.2, 0.9, 0.5, 0.9])


def test_aic_by_hand():
    # q0: p0 (IoU .8, .6) joins; p1 IoU 10/12 but score .2 <= .3; p2 wrong class.
    #   q0' = (1*[0,10] + .6*[2,10]) / 1.6 = [.75, 10]; w = (1 + .6)/2 = .8
    # q1: p3 IoU 9/11 = .82, score .5 -> (.5*[20,30] + .5*[21,31]) / 1 = [20.5, 30.5]; w = (.5 + .5)/2 = .5
    # q2: p4 IoU 5/20 = .25 <= .5 -> unchanged
    seg, w = aic(Q_SEG, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE)
    np.testing.assert_allclose(seg, [[0.75, 10.0], [20.5, 30.5], [40.0, 50.0]])
    np.testing.assert_allclose(w, [0.8, 0.5, 0.8])
    # γ = 2: q0' = (2*[0,10] + .6*[2,10]) / 2.6 = [1.2/2.6, 26/2.6 = 10]; weight formula has no γ
    seg, w = aic(Q_SEG, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE, gamma=2.0)
    np.testing.assert_allclose(seg[0], [1.2 / 2.6, 10.0])
    np.testing.assert_allclose(w, [0.8, 0.5, 0.8])


def test_aic_no_teacher_predictions_and_no_pseudo():
    seg, w = aic(Q_SEG, Q_LAB, Q_W, np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    np.testing.assert_array_equal(seg, Q_SEG)
    np.testing.assert_array_equal(w, Q_W)
    seg, w = aic(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0), P_SEG, P_LAB, P_SCORE)
    assert seg.shape == (0, 2) and w.shape == (0,)


def test_mic_by_hand():
    p_seg = np.array([[0, 10], [30, 40], [31, 41], [50, 60], [5, 15], [9, 20]], dtype=float)
    p_lab = np.array([0, 0, 0, 0, 1, 0])
    p_score = np.array([0.9, 0.8, 0.7, 0.4, 0.6, 0.55])
    # p0 covers q0 (IoU 1) -> no; p1 IoU 0 -> added; p2 suppressed by p1 (IoU 9/11); p3 score .4 <= .5;
    # p4 class 1 has no pseudo instance -> max IoU 0 -> added; p5 IoU with [0,10] = 1/20 = .05 < .1 -> added.
    # Order: NMS order by score: p1 (.8), p4 (.6), p5 (.55)
    seg, lab, w = mic(np.array([[0.0, 10.0]]), np.array([0]), p_seg, p_lab, p_score)
    np.testing.assert_allclose(seg, [[30, 40], [5, 15], [9, 20]])
    np.testing.assert_array_equal(lab, [0, 1, 0])
    np.testing.assert_allclose(w, [0.8, 0.6, 0.55])


def test_mic_no_pseudo_and_no_teacher():
    seg, lab, w = mic(np.zeros((0, 2)), np.zeros(0, int), np.array([[0.0, 4.0], [1.0, 5.0]]), np.array([0, 0]),
                      np.array([0.7, 0.7]))
    # equal scores: idx 0 kept, idx 1 (IoU .6) suppressed; no pseudo instance -> added
    np.testing.assert_allclose(seg, [[0.0, 4.0]])
    np.testing.assert_allclose(w, [0.7])
    seg, lab, w = mic(Q_SEG, Q_LAB, np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    assert seg.shape == (0, 2) and lab.shape == (0,) and w.shape == (0,)
