import math

import pytest
import torch

from raytal.losses.contrastive import acp_loss, info_nce, kmeans, sample_parts


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same_partition(a: torch.Tensor, b: list[int]) -> bool:
    b_t = torch.tensor(b)
    return bool(((a[:, None] == a[None, :]) == (b_t[:, None] == b_t[None, :])).all())


def test_sample_parts_one_index_per_part():
    for seed in range(5):
        idx = sample_parts(10, 5, _gen(seed))
        # parts of range(10) in 5: [0,2) [2,4) [4,6) [6,8) [8,10)
        assert idx.dtype == torch.int64 and idx.shape == (5,)
        assert torch.all(idx // 2 == torch.arange(5))
    torch.testing.assert_close(sample_parts(10, 5, _gen(3)), sample_parts(10, 5, _gen(3)))
    # shorter than n_parts: every index once
    torch.testing.assert_close(sample_parts(3, 5, _gen(0)), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="length >= 1"):
        sample_parts(0, 4)


def test_kmeans_separates_blobs_deterministically():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.0, 10.1], [0.0, 0.2], [9.9, 10.0]])
    labels = kmeans(x, 2, generator=_gen(0))
    assert labels.dtype == torch.int64
    assert _same_partition(labels, [0, 0, 1, 1, 0, 1])
    torch.testing.assert_close(kmeans(x, 2, generator=_gen(7)), kmeans(x, 2, generator=_gen(7)))
    # k >= N: each point alone; k = 1: one cluster
    torch.testing.assert_close(kmeans(x[:3], 5), torch.arange(3))
    torch.testing.assert_close(kmeans(x, 1, generator=_gen(0)), torch.zeros(6, dtype=torch.int64))
    # duplicate points (fewer distinct points than k) still give labels
    dup = kmeans(torch.tensor([[1.0], [1.0], [1.0], [4.0]]), 3, generator=_gen(1))
    assert _same_partition(dup[[0, 1, 2]], [0, 0, 0])
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans(x, 0)


def test_info_nce_hand_values():
    feats = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # L2-normalised: (1,0), (1,0), (0,1)
    labels = torch.tensor([0, 0, 1])
    # pairs (0,1) and (1,0): s_pos = 1/0.5 = 2, one negative with s = 0
    #   -log(e^2 / (e^2 + e^0)) = log(1 + e^-2) ; anchor 2 has no positive -> skipped
    assert info_nce(feats, labels, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    feats4 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # every anchor: one positive (s = 1 at tau 1), two negatives (s = 0): log(1 + 2/e), 4 pairs alike
    loss = info_nce(feats4, torch.tensor([0, 0, 1, 1]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-5)


def test_info_nce_no_negatives_no_positives_and_grad():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    # all same label: pairs exist but no negatives -> -log(e^s / e^s) = 0, gradients finite
    loss = info_nce(feats, torch.tensor([4, 4]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # no positive pair at all -> 0 attached to the graph
    loss = info_nce(feats, torch.tensor([0, 1]))
    assert loss.item() == 0.0 and loss.requires_grad
    f = torch.tensor([[1.0, 0.2], [0.9, 0.1], [0.0, 1.0]], requires_grad=True)
    info_nce(f, torch.tensor([0, 0, 1])).backward()
    assert f.grad.abs().sum() > 0


def test_acp_loss_hand_values():
    # B = 2, T = 4; level 0 [B, 1, 4], level 1 [B, 1, 2] (upsampled: t -> t // 2); concat frame = (l0[t], l1[t//2])
    l0 = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0, 7.0]]], requires_grad=True)
    l1 = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]], requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    # input features (D = 1): video 0 clusters {0,1} {2,3}; video 1 (3 real frames) {0,1} {2}; the padded
    # frame (99) must never be sampled
    x = torch.tensor([[[0.0, 0.0, 5.0, 5.0]], [[0.0, 0.0, 5.0, 99.0]]])
    # n_parts = 4 >= length: every real frame is sampled.
    # video 0 frames: A A Bv Bv with A = (1,0), Bv = (0,1); tau = 1: each pair s_pos = 1, 2 negatives s = 0
    #   -> log(1 + 2/e)
    # video 1 frames: A A Bv; pairs (0,1),(1,0), one negative -> log(1 + 1/e); frame 2 has no positive
    conc = (math.log(1 + 2 / math.e) + math.log(1 + 1 / math.e)) / 2
    # fine: 7 frames, k-means with B = 2 on inputs {0,0,5,5,0,0,5}: X = 4 A-frames, Y = 3 Bv-frames
    #   X anchors: 3 positives, 3 negatives each -> 12 pairs of log(1 + 3/e)
    #   Y anchors: 2 positives, 4 negatives each -> 6 pairs of log(1 + 4/e)
    conf = (12 * math.log(1 + 3 / math.e) + 6 * math.log(1 + 4 / math.e)) / 18
    loss = acp_loss([l0, l1], mask, x, n_parts=4, temperature=1.0, generator=_gen(0))
    assert loss.item() == pytest.approx(conc + conf, rel=1e-5)
    loss.backward()
    assert torch.isfinite(l0.grad).all() and torch.isfinite(l1.grad).all()
    assert l0.grad[1, 0, 3] == 0.0  # padded frame is not part of the loss


def test_acp_loss_sampling_is_seeded_and_shapes_checked():
    torch.manual_seed(0)
    pyr = [torch.randn(2, 4, 64), torch.randn(2, 4, 32)]
    mask = torch.ones(2, 64, dtype=torch.bool)
    x = torch.randn(2, 6, 64)
    a = acp_loss(pyr, mask, x, n_parts=8, generator=_gen(5))
    b = acp_loss(pyr, mask, x, n_parts=8, generator=_gen(5))
    assert torch.isfinite(a) and a.item() == b.item()
    with pytest.raises(ValueError, match="input_feats"):
        acp_loss(pyr, mask, x[:, :, :32])
    with pytest.raises(ValueError, match="non-empty"):
        acp_loss([], mask, x)
    empty_mask = torch.zeros(2, 64, dtype=torch.bool)
    assert acp_loss(pyr, empty_mask, x).item() == 0.0
