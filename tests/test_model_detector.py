import math

import pytest
import torch

from raytal.config import ModelConfig
from raytal.model.backbone import banded_attention, sinusoid_table
from raytal.model.detector import Detector

torch.set_num_threads(1)


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(embed_dim=16, head_dim=16, num_heads=2, stem_blocks=1, window=5, fpn_levels=3,
                regression_ranges=[[0, 4], [4, 8], [8, 10000]])
    base.update(kw)
    return ModelConfig(**base)


# window 5 on 3 levels: ActionFormer pads to multiples of max(1, 2, 4) x (5 - 1) = 16
MAX_SEQ_LEN = 16


def tiny(cfg: ModelConfig | None = None, **kw) -> Detector:
    return Detector(cfg or tiny_cfg(), kw.pop("num_classes", 3), kw.pop("input_dim", 6), max_seq_len=MAX_SEQ_LEN)


def perturbed(model: Detector) -> Detector:
    """Every weight moved off its initial value (LayerNorm biases and drop-path scales included), so that
    what padded snippets carry into real ones is not hidden by zero biases."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def test_shapes_points_and_prior():
    torch.manual_seed(0)
    m = tiny(tiny_cfg(quality_heads=True))
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
    assert tiny()(torch.randn(1, 6, 8), torch.ones(1, 8, dtype=torch.bool)).quality_logits is None


def _outputs(model: Detector, video: torch.Tensor, t: int, other: torch.Tensor | None = None):
    """The real points' outputs of ``video`` [D, n] in a batch padded to ``t`` (with ``other`` beside it)."""
    videos = [video] + ([other] if other is not None else [])
    feats = torch.randn(len(videos), video.shape[0], t) * 5  # garbage on padding: the mask must hide it
    mask = torch.zeros(len(videos), t, dtype=torch.bool)
    for b, v in enumerate(videos):
        feats[b, :, : v.shape[1]] = v
        mask[b, : v.shape[1]] = True
    with torch.no_grad():
        o = model(feats, mask)
    keep = o.mask[0]
    return o.cls_logits[0][keep], o.offsets[0][keep], o.points[keep]


def test_a_videos_output_depends_on_its_own_length_only():
    # ActionFormer pads a video to max_seq_len (16 here) or, when longer, to the next multiple of 16, and
    # its padded snippets reach the last real ones. raytal gives each video that padding whatever the batch:
    # alone at exactly its padded length, beside a longer video, or in a batch padded less far.
    torch.manual_seed(0)
    m = perturbed(tiny())
    short, long = torch.randn(6, 13), torch.randn(6, 37)  # padded lengths: 16 and 48
    for video, own in ((short, 16), (long, 48)):
        ref = _outputs(m, video, own)
        for t, other in ((64, None), (40, torch.randn(6, 40)), (40, None)):
            if t < video.shape[1]:
                continue
            got = _outputs(m, video, t, other)
            for a, b in zip(ref, got):
                assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), (video.shape[1], t)


def test_padding_reaches_the_last_real_snippets_as_in_actionformer():
    # The same 16 snippets with max_seq_len 16 (no padding) and 32 (16 padded snippets after them): the first
    # snippets agree, the last ones see LayerNorm biases of the padding (ActionFormer's design).
    torch.manual_seed(0)
    m16 = perturbed(tiny())
    m32 = Detector(tiny_cfg(), 3, 6, max_seq_len=32).eval()
    m32.load_state_dict(m16.state_dict())
    video = torch.randn(6, 16)
    a, b = _outputs(m16, video, 16)[0], _outputs(m32, video, 32)[0]
    assert torch.allclose(a[:4], b[:4], atol=1e-5)  # level 0, far from the end
    assert not torch.allclose(a[12:16], b[12:16], atol=1e-3)


def test_banded_attention_window():
    # With half-width 1 a query only sees its two neighbours: changing key/value 5 alters outputs 4..6 only.
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 10, 4)
    mask = torch.ones(1, 10, dtype=torch.bool)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5] += 1.0
    v2[:, :, 5] += 1.0
    changed = (banded_attention(q, k, v, mask, 1) - banded_attention(q, k2, v2, mask, 1)).abs().sum((1, 3))[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [4, 5, 6]


def test_banded_attention_matches_dense_reference():
    # Reference: full T x T attention with |i - j| <= 2 and masked keys removed; chunks of 5 over T = 13.
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 2, 13, 4)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False
    got = banded_attention(q, k, v, mask, 2, chunk=5)
    i = torch.arange(13)
    allowed = ((i[:, None] - i[None, :]).abs() <= 2)[None, None] & mask[:, None, None, :]
    ref = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    real = mask[:, None, :].expand(2, 2, 13)  # queries on real snippets (the others are masked out later)
    assert torch.allclose(got[real], ref[real], atol=1e-5)
    # half-width >= T is global attention over the unmasked keys
    dense = (q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1) @ v
    assert torch.allclose(banded_attention(q, k, v, mask, 13)[real], dense[real], atol=1e-5)


def test_bad_input_and_config():
    m = tiny()
    with pytest.raises(ValueError, match="divisible by pad_multiple=4"):
        m(torch.randn(1, 6, 10), torch.ones(1, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected feats \[B, 6, T\]"):
        m(torch.randn(1, 5, 8), torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="one per pyramid level"):
        tiny(tiny_cfg(fpn_levels=4))
    with pytest.raises(ValueError, match="odd window"):
        tiny(tiny_cfg(window=4))
    with pytest.raises(ValueError, match="max_seq_len must be a positive multiple of 16"):
        Detector(tiny_cfg(), 3, 6, max_seq_len=24)


def test_sinusoid_position_table():
    # ActionFormer's table: channel 2i of position p is sin(p / 10000^(2i/E)), channel 2i+1 its cosine
    table = sinusoid_table(3, 4)  # [1, E = 4, T = 3]
    p = torch.tensor([0.0, 1.0, 2.0])
    expected = torch.stack([torch.sin(p), torch.cos(p), torch.sin(p / 100.0), torch.cos(p / 100.0)])
    assert table.shape == (1, 4, 3) and torch.allclose(table[0], expected, atol=1e-7)
