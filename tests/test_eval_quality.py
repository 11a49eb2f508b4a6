import math

import numpy as np
import pytest

from raytal.eval.quality import pseudo_label_quality
from raytal.core.segments import SegmentTable


def table(rows):
    return SegmentTable(
        np.array([r[0] for r in rows], dtype=object),
        np.array([(r[1], r[2]) for r in rows], dtype=np.float64).reshape(-1, 2),
        np.array([r[3] for r in rows], dtype=np.int64),
    )


GT = table([("a", 0, 10, 0), ("a", 20, 30, 1), ("b", 0, 4, 1)])  # g1, g2, g3


def test_hand_computed_quality():
    pseudo = table(
        [
            ("a", 0, 8, 0),  # best g1: 8/10 = .8, class right, positive
            ("a", 18, 30, 0),  # best g2: 10/12, class wrong
            ("a", 5, 25, 1),  # g1 5/25 = .2, g2 5/25 = .2: tie -> first-listed g1 (class 0): wrong
            ("b", 2, 6, 1),  # g3: inter 2 / union 6 = 1/3, class right, not positive (< .5)
            ("c", 0, 1, 2),  # no ground truth in video c: tIoU 0, wrong
        ]
    )
    q = pseudo_label_quality(GT, pseudo, num_classes=4)
    assert q["num_pseudo"] == 5 and q["num_gt"] == 3
    assert q["class_accuracy"] == pytest.approx(2 / 5)
    assert q["mean_tiou"] == pytest.approx((0.8 + 10 / 12 + 0.2 + 1 / 3 + 0.0) / 5)
    assert q["positive_accuracy"] == pytest.approx(1 / 5)
    # pseudo per class [2, 2, 1, 0], gt per class [1, 2, 0, 0] -> [2, 1, inf (gt 0), 0 (both 0)]
    assert q["count_ratio"][:2] == [2.0, 1.0]
    assert math.isinf(q["count_ratio"][2]) and q["count_ratio"][3] == 0.0


def test_no_overlap_is_no_match_even_with_ground_truth_in_the_video():
    q = pseudo_label_quality(GT, table([("a", 12, 18, 0)]), num_classes=2)
    # overlaps neither g1 nor g2: tIoU 0 and counted as wrong class
    assert q["class_accuracy"] == 0.0 and q["mean_tiou"] == 0.0


def test_empty_pseudo_has_undefined_accuracies_not_zero():
    q = pseudo_label_quality(GT, SegmentTable.empty(), num_classes=2)
    assert q["class_accuracy"] is None and q["mean_tiou"] is None and q["positive_accuracy"] is None
    assert q["count_ratio"] == [0.0, 0.0] and q["num_pseudo"] == 0


def test_label_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside 0..1"):
        pseudo_label_quality(GT, table([("a", 0, 1, 5)]), num_classes=2)
