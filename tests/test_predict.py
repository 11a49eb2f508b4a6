"""jobs/predict.py: a trained checkpoint on new videos, in-process and through Ray Data's actor pool.

A tiny supervised run (round 0 only) gives the checkpoint. Its detections on the test shards score, by
jobs/evaluate.py, exactly as the run's own evaluation; Ray and in-process give identical results; feature
files with a NaN or the wrong width become error rows beside the others' detections.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raytal.config import load_config
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain

REPO = Path(__file__).resolve().parents[1]


def _job(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / f"{name}.py"), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "sup"
    cfg = load_config(REPO / "configs" / "tiny_supervised.yaml",
                      [f"data.root={tiny_data}", f"run.dir={run}", "train.epochs=3", "run.rounds=0"])
    metrics = run_selftrain(cfg, LocalBackend())
    return tiny_data, run, metrics


def _predict(data: Path, run: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _job("predict", "--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={data}",
                "--checkpoint", str(run / "round_0" / "train" / "final.pt"), "--out", str(out), *extra)


def test_predictions_score_as_the_runs_own_evaluation(trained, tmp_path):
    data, run, metrics = trained
    out = tmp_path / "test.json"
    done = _predict(data, run, out, "--shards", str(data / "shards" / "test"), "--in-process")
    assert done.returncode == 0, done.stderr
    assert "16 videos, 0 error rows" in done.stdout
    results = json.loads(out.read_text())
    assert len(results["results"]) == 16 and results["errors"] == {}
    scored = _job("evaluate", "--gt", str(data / "annotations.json"), "--subset", "test", "--pred", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    ev = metrics["rounds"][0]["eval"]
    assert json.loads(scored.stdout)["mAP"] == pytest.approx(ev["mAP"], abs=1e-9)
    # and the run's own predictions.json holds the same detections
    own = json.loads((run / "round_0" / "predictions.json").read_text())["results"]
    assert own.keys() == results["results"].keys()
    for vid, dets in own.items():
        assert [d["label"] for d in dets] == [d["label"] for d in results["results"][vid]]
        np.testing.assert_allclose([d["segment"] for d in dets], [d["segment"] for d in results["results"][vid]])


def _feature_dir(data: Path, tmp_path: Path) -> Path:
    """The test videos' feature files, plus one with a NaN and one of the wrong width."""
    feats = tmp_path / "feats"
    feats.mkdir()
    for f in sorted((data / "features").glob("tiny_test_*.npy"))[:5]:
        shutil.copy(f, feats / f.name)
    bad = np.load(feats / sorted(p.name for p in feats.iterdir())[0])
    bad[3, 1] = np.nan
    np.save(feats / "nan_video.npy", bad)
    np.save(feats / "narrow_video.npy", np.zeros((40, 7), np.float32))
    return feats


def test_bad_feature_files_are_error_rows(trained, tmp_path):
    data, run, _ = trained
    feats = _feature_dir(data, tmp_path)
    out = tmp_path / "feats.json"
    done = _predict(data, run, out, "--features", str(feats), "--in-process")
    assert done.returncode == 0, done.stderr
    assert "7 videos, 2 error rows" in done.stdout
    results = json.loads(out.read_text())
    assert set(results["errors"]) == {"nan_video", "narrow_video"}
    assert "NaN" in results["errors"]["nan_video"] and "nan_video.npy" in results["errors"]["nan_video"]
    assert "D = 32" in results["errors"]["narrow_video"] or "32" in results["errors"]["narrow_video"]
    assert sum(len(v) > 0 for k, v in results["results"].items() if k not in results["errors"]) == 5


@pytest.mark.ray
def test_ray_and_in_process_give_identical_results(trained, tmp_path, ray_session):
    data, run, _ = trained
    feats = _feature_dir(data, tmp_path)
    local, remote = tmp_path / "local.json", tmp_path / "ray.json"
    assert _predict(data, run, local, "--features", str(feats), "--in-process").returncode == 0
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import predict  # in this process: it joins the session's Ray instead of starting a second one
    finally:
        sys.path.remove(str(REPO / "jobs"))
    assert predict.main(["--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={data}",
                         "--checkpoint", str(run / "round_0" / "train" / "final.pt"), "--out", str(remote),
                         "--features", str(feats)]) == 0
    assert json.loads(remote.read_text()) == json.loads(local.read_text())
