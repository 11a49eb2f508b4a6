"""APL instance-level consistency discriminator, ICD (docs/design.md §5 "APL ICD", paper 002).

A pair MLP learns, on labeled instances, whether two instances share a class. A pseudo instance of
class ŷ then gets S = mean D(x̂, x_j) over labeled instances of ŷ: EAP drops positives that do not look
like their class, MPP promotes candidates that clearly do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x), dtype=torch.float32)


def instance_features(features: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Max-pool of ``features`` [T, D] over each instance's snippets -> [K, D].

    ``segments`` [K, 2] are fractional grid units, where snippet i is centred at i: an instance covers
    snippets ceil(start)..floor(end), clipped to [0, T−1]. An instance too short to contain a centre
    (or lying outside the video) falls back to the single snippet nearest its midpoint, so every
    instance gets a feature.
    """
    features = np.asarray(features)
    segments = np.asarray(segments, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features: expected a non-empty [T, D] array, got shape {features.shape}")
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments: expected [K, 2] (start, end), got shape {segments.shape}")
    if not np.all(np.isfinite(segments)) or np.any(segments[:, 1] < segments[:, 0]):
        raise ValueError("segments: expected finite (start, end) with end >= start")
    num_snippets = features.shape[0]
    if segments.shape[0] == 0:
        return np.zeros((0, features.shape[1]), dtype=features.dtype)
    first = np.ceil(segments[:, 0]).astype(np.int64)
    last = np.floor(segments[:, 1]).astype(np.int64)
    first, last = np.clip(first, 0, num_snippets - 1), np.clip(last, 0, num_snippets - 1)
    empty = (last < first) | (segments[:, 1] < 0) | (segments[:, 0] > num_snippets - 1)
    nearest = np.clip(np.rint(segments.mean(axis=1)), 0, num_snippets - 1).astype(np.int64)
    first, last = np.where(empty, nearest, first), np.where(empty, nearest, last)
    # Gather every (instance, snippet) row once, then reduce each instance's contiguous run.
    lengths = last - first + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + np.repeat(first, lengths)
    return np.maximum.reduceat(features[rows], offsets, axis=0)


class ICDiscriminator(nn.Module):
    """D(a, b) = sigmoid(MLP([a; b])), 2·dim → hidden → 1."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        if dim <= 0 or hidden <= 0:
            raise ValueError(f"dim, hidden: expected positive sizes, got {dim}, {hidden}")
        self.dim = dim
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected [N, {self.dim}] features, got shape {tuple(x.shape)}")

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores of the pairs (a_n, b_n) -> [N]."""
        self._check(a, "a")
        self._check(b, "b")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a, b: expected the same number of rows, got {a.shape[0]} and {b.shape[0]}")
        return self.fc2(F.relu(self.fc1(torch.cat([a, b], dim=1)))).squeeze(1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))

    def pair_matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """D(a_k, b_n) for every k, n -> [K, N].

        fc1 on [a; b] is W_a·a + W_b·b + bias, so each side is projected once and only the hidden
        activations are formed per pair (K·N·hidden, never K·N·2·dim).
        """
        self._check(a, "a")
        self._check(b, "b")
        w_a, w_b = self.fc1.weight[:, : self.dim], self.fc1.weight[:, self.dim :]
        hidden = F.relu((a @ w_a.T + self.fc1.bias)[:, None, :] + (b @ w_b.T)[None, :, :])
        return torch.sigmoid(self.fc2(hidden).squeeze(-1))


