"""The one-stage, anchor-free temporal action detector (SPEC §4, ActionFormer-style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raytal.config import ModelConfig
from raytal.model.backbone import Backbone
from raytal.model.heads import Heads
from raytal.model.points import make_points


@dataclass
class DetectorOutput:
    cls_logits: torch.Tensor  # [B, P, C]
    offsets: torch.Tensor  # [B, P, 2] >= 0, distances to (start, end) in input-grid snippets
    quality_logits: torch.Tensor | None  # [B, P, 2] (tIoU, tND) logits, or None
    points: torch.Tensor  # [P, 4] (centre, reg_lo, reg_hi, stride)
    levels: torch.Tensor  # [P] int64
    mask: torch.Tensor  # [B, P] bool, point on a real snippet
    pyramid: list[torch.Tensor]  # per level [B, E, T_l]


class Detector(nn.Module):
    """Backbone + shared heads; all sizes come from ``ModelConfig``."""

    def __init__(self, cfg: ModelConfig, num_classes: int, input_dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Detector: expected num_classes >= 1, got {num_classes}")
        if input_dim < 1:
            raise ValueError(f"Detector: expected input_dim >= 1, got {input_dim}")
        if len(cfg.regression_ranges) != cfg.fpn_levels:
            raise ValueError(
                f"Detector: model.regression_ranges has {len(cfg.regression_ranges)} ranges, "
                f"expected one per pyramid level (model.fpn_levels = {cfg.fpn_levels})"
            )
        self.num_classes, self.input_dim = num_classes, input_dim
        self.regression_ranges = [list(map(float, r)) for r in cfg.regression_ranges]
        self.backbone = Backbone(
            input_dim, cfg.embed_dim, cfg.embed_layers, cfg.embed_kernel, cfg.stem_blocks, cfg.num_heads,
            cfg.window, cfg.fpn_levels, cfg.dropout,
        )
        self.heads = Heads(
            cfg.embed_dim, cfg.head_dim, num_classes, cfg.head_kernel, cfg.head_layers, cfg.fpn_levels,
            cfg.prior_prob, cfg.quality_heads,
        )
        self._pad_multiple = 2 ** (cfg.fpn_levels - 1)

    @property
    def pad_multiple(self) -> int:
        """Inputs must have T divisible by this (every stride-2 level halves T exactly)."""
        return self._pad_multiple

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> DetectorOutput:
        if feats.dim() != 3 or feats.shape[1] != self.input_dim:
            raise ValueError(f"Detector: expected feats [B, {self.input_dim}, T], got {tuple(feats.shape)}")
        b, _, t = feats.shape
        if t % self._pad_multiple != 0:
            raise ValueError(f"Detector: expected T divisible by pad_multiple={self._pad_multiple}, got T={t}")
        if mask.shape != (b, t) or mask.dtype != torch.bool:
            raise ValueError(f"Detector: expected a bool mask of shape {(b, t)}, got {mask.dtype} {tuple(mask.shape)}")
        pyramid, masks = self.backbone(feats, mask)
        cls, offsets, quality = self.heads(pyramid, masks)
        points, levels = make_points(t, self.regression_ranges, device=feats.device)
        return DetectorOutput(
            cls_logits=cls, offsets=offsets, quality_logits=quality, points=points, levels=levels,
            mask=torch.cat(masks, 1), pyramid=pyramid,
        )
