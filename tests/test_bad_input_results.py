"""Results that looked fine and were not, internal errors and Tune spaces (issue 31), through the real jobs.

Official-format predictions naming a video twice, ``evaluate.py`` without ``--subset`` scoring every video of
the ground truth, ``compare.py`` averaging runs of different recipes or datasets as seeds, a ``--video-info``
duration that clips detections, a video given twice to ``predict.py``; an unreachable S3 endpoint, refused
credentials, an output below a regular file, a subset without annotations; Tune spaces that Ray would only
have failed on. Each runs a job's ``run_job(main, argv)`` in this process (``_run``: no traceback, the message
recorded for docs/reliability.md). The config-text cases run as real subprocesses in test_bad_input_config.py.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from raytal.core import storage

from test_bad_input import REPO
from test_bad_input_runs import FAST, _expect, _run

CONFIG = str(REPO / "configs" / "tiny_npl.yaml")
TUNE = str(REPO / "configs" / "tune_tiny_npl.yaml")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from raytal.cli import run_job

    from test_bad_input import _job

    out = tmp_path_factory.mktemp("data") / "tiny"
    assert run_job(_job("make_dataset").main, ["--preset", "tiny", "--num-videos", "12", "--out", str(out)]) == 0
    return out


def _predict(tiny: Path, teacher: Path | str, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--set", f"data.root={tiny}", "--checkpoint", str(teacher), "--in-process", *extra]


# ------------------------------------------------------------------------ official-format predictions


def _official_gt(folder: Path) -> Path:
    """ActivityNet's dialect: 2 validation videos, 2 training videos, 1 testing video without annotations."""
    def video(subset: str, *segments: tuple[float, float]) -> dict:
        return {"subset": subset, "duration": 10.0, "annotations": [{"label": "Jump", "segment": list(s)}
                                                                     for s in segments]}

    db = {"a": video("validation", (1, 3)), "b": video("validation", (4, 6)), "c": video("training", (2, 5)),
          "e": video("training", (2, 5)), "t": video("testing")}
    path = folder / "gt.json"
    path.write_text(json.dumps({"taxonomy": [{"nodeName": "Root", "parentName": None},
                                             {"nodeName": "Jump", "parentName": "Root"}], "database": db}))
    return path


def _detections(**videos: list[tuple[float, float]]) -> str:
    return json.dumps({"results": {v: [{"label": "Jump", "segment": list(s), "score": 0.9} for s in segs]
                                   for v, segs in videos.items()}})


def test_results_naming_a_video_twice_are_refused(tmp_path, capsys):
    # The issue: the later entry silently won (here it erased video a's detection: 50 % instead of 100 %).
    gt = _official_gt(tmp_path)
    text = _detections(a=[(1, 3)], b=[(4, 6)])[:-2] + ', "a": []}}'
    (tmp_path / "p.json").write_text(text)
    rc, _, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json"), "--subset", "validation"],
                      capsys)
    _expect(rc, err, 2, "p.json: video 'a': field 'results': listed twice, as entries 1 and 3 of 'results'")


def test_without_subset_the_subset_the_predictions_cover_is_scored(tmp_path, capsys):
    # The issue: every ground-truth video was scored, so perfect validation predictions scored 50 % here
    # (32 % on THUMOS14's file), with no warning.
    gt = _official_gt(tmp_path)
    (tmp_path / "p.json").write_text(_detections(a=[(1, 3)], b=[(4, 6)]))
    rc, out, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json"), "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["average_mAP"] == pytest.approx(1.0)
    assert "note: scoring subset 'validation' (2 videos), the one the predictions cover" in err
    rc, out, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json"), "--json", "--all-subsets"],
                        capsys)
    assert rc == 0, err
    assert json.loads(out)["average_mAP"] == pytest.approx(0.5)  # 2 of the 4 annotated segments, asked for


