import numpy as np

from raytal.core.iou import pairwise_iou


def test_pairwise_iou_hand_values():
    a = np.array([[0.0, 10.0], [5.0, 6.0]])
    b = np.array([[5.0, 15.0], [20.0, 30.0], [0.0, 10.0]])
    iou = pairwise_iou(a, b)
    # [0,10] vs [5,15]: inter 5, union 15 -> 1/3; disjoint -> 0; identical -> 1
    # [5,6] vs [5,15]: inter 1, union 10 -> 0.1; [5,6] vs [0,10]: inter 1, union 10 -> 0.1
    np.testing.assert_allclose(iou, [[1 / 3, 0.0, 1.0], [0.1, 0.0, 0.1]])


def test_pairwise_iou_zero_length_is_zero_not_nan():
    iou = pairwise_iou(np.array([[3.0, 3.0]]), np.array([[3.0, 3.0], [0.0, 5.0]]))
    assert np.all(np.isfinite(iou))
    np.testing.assert_allclose(iou, [[0.0, 0.0]])


def test_pairwise_iou_empty():
    assert pairwise_iou(np.zeros((0, 2)), np.array([[0.0, 1.0]])).shape == (0, 1)
