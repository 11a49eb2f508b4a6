"""report.md tables of a run (raytal.selftrain.report)."""

from raytal.selftrain.report import quality_table


def test_quality_table_shows_undefined_accuracies_as_dashes_not_zero():
    # Round 1 had pseudo labels; the GauFuse regeneration at epoch 4 produced none, so its
    # accuracies are undefined (None from pseudo_label_quality), which is not "0 % correct".
    q1 = {"num_pseudo": 4, "num_gt": 5, "class_accuracy": 0.75, "mean_tiou": 0.5, "positive_accuracy": 0.25}
    q_empty = {"num_pseudo": 0, "num_gt": 5, "class_accuracy": None, "mean_tiou": None, "positive_accuracy": None}
    metrics = {"rounds": [
        {"round": 0},
        {"round": 1, "quality": q1, "pseudo": {"num_errors": 1},
         "regenerations": [{"epoch": 4, "quality": q_empty, "pseudo": {"num_errors": 0}}]},
    ]}
    lines = quality_table(metrics).splitlines()
    assert lines[2:] == ["| 1 | 4 | 5 | 75.0 | 50.0 | 25.0 | 1 |", "| 1 (epoch 4) | 0 | 5 | – | – | – | 0 |"]
    assert quality_table({"rounds": [{"round": 0}]}) == "(no pseudo labels: supervised run)"
