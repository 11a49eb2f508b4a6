"""The training loop: deterministic global batches, mixing, checkpoint round-trip and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytal.config import load_config
from raytal.core.video import Video
from raytal.model.batch import collate
from raytal.model.detector import Detector
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.train.trainer import Trainer, concat_batches, fit, global_batches, split_batch

FPS, STRIDE, FRAMES, D, C = 16.0, 16, 16, 8, 3  # 1 snippet = 1 s; grid i = t - 0.5


def _video(i: int, t: int, labeled: bool = True) -> Video:
    rng = np.random.default_rng(i)
    feats = rng.normal(0, 0.1, (t, D)).astype(np.float32)
    label = i % C
    feats[4:10, label] += 1.0  # an action of class `label` on snippets 4..9
    return Video(
        video_id=f"v{i}", subset="train", duration=float(t), fps=FPS, feat_stride=STRIDE, num_frames=FRAMES,
        features=feats, segments=np.array([[4.5, 10.5]]), labels=np.array([label]), labeled=labeled,
    )


def _cfg(**extra: object):
    sets = [
        "model.embed_dim=16", "model.head_dim=16", "model.num_heads=2", "model.stem_blocks=1",
        "model.embed_layers=1", "model.head_layers=1", "model.fpn_levels=3",
        "model.regression_ranges=[[0, 4], [4, 8], [8, 10000]]",
        "train.batch_size=4", "train.epochs=4", "train.warmup_epochs=1", "data.max_seq_len=16",
        "train.torch_threads=1",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, sets)


def _model(cfg) -> Detector:
    torch.manual_seed(0)
    return Detector(cfg.model, C, D)


# ------------------------------------------------------------------------------------- batching plan


def test_split_batch():
    # B = 4, 0.5 pseudo -> 2 + 2; 0.3 -> round(1.2) = 1 pseudo; only one set present -> all from it
    assert split_batch(4, 0.5, 10, 10) == (2, 2)
    assert split_batch(4, 0.3, 10, 10) == (3, 1)
    assert split_batch(4, 0.5, 10, 0) == (4, 0)
    assert split_batch(4, 0.5, 0, 7) == (0, 4)
    with pytest.raises(ValueError, match="both the labeled and the pseudo-labeled sets are empty"):
        split_batch(4, 0.5, 0, 0)


def test_global_batches_cover_every_video_and_are_deterministic():
    plan = global_batches(10, 0, batch_size=4, unlabeled_per_batch=0.5, seed=3, epoch=1)
    # ceil(10 / 4) = 3 full batches; the last wraps into a second permutation
    assert plan.shape == (3, 4, 2)
    assert set(plan[:, :, 1].ravel()[:10].tolist()) == set(range(10))
    assert (plan[:, :, 0] == 0).all()
    np.testing.assert_array_equal(plan, global_batches(10, 0, 4, 0.5, 3, 1))
    assert not np.array_equal(plan, global_batches(10, 0, 4, 0.5, 3, 2))


def test_global_batches_mix_pseudo():
    plan = global_batches(3, 8, batch_size=4, unlabeled_per_batch=0.5, seed=0, epoch=0)
    # 2 labeled + 2 pseudo per batch; max(ceil(3/2), ceil(8/2)) = 4 batches
    assert plan.shape == (4, 4, 2)
    assert (plan[:, :2, 0] == 0).all() and (plan[:, 2:, 0] == 1).all()
    assert sorted(plan[:, 2:, 1].ravel().tolist()) == list(range(8))  # each pseudo video once
    assert set(plan[:, :2, 1].ravel().tolist()) == {0, 1, 2}


def test_rank_slices_reassemble_the_global_batch():
    """Two ranks' batches, concatenated in position order, equal the one-rank batch (crops included)."""
    cfg = _cfg()
    videos = [_video(i, 24 + 4 * i) for i in range(6)]  # lengths 24..44 > max_seq_len 16 -> cropped
    one = Trainer(cfg, _model(cfg), videos)
    r0 = Trainer(cfg, _model(cfg), videos, rank=0, world_size=2)
    r1 = Trainer(cfg, _model(cfg), videos, rank=1, world_size=2)
    plan = one.epoch_plan(0)
    whole = one.make_batch(0, 1, plan[1])
    a, b = r0.make_batch(0, 1, plan[1]), r1.make_batch(0, 1, plan[1])
    order = [0, 2, 1, 3]  # rank 0 holds positions 0, 2; rank 1 holds 1, 3
    assert [whole.meta[i]["video_id"] for i in order] == [m["video_id"] for m in a.meta + b.meta]
    assert [whole.meta[i]["offset"] for i in order] == [m["offset"] for m in a.meta + b.meta]
    torch.testing.assert_close(whole.feats[order], torch.cat([a.feats, b.feats]))


