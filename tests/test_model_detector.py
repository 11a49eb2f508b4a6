import math

import pytest
import torch

from raytal.config import ModelConfig
from raytal.model.backbone import LocalAttention
from raytal.model.detector import Detector

torch.set_num_threads(1)


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(embed_dim=16, head_dim=16, num_heads=2, stem_blocks=1, window=5, fpn_levels=3,
                regression_ranges=[[0, 4], [4, 8], [8, 10000]])
    base.update(kw)
    return ModelConfig(**base)


def test_shapes_points_and_prior():
    torch.manual_seed(0)
    m = Detector(tiny_cfg(quality_heads=True), num_classes=3, input_dim=6)
    assert m.pad_multiple == 4  # 3 levels: T must halve twice
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    out = m(torch.randn(2, 6, 16), mask)
    p = 16 + 8 + 4
    assert out.cls_logits.shape == (2, p, 3) and out.offsets.shape == (2, p, 2)
    assert out.quality_logits.shape == (2, p, 2)
    assert (out.offsets >= 0).all()
    assert out.points.shape == (p, 4) and out.levels.tolist() == [0] * 16 + [1] * 8 + [2] * 4
    # real points of the 10-snippet video: 10 at level 0, ceil(10/2) = 5, ceil(10/4) = 3
    assert out.mask[1].sum() == 10 + 5 + 3 and out.mask[0].all()
    assert [f.shape for f in out.pyramid] == [(2, 16, 16), (2, 16, 8), (2, 16, 4)]
    # prior_prob 0.01 -> bias -log(0.99 / 0.01)
    assert torch.allclose(m.heads.cls_out.conv.bias, torch.full((3,), -math.log(99.0)))
    assert Detector(tiny_cfg(), 3, 6)(torch.randn(1, 6, 8), torch.ones(1, 8, dtype=torch.bool)).quality_logits is None


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    m = Detector(tiny_cfg(), num_classes=3, input_dim=6).eval()
    x = torch.randn(1, 6, 13)
    outs = []
    for t in (16, 40):  # the same 13-snippet video padded to two lengths (padding filled with garbage
        feats = torch.randn(1, 6, t) * 5  # that the model must ignore via the mask)
        feats[:, :, :13] = x
        mask = torch.zeros(1, t, dtype=torch.bool)
        mask[:, :13] = True
        with torch.no_grad():
            o = m(feats, mask)
        outs.append((o.cls_logits[0][o.mask[0]], o.offsets[0][o.mask[0]], o.points[o.mask[0]]))
    for a, b in zip(*outs):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)


def test_local_attention_window():
    # With window 3 a query only sees its two neighbours: changing snippet 5 alters outputs 4..6 only.
    torch.manual_seed(0)
    attn = LocalAttention(8, 2, 3, 0.0)
    x = torch.randn(1, 10, 8)
    mask = torch.ones(1, 10, dtype=torch.bool)
    y = x.clone()
    y[0, 5] += 1.0
    with torch.no_grad():
        changed = (attn(x, mask) - attn(y, mask)).abs().sum(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [4, 5, 6]


def test_bad_input_and_config():
    m = Detector(tiny_cfg(), num_classes=3, input_dim=6)
    with pytest.raises(ValueError, match="divisible by pad_multiple=4"):
        m(torch.randn(1, 6, 10), torch.ones(1, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected feats \[B, 6, T\]"):
        m(torch.randn(1, 5, 8), torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="one per pyramid level"):
        Detector(tiny_cfg(fpn_levels=4), 3, 6)
    with pytest.raises(ValueError, match="odd window"):
        Detector(tiny_cfg(window=4), 3, 6)


def test_local_attention_matches_dense_banded_reference():
    # Reference: full T x T attention with |i - j| <= 2 (window 5) and padded keys removed.
    torch.manual_seed(1)
    attn = LocalAttention(8, 2, 5, 0.0, chunk=4)  # chunk 5 (>= window) so T=13 spans 3 chunks
    x = torch.randn(2, 13, 8)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False
    with torch.no_grad():
        got = attn(x, mask)
        q, k, v = attn.qkv(x).view(2, 13, 3, 2, 4).permute(2, 0, 3, 1, 4)
        i = torch.arange(13)
        allowed = ((i[:, None] - i[None, :]).abs() <= 2)[None, None] & mask[:, None, None, :]
        logits = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~allowed, float("-inf"))  # sqrt(d = 4) = 2
        ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 13, 8))
    assert torch.allclose(got[mask], ref[mask], atol=1e-5)
