"""Which video files an extraction reads: directories or object-store prefixes (searched recursively),
single files, and list files, each file with its size and modification time (what resuming compares).

A video's id is its file name without the extension (``clips/v_abc.mp4`` -> ``v_abc``): the id its
features are written under. Two inputs with the same id are refused before any work, naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs

from raytal.core import storage
from raytal.core.errors import InputError, check_video_id

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm")
MAX_LIST_BYTES = 256 << 20  # a list file of a million URIs is ~100 MB


@dataclass(frozen=True)
class VideoFile:
    """One input video: where it is, its size in bytes and modification time (ns; 0 when the store has none)."""

    path: str
    size: int
    mtime_ns: int
    video_id: str


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_SUFFIXES)


def video_id(path: str) -> str:
    base = storage.name(path)
    return check_video_id(base[: base.rfind(".")] if "." in base else base, path)


def _file(info: pafs.FileInfo, path: str) -> VideoFile:
    return VideoFile(path, int(info.size or 0), int(info.mtime_ns or 0), video_id(path))


def _stat(path: str, shown: str) -> VideoFile:
    fs, inner = storage.filesystem(path)
    info = fs.get_file_info(inner)
    if info.type != pafs.FileType.File:
        raise InputError(f"{shown}: video file not found")
    return _file(info, path)


def _scan(directory: str) -> list[VideoFile]:
    """The video files under a directory or prefix, at any depth (hidden names and partial writes skipped)."""
    fs, inner = storage.filesystem(directory)
    prefix = directory.partition("://")[0] + "://" if storage.is_uri(directory) else ""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=True)):
        if info.type == pafs.FileType.File and is_video(info.path) and not info.base_name.startswith("."):
            found.append(_file(info, prefix + info.path))
    return found


def _listed(list_file: str) -> list[str]:
    """The paths a list file names, one per line ('#' starts a comment); relative ones are relative to the file."""
    raw = storage.read_at_most(list_file, MAX_LIST_BYTES, InputError, list_file, f"{MAX_LIST_BYTES >> 20} MB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{list_file}: not a UTF-8 text file of paths ({e})") from None
    base = storage.parent(list_file)
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry if storage.is_uri(entry) or os.path.isabs(entry) else storage.join(base, entry))
    return out


def list_videos(inputs: list[str], list_files: list[str] = ()) -> list[VideoFile]:
    """Every video of ``inputs`` (directories, prefixes or video files) and of ``list_files`` (files naming
    one video per line), sorted by path; ``InputError`` for a missing input, an empty result or an id twice."""
    videos: dict[str, VideoFile] = {}
    for given in inputs:
        path = storage.resolve(given)
        if storage.is_dir(path):
            scanned = _scan(path)
            if not scanned:
                raise InputError(f"{given}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this directory")
        elif not is_video(path):
            raise InputError(f"{given}: expected a directory, a prefix or a video file ({', '.join(VIDEO_SUFFIXES)}); "
                             "a list of paths goes with --list")
        else:
            scanned = [_stat(path, given)]
        videos.update((v.path, v) for v in scanned)
    for list_file in list_files:
        for entry in _listed(storage.resolve(list_file)):
            path = storage.resolve(entry)
            if not is_video(path):
                raise InputError(f"{list_file}: {entry}: expected a video file ({', '.join(VIDEO_SUFFIXES)})")
            videos[path] = _stat(path, f"{list_file}: {entry}")
    if not videos:
        raise InputError("no input videos")
    out = sorted(videos.values(), key=lambda v: v.path)
    owner: dict[str, str] = {}
    for v in out:
        if v.video_id in owner:
            raise InputError(f"{v.path}: video id '{v.video_id}' is also the id of {owner[v.video_id]}; ids are file "
                             "names without extension and name the feature files: rename one")
        owner[v.video_id] = v.path
    return out
