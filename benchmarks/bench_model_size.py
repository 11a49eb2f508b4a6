"""Model size of the THUMOS14 I3D preset next to ActionFormer's, and one full-size CPU training step.

    .venv/bin/python benchmarks/bench_model_size.py [--config configs/thumos14_i3d_supervised.yaml] [--steps 3]

1. Parameters of the preset's detector (built by raytal) next to ActionFormer's model for its
   configs/thumos_i3d.yaml. No published parameter count of that model was found (the ActionFormer paper
   and README give none), so ActionFormer's is counted here from its config and code
   (happyharrycn/actionformer_release: libs/core/config.py defaults, libs/modeling/{backbones, blocks,
   necks, meta_archs}.py), part by part, in ``actionformer_params``.
2. One training step at full size on CPU: forward + backward of the detection loss (focal + DIoU,
   ``raytal.model.criterion.detection_loss``) plus the AdamW update, on a batch of ``train.batch_size``
   random videos of T = data.max_seq_len = 2304 snippets x D = 2048 with 10 actions each. Per step: process
   CPU time (``time.process_time``, all torch threads together: what the step costs, whatever else shares
   the cores) and wall time (what it takes on this machine, printed with the load average); the first
   step is reported apart (allocator warm-up). Peak memory as ``ru_maxrss`` (peak resident set size of
   this process, from ``resource.getrusage``; it also counts the Python/torch baseline, printed before
   the model is built, and the model, printed after).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from raytal.config import Config, load_config
from raytal.core.video import Video
from raytal.model.batch import collate
from raytal.model.criterion import detection_loss
from raytal.model.detector import Detector

REPO = Path(__file__).resolve().parents[1]
THUMOS_CLASSES = 20


def actionformer_params(D: int, E: int, H: int, C: int, stem: int = 2, branch: int = 5, levels: int = 6,
                        embed_layers: int = 2, kernel: int = 3, head_layers: int = 3) -> dict[str, int]:
    """ActionFormer's parameter count for input width D, embedding E (= fpn_dim), head width H, C classes,
    by part (convTransformer backbone, identity FPN, PtTransformer heads), with its defaults:
    LayerNorms with affine weight and bias (2E), train_cfg.droppath > 0 so every block has two
    AffineDropPath scales (E each), local attention without rel_pe, MLP ratio 4."""
    ln = 2 * E
    # embedding: MaskedConv1D(k, bias=False since embd_with_ln) + LayerNorm per layer
    embed = D * E * kernel + ln + (embed_layers - 1) * (E * E * kernel + ln)
    # LocalMaskedMHCA: depthwise q/k/v convs (kernel 3 for stride 1 and for stride 2: kernel = stride + 1),
    # no bias, each followed by a LayerNorm; 1x1 q/k/v and output projections with bias
    attn = 3 * (E * 3 + ln) + 4 * (E * E + E)
    mlp = (E * 4 * E + 4 * E) + (4 * E * E + E)  # 1x1 convs E -> 4E -> E, with bias
    block = 2 * ln + attn + mlp + 2 * E  # ln1, ln2, attention, MLP, two AffineDropPath scales
    neck = levels * ln  # FPNIdentity: one LayerNorm per level
    tower = E * H * kernel + ln + (head_layers - 2) * (H * H * kernel + ln)  # convs without bias + LayerNorm
    cls = tower + H * C * kernel + C
    reg = tower + H * 2 * kernel + 2 + levels  # offset conv and one Scale per level
    return {"embedding": embed, "transformer blocks": (stem + branch) * block, "neck": neck, "heads": cls + reg}


def raytal_params(model: Detector) -> dict[str, int]:
    parts = {"embedding": ("backbone.embed",), "transformer blocks": ("backbone.stem", "backbone.branch"),
             "neck": ("backbone.neck",), "heads": ("heads",)}
    out = dict.fromkeys(parts, 0)
    for name, p in model.named_parameters():
        part = next(k for k, prefixes in parts.items() if name.startswith(prefixes))
        out[part] += p.numel()
    return out


def fake_videos(cfg: Config, dim: int, count: int, seed: int = 0) -> list[Video]:
    """``count`` videos of exactly max_seq_len snippets, 10 actions of 10-200 snippets each (30 fps grid)."""
    rng = np.random.default_rng(seed)
    T, stride, frames, fps = cfg.data.max_seq_len, 4, 16, 30.0
    duration = ((T - 1) * stride + frames) / fps
    out = []
    for i in range(count):
        starts = np.sort(rng.uniform(0, duration - 30, 10))
        segs = np.stack([starts, starts + rng.uniform(10, 200, 10) * stride / fps], 1)
        out.append(Video(f"v{i}", "train", duration, fps, stride, frames,
                         features=rng.standard_normal((T, dim)).astype(np.float32),
                         segments=np.minimum(segs, duration), labels=rng.integers(0, THUMOS_CLASSES, 10)))
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs" / "thumos14_i3d_supervised.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="training steps (the first is reported apart)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    m, t = cfg.model, cfg.train
    print(f"peak RSS before building the model: {peak_mib():.0f} MiB (Python, torch, raytal)")
    torch.manual_seed(0)
    model = Detector(m, THUMOS_CLASSES, m.input_dim)
    ours = raytal_params(model)
    theirs = actionformer_params(m.input_dim, m.embed_dim, m.head_dim, THUMOS_CLASSES, stem=m.stem_blocks,
                                 branch=m.fpn_levels - 1, levels=m.fpn_levels, embed_layers=m.embed_layers,
                                 kernel=m.embed_kernel, head_layers=m.head_layers)
    print(f"\n{Path(args.config).name}: D = {m.input_dim}, E = {m.embed_dim}, {THUMOS_CLASSES} classes")
    print("| part | raytal | ActionFormer thumos_i3d (counted) |")
    print("|---|---|---|")
    for part in ours:
        print(f"| {part} | {ours[part]:,} | {theirs[part]:,} |")
    total_ours, total_theirs = sum(ours.values()), sum(theirs.values())
    print(f"| **total** | **{total_ours:,}** ({total_ours / 1e6:.2f} M) | **{total_theirs:,}** "
          f"({total_theirs / 1e6:.2f} M) |")
    print(f"ratio raytal / ActionFormer: {total_ours / total_theirs:.4f}")
    print(f"peak RSS with the model built: {peak_mib():.0f} MiB")

    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    batch = collate(fake_videos(cfg, m.input_dim, t.batch_size), pad_multiple=model.pad_multiple)
    print(f"\ntraining step: batch {tuple(batch.feats.shape)} (B, D, T), {torch.get_num_threads()} torch threads")
    model.train()
    cpu, wall = [], []
    for _ in range(args.steps):
        c0, t0 = time.process_time(), time.perf_counter()
        out = model(batch.feats, batch.mask)
        losses = detection_loss(out, batch, focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma,
                                reg_weight=t.reg_weight, center_sample_radius=m.center_sample_radius)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    for name, xs in (("CPU", cpu), ("wall", wall)):
        later = xs[1:] or xs
        print(f"step {name} time: first {xs[0]:.1f} s, then {', '.join(f'{x:.1f}' for x in later)} s "
              f"(median {np.median(later):.1f} s)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"loss {float(losses['loss'].detach()):.3f}, {int(losses['num_pos'])} positive points")
    print(f"peak RSS after {args.steps} steps (ru_maxrss): {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
