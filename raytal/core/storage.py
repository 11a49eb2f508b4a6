"""Paths that may be local or object-storage URIs (s3://, gs://), through pyarrow.fs. (interim: replaced by the storage branch)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from raytal.core.errors import InputError


def is_uri(p: str | Path) -> bool:
    return "://" in str(p)


def resolve(p: str | Path) -> str:
    return str(p) if is_uri(p) else str(Path(p).resolve())


def join(base: str | Path, *parts: str) -> str:
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *[s.strip("/") for s in parts]])
    return str(Path(base).joinpath(*parts))


def parent(p: str | Path) -> str:
    return str(p).rstrip("/").rsplit("/", 1)[0] if is_uri(p) else str(Path(p).parent)


def name(p: str | Path) -> str:
    return str(p).rstrip("/").rsplit("/", 1)[-1]


def filesystem(p: str | Path) -> tuple[pafs.FileSystem, str]:
    if is_uri(p):
        try:
            return pafs.FileSystem.from_uri(str(p))
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{p}: not a storage URI raytal can open ({e})") from e
    return pafs.LocalFileSystem(), str(Path(p).resolve())


def _info(p: str | Path) -> pafs.FileInfo:
    fs, inner = filesystem(p)
    return fs.get_file_info(inner)


def exists(p: str | Path) -> bool:
    return _info(p).type != pafs.FileType.NotFound


def is_file(p: str | Path) -> bool:
    return _info(p).type == pafs.FileType.File


def is_dir(p: str | Path) -> bool:
    return _info(p).type == pafs.FileType.Directory


def makedirs(p: str | Path) -> None:
    fs, inner = filesystem(p)
    fs.create_dir(inner, recursive=True)


def list_files(d: str | Path, suffix: str | None = None, recursive: bool = True) -> list[str]:
    fs, inner = filesystem(d)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and (suffix is None or i.path.endswith(suffix)))
    if is_uri(d):
        scheme = str(d).split("://", 1)[0]
        return [f"{scheme}://{f}" for f in files]
    return files


def read_bytes(p: str | Path) -> bytes:
    fs, inner = filesystem(p)
    try:
        with fs.open_input_stream(inner) as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{p}: not found") from e


def read_text(p: str | Path) -> str:
    return read_bytes(p).decode("utf-8")


def write_bytes(p: str | Path, data: bytes) -> None:
    if not is_uri(p):
        path = Path(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, inner = filesystem(p)
    with fs.open_output_stream(inner) as f:
        f.write(data)


def write_text(p: str | Path, text: str) -> None:
    write_bytes(p, text.encode("utf-8"))


def delete_file(p: str | Path) -> None:
    fs, inner = filesystem(p)
    fs.delete_file(inner)


def delete_dir(p: str | Path) -> None:
    fs, inner = filesystem(p)
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        fs.delete_dir(inner)


def open_input_file(p: str | Path):
    fs, inner = filesystem(p)
    return fs.open_input_file(inner)


def open_output_stream(p: str | Path):
    fs, inner = filesystem(p)
    return fs.open_output_stream(inner)
