"""ActionFormer's backbone: conv embedding, local-attention transformer blocks with conv q/k/v, a
stride-2 pyramid built inside the blocks, and the identity neck (one LayerNorm per level).

The layers are ActionFormer's (``ConvTransformerBackbone``, ``TransformerBlock``, ``LocalMaskedMHCA``,
``AffineDropPath``, ``FPNIdentity`` in happyharrycn/actionformer_release), written for a [B, T, E] layout
where LayerNorm and the 1x1 projections are single fused kernels; the mapping to its checkpoints is in
``raytal.model.actionformer_weights``.

Padding. ActionFormer masks every conv output but lets padded snippets into its inputs: a LayerNorm of a
zero (padded) snippet is its bias, and the next depthwise conv or max-pool reads it at a video's last
real snippets. Its design therefore does not let a video's output be independent of padding; what it
fixes is *how* a video is padded: to ``max_seq_len`` (training, and shorter videos at test time), else
up to a multiple of its divisibility factor (``Detector.sequence_lengths``). raytal reproduces that per
video: snippets before the video's own padded length ("in sequence") behave as ActionFormer's padding,
snippets beyond it as the outside of the sequence (zero for a conv, -inf for max-pool, masked keys), so a
video's output depends only on its own length, never on the batch it is in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raytal.model.recompute import gelu_linear, norm_linear


class MaskedConv1d(nn.Module):
    """Conv1d over [B, C, T] whose output is zeroed on padded snippets (ActionFormer's MaskedConv1D)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, bias: bool = True):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"MaskedConv1d: expected an odd kernel size, got {kernel}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, padding=kernel // 2, bias=bias)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor, seq: Tensor | None = None) -> Tensor:
        """x [B, C, T]; mask [B, T] real snippets; seq [B, T] snippets inside the sequence (None = all)."""
        if seq is not None:  # the outside of a video's sequence reads as the conv's zero padding
            x = x * seq[:, None, :].to(x.dtype)
        y = self.conv(x)
        return y * mask[:, None, :].to(y.dtype)  # in the conv's dtype (autocast: half precision stays half)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel dim of a [B, C, T] tensor."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: each video's branch is dropped with probability ``rate`` (kept ones scaled up)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x / keep * torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))


class ScaledDropPath(nn.Module):
    """ActionFormer's AffineDropPath: a per-channel scale (initialised at 1e-4, so every residual branch
    starts almost closed) followed by stochastic depth."""

    def __init__(self, dim: int, rate: float, init: float = 1e-4):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(self.scale * x, self.rate, self.training)


def _channels_last(x: Tensor) -> Tensor:
    """[B, T, C] as a [B, C, 1, T] view in channels-last memory: 2-D kernels read it without a copy."""
    return x.unsqueeze(1).permute(0, 3, 1, 2)


def _from_channels_last(y: Tensor) -> Tensor:
    return y.permute(0, 2, 3, 1).squeeze(1)


def depthwise_conv(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """Depthwise conv (kernel 3, zero padding 1) over the time of a [B, T, C] tensor -> [B, T / stride, C].
    Run as a channels-last 2-D conv: no transposed copies of the input or the output."""
    return _from_channels_last(F.conv2d(_channels_last(x), weight.unsqueeze(2), stride=(1, stride), padding=(0, 1),
                                        groups=weight.shape[0]))


def max_pool_time(x: Tensor) -> Tensor:
    """Max-pool by 2 (kernel 3, padding 1, which never wins) over the time of a [B, T, C] tensor."""
    return _from_channels_last(F.max_pool2d(_channels_last(x), (1, 3), (1, 2), (0, 1)))


def banded_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, half: int, chunk: int = 16) -> Tensor:
    """Softmax attention of each query over the keys within ``half`` snippets of it (|i − j| <= half).

    q, k, v: [B, H, T, d] (q already scaled); key_mask: [B, T] keys that may be attended to. Queries are
    cut into chunks of ``c`` snippets; each chunk attends to its keys plus ``half`` on either side
    (gathered with ``unfold``: memory linear in T) through one batched matmul, and a band mask keeps exactly
    the pairs within the window. Masked keys and keys outside the sequence get no weight.
    """
    b, h, t, d = q.shape
    c = min(max(chunk, 2 * half + 1), t)
    # a chunk size that divides t, when one is near, spares a padded copy of q (kept for the backward pass)
    c = next((k for k in range(c, 2 * c) if t % k == 0), c)
    n = -(-t // c)
    extra = n * c - t
    span = c + 2 * half
    q = F.pad(q, (0, 0, 0, extra)).reshape(b, h, n, c, d)
    k = F.pad(k, (0, 0, half, half + extra)).unfold(2, span, c)  # [B, H, n, d, span]
    v = F.pad(v, (0, 0, half, half + extra)).unfold(2, span, c)
    kmask = F.pad(key_mask, (half, half + extra)).unfold(1, span, c)  # [B, n, span]
    rel = torch.arange(span, device=q.device)[None, :] - torch.arange(c, device=q.device)[:, None]
    band = (rel >= 0) & (rel <= 2 * half)  # [c, span]: key j of the chunk is within the window of query i
    allowed = band[None, None] & kmask[:, :, None, :]  # [B, n, c, span]
    logits = torch.matmul(q, k)  # [B, H, n, c, span]
    logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
    out = torch.matmul(logits.softmax(-1), v.transpose(-1, -2))  # [B, H, n, c, d]
    return out.reshape(b, h, n * c, d)[:, :, :t]


class ConvAttention(nn.Module):
    """ActionFormer's (Local)MaskedMHCA: q, k and v each pass a depthwise conv (kernel 3, stride 1 or 2:
    the block's downsampling) and a LayerNorm before their 1x1 projection; attention is restricted to
    ``window`` snippets of the (output) level, or the whole level when ``window`` is 0."""

    def __init__(self, dim: int, num_heads: int, window: int, stride: int, dropout: float):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"ConvAttention: embed_dim {dim} must be divisible by num_heads {num_heads}")
        if window != 0 and (window < 1 or window % 2 != 1):
            raise ValueError(f"ConvAttention: expected an odd window >= 1 (or 0: global), got {window}")
        if stride not in (1, 2):
            raise ValueError(f"ConvAttention: expected stride 1 or 2, got {stride}")
        self.heads, self.window, self.stride = num_heads, window, stride
        self.q_conv, self.k_conv, self.v_conv = (nn.Parameter(torch.empty(dim, 1, 3)) for _ in range(3))
        for w in (self.q_conv, self.k_conv, self.v_conv):  # Conv1d's own initialisation (fan-in 3)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.q_norm, self.k_norm, self.v_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        for lin in (self.q, self.k, self.v, self.proj):
            nn.init.zeros_(lin.bias)
        self.drop = nn.Dropout(dropout)  # on the output projection (ActionFormer's attention-map dropout is 0)

    def forward(self, h: Tensor, out_mask: Tensor) -> Tensor:
        """h [B, T, E] (normalised, outside of the sequence zeroed); out_mask [B, T / stride]."""
        b = h.shape[0]
        m = out_mask[..., None]

        def project(conv: Tensor, norm: nn.LayerNorm, lin: nn.Linear) -> Tensor:
            x = depthwise_conv(h, conv, self.stride)
            x = x * m.to(x.dtype)
            return norm_linear(x, norm, lin).view(b, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)

        q = project(self.q_conv, self.q_norm, self.q)
        k = project(self.k_conv, self.k_norm, self.k)
        v = project(self.v_conv, self.v_norm, self.v)
        t = q.shape[2]
        half = self.window // 2 if self.window else t
        out = banded_attention(q * (1.0 / math.sqrt(q.shape[-1])), k, v, out_mask, half)
        out = self.drop(self.proj(out.transpose(1, 2).reshape(b, t, -1)))
        return out * m.to(out.dtype)


class TransformerBlock(nn.Module):
    """Pre-norm block; with ``stride`` 2 it halves T (strided q/k/v convs, max-pooled skip path):

    y = pool(x)·mask + DropPath(s₁ · Attn(LN x));  y + DropPath(s₂ · MLP(LN y)·mask)
    (no scales and plain residuals when ``drop_path`` is 0, as ActionFormer).
    """

    def __init__(self, dim: int, num_heads: int, window: int, stride: int, dropout: float, drop_path: float,
                 mlp_ratio: int = 4):
        super().__init__()
        self.stride = stride
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, window, stride, dropout)
        self.dropout = dropout
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))
        for lin in (self.mlp[0], self.mlp[3]):
            nn.init.zeros_(lin.bias)
        self.path_attn = ScaledDropPath(dim, drop_path) if drop_path > 0 else nn.Identity()
        self.path_mlp = ScaledDropPath(dim, drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor, seq: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x [B, T, E], mask [B, T], seq [B, T] | None -> the same at T / stride."""
        h = self.ln1(x)
        if seq is not None:
            h = h * seq[..., None].to(h.dtype)
        if self.stride > 1:
            # A level's snippet j sits at input snippet 2j (ActionFormer downsamples masks by nearest).
            out_mask, out_seq = mask[:, ::2], (seq[:, ::2] if seq is not None else None)
            skip = max_pool_time(x if seq is None else x.masked_fill(~seq[..., None], float("-inf")))
        else:
            out_mask, out_seq, skip = mask, seq, x
        y = skip.masked_fill(~out_mask[..., None], 0.0) + self.path_attn(self.attn(h, out_mask))
        if self.dropout == 0:  # the same layers, keeping less for the backward pass (raytal.model.recompute)
            z = gelu_linear(norm_linear(y, self.ln2, self.mlp[0]), self.mlp[3])
        else:
            z = self.mlp(self.ln2(y))
        return y + self.path_mlp(z * out_mask[..., None].to(z.dtype)), out_mask, out_seq


def sinusoid_table(length: int, dim: int) -> Tensor:
    """[1, dim, length] sinusoidal position embedding (sin on even, cos on odd channels), as ActionFormer."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    table = pos / rate
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float().T[None]


class Backbone(nn.Module):
    """Conv embedding → ``stem_blocks`` full-resolution blocks → ``levels − 1`` stride-2 blocks → neck.

    ``windows``: one attention window per level (0 = global). ``max_seq_len`` sizes the absolute
    position embedding (``abs_pos`` only). Returns per level [B, E, T / 2**l] features and [B, T / 2**l]
    masks.
    """

    def __init__(self, input_dim: int, embed_dim: int, embed_layers: int, embed_kernel: int, stem_blocks: int,
                 num_heads: int, windows: list[int], levels: int, dropout: float, drop_path: float,
                 abs_pos: bool = False, max_seq_len: int = 0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"Backbone: expected fpn_levels >= 1, got {levels}")
        if len(windows) != levels:
            raise ValueError(f"Backbone: expected one attention window per level ({levels}), got {windows}")
        self.embed = nn.ModuleList(
            MaskedConv1d(input_dim if i == 0 else embed_dim, embed_dim, embed_kernel, bias=False)
            for i in range(embed_layers)
        )
        self.embed_norm = nn.ModuleList(ChannelNorm(embed_dim) for _ in range(embed_layers))
        self.stem = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, windows[0], 1, dropout, drop_path) for _ in range(stem_blocks)
        )
        self.branch = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, windows[level], 2, dropout, drop_path)
            for level in range(1, levels)
        )
        self.neck = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(levels))
        self.max_seq_len = max_seq_len
        if abs_pos:
            if max_seq_len < 1:
                raise ValueError("Backbone: the absolute position embedding needs max_seq_len >= 1")
            # Scaled by 1/sqrt(E) as ActionFormer; not saved (a function of the sizes).
            self.register_buffer("pos_embed", sinusoid_table(max_seq_len, embed_dim) / embed_dim**0.5,
                                 persistent=False)
        else:
            self.pos_embed = None

    def _position(self, seq_lengths: Tensor, t: int) -> Tensor:
        """[B, E, t] position embedding: the first ``t`` rows in training; at test time a video whose
        sequence reaches max_seq_len gets the table resized to its sequence (linear), as ActionFormer."""
        table = self.pos_embed
        if self.training or t < self.max_seq_len:
            rows = table[:, :, :t]
            return F.pad(rows, (0, t - rows.shape[-1])).expand(len(seq_lengths), -1, -1)
        out = table.new_zeros(len(seq_lengths), table.shape[1], t)
        for n in torch.unique(seq_lengths).tolist():
            pe = F.interpolate(table, size=n, mode="linear", align_corners=False) if n >= self.max_seq_len else table
            pe = pe[:, :, :t]
            out[seq_lengths == n, :, : pe.shape[-1]] = pe[0]
        return out

    def forward(self, feats: Tensor, mask: Tensor, seq: Tensor | None = None,
                seq_lengths: Tensor | None = None) -> tuple[list[Tensor], list[Tensor], list[Tensor | None]]:
        """feats [B, D, T] (zero on padding), mask [B, T]; seq [B, T] snippets inside each video's
        sequence (None = all of T), seq_lengths [B] (with the position embedding)."""
        x = feats * mask[:, None, :].to(feats.dtype)
        for conv, norm in zip(self.embed, self.embed_norm):
            x = F.relu(norm(conv(x, mask, seq)))
        if self.pos_embed is not None:
            lengths = seq_lengths if seq_lengths is not None else mask.new_full((x.shape[0],), x.shape[-1], dtype=torch.long)
            x = x + self._position(lengths, x.shape[-1]).to(x.dtype) * mask[:, None, :].to(x.dtype)
        x = x.transpose(1, 2)  # [B, T, E] for the transformer
        for block in self.stem:
            x, mask, seq = block(x, mask, seq)
        outs, masks, seqs = [x], [mask], [seq]
        for block in self.branch:
            x, mask, seq = block(x, mask, seq)
            outs.append(x)
            masks.append(mask)
            seqs.append(seq)
        pyramid = [norm(o).transpose(1, 2) for norm, o in zip(self.neck, outs)]
        return pyramid, masks, seqs