def test_min_batches_per_epoch_lengthens_short_epochs():
    # 3 labeled videos, batch 2: ceil(3/2) = 2 batches; min_batches 5 -> 5 batches, each video seen
    # ceil(5*2/3) = 4 times at most (back-to-back permutations).
    plan = global_batches(3, 0, 2, 0.5, seed=0, epoch=0, min_batches=5)
    assert plan.shape == (5, 2, 2)
    counts = np.bincount(plan[:, :, 1].ravel(), minlength=3)
    assert counts.sum() == 10 and counts.min() >= 3 and counts.max() <= 4
    assert global_batches(3, 0, 2, 0.5, seed=0, epoch=0, min_batches=1).shape[0] == 2


def test_concat_batches_pads_and_fills_missing_targets():
    short, long = _video(0, 8), _video(1, 16)
    long.targets = np.ones((16, C), dtype=np.float32)
    merged = concat_batches([collate([short], pad_multiple=8), collate([long], pad_multiple=8)])
    assert merged.feats.shape == (2, D, 16)
    assert merged.mask.sum(1).tolist() == [8, 16]
    assert torch.isnan(merged.targets[0]).all() and (merged.targets[1] == 1).all()
    assert merged.teacher_scores is None


def test_trainer_rejects_bad_world_size():
    cfg = _cfg()
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        Trainer(cfg, _model(cfg), [_video(0, 16)], world_size=3)
    with pytest.raises(ValueError, match="labeled=False"):
        Trainer(cfg, _model(cfg), [_video(0, 16)], pseudo=[_video(1, 16)])


# -------------------------------------------------------------------------------------------- training


def _predict(model: torch.nn.Module, videos: list[Video]) -> torch.Tensor:
    batch = collate(videos, pad_multiple=model.pad_multiple)
    with torch.no_grad():
        model.eval()
        return model(batch.feats, batch.mask).cls_logits


def test_training_reduces_loss_and_mixes_pseudo():
    cfg = _cfg(**{"train.epochs": 6, "train.lr": 0.005})
    labeled = [_video(i, 20) for i in range(4)]
    pseudo = [_video(10 + i, 20, labeled=False) for i in range(4)]
    trainer = Trainer(cfg, _model(cfg), labeled, pseudo)
    hist = fit(trainer, cfg.train.epochs, progress=False)
    assert [h["epoch"] for h in hist] == list(range(6))
    # supervised (s) and pseudo-labeled (u) detection terms of raytal.train.objective
    assert {"loss", "cls_s", "reg_s", "cls_u", "reg_u", "lr"} <= set(hist[0])
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert trainer.epoch == 6 and trainer.ema.updates == 6 * trainer.steps_per_epoch
    assert hist[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0 after the last step


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    cfg = _cfg(**{"train.epochs": 2})
    videos = [_video(i, 20) for i in range(4)]
    trainer = Trainer(cfg, _model(cfg), videos)
    fit(trainer, 2, progress=False)
    save_checkpoint(tmp_path / "last.pt", trainer.state_dict())
    fresh = Trainer(cfg, Detector(cfg.model, C, D), videos)
    fresh.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    assert fresh.epoch == 2
    assert torch.equal(_predict(trainer.model, videos), _predict(fresh.model, videos))
    assert torch.equal(_predict(trainer.ema.module, videos), _predict(fresh.ema.module, videos))


def test_resume_equals_straight_run(tmp_path):
    cfg = _cfg()
    videos = [_video(i, 24 + 3 * i) for i in range(5)]
    straight = Trainer(cfg, _model(cfg), videos)
    hist_straight = fit(straight, 4, progress=False)

    first = Trainer(cfg, _model(cfg), videos)
    fit(first, 2, progress=False)
    save_checkpoint(tmp_path / "last.pt", first.state_dict())
    second = Trainer(cfg, Detector(cfg.model, C, D), videos)
    second.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    hist_resumed = fit(second, 4, start_epoch=second.epoch, progress=False)

    assert [h["epoch"] for h in hist_resumed] == [2, 3]
    assert [h["loss"] for h in hist_resumed] == [h["loss"] for h in hist_straight[2:]]
    for (name, p), q in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(_predict(straight.ema.module, videos), _predict(second.ema.module, videos))


def test_extended_run_follows_the_longer_schedule(tmp_path):
    """A run finished at 2 epochs, resumed with train.epochs = 4, continues on the 4-epoch cosine."""
    short = _cfg(**{"train.epochs": 2})
    videos = [_video(i, 20) for i in range(4)]  # 1 batch per epoch
    first = Trainer(short, _model(short), videos)
    fit(first, 2, progress=False)
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    long = _cfg(**{"train.epochs": 4})
    second = Trainer(long, Detector(long.model, C, D), videos)
    second.load_state_dict(first.state_dict())
    # 4 steps, warm-up 1: after 2 steps lr = 1e-3 × 0.5(1 + cos(pi × 1/3)) = 1e-3 × 0.75
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(7.5e-4)
    hist = fit(second, 4, start_epoch=second.epoch, progress=False)
    assert [h["epoch"] for h in hist] == [2, 3]
