"""A tiny detector trained on 3 synthetic videos must find their actions (end-to-end sanity)."""

import numpy as np
import torch

from raytal.config import InferConfig, ModelConfig
from raytal.core.video import Video
from raytal.model.batch import collate
from raytal.model.criterion import detection_loss
from raytal.model.detector import Detector
from raytal.model.inference import predict_videos
from raytal.core.iou import pairwise_iou

C, D = 3, 8


def make_video(vid: str, t: int, segs: list[tuple[int, int]], labels: list[int], seed: int) -> Video:
    """Snippet i spans seconds [i, i+1) (fps 10, stride 10, 10 frames). Background snippets carry
    dim C, action snippets the class dim; dims C+1 / C+2 flag the first / last snippet of an action."""
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0, 0.1, (t, D)).astype(np.float32)
    f[:, C] += 1.0
    for (s, e), c in zip(segs, labels):
        f[s:e, c] += 2.0
        f[s:e, C] -= 1.0
        f[s, C + 1] += 1.5
        f[e - 1, C + 2] += 1.5
    return Video(vid, "train", float(t), 10.0, 10, 10, features=f, segments=np.array(segs, float),
                 labels=np.array(labels, np.int64))


def test_tiny_model_overfits_and_recovers_segments():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    videos = [
        make_video("a", 64, [(5, 15), (30, 50)], [0, 1], seed=0),
        make_video("b", 80, [(10, 14), (40, 70)], [2, 0], seed=1),
        make_video("c", 48, [(20, 40)], [1], seed=2),
    ]
    cfg = ModelConfig(embed_dim=32, head_dim=32, num_heads=4, stem_blocks=1, fpn_levels=4,
                      regression_ranges=[[0, 4], [4, 8], [8, 16], [16, 10000]])
    model = Detector(cfg, C, D, max_seq_len=128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    batch = collate(videos, pad_multiple=model.pad_multiple)
    losses = []
    for _ in range(120):
        res = detection_loss(model(batch.feats, batch.mask), batch)
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
        losses.append(res["loss"].item())
    assert np.mean(losses[-10:]) < 0.1 * losses[0]

    preds = predict_videos(model, videos, InferConfig(), batch_size=2)
    for v, p in zip(videos, preds):
        for seg, lab in zip(v.segments, v.labels):
            same = p["labels"] == lab
            best = np.argmax(np.where(same, p["scores"], -1))  # top prediction of the class
            assert same.any() and pairwise_iou(seg[None], p["segments"][best][None])[0, 0] > 0.5

    # state_dict round trip: a fresh model with the loaded weights predicts the same
    clone = Detector(cfg, C, D, max_seq_len=128)
    clone.load_state_dict(model.state_dict())
    again = predict_videos(clone, videos, InferConfig(), batch_size=3, dense=True)
    # dense view of video a (T = 64, 4 levels): 64 + 32 + 16 + 8 real points, C class scores each
    assert again[0]["dense"]["scores"].shape == (64 + 32 + 16 + 8, C)
    for p, q in zip(preds, again):
        np.testing.assert_allclose(p["segments"], q["segments"], atol=1e-5)
        np.testing.assert_allclose(p["scores"], q["scores"], atol=1e-6)
