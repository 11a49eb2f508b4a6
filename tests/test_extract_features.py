"""Feature extraction from video files (issue 33): real clips encoded here with PyAV (tests/video_clips.py: mp4,
webm, avi, mkv, plus two truncated, an empty and a corrupt file), a randomly initialised torchvision MC3-18
(nothing downloaded), through the Ray Data pipeline and the plain loop.

Checked: the decoded windows are the snippets the time grid describes (the frame each image came from is read
off the image), the features are a plain forward pass of the same model over the same frames, bad files are
error rows, a killed extraction resumes where it stopped, S3 input through the local endpoint, and the chain
videos -> features -> dataset -> one self-training round.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the `video` extra (PyAV) is not installed: make video")
torchvision = pytest.importorskip("torchvision", reason="the `video` extra (torchvision) is not installed: make video")

import torch  # noqa: E402

from raytal.cli import run_job  # noqa: E402
from raytal.core import storage  # noqa: E402
from raytal.core.errors import InputError, RunStateError  # noqa: E402
from raytal.core.grid import grid_to_seconds  # noqa: E402
from raytal.video.backbones import BackboneSpec  # noqa: E402
from raytal.video.decode import ClipSpec, WindowReader  # noqa: E402
from raytal.video.extraction import plan_extraction, run_extraction  # noqa: E402
from raytal.video.stages import EmbedStage, extract_in_process  # noqa: E402
from video_clips import HEIGHT, WIDTH, source_frame, write_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import extract_features  # noqa: E402
import make_dataset  # noqa: E402

SRC_FPS, FPS, NUM_FRAMES, STRIDE = 20, 10, 4, 2
SMALL = (16, 48)  # frames for the network: the full 32x96 frame halved (cheap, and nothing cropped)
MODEL = BackboneSpec("mc3_18", random_init=True, seed=3, resize=SMALL, crop=SMALL)
# name -> source frames at 20 fps; at 10 fps a clip of n frames gives n/2 output frames and
# (n/2 - 4) // 2 + 1 windows (but one padded window when n/2 < 4)
GOOD = {"a.mp4": 40, "b.webm": 30, "c.avi": 24, "short.mp4": 3}
WINDOWS = {"a": 9, "b": 6, "c": 5, "short": 1, "d": 7, "e": 4}  # 20, 15, 12, 2 (padded), 16 (d), 10 (e) frames
ON_S3 = {"d.mkv": 32, "e.mp4": 20}


def _plan(inputs, out, **kwargs):
    return plan_extraction([str(i) for i in inputs], [], kwargs.pop("backbone", MODEL), fps=FPS,
                           num_frames=NUM_FRAMES, feat_stride=STRIDE, out=str(out), **kwargs)


def _in_process(plan):
    stage = EmbedStage(plan.net, (NUM_FRAMES, *SMALL))
    return lambda videos, spec, sink: extract_in_process(videos, spec, sink, stage=stage, clips_per_batch=5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for name, frames in GOOD.items():
        write_clip(d / name, frames, SRC_FPS)
    whole = (d / "a.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(whole[: len(whole) // 3])  # libx264 in mp4: the index is at the end
    # WebM keeps its header first: FFmpeg decodes a cut file up to the cut, without an error
    whole = write_clip(tmp_path_factory.mktemp("whole") / "cut.webm", 80, SRC_FPS).read_bytes()
    (d / "cut.webm").write_bytes(whole[: len(whole) // 3])
    (d / "empty.webm").write_bytes(b"")
    (d / "corrupt.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    (d / "notes.txt").write_text("not a video: not listed")
    return d


@pytest.fixture(scope="module")
def plain_mc3() -> torch.nn.Module:
    """MC3-18 as the extraction's random init builds it (seeded), its classifier dropped, built here."""
    torch.manual_seed(MODEL.seed)
    net = torchvision.models.video.mc3_18()
    net.fc = torch.nn.Identity()
    return net.eval()


