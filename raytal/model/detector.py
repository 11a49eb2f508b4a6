"""The one-stage, anchor-free temporal action detector: ActionFormer's network (see docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raytal.config import ModelConfig, divisibility, level_windows
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
    pyramid: list[torch.Tensor]  # per level [B, E, T_l]; only real snippets are meaningful


class Detector(nn.Module):
    """Backbone + shared heads; sizes from ``ModelConfig``, ``max_seq_len`` from ``data.max_seq_len``
    (ActionFormer's model knows it: it sets how each video is padded, see ``sequence_lengths``)."""

    def __init__(self, cfg: ModelConfig, num_classes: int, input_dim: int, *, max_seq_len: int):
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
        windows = level_windows(cfg)
        self.div = divisibility(cfg)
        if max_seq_len < 1 or max_seq_len % self.div:
            raise ValueError(f"Detector: max_seq_len must be a positive multiple of {self.div} (the pyramid's "
                             f"strides times the attention windows), got {max_seq_len}")
        self.num_classes, self.input_dim, self.max_seq_len = num_classes, input_dim, max_seq_len
        self.regression_ranges = [list(map(float, r)) for r in cfg.regression_ranges]
        self.backbone = Backbone(
            input_dim, cfg.embed_dim, cfg.embed_layers, cfg.embed_kernel, cfg.stem_blocks, cfg.num_heads,
            windows, cfg.fpn_levels, cfg.dropout, cfg.drop_path, cfg.abs_pos_embedding, max_seq_len,
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

    def sequence_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """The length ActionFormer pads a video of ``lengths`` snippets to: ``max_seq_len``, or for a longer
        video the next multiple of its divisibility factor. A video's output depends on this length only."""
        return torch.clamp(-(-lengths // self.div) * self.div, min=self.max_seq_len)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> DetectorOutput:
        """feats [B, D, T], mask [B, T] (each video's real snippets first). The output's points are the T
        given; internally the input is extended when a video needs padding beyond T (backbone docstring)."""
        if feats.dim() != 3 or feats.shape[1] != self.input_dim:
            raise ValueError(f"Detector: expected feats [B, {self.input_dim}, T], got {tuple(feats.shape)}")
        b, _, t = feats.shape
        if t % self._pad_multiple != 0:
            raise ValueError(f"Detector: expected T divisible by pad_multiple={self._pad_multiple}, got T={t}")
        if mask.shape != (b, t) or mask.dtype != torch.bool:
            raise ValueError(f"Detector: expected a bool mask of shape {(b, t)}, got {mask.dtype} {tuple(mask.shape)}")
        lengths = mask.sum(1).cpu()  # the one host sync of a forward: the shapes below depend on it
        seq_host = self.sequence_lengths(lengths)
        # What reproduces each video's own padding: one more pyramid cell past its last real snippet at
        # every level (or its whole sequence, if shorter); anything later is outside it.
        m = self._pad_multiple
        run_t = max(t, int(torch.minimum(seq_host, -(-lengths // m) * m + m).max()) if b else t)
        if run_t > t:
            feats, mask = F.pad(feats, (0, run_t - t)), F.pad(mask, (0, run_t - t))
        seq_lengths = seq_host.to(feats.device)
        seq = None  # every video's sequence covers the whole input: nothing is outside
        if b and int(seq_host.min()) < run_t:
            seq = torch.arange(run_t, device=feats.device)[None, :] < seq_lengths[:, None]
        pyramid, masks, seqs = self.backbone(feats, mask, seq, seq_lengths)
        cls, offsets, quality = self.heads(pyramid, masks, seqs)
        if run_t > t:  # back to the points of the T given
            keep = torch.cat([torch.arange(t >> level, device=feats.device) + sum(run_t >> j for j in range(level))
                              for level in range(len(masks))])
            cls, offsets = cls[:, keep], offsets[:, keep]
            quality = quality[:, keep] if quality is not None else None
            pyramid = [p[..., : t >> level] for level, p in enumerate(pyramid)]
            masks = [mk[:, : t >> level] for level, mk in enumerate(masks)]
        points, levels = make_points(t, self.regression_ranges, device=feats.device)
        return DetectorOutput(
            cls_logits=cls, offsets=offsets, quality_logits=quality, points=points, levels=levels,
            mask=torch.cat(masks, 1), pyramid=pyramid,
        )
