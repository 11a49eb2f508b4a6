"""Pseudo-label Parquet rows (raytal.data.pseudo_io) and the Ray Data pipeline (raytal.distributed.pseudolabel).

The teacher and labeling stage are fakes defined at module level (so Ray can pickle them): the
pipeline must give, per video, exactly what calling them in-process gives.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytal.core.errors import DataError
from raytal.data.pseudo_io import PSEUDO_SCHEMA, apply_pseudo_labels, pseudo_row, read_pseudo_labels
from raytal.data.shards import read_shards, write_shards
from raytal.data.synthetic import class_sets_of, make_world, synthesize_video, tiny_timelines
from raytal.core.video import Video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import pseudolabel as pseudolabel_job  # noqa: E402

D, C = 32, 5


# ------------------------------------------------------------------------------------- fakes


def make_fake_infer():
    """A 'teacher': fixed random linear snippet classifier, built once per actor like a checkpoint."""
    w = np.random.default_rng(7).standard_normal((D, C)).astype(np.float32)

    def infer(videos: list[Video]) -> list[dict]:
        out = []
        for v in videos:
            if v.features.shape[1] != D:
                raise ValueError(f"teacher expects D={D}, got {v.features.shape[1]}")
            dense = 1.0 / (1.0 + np.exp(-(v.features @ w)))  # [T, C]
            out.append({"scores": dense.max(axis=0), "dense": {"scores": dense}})
        return out

    return infer


def fake_label_video(video: Video, pred: dict) -> dict:
    """One instance per video: the middle half, labeled with the top video-level class."""
    if video.video_id.startswith("poison_label"):
        raise RuntimeError("labeling stage exploded")
    c = int(np.argmax(pred["scores"]))
    dense = pred["dense"]["scores"]
    return {
        "segments": np.array([[0.25 * video.duration, 0.75 * video.duration]]),
        "labels": np.array([c]),
        "scores": np.array([pred["scores"][c]]),
        "weights": np.array([0.5]),
        "origins": ["fake"],
        "targets": (dense > 0.5).astype(np.float32),
        "teacher_scores": dense,
        "relaxed": 1,
    }


def build_fake_stages(cfg, checkpoint: str):
    """The --stages hook of jobs/pseudolabel.py for the fakes above."""
    return make_fake_infer, fake_label_video


# -------------------------------------------------------------------------------------- data


def _videos(n: int) -> list[Video]:
    _, timelines = tiny_timelines(seed=0, num_videos=n)
    world = make_world(C, D, class_sets_of(timelines), seed=0)
    return [dataclasses.replace(synthesize_video(world, v, 0, j)[0], labeled=False) for j, v in enumerate(timelines)]


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("clean")
    return [str(p) for p in write_shards(_videos(12), out, rows_per_shard=4)]


def _in_process(shard_files: list[str]) -> dict[str, dict]:
    infer = make_fake_infer()
    return {v.video_id: fake_label_video(v, infer([v])[0]) for v in read_shards(shard_files)}


def _run(shards, out, pool_size=2, **kw):
    from raytal.distributed.pseudolabel import run_pseudolabel_pipeline

    return run_pseudolabel_pipeline(
        shards, str(out), make_infer=make_fake_infer, label_video=fake_label_video, round=1, teacher="ckpt-a",
        batch_size=2, pool_size=pool_size, actor_cpus=0.5, use_gpu=False, **kw,
    )


# ------------------------------------------------------------------------------- pseudo_io


def test_pseudo_row_rejects_inconsistent_labels():
    ok = dict(segments=[[1.0, 2.0]], labels=[0], scores=[0.9], weights=[1.0], origins=["x"])
    with pytest.raises(ValueError, match="equal lengths"):
        pseudo_row("v", 1, "t", **{**ok, "labels": [0, 1]})
    with pytest.raises(ValueError, match="end <= start"):
        pseudo_row("v", 1, "t", **{**ok, "segments": [[2.0, 2.0]]})
    with pytest.raises(ValueError, match="NaN"):
        pseudo_row("v", 1, "t", **{**ok, "scores": [np.nan]})
    with pytest.raises(ValueError, match="targets"):
        pseudo_row("v", 1, "t", **ok, targets=np.zeros(3))


def _write_rows(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), path)


def test_pseudo_rows_round_trip_and_apply(tmp_path):
    targets = np.array([[0.0, 1.0], [0.5, 0.25], [1.0, 0.0]])  # exact in float16
    scores = np.array([[0.1, 0.9], [0.3, 0.7], [0.8, 0.2]])
    rows = [
        pseudo_row("a", 2, "ck", [[1.0, 3.0], [4.0, 5.5]], [1, 0], [0.9, 0.6], [1.0, 0.5], ["rank", "icd"],
                   targets=targets, teacher_scores=scores, relaxed=2),
        pseudo_row("b", 2, "ck", [], [], [], [], [], error="NaN features"),
    ]
    _write_rows(rows, tmp_path / "p" / "x.parquet")
    rec = read_pseudo_labels(tmp_path / "p")
    assert sorted(rec) == ["a", "b"]
    a = rec["a"]
    np.testing.assert_array_equal(a.segments, [[1.0, 3.0], [4.0, 5.5]])
    np.testing.assert_array_equal(a.labels, [1, 0])
    np.testing.assert_allclose(a.scores, [0.9, 0.6], rtol=1e-6)  # stored float32
    assert list(a.origins) == ["rank", "icd"] and a.relaxed == 2 and a.error is None
    np.testing.assert_array_equal(a.targets, targets)
    np.testing.assert_allclose(a.teacher_scores, scores, rtol=1e-6)
    assert rec["b"].error == "NaN features" and len(rec["b"].segments) == 0

    def video(vid: str, T: int) -> Video:
        return Video(vid, "train", 10.0, 30.0, 16, 16, features=np.zeros((T, 4), np.float32),
                     segments=np.array([[0.0, 9.0]]), labels=np.array([4]), labeled=True)

    errors: list = []
    out = apply_pseudo_labels([video("a", 3), video("b", 3)], rec, errors)
    assert [v.video_id for v in out] == ["a"] and errors == [("b", "NaN features")]
    v = out[0]
    assert v.labeled is False  # the ground truth [0, 9] of class 4 is replaced by the pseudo labels
    np.testing.assert_array_equal(v.segments, [[1.0, 3.0], [4.0, 5.5]])
    np.testing.assert_array_equal(v.weights, [1.0, 0.5])
    with pytest.raises(DataError, match="snippets"):
        apply_pseudo_labels([video("a", 4)], rec)  # targets have T=3
    with pytest.raises(DataError, match="no pseudo-label row"):
        apply_pseudo_labels([video("zzz", 3)], rec)


def test_duplicate_video_across_files_is_refused(tmp_path):
    row = pseudo_row("a", 1, "ck", [], [], [], [], [])
    _write_rows([row], tmp_path / "p" / "1.parquet")
    _write_rows([row], tmp_path / "p" / "2.parquet")
    with pytest.raises(DataError, match="duplicate"):
        read_pseudo_labels(tmp_path / "p")


# -------------------------------------------------------------------------------- pipeline


@pytest.mark.ray
def test_local_ray_is_loopback_only_and_ensure_ray_idempotent(ray_session):
    import os

    import ray

    from raytal.distributed.session import ensure_ray

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the session uses an external cluster (RAY_ADDRESS)")
    node = ray.get_runtime_context().get_node_id()
    ensure_ray()  # already connected: a no-op, not a second Ray
    assert ray.get_runtime_context().get_node_id() == node
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


@pytest.mark.ray
def test_pipeline_matches_in_process_and_is_idempotent_for_any_pool(ray_session, clean_shards, tmp_path):
    out = tmp_path / "round_1" / "pseudo"
    s2 = _run(clean_shards, out, pool_size=2)
    rec2 = read_pseudo_labels(out)
    # 12 videos in, one row each; each fake label has exactly 1 instance and 1 relaxed LP.
    assert (s2.videos_in, s2.rows_out, s2.num_errors, s2.relaxed) == (12, 12, 0, 12)
    assert sum(s2.instances_per_class.values()) == 12 and s2.file_errors == []
    # Second run through the CLI with 1 actor, into the same directory: must overwrite, not append.
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("ray:\n  actor_pool_size: 1\n  infer_batch_size: 3\n")
    rc = pseudolabel_job.main(["--config", str(cfg), "--checkpoint", "ckpt-a", "--round", "1", "--stages",
                               "test_pseudolabel_pipeline:build_fake_stages", "--shards", *clean_shards,
                               "--out", str(out)])
    assert rc == 0
    rec1 = read_pseudo_labels(out)
    expected = _in_process(clean_shards)
    assert sorted(rec1) == sorted(rec2) == sorted(expected)
    for vid, e in expected.items():
        for rec in (rec1, rec2):
            r = rec[vid]
            assert r.round == 1 and r.teacher == "ckpt-a" and r.error is None
            np.testing.assert_allclose(r.segments, e["segments"])
            np.testing.assert_array_equal(r.labels, e["labels"])
            np.testing.assert_allclose(r.scores, e["scores"], rtol=1e-6)
            np.testing.assert_array_equal(r.targets, e["targets"])  # 0/1 exact in float16
            np.testing.assert_allclose(r.teacher_scores, e["teacher_scores"], rtol=1e-6)
        np.testing.assert_array_equal(rec1[vid].teacher_scores, rec2[vid].teacher_scores)


@pytest.mark.ray
def test_poisoned_inputs_become_error_rows(ray_session, tmp_path):
    vids = _videos(11)
    good_a, rest = vids[:4], vids[4:]
    nan_v = dataclasses.replace(rest[0], video_id="poison_nan", features=rest[0].features.copy())
    nan_v.features[3, 5] = np.nan
    wrong_d = dataclasses.replace(rest[1], video_id="poison_dim", features=rest[1].features[:, :31].copy())
    bad_label = dataclasses.replace(rest[2], video_id="poison_label")
    good_b = rest[3]
    shards_a = write_shards(good_a, tmp_path / "a", rows_per_shard=4)
    shards_b = write_shards([good_b, nan_v, wrong_d, bad_label], tmp_path / "b", rows_per_shard=4, check=False)
    shards_c = write_shards(rest[4:7], tmp_path / "c", rows_per_shard=3)
    raw = shards_c[0].read_bytes()
    shards_c[0].write_bytes(raw[: len(raw) // 2])  # truncated: the footer (and the ids) are gone
    files = [str(p) for p in shards_a + shards_b + shards_c]

    s = _run(files, tmp_path / "out", pool_size=2)
    rec = read_pseudo_labels(tmp_path / "out")
    # Readable: 4 (shard a) + 4 (shard b) = 8 rows; errors: exactly the 3 poisoned videos of shard b.
    assert (s.videos_in, s.rows_out, s.num_errors) == (8, 8, 3)
    assert sorted(rec) == sorted([v.video_id for v in good_a] + [good_b.video_id, "poison_nan", "poison_dim",
                                                                   "poison_label"])
    errs = {vid for vid, r in rec.items() if r.error is not None}
    assert errs == {"poison_nan", "poison_dim", "poison_label"}
    assert "NaN" in rec["poison_nan"].error
    assert "D=32" in rec["poison_dim"].error  # the teacher's own complaint, isolated to this video
    assert "exploded" in rec["poison_label"].error
    assert [vid for vid, _ in s.first_errors] == ["poison_dim", "poison_label", "poison_nan"]
    assert len(s.file_errors) == 1 and s.file_errors[0][0] == str(shards_c[0])
    # The good video sharing shard b (and its inference batch) with the poison is labeled as usual.
    assert len(rec[good_b.video_id].segments) == 1 and rec[good_b.video_id].error is None


def test_fused_stage_writes_the_rows_of_inference_then_labeling(tmp_path):
    """CPU actors label inside the inference actor (InferLabelStage); GPU pools hand predictions to
    label_batch tasks. Same rows, in the same order, error rows included."""
    from raytal.distributed.pseudolabel import InferLabelStage, InferStage, label_batch

    vids = _videos(4)
    nan_v = dataclasses.replace(vids[1], video_id="poison_nan", features=vids[1].features.copy())
    nan_v.features[0, 0] = np.nan
    wrong_d = dataclasses.replace(vids[2], video_id="poison_dim", features=vids[2].features[:, :31].copy())
    bad_label = dataclasses.replace(vids[3], video_id="poison_label")
    shard = write_shards([vids[0], nan_v, wrong_d, bad_label], tmp_path, rows_per_shard=4, check=False)[0]
    batch = pq.read_table(shard)
    labeling = {"label_video": fake_label_video, "round": 3, "teacher": "ck"}
    split = label_batch(InferStage(make_fake_infer, D, 1)(batch), **labeling)
    fused = InferLabelStage(make_fake_infer, D, 1, **labeling)(batch)
    assert fused.equals(split)
    rows = fused.to_pylist()
    assert [r["video_id"] for r in rows] == ["poison_nan", "poison_dim", vids[0].video_id, "poison_label"]
    assert [r["error"] is None for r in rows] == [False, False, True, False]
    assert "D = 31" in rows[1]["error"] and "exploded" in rows[3]["error"]
    # The labeling stage never sees the hidden ground truth the unlabeled shard carries (for quality metrics).
    assert len(vids[0].segments) > 0
    seen = []
    InferLabelStage(make_fake_infer, D, 1, label_video=lambda v, p: seen.append(v) or fake_label_video(v, p),
                    round=3, teacher="ck")(batch)
    assert [len(v.segments) for v in seen] == [0, 0] and not any(v.labeled for v in seen)


def test_pool_starts_full_only_with_room_for_the_read_tasks():
    from raytal.distributed.pseudolabel import initial_pool_size

    # 2 actors x 0.5 CPU + one 0.5-CPU read/write task = 2.0 CPUs needed.
    assert initial_pool_size(2, 0.5, 0.5, False, {"CPU": 2.0}) == 2
    # Another round already holds 1 CPU of a 2-CPU Ray: starting 2 actors would leave 0 CPU for reads.
    assert initial_pool_size(2, 0.5, 0.5, False, {"CPU": 1.0}) == 1
    assert initial_pool_size(3, 1.0, 0.5, False, {"CPU": 3.5}) == 3
    assert initial_pool_size(3, 1.0, 0.5, False, {}) == 1
    # GPU actors start as a full pool even before the GPU nodes exist: pending actors bring them up.
    assert initial_pool_size(4, 0.5, 0.5, True, {"CPU": 8.0}) == 4


def test_blocks_hold_a_few_batches_and_every_actor_gets_several():
    from raytal.distributed.pseudolabel import block_rows

    assert block_rows(1000, 8, 2) == 32  # 4 batches of 8
    assert block_rows(180, 8, 2) == 23  # ceil(180 / (4 blocks x 2 actors))
    assert block_rows(29, 8, 2) == 4  # a tiny round still feeds both actors: 8 blocks
    assert block_rows(3, 8, 4) == 1 and block_rows(0, 8, 2) == 1


def test_shard_precheck_reports_unreadable_files_and_takes_uris(clean_shards, tmp_path):
    from raytal.distributed.pseudolabel import check_shard_files, list_shard_files

    broken = tmp_path / "broken.parquet"
    raw = Path(clean_shards[0]).read_bytes()
    broken.write_bytes(raw[:100])  # a file cut after 100 bytes: no footer
    not_a_shard = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), not_a_shard)
    uri = "file://" + str(Path(clean_shards[1]).resolve())
    good, count, nbytes, bad = check_shard_files([clean_shards[0], uri, str(broken), str(not_a_shard)])
    assert good == [clean_shards[0], uri] and count == 4 + 4  # 4 rows per clean shard
    feature_bytes = sum(v.features.nbytes for v in read_shards(clean_shards[:2]))
    assert feature_bytes < nbytes < 2 * feature_bytes  # the float32 features are most of a shard's size
    assert [p for p, _ in bad] == [str(broken), str(not_a_shard)]
    assert "video_id" in bad[1][1] or "missing" in bad[1][1]
    shard_dir = "file://" + str(Path(clean_shards[0]).resolve().parent)
    listed = [Path(f.split("://", 1)[1]) for f in list_shard_files(shard_dir)]
    assert listed == [Path(f).resolve() for f in clean_shards]
