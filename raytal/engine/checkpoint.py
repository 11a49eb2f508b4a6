"""Checkpoints as plain ``torch.save`` dicts, read back with ``weights_only=True`` (no arbitrary pickles).

A state may hold only tensors, numbers, strings, bools, None, lists/tuples and dicts of them; numpy RNG
state is converted to that form by ``numpy_rng_state`` / restored by ``set_numpy_rng_state``. A file that
is missing, not loadable that way (a foreign pickle, a random or truncated file) or not the checkpoint a
caller expects (``check_checkpoint``) raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytal.core import storage
from raytal.core.errors import CheckpointError

_PLAIN = (int, float, str, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (torch.Tensor, *_PLAIN)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"checkpoint state {where}: keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(
        f"checkpoint state {where}: {type(value).__name__} cannot be loaded with weights_only=True; "
        "expected tensors, numbers, strings, lists or dicts"
    )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> str:
    """Write ``state`` atomically (local: temp file + rename; object store: one PUT), so a crash never
    leaves a half-written file."""
    _check_plain(state, "state")
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.write_bytes(path, buf.getvalue())
    return str(path)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (the only format save_checkpoint writes)


def _unreadable(error: Exception) -> str:
    if isinstance(error, pickle.UnpicklingError):
        return "refused by weights-only loading: it holds Python objects beyond tensors and plain data"
    first = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dict saved at ``path`` (local or a storage URI), read with ``weights_only=True`` (never
    arbitrary code)."""
    if not storage.is_file(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        raw = storage.read_bytes(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e.strerror or e}") from e
    if raw[: len(ZIP_MAGIC)] != ZIP_MAGIC:  # a bare pickle, another format, random bytes: torch's errors are cryptic
        raise CheckpointError(f"{path}: not a raytal checkpoint (not a torch.save zip archive"
                              f"{': the file is empty' if not raw else ''})")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is noise: the load is refused
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by the kind of damage
        raise CheckpointError(f"{path}: not a raytal checkpoint ({_unreadable(e)})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a raytal checkpoint (expected a dict of tensors, got {type(state).__name__})")
    return state


# What each kind of checkpoint is called in messages; the kind is read off the keys its writer saves.
KINDS = {
    "detector": "a detector checkpoint",  # a round's final.pt: model/ema weights, num_classes, input_dim
    "weak_base": "a weak base-model checkpoint",  # the weak setting's round 0 (raytal.selftrain.weak_round)
    "trainer": "a training-state checkpoint",  # last.pt / state.pt: model, optimizer, scheduler, RNG
}


def checkpoint_kind(state: dict[str, Any]) -> str | None:
    """'detector', 'weak_base', 'trainer', or None for a dict that is none of them."""
    if "kind" in state:
        return str(state["kind"]) if state["kind"] in KINDS else None
    if "optimizer" in state and "model" in state:
        return "trainer"
    if "model" in state and "num_classes" in state:
        return "detector"
    return None


def check_checkpoint(
    state: dict[str, Any], path: str | Path, *, kind: str | None = None, num_classes: int | None = None,
    input_dim: int | None = None,
) -> dict[str, Any]:
    """``state`` (loaded from ``path``) if it is a raytal checkpoint of ``kind`` for ``num_classes`` classes and
    ``input_dim`` features (None = any); else CheckpointError saying what the file is and what was expected."""
    found = checkpoint_kind(state)
    if found is None or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a raytal checkpoint (expected model weights and their shapes, "
                              f"got keys {sorted(map(str, state))[:8]})")
    what = KINDS[found]
    if kind is not None and found != kind:
        raise CheckpointError(f"{path}: {what}, expected {KINDS.get(kind, repr(kind))}")
    for value, key, unit in ((num_classes, "num_classes", "{} classes"), (input_dim, "input_dim", "D = {} features")):
        if value is None:
            continue
        have = state.get(key)
        if not isinstance(have, int) or isinstance(have, bool):
            raise CheckpointError(f"{path}: {what} without a valid '{key}' (got {have!r}), expected {unit.format(value)}")
        if have != value:
            raise CheckpointError(f"{path}: {what} for {unit.format(have)}, expected {unit.format(value)}")
    return state


def numpy_rng_state() -> dict[str, Any]:
    """The legacy global numpy RNG (MT19937) state as tensors/numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))
