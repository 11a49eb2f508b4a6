"""The unlabeled pool reaches the student, a run copies no features, and a run on object storage is the
run on local disk (issue 19).

One tiny NTC round on a dataset with a synthetic pool of 40 extra unlabeled videos, in-process, is the
reference. The same run with ``data.root`` and ``run.dir`` on a real S3 endpoint (moto on 127.0.0.1) must
give the same metrics, in-process and through Ray (the suite's Ray == in-process check: without a shuffle
buffer, a 1-worker Ray Train run reads the very stream the in-process back-end reads; with one, each
back-end mixes it with its own buffer: Ray Data's local shuffle on the worker).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raytal.config import load_config
from raytal.core import storage
from raytal.data.index import RunIndex
from raytal.selftrain import train_stage
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain

REPO = Path(__file__).resolve().parents[1]
POOL = 40
# no validation part: the split's unlabeled videos are 29 of the 32 training videos (3 labeled)
SCHEDULE = ["train.epochs=4", "train.lr=0.005", "run.rounds=1", "train.seed=0", "recipe.min_score=0.05",
            "train.shuffle_buffer=0", "data.val_ratio=0.0"]


@pytest.fixture(scope="module")
def pool_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool_data") / "tiny"
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(out),
                    "--num-unlabeled", str(POOL), "--rows-per-shard", "16"], check=True, capture_output=True)
    return out


def _cfg(root: str, run_dir: str, *extra: str):
    # tiny_ntc: threshold selection, so a young teacher still labels many videos
    return load_config(REPO / "configs" / "tiny_ntc.yaml", [f"data.root={root}", f"run.dir={run_dir}", *SCHEDULE, *extra])


@pytest.fixture(scope="module")
def local_run(pool_data, tmp_path_factory):
    """The reference run, recording the video ids of every training batch of every stage."""
    seen: dict[str, list[str]] = {}
    original = train_stage.rank_batches

    def recording(*args, **kwargs):
        for epoch, step, batch in original(*args, **kwargs):
            seen.setdefault("current", []).extend(m["video_id"] for m in batch.meta)
            yield epoch, step, batch

    run_dir = tmp_path_factory.mktemp("run") / "pool"
    mp = pytest.MonkeyPatch()
    mp.setattr(train_stage, "rank_batches", recording)
    try:
        metrics = run_selftrain(_cfg(str(pool_data), str(run_dir)), LocalBackend())
    finally:
        mp.undo()
    return run_dir, metrics, seen["current"]


def test_the_pool_is_pseudo_labeled_and_reaches_the_students_batches(local_run):
    run_dir, metrics, trained_on = local_run
    index = RunIndex.load(str(run_dir / "index.json"))
    assert index.count("pool") == POOL and index.count("unlabeled") == 29
    pseudo = metrics["rounds"][1]["pseudo"]
    assert pseudo["videos_in"] == pseudo["rows_out"] == 29 + POOL  # the split's unlabeled videos and the pool
    pool_ids = {f"unl_{j:07d}" for j in range(POOL)}
    reached = pool_ids & set(trained_on)
    assert reached, "no pool video reached a training batch"
    assert len(reached) > POOL // 2, f"only {len(reached)} of {POOL} pool videos were trained on"


def test_a_run_directory_holds_no_copy_of_the_features(local_run, pool_data):
    run_dir, _, _ = local_run
    assert not (run_dir / "data").exists()  # the split is index.json, not shards
    for f in run_dir.rglob("*.parquet"):
        assert "features" not in pq.read_schema(f).names, f"{f} holds features"
    assert not list(run_dir.rglob("*.npy"))
    # the index names the dataset's own shard files, read in place
    index = RunIndex.load(str(run_dir / "index.json"))
    files = {s.file for part in index.parts.values() for s in part}
    assert files and all(Path(f).is_relative_to(pool_data) for f in files)


def _upload(local: Path, uri: str) -> None:
    for f in sorted(local.rglob("*")):
        if f.is_file():
            storage.write_bytes(storage.join(uri, *f.relative_to(local).parts), f.read_bytes())


def _map_values(metrics: dict) -> list[float]:
    return [r["eval"]["average_mAP"] for r in metrics["rounds"]] + [
        v for r in metrics["rounds"] for v in r["eval"]["mAP"].values()]


def test_a_run_on_s3_gives_the_local_metrics(local_run, pool_data, s3_dir):
    _, reference, _ = local_run
    data, run = f"{s3_dir}/data/tiny", f"{s3_dir}/runs/pool"
    _upload(pool_data, data)
    metrics = run_selftrain(_cfg(data, run), LocalBackend())
    assert _map_values(metrics) == pytest.approx(_map_values(reference), abs=1e-9)
    # the run's files are in the bucket: ledger, index, metrics, report, checkpoints, pseudo labels
    for name in ("stages.json", "index.json", "metrics.json", "report.md", "config.yaml",
                 "round_0/train/final.pt", "round_1/train/final.pt"):
        assert storage.is_file(storage.join(run, name)), name
    assert storage.list_files(storage.join(run, "round_1", "pseudo"), suffix=".parquet")
    assert json.loads(storage.read_text(storage.join(run, "metrics.json")))["rounds"][1]["eval"] == metrics["rounds"][1]["eval"]
    # resuming from the URI computes nothing: the run is finished
    again = run_selftrain(_cfg(data, run), LocalBackend())
    assert again == metrics


# 6 minutes on CI's 2 cores: `make test-slow`. Its parts stay in `make test`: Ray Train checkpoints on S3 and
# resumes (tests/test_storage_ray.py), Ray == in-process for training (tests/test_ray_train.py) and pseudo labels
# (tests/test_pseudolabel_pipeline.py), a whole run on S3 in-process (above).
@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_run_on_s3_gives_the_local_metrics(local_run, pool_data, s3_dir, ray_session):
    from raytal.distributed.backend import RayBackend

    _, reference, _ = local_run
    data, run = f"{s3_dir}/data/tiny", f"{s3_dir}/runs/pool_ray"
    _upload(pool_data, data)
    cfg = _cfg(data, run)
    metrics = run_selftrain(cfg, RayBackend(cfg))
    # Ray == in-process: the same mAP, the same pseudo labels (quality and instances per class)
    assert _map_values(metrics) == pytest.approx(_map_values(reference), abs=1e-9)
    keys = ("class_accuracy", "mean_tiou", "positive_accuracy", "num_pseudo", "num_gt")
    quality = [[m["rounds"][1]["quality"][k] for k in keys] for m in (metrics, reference)]
    assert quality[0] == pytest.approx(quality[1], abs=1e-9)
    per_class = [m["rounds"][1]["pseudo"]["instances_per_class"] for m in (metrics, reference)]
    assert per_class[0] == per_class[1]
    # Ray Train kept its checkpoints in the bucket too
    assert storage.list_files(storage.join(run, "round_1", "train", "ray_train"))
