"""train.precision: the forward pass under torch.autocast (bf16, fp16 with a GradScaler), weights, losses and
optimizer state in fp32, inference in the same precision. Tiny shapes: this CPU has no native bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytal.config import load_config
from raytal.core.precision import autocast, grad_scaler
from raytal.core.video import Video
from raytal.engine.trainer import Trainer
from raytal.model.batch import collate
from raytal.model.detector import Detector
from raytal.model.inference import predict_videos
from raytal.recipes.objective import make_objective

C, D = 2, 6
SETS = ["model.embed_dim=16", "model.head_dim=16", "model.num_heads=2", "model.stem_blocks=1", "model.embed_layers=1",
        "model.head_layers=2", "model.fpn_levels=3", "model.window=5", "model.regression_ranges=[[0, 4], [4, 8], [8, 10000]]",
        "data.max_seq_len=16", "train.epochs=1", "train.warmup_epochs=0", "train.torch_threads=1"]


def _video(i: int, t: int = 16) -> Video:
    rng = np.random.default_rng(i)
    feats = rng.normal(0.0, 0.1, (t, D)).astype(np.float32)
    feats[4:10, i % C] += 1.0
    return Video(f"v{i}", "train", float(t), 1.0, 1, 1, features=feats, segments=np.array([[4.5, 10.5]]),
                 labels=np.array([i % C]))


def test_autocast_and_scaler_follow_the_precision():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast("cpu", precision):
            assert lin(x).dtype == dtype
        assert grad_scaler("cpu", precision).is_enabled() == (precision == "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("cpu", "fp64")


@pytest.mark.parametrize("precision, half", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_training_runs_the_forward_in_half_precision_and_keeps_fp32_state(precision, half):
    cfg = load_config(None, SETS + [f"train.precision={precision}"])
    torch.manual_seed(0)
    model = Detector(cfg.model, C, D, max_seq_len=16)
    objective = make_objective(cfg)
    seen = {}

    def recording(net, batch, out, ctx):
        seen["logits"] = out.cls_logits.dtype
        losses = objective(net, batch, out, ctx)
        seen["loss"] = losses["loss"].dtype
        return losses

    trainer = Trainer(cfg.train, model, recording, steps_per_epoch=2, ema_momentum=0.9)
    batch = collate([_video(0), _video(1)], pad_multiple=model.pad_multiple)
    stats = trainer.train_epoch(0, iter([batch, batch]))
    assert seen == {"logits": half, "loss": torch.float32}  # outputs in half precision, losses in fp32
    assert np.isfinite(stats["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in trainer.optimizer.state.values())
    state = trainer.state_dict()
    if precision == "fp16":  # the loss scale is training state: a resumed run continues with it
        assert trainer.scaler.is_enabled() and state["scaler"]["scale"] > 0
        fresh = Trainer(cfg.train, Detector(cfg.model, C, D, max_seq_len=16), recording, steps_per_epoch=2,
                        ema_momentum=0.9)
        fresh.load_state_dict(state)
        assert fresh.scaler.get_scale() == trainer.scaler.get_scale()
    else:
        assert state["scaler"] == {}


def test_inference_in_half_precision_is_close_to_fp32():
    cfg = load_config(None, SETS)
    torch.manual_seed(0)
    model = Detector(cfg.model, C, D, max_seq_len=16)
    videos = [_video(0), _video(1, 13)]
    full = predict_videos(model, videos, cfg.infer, dense=True)
    for precision in ("bf16", "fp16"):
        half = predict_videos(model, videos, cfg.infer, dense=True, precision=precision)
        for a, b in zip(full, half):
            # bf16 keeps 8 bits of mantissa: scores near the 0.01 prior agree to a few 1e-3
            np.testing.assert_allclose(a["dense"]["scores"], b["dense"]["scores"], atol=5e-3)
