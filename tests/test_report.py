"""report.md tables and plots of a run (raytal.selftrain.report)."""

from raytal.selftrain.report import plot_count_ratio, plot_rounds, quality_table, round_axis


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


def saved_axes(monkeypatch) -> list[list[dict]]:
    """Record, for every figure saved, each axes' x-limits, visible x ticks and texts."""
    from matplotlib.figure import Figure

    saved: list[list[dict]] = []
    real = Figure.savefig

    def spy(fig, *args, **kwargs):
        fig.canvas.draw()
        axes = []
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            axes.append({"xlim": (lo, hi), "ticks": [float(t) for t in ax.get_xticks() if lo <= t <= hi],
                         "texts": [t.get_text() for t in ax.texts]})
        saved.append(axes)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


EVAL = {"mAP": {"0.3": 0.5, "0.5": 0.4}, "average_mAP": 0.45}
QUALITY = {"class_accuracy": 0.8, "mean_tiou": 0.6, "positive_accuracy": 0.7, "count_ratio": [1.2, 0.5]}


def test_round_plots_have_whole_round_ticks_even_for_one_round(tmp_path, monkeypatch):
    saved = saved_axes(monkeypatch)
    # a supervised run: round 0 only, no pseudo labels
    plot_rounds(tmp_path / "r.png", {"rounds": [{"round": 0, "eval": EVAL}]})
    for ax in saved[-1]:
        assert ax["xlim"] == (-0.5, 0.5) and ax["ticks"] == [0.0]
    assert saved[-1][1]["texts"] == ["no pseudo labels (supervised run)"]
    # rounds 0-2, quality from round 1: both panels span the same whole rounds
    rounds = [{"round": 0, "eval": EVAL}] + [{"round": r, "eval": EVAL, "quality": QUALITY} for r in (1, 2)]
    plot_rounds(tmp_path / "r.png", {"rounds": rounds})
    for ax in saved[-1]:
        assert ax["xlim"] == (-0.5, 2.5) and ax["ticks"] == [0.0, 1.0, 2.0]
    plot_count_ratio(tmp_path / "c.png", {"rounds": [{"round": 0, "eval": EVAL}]}, ["a", "b"])
    assert saved[-1][0]["texts"] == ["no pseudo labels (supervised run)"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_round_axis_thins_ticks_but_keeps_them_whole():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    round_axis(ax, list(range(40)))
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if -0.5 <= t <= 39.5]
    assert ax.get_xlim() == (-0.5, 39.5) and 3 <= len(ticks) <= 12 and all(t == int(t) for t in ticks)
    plt.close(fig)
