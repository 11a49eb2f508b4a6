"""Weakly-supervised base model (docs/design.md §4 "Weak base model"): BaS-Net-style snippet classifier producing
a TCAM.

Two branches share one classifier (see raytal/losses/mil.py for why):
* filtering module: 1x1 temporal convs -> sigmoid foreground attention a_t [B, T];
* base branch: temporal conv embedding (kernel 3) -> ReLU -> dropout -> 1x1 classifier -> TCAM
  logits [B, T, C+1], background last;
* suppression branch: the same embedding + classifier on the features multiplied by a_t.

Padding: features are zeroed outside the mask before every convolution, so a padded batch gives the same
outputs on real snippets as the video alone (the conv's own zero padding at a video's end looks the
same). Outputs at padded positions are set to 0 and must be ignored (use the mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raytal.losses.mil import topk_pool


@dataclass
class WTALOutput:
    tcam_logits: Tensor  # [B, T, C+1] base branch, background last
    suppressed_logits: Tensor  # [B, T, C+1] suppression branch
    attention: Tensor  # [B, T] foreground weight in [0, 1]
    mask: Tensor  # [B, T] bool, True on real snippets


class WTALModel(nn.Module):
    """TCAM snippet classifier with background suppression (module docstring)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.5, kernel: int = 3):
        super().__init__()
        if input_dim < 1 or num_classes < 1 or hidden < 1:
            raise ValueError(f"need input_dim, num_classes, hidden >= 1, got {input_dim}, {num_classes}, {hidden}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.filter = nn.Sequential(
            nn.Conv1d(input_dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv1d(hidden, 1, 1), nn.Sigmoid()
        )
        self.embed = nn.Conv1d(input_dim, hidden, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv1d(hidden, num_classes + 1, 1)

    def _tcam(self, feats: Tensor, m: Tensor) -> Tensor:
        h = self.dropout(torch.relu(self.embed(feats * m))) * m
        return self.classifier(h).transpose(1, 2) * m.transpose(1, 2)  # [B, T, C+1], 0 on padding

    def forward(self, feats: Tensor, mask: Tensor) -> WTALOutput:
        """feats [B, D, T] float, mask [B, T] bool -> WTALOutput."""
        if feats.dim() != 3 or feats.shape[1] != self.input_dim:
            raise ValueError(f"feats must be [B, D={self.input_dim}, T], got {tuple(feats.shape)}")
        if mask.shape != (feats.shape[0], feats.shape[2]) or mask.dtype != torch.bool:
            want = (feats.shape[0], feats.shape[2])
            raise ValueError(f"mask must be bool [B, T] = {want}, got {tuple(mask.shape)} {mask.dtype}")
        m = mask[:, None, :].to(feats.dtype)  # [B, 1, T]
        attention = self.filter(feats * m) * m  # [B, 1, T]
        return WTALOutput(
            tcam_logits=self._tcam(feats, m),
            suppressed_logits=self._tcam(feats * attention, m),
            attention=attention[:, 0],
            mask=mask,
        )


def snippet_and_video_scores(out: WTALOutput, topk_ratio: float) -> tuple[Tensor, Tensor]:
    """Localization scores from the suppression branch, as BaS-Net tests:

    cas [B, T, C] = per-snippet softmax over C+1 of the suppressed TCAM, foreground classes, times the
    foreground attention (without it, background snippets, whose suppressed input is ~0, would keep the
    classifier's constant response to zero input); video scores [B, C] = softmax over C+1 of the top-k
    pooled suppressed TCAM, foreground classes. Padding rows of cas are 0.
    """
    probs = torch.softmax(out.suppressed_logits, dim=-1)[..., :-1]
    cas = probs * out.attention[..., None] * out.mask[..., None]
    video = torch.softmax(topk_pool(out.suppressed_logits, out.mask, topk_ratio), dim=-1)[:, :-1]
    return cas, video
