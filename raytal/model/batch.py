"""Collate Video records into one padded detector batch (docs/design.md §4 "Training").

Segments are converted from seconds to the snippet grid here, once, with ``seconds_to_grid``; the
model, assignment and losses only ever see grid units. Training batches may be randomly cropped to
``max_seq_len`` snippets (ActionFormer's truncation: an instance survives the crop if at least
``trunc_thresh`` of its length lies inside); inference batches keep whole videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from raytal.core.grid import seconds_to_grid
from raytal.core.video import Video


@dataclass
class Batch:
    feats: torch.Tensor  # [B, D, T] float32, zero-padded
    mask: torch.Tensor  # [B, T] bool, True on real snippets
    segments: list[torch.Tensor]  # per video [N_i, 2] float32 grid units (after crop shift)
    labels: list[torch.Tensor]  # per video [N_i] int64
    weights: list[torch.Tensor]  # per video [N_i] float32
    labeled: torch.Tensor  # [B] bool
    targets: torch.Tensor | None  # [B, T, C] or None (NaN rows for videos without targets)
    teacher_scores: torch.Tensor | None  # [B, T, C] or None (NaN for videos without scores)
    meta: list[dict]  # video_id, fps, feat_stride, num_frames, duration, offset, length

    def to(self, device: str | torch.device, non_blocking: bool = False) -> "Batch":
        """The same batch with every tensor on ``device`` (meta stays on the host); ``non_blocking`` copies
        from pinned memory return at once (the copy overlaps what the device is doing)."""
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """The same batch in page-locked host memory, which a GPU can copy from asynchronously."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, fn) -> "Batch":
        def opt(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else fn(x)

        return Batch(
            feats=fn(self.feats),
            mask=fn(self.mask),
            segments=[fn(s) for s in self.segments],
            labels=[fn(x) for x in self.labels],
            weights=[fn(w) for w in self.weights],
            labeled=fn(self.labeled),
            targets=opt(self.targets),
            teacher_scores=opt(self.teacher_scores),
            meta=self.meta,
        )


def _check_video(v: Video, dim: int | None) -> np.ndarray:
    where = f"video '{v.video_id}': field"
    if v.features is None:
        raise ValueError(f"{where} 'features': expected a loaded [T, D] array, got None")
    f = np.asarray(v.features)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"{where} 'features': expected a non-empty [T, D] array, got shape {f.shape}")
    if dim is not None and f.shape[1] != dim:
        raise ValueError(f"{where} 'features': expected D={dim} like the rest of the batch, got {f.shape[1]}")
    segs = np.asarray(v.segments, dtype=np.float64).reshape(-1, 2)
    if len(segs) != len(np.asarray(v.labels).reshape(-1)):
        raise ValueError(f"{where} 'labels': expected {len(segs)} labels (one per segment), got {len(v.labels)}")
    if v.weights is not None and len(np.asarray(v.weights).reshape(-1)) != len(segs):
        raise ValueError(f"{where} 'weights': expected {len(segs)} weights, got {len(v.weights)}")
    return f


def _dense(arrays: list[np.ndarray | None], offsets: list[int], lengths: list[int], t_pad: int, name: str,
           videos: list[Video]) -> torch.Tensor | None:
    """Stack optional per-snippet [T, C] arrays: NaN for videos without one, 0 on padding."""
    present = [a for a in arrays if a is not None]
    if not present:
        return None
    c = np.asarray(present[0]).shape[1]
    out = np.full((len(arrays), t_pad, c), np.nan, dtype=np.float32)
    for b, a in enumerate(arrays):
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != c or a.shape[0] != videos[b].num_snippets:
            raise ValueError(
                f"video '{videos[b].video_id}': field '{name}': expected [{videos[b].num_snippets}, {c}], got {a.shape}"
            )
        out[b] = 0.0
        out[b, : lengths[b]] = a[offsets[b] : offsets[b] + lengths[b]]
    return torch.from_numpy(out)