def test_predictions_covering_several_subsets_are_refused_naming_the_counts(tmp_path, capsys):
    gt = _official_gt(tmp_path)
    (tmp_path / "p.json").write_text(_detections(a=[(1, 3)], c=[(2, 5)]))
    rc, _, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json")], capsys)
    _expect(rc, err, 2, "the predictions name videos of several subsets of the ground truth ('testing': 0 of 1 "
                        "videos, 'training': 1 of 2 videos, 'validation': 1 of 2 videos): pass --subset NAME")


@pytest.mark.parametrize("subset", [["--subset", "testing"], []], ids=["--subset testing", "inferred"])
def test_a_subset_without_annotations_is_an_error_not_an_internal_one(tmp_path, capsys, subset):
    gt = _official_gt(tmp_path)
    (tmp_path / "p.json").write_text(_detections(t=[(1, 3)]))
    rc, _, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json"), *subset], capsys)
    _expect(rc, err, 2, "gt.json: subset 'testing' has no annotated segment to score against")


def test_videos_a_results_file_could_not_predict_are_said(tmp_path, capsys):
    gt = _official_gt(tmp_path)
    results = json.loads(_detections(a=[(1, 3)], b=[]))
    results["errors"] = {"b": "feature file missing"}
    (tmp_path / "p.json").write_text(json.dumps(results))
    rc, _, err = _run("evaluate", ["--gt", str(gt), "--pred", str(tmp_path / "p.json")], capsys)
    assert rc == 0, err
    assert "1 video(s) could not be predicted (listed under 'errors'" in err


# ---------------------------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    from raytal.cli import run_job

    from test_bad_input import _job

    run = tmp_path_factory.mktemp("runs") / "exp_s0"
    argv = ["--config", CONFIG, "--set", f"data.root={tiny}", "--set", f"run.dir={run}", *FAST]
    assert run_job(_job("train").main, argv) == 0
    return run


def _seed(finished: Path, folder: Path, name: str, **changes) -> Path:
    """A copy of the finished run as another run of the recipe: its name, seed and any changed keys."""
    run = Path(shutil.copytree(finished, folder / name))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["run"]["name"], cfg["train"]["seed"] = name, int(name[-1])
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def test_compare_averages_seeds_of_one_recipe(finished, tmp_path, capsys):
    a, b = _seed(finished, tmp_path, "exp_s0"), _seed(finished, tmp_path, "exp_s1", data__split_seed=1)
    rc, out, err = _run("compare", [str(a), str(b), "--out", str(tmp_path / "c.png")], capsys)
    assert rc == 0, err
    assert "| exp | 2 | 0,1 |" in out


