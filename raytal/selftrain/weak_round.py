"""The weakly-supervised round 0 (docs/design.md §4 "Weak base model"): the MIL base model as the first teacher.

In the weak setting (``data.setting: weak``) every training video carries only its video-level labels
(the index puts them all in the ``unlabeled`` part), so round 0 cannot train a detector. It trains the
MIL snippet classifier (``raytal.engine.mil.train_weak``) on a stream of those videos instead and saves it
as a ``weak_base`` checkpoint. Round 1 labels the training videos with it through the same pseudo-label
stage as a detector teacher (``raytal.selftrain.teacher``); later rounds use the detector students.
"""

from __future__ import annotations

from raytal.config import Config
from raytal.core import storage
from raytal.core.errors import DataError
from raytal.core.threads import set_torch_threads
from raytal.core.seeds import SeedStream
from raytal.data.index import RunIndex, source_videos
from raytal.data.stream import passes, shuffled
from raytal.engine.checkpoint import save_checkpoint
from raytal.engine.mil import train_weak
from raytal.selftrain.models import weak_base_state


def train_weak_stage(cfg: Config, index: RunIndex, stage_dir: str) -> str:
    """MIL training on the index's unlabeled part (the weak setting's training videos) -> ``stage_dir/final.pt``."""
    if cfg.data.setting != "weak":
        raise ValueError(f"the weak round 0 needs data.setting='weak', got {cfg.data.setting!r}")
    sources = index.parts.get("unlabeled", [])
    if not sources:
        raise DataError(f"{index.root}: no training videos for the weak base model")
    set_torch_threads(cfg.train.torch_threads)

    def epoch_videos(epoch: int):
        seed = [cfg.train.seed, SeedStream.WEAK_VIDEOS, epoch]
        videos = (v for src in passes(sources, seed, 1)
                  for v in source_videos(src, "unlabeled", index.setting, check_finite=True))
        return shuffled(videos, cfg.train.shuffle_buffer, [*seed, SeedStream.SHUFFLE])

    model = train_weak(epoch_videos, index.num_classes, index.feature_dim, cfg.weak, cfg.train.seed, progress=False)
    state = weak_base_state(model, index.num_classes, index.feature_dim, cfg.weak.hidden, cfg.weak.dropout)
    return save_checkpoint(storage.join(stage_dir, "final.pt"), state)
