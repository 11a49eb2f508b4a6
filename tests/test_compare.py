"""jobs/compare.py on hand-made run directories (metrics.json + config.yaml), expected cells worked out by hand."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from raytal.cli import run_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import compare  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, dirname: str, *, name: str, seed: int, recipe: list[str], evals: list[tuple[float, float]],
              quality: tuple[float, float, float] | None = None, chosen: int | None = None) -> Path:
    """A run directory: ``evals`` = (average mAP, mAP@0.5) per round; ``quality`` for every round after 0;
    ``chosen``: the round the run selected on val (none recorded when None)."""
    run = root / dirname
    run.mkdir()
    flags = "".join(f"\n  {r}: {{enabled: true}}" for r in recipe)
    (run / "config.yaml").write_text(
        f"run:\n  name: '{name}'\n  rounds: {len(evals) - 1}\ntrain:\n  seed: {seed}\n"
        + (f"recipe:{flags}\n" if recipe else "")
        + ("model:\n  quality_heads: true\n" if "apl" in recipe else "")  # as every APL run has them
    )
    rounds = []
    for r, (avg, m05) in enumerate(evals):
        entry = {"round": r, "eval": {"mAP": {t: m05 for t in ("0.3", "0.4", "0.5", "0.6", "0.7")}, "average_mAP": avg},
                 "timings": {}}
        if r > 0 and quality is not None:
            entry["quality"] = {"class_accuracy": quality[0], "mean_tiou": quality[1], "positive_accuracy": quality[2],
                                "count_ratio": [1.0], "num_pseudo": 1, "num_gt": 1}
        rounds.append(entry)
    metrics = {"run": name, "rounds": rounds}
    if chosen is not None:
        metrics["selection"] = {"round": chosen, "why": "test", "stopped": None}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [
        # three NPL seeds: final avg 0.30/0.40/0.50, mAP@0.5 0.2/0.3/0.7, round 0 always 0.25
        write_run(tmp_path, "a", name="tiny_npl_seed0", seed=0, recipe=["npl"], evals=[(0.25, 0.1), (0.30, 0.2)],
                  quality=(0.5, 0.4, 0.1)),
        write_run(tmp_path, "b", name="tiny_npl_seed1", seed=1, recipe=["npl"], evals=[(0.25, 0.1), (0.40, 0.3)],
                  quality=(0.6, 0.4, 0.2)),
        write_run(tmp_path, "c", name="tiny_npl_s2", seed=2, recipe=["npl"], evals=[(0.25, 0.1), (0.50, 0.7)],
                  quality=(0.7, 0.4, 0.6)),
        # one supervised run: no rounds after 0, no pseudo labels
        write_run(tmp_path, "d", name="tiny_supervised-3", seed=3, recipe=[], evals=[(0.20, 0.1)]),
    ]


def row_of(table: str, recipe: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == recipe:
            return cells
    raise AssertionError(f"no row {recipe!r} in\n{table}")


@pytest.mark.parametrize("name, recipe", [
    ("thumos_apl_seed1", "thumos_apl"), ("thumos_apl_s12", "thumos_apl"), ("thumos_apl-1", "thumos_apl"),
    ("thumos14_apl", "thumos14_apl"), ("thumos14", "thumos14"),
])
def test_recipe_name_strips_a_trailing_seed_tag(name, recipe):
    assert compare.recipe_name(name) == recipe


def test_table_is_mean_and_sample_std_over_seeds(runs, tmp_path, capsys):
    out_png = tmp_path / "cmp.png"
    assert compare.main([str(r) for r in runs] + ["--out", str(out_png)]) == 0
    table = capsys.readouterr().out
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    # the averages name the thresholds they average over (the runs' protocol)
    assert header == ["recipe", "runs", "seeds", "rounds",
                      *(c.replace("avg mAP", "avg mAP (0.3:0.1:0.7)") for c in compare.COLUMNS)]
    npl = row_of(table, "tiny_npl")
    assert npl[1:4] == ["3", "0,1,2", "1,1,1"]  # no selection recorded: each run's last round
    # model avg: mean(.3,.4,.5) = .4; deviations -.1,0,.1 → sqrt((.01+0+.01)/2) = .1
    assert npl[4] == "40.00 ± 10.00"
    # mAP@0.5: mean(.2,.3,.7) = .4; deviations -.2,-.1,.3 → sqrt((.04+.01+.09)/2) = sqrt(.07) = .264575
    assert npl[5] == "40.00 ± 26.46"
    # round 0: .25 three times → std 0
    assert npl[6] == "25.00 ± 0.00"
    # class acc mean(.5,.6,.7) = .6 ± .1; mean tIoU .4 ± 0; positive acc like mAP@0.5 shifted: .3 ± .264575
    assert npl[7:10] == ["60.00 ± 10.00", "40.00 ± 0.00", "30.00 ± 26.46"]
    sup = row_of(table, "tiny_supervised")
    # one run: its value alone; no pseudo labels: dashes
    assert sup[1:] == ["1", "3", "0", "20.00", "10.00", "20.00", "–", "–", "–"]
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_group_by_recipe_flags(runs, capsys):
    assert compare.main([str(r) for r in runs] + ["--group-by", "recipe", "--out", str(runs[0].parent / "p.png")]) == 0
    table = capsys.readouterr().out
    assert row_of(table, "npl")[1] == "3"
    assert row_of(table, "supervised")[1] == "1"


def test_unnamed_run_is_grouped_by_its_recipe_flags(tmp_path):
    a = write_run(tmp_path, "x", name="", seed=0, recipe=["apl", "ntc"], evals=[(0.1, 0.1), (0.2, 0.2)],
                  quality=(0.5, 0.5, 0.5))
    b = write_run(tmp_path, "y", name="", seed=1, recipe=["apl", "ntc"], evals=[(0.1, 0.1), (0.4, 0.2)],
                  quality=(0.5, 0.5, 0.5))
    groups = compare.group_runs([compare.load_run(a), compare.load_run(b)])
    assert list(groups) == ["apl+ntc"]
    # model avg mean(.2,.4) = .3, std sqrt((.01+.01)/1) = .141421
    mean, std = compare.summarize(groups)["apl+ntc"]["model avg mAP"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.141421356, abs=1e-8)


def test_a_run_is_reported_by_the_round_it_chose(tmp_path):
    # round 1 chosen on val of rounds 0..2: its figures, and its quality (not round 2's)
    path = write_run(tmp_path, "sel", name="x_s0", seed=0, recipe=["ntc"], evals=[(0.2, 0.1), (0.4, 0.5), (0.3, 0.6)],
                     quality=(0.5, 0.5, 0.5), chosen=1)
    metrics = json.loads((path / "metrics.json").read_text())
    metrics["rounds"][2]["quality"]["class_accuracy"] = 0.9
    (path / "metrics.json").write_text(json.dumps(metrics))
    run = compare.load_run(path)
    assert run.model_round == 1 and run.curve == [0.2, 0.4, 0.3]
    assert run.values["model avg mAP"] == 0.4 and run.values["model mAP@0.5"] == 0.5
    assert run.values["class acc"] == 0.5
    # --round overrides the choice
    assert compare.load_run(path, 2).values["model avg mAP"] == 0.3


def test_missing_metrics_is_a_clear_error(runs, tmp_path, capsys):
    (runs[1] / "metrics.json").unlink()
    assert run_job(compare.main, [str(r) for r in runs] + ["--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert str(runs[1] / "metrics.json") in err and "missing" in err
    assert not (tmp_path / "p.png").exists()


def test_malformed_metrics_names_the_file(runs):
    (runs[0] / "metrics.json").write_text(json.dumps({"rounds": [{"round": 0, "eval": {"average_mAP": 0.1}}]}))
    with pytest.raises(compare.CompareError, match=r"a/metrics.json: not a selftrain metrics.json"):
        compare.load_run(runs[0])


def test_config_typo_names_the_file(runs):
    (runs[0] / "config.yaml").write_text("run:\n  nmae: x\n")
    with pytest.raises(compare.CompareError, match=r"a/config.yaml"):
        compare.load_run(runs[0])


def test_help_explains_grouping_and_statistics(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "sample standard deviation" in text and "--group-by" in text and "RUN_DIR" in text


def test_runs_sharing_a_seed_are_flagged(tmp_path, capsys):
    a = write_run(tmp_path, "x", name="npl_seed0", seed=0, recipe=["npl"], evals=[(0.1, 0.1), (0.2, 0.2)])
    b = write_run(tmp_path, "y", name="npl_seed1", seed=0, recipe=["npl"], evals=[(0.1, 0.1), (0.2, 0.2)])
    assert compare.main([str(a), str(b), "--out", str(tmp_path / "p.png")]) == 0
    captured = capsys.readouterr()
    assert "warning: recipe 'npl': 2 runs but only seeds [0]" in captured.err
    assert compare.main([str(a), "--out", str(tmp_path / "p.png")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_round_option_reports_an_earlier_round(tmp_path, capsys):
    two = write_run(tmp_path, "two", name="t_npl_s0", seed=0, recipe=["npl"], evals=[(0.25, 0.1), (0.30, 0.2), (0.50, 0.6)],
                    quality=(0.5, 0.4, 0.1))
    one = write_run(tmp_path, "one", name="t_npl_s1", seed=1, recipe=["npl"], evals=[(0.25, 0.1), (0.40, 0.4)],
                    quality=(0.7, 0.4, 0.3))
    assert compare.main([str(two), str(one), "--round", "1", "--out", str(tmp_path / "p.png")]) == 0
    # round 1 of both: avg mean(.30, .40) = .35, deviations ±.05 → std sqrt(2·.0025/1) = .070711
    assert row_of(capsys.readouterr().out, "t_npl")[3:6] == ["1,1", "35.00 ± 7.07", "30.00 ± 14.14"]
    assert run_job(compare.main, [str(two), str(one), "--round", "2", "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "one/metrics.json" in err and "no round 2" in err


def test_plot_with_a_single_round_has_one_whole_tick(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    limits = []
    real = Figure.savefig

    def spy(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        limits.append(((lo, hi), [float(t) for t in ax.get_xticks() if lo <= t <= hi]))
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    sup = write_run(tmp_path, "s", name="sup_s0", seed=0, recipe=[], evals=[(0.2, 0.1)])
    assert compare.main([str(sup), "--out", str(tmp_path / "p.png")]) == 0
    assert limits[-1] == ((-0.5, 0.5), [0.0])
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    two = write_run(tmp_path, "t", name="npl_s0", seed=0, recipe=["npl"], evals=[(0.2, 0.1), (0.3, 0.2), (0.4, 0.3)])
    assert compare.main([str(sup), str(two), "--out", str(tmp_path / "p.png")]) == 0
    assert limits[-1] == ((-0.5, 2.5), [0.0, 1.0, 2.0])


def test_runs_of_different_protocols_are_not_compared(runs, tmp_path, capsys):
    """An ActivityNet-protocol run (0.5:0.05:0.95) beside THUMOS14-protocol runs: their averages are not
    comparable, so the job refuses, naming each run's thresholds."""
    other = tmp_path / "anet"
    shutil.copytree(runs[0], other)
    metrics = json.loads((other / "metrics.json").read_text())
    for r in metrics["rounds"]:
        r["eval"]["mAP"] = {f"{0.5 + 0.05 * i:.10g}": 0.4 for i in range(10)}
    (other / "metrics.json").write_text(json.dumps(metrics))
    assert run_job(compare.main, [str(runs[0]), str(other), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "different tIoU thresholds" in err and "0.5:0.05:0.95" in err and "0.3:0.1:0.7" in err
