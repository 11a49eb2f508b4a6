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


class RunStateError(InputError):
    """A run directory that cannot be resumed as asked: made with another config or from changed data,
    a state file (config.yaml, run.json, stages.json) that is corrupt, or another job working in it."""


# Ids and field names are quoted in messages as the user gave them, up to this many characters: a hostile
# file's megabyte-long id must not become a megabyte-long error line.
SHOWN_CHARS = 120
# A video id names a feature file (``<id>.npy``); file systems allow 255 bytes per name.
MAX_VIDEO_ID_BYTES = 250


def clip(text: object, limit: int = SHOWN_CHARS) -> str:
    """``str(text)``, cut to ``limit`` characters with the length said when it is longer."""
    s = str(text)
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s)} characters)"


def where(path: str | Path | None, video_id: str | None = None, field: str | None = None) -> str:
    """``"FILE: video 'V': field 'F'"``, leaving out the parts that are unknown."""
    parts = [str(path) if path is not None else "<memory>"]
    if video_id is not None:
        parts.append(f"video '{clip(video_id)}'")
    if field is not None:
        parts.append(f"field '{clip(field)}'")
    return ": ".join(parts)


def check_video_id(video_id: object, path: str | Path | None) -> str:
    """A video id is used as a file name (``features/<id>.npy``): refuse anything that is not a plain
    name, so an annotation file can never point the loader outside the feature directory."""
    if not isinstance(video_id, str) or not video_id:
        raise DataError(f"{where(path)}: video id {clip(repr(video_id))} is not a non-empty string")
    if "/" in video_id or "\\" in video_id or video_id in (".", "..") or "\x00" in video_id:
        raise DataError(f"{where(path, video_id)}: video id must be a plain file name (no path separators)")
    if len(video_id.encode("utf-8")) > MAX_VIDEO_ID_BYTES:
        raise DataError(f"{where(path, video_id)}: video id of {len(video_id.encode('utf-8'))} bytes: expected at "
                        f"most {MAX_VIDEO_ID_BYTES} (it names a feature file)")
    return video_id
