"""A tiny detector overfits 4 hand-made videos to mAP > 0.9 with the real inference and evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from raytal.config import load_config
from raytal.core.video import Video
from raytal.eval.detection import evaluate_detection
from raytal.core.segments import SegmentTable
from raytal.model.detector import Detector
from raytal.model.inference import predict_videos
from raytal.engine.batches import rank_batches
from raytal.engine.trainer import Trainer, fit
from raytal.recipes.objective import make_objective

D, C = 8, 2


def _video(i: int) -> Video:
    """32 snippets of 1 s (fps 16, stride 16, clip 16: snippet j is centred at j + 0.5 s); two actions
    with class-specific features, at different places and lengths in each video."""
    rng = np.random.default_rng(100 + i)
    feats = rng.normal(0.0, 0.05, (32, D)).astype(np.float32)
    a0, a1 = 3 + 2 * i, 18 + i  # start snippets
    l0, l1 = 4 + i, 6 - i  # lengths (snippets)
    feats[a0 : a0 + l0, 0] += 1.0
    feats[a1 : a1 + l1, 1] += 1.0
    segs = np.array([[a0, a0 + l0], [a1, a1 + l1]], dtype=np.float64)  # seconds: snippet j spans [j, j+1)
    return Video(video_id=f"o{i}", subset="train", duration=32.0, fps=16.0, feat_stride=16, num_frames=16,
                 features=feats, segments=segs, labels=np.array([0, 1]))


def test_tiny_model_overfits_four_videos():
    torch.set_num_threads(1)
    cfg = load_config(None, [
        "model.embed_dim=32", "model.head_dim=32", "model.num_heads=2", "model.stem_blocks=1",
        "model.embed_layers=1", "model.head_layers=2", "model.fpn_levels=3",
        "model.regression_ranges=[[0, 4], [4, 8], [8, 10000]]",
        "train.batch_size=4", "train.epochs=60", "train.warmup_epochs=5", "train.lr=0.005",
        "train.weight_decay=0.0", "data.max_seq_len=32",
    ])
    videos = [_video(i) for i in range(4)]
    torch.manual_seed(0)
    model = Detector(cfg.model, C, D, max_seq_len=cfg.data.max_seq_len)
    trainer = Trainer(cfg.train, model, make_objective(cfg), steps_per_epoch=1, ema_momentum=cfg.train.ema_momentum)
    # every step is the same 4 videos (whole: 32 snippets = max_seq_len, so no crop)
    batches = rank_batches(itertools.cycle(videos), iter(()), n_l=4, n_u=0, rank=0, world=1, seed=0, start_epoch=0,
                           steps_per_epoch=1, pad_multiple=model.pad_multiple, max_seq_len=32, trunc_thresh=0.5)
    fit(trainer, (b for _, _, b in batches), cfg.train.epochs, progress=False)
    preds = predict_videos(trainer.ema.module, videos, cfg.infer)
    result = evaluate_detection(SegmentTable.from_videos(videos),
                                SegmentTable.from_predictions([v.video_id for v in videos], preds))
    assert result.average_mAP > 0.9, result.to_json()
