"""What a job may write, replace and remove: its output, checked before the work starts, and the manifest
that proves which files it wrote.

A job that writes a folder (a dataset, pseudo labels, predictions, a run directory, a sweep) holds it with
``OutputDir``; one that writes a single file (a results JSON, a plot) checks it with ``check_output_file``.
Both run before the expensive work, so a bad ``--out`` costs nothing.

``OutputDir.claim()`` refuses, with one line naming the flag and the path (``OutputError``):

- a location that is not one (a mangled URI, a regular file, a path below a regular file);
- an output that overlaps one of the job's inputs: the same path, a folder holding an input, or a folder
  inside an input folder (local paths compared with their symbolic links resolved);
- a folder that holds files raytal did not write. A folder is the job's when it is new or empty, or holds
  raytal's manifest (``MANIFEST``), or one of the ``legacy`` files raytal wrote before manifests existed
  (a run's ``run.json``). With ``overwrite`` (``--overwrite``) the job writes *beside* such files: it
  still never deletes or replaces one of them, so it refuses when one lies where it writes (the ``owns``
  patterns, e.g. a ``.parquet`` among the pseudo labels, which readers would take for part of the output);
- a symbolic link inside the folder where the job writes (``owns``), which raytal never follows.

It then writes the manifest (creating the folder): an unreachable store or a read-only disk fails there,
not after the work. The job holds the folder with ``storage.guard`` (no write below it follows a link).

A job that replaces its earlier output writes into ``staged()``: a fresh folder inside the output
(``.raytal-staging-<token>``, recorded in the manifest before it is made, so a killed job's leftover is
provably the job's; removed on every exit, error and Ctrl+C included), then ``commit``: the staged files
move into place, the files of the previous output that were not written again are removed — only files
the manifest lists — and the manifest then lists exactly the new files (size, and a sha256 when the writer
computed one while writing, e.g. a dataset's shards: ``raytal.selftrain.run_record`` checks them on
resume). A job killed during a commit leaves files the manifest lists as its own, so the next run removes
or replaces them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from raytal.core import storage
from raytal.core.errors import InputError, clip
from raytal.core.jsonfile import read_json

MANIFEST = storage.RESERVED_PREFIX + "output.json"
STAGING_PREFIX = storage.RESERVED_PREFIX + "staging-"
MAX_MANIFEST_BYTES = 256 << 20  # ~100 bytes per file listed
_SHOWN = 3  # foreign files named in a message


class OutputError(InputError):
    """An output location a job refuses to write (see the module docstring)."""


def _real(path: str) -> str:
    """A local path with its symbolic links resolved (as far as it exists); a URI as it is."""
    return path if storage.is_uri(path) else os.path.realpath(path)


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def overlap(out: str, inputs: Iterable[tuple[str, str]]) -> tuple[str, str, str] | None:
    """The first (flag, input, how) of ``inputs`` ((flag, path) pairs) that ``out`` overlaps, or None."""
    o = _real(storage.resolve(out))
    for flag, path in inputs:
        if not path:
            continue
        i = _real(storage.resolve(path))
        if i == o:
            return flag, path, "is"
        if _inside(i, o):
            return flag, path, "contains"
        if _inside(o, i):
            return flag, path, "is inside"
    return None


def _below_a_file(path: str) -> str | None:
    """The regular file on the way to a local ``path``, if any (a folder cannot be made below it)."""
    if storage.is_uri(path):
        return None
    current = os.path.dirname(path)
    while current and current != os.path.dirname(current):
        if os.path.lexists(current):
            return current if not os.path.isdir(current) else None
        current = os.path.dirname(current)
    return None


def named(flag: str, path: str) -> str:
    """How a message names an option and its value: ``--out X`` for a flag, ``run.dir=X`` for a config key."""
    return f"{flag} {path}" if flag.startswith("-") else f"{flag}={path}"


def _check_location(path: str, flag: str, inputs: Iterable[tuple[str, str]], what: str) -> str:
    """``path`` resolved; ``OutputError`` for a mangled URI, a path below a regular file or one that
    overlaps an input."""
    try:
        resolved = storage.resolve(path)
    except InputError as e:
        raise OutputError(f"{flag}: {e}") from None
    blocker = _below_a_file(resolved)
    if blocker is not None:
        raise OutputError(f"{named(flag, resolved)}: cannot create the {what}: {blocker} is a regular file; "
                          f"choose another {flag}")
    hit = overlap(resolved, inputs)
    if hit is not None:
        in_flag, in_path, how = hit
        raise OutputError(f"{named(flag, resolved)} {how} the input {named(in_flag, storage.resolve(in_path))}: a "
                          f"job's output must not overlap what it reads (it could replace or remove it); choose "
                          f"another {flag}")
    return resolved


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    """``rel`` (a '/'-separated path in the output) matches one of the glob ``patterns``; ``*`` spans
    folders, so ``shards/*`` is everything below ``shards``."""
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _local_links(root: str) -> list[str]:
    """Symbolic links under a local folder (not followed), relative to it."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found.append(os.path.relpath(path, root))
    return sorted(found)


@dataclass
class Manifest:
    """What a job wrote into its output folder (``MANIFEST``)."""

    kind: str  # what the folder holds: "dataset", "pseudo-labels", "predictions", "run", "sweep"
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> {"bytes": n, "sha256": hex | None}
    staging: list[str] = field(default_factory=list)  # staging folders made (removed when done)

    def to_json(self) -> dict:
        return {"raytal_output": 1, "kind": self.kind, "files": self.files, "staging": self.staging}


def read_manifest(folder: str) -> Manifest | None:
    """The manifest of ``folder``; None when it has none. A damaged one is an ``OutputError``: raytal can no
    longer tell which files it wrote there."""
    path = storage.join(folder, MANIFEST)
    if not storage.exists(path):
        return None

    def error(message: str) -> OutputError:
        return OutputError(f"{message}: the manifest of the files raytal wrote in {folder} is damaged, so it cannot "
                           "tell them from yours; move the files you want to keep elsewhere and choose a new folder")

    data = read_json(path, error, max_bytes=MAX_MANIFEST_BYTES)
    files = data.get("files") if isinstance(data, dict) else None
    staging = data.get("staging", []) if isinstance(data, dict) else None
    if (not isinstance(files, dict) or not isinstance(staging, list) or not isinstance(data.get("kind"), str)
            or not all(isinstance(v, dict) for v in files.values()) or not all(isinstance(s, str) for s in staging)
            or any(rel.startswith("/") or ".." in rel.split("/") for rel in [*files, *staging])):
        raise error(f"{path}: not a raytal output manifest")
    return Manifest(data["kind"], files, staging)


def _write_manifest(folder: str, manifest: Manifest) -> None:
    storage.write_text(storage.join(folder, MANIFEST), json.dumps(manifest.to_json(), indent=0))


class OutputDir:
    """A job's output folder (module docstring). ``with OutputDir(...) as out:`` claims and guards it."""

    def __init__(self, path: str, *, kind: str, flag: str = "--out", inputs: Iterable[tuple[str, str]] = (),
                 overwrite: bool = False, owns: Iterable[str] = ("*",), legacy: Iterable[str] = (),
                 lists_files: bool = True, what: str = "output folder"):
        """``kind``: what the folder holds (a folder raytal made for another kind is refused, so no job removes
        another's files); ``owns``: glob patterns of where the job writes (relative to the folder); ``legacy``:
        top-level files that mark a folder raytal made before manifests; ``lists_files=False`` for a folder whose
        manifest only marks it as raytal's (a run directory: its files are never removed, so they are not
        listed); ``what`` names the folder in messages."""
        self.flag, self.kind, self.overwrite, self.lists_files = flag, kind, overwrite, lists_files
        self.inputs = [(f, p) for f, p in inputs if p]
        self.owns, self.legacy = tuple(owns), tuple(legacy)
        self.what = what
        self.path = _check_location(path, flag, self.inputs, what)
        self.shown = named(flag, self.path)
        self.manifest: Manifest | None = None
        self._guard: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> "OutputDir":
        self.claim()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None

    # ------------------------------------------------------------------------------------ claim

    def _rel(self, path: str) -> str:
        return path[len(self.path.rstrip("/")) + 1:]

    def claim(self) -> "OutputDir":
        """Check the folder and take it (module docstring); idempotent."""
        if self.manifest is not None:
            return self
        if storage.is_file(self.path):
            article = "an" if self.what[0] in "aeiou" else "a"
            raise OutputError(f"{self.shown}: is a regular file, expected {article} {self.what} (or a path to create one)")
        local = not storage.is_uri(self.path)
        if local and os.path.islink(self.path) and not os.path.isdir(self.path):
            raise OutputError(f"{self.shown}: is a broken symbolic link; choose another {self.flag}")
        exists = storage.is_dir(self.path)
        manifest = read_manifest(self.path) if exists else None
        if manifest is None:
            top = storage.list_names(self.path) if exists else []
            if top and not any(name in top for name in self.legacy):
                if not self.overwrite:
                    shown = ", ".join(clip(n, 60) for n in top[:_SHOWN]) + (", ..." if len(top) > _SHOWN else "")
                    raise OutputError(
                        f"{self.shown}: holds files raytal did not write ({shown}); choose a new or empty "
                        f"{self.flag}, or pass --overwrite to write beside them (raytal never deletes or replaces a "
                        "file it did not write)")
                present = (self._rel(p) for p in storage.list_files(self.path))
                in_the_way = [f for f in present if _matches(f, self.owns)]
                if in_the_way:
                    raise OutputError(
                        f"{self.shown}: {len(in_the_way)} file(s) raytal did not write lie where this "
                        f"job writes (e.g. {', '.join(clip(f, 60) for f in in_the_way[:_SHOWN])}); --overwrite keeps "
                        "your files, so move them elsewhere or choose another folder")
            manifest = Manifest(self.kind)
        elif manifest.kind != self.kind:
            raise OutputError(f"{self.shown}: holds raytal's {manifest.kind}, not {self.kind}; choose another "
                              f"{self.flag}")
        elif self.lists_files:
            strangers = [f for f in (self._rel(p) for p in storage.list_files(self.path))
                         if f not in manifest.files and _matches(f, self.owns)]
            if strangers:
                raise OutputError(
                    f"{self.shown}: {len(strangers)} file(s) there were not written by raytal (not in its "
                    f"manifest {MANIFEST}) but lie where this job writes (e.g. "
                    f"{', '.join(clip(f, 60) for f in strangers[:_SHOWN])}); move them elsewhere")
        if local and os.path.isdir(self.path):
            # a link where the job writes, or a linked folder it would write into (``shards`` for ``shards/*``)
            links = [f for f in _local_links(self.path)
                     if _matches(f, self.owns) or _matches(f + "/", self.owns) or f in self.legacy]
            if links:
                raise OutputError(f"{self.shown}: {os.path.join(self.path, links[0])} is a symbolic link "
                                  "where this job writes: refused (raytal never follows a link it did not make); "
                                  "remove it")
        self._guard = storage.guard(self.path)
        self._guard.__enter__()
        try:
            if not exists or manifest.staging or not storage.exists(storage.join(self.path, MANIFEST)):
                # A new folder (or a killed job's staging to drop): written now, so a store it cannot write
                # fails here, before the work. An unchanged manifest is left as it is.
                self._drop_stale_staging(manifest)
                _write_manifest(self.path, manifest)
        except BaseException:
            self.release()
            raise
        self.manifest = manifest
        return self

    def _drop_stale_staging(self, manifest: Manifest) -> None:
        """Staging folders of a killed run of the job: recorded in the manifest before they were made."""
        for name in manifest.staging:
            storage.delete_dir(storage.join(self.path, name), missing_ok=True)
        manifest.staging = []

    # ------------------------------------------------------------------------------- replace

    @contextlib.contextmanager
    def staged(self) -> Iterator[str]:
        """A fresh, empty folder inside the output for the job's new files; removed on every exit."""
        manifest = self.claim().manifest
        assert manifest is not None
        name = STAGING_PREFIX + uuid.uuid4().hex
        manifest.staging.append(name)
        _write_manifest(self.path, manifest)
        path = storage.join(self.path, name)
        storage.makedirs(path)
        try:
            yield path
        finally:
            storage.delete_dir(path, missing_ok=True)
            manifest.staging.remove(name)
            with contextlib.suppress(OSError, InputError):  # the folder is gone already: nothing to record
                _write_manifest(self.path, manifest)

    def commit(self, staged: str, hashes: dict[str, str] | None = None) -> list[str]:
        """Move the files of ``staged`` into place and remove the previous output's other files (only those the
        manifest lists); ``hashes`` maps a staged path to the sha256 its writer computed. Returns the paths."""
        manifest = self.manifest
        assert manifest is not None, "commit() needs claim()"
        hashes = hashes or {}
        new = {f[len(staged.rstrip("/")) + 1:]: size for f, size in storage.list_file_sizes(staged).items()}
        entries = {rel: {"bytes": size, "sha256": hashes.get(storage.join(staged, rel))} for rel, size in new.items()}
        old = manifest.files
        # First claim every name this commit may leave behind, so a kill in the middle leaves only files the
        # manifest lists.
        manifest.files = {**old, **entries}
        _write_manifest(self.path, manifest)
        for rel in sorted(new):
            storage.move_file(storage.join(staged, rel), storage.join(self.path, rel))
        for rel in sorted(set(old) - set(new)):
            storage.delete_file(storage.join(self.path, rel), missing_ok=True)
            _remove_empty_parents(self.path, rel)
        manifest.files = entries
        _write_manifest(self.path, manifest)
        return [storage.join(self.path, rel) for rel in sorted(new)]


def _remove_empty_parents(root: str, rel: str) -> None:
    """Local folders left empty by removing ``rel`` (an empty folder holds nothing of anyone's)."""
    if storage.is_uri(root):
        return
    parts = rel.split("/")[:-1]
    while parts:
        with contextlib.suppress(OSError):  # not empty, or gone: leave it
            os.rmdir(os.path.join(root, *parts))
        parts.pop()


def check_output_file(path: str, *, flag: str, signature: bytes, inputs: Iterable[tuple[str, str]] = ()) -> str:
    """A single-file output (``--out results.json``), before the work: resolved, not a folder, not a link, not
    below a regular file, not one of the inputs, and — when a file is there — one raytal wrote (its first
    bytes hold ``signature``), since replacing it would delete it. Returns the resolved path."""
    resolved = _check_location(path, flag, [(f, p) for f, p in inputs if p], "file")
    if storage.is_uri(resolved):
        bucket = "/".join(resolved.split("/")[:3])
        if not storage.is_dir(bucket):  # the upload comes after the work: its bucket is checked now
            raise OutputError(f"{named(flag, resolved)}: the bucket {bucket} does not exist (buckets are not created "
                              "by raytal)")
        if storage.is_dir(resolved):
            raise OutputError(f"{named(flag, resolved)}: is a folder, expected a file name")
        if not storage.is_file(resolved):
            return resolved
    elif not os.path.lexists(resolved):
        parent = os.path.dirname(resolved)
        if os.path.isdir(parent) and not os.access(parent, os.W_OK):
            raise OutputError(f"{named(flag, resolved)}: the folder {parent} is not writable")
        return resolved
    elif os.path.islink(resolved):
        raise OutputError(f"{named(flag, resolved)}: is a symbolic link: refused (raytal never writes through a link "
                          "it did not make); choose another file name")
    elif os.path.isdir(resolved):
        raise OutputError(f"{named(flag, resolved)}: is a folder, expected a file name")
    with storage.open_input_file(resolved) as f:
        head = f.read(4096)
    if signature not in head:
        raise OutputError(f"{named(flag, resolved)}: exists and was not written by raytal; replacing it would delete "
                          f"it: move it away or choose another {flag}")
    return resolved