def test_compare_refuses_runs_of_another_config_as_seeds(finished, tmp_path, capsys):
    # The issue: two runs of different labeled ratios were averaged as seeds of one recipe.
    a, b = _seed(finished, tmp_path, "exp_s0"), _seed(finished, tmp_path, "exp_s1", data__labeled_ratio=0.5)
    rc, _, err = _run("compare", [str(a), str(b), "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, f"recipe 'exp': {b} is not a seed of {a}: their configs differ beyond the seed: "
                        "'data.labeled_ratio' was 0.1, now 0.5")
    assert not (tmp_path / "c.png").exists()


def test_compare_refuses_runs_made_from_different_data_as_seeds(finished, tmp_path, capsys):
    a, b = _seed(finished, tmp_path, "exp_s0"), _seed(finished, tmp_path, "exp_s1")
    record = json.loads((b / "run.json").read_text())
    shard = next(iter(record["data"]["shards"]))
    record["data"]["shards"][shard]["sha256"] = "0" * 64  # split from a dataset whose shard holds other bytes
    (b / "run.json").write_text(json.dumps(record))
    rc, _, err = _run("compare", [str(a), str(b), "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, "were made from different datasets", f"{shard}: its bytes changed")


def test_compare_refuses_one_run_given_twice(finished, tmp_path, capsys):
    rc, _, err = _run("compare", [str(finished), f"{finished}/", "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, "given twice", "one run would count as two seeds")


# ----------------------------------------------------------------------------- durations and repeats


def _long_video(folder: Path) -> Path:
    folder.mkdir()
    np.save(folder / "x.npy", np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32))
    (folder.parent / "info.csv").write_text("video_id,duration,fps\nx,5.0,30\n")  # 100 snippets span 53.87 s
    return folder.parent / "info.csv"


def test_a_video_info_duration_shorter_than_the_features_is_fixed_with_a_warning(tiny, untrained_teacher, tmp_path,
                                                                                  capsys):
    # The issue: the 5 s were used as given and every detection after 5 s was clipped away.
    info = _long_video(tmp_path / "f")
    argv = _predict(tiny, untrained_teacher, "--features", str(tmp_path / "f"), "--video-info", str(info))
    rc, _, err = _run("predict", [*argv, "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    assert "info.csv: video 'x': field 'duration': 5 s is shorter than the video's features" in err
    assert "1 video-info durations fixed" in err
    ends = [d["segment"][1] for d in json.loads((tmp_path / "r.json").read_text())["results"]["x"]]
    span = (99 * 16 + 16) / 30
    assert max(ends) > 5.0 and max(ends) <= span + 1e-6
    rc, _, err = _run("predict", [*argv, "--strict", "--out", str(tmp_path / "s.json")], capsys)
    _expect(rc, err, 2, "5 s is shorter than the video's features", "strict mode: fix the video-info file")
    assert not (tmp_path / "s.json").exists()


def test_a_video_info_json_naming_a_video_twice_is_refused(tiny, untrained_teacher, tmp_path, capsys):
    _long_video(tmp_path / "f")
    (tmp_path / "info.json").write_text('{"x": {"duration": 60.0}, "y": {"fps": 30}, "x": {"duration": 5.0}}')
    rc, _, err = _run("predict", _predict(tiny, untrained_teacher, "--features", str(tmp_path / "f"), "--video-info",
                                          str(tmp_path / "info.json"), "--out", str(tmp_path / "r.json")), capsys)
    _expect(rc, err, 2, "info.json: video 'x': duplicate video id (entries 1 and 3)")


def test_the_pool_fixes_a_short_video_info_duration_as_the_annotations_are_fixed(tmp_path, capsys):
    info = _long_video(tmp_path / "pool")
    argv = ["--preset", "tiny", "--num-videos", "6", "--unlabeled-features", str(tmp_path / "pool"), "--video-info",
            str(info)]
    rc, _, err = _run("make_dataset", [*argv, "--out", str(tmp_path / "D")], capsys)
    assert rc == 0, err
    assert "warning: " in err and "5 s is shorter than the video's features" in err
    (row,) = pq.read_table(tmp_path / "D" / "shards" / "unlabeled", columns=["duration"]).to_pylist()
    assert row["duration"] == pytest.approx((99 * 16 + 16) / 30)
    rc, _, err = _run("make_dataset", [*argv, "--strict", "--out", str(tmp_path / "E")], capsys)
    _expect(rc, err, 2, "strict mode: fix the video-info file")


def test_a_video_given_twice_is_refused_before_inference(tiny, untrained_teacher, tmp_path, capsys):
    # The issue: the video got two rows and the later silently won in the results file.
    a = shutil.copytree(tiny / "shards" / "test", tmp_path / "a")
    b = shutil.copytree(tiny / "shards" / "test", tmp_path / "b")
    rc, _, err = _run("predict", _predict(tiny, untrained_teacher, "--shards", str(a), str(b), "--out",
                                          str(tmp_path / "r.json")), capsys)
    _expect(rc, err, 2, f"{b}/part-00000.parquet: video 'tiny_test_", f"and also row 0 of {a}/part-00000.parquet",
            "each video must be given once")
    rc, _, err = _run("pseudolabel", ["--config", CONFIG, "--in-process", "--set", f"data.root={tiny}", "--set",
                                      f"run.dir={tmp_path / 'run'}", "--checkpoint", str(untrained_teacher),
                                      "--round", "1", "--shards", str(a), str(a), "--out", str(tmp_path / "p")], capsys)
    _expect(rc, err, 2, "part-00000.parquet: shard file given twice")


# ------------------------------------------------------------------------------------- internal errors


@pytest.mark.parametrize("job", ["predict", "pseudolabel", "make_dataset"])
def test_an_output_below_a_regular_file_is_refused_before_the_work(tiny, untrained_teacher, tmp_path, capsys, job):
    # The issue: predict.py ran all of its inference, then died with an internal error writing the output.
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / ("r.json" if job == "predict" else "out")
    argv = {"predict": _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"), "--out", str(out)),
            "pseudolabel": ["--config", CONFIG, "--in-process", "--set", f"data.root={tiny}", "--set",
                            f"run.dir={tmp_path / 'run'}", "--checkpoint", str(untrained_teacher), "--round", "1",
                            "--out", str(out)],
            "make_dataset": ["--preset", "tiny", "--num-videos", "6", "--out", str(out)]}[job]
    rc, out_text, err = _run(job, argv, capsys)
    _expect(rc, err, 2, f"--out {out}: cannot create the", f"{tmp_path / 'file'} is a regular file")
    assert "videos" not in out_text  # no summary: nothing ran


def test_a_test_subset_without_annotations_is_refused_before_training(tiny, tmp_path, capsys):
    data = Path(shutil.copytree(tiny, tmp_path / "tiny"))
    (data / "shards" / "testing").mkdir()
    table = pq.read_table(data / "shards" / "test" / "part-00000.parquet")
    empty = table.column("annotations").type
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("annotations"), "annotations",
                             pa.array([[]] * table.num_rows, empty))
    pq.write_table(table, data / "shards" / "testing" / "part-00000.parquet")
    run = tmp_path / "run"
    rc, _, err = _run("train", ["--config", CONFIG, "--set", f"data.root={data}", "--set", f"run.dir={run}", *FAST,
                                "--set", "data.test_subset=testing"], capsys)
    _expect(rc, err, 2, "test subset 'testing' has no annotated segment to evaluate against")
    assert not (run / "round_0").exists()  # before the teacher trained


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("job", ["selftrain", "predict"])
def test_an_unreachable_s3_endpoint_is_one_line_before_the_work(tiny, untrained_teacher, tmp_path, capsys,
                                                                monkeypatch, job):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    argv = {"selftrain": ["--config", CONFIG, "--in-process", "--set", "data.root=s3://bucket/data", "--set",
                          f"run.dir={tmp_path / 'run'}"],
            "predict": _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"), "--out",
                                "s3://bucket/preds.parquet")}[job]
    rc, out, err = _run(job, argv, capsys)
    _expect(rc, err, 2, "s3://bucket/", "cannot reach the object store: check the endpoint http://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1 and "videos" not in out


@pytest.mark.parametrize("name", ["preds.parquet", "results.json"])
def test_a_missing_bucket_is_named_before_the_work(s3_endpoint, tiny, untrained_teacher, tmp_path, capsys, name):
    rc, out, err = _run("predict", _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"),
                                            "--out", f"s3://no-such-bucket-31/{name}"), capsys)
    _expect(rc, err, 2, f"s3://no-such-bucket-31/{name}", "does not exist (buckets are not created by raytal)")
    assert "videos" not in out


@pytest.fixture
def s3_with_auth(tmp_path, monkeypatch):
    """A moto server that checks credentials (its first 3 requests are free: the bucket is made with them)."""
    import pyarrow.fs as pafs

    from conftest import start_moto_server

    proc, url = start_moto_server(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    pafs.S3FileSystem(endpoint_override=url, access_key="a", secret_key="b",
                      allow_bucket_creation=True).create_dir("locked")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield "s3://locked"
    proc.terminate()
    proc.wait()


def test_refused_or_missing_credentials_are_one_line(s3_with_auth, tmp_path, capsys, monkeypatch):
    argv = ["--config", CONFIG, "--in-process", "--set", f"data.root={s3_with_auth}/data", "--set",
            f"run.dir={tmp_path / 'run'}"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    rc, _, err = _run("selftrain", argv, capsys)
    _expect(rc, err, 2, f"{s3_with_auth}/data/dataset.yaml: access refused: check the credentials")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    storage._cache.clear()
    rc, _, err = _run("selftrain", argv, capsys)
    _expect(rc, err, 2, f"{s3_with_auth}/data/dataset.yaml:", "no credentials are set up (AWS_ACCESS_KEY_ID")
    storage._cache.clear()


# ------------------------------------------------------------------------------------------- Tune spaces

TUNE_CASES = [
    # The issue: uniform over an integer key passed validation, and every trial died in Ray with a traceback.
    ("uniform over an integer key", "{recipe.npl.n_adjacent: {uniform: [2, 8]}}",
     "tune.space.recipe.npl.n_adjacent.uniform: 'recipe.npl.n_adjacent' is an integer key, and uniform samples real "
     "numbers (every trial would fail on its value): use grid or choice"),
    ("loguniform over a true/false key", "{recipe.apl.icd: {loguniform: [0.1, 1]}}",
     "'recipe.apl.icd' is a true/false key, and loguniform samples real numbers"),
    ("a grid of true/false over a number", "{recipe.npl.alpha: {grid: [true, false]}}",
     "tune.space.recipe.npl.alpha: 'recipe.npl.alpha': expected a number, got true"),
    ("a choice of numbers over a text key", "{train.student_init: {choice: [1, 2]}}",
     "tune.space.train.student_init: 'train.student_init': expected a string, got 1"),
    ("a grid over a section", "{recipe.npl: {grid: [1, 2]}}",
     "tune.space.recipe.npl: 'recipe.npl' is a section, not a value; sweep one of its keys, e.g. recipe.npl."),
    ("a sweep over run.dir", "{run.dir: {choice: [a, b]}}", "tune.space.run.dir: not a key a sweep can vary"),
    ("a sweep over the sweep's own keys", "{tune.num_samples: {grid: [1, 2]}}",
     "tune.space.tune.num_samples: not a key a sweep can vary"),
    ("a uniform range past the key's rule", "{recipe.ntc.lam: {uniform: [0.5, 1.5]}}",
     "tune.space.recipe.ntc.lam: config key 'recipe.ntc.lam': expected a finite number in (0, 1], got 1.5"),
    ("a grid value of another kind", "{infer.nms: {grid: [soft, greedy]}}",
     "config key 'infer.nms': expected one of 'soft', 'hard', 'none', 'fusion', got 'greedy'"),
    ("grid values breaking a rule across keys",
     "{model.embed_dim: {grid: [32, 36]}, model.num_heads: {grid: [2, 8]}}",
     "tune.space, the trial {model.embed_dim: 36, model.num_heads: 8}: config key 'model.num_heads': expected a "
     "divisor of model.embed_dim = 36, got 8"),
]


@pytest.mark.parametrize("case, space, expected", TUNE_CASES, ids=[c[0] for c in TUNE_CASES])
def test_a_tune_space_is_checked_against_each_keys_type_and_rule_before_ray(tmp_path, capsys, case, space, expected):
    rc, _, err = _run("tune", ["--config", TUNE, "--set", f"run.dir={tmp_path / 'sweep'}", "--set",
                               f"tune.space={space}"], capsys)
    _expect(rc, err, 2, expected)
    assert not (tmp_path / "sweep").exists()  # before the sweep directory (and Ray)