def sample_pairs(
    labels: np.ndarray, num_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced pairs of distinct instances: (i [num_pairs], j [num_pairs], y float32) with y = same class.

    Half the pairs are same-class (y = 1), half different-class (y = 0; the odd one is negative). When
    one kind cannot exist all pairs are of the other: with a single class only positives, with every
    class a singleton only negatives. Needs ≥ 2 instances.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] < 2:
        raise ValueError(f"labels: expected a 1-D array of at least 2 instance labels, got shape {labels.shape}")
    if num_pairs < 0:
        raise ValueError(f"num_pairs: expected >= 0, got {num_pairs}")
    labels = labels.astype(np.int64, copy=False)
    num = labels.shape[0]
    # Instances sorted by class: each class is a run [run_start, run_start + run_len) of `order`.
    order = np.argsort(labels, kind="stable")
    pos_in_order = np.empty(num, dtype=np.int64)
    pos_in_order[order] = np.arange(num)
    sorted_labels = labels[order]
    run_start = np.searchsorted(sorted_labels, labels, side="left")
    run_len = np.searchsorted(sorted_labels, labels, side="right") - run_start
    can_pos = run_len >= 2
    can_neg = run_len < num
    if can_pos.any() and can_neg.any():
        n_pos = num_pairs // 2
    else:
        n_pos = num_pairs if can_pos.any() else 0
    n_neg = num_pairs - n_pos

    # Positives: i from a class with ≥ 2 members, j another member of the same run (shifted by 1..len−1).
    i_pos = rng.choice(np.flatnonzero(can_pos), size=n_pos) if n_pos else np.zeros(0, np.int64)
    shift = rng.integers(1, run_len[i_pos]) if n_pos else np.zeros(0, np.int64)
    j_pos = order[run_start[i_pos] + (pos_in_order[i_pos] - run_start[i_pos] + shift) % run_len[i_pos]]

    # Negatives: i anywhere a different class exists, j uniform over the sorted positions outside i's run.
    i_neg = rng.choice(np.flatnonzero(can_neg), size=n_neg) if n_neg else np.zeros(0, np.int64)
    r = rng.integers(0, num - run_len[i_neg]) if n_neg else np.zeros(0, np.int64)
    j_neg = order[np.where(r < run_start[i_neg], r, r + run_len[i_neg])]

    y = np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_neg, np.float32)])
    return np.concatenate([i_pos, i_neg]), np.concatenate([j_pos, j_neg]), y


def train_icd(
    model: ICDiscriminator,
    feats: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    steps: int = 300,
    lr: float = 1e-3,
    batch_pairs: int = 256,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` on labeled instance features [N, D] with pair BCE; returns the loss per step.

    Every step draws a fresh balanced batch of pairs (``sample_pairs``) from a generator seeded by
    ``seed``. The model is left in eval mode.
    """
    x = _as_tensor(feats)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.ndim != 1 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"feats [N, D] / labels [N]: got shapes {tuple(x.shape)} and {labels.shape}")
    if steps < 0 or batch_pairs <= 0:
        raise ValueError(f"steps >= 0 and batch_pairs > 0 expected, got {steps}, {batch_pairs}")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        i, j, y = sample_pairs(labels, batch_pairs, rng)
        loss = F.binary_cross_entropy_with_logits(
            model.logits(x[torch.from_numpy(i)], x[torch.from_numpy(j)]), torch.from_numpy(y)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def icd_scores(
    model: ICDiscriminator,
    inst_feats: np.ndarray | torch.Tensor,
    inst_labels: np.ndarray,
    ref_feats: np.ndarray | torch.Tensor,
    ref_labels: np.ndarray,
) -> np.ndarray:
    """S_k = mean over reference (labeled) instances of class ŷ_k of D(x̂_k, x_j) -> [K].

    A class with no reference instance gets S = 0: nothing vouches for it, so EAP drops such positives
    and MPP never promotes such candidates.
    """
    a, b = _as_tensor(inst_feats), _as_tensor(ref_feats)
    inst_labels, ref_labels = np.asarray(inst_labels), np.asarray(ref_labels)
    if a.ndim != 2 or inst_labels.shape != (a.shape[0],):
        raise ValueError(f"inst_feats [K, D] / inst_labels [K]: got {tuple(a.shape)} and {inst_labels.shape}")
    if b.ndim != 2 or ref_labels.shape != (b.shape[0],):
        raise ValueError(f"ref_feats [N, D] / ref_labels [N]: got {tuple(b.shape)} and {ref_labels.shape}")
    scores = np.zeros(a.shape[0], dtype=np.float64)
    for c in np.intersect1d(inst_labels, ref_labels):
        k = np.flatnonzero(inst_labels == c)
        n = np.flatnonzero(ref_labels == c)
        scores[k] = model.pair_matrix(a[torch.from_numpy(k)], b[torch.from_numpy(n)]).mean(dim=1).double().numpy()
    return scores


def refine_with_icd(
    positive: np.ndarray, candidate: np.ndarray, S: np.ndarray, tau_icd: float = 0.3, sigma_icd: float = 0.7
) -> np.ndarray:
    """Final keep mask [K]: positives with S ≥ τ_icd (EAP drops S < τ_icd) plus candidates with
    S > ς_icd (MPP)."""
    positive, candidate, S = np.asarray(positive, bool), np.asarray(candidate, bool), np.asarray(S, np.float64)
    if not (positive.shape == candidate.shape == S.shape) or S.ndim != 1:
        raise ValueError(
            f"positive, candidate, S: expected equal 1-D shapes, got {positive.shape}, {candidate.shape}, {S.shape}"
        )
    return (positive & (S >= tau_icd)) | (candidate & (S > sigma_icd))
