"""The real-feature GPU presets (configs/base/thumos14_i3d.yaml, configs/base/anet_tsp.yaml and their
recipes): each loads, builds its full-size detector and runs it on a short input of its feature width."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raytal.config import load_config
from raytal.model.detector import Detector

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# preset -> (feature width D, classes of the dataset, embed width E)
PRESETS = {
    "thumos14_i3d_supervised": (2048, 20, 512),
    "thumos14_i3d_apl_ntc": (2048, 20, 512),
    "anet_tsp_supervised": (512, 200, 256),
    "anet_tsp_apl_ntc": (512, 200, 256),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_model_runs_on_a_short_input(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    dim, classes, embed = PRESETS[name]
    assert cfg.model.input_dim == dim and cfg.ray.use_gpu
    torch.manual_seed(0)
    model = Detector(cfg.model, classes, cfg.model.input_dim, max_seq_len=cfg.data.max_seq_len).eval()
    # 6 levels: T must be a multiple of 2**5 = 32. Two videos, 64 and 40 real snippets, padded to 64.
    assert model.pad_multiple == 32
    T, lengths = 64, (64, 40)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    feats = torch.randn(2, dim, T) * mask[:, None, :]
    with torch.no_grad():
        out = model(feats, mask)
    # points per level: 64, 32, 16, 8, 4, 2 = 126; the 40-snippet video keeps 40, 20, 10, 5, 3, 2 = 80
    # of them (each level's mask takes every other snippet of the level below)
    P = 126
    assert out.cls_logits.shape == (2, P, classes)
    assert out.offsets.shape == (2, P, 2) and bool((out.offsets >= 0).all())
    assert out.mask.sum(1).tolist() == [126, 80]
    assert [tuple(x.shape) for x in out.pyramid] == [(2, embed, T >> level) for level in range(6)]
    if cfg.recipe.apl.enabled:
        assert out.quality_logits is not None and out.quality_logits.shape == (2, P, 2)
    else:
        assert out.quality_logits is None
    assert bool(torch.isfinite(out.cls_logits).all())
    # padded points carry no prediction: the masked output convs zero them, bias included
    assert not out.cls_logits[1][~out.mask[1]].any() and not out.offsets[1][~out.mask[1]].any()


def test_thumos14_i3d_preset_is_actionformers_model():
    # ActionFormer's configs/thumos_i3d.yaml model has 29,251,612 parameters (its code, counted:
    # benchmarks/bench_model_size.py). Built on the meta device: shapes without 117 MB of weights.
    cfg = load_config(CONFIGS / "thumos14_i3d_supervised.yaml")
    with torch.device("meta"):
        model = Detector(cfg.model, 20, cfg.model.input_dim, max_seq_len=cfg.data.max_seq_len)
    assert sum(p.numel() for p in model.parameters()) == 29_251_612
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # embedding: conv 2048 -> 512, kernel 3, no bias (a LayerNorm follows)
    assert shapes["backbone.embed.0.conv.weight"] == (512, 2048, 3) and "backbone.embed.0.conv.bias" not in shapes
    # 2 stem + 5 branch blocks: depthwise q/k/v convs (512, 1, 3), each with a LayerNorm, 512x512 projections,
    # an MLP 512 -> 2048 -> 512 and two drop-path scales
    for block in [f"stem.{i}" for i in range(2)] + [f"branch.{i}" for i in range(5)]:
        assert shapes[f"backbone.{block}.attn.v_conv"] == (512, 1, 3)
        assert shapes[f"backbone.{block}.attn.q_norm.weight"] == (512,)
        assert shapes[f"backbone.{block}.attn.proj.weight"] == (512, 512)
        assert shapes[f"backbone.{block}.mlp.0.weight"] == (2048, 512)
        assert shapes[f"backbone.{block}.path_mlp.scale"] == (512,)
    assert "backbone.branch.5.ln1.weight" not in shapes and "backbone.neck.5.weight" in shapes
    # heads: two conv 512 -> 512 (k 3) + LayerNorm towers, 20 class logits, 2 offsets, one scale per level
    assert shapes["heads.cls_tower.convs.1.conv.weight"] == (512, 512, 3)
    assert shapes["heads.cls_out.conv.weight"] == (20, 512, 3) and shapes["heads.reg_out.conv.weight"] == (2, 512, 3)
    assert [shapes[f"heads.scales.{level}"] for level in range(6)] == [()] * 6
