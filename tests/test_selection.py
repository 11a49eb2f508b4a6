"""Which round a run hands out and when it stops (raytal.selftrain.selection), on hand-made val mAP curves."""

from __future__ import annotations

import pytest

from raytal.selftrain.selection import best_round, describe, patience_exhausted


@pytest.mark.parametrize("val, expected", [
    ([0.30], 0),  # round 0 alone
    ([0.30, 0.35, 0.33], 1),  # round 2 fell back below round 1
    ([0.30, 0.28, 0.27], 0),  # no round beat the teacher: the teacher is the model
    ([0.30, 0.35, 0.35], 1),  # a tie goes to the earlier round
    ([0.30, 0.31, 0.36], 2),
])
def test_best_round_is_the_highest_val_map_earliest_on_ties(val, expected):
    assert best_round(val) == expected


def test_without_a_validation_part_the_last_round_is_the_model():
    assert best_round([None, None, None]) == 2


def test_best_round_refuses_a_curve_with_and_without_val():
    with pytest.raises(ValueError, match="some rounds have a validation mAP"):
        best_round([0.3, None])
    with pytest.raises(ValueError, match="no round"):
        best_round([])


@pytest.mark.parametrize("val, patience, expected", [
    ([0.30], 1, False),  # round 0 alone: nothing to compare
    ([0.30, 0.35], 1, False),  # improved
    ([0.30, 0.29], 1, True),  # round 1 below round 0
    ([0.30, 0.30], 1, True),  # equal is not better
    ([0.30, 0.35, 0.33], 1, True),  # round 2 below round 1
    ([0.30, 0.35, 0.33], 2, False),  # round 1 still beat round 0 within the last 2 rounds
    ([0.30, 0.29, 0.28], 2, True),  # rounds 1 and 2 both below round 0
    ([0.30, 0.20, 0.10], 0, False),  # patience 0: never stop early
    ([None, None], 1, False),  # no validation part: never stop early
])
def test_patience_counts_rounds_without_a_better_val_map(val, patience, expected):
    assert patience_exhausted(val, patience) is expected


def test_describe_names_the_round_and_every_val_map():
    assert describe([0.3, 0.35, 0.3312], 1) == (
        "round 1: the highest validation average mAP (val average mAP %: round 0 30.00, round 1 35.00, round 2 33.12)")
    assert describe([None, None], 1).startswith("round 1: the last round (no validation part")
