"""The training engine: batch plans and crops, the generic loop, checkpoints and exact resume."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from raytal.config import load_config
from raytal.core.video import Video
from raytal.data.stream import endless_passes, shuffled
from raytal.engine.batches import rank_batches, rank_share, split_batch, steps_per_epoch
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.engine.trainer import Trainer, fit
from raytal.model.batch import collate, concat_batches
from raytal.model.detector import Detector
from raytal.recipes.objective import make_objective
from raytal.selftrain.spec import TrainSpec
from raytal.selftrain.train_stage import run_training

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
        "train.batch_size=4", "train.epochs=4", "train.warmup_epochs=1", "data.max_seq_len=16", "model.window=5",
        "train.torch_threads=1", "train.shuffle_buffer=4",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, sets)


def _model(cfg) -> Detector:
    torch.manual_seed(0)
    return Detector(cfg.model, C, D, max_seq_len=cfg.data.max_seq_len)


def _stream(videos: list[Video], seed: int = 0):
    """An endless shuffled stream over an in-memory list (each video one unit)."""
    return shuffled(endless_passes(videos, [seed]), 4, [seed, 1])


def _batches(cfg, model, labeled, pseudo=(), *, rank=0, world=1, start_epoch=0, steps=None, seed=0):
    n_l, n_u = split_batch(cfg.train.batch_size, cfg.train.unlabeled_per_batch, len(labeled), len(pseudo))
    steps = steps or steps_per_epoch(len(labeled), len(pseudo), n_l, n_u)
    batches = rank_batches(_stream(list(labeled), seed), _stream(list(pseudo), seed + 1) if pseudo else iter(()),
                           n_l=n_l, n_u=n_u, rank=rank, world=world, seed=cfg.train.seed, start_epoch=start_epoch,
                           steps_per_epoch=steps, pad_multiple=model.pad_multiple,
                           max_seq_len=cfg.data.max_seq_len, trunc_thresh=cfg.data.trunc_thresh)
    return (b for _, _, b in batches), steps


def _trainer(cfg, model, steps) -> Trainer:
    return Trainer(cfg.train, model, make_objective(cfg), steps_per_epoch=steps, ema_momentum=cfg.train.ema_momentum)


# ------------------------------------------------------------------------------------- batching plan


def test_split_batch():
    # B = 4, 0.5 pseudo -> 2 + 2; 0.3 -> round(1.2) = 1 pseudo; only one set present -> all from it
    assert split_batch(4, 0.5, 10, 10) == (2, 2)
    assert split_batch(4, 0.3, 10, 10) == (3, 1)
    assert split_batch(4, 0.5, 10, 0) == (4, 0)
    assert split_batch(4, 0.5, 0, 7) == (0, 4)
    with pytest.raises(ValueError, match="both the labeled and the pseudo-labeled sets are empty"):
        split_batch(4, 0.5, 0, 0)


def test_steps_per_epoch():
    # one pass over the larger set: max(ceil(3/2), ceil(8/2)) = 4; a floor of 5 lengthens it; fixed wins
    assert steps_per_epoch(3, 8, 2, 2) == 4
    assert steps_per_epoch(3, 8, 2, 2, min_batches=5) == 5
    assert steps_per_epoch(3, 8000, 2, 2, fixed=7) == 7
    assert steps_per_epoch(10, 0, 4, 0) == 3  # ceil(10 / 4)


def test_rank_share_positions():
    # 1 labeled + 3 pseudo over 2 ranks: rank 0 holds positions 0, 2 (labeled, pseudo), rank 1 holds 1, 3
    assert rank_share(1, 3, 0, 2) == (1, 1, [0, 2])
    assert rank_share(1, 3, 1, 2) == (0, 2, [1, 3])
    assert rank_share(2, 2, 0, 1) == (2, 2, [0, 1, 2, 3])
    with pytest.raises(ValueError):
        rank_share(2, 2, 2, 2)


def test_batches_are_deterministic_and_mix_labeled_first():
    cfg = _cfg()
    model = _model(cfg)
    labeled = [_video(i, 24 + 4 * i) for i in range(3)]  # longer than max_seq_len 16 -> cropped
    pseudo = [_video(10 + i, 20, labeled=False) for i in range(8)]
    a, steps = _batches(cfg, model, labeled, pseudo)
    b, _ = _batches(cfg, model, labeled, pseudo)
    assert steps == 4  # 2 labeled + 2 pseudo per batch, one pass over the 8 pseudo videos
    first = [next(a) for _ in range(2 * steps)]
    again = [next(b) for _ in range(2 * steps)]
    for x, y in zip(first, again):
        assert [m["video_id"] for m in x.meta] == [m["video_id"] for m in y.meta]
        assert [m["offset"] for m in x.meta] == [m["offset"] for m in y.meta]
        torch.testing.assert_close(x.feats, y.feats)
    assert all(x.labeled.tolist() == [True, True, False, False] for x in first)
    # An epoch is one pass over the pseudo set: 2 epochs draw 2 passes through a shuffle buffer of 4, which
    # may carry a video across a pass boundary, so each video appears 1 to 3 times in the 16 slots.
    seen = [m["video_id"] for x in first for m in x.meta[2:]]
    counts = {v.video_id: seen.count(v.video_id) for v in pseudo}
    assert len(seen) == 16 and min(counts.values()) >= 1 and max(counts.values()) <= 3


def test_a_crop_depends_on_its_position_not_on_the_rank():
    """Rank r's batch holds positions r, r+W: each crop is seeded by its global position, so the same video
    at the same position is cropped the same whichever rank holds it."""
    cfg = _cfg()
    model = _model(cfg)
    videos = [_video(i, 40) for i in range(4)]
    one, _ = _batches(cfg, model, videos, steps=1)
    whole = next(one)
    # rank 1 of 2 reads its own stream; give it the videos at positions 1 and 3 of the one-rank batch
    ids = [m["video_id"] for m in whole.meta]
    share = [next(v for v in videos if v.video_id == ids[p]) for p in (1, 3)]
    r1 = rank_batches(iter(share), iter(()), n_l=4, n_u=0, rank=1, world=2, seed=cfg.train.seed, start_epoch=0,
                      steps_per_epoch=1, pad_multiple=model.pad_multiple, max_seq_len=16, trunc_thresh=0.5)
    _, _, part = next(r1)
    assert [m["offset"] for m in part.meta] == [whole.meta[1]["offset"], whole.meta[3]["offset"]]
    torch.testing.assert_close(part.feats, whole.feats[[1, 3]])


def test_concat_batches_pads_and_fills_missing_targets():
    short, long = _video(0, 8), _video(1, 16)
    long.targets = np.ones((16, C), dtype=np.float32)
    merged = concat_batches([collate([short], pad_multiple=8), collate([long], pad_multiple=8)])
    assert merged.feats.shape == (2, D, 16)
    assert merged.mask.sum(1).tolist() == [8, 16]
    assert torch.isnan(merged.targets[0]).all() and (merged.targets[1] == 1).all()
    assert merged.teacher_scores is None


# -------------------------------------------------------------------------------------------- training


def _predict(model: torch.nn.Module, videos: list[Video]) -> torch.Tensor:
    batch = collate(videos, pad_multiple=model.pad_multiple)
    with torch.no_grad():
        model.eval()
        return model(batch.feats, batch.mask).cls_logits


def test_training_reduces_loss_and_mixes_pseudo():
    # Momentum 0: each step's loss divided by its own positives, so epochs' losses compare.
    cfg = _cfg(**{"train.epochs": 6, "train.lr": 0.005, "train.loss_norm_momentum": 0.0})
    model = _model(cfg)
    labeled = [_video(i, 20) for i in range(4)]
    pseudo = [_video(10 + i, 20, labeled=False) for i in range(4)]
    batches, steps = _batches(cfg, model, labeled, pseudo)
    trainer = _trainer(cfg, model, steps)
    hist = fit(trainer, batches, cfg.train.epochs, progress=False)
    assert [h["epoch"] for h in hist] == list(range(6))
    # supervised (s) and pseudo-labeled (u) detection terms of raytal.recipes.objective
    assert {"loss", "cls_s", "reg_s", "cls_u", "reg_u", "lr"} <= set(hist[0])
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert trainer.epoch == 6 and trainer.ema.updates == 6 * trainer.steps_per_epoch
    assert hist[-1]["lr"] == pytest.approx(1e-8)  # cosine ends at ActionFormer's 1e-8 after the last step


def test_epoch_stats_time_the_steps_and_the_wait_for_batches():
    cfg = _cfg()
    model = _model(cfg)
    trainer = _trainer(cfg, model, steps=2)
    batch = collate([_video(0, 16)], pad_multiple=model.pad_multiple)

    def slow():  # every batch takes 50 ms to arrive
        while True:
            time.sleep(0.05)
            yield batch

    stats = trainer.train_epoch(0, slow())
    # Lower bounds from the sleeps only: what the steps themselves take depends on the machine.
    assert stats["data_wait_s"] >= 0.05
    assert stats["step_s"] > stats["data_wait_s"]


def test_a_stream_that_runs_dry_is_an_error():
    cfg = _cfg()
    model = _model(cfg)
    trainer = _trainer(cfg, model, steps=3)
    one = iter([collate([_video(0, 16)], pad_multiple=model.pad_multiple)])
    with pytest.raises(RuntimeError, match="ended after 1 of 3 steps"):
        fit(trainer, one, 1, progress=False)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    cfg = _cfg(**{"train.epochs": 2})
    videos = [_video(i, 20) for i in range(4)]
    model = _model(cfg)
    batches, steps = _batches(cfg, model, videos)
    trainer = _trainer(cfg, model, steps)
    fit(trainer, batches, 2, progress=False)
    save_checkpoint(tmp_path / "last.pt", trainer.state_dict())
    fresh = _trainer(cfg, Detector(cfg.model, C, D, max_seq_len=cfg.data.max_seq_len), steps)
    fresh.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    assert fresh.epoch == 2
    assert torch.equal(_predict(trainer.model, videos), _predict(fresh.model, videos))
    assert torch.equal(_predict(trainer.ema.module, videos), _predict(fresh.ema.module, videos))


def _spec(n_labeled: int) -> TrainSpec:
    return TrainSpec(name="t", stage_dir="unused", num_classes=C, input_dim=D, setting="semi", num_labeled=n_labeled)


def test_resumed_stage_equals_an_uninterrupted_one():
    """run_training replays the stage's stream up to the checkpoint, so a stage killed after epoch 2 and
    resumed from its checkpoint ends with the weights of an uninterrupted stage."""
    cfg = _cfg()
    videos = [_video(i, 24 + 3 * i) for i in range(5)]
    spec = _spec(len(videos))
    straight = run_training(cfg, spec, {"labeled": _stream(videos)})

    saved = {}

    class Killed(Exception):
        pass

    def kill_after_two(epoch, metrics, trainer):
        if epoch == 1:
            saved["state"] = trainer.state_dict()
            raise Killed

    with pytest.raises(Killed):
        run_training(cfg, spec, {"labeled": _stream(videos)}, on_epoch=kill_after_two)
    resumed = run_training(cfg, spec, {"labeled": _stream(videos)}, restore=saved["state"])
    assert resumed.epoch == straight.epoch == 4
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(_predict(straight.ema.module, videos), _predict(resumed.ema.module, videos))


def test_extended_run_follows_the_longer_schedule():
    """A run finished at 2 epochs, resumed with train.epochs = 4, continues on the 4-epoch cosine."""
    short = _cfg(**{"train.epochs": 2})
    videos = [_video(i, 20) for i in range(4)]  # 1 batch per epoch
    model = _model(short)
    batches, steps = _batches(short, model, videos)
    first = _trainer(short, model, steps)
    fit(first, batches, 2, progress=False)
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(1e-8)
    long = _cfg(**{"train.epochs": 4})
    second = _trainer(long, Detector(long.model, C, D, max_seq_len=long.data.max_seq_len), steps)
    second.load_state_dict(first.state_dict())
    # 4 steps, warm-up 1: after 2 steps lr = 1e-8 + (1e-3 - 1e-8) × 0.5(1 + cos(pi × 1/3)), the cosine at 0.75
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(1e-8 + (1e-3 - 1e-8) * 0.75)
    hist = fit(second, batches, 4, start_epoch=second.epoch, progress=False)
    assert [h["epoch"] for h in hist] == [2, 3]


def test_stream_skip_is_what_a_resume_replays():
    s = _stream([_video(i, 16) for i in range(5)])
    t = _stream([_video(i, 16) for i in range(5)])
    for _ in itertools.islice(t, 7):
        pass
    assert [v.video_id for v in itertools.islice(s, 12)][7:] == [v.video_id for v in itertools.islice(t, 5)]