def collate(
    videos: list[Video],
    *,
    pad_multiple: int,
    max_seq_len: int | None = None,
    rng: np.random.Generator | None = None,
    trunc_thresh: float = 0.5,
) -> Batch:
    """Pad (and, when ``max_seq_len`` and ``rng`` are given, randomly crop) videos into a Batch.

    The padded length is the longest (cropped) video rounded up to ``pad_multiple``, so the pyramid's
    stride-2 levels divide evenly.
    """
    if not videos:
        raise ValueError("collate: expected at least one video, got an empty list")
    if pad_multiple < 1:
        raise ValueError(f"collate: expected pad_multiple >= 1, got {pad_multiple}")
    if (max_seq_len is None) != (rng is None):
        raise ValueError("collate: give both max_seq_len and rng (training crop) or neither (inference)")
    if max_seq_len is not None and max_seq_len < 1:
        raise ValueError(f"collate: expected max_seq_len >= 1, got {max_seq_len}")

    dim = None
    feats_np, offsets, lengths = [], [], []
    segments, labels, weights, meta = [], [], [], []
    for v in videos:
        f = _check_video(v, dim)
        dim = f.shape[1]
        t = f.shape[0]
        secs = np.asarray(v.segments, dtype=np.float64).reshape(-1, 2)
        segs = seconds_to_grid(secs, v.fps, v.feat_stride, v.num_frames)
        lab = np.asarray(v.labels, dtype=np.int64).reshape(-1)
        w = np.ones(len(segs)) if v.weights is None else np.asarray(v.weights, dtype=np.float64).reshape(-1)
        offset, length = 0, t
        if max_seq_len is not None and t > max_seq_len:
            offset = int(rng.integers(0, t - max_seq_len + 1))
            length = max_seq_len
            shifted = segs - offset
            clipped = np.clip(shifted, 0.0, float(length))
            full = segs[:, 1] - segs[:, 0]
            kept = (clipped[:, 1] - clipped[:, 0]) >= trunc_thresh * np.maximum(full, 1e-9)
            kept &= clipped[:, 1] > clipped[:, 0]
            segs, lab, w = clipped[kept], lab[kept], w[kept]
        feats_np.append(f[offset : offset + length])
        offsets.append(offset)
        lengths.append(length)
        segments.append(torch.as_tensor(segs, dtype=torch.float32).reshape(-1, 2))
        labels.append(torch.as_tensor(lab, dtype=torch.int64))
        weights.append(torch.as_tensor(w, dtype=torch.float32))
        meta.append(
            dict(video_id=v.video_id, fps=float(v.fps), feat_stride=int(v.feat_stride), num_frames=int(v.num_frames),
                 duration=float(v.duration), offset=offset, length=length)
        )

    t_pad = -(-max(lengths) // pad_multiple) * pad_multiple
    feats = np.zeros((len(videos), dim, t_pad), dtype=np.float32)
    mask = np.zeros((len(videos), t_pad), dtype=bool)
    for b, f in enumerate(feats_np):
        feats[b, :, : f.shape[0]] = f.T
        mask[b, : f.shape[0]] = True
    return Batch(
        feats=torch.from_numpy(feats),
        mask=torch.from_numpy(mask),
        segments=segments,
        labels=labels,
        weights=weights,
        labeled=torch.tensor([bool(v.labeled) for v in videos]),
        targets=_dense([v.targets for v in videos], offsets, lengths, t_pad, "targets", videos),
        teacher_scores=_dense([v.teacher_scores for v in videos], offsets, lengths, t_pad, "teacher_scores", videos),
        meta=meta,
    )


def _pad_time(x: Tensor, dim: int, length: int, value: float) -> Tensor:
    extra = length - x.shape[dim]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=value)


def _dense_or_nan(parts: list[Tensor | None], length: int) -> Tensor | None:
    """Stack optional [1, T_i, C] dense fields; videos without one get NaN rows (the Batch convention)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    c = present[0].shape[-1]
    filled = [
        _pad_time(p, 1, length, 0.0) if p is not None else torch.full((1, length, c), float("nan"))
        for p in parts
    ]
    return torch.cat(filled, dim=0)


def concat_batches(batches: list[Batch]) -> Batch:
    """One Batch from several (each typically one video), padding the time axis to the longest."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    length = max(b.feats.shape[2] for b in batches)
    return Batch(
        feats=torch.cat([_pad_time(b.feats, 2, length, 0.0) for b in batches], dim=0),
        mask=torch.cat([_pad_time(b.mask, 1, length, False) for b in batches], dim=0),
        segments=[s for b in batches for s in b.segments],
        labels=[s for b in batches for s in b.labels],
        weights=[s for b in batches for s in b.weights],
        labeled=torch.cat([b.labeled for b in batches], dim=0),
        targets=_dense_or_nan([b.targets for b in batches], length),
        teacher_scores=_dense_or_nan([b.teacher_scores for b in batches], length),
        meta=[m for b in batches for m in b.meta],
    )
