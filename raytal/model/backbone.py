"""ActionFormer-style backbone: conv embedding, local-attention transformer blocks, stride-2 pyramid.

Every op keeps padded snippets at exactly zero and never lets them into a real snippet's receptive
field (keys on padding are masked out of attention, pooling sees -inf there), so a video's output is
the same whatever length the batch is padded to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv1d(nn.Module):
    """Conv1d over [B, C, T] that zeroes padded outputs (inputs are already zero there)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, bias: bool = True):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"MaskedConv1d: expected an odd kernel size, got {kernel}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * mask[:, None, :].to(x.dtype)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel dim of a [B, C, T] tensor."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class LocalAttention(nn.Module):
    """Multi-head self-attention restricted to a window of ``window`` snippets around each query.

    Vectorized as banded block attention: queries are cut into chunks of ``chunk`` snippets; each chunk
    attends to its keys plus ``window // 2`` on either side (gathered with ``unfold``, so memory is
    linear in T) through one batched matmul, and a band mask keeps exactly the |i − j| <= window // 2
    pairs. Keys on padding or outside the sequence get the most negative logit.
    """

    def __init__(self, dim: int, num_heads: int, window: int, dropout: float, chunk: int = 16):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"LocalAttention: embed_dim {dim} must be divisible by num_heads {num_heads}")
        if window < 1 or window % 2 != 1:
            raise ValueError(f"LocalAttention: expected an odd window >= 1, got {window}")
        self.heads, self.window, self.chunk = num_heads, window, max(chunk, window)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, E], mask: [B, T]
        b, t, e = x.shape
        h, half, c = self.heads, self.window // 2, min(self.chunk, t)
        d = e // h
        n = -(-t // c)
        extra = n * c - t
        q, k, v = self.qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)  # each [B, H, T, d]
        q = F.pad(q, (0, 0, 0, extra)).reshape(b, h, n, c, d)
        span = c + 2 * half
        k = F.pad(k, (0, 0, half, half + extra)).unfold(2, span, c)  # [B, H, n, d, span]
        v = F.pad(v, (0, 0, half, half + extra)).unfold(2, span, c)
        kmask = F.pad(mask, (half, half + extra)).unfold(1, span, c)  # [B, n, span]
        rel = torch.arange(span, device=x.device)[None, :] - torch.arange(c, device=x.device)[:, None]
        band = (rel >= 0) & (rel <= 2 * half)  # [c, span]: key j of the chunk is within the window of query i
        allowed = band[None, None] & kmask[:, :, None, :]  # [B, n, c, span]
        logits = torch.matmul(q, k) / math.sqrt(d)  # [B, H, n, c, span]
        logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
        attn = self.drop(logits.softmax(-1))
        out = torch.matmul(attn, v.transpose(-1, -2))  # [B, H, n, c, d]
        out = out.reshape(b, h, n * c, d)[:, :, :t].transpose(1, 2).reshape(b, t, e)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + LocalAttention(LN x); x + MLP(LN x); padded snippets zeroed."""

    def __init__(self, dim: int, num_heads: int, window: int, dropout: float, mlp_ratio: int = 4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = LocalAttention(dim, num_heads, window, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_ratio * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(x.dtype)
        x = (x + self.drop(self.attn(self.ln1(x), mask))) * m
        return (x + self.drop(self.mlp(self.ln2(x)))) * m


def masked_downsample(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-pool by 2 (kernel 3) over [B, T, E], ignoring padded snippets; returns (x, mask) at T/2.

    Output j pools inputs 2j-1..2j+1, so it is centred on input 2j (where the level's point sits).
    """
    filled = x.masked_fill(~mask[..., None], float("-inf")).transpose(1, 2)
    pooled = F.max_pool1d(filled, kernel_size=3, stride=2, padding=1).transpose(1, 2)
    new_mask = mask[:, ::2]
    return pooled.masked_fill(~new_mask[..., None], 0.0), new_mask


class Backbone(nn.Module):
    """Conv embedding → ``stem_blocks`` full-resolution blocks → ``levels − 1`` stride-2 blocks.

    Returns the pyramid: per level [B, E, T / 2**l] features and [B, T / 2**l] masks.
    """

    def __init__(self, input_dim: int, embed_dim: int, embed_layers: int, embed_kernel: int, stem_blocks: int,
                 num_heads: int, window: int, levels: int, dropout: float):
        super().__init__()
        if levels < 1:
            raise ValueError(f"Backbone: expected fpn_levels >= 1, got {levels}")
        self.embed = nn.ModuleList(
            MaskedConv1d(input_dim if i == 0 else embed_dim, embed_dim, embed_kernel, bias=False)
            for i in range(embed_layers)
        )
        self.embed_norm = nn.ModuleList(ChannelNorm(embed_dim) for _ in range(embed_layers))
        self.stem = nn.ModuleList(TransformerBlock(embed_dim, num_heads, window, dropout) for _ in range(stem_blocks))
        self.branch = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, window, dropout) for _ in range(levels - 1)
        )
        self.neck = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(levels))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = feats * mask[:, None, :].to(feats.dtype)
        for conv, norm in zip(self.embed, self.embed_norm):
            x = F.relu(norm(conv(x, mask))) * mask[:, None, :].to(x.dtype)
        x = x.transpose(1, 2)  # [B, T, E] for the transformer
        for block in self.stem:
            x = block(x, mask)
        outs, masks = [x], [mask]
        for block in self.branch:
            x, mask = masked_downsample(x, mask)
            x = block(x, mask)
            outs.append(x)
            masks.append(mask)
        pyramid = [
            (norm(o) * m[..., None].to(o.dtype)).transpose(1, 2) for norm, o, m in zip(self.neck, outs, masks)
        ]
        return pyramid, masks
