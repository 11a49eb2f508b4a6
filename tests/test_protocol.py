"""A dataset's evaluation protocol flows through a run, and a run's predictions score as its own evaluation.

The tiny dataset built with ActivityNet's thresholds (``--tious 0.5:0.05:0.95``): a one-round run reports
mAP@0.5…0.95 in metrics.json, report.md and compare.py, and ``jobs/evaluate.py`` on a round's
``predictions.json`` gives the numbers of its metrics.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raytal.config import load_config
from raytal.data.dataset import load_dataset_info
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain

REPO = Path(__file__).resolve().parents[1]
ANET = [f"{0.5 + 0.05 * i:.10g}" for i in range(10)]  # "0.5", "0.55", ..., "0.95"


def _job(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / f"{name}.py"), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def anet_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("anet") / "tiny"
    assert _job("make_dataset", "--preset", "tiny", "--out", str(data), "--tious", "0.5:0.05:0.95").returncode == 0
    run = tmp_path_factory.mktemp("run") / "anet"
    cfg = load_config(REPO / "configs" / "tiny_ntc.yaml",
                      [f"data.root={data}", f"run.dir={run}", "train.epochs=3", "run.rounds=1"])
    return data, run, run_selftrain(cfg, LocalBackend())


def test_make_dataset_records_the_protocol(anet_run, tmp_path):
    data, _, _ = anet_run
    assert [f"{t:.10g}" for t in load_dataset_info(data).tious] == ANET
    # default: THUMOS14's thresholds for a file that is not an official ActivityNet one
    assert _job("make_dataset", "--preset", "tiny", "--out", str(tmp_path / "t")).returncode == 0
    assert load_dataset_info(tmp_path / "t").tious == [0.3, 0.4, 0.5, 0.6, 0.7]


def test_the_run_reports_its_protocol_everywhere(anet_run):
    _, run, metrics = anet_run
    for r in metrics["rounds"]:
        assert list(r["eval"]["mAP"]) == ANET
        assert r["eval"]["average_mAP"] == pytest.approx(sum(r["eval"]["mAP"].values()) / 10, abs=1e-12)
    assert json.loads((run / "metrics.json").read_text())["rounds"] == metrics["rounds"]
    report = (run / "report.md").read_text()
    assert "mAP@0.95" in report and "mAP@0.3" not in report
    out = _job("compare", str(run), "--out", str(run / "compare.png"))
    assert out.returncode == 0 and "avg mAP (0.5:0.05:0.95)" in out.stdout


@pytest.mark.parametrize("round_index", [0, 1])
def test_evaluate_job_on_predictions_gives_the_runs_numbers(anet_run, round_index):
    data, run, metrics = anet_run
    predictions = run / f"round_{round_index}" / "predictions.json"
    results = json.loads(predictions.read_text())["results"]
    assert len(results) == 16  # every test video has an entry (the ActivityNet results format)
    out = _job("evaluate", "--gt", str(data / "annotations.json"), "--subset", "test", "--pred", str(predictions),
               "--tiou", "0.5:0.05:0.95", "--json")
    assert out.returncode == 0, out.stderr
    scored = json.loads(out.stdout)
    ev = metrics["rounds"][round_index]["eval"]
    assert scored["mAP"] == pytest.approx(ev["mAP"], abs=1e-9)
    assert scored["average_mAP"] == pytest.approx(ev["average_mAP"], abs=1e-9)
