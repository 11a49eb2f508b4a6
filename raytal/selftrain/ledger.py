"""A run's ledger of completed stages, so a killed job resumes where it stopped.

Every stage of a self-training run (``round_0/train``, ``round_1/pseudo``, …) records its result here
once it has fully finished; a re-run skips recorded stages and reuses their results. The file is
rewritten atomically (``raytal.core.storage.write_text``: temp file + rename, or one object PUT), so a
kill never leaves it half-written; it lives wherever the run does (a local path or a storage URI).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raytal.core import storage


class StageLog:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self.stages: dict[str, Any] = {}
        if storage.is_file(self.path):
            try:
                self.stages = json.loads(storage.read_text(self.path))["stages"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{self.path}: unreadable stage ledger ({e}); delete it to restart the run") from e

    def done(self, name: str) -> bool:
        return name in self.stages

    def result(self, name: str) -> Any:
        return self.stages[name]["result"]

    def seconds(self, name: str) -> float:
        return float(self.stages[name]["seconds"])

    def record(self, name: str, result: Any, seconds: float) -> None:
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
