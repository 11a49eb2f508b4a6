"""One job at a time in a run directory: ``<run>/run.lock``, naming its holder (pid, host, start time).

A second job on a busy directory is refused with ``RunStateError`` naming the holder; a lock whose holder
is gone is taken over (with a warning naming it). Two ways to hold it, by what the directory is on:

- **Local** (any POSIX file system with ``flock``, NFS included): the holder keeps an exclusive ``flock``
  on the file for its life and writes its identity into it. The kernel drops the lock the moment the
  process dies, however it dies, so a lock is stale exactly when its holder is gone: no timeout, no
  heartbeat, no pid guessing. The file is removed on release; an identity left in a file that can be
  locked names a holder that died (it is reported as taken over). A child the holder *forks* (not one it
  starts with exec: the descriptor is close-on-exec) keeps the lock as long as it lives.
- **Object storage** (``s3://``, ``gs://``; also a local file system without ``flock``): an owner object
  with a heartbeat. The holder writes its identity, waits ``SETTLE_S`` and reads it back (two jobs that
  start within that window: the later write wins and the other refuses), then rewrites it every
  ``HEARTBEAT_S`` from a thread. A lock is stale when its holder ran on this machine and its process is
  gone (pid and process start time), or, from another machine, when its heartbeat is older than
  ``STALE_AFTER_S``. Limits: object stores offer no compare-and-swap that pyarrow exposes, so two
  starts closer together than one request round-trip across the settle window can still both win, and a
  holder paused longer than ``STALE_AFTER_S`` (a suspended VM) can lose its lock to a newcomer; the
  heartbeat notices that (the object no longer names it) and the run stops before it records its next
  stage (``check``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from raytal.core import storage
from raytal.core.errors import RunStateError
from raytal.core.outputs import read_manifest

log = logging.getLogger("raytal.selftrain")

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats
SETTLE_S = 1.0


def _machine() -> str:
    """This machine's identity for "is its process alive": host names repeat across containers, so the
    boot id (Linux) or the boot time joins it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = str(psutil.boot_time())
    return f"{socket.gethostname()}/{boot}"


