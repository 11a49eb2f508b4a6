"""GauFuse Δ pseudo labels and their generation schedule (docs/design.md §5 "GauFuse Δ pseudo labels").

Δ = Y^(r) - Y^(r-1) between consecutive generations of dense labels: the snippet loss
-Σ_t Σ_c Δ_tc log p_tc then pushes up the classes whose label grew and down those whose label shrank,
which lets the model correct its own earlier pseudo labels. The first generation has no predecessor,
so its Δ is the labels themselves.
"""

from __future__ import annotations

import numpy as np


def _dense(name: str, y: np.ndarray) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected dense labels of shape [T, C], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite labels, found NaN or Inf")
    return arr


def delta_labels(prev: np.ndarray | None, cur: np.ndarray) -> np.ndarray:
    """Δ = cur - prev ([T, C] float32); ``prev`` None (first generation) gives a copy of ``cur``."""
    cur_arr = _dense("cur", cur)
    if prev is None:
        return cur_arr.copy()
    prev_arr = _dense("prev", prev)
    if prev_arr.shape != cur_arr.shape:
        raise ValueError(f"prev: expected the shape of cur {cur_arr.shape}, got {prev_arr.shape}")
    return cur_arr - prev_arr


def regeneration_epochs(schedule: list[int], epochs: int) -> list[int]:
    """The epochs at which pseudo labels are regenerated, validated and sorted.

    Each entry must be an int in [1, epochs) and appear once (a duplicate is most likely a typo): the
    first generation comes from the teacher before the student trains, so a regeneration at epoch 0
    would only relabel with an untrained student.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    for e in schedule:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)):
            raise ValueError(f"schedule: expected int epochs, got {e!r}")
        if not 1 <= e < epochs:
            raise ValueError(f"schedule: epoch {e} is outside [1, {epochs}) (train.epochs = {epochs})")
    if len(set(schedule)) != len(schedule):
        raise ValueError(f"schedule: expected distinct epochs, got {list(schedule)}")
    return sorted(int(e) for e in schedule)
