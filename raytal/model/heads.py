"""Detection heads shared over pyramid levels: classification, regression and optional quality.

Sharing the weights across levels is what makes one head detect actions of every scale. As in
ActionFormer, the regression head predicts each offset in units of its level's stride, times a learnable
per-level scale (``scales[l]``); ``Heads`` returns them multiplied by the stride, on the input grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raytal.model.backbone import ChannelNorm, MaskedConv1d


class Tower(nn.Module):
    """``layers`` masked conv + LayerNorm + ReLU blocks over [B, C, T] (one level at a time)."""

    def __init__(self, in_dim: int, dim: int, kernel: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList(
            MaskedConv1d(in_dim if i == 0 else dim, dim, kernel, bias=False) for i in range(layers)
        )
        self.norms = nn.ModuleList(ChannelNorm(dim) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor, seq: Tensor | None) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x, mask, seq)))
        return x


class Heads(nn.Module):
    """Shared heads. ``head_layers`` counts the tower convs plus the output conv (ActionFormer)."""

    def __init__(self, embed_dim: int, head_dim: int, num_classes: int, kernel: int, head_layers: int,
                 levels: int, prior_prob: float, quality: bool):
        super().__init__()
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"Heads: expected 0 < prior_prob < 1, got {prior_prob}")
        if head_layers < 1:
            raise ValueError(f"Heads: expected head_layers >= 1, got {head_layers}")
        tower_dim = head_dim if head_layers > 1 else embed_dim
        self.cls_tower = Tower(embed_dim, head_dim, kernel, head_layers - 1)
        self.reg_tower = Tower(embed_dim, head_dim, kernel, head_layers - 1)
        self.cls_out = MaskedConv1d(tower_dim, num_classes, kernel)
        self.reg_out = MaskedConv1d(tower_dim, 2, kernel)
        # Quality shares the regression tower: tIoU/tND are properties of the predicted boundaries.
        self.quality_out = MaskedConv1d(tower_dim, 2, kernel) if quality else None
        self.scales = nn.ParameterList(nn.Parameter(torch.tensor(1.0)) for _ in range(levels))
        # Focal-loss prior: every class starts at probability prior_prob so early training is stable.
        nn.init.constant_(self.cls_out.conv.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, pyramid: list[Tensor], masks: list[Tensor], seqs: list[Tensor | None]
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns cls logits [B, P, C], offsets [B, P, 2] in input-grid snippets, quality [B, P, 2] | None."""
        cls, reg, qual = [], [], []
        for level, (x, m, s) in enumerate(zip(pyramid, masks, seqs)):
            c = self.cls_out(self.cls_tower(x, m, s), m, s)
            r_feat = self.reg_tower(x, m, s)
            # ReLU keeps distances >= 0; the head's unit is the level's stride.
            r = F.relu(self.scales[level] * self.reg_out(r_feat, m, s)) * float(2**level)
            cls.append(c.transpose(1, 2))
            reg.append(r.transpose(1, 2))
            if self.quality_out is not None:
                qual.append(self.quality_out(r_feat, m, s).transpose(1, 2))
        quality = torch.cat(qual, 1) if qual else None
        return torch.cat(cls, 1), torch.cat(reg, 1), quality
