"""The one progress bar of a stage (videos labeled, epochs trained), on stderr.

On a terminal the bar redraws in place. In a log file (stderr not a TTY) tqdm writes each refresh after a
carriage return on the same line, so a bar is one line of the log however long the stage; it refreshes
rarely there, to keep the line short.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_REFRESH_S = 60.0  # seconds between refreshes of a bar written to a log file


def progress(total: int, desc: str, unit: str, initial: int = 0) -> tqdm:
    """A bar of ``total`` ``unit``s named ``desc`` (use it as a context manager, or close it)."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=tty,
                mininterval=0.1 if tty else LOG_REFRESH_S)