@dataclass
class Holder:
    owner: str  # a fresh id per acquisition
    pid: int
    host: str
    machine: str
    started: float  # when it took the lock (time.time())
    process_start: float  # psutil create_time of ``pid``: a reused pid has another
    heartbeat: float

    @staticmethod
    def me() -> "Holder":
        now = time.time()
        return Holder(uuid.uuid4().hex, os.getpid(), socket.gethostname(), _machine(), now,
                      psutil.Process().create_time(), now)

    def describe(self) -> str:
        when = datetime.datetime.fromtimestamp(self.started).isoformat(sep=" ", timespec="seconds")
        return f"pid {self.pid} on host {self.host}, started {when}"

    def alive_here(self) -> bool | None:
        """Whether its process still runs, when it ran on this machine; None when it did not."""
        if self.machine != _machine():
            return None
        try:
            return abs(psutil.Process(self.pid).create_time() - self.process_start) < 1.0
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:  # someone else's process with that pid: it exists
            return True

    def to_text(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def parse(text: str) -> "Holder | None":
        """The holder a lock names; None for an empty or unreadable lock (written by hand, or cut short)."""
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            return None


class RunLock:
    """``with RunLock(run_dir):`` (or ``acquire`` / ``release``) holds the run directory (module docstring)."""

    def __init__(self, run_dir: str):
        self.run_dir = storage.resolve(run_dir)
        self.path = storage.join(self.run_dir, LOCK_NAME)
        self.holder = Holder.me()
        self._fd: int | None = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self._lost: Holder | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _busy(self, holder: Holder | None, how: str = "") -> RunStateError:
        who = holder.describe() if holder is not None else "another job (it has not named itself yet)"
        return RunStateError(f"{self.run_dir}: run directory in use by {who}{how} (lock {self.path}); wait "
                             "for that job to finish, stop it, or give this one another run.dir")

    def acquire(self) -> None:
        if storage.is_uri(self.path) or not self._acquire_flock():
            self._acquire_object()

    # ------------------------------------------------------------------- local: flock

    def _open_lock_file(self) -> int:
        """The lock file, created if missing, never through a link (a ``run.lock`` planted as a link to
        another file would have that file truncated and rewritten) and only if it is a regular file."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunStateError(f"{self.path}: the run's lock file is a symbolic link: refused (raytal never "
                                    "follows a link it did not make); remove it") from None
            raise RunStateError(f"{self.path}: cannot create the run's lock file: {e.strerror or e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunStateError(f"{self.path}: the run's lock file is not a regular file; remove it")
        return fd

    def _acquire_flock(self) -> bool:
        """True when held; False when this file system has no ``flock`` (the object protocol is used)."""
        while True:
            fd = self._open_lock_file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Holder.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise self._busy(holder) from None
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    log.warning("%s: no flock on this file system (%s); locking with an owner file", self.path, e)
                    return False
                raise
            # The previous holder removes the file on release: a lock on a file no longer at the path
            # excludes nobody, so start again on the path's current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = Holder.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if stale is not None:
            log.warning("%s: taking over the lock of %s (that process is gone)", self.run_dir, stale.describe())
        data = self.holder.to_text().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        return True

    # ------------------------------------------------------------------- object storage: owner + heartbeat

    def _read(self) -> Holder | None:
        try:
            return Holder.parse(storage.read_text(self.path))
        except FileNotFoundError:
            return None

    def _stale(self, holder: Holder | None) -> bool:
        if holder is None:  # unreadable: no process can be asked about it
            return True
        alive = holder.alive_here()
        if alive is not None:
            return not alive
        return time.time() - holder.heartbeat > STALE_AFTER_S

    def _acquire_object(self) -> None:
        if storage.exists(self.path):
            current = self._read()
            if not self._stale(current):
                age = time.time() - current.heartbeat if current is not None else 0.0
                raise self._busy(current, f", last heartbeat {age:.0f} s ago")
            log.warning("%s: taking over the lock of %s (%s)", self.run_dir,
                        current.describe() if current else "an unreadable lock file",
                        "its process is gone" if current and current.alive_here() is False
                        else f"no heartbeat for over {STALE_AFTER_S:.0f} s")
        storage.write_text(self.path, self.holder.to_text())
        time.sleep(SETTLE_S)
        after = self._read()
        if after is None or after.owner != self.holder.owner:
            raise self._busy(after, ", which claimed it at the same time")
        self._beat = threading.Thread(target=self._heartbeat, name="raytal-run-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = self._read()
                if current is None or current.owner != self.holder.owner:
                    self._lost = current or self.holder
                    log.error("%s: this job lost its lock to %s", self.run_dir,
                              current.describe() if current else "a job that removed it")
                    return
                self.holder.heartbeat = time.time()
                storage.write_text(self.path, self.holder.to_text())
            except OSError as e:  # a storage hiccup: the next beat tries again, well before STALE_AFTER_S
                log.warning("%s: lock heartbeat failed: %s", self.run_dir, e)

    def check(self) -> None:
        """Raise ``RunStateError`` when another job has taken the lock over (object storage): the caller must
        not record anything more in the directory."""
        if self._lost is not None:
            raise RunStateError(f"{self.run_dir}: this job lost the run directory's lock to another job "
                                f"({self._lost.describe()}): stopped before recording the next stage")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                    os.unlink(self.path)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        elif self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
            if self._lost is None and (current := self._read()) is not None and current.owner == self.holder.owner:
                storage.delete_file(self.path, missing_ok=True)


RUN_KIND = "run"  # the kind of a run directory's output manifest (raytal.core.outputs)
RUN_RECORDS = ("run.json", "stages.json")  # a run directory made before manifests has one of these


def is_run_dir(path: str) -> bool:
    """Whether ``path`` is a run directory: it has a run's record, or raytal's manifest of a run."""
    if not storage.is_dir(path):
        return False
    if any(storage.exists(storage.join(path, name)) for name in RUN_RECORDS):
        return True
    manifest = read_manifest(path)
    return manifest is not None and manifest.kind == RUN_KIND


def enclosing_run(path: str) -> str | None:
    """The run directory that holds ``path`` (or is ``path``), if any."""
    current = storage.resolve(path)
    while True:
        if is_run_dir(current):
            return current
        up = storage.parent(current)
        if up == current:
            return None
        current = up


def lock_enclosing_run(path: str) -> contextlib.AbstractContextManager:
    """The lock of the run directory a job's output ``path`` lies in (``RunLock``), or nothing to hold when it
    lies in none: a job writing into a run directory (``pseudolabel.py --out <run>/round_1/pseudo``) waits
    for no one and is refused while another job works there, as the run's own jobs are."""
    run = enclosing_run(path)
    return RunLock(run) if run is not None else contextlib.nullcontext()
