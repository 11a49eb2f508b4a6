"""Which round's model a run hands out, and when it stops early: from the validation average mAP per round.

The run's model is the round with the highest validation average mAP (the earliest of equal ones: it cost
fewer rounds); without a validation part (``data.val_ratio: 0``) it is the last round. With
``run.patience = p > 0`` the run stops once its last p rounds all failed to beat the best round before them.
"""

from __future__ import annotations

from collections.abc import Sequence

BY_VAL = "the highest validation average mAP"
LAST = "the last round (no validation part: data.val_ratio = 0)"


def best_round(val: Sequence[float | None]) -> int:
    """Index of the round whose model the run hands out; ``val[r]`` is round r's validation average mAP, None for
    every round when the run has no validation part."""
    if not val:
        raise ValueError("best_round: no round was evaluated")
    if any(v is None for v in val):
        if not all(v is None for v in val):
            raise ValueError(f"best_round: some rounds have a validation mAP and some do not: {list(val)}")
        return len(val) - 1
    return max(range(len(val)), key=lambda r: (val[r], -r))


def patience_exhausted(val: Sequence[float | None], patience: int) -> bool:
    """Whether the last ``patience`` rounds all failed to beat the best validation mAP of the rounds before them
    (never with ``patience`` 0, without a validation part, or before ``patience`` rounds followed round 0)."""
    if patience <= 0 or len(val) <= patience or any(v is None for v in val):
        return False
    return max(val[-patience:]) <= max(val[:-patience])  # type: ignore[type-var]


def describe(val: Sequence[float | None], chosen: int) -> str:
    """One line: which round is the run's model and why, with the validation mAP (%) of every round."""
    if val[chosen] is None:
        return f"round {chosen}: {LAST}"
    per_round = ", ".join(f"round {r} {100 * v:.2f}" for r, v in enumerate(val))  # type: ignore[operator]
    return f"round {chosen}: {BY_VAL} (val average mAP %: {per_round})"
