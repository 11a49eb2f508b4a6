"""Checkpoints as plain ``torch.save`` dicts, read back with ``weights_only=True`` (no arbitrary pickles).

A state may hold only tensors, numbers, strings, bools, None, lists/tuples and dicts of them; numpy RNG
state is converted to that form by ``numpy_rng_state`` / restored by ``set_numpy_rng_state``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytal.core import storage

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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint (local path or URI), loaded with ``weights_only=True``: no arbitrary pickles."""
    if not storage.is_file(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(io.BytesIO(storage.read_bytes(path)), map_location=map_location, weights_only=True)


def numpy_rng_state() -> dict[str, Any]:
    """The legacy global numpy RNG (MT19937) state as tensors/numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))
