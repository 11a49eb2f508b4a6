"""Pseudo-label Parquet rows (raytal.data.pseudo_io), the Ray-free stage (raytal.selftrain.pseudo_stage) and
the Ray Data pipeline (raytal.distributed.pseudo_pipeline).

The teacher and labeling stage are fakes defined at module level (so Ray can pickle them): the
pipeline must give, per video, exactly what calling them in-process gives, and put the rows of the k-th
source of its ``LabelSpec`` in ``<out>/shard=<k>`` and nowhere else (training joins a source's shard rows
with that directory only).
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
from raytal.core.video import Video
from raytal.data.index import RunIndex, Source
from raytal.data.pseudo_io import (
    PSEUDO_SCHEMA, join_pseudo_labels, pseudo_row, read_pseudo_labels, read_pseudo_table, source_dir,
)
from raytal.data.shards import list_shards, read_shards, rows_to_videos, videos_to_table, write_shards
from raytal.core.outputs import MANIFEST
from raytal.data.synthetic import class_sets_of, make_world, synthesize_video, tiny_timelines
from raytal.selftrain.spec import InferenceInput, LabelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import pseudolabel as pseudolabel_job  # noqa: E402

D, C = 32, 5


# ------------------------------------------------------------------------------------- fakes


def make_fake_infer():
    """A 'teacher': fixed random linear snippet classifier, built once per actor like a checkpoint."""
    w = np.random.default_rng(7).standard_normal((D, C)).astype(np.float32)

    def infer(videos: list[Video]) -> list[dict]:
        out = []
        for i, v in enumerate(videos):
            if v.features.shape[1] != D:
                raise ValueError(f"teacher expects D={D}, got {v.features.shape[1]}")
            dense = 1.0 / (1.0 + np.exp(-(v.features @ w)))  # [T, C]
            # Which batch the video came in (its size, the video's place in it): the labels name it.
            out.append({"scores": dense.max(axis=0), "dense": {"scores": dense}, "batch": np.array([len(videos), i])})
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
        "origins": [f"batch of {pred['batch'][0]}, #{pred['batch'][1]}"],
        "targets": (dense > 0.5).astype(np.float32),
        "teacher_scores": dense,
        "relaxed": 1,
    }


def build_fake_stages(cfg, checkpoint: str, num_classes: int, context):
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
    return write_shards(_videos(12), out, rows_per_shard=4)


def _file_ids(path: str) -> list[str]:
    return pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist()


def _index_sources(files: list[str]) -> tuple[tuple[str, Source], ...]:
    """Pseudo sources as a run's index makes them: the split's unlabeled videos take some of the ids of
    the training files (the rest are labeled), then the pool's files whole."""
    a, b = _file_ids(files[0]), _file_ids(files[1])
    return (("unlabeled", Source(files[0], (a[0], a[2]), 2)), ("unlabeled", Source(files[1], tuple(b[1:]), 3)),
            ("pool", Source(files[2], None, 4)))


def _spec(sources, out, teacher: str = "ckpt-a") -> LabelSpec:
    return LabelSpec(teacher=teacher, round=1, out_dir=str(out), num_classes=C, setting="semi", sources=tuple(sources))


def _in_process(sources) -> dict[str, dict]:
    """What the fakes give, called by hand on each video of the sources."""
    infer = make_fake_infer()
    return {v.video_id: fake_label_video(v, infer([v])[0])
            for _, src in sources for v in read_shards(src.file, src.ids)}


def _batches(sources, batch_size: int) -> dict[str, str]:
    """The origin each video's label must name: the teacher's batches are ``batch_size`` consecutive videos
    of one source (in file order, the last one shorter), whatever the back-end or Ray's scheduling."""
    out = {}
    for _, src in sources:
        ids = list(src.ids or _file_ids(src.file))
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            out.update({vid: f"batch of {len(batch)}, #{i}" for i, vid in enumerate(batch)})
    return out


def _origins(rec: dict) -> dict[str, str]:
    return {vid: r.origins[0] for vid, r in rec.items()}


