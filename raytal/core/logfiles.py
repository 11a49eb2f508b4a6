"""Where a job's log files go: ``$RAYTAL_LOG_DIR``, else the system temp directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LOG_DIR_ENV = "RAYTAL_LOG_DIR"


def log_file(name: str) -> Path:
    """``<log dir>/<name>``, its directory created."""
    directory = Path(os.environ.get(LOG_DIR_ENV) or tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name
