"""Ray Data and Ray Train against the S3 endpoint of the tests (moto server on 127.0.0.1, ``s3_endpoint``).

What has to be set (found with Ray 2.60 / pyarrow 26): the standard AWS variables (``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) in the
environment of the driver AND of every Ray worker: set before a local Ray starts, or on every node of a
cluster. Then plain ``s3://`` URIs work: ``ray.data.read_parquet`` / ``write_parquet`` and
``RunConfig(storage_path="s3://...")`` resolve them with ``pyarrow.fs.FileSystem.from_uri``, which reads
the endpoint from the environment; no ``filesystem=`` / ``storage_filesystem=`` is needed.

With the variables set in the driver only, after Ray started (tried once by hand, not a test here):
``write_parquet`` failed with ACCESS_DENIED in the write tasks (the filesystem the driver resolved is
pickled to them with its endpoint, but never with credentials, and moto refuses unsigned requests); a
``TorchTrainer`` with an ``s3://`` storage_path failed in ``TrainController.__init__`` (the controller is
a Ray actor: it resolved the URI without the endpoint and looked the bucket up on real AWS); with
``storage_filesystem=`` (the controller got the endpoint in the pickled filesystem) the train worker's
first upload failed with ACCESS_DENIED. So credentials are needed on every worker in any case, and the
endpoint too unless a filesystem object is passed to Ray.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raytal.core import storage

pytestmark = pytest.mark.ray

AWS_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def test_workers_see_the_endpoint(ray_session, s3_endpoint):
    """The fixtures' promise: the variables ``s3_endpoint`` set reached Ray's worker processes."""
    import ray

    @ray.remote(num_cpus=0.5)
    def worker_env() -> dict:
        return {k: os.environ.get(k) for k in AWS_VARS}

    assert ray.get(worker_env.remote()) == {k: os.environ[k] for k in AWS_VARS}


def test_ray_data_parquet_round_trip(ray_session, s3_dir):
    import ray

    out = storage.join(s3_dir, "shards")
    rows = [{"video_id": f"v{i:02d}", "n": i} for i in range(12)]
    ray.data.from_items(rows).repartition(3).write_parquet(out)
    shards = storage.list_files(out, suffix=".parquet")
    assert len(shards) == 3 and all(s.startswith(out + "/") for s in shards)
    # Each shard is a real Parquet file in the bucket; together they hold the 12 rows once.
    counts = [pq.ParquetFile(storage.open_input_file(s)).metadata.num_rows for s in shards]
    assert sum(counts) == 12
    back = sorted(ray.data.read_parquet(out).take_all(), key=lambda r: r["video_id"])
    assert back == rows
    assert ray.data.read_parquet(shards[0]).count() == counts[0]


def _linear_loop(config: dict) -> None:
    """y = 2x on x = [1, 2] with one SGD step (lr 0.1) per epoch from w = 0, resuming from Ray's latest
    checkpoint. The step is w <- w - 0.1 * 2 * mean(x * (w x - y)) = w - 0.2 * (2.5 w - 5) = 0.5 w + 1,
    so after e epochs w = 2 - 2 * 0.5**e: 1.0, 1.5, 1.75."""
    import ray.train
    import torch

    model = torch.nn.Linear(1, 1, bias=False)
    start, w = 0, 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = json.loads(Path(d, "state.json").read_text())
        start, w = state["epoch"], state["w"]
    with torch.no_grad():
        model.weight.fill_(w)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[1.0], [2.0]])
    for epoch in range(start + 1, config["epochs"] + 1):
        opt.zero_grad()
        ((model(x) - 2 * x) ** 2).mean().backward()
        opt.step()
        w = model.weight.item()
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch, "w": w}))
            ray.train.report({"epoch": epoch, "w": w, "resumed_from": start},
                             checkpoint=ray.train.Checkpoint.from_directory(d))


def test_ray_train_checkpoints_on_s3_and_resumes(ray_session, s3_dir):
    """Two epochs, then the same (storage_path, name) fitted again for three: the second fit starts from
    the bucket's epoch-2 checkpoint and runs only epoch 3. The first fit names the run by URI, the second
    by ``storage_filesystem=`` and the path on it (``raytal.core.storage.filesystem``): the same run."""
    import pyarrow.fs as pafs
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def fit(epochs: int, **where):
        return TorchTrainer(
            _linear_loop, train_loop_config={"epochs": epochs},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(name="linear", checkpoint_config=CheckpointConfig(), **where),
        ).fit()

    first = fit(2, storage_path=s3_dir)
    assert first.error is None
    assert first.metrics["epoch"] == 2 and first.metrics["resumed_from"] == 0
    assert first.metrics["w"] == pytest.approx(1.5, rel=1e-6)
    run = storage.join(s3_dir, "linear")
    states = storage.list_files(run, suffix="state.json")
    assert [json.loads(storage.read_text(s))["epoch"] for s in states] == [1, 2]  # checkpoint dirs sort by time
    assert isinstance(first.checkpoint.filesystem, pafs.S3FileSystem)
    assert "s3://" + first.checkpoint.path == storage.parent(states[-1])

    fs, inner = storage.filesystem(s3_dir)
    second = fit(3, storage_path=inner, storage_filesystem=fs)
    assert second.error is None
    assert second.metrics["epoch"] == 3 and second.metrics["resumed_from"] == 2
    assert second.metrics["w"] == pytest.approx(1.75, rel=1e-6)
    states = storage.list_files(run, suffix="state.json")
    assert [json.loads(storage.read_text(s))["epoch"] for s in states] == [1, 2, 3]
    ledger = json.loads(storage.read_text(storage.join(run, "checkpoint_manager_snapshot.json")))
    assert ledger["current_report_index"] == 3  # 2 reports + 1 after the resume, not 2 + 3
