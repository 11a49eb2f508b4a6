"""The weakly-supervised round 0 (SPEC §4): the MIL base model as the first teacher.

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
from raytal.data.index import RunIndex
from raytal.data.stream import flat_map, shuffled, unit_passes
from raytal.engine.checkpoint import save_checkpoint
from raytal.engine.mil import train_weak
from raytal.selftrain.models import weak_base_state
from raytal.selftrain.training_data import BUFFER_STREAM, read_unit

_WEAK_STREAM = 16


def train_weak_stage(cfg: Config, index: RunIndex, stage_dir: str) -> str:
    """MIL training on the index's unlabeled part (the weak setting's training videos) -> ``stage_dir/final.pt``."""
    if cfg.data.setting != "weak":
        raise ValueError(f"the weak round 0 needs data.setting='weak', got {cfg.data.setting!r}")
    units = [("unlabeled", s) for s in index.parts.get("unlabeled", [])]
    if not units:
        raise DataError(f"{index.root}: no training videos for the weak base model")
    set_torch_threads(cfg.train.torch_threads)

    def epoch_videos(epoch: int):
        seed = [cfg.train.seed, _WEAK_STREAM, epoch]
        videos = flat_map(unit_passes(units, seed, 1), lambda u: read_unit(u, index.setting))
        return shuffled(videos, cfg.train.shuffle_buffer, [*seed, BUFFER_STREAM])

    model = train_weak(epoch_videos, index.num_classes, index.feature_dim, cfg.weak, cfg.train.seed, progress=False)
    state = weak_base_state(model, index.num_classes, index.feature_dim, cfg.weak.hidden, cfg.weak.dropout)
    return save_checkpoint(storage.join(stage_dir, "final.pt"), state)