def _run(spec: LabelSpec, pool_size: int = 2):
    from raytal.distributed.pseudo_pipeline import run_pseudolabel_pipeline

    return run_pseudolabel_pipeline(spec, make_infer=make_fake_infer, label_video=fake_label_video, batch_size=2,
                                    pool_size=pool_size, actor_cpus=0.5, use_gpu=False)


def _assert_partitioned_by_source(out: Path, sources, readable: set[int] | None = None) -> None:
    """``out`` holds one directory per readable source, ``shard=<k>``, with exactly the rows of source k
    (all its listed ids or all its file's rows), and nothing else (but the manifest of a job's output folder)."""
    readable = set(range(len(sources))) if readable is None else readable
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST) == sorted(f"shard={k}" for k in readable)
    for k in readable:
        _, src = sources[k]
        assert sorted(read_pseudo_labels(source_dir(str(out), k))) == sorted(src.ids or _file_ids(src.file))


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


def test_pseudo_rows_round_trip_and_join(tmp_path):
    targets = np.array([[0.0, 1.0], [0.5, 0.25], [1.0, 0.0]])  # exact in float16
    scores = np.array([[0.1, 0.9], [0.3, 0.7], [0.8, 0.2]])
    rows = [
        pseudo_row("a", 2, "ck", [[1.0, 3.0], [4.0, 5.5]], [1, 0], [0.9, 0.6], [1.0, 0.5], ["rank", "icd"],
                   targets=targets, teacher_scores=scores, relaxed=2),
        pseudo_row("b", 2, "ck", [], [], [], [], [], error="NaN features"),
    ]
    # Rows of two sources: a directory reads its own source's rows, the round's directory reads them all.
    _write_rows(rows[:1], tmp_path / "p" / "shard=0" / "x.parquet")
    _write_rows(rows[1:], tmp_path / "p" / "shard=1" / "x.parquet")
    assert sorted(read_pseudo_labels(tmp_path / "p" / "shard=0")) == ["a"]
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

    def shard_rows(vid: str, T: int) -> pa.Table:
        return videos_to_table([Video(vid, "train", 10.0, 30.0, 16, 16, features=np.zeros((T, 4), np.float32),
                                      segments=np.array([[0.0, 9.0]]), labels=np.array([4]), labeled=True)],
                               check=False)

    labels = read_pseudo_table(str(tmp_path / "p"))
    out = rows_to_videos(join_pseudo_labels(pa.concat_tables([shard_rows("a", 3), shard_rows("b", 3)]), labels))
    assert [v.video_id for v in out] == ["a"]  # b's row is an error row
    v = out[0]
    # the ground truth [0, 9] of class 4 is replaced by the pseudo labels, with their weights and dense arrays
    np.testing.assert_array_equal(v.segments, [[1.0, 3.0], [4.0, 5.5]])
    np.testing.assert_array_equal(v.labels, [1, 0])
    np.testing.assert_array_equal(v.weights, [1.0, 0.5])
    np.testing.assert_array_equal(v.targets, targets)
    np.testing.assert_allclose(v.teacher_scores, scores, rtol=1e-6)
    with pytest.raises(DataError, match="snippets"):
        join_pseudo_labels(shard_rows("a", 4), labels)  # targets have T=3
    with pytest.raises(DataError, match="no pseudo-label row"):
        join_pseudo_labels(shard_rows("zzz", 3), labels)


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
def test_pipeline_matches_in_process_partitions_by_source_and_is_idempotent_for_any_pool(
        ray_session, clean_shards, untrained_teacher, tmp_path):
    from raytal.selftrain.pseudo_stage import label_in_process

    from raytal.config import load_config
    from raytal.selftrain.rounds import label_into, pseudo_output, run_output

    sources = _index_sources(clean_shards)
    run = tmp_path / "run"
    out = run / "round_1" / "pseudo"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run:\n  dir: {run}\nray:\n  actor_pool_size: 1\n  infer_batch_size: 3\n")
    run_output(load_config(cfg)).claim().release()  # a run directory, as the main job makes it
    with pseudo_output(str(out)) as output:  # the main job's pass, replacing the folder's labels through its manifest
        s2 = label_into(output, _spec(sources, out), lambda spec: _run(spec, pool_size=2))
    rec2 = read_pseudo_labels(out)
    # 2 + 3 + 4 = 9 videos in, one row each; each fake label has exactly 1 instance and 1 relaxed LP.
    assert (s2.videos_in, s2.rows_out, s2.num_errors, s2.usable, s2.relaxed) == (9, 9, 0, 9, 9)
    assert sum(s2.instances_per_class.values()) == 9 and s2.file_errors == []
    _assert_partitioned_by_source(out, sources)
    # Second run through the CLI with 1 actor, on the sources of the run's index (index.json, as the main job
    # saves it), into the same directory (the default <run>/round_1/pseudo): must overwrite, not append.
    RunIndex(str(tmp_path), "semi", C, D, {"unlabeled": [s for _, s in sources[:2]], "pool": [sources[2][1]]}).save(
        str(run / "index.json"))
    argv = ["--config", str(cfg), "--checkpoint", str(untrained_teacher), "--round", "1", "--stages",
            "test_pseudolabel_pipeline:build_fake_stages"]
    assert pseudolabel_job.main(argv) == 0
    rec1 = read_pseudo_labels(out)
    _assert_partitioned_by_source(out, sources)
    # The in-process back-end's stage (no Ray) on the same spec.
    s0 = label_in_process(_spec(sources, tmp_path / "local"), make_fake_infer, fake_label_video, batch_size=2,
                          torch_threads=1)
    assert dataclasses.replace(s0, out_dir="", elapsed=0) == dataclasses.replace(s2, out_dir="", elapsed=0)
    rec0 = read_pseudo_labels(tmp_path / "local")
    _assert_partitioned_by_source(tmp_path / "local", sources)
    expected = _in_process(sources)
    assert sorted(rec0) == sorted(rec1) == sorted(rec2) == sorted(expected)
    # The teacher saw the same batches on Ray (pool of 2) as in process: runs of batch_size videos of one
    # source, never videos of two sources together. Source 1's 3 videos in batches of 2: its last one alone.
    assert _origins(rec2) == _origins(rec0) == _batches(sources, 2)
    assert _origins(rec2)[_file_ids(clean_shards[1])[3]] == "batch of 1, #0"
    assert _origins(rec1) == _batches(sources, 3)  # the CLI's ray.infer_batch_size
    for vid, e in expected.items():
        for rec, teacher in ((rec0, "ckpt-a"), (rec1, str(untrained_teacher)), (rec2, "ckpt-a")):
            r = rec[vid]
            assert r.round == 1 and r.teacher == teacher and r.error is None
            np.testing.assert_allclose(r.segments, e["segments"])
            np.testing.assert_array_equal(r.labels, e["labels"])
            np.testing.assert_allclose(r.scores, e["scores"], rtol=1e-6)
            np.testing.assert_array_equal(r.targets, e["targets"])  # 0/1 exact in float16
            np.testing.assert_allclose(r.teacher_scores, e["teacher_scores"], rtol=1e-6)
        # Same stage code in every back-end, whatever the pool or batch size: bit-identical rows.
        np.testing.assert_array_equal(rec1[vid].teacher_scores, rec2[vid].teacher_scores)
        np.testing.assert_array_equal(rec0[vid].teacher_scores, rec2[vid].teacher_scores)


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
    raw = Path(shards_c[0]).read_bytes()
    Path(shards_c[0]).write_bytes(raw[: len(raw) // 2])  # truncated: the footer (and the ids) are gone
    sources = [("pool", Source(f, None, n)) for f, n in zip(shards_a + shards_b + shards_c, (4, 4, 3))]

    s = _run(_spec(sources, tmp_path / "out"), pool_size=2)
    rec = read_pseudo_labels(tmp_path / "out")
    # Readable: 4 (shard a) + 4 (shard b) = 8 rows; errors: exactly the 3 poisoned videos of shard b.
    assert (s.videos_in, s.rows_out, s.num_errors, s.usable) == (8, 8, 3, 5)
    assert sorted(rec) == sorted([v.video_id for v in good_a] + [good_b.video_id, "poison_nan", "poison_dim",
                                                                   "poison_label"])
    errs = {vid for vid, r in rec.items() if r.error is not None}
    assert errs == {"poison_nan", "poison_dim", "poison_label"}
    assert "NaN" in rec["poison_nan"].error
    assert "D=32" in rec["poison_dim"].error  # the teacher's own complaint, isolated to this video
    assert "exploded" in rec["poison_label"].error
    assert [vid for vid, _ in s.first_errors] == ["poison_dim", "poison_label", "poison_nan"]
    assert len(s.file_errors) == 1 and s.file_errors[0][0] == shards_c[0]
    # The good video sharing shard b (and its inference batch) with the poison is labeled as usual.
    assert len(rec[good_b.video_id].segments) == 1 and rec[good_b.video_id].error is None
    # Error rows stay with their source; the unreadable source has no directory at all.
    _assert_partitioned_by_source(tmp_path / "out", sources, readable={0, 1})


# ------------------------------------------------------------------ the stage (no Ray)


def _input_batch(shard: str, part: str = "unlabeled", k: int = 0) -> pa.Table:
    from raytal.selftrain.pseudo_stage import input_blocks

    (batch,) = list(input_blocks(InferenceInput(k, part, shard, None, 4), 4))
    return batch


def test_fused_stage_writes_the_rows_of_inference_then_labeling(tmp_path):
    """CPU actors label inside the inference actor (InferLabelStage); GPU pools hand predictions to
    label_batch tasks. Same rows, in the same order, error rows included."""
    from raytal.selftrain.pseudo_stage import InferLabelStage, InferStage, label_batch

    vids = _videos(4)
    nan_v = dataclasses.replace(vids[1], video_id="poison_nan", features=vids[1].features.copy())
    nan_v.features[0, 0] = np.nan
    wrong_d = dataclasses.replace(vids[2], video_id="poison_dim", features=vids[2].features[:, :31].copy())
    bad_label = dataclasses.replace(vids[3], video_id="poison_label")
    shard = write_shards([vids[0], nan_v, wrong_d, bad_label], tmp_path, rows_per_shard=4, check=False)[0]
    batch = _input_batch(shard, k=3)
    labeling = {"label_video": fake_label_video, "round": 3, "teacher": "ck"}
    split = label_batch(InferStage(make_fake_infer, D, 1, "semi")(batch), **labeling)
    fused = InferLabelStage(make_fake_infer, D, 1, "semi", **labeling)(batch)
    assert fused.equals(split)
    rows = fused.to_pylist()
    assert [r["video_id"] for r in rows] == ["poison_nan", "poison_dim", vids[0].video_id, "poison_label"]
    assert [r["error"] is None for r in rows] == [False, False, True, False]
    assert "D = 31" in rows[1]["error"] and "exploded" in rows[3]["error"]
    assert {r["shard"] for r in rows} == {3}  # every row, error rows included, names its source
    # The labeling stage never sees the hidden ground truth the unlabeled shard carries (for quality metrics).
    assert len(vids[0].segments) > 0
    seen = []
    InferLabelStage(make_fake_infer, D, 1, "semi", label_video=lambda v, p: seen.append(v) or fake_label_video(v, p),
                    round=3, teacher="ck")(batch)
    assert [len(v.segments) for v in seen] == [0, 0] and not any(v.labeled for v in seen)


def test_inputs_stream_in_blocks_of_the_listed_ids_tagged_with_their_source(clean_shards):
    from raytal.selftrain.pseudo_stage import input_blocks

    ids = _file_ids(clean_shards[1])
    blocks = list(input_blocks(InferenceInput(5, "pool", clean_shards[1], (ids[3], ids[0], ids[2]), 3), 2))
    # 3 listed ids of a 4-row file, in file order, in batches of 2 of the listed videos (not of the file's
    # rows: those would be [ids 0] and [ids 2, 3]); the unlisted video is never read.
    assert [b.column("video_id").to_pylist() for b in blocks] == [[ids[0], ids[2]], [ids[3]]]
    table = pa.concat_tables(blocks)
    assert set(table.column("shard").to_pylist()) == {5} and set(table.column("part").to_pylist()) == {"pool"}


def test_pool_starts_full_only_with_room_for_the_read_tasks():
    from raytal.distributed.pseudo_pipeline import initial_pool_size

    # 2 actors x 0.5 CPU + one 0.5-CPU read/write task = 2.0 CPUs needed.
    assert initial_pool_size(2, 0.5, 0.5, False, {"CPU": 2.0}) == 2
    # Another round already holds 1 CPU of a 2-CPU Ray: starting 2 actors would leave 0 CPU for reads.
    assert initial_pool_size(2, 0.5, 0.5, False, {"CPU": 1.0}) == 1
    assert initial_pool_size(3, 1.0, 0.5, False, {"CPU": 3.5}) == 3
    assert initial_pool_size(3, 1.0, 0.5, False, {}) == 1
    # GPU actors start as a full pool even before the GPU nodes exist: pending actors bring them up.
    assert initial_pool_size(4, 0.5, 0.5, True, {"CPU": 8.0}) == 4


def test_input_precheck_reports_unreadable_files_and_takes_uris(clean_shards, tmp_path):
    from raytal.selftrain.pseudo_stage import check_inputs

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(Path(clean_shards[0]).read_bytes()[:100])  # a file cut after 100 bytes: no footer
    not_a_shard = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), not_a_shard)
    uri = "file://" + str(Path(clean_shards[1]).resolve())
    ids = tuple(_file_ids(clean_shards[0])[:2])
    sources = [("unlabeled", Source(clean_shards[0], ids, 2)), ("pool", Source(uri, None, 4)),
               ("pool", Source(str(broken), None, 4)), ("pool", Source(str(not_a_shard), None, 2))]
    check = check_inputs(_spec(sources, tmp_path / "out"))
    assert check.good == [InferenceInput(0, "unlabeled", clean_shards[0], ids, 2), InferenceInput(1, "pool", uri, None, 4)]
    assert check.videos == 2 + 4
    # Block sizing reads sizes off the footers: a source taking 2 of a file's 4 rows counts half the file.
    size = [sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
            for md in (pq.ParquetFile(f).metadata for f in clean_shards[:2])]
    assert check.nbytes == size[0] * 2 // 4 + size[1]
    feature_bytes = sum(v.features.nbytes for v in read_shards(clean_shards[:2]))
    assert feature_bytes < sum(size) < 2 * feature_bytes  # the float32 features are most of a shard's size
    assert [p for p, _ in check.errors] == [str(broken), str(not_a_shard)]
    assert all("truncated or corrupt" in reason for _, reason in check.errors)
    assert "column missing" in check.errors[1][1]
    shard_dir = "file://" + str(Path(clean_shards[0]).resolve().parent)
    listed = [Path(f.split("://", 1)[-1]) for f in list_shards(shard_dir)]
    assert listed == [Path(f).resolve() for f in clean_shards]


def test_summary_counts_rows_errors_and_usable_rows_per_file(tmp_path):
    from raytal.selftrain.pseudo_stage import summarize_output

    # usable = not an error row and something to train on: instances, or dense targets / teacher scores.
    rows = [
        pseudo_row("with_instances", 1, "t", [[1.0, 2.0]], [3], [0.9], [1.0], ["x"], relaxed=2),
        pseudo_row("dense_only", 1, "t", [], [], [], [], [], targets=np.ones((2, C))),
        pseudo_row("empty", 1, "t", [], [], [], [], []),
        pseudo_row("z_failed", 1, "t", [], [], [], [], [], error="boom"),
        pseudo_row("a_failed", 1, "t", [], [], [], [], [], error="bang"),
    ]
    _write_rows(rows[:3], tmp_path / "shard=0" / "a.parquet")
    _write_rows(rows[3:], tmp_path / "shard=1" / "b.parquet")
    n, errors, usable, reasons, per_class, relaxed = summarize_output(str(tmp_path))
    assert (n, errors, usable, relaxed) == (5, 2, 2, 2)
    assert reasons == [("a_failed", "bang"), ("z_failed", "boom")] and per_class == {3: 1}

