"""A run's ledger of completed stages, so a killed job resumes where it stopped.

Every stage of a self-training run (``round_0/train``, ``round_1/pseudo``, …) records its result here
once it has fully finished; a re-run skips recorded stages and reuses their results. The file is
rewritten atomically (``raytal.core.storage.write_text``: temp file + rename, or one object PUT), so a
kill never leaves it half-written; it lives wherever the run does (a local path or a storage URI). A
ledger that is nevertheless unreadable (damaged, edited, cut short by a copy) is a ``RunStateError`` naming
the file and what to do, never a crash.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raytal.core import storage
from raytal.core.errors import RunStateError, clip
from raytal.core.jsonfile import read_json

MAX_LEDGER_BYTES = 256 << 20  # results are summaries and metrics: a few KB per stage


class StageLog:
    """The ledger at ``path``. ``guard()``, when given, is called before every write and raises to stop a
    job that must not record anything more (one that lost the run directory's lock)."""

    def __init__(self, path: str | Path, guard: Callable[[], None] | None = None):
        self.path = str(path)
        self.guard = guard
        self.stages: dict[str, Any] = {}
        if storage.exists(self.path):
            self.stages = _read_ledger(self.path)

    def done(self, name: str) -> bool:
        return name in self.stages

    def result(self, name: str) -> Any:
        return self.stages[name]["result"]

    def seconds(self, name: str) -> float:
        return float(self.stages[name]["seconds"])

    def record(self, name: str, result: Any, seconds: float) -> None:
        if self.guard is not None:
            self.guard()
        self.stages[name] = {"result": result, "seconds": round(seconds, 3), "finished": time.time()}
        storage.write_text(self.path, json.dumps({"stages": self.stages}, indent=1))

    def run(self, name: str, fn, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` unless ``name`` already finished; its (JSON-able) result either way."""
        if self.done(name):
            return self.result(name)
        start = time.perf_counter()
        # Round-trip through JSON so a fresh run returns exactly what a resumed run reads back
        # (e.g. int dict keys become strings in both cases).
        result = json.loads(json.dumps(fn(*args, **kwargs)))
        self.record(name, result, time.perf_counter() - start)
        return result


def _read_ledger(path: str) -> dict[str, Any]:
    """The stages of a ledger file; ``RunStateError`` naming it when it is unreadable or not a ledger (it is
    written atomically, so that means it was damaged or edited: a run cannot tell which stages finished)."""
    def error(message: str) -> RunStateError:
        return RunStateError(f"{message}; the run cannot tell which of its stages finished: delete {path} to redo "
                             "every stage of this run directory (its outputs are overwritten), or give the run "
                             "another run.dir")

    data = read_json(path, error, max_bytes=MAX_LEDGER_BYTES)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise error(f"{path}: not a stage ledger (expected {{\"stages\": {{name: {{result, seconds, finished}}}}}})")
    for name, entry in stages.items():
        seconds = entry.get("seconds") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or "result" not in entry or isinstance(seconds, bool)
                or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0):
            raise error(f"{path}: stage '{clip(name)}': expected {{result, seconds >= 0, finished}}, got a broken entry")
    return stages
