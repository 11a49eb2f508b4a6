"""Errors a user can fix, with messages that name the file, the video and the field.

``InputError`` is every failure caused by what the user gave (a config, a dataset, a checkpoint, a
prediction file; ``ConfigError`` lives in raytal/config.py): a job prints its one-line message and exits
with status 2, no traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input of any kind; the message says what was expected and what was found."""


class DataError(InputError):
    """Bad dataset input (annotation JSON, feature file, Parquet shard, dataset.yaml)."""


class CheckpointError(InputError):
    """A checkpoint file that is missing, unreadable with ``weights_only=True``, or not the one expected."""


def where(path: str | Path | None, video_id: str | None = None, field: str | None = None) -> str:
    """``"FILE: video 'V': field 'F'"``, leaving out the parts that are unknown."""
    parts = [str(path) if path is not None else "<memory>"]
    if video_id is not None:
        parts.append(f"video '{video_id}'")
    if field is not None:
        parts.append(f"field '{field}'")
    return ": ".join(parts)


def check_video_id(video_id: object, path: str | Path | None) -> str:
    """A video id is used as a file name (``features/<id>.npy``): refuse anything that is not a plain
    name, so an annotation file can never point the loader outside the feature directory."""
    if not isinstance(video_id, str) or not video_id:
        raise DataError(f"{where(path)}: video id {video_id!r} is not a non-empty string")
    if "/" in video_id or "\\" in video_id or video_id in (".", "..") or "\x00" in video_id:
        raise DataError(f"{where(path, video_id)}: video id must be a plain file name (no path separators)")
    return video_id
