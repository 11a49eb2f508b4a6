import pytest
import torch

from raytal.model.assign import assign_targets
from raytal.model.points import make_points

RANGES = [[0, 4], [4, 8], [8, 10000]]


def test_points_layout():
    pts, lv = make_points(16, RANGES)
    # 16 + 8 + 4 points; level 1 centres 0,2,...,14 with stride 2 and range [4, 8].
    assert pts.shape == (28, 4)
    assert lv.tolist() == [0] * 16 + [1] * 8 + [2] * 4
    assert pts[16:24, 0].tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert pts[17].tolist() == [2.0, 4.0, 8.0, 2.0]
    with pytest.raises(ValueError, match="divisible by 4"):
        make_points(18, RANGES)


def test_centre_sampling_and_regression_ranges():
    pts, _ = make_points(16, RANGES)  # level 0: idx t; level 1: 16 + t/2; level 2: 24 + t/4
    segs = torch.tensor([[2.0, 5.0], [4.0, 14.0]])
    t = assign_targets(pts, segs, torch.tensor([0, 1]), num_classes=2, center_sample_radius=1.5)
    # Instance 0 [2, 5], centre 3.5. Level 0 (radius 1.5): region (2, 5) -> t = 3, 4, max distance 2 in
    # [0, 4]. Level 1 (radius 3): t = 4 inside but max distance 2 not in [4, 8]. Level 2: t = 4, same.
    # Instance 1 [4, 14], centre 9. Level 0: region (7.5, 10.5) -> t = 8, 9, 10 with max distances
    # 6, 5, 6, outside [0, 4]. Level 1: region (6, 12) -> t = 8 (4, 6), t = 10 (6, 4): max 6 in [4, 8].
    # Level 2 (radius 6): region (4, 14) -> t = 8 (max 6 < 8: no), t = 12 (8, 2): max 8 in [8, inf).
    assert torch.nonzero(t.pos).flatten().tolist() == [3, 4, 20, 21, 27]
    assert t.gt_index[t.pos].tolist() == [0, 0, 1, 1, 1]
    assert t.reg[t.pos].tolist() == [[1, 2], [2, 1], [4, 6], [6, 4], [8, 2]]
    assert t.cls[t.pos].tolist() == [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]
    assert t.cls[~t.pos].sum() == 0 and t.reg[~t.pos].abs().sum() == 0
    assert (t.gt_index[~t.pos] == -1).all()


def test_shortest_instance_wins_and_equal_segments_share_point():
    pts, _ = make_points(16, RANGES)
    # X [0, 8] and Y [2, 6] share centre 4. Level 0 (radius 1.5): X is positive only at t = 4 (max
    # distance 4), Y at t = 3, 4, 5 (max 3, 2, 3). At t = 4 Y (length 4 < 8) wins: reg (2, 2).
    t = assign_targets(pts, torch.tensor([[0.0, 8.0], [2.0, 6.0]]), torch.tensor([0, 1]), 3, 1.5)
    assert t.gt_index[:16].tolist() == [-1, -1, -1, 1, 1, 1] + [-1] * 10
    assert t.reg[4].tolist() == [2.0, 2.0]
    # The same segment with two labels: both classes are targets at its points.
    t = assign_targets(pts, torch.tensor([[2.0, 6.0], [2.0, 6.0]]), torch.tensor([0, 2]), 3, 1.5)
    assert t.cls[4].tolist() == [1.0, 0.0, 1.0]


def test_no_instances_and_bad_labels():
    pts, _ = make_points(8, RANGES)
    t = assign_targets(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), 2, 1.5)
    assert not t.pos.any() and t.cls.shape == (14, 2) and (t.gt_index == -1).all()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        assign_targets(pts, torch.tensor([[1.0, 3.0]]), torch.tensor([2]), 2, 1.5)
