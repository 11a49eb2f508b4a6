import pytest
import torch

from raytal.losses.consistency import temporal_consistency_loss


def test_hand_values_grouped_instances():
    instance = torch.tensor([0, 0, 0, 1, 1, 2])
    start = torch.tensor([1.0, 2.0, 4.0, 10.0, 13.0, 7.0])
    end = torch.tensor([5.0, 5.0, 6.0, 20.0, 18.0, 9.0])
    # instance 0 (M=3): start |2-1| + |4-2| = 3, /2 = 1.5; end |5-5| + |6-5| = 1, /2 = 0.5 -> 2.0
    # instance 1 (M=2): start |13-10| = 3; end |18-20| = 2 -> 5.0
    # instance 2 (M=1): no pair, left out of the mean
    # mean = (2.0 + 5.0) / 2 = 3.5
    loss = temporal_consistency_loss(start, end, instance)
    assert loss.item() == pytest.approx(3.5)


def test_interleaved_ids_keep_time_order_within_instance():
    instance = torch.tensor([5, 3, 5, 3])
    start = torch.tensor([0.0, 10.0, 2.0, 13.0])
    end = torch.tensor([1.0, 11.0, 1.0, 11.0])
    # instance 5: snippets 0, 2 -> start |2-0| = 2, end |1-1| = 0 -> 2
    # instance 3: snippets 1, 3 -> start |13-10| = 3, end 0 -> 3 ; mean 2.5
    assert temporal_consistency_loss(start, end, instance).item() == pytest.approx(2.5)


def test_gradient_flows_to_boundaries():
    instance = torch.tensor([0, 0, 0, 1, 1])
    start = torch.tensor([1.0, 2.0, 4.0, 10.0, 13.0], requires_grad=True)
    end = torch.tensor([5.0, 5.5, 6.0, 20.0, 18.0], requires_grad=True)
    temporal_consistency_loss(start, end, instance).backward()
    # loss = 1/2 * [ (|s1-s0| + |s2-s1|)/2 + ... + |s4-s3| + ... ]
    # d/ds0 = 1/2 * (-1/2) = -0.25 ; d/ds1 = 1/2 * (1/2 - 1/2) = 0 ; d/ds2 = 0.25
    # d/ds3 = 1/2 * (-1) = -0.5 ; d/ds4 = 0.5
    torch.testing.assert_close(start.grad, torch.tensor([-0.25, 0.0, 0.25, -0.5, 0.5]))
    # end of instance 1 decreases (20 -> 18): d/de3 = +0.5, d/de4 = -0.5
    torch.testing.assert_close(end.grad[3:], torch.tensor([0.5, -0.5]))


def test_empty_and_singletons_give_zero_with_grad():
    start = torch.zeros(0, requires_grad=True)
    loss = temporal_consistency_loss(start, torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    s = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = temporal_consistency_loss(s, torch.tensor([3.0, 4.0]), torch.tensor([0, 1]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same length"):
        temporal_consistency_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        temporal_consistency_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3))
