"""APL action-aware contrastive pre-training (ACP, docs/design.md §5 "APL ACP").

Without labels, k-means on the input features gives pseudo classes: 2 clusters per video separate
action from background (coarse contrast), B clusters over the whole batch separate kinds of action
(fine contrast). A supervised InfoNCE on the detector's pyramid features then pulls same-cluster
frames together, so the pyramid learns the structure the input features already show.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _sq_dist(x: Tensor, centres: Tensor) -> Tensor:
    # Exact (not matmul-based) distances: ties between duplicate points must break the same way every run.
    return torch.cdist(x, centres, compute_mode="donot_use_mm_for_euclid_dist").square()


def _kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    d2 = _sq_dist(x, x[chosen]).squeeze(1)
    for _ in range(1, k):  # loop over clusters: each new centre depends on the previous ones
        total = d2.sum()
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=generator))
        else:  # every point coincides with a centre already: any point will do
            nxt = int(torch.randint(n, (1,), generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, _sq_dist(x, x[nxt : nxt + 1]).squeeze(1))
    return x[chosen].clone()


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Cluster rows of x [N, E] into k groups; returns labels [N] int64 on x's device.

    k-means++ initialisation drawn from ``generator`` (a CPU torch.Generator; the work runs on CPU, the
    sizes are a few hundred sampled frames), then at most ``iters`` Lloyd steps; an empty cluster keeps
    its centre. The same generator state gives the same labels. k ≥ N puts each point in its own cluster.
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects x [N, E]; got shape {tuple(x.shape)}")
    if k < 1 or iters < 0:
        raise ValueError(f"kmeans expects k >= 1 and iters >= 0; got k={k}, iters={iters}")
    n = x.shape[0]
    if k >= n:
        return torch.arange(n, device=x.device)
    pts = x.detach().to("cpu", torch.float64)
    centres = _kmeans_pp_init(pts, k, generator)
    labels = _sq_dist(pts, centres).argmin(dim=1)
    for _ in range(iters):
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add(0, labels, pts)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        new_labels = _sq_dist(pts, centres).argmin(dim=1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels.to(x.device)


def sample_parts(length: int, n_parts: int, generator: torch.Generator | None = None) -> Tensor:
    """One random index from each of n_parts equal parts of range(length), ascending, int64 (CPU).

    Part i covers [⌊i·L/n⌋, ⌊(i+1)·L/n⌋). A video shorter than n_parts gives every index once
    (n = length parts of one snippet each), so no part is empty.
    """
    if length < 1 or n_parts < 1:
        raise ValueError(f"sample_parts expects length >= 1 and n_parts >= 1; got length={length}, n_parts={n_parts}")
    n = min(n_parts, length)
    i = torch.arange(n, dtype=torch.int64)
    lo = (i * length) // n
    width = ((i + 1) * length) // n - lo
    offset = (torch.rand(n, generator=generator, dtype=torch.float64) * width).long()
    return lo + torch.minimum(offset, width - 1)


def info_nce(feats: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised InfoNCE (APL Eq. 11): mean over positive pairs (i, j) of
    −log(exp(s_ij) / (exp(s_ij) + Σ_{k: l_k ≠ l_i} exp(s_ik))), s = cosine similarity / temperature.

    feats: [N, E] (L2-normalised here); labels: [N] int. Positives of an anchor are the other rows with
    its label; anchors without positives contribute nothing. An anchor with no negatives gives 0 for its
    pairs. Returns a scalar; 0 (attached to the graph) when there is no positive pair.
    """
    if feats.dim() != 2 or labels.shape != feats.shape[:1]:
        raise ValueError(
            f"info_nce expects feats [N, E] and labels [N]; got {tuple(feats.shape)}, {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"info_nce expects temperature > 0; got {temperature}")
    n = feats.shape[0]
    f = F.normalize(feats, dim=1)
    sim = f @ f.T / temperature
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(n, dtype=torch.bool, device=feats.device)
    if not bool(positive.any()):
        return feats.sum() * 0.0
    # Non-negatives are filled with a huge finite negative (not −inf): exp underflows to 0 and rows with
    # no negative at all keep finite values and gradients.
    fill = torch.finfo(sim.dtype).min / 4
    lse_neg = sim.masked_fill(same, fill).logsumexp(dim=1, keepdim=True)
    pair_loss = torch.logaddexp(sim, lse_neg) - sim
    return pair_loss[positive].mean()


def acp_loss(
    pyramid: list[Tensor],
    mask: Tensor,
    input_feats: Tensor,
    n_parts: int = 32,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_acp = L_conc + L_conf on the detector's feature pyramid.

    pyramid: per level [B, E_l, T_l]; mask: [B, T] bool real snippets; input_feats: [B, D, T].
    Every level is upsampled to T (nearest) and concatenated along channels. Per video, n_parts frames
    are sampled among its real snippets (one per equal part). Coarse: k-means(2) on the INPUT features
    of a video's frames → InfoNCE on their pyramid features, averaged over videos that have a positive
    pair. Fine: all sampled frames of the batch, k-means with B clusters on input features → InfoNCE.
    ``generator`` (CPU) drives both the sampling and k-means, so a seeded generator repeats the loss.
    """
    if not pyramid:
        raise ValueError("acp_loss expects a non-empty list of pyramid levels [B, E, T_l]")
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"acp_loss expects mask [B, T] bool; got shape {tuple(mask.shape)}, dtype {mask.dtype}")
    b, t = mask.shape
    if input_feats.dim() != 3 or input_feats.shape[0] != b or input_feats.shape[2] != t:
        raise ValueError(f"acp_loss expects input_feats [B={b}, D, T={t}]; got {tuple(input_feats.shape)}")
    for level, feat in enumerate(pyramid):
        if feat.dim() != 3 or feat.shape[0] != b:
            raise ValueError(f"acp_loss expects pyramid level {level} as [B={b}, E, T_l]; got {tuple(feat.shape)}")
    rep = torch.cat([F.interpolate(feat, size=t, mode="nearest") for feat in pyramid], dim=1)  # [B, E, T]
    reps, inputs, coarse = [], [], []
    for v in range(b):  # loop over videos: each has its own length and its own 2-cluster problem
        real = mask[v].nonzero().squeeze(1)
        if real.numel() == 0:
            continue
        idx = real[sample_parts(real.numel(), n_parts, generator).to(real.device)]
        r, x = rep[v, :, idx].T, input_feats[v, :, idx].T
        labels = kmeans(x, 2, generator=generator)
        if int(torch.bincount(labels).max()) >= 2:
            coarse.append(info_nce(r, labels, temperature))
        reps.append(r)
        inputs.append(x)
    zero = rep.sum() * 0.0
    if not reps:
        return zero
    l_conc = torch.stack(coarse).mean() if coarse else zero
    all_reps = torch.cat(reps)
    l_conf = info_nce(all_reps, kmeans(torch.cat(inputs), b, generator=generator), temperature)
    return l_conc + l_conf
