"""A run's ledger of completed stages, so a killed job resumes where it stopped.

Every stage of a self-training run (``round_0/train``, ``round_1/pseudo``, …) records its result here
once it has fully finished; a re-run skips recorded stages and reuses their results. The file is
rewritten atomically (temp file + ``os.replace``), so a kill never leaves it half-written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class StageLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.stages: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.stages = json.loads(self.path.read_text())["stages"]
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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages}, indent=1))
        os.replace(tmp, self.path)

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