def plain_features(net: torch.nn.Module, path: str) -> np.ndarray:
    """The reference: the same frames (the decoder's windows) through ``net``, normalised here, one window at a
    time."""
    t = torchvision.models.video.MC3_18_Weights.DEFAULT.transforms()
    mean, std = torch.tensor(t.mean).view(3, 1, 1, 1), torch.tensor(t.std).view(3, 1, 1, 1)
    spec = ClipSpec(FPS, NUM_FRAMES, STRIDE, SMALL, SMALL)
    out = []
    with torch.no_grad():
        for _, chunk in WindowReader(path, spec):
            for window in chunk:  # [T, H, W, 3] uint8
                x = torch.from_numpy(window).permute(3, 0, 1, 2).float() / 255.0
                out.append(net(((x - mean) / std)[None])[0].numpy())
    return np.stack(out)


def _info(out: Path) -> dict[str, dict]:
    with open(out / "video_info.csv", newline="") as f:
        return {row["video_id"]: row for row in csv.DictReader(f)}


def _errors(out: Path) -> dict[str, str]:
    with open(out / "errors.csv", newline="") as f:
        return {row["video_id"]: row["error"] for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- decoding and timing


@pytest.mark.parametrize("name", ["a.mp4", "b.webm"])
def test_window_i_is_the_snippet_the_time_grid_centres(clips, name):
    spec = ClipSpec(FPS, NUM_FRAMES, STRIDE, (HEIGHT, WIDTH), (HEIGHT, WIDTH), chunk_windows=4)
    reader = WindowReader(str(clips / name), spec)
    chunks = list(reader)
    # chunks of at most 4 windows, numbered on
    assert [first for first, _ in chunks] == list(range(0, WINDOWS[name[0]], 4))
    windows = np.concatenate([c for _, c in chunks])
    assert windows.shape == (WINDOWS[name[0]], NUM_FRAMES, HEIGHT, WIDTH, 3)
    for i, window in enumerate(windows):
        shown = np.array([source_frame(image) for image in window])
        # output frame k = i*2 + m is shown at k/10 s: source frame 2k of the 20 fps file
        expected = 2 * (i * STRIDE + np.arange(NUM_FRAMES))
        assert np.abs(shown - expected).max() < 0.25, (i, shown)
        # the window's middle, in seconds, is where raytal.core.grid centres snippet i
        middle = (shown.mean() / SRC_FPS) + 0.5 / FPS
        assert middle == pytest.approx(float(grid_to_seconds(i, FPS, STRIDE, NUM_FRAMES, 1e9)), abs=0.25 / SRC_FPS)
    n_out = GOOD[name] // 2
    assert reader.summary.frames == n_out and reader.summary.duration == pytest.approx(n_out / FPS)
    assert reader.summary.T == WINDOWS[name[0]] and reader.summary.warning is None


def test_bad_files_end_in_an_error_row_naming_the_file(clips):
    from raytal.video.rows import END, decode_rows
    from raytal.video.sources import list_videos

    videos = {v.video_id: v for v in list_videos([str(clips)])}
    assert "notes" not in videos  # not a video suffix
    spec = ClipSpec(FPS, NUM_FRAMES, STRIDE, SMALL, SMALL, chunk_windows=2)
    for vid, why in [("cut", "truncated: its frames end at"), ("truncated", "cannot decode"),
                     ("empty", "empty file (0 bytes)"), ("corrupt", "cannot decode")]:
        tables = list(decode_rows(7, videos[vid], spec))
        end = tables[-1].to_pylist()
        assert [r["window"] for r in end] == [END] and end[0]["key"] == 7
        info = json.loads(end[0]["info"])
        assert info["error"].startswith(f"{clips / videos[vid].path.rsplit('/', 1)[1]}: {why}"), info
        # the cut file had sent windows before its end showed it cut: the end row counts them
        assert info["sent"] == sum(t.num_rows for t in tables[:-1]) and (info["sent"] > 0) == (vid == "cut")


# -------------------------------------------------------------------------------- the Ray pipeline


@pytest.fixture(scope="module")
def s3_videos(s3_endpoint, tmp_path_factory) -> str:
    local = tmp_path_factory.mktemp("s3_videos")
    prefix = f"{s3_endpoint}/extract/videos"
    for name, frames in ON_S3.items():
        storage.write_bytes(f"{prefix}/{name}", write_clip(local / name, frames, SRC_FPS).read_bytes())
    return prefix


@pytest.fixture(scope="module")
def ray_extraction(clips, s3_videos, ray_session, tmp_path_factory):
    from raytal.distributed.extract_pipeline import run_extract_pipeline

    out = tmp_path_factory.mktemp("ray") / "feats"
    plan = _plan([clips, s3_videos], out, chunk_windows=2)  # several chunks per video, and cut.webm sends some
    backend = lambda videos, spec, sink: run_extract_pipeline(  # noqa: E731
        videos, spec, sink, backbone=plan.backbone, decode_tasks=2, model_actors=1, clips_per_batch=5,
        actor_cpus=1.0, decode_cpus=0.5)
    summary = run_extraction(plan, backend, rows_per_shard=3)
    return out, summary


@pytest.mark.ray
def test_pipeline_writes_features_grid_and_error_rows(ray_extraction, clips):
    out, summary = ray_extraction
    info = _info(out)
    assert sorted(info) == sorted(WINDOWS)
    for vid, T in WINDOWS.items():
        feats = np.load(out / f"{vid}.npy")
        assert feats.shape == (T, 512) and feats.dtype == np.float32  # MC3's pooled embedding: 512
        row = info[vid]
        assert (int(row["T"]), int(row["D"]), float(row["fps"]), int(row["feat_stride"]), int(row["num_frames"])) == (
            T, 512, FPS, STRIDE, NUM_FRAMES)
    assert float(info["a"]["duration"]) == pytest.approx(2.0)  # 40 frames at 20 fps
    assert info["d"]["source"].startswith("s3://")
    errors = _errors(out)
    assert sorted(errors) == ["corrupt", "cut", "empty", "truncated"]
    for vid, name in [("corrupt", "corrupt.avi"), ("cut", "cut.webm"), ("empty", "empty.webm"),
                      ("truncated", "truncated.mp4")]:
        assert str(clips / name) in errors[vid]
    assert "empty file (0 bytes)" in errors["empty"]
    # the cut file sent windows before its end showed it cut: none of them reached the output
    assert "truncated: its frames end at" in errors["cut"] and not (out / "cut.npy").exists()
    assert summary.output.written == 6 and summary.output.extracted == 6 and summary.feature_dim == 512
    # the short clip: one padded window, with a warning in the record
    records = [e for f in (out / "extract_log").glob("*.json") for e in json.loads(f.read_text())["videos"]]
    short = next(e for e in records if e["video_id"] == "short")
    assert short["T"] == 1 and "shorter than one window" in short["warning"]


@pytest.mark.ray
def test_pipeline_features_equal_a_plain_forward_pass(ray_extraction, clips, s3_videos, plain_mc3):
    out, _ = ray_extraction
    for vid, path in [("a", str(clips / "a.mp4")), ("d", f"{s3_videos}/d.mkv"), ("short", str(clips / "short.mp4"))]:
        got = np.load(out / f"{vid}.npy")
        want = plain_features(plain_mc3, path)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5, vid


# ------------------------------------------------------------------------------ resuming (plain loop)


class Killed(RuntimeError):
    pass


def test_a_killed_extraction_resumes_and_redoes_only_what_changed(clips, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["a.mp4", "b.webm", "c.avi", "short.mp4", "empty.webm"]:
        (videos / name).write_bytes((clips / name).read_bytes())
    out = tmp_path / "feats"
    plan = _plan([videos], out)
    run = _in_process(plan)

    def dies_after_first_batch(vids, spec, sink):
        def counting(key, done):
            sink(key, done)
            if plan.output.extracted >= 2:
                raise Killed("the driver died")
        run(vids, spec, counting)

    with pytest.raises(Killed):
        run_extraction(plan, dies_after_first_batch, rows_per_shard=2)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert sorted(first) == ["a.npy", "b.npy"]  # the first batch (input order: a, b)

    again = _plan([videos], out)
    assert [v.video_id for v in again.pending] == ["c", "empty", "short"]  # the error row is tried again
    summary = run_extraction(again, _in_process(again), rows_per_shard=2)
    assert (summary.output.skipped, summary.output.extracted, summary.output.written) == (2, 2, 4)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy") if p.name in first} == first
    assert sorted(_info(out)) == ["a", "b", "c", "short"] and sorted(_errors(out)) == ["empty"]

    # a changed video (other size and time) is extracted again, its old features replaced
    write_clip(videos / "b.webm", 24, SRC_FPS)
    os.utime(videos / "b.webm", ns=(1, 1))
    third = _plan([videos], out)
    assert [v.video_id for v in third.pending] == ["b", "empty"]
    run_extraction(third, _in_process(third), rows_per_shard=2)
    assert np.load(out / "b.npy").shape == (5, 512)  # 24 frames -> 12 at 10 fps -> 5 windows
    assert int(_info(out)["b"]["T"]) == 5 and (out / "a.npy").stat().st_mtime_ns == first["a.npy"]


def test_an_output_of_other_settings_or_with_foreign_files_is_refused(clips, tmp_path):
    out = tmp_path / "feats"
    out.mkdir()
    (out / "a.npy").write_bytes(b"the user's own file")
    with pytest.raises(InputError, match=r"a\.npy: a feature file this extraction did not write is in the way"):
        _plan([clips / "a.mp4"], out)
    assert (out / "a.npy").read_bytes() == b"the user's own file"
    other = tmp_path / "other"
    _plan([clips / "c.avi"], other)
    with pytest.raises(RunStateError, match="other settings.*num_frames"):
        plan_extraction([str(clips / "c.avi")], [], MODEL, fps=FPS, num_frames=6, feat_stride=STRIDE, out=str(other))


def test_shards_on_object_storage_and_a_rerun_that_finds_nothing_to_do(clips, s3_dir, plain_mc3):
    from raytal.data.shards import read_shards

    out = f"{s3_dir}/feats"
    plan = _plan([clips / "c.avi", clips / "short.mp4", clips / "empty.webm"], out, fmt="shards")
    summary = run_extraction(plan, _in_process(plan), rows_per_shard=3)
    assert (summary.output.extracted, len(summary.output.errors)) == (2, 1)
    shards = storage.list_files(out, suffix=".parquet")
    assert len(shards) == 1 and storage.name(shards[0]).startswith("extract-")  # one batch: c, empty (error), short
    videos = {v.video_id: v for v in read_shards(out)}
    assert sorted(videos) == ["c", "short"]
    assert np.abs(videos["c"].features - plain_features(plain_mc3, str(clips / "c.avi"))).max() <= 1e-5
    assert (videos["c"].duration, videos["c"].fps, videos["c"].subset, videos["c"].labeled) == (1.2, 10.0, "unlabeled", False)
    assert "video_id,duration,fps" in storage.read_text(f"{out}/video_info.csv")
    again = _plan([clips / "c.avi", clips / "short.mp4"], out, fmt="shards")
    assert again.pending == [] and again.output.skipped == 2


# ------------------------------------------------------------------ the chain: videos -> dataset -> round


@pytest.fixture(scope="module")
def torchscript_32(tmp_path_factory) -> Path:
    """A user's TorchScript backbone: [B, 3, T, H, W] -> [B, 32] (the tiny dataset's D)."""

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(3, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.proj(x.mean(dim=(2, 3, 4))))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ts") / "pooled.pt"
    torch.jit.script(Pooled()).save(str(path))
    return path


@pytest.fixture(scope="module")
def pool_clips(tmp_path_factory) -> Path:
    """Four unlabeled videos of 4 s (80 frames at 20 fps): at 8 fps, 32 frames, 2 windows of 16 every 16."""
    d = tmp_path_factory.mktemp("pool_videos")
    for j, suffix in enumerate([".mp4", ".webm", ".mkv", ".avi"]):
        write_clip(d / f"pool_{j}{suffix}", 80, SRC_FPS)
    return d


def _job_args(torchscript: Path, *extra: str) -> list[str]:
    return ["--torchscript", str(torchscript), "--crop-size", *map(str, SMALL), "--fps", "8", "--num-frames", "16",
            "--feat-stride", "16", "--in-process", *extra]


def test_videos_to_features_to_dataset_to_a_self_training_round(pool_clips, torchscript_32, tmp_path):
    from raytal.config import load_config
    from raytal.data.index import RunIndex
    from raytal.selftrain.local import LocalBackend
    from raytal.selftrain.rounds import run_selftrain

    feats = tmp_path / "feats"
    assert extract_features.main([str(pool_clips), "--out", str(feats), *_job_args(torchscript_32)]) == 0
    assert [np.load(feats / f"pool_{j}.npy").shape for j in range(4)] == [(2, 32)] * 4
    root = tmp_path / "data"
    assert make_dataset.main(["--preset", "tiny", "--out", str(root), "--unlabeled-features", str(feats),
                              "--video-info", str(feats / "video_info.csv")]) == 0
    cfg = load_config(REPO / "configs" / "tiny_ntc.yaml", [
        f"data.root={root}", f"run.dir={tmp_path / 'run'}", "train.epochs=2", "run.rounds=1", "recipe.min_score=0.05"])
    metrics = run_selftrain(cfg, LocalBackend())
    index = RunIndex.load(str(tmp_path / "run" / "index.json"))
    assert index.count("pool") == 4
    pseudo = metrics["rounds"][1]["pseudo"]
    assert pseudo["videos_in"] == pseudo["rows_out"] == index.count("unlabeled") + 4
    assert len(metrics["rounds"]) == 2 and "average_mAP" in metrics["rounds"][1]["eval"]


def test_extraction_straight_into_a_datasets_pool(pool_clips, torchscript_32, tmp_path):
    from raytal.data.dataset import load_dataset_info
    from raytal.data.shards import read_shards

    root = tmp_path / "data"
    assert make_dataset.main(["--preset", "tiny", "--out", str(root)]) == 0
    yaml_before = (root / "dataset.yaml").read_bytes()
    # a grid other than the dataset's is refused before any work
    assert run_job(extract_features.main, [str(pool_clips), "--dataset", str(root),
                                           *_job_args(torchscript_32, "--feat-stride", "8")]) == 2
    assert not (root / "shards" / "unlabeled").exists() and (root / "dataset.yaml").read_bytes() == yaml_before
    assert extract_features.main([str(pool_clips), "--dataset", str(root), *_job_args(torchscript_32)]) == 0
    info = load_dataset_info(root)
    assert info.unlabeled_shards == "shards/unlabeled"
    pool = list(read_shards(root / info.unlabeled_shards))
    assert sorted(v.video_id for v in pool) == [f"pool_{j}" for j in range(4)]
    assert all(v.subset == "unlabeled" and not v.labeled and v.features.shape == (2, 32) for v in pool)
    assert {(v.fps, v.feat_stride, v.num_frames, v.duration) for v in pool} == {(8.0, 16, 16, 4.0)}
    # the same command again: nothing to do
    assert extract_features.main([str(pool_clips), "--dataset", str(root), *_job_args(torchscript_32)]) == 0
    assert len(list(read_shards(root / info.unlabeled_shards))) == 4
