"""JSON documents a user hands the jobs (annotations, predictions, video info, a run's metrics and state),
read within limits, so a hostile or broken file gives one clear error instead of a crash or a hang.

Refused, with ``error(f"{source}: refused: ...")``:

- a document larger than ``max_bytes`` (default ``MAX_JSON_BYTES``; only that much + 1 byte is read, so
  an endless input cannot hang the reader);
- nesting deeper than ``MAX_JSON_DEPTH`` (Python's parser would hit its recursion limit near 1000 levels,
  and the code that walks the result after it);
- an integer literal of more than ``MAX_INT_DIGITS`` digits (Python refuses more than 4300 digits with a
  ValueError; fewer still overflow ``float()`` later) and a number literal beyond the float range
  (``1e999`` would silently become ``inf``).

``NaN`` / ``Infinity`` constants are parsed as Python's ``json`` does: each reader checks the fields it
uses and names the one that holds them (raytal's own metrics write ``Infinity`` for a class count ratio).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from raytal.core import storage
from raytal.core.errors import InputError

MAX_JSON_BYTES = 512 << 20  # an ActivityNet results file with 100 detections per video is ~40 MB
MAX_JSON_DEPTH = 64  # the deepest raytal document (metrics.json) nests 6 levels
MAX_INT_DIGITS = 18  # beyond every count, id and time the formats hold


class _Refused(Exception):
    pass


class CheckedObject(dict):
    """A JSON object that remembers the keys it saw more than once: (key, first position, later position),
    positions counted from 1 among the object's entries. Python's ``json`` keeps the last value silently."""

    duplicates: list[tuple[str, int, int]]


def note_duplicates(pairs: list[tuple[str, Any]]) -> CheckedObject:
    """``object_pairs_hook`` giving ``CheckedObject``s (the value of a repeated key is the last one)."""
    obj = CheckedObject()
    obj.duplicates = []
    first: dict[str, int] = {}
    for i, (k, v) in enumerate(pairs, start=1):
        if k in first:
            obj.duplicates.append((k, first[k], i))
        else:
            first[k] = i
        obj[k] = v
    return obj


def _quotes(body: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close a string (not the escaped ones, ``\\"``)."""
    quotes = np.flatnonzero(body == ord('"'))
    slashes = np.flatnonzero(body == ord("\\"))
    if not slashes.size or not quotes.size:
        return quotes
    cut = np.flatnonzero(np.diff(slashes) != 1) + 1  # runs of consecutive backslashes
    first, last = slashes[np.r_[0, cut]], slashes[np.r_[cut - 1, slashes.size - 1]]
    run = np.minimum(np.searchsorted(last, quotes - 1), last.size - 1)
    escaped = (last[run] == quotes - 1) & ((last[run] - first[run]) % 2 == 0)  # an odd run escapes it
    return quotes[~escaped]


def _depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` outside string literals (exact for valid JSON), vectorized:
    a bracket is inside a string when an odd number of string quotes precede it."""
    body = np.frombuffer(raw, dtype=np.uint8)
    quotes = _quotes(body)
    opens = np.flatnonzero((body == ord("[")) | (body == ord("{")))
    closes = np.flatnonzero((body == ord("]")) | (body == ord("}")))
    opens = opens[np.searchsorted(quotes, opens) % 2 == 0]
    closes = closes[np.searchsorted(quotes, closes) % 2 == 0]
    if not opens.size:
        return 0
    order = np.argsort(np.concatenate([opens, closes]), kind="stable")
    steps = np.concatenate([np.ones(opens.size, np.int64), -np.ones(closes.size, np.int64)])[order]
    return int(np.cumsum(steps).max())


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (expected at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is beyond the float range")
    return value


def parse_json(raw: bytes | str, source: str, error: Callable[[str], Exception] = InputError,
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """The document in ``raw`` within the module's limits; any failure raises ``error`` with one line that
    starts with ``source``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    depth = _depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{source}: refused: nested {depth} levels deep (expected at most {MAX_JSON_DEPTH})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{source}: not valid JSON: not UTF-8 at byte {e.start}") from None
    try:
        return json.loads(text, parse_int=_integer, parse_float=_float, object_pairs_hook=object_pairs_hook)
    except _Refused as e:
        raise error(f"{source}: refused: {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON: {e}") from None
    except RecursionError:  # not reached after the depth check; kept so no input can crash the reader
        raise error(f"{source}: refused: nested too deeply") from None


def read_json(path: storage.PathLike, error: Callable[[str], Exception] = InputError, *,
              max_bytes: int = MAX_JSON_BYTES,
              object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """The JSON document of a file (local path or storage URI) within the limits: ``error`` naming the file
    when it is missing, not a regular file, unreadable, too large or not valid JSON."""
    shown = storage.resolve(path)
    if not storage.is_file(path):
        what = "not a regular file" if storage.exists(path) else "file not found"
        raise error(f"{shown}: {what}")
    raw = storage.read_at_most(path, max_bytes, error, shown, f"{max_bytes >> 20} MiB")
    return parse_json(raw, shown, error, object_pairs_hook)
