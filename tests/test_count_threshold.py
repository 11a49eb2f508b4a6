"""raytal.pseudo.count_threshold on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raytal.pseudo.count_threshold import count_threshold


def test_the_threshold_is_the_count_th_best_score():
    scores = np.array([0.3, 0.9, 0.1, 0.6, 0.6, 0.2])
    # ranked 0.9, 0.6, 0.6, 0.3, 0.2, 0.1: the 1st is 0.9, the 3rd 0.6 (ties both kept by >=), the 4th 0.3
    assert count_threshold(scores, 1) == 0.9
    assert count_threshold(scores, 3) == 0.6
    assert count_threshold(scores, 4) == 0.3
    assert int((scores >= count_threshold(scores, 4)).sum()) == 4


def test_fewer_detections_than_actions_keep_them_all_and_none_keeps_nothing():
    assert count_threshold(np.array([0.5, 0.2]), 10) == 0.2
    assert math.isinf(count_threshold(np.array([0.5, 0.2]), 0))
    assert math.isinf(count_threshold(np.zeros(0), 3))


def test_bad_input():
    with pytest.raises(ValueError, match="count"):
        count_threshold(np.array([0.5]), -1)
    with pytest.raises(ValueError, match="finite"):
        count_threshold(np.array([np.nan]), 1)
