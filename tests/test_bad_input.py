"""Bad-input catalogue (DEVELOPERS.md "Bad input", issue 12): every malformed input, fed to the jobs.

Each case runs a job's ``run_job(main, argv)`` in this process (the same code ``python jobs/X.py`` runs, minus
the interpreter start-up: ``sys.exit(run_job(main))`` is the whole difference, checked once by a real
subprocess below) and asserts a non-zero exit status and a message on stderr that names the cause: the file, the
video and the field. Per-video problems inside the distributed pseudo-label pipeline must instead give
an error row for exactly that video while the job finishes (one ``ray`` test at the end).

The inputs are small: a 3-video "real features" dataset (annotation JSON + ``.npy`` files, converted by
``jobs/make_dataset.py``) and a copy of the tiny synthetic dataset for the jobs that read shards.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raytal.cli import run_job
from raytal.config import load_config
from raytal.data.index import build_index
from raytal.data.pseudo_io import read_pseudo_labels
from raytal.data.shards import SCHEMA as SHARD_SCHEMA
from raytal.data.shards import read_shards, video_to_row, write_shards

REPO = Path(__file__).resolve().parents[1]
FPS, STRIDE, FRAMES, D = 30.0, 16, 16, 16  # a snippet step is 16/30 s; D is the raw dataset's feature dim
ONE_EPOCH = ["--set", "train.epochs=1"]  # a job that gets past its input checks must not train for long


def _job(name: str) -> ModuleType:
    """Import jobs/<name>.py once under a private module name (no clash with other tests' imports)."""
    key = f"_bad_input_job_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "jobs" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses in the job resolve their annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[key]


def _run_job(name: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_job(_job(name).main, argv)  # what `python jobs/<name>.py` runs
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------- raw (JSON + .npy) data


def _raw_annotations() -> dict:
    """Official-ActivityNet dialect (taxonomy, no fps, no label_id): 2 train videos, 1 test video of 10 s."""
    def video(subset: str, segs: list[tuple[str, float, float]]) -> dict:
        return {"subset": subset, "duration": 10.0,
                "annotations": [{"label": lab, "segment": [s, e]} for lab, s, e in segs]}

    return {
        "taxonomy": [{"nodeName": "Root", "parentName": None}, {"nodeName": "Jump", "parentName": "Root"},
                     {"nodeName": "Throw", "parentName": "Root"}],
        "database": {
            "v1": video("train", [("Jump", 2.0, 5.0)]),
            "v2": video("train", [("Throw", 1.0, 4.0), ("Jump", 6.0, 9.0)]),
            "v3": video("test", [("Throw", 3.0, 7.0)]),
        },
    }


# 10 s at 30 fps is 300 frames = 18.75 snippet steps: 19 snippets cover every annotation.
T_FULL = 19


def _write_raw(root: Path, ann: dict | str, feats: dict[str, np.ndarray | None]) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    ann_path = root / "ann.json"
    ann_path.write_text(ann if isinstance(ann, str) else json.dumps(ann))
    fdir = root / "feats"
    fdir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for vid in ("v1", "v2", "v3"):
        f = feats.get(vid, rng.standard_normal((T_FULL, D)).astype(np.float32))
        if f is not None:
            np.save(fdir / f"{vid}.npy", f)
    return ann_path, fdir


def _convert(root: Path, capsys, ann: dict | str | None = None, *extra: str,
             **feats: np.ndarray | None) -> tuple[int, str]:
    ann_path, fdir = _write_raw(root, _raw_annotations() if ann is None else ann, feats)
    return _run_job("make_dataset", ["--annotations", str(ann_path), "--features", str(fdir), "--feat-stride",
                                     str(STRIDE), "--num-frames", str(FRAMES), "--fps", str(FPS),
                                     "--out", str(root / "out"), *extra], capsys)


def _with_v2_segment(seg: list[float]) -> dict:
    ann = _raw_annotations()
    ann["database"]["v2"]["annotations"][0]["segment"] = seg
    return ann


def test_raw_dataset_converts_when_nothing_is_wrong(tmp_path, capsys):
    # The baseline every converter case below breaks in exactly one place.
    rc, err = _convert(tmp_path, capsys)
    assert rc == 0, err
    assert (tmp_path / "out" / "dataset.yaml").is_file()
    assert sorted(v.video_id for v in read_shards(tmp_path / "out" / "shards")) == ["v1", "v2", "v3"]


NAN = np.full((T_FULL, D), 0.5, np.float32)
NAN[4, 2] = np.nan
INF = np.full((T_FULL, D), 0.5, np.float32)
INF[7, 0] = np.inf

# (case id, annotations or None for the clean ones, feature overrides, substrings the error must contain)
CONVERTER_CASES = [
    ("feature file missing", None, {"v2": None}, ["v2.npy", "video 'v2'", "field 'features'", "missing"]),
    ("features with NaN", None, {"v2": NAN}, ["v2.npy", "video 'v2'", "field 'features'", "NaN/Inf",
                                               "snippet 4"]),
    ("features with Inf", None, {"v2": INF}, ["v2.npy", "video 'v2'", "NaN/Inf", "snippet 7"]),
    ("features not 2-D", None, {"v2": np.zeros(T_FULL * D, np.float32)},
     ["v2.npy", "video 'v2'", "field 'features'", "2-D"]),
    # D is taken from the first video (v1: 16), so v2 with 12 columns is the odd one out.
    ("features of the wrong D", None, {"v2": np.zeros((T_FULL, 12), np.float32)},
     ["v2.npy", "video 'v2'", "field 'features'", "D = 16", "(19, 12)"]),
    # v2's last segment ends at 9 s = snippet 9*30/16 - 0.5 = 16.375 (centre-aligned grid); 10 snippets cover
    # up to 10 - 1 + 0.5*16/16 = 9.5 (+1 tolerance), far short.
    ("features shorter than the annotations", None, {"v2": np.zeros((10, D), np.float32)},
     ["v2.npy", "video 'v2'", "field 'features'", "shorter than the annotations"]),
    ("segment end before start", _with_v2_segment([5.0, 3.0]), {},
     ["ann.json", "video 'v2'", "annotations[0].segment", "end 3.0 < start 5.0"]),
    ("segment before 0", _with_v2_segment([-3.0, 2.0]), {},
     ["ann.json", "video 'v2'", "annotations[0].segment", "starts before 0"]),
]
# Benign defects of official files: fixed with a warning by default (tests/test_data_official.py),
# refused with --strict.
STRICT_CASES = [
    ("zero-length segment", _with_v2_segment([4.0, 4.0]), {},
     ["ann.json", "video 'v2'", "field 'annotations[0].segment'", "zero-length segment [4.0, 4.0]"]),
    ("segment past the duration", _with_v2_segment([8.0, 12.0]), {},
     ["ann.json", "video 'v2'", "annotations[0].segment", "ends after the end of the video (duration=10.0)"]),
]


CASES = [(*c, ()) for c in CONVERTER_CASES] + [(*c, ("--strict",)) for c in STRICT_CASES]


@pytest.mark.parametrize("case, ann, feats, expected, extra", CASES, ids=[c[0] for c in CASES])
def test_converter_and_loaders_name_the_cause(tmp_path, capsys, case, ann, feats, expected, extra):
    rc, err = _convert(tmp_path, capsys, ann, *extra, **feats)
    assert rc == 2, f"{case}: exit {rc}, stderr {err!r}"
    for text in expected:
        assert text in err, f"{case}: {text!r} not in {err!r}"
    assert not (tmp_path / "out" / "dataset.yaml").exists()  # nothing half-built is declared a dataset


def test_label_missing_from_the_class_list(tmp_path, capsys):
    # The class list is the taxonomy's leaves (Jump, Throw); "Fly" is not one of them.
    ann = _raw_annotations()
    ann["database"]["v3"]["annotations"][0]["label"] = "Fly"
    rc, err = _convert(tmp_path, capsys, ann)
    assert rc == 2
    for text in ("ann.json", "video 'v3'", "field 'annotations[0].label'", "'Fly'", "class list"):
        assert text in err


def test_duplicate_video_id_in_the_annotation_file(tmp_path, capsys):
    # JSON itself allows a repeated key (json.load keeps the last); the loader must refuse it.
    text = json.dumps(_raw_annotations())
    dup = '"v1": ' + json.dumps(_raw_annotations()["database"]["v1"])
    text = text.replace('"v3": ', dup + ', "v3": ', 1)
    rc, err = _convert(tmp_path, capsys, text)
    assert rc == 2
    for text in ("ann.json", "video 'v1'", "duplicate video id"):
        assert text in err


# ------------------------------------------------------------------- shard-reading jobs (tiny data)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    assert _job("make_dataset").main(["--preset", "tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture()
def tiny(tiny_source, tmp_path) -> Path:
    """A private copy of the tiny dataset that a case may break."""
    return Path(shutil.copytree(tiny_source, tmp_path / "tiny"))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the Parquet footer (schema, row groups) is at the end: gone


def _split_ids(root: Path, part: str) -> list[str]:
    """The ids of one part of tiny_npl's split of the dataset at ``root`` (tiny_supervised labels them all)."""
    return build_index(load_config(REPO / "configs" / "tiny_npl.yaml", [f"data.root={root}"]).data).ids(part)


def _poison_nan(root: Path, part: str = "labeled") -> str:
    """NaN in one feature of the first video of ``part``; returns its id. Nothing reads features before a
    stage does (the split's index reads the small columns only): training must refuse a labeled video's
    NaN (exit 2 naming it), the pseudo-label stage makes an error row of an unlabeled one's."""
    shard_dir = root / "shards" / "train"
    victim = _split_ids(root, part)[0]
    vids = list(read_shards(shard_dir))
    next(v for v in vids if v.video_id == victim).features[3, 0] = np.nan
    for old in shard_dir.glob("part-*.parquet"):  # the subset re-converted
        old.unlink()
    write_shards(vids, shard_dir, rows_per_shard=64, check=False)
    return victim


def _edit_dataset_yaml(root: Path, **changes) -> None:
    path = root / "dataset.yaml"
    info = yaml.safe_load(path.read_text())
    info.update(changes)
    path.write_text(yaml.safe_dump(info))


def _train_argv(root: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={root}",
            "--set", f"run.dir={run}", *ONE_EPOCH, *extra]


def _selftrain_argv(root: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--in-process", "--set", f"data.root={root}",
            "--set", f"run.dir={run}", *ONE_EPOCH, *extra]


SHARD_CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("truncated shard", lambda r: _truncate(r / "shards" / "train" / "part-00000.parquet"),
     ["train/part-00000.parquet", "truncated or corrupt"]),
    ("corrupt shard (not Parquet)", lambda r: (r / "shards" / "test" / "part-00000.parquet").write_bytes(b"x" * 64),
     ["test/part-00000.parquet", "truncated or corrupt"]),
    ("NaN features in a shard", _poison_nan, ["train/part-00000.parquet", "video 'tiny_train_", "field 'features'",
                                              "NaN/Inf"]),
    # 5 classes in the shards, 4 in the class list: the videos of class 4 name a label the list lacks.
    ("label id outside the class list", lambda r: _edit_dataset_yaml(r, classes=["Jump", "Throw", "Swing", "Dive"]),
     ["shards/train", "video 'tiny_train_", "field 'annotations.label_id'", "outside the class list"]),
    ("feature dim differs from dataset.yaml", lambda r: _edit_dataset_yaml(r, feature_dim=31),
     ["video 'tiny_train_", "field 'features'", "D = 32", "feature_dim = 31"]),
    ("dataset.yaml missing", lambda r: (r / "dataset.yaml").unlink(), ["dataset.yaml not found"]),
]


@pytest.mark.parametrize("case, breaker, expected", SHARD_CASES, ids=[c[0] for c in SHARD_CASES])
@pytest.mark.parametrize("job", ["train", "selftrain"])
def test_shard_reading_jobs_name_the_cause(tiny, tmp_path, capsys, job, case, breaker, expected):
    breaker(tiny)
    argv = (_train_argv if job == "train" else _selftrain_argv)(tiny, tmp_path / "run")
    rc, err = _run_job(job, argv, capsys)
    assert rc == 2, f"{job} / {case}: exit {rc}, stderr {err!r}"
    for text in expected:
        assert text in err, f"{job} / {case}: {text!r} not in {err!r}"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_selftrain_makes_an_error_row_of_an_unlabeled_videos_nan_features(tiny, tmp_path, capsys):
    # The same NaN as above in an unlabeled video: no stage trains on its ground truth, so it is a per-video
    # problem of the pseudo-label stage (an error row naming it) and the run finishes without it.
    victim = _poison_nan(tiny, "unlabeled")
    n = len(_split_ids(tiny, "unlabeled"))
    rc, err = _run_job("selftrain", _selftrain_argv(tiny, tmp_path / "run"), capsys)
    assert rc == 0, err
    rec = read_pseudo_labels(tmp_path / "run" / "round_1" / "pseudo")
    assert len(rec) == n and {vid for vid, r in rec.items() if r.error} == {victim}
    assert f"video '{victim}'" in rec[victim].error and "field 'features'" in rec[victim].error
    assert "NaN/Inf" in rec[victim].error
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())["stages"]
    pseudo = stages["round_1/pseudo"]["result"]
    assert (pseudo["videos_in"], pseudo["rows_out"], pseudo["num_errors"]) == (n, n, 1)
    assert pseudo["usable"] <= n - 1  # the error row is never a training video
    assert [r["round"] for r in json.loads((tmp_path / "run" / "metrics.json").read_text())["rounds"]] == [0, 1]


CONFIG_CASES = [
    ("typo in a key", ["--set", "train.epoch=2"], ["unknown key 'train.epoch'", "did you mean 'epochs'"]),
    ("typo in a section", ["--set", "trian.epochs=2"], ["unknown key 'trian'", "did you mean 'train'"]),
    ("wrong type", ["--set", "train.epochs=two"], ["'train.epochs'", "expected an integer", "'two'"]),
]


@pytest.mark.parametrize("case, extra, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
@pytest.mark.parametrize("job", ["train", "selftrain", "pseudolabel"])
def test_config_errors_name_the_key(tiny_source, tmp_path, capsys, job, case, extra, expected):
    if job == "train":
        argv = _train_argv(tiny_source, tmp_path / "run", *extra)
    elif job == "selftrain":
        argv = _selftrain_argv(tiny_source, tmp_path / "run", *extra)
    else:
        argv = ["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--checkpoint", "x.pt", "--round", "1",
                *extra]
    rc, err = _run_job(job, argv, capsys)
    assert rc == 2, f"{job} / {case}: exit {rc}, stderr {err!r}"
    for text in expected:
        assert text in err, f"{job} / {case}: {text!r} not in {err!r}"


def test_config_file_typo_names_the_file_and_the_closest_key(tiny_source, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs' / 'tiny_supervised.yaml'}\nmodel:\n  embed_dimm: 16\n")
    rc, err = _run_job("train", ["--config", str(cfg), "--set", f"data.root={tiny_source}"], capsys)
    assert rc == 2
    for text in ("bad.yaml", "unknown key 'model.embed_dimm'", "did you mean 'embed_dim'"):
        assert text in err


def test_pseudolabel_job_without_shards_names_the_directory(tiny_source, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc, err = _run_job("pseudolabel", ["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--checkpoint", "x.pt",
                                       "--round", "1", "--set", f"data.root={tiny_source}", "--set",
                                       f"run.dir={tmp_path / 'run'}", "--shards", str(missing)], capsys)
    assert rc == 2 and str(missing) in err and "not found" in err


# -------------------------------------------------------------------------------- evaluator


def _gt_json(path: Path) -> Path:
    gt = {"database": {
        "a": {"subset": "test", "duration": 20.0, "fps": 30.0,
              "annotations": [{"label": "Jump", "segment": [1.0, 4.0]}]},
        "b": {"subset": "test", "duration": 20.0, "fps": 30.0,
              "annotations": [{"label": "Throw", "segment": [5.0, 9.0]}]},
    }}
    path.write_text(json.dumps(gt))
    return path


def _pred(path: Path, results: dict) -> Path:
    path.write_text(json.dumps({"results": results}))
    return path


def _det(label: str = "Jump", seg=(1.0, 4.0), score: float = 0.9) -> dict:
    return {"label": label, "segment": list(seg), "score": score}


EVAL_CASES = [
    ("unknown video", {"a": [_det()], "zzz": [_det()]}, ["pred.json", "video 'zzz'", "unknown video"]),
    ("unknown label", {"a": [_det()], "b": [_det("Fly")]},
     ["pred.json", "video 'b'", "field 'results[0].label'", "'Fly'", "not in the ground-truth classes"]),
    ("segment end < start", {"a": [_det(seg=(4.0, 1.0))]},
     ["pred.json", "video 'a'", "results[0].segment", "end 1.0 < start 4.0"]),
    ("score not a number", {"a": [_det(score=float("nan"))]}, ["pred.json", "video 'a'", "results[0].score"]),
]


@pytest.mark.parametrize("case, results, expected", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluator_names_the_bad_prediction(tmp_path, capsys, case, results, expected):
    gt = _gt_json(tmp_path / "gt.json")
    pred = _pred(tmp_path / "pred.json", results)
    rc, err = _run_job("evaluate", ["--gt", str(gt), "--pred", str(pred)], capsys)
    assert rc == 2, f"{case}: exit {rc}, stderr {err!r}"
    for text in expected:
        assert text in err, f"{case}: {text!r} not in {err!r}"


def test_evaluator_accepts_the_clean_prediction(tmp_path, capsys):
    # The baseline the cases above break. Both videos detected exactly, one detection per ground-truth
    # instance: AP = 1 for both classes at every tIoU, so the average mAP is 1.
    gt = _gt_json(tmp_path / "gt.json")
    pred = _pred(tmp_path / "pred.json", {"a": [_det()], "b": [_det("Throw", (5.0, 9.0))]})
    capsys.readouterr()
    assert _job("evaluate").main(["--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["average_mAP"] == pytest.approx(1.0)


# ------------------------------------------------------------------ the real process boundary


@pytest.mark.parametrize("job, argv_of", [
    ("evaluate", lambda d: ["--gt", str(_gt_json(d / "gt.json")), "--pred",
                            str(_pred(d / "pred.json", {"zzz": [_det()]}))]),
    ("make_dataset", lambda d: ["--annotations", str(_write_raw(d, _raw_annotations(), {"v2": None})[0]),
                                "--features", str(d / "feats"), "--feat-stride", "16", "--num-frames", "16",
                                "--out", str(d / "out")]),
])
def test_subprocess_exit_status_is_non_zero(tmp_path, job, argv_of):
    # The in-process cases above check main()'s return value; this checks it becomes the process status.
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *argv_of(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr  # a clean message, not a crash
    assert ("'zzz'" if job == "evaluate" else "video 'v2'") in proc.stderr


# ------------------------------------------------------------ per-video problems in the pipeline


def make_mean_infer():
    """A stand-in teacher (module level so Ray can import it in workers): one score per class = mean feature."""
    def infer(videos):
        return [{"scores": v.features[:, :5].mean(axis=0)} for v in videos]
    return infer


def one_segment_label(video, pred):
    c = int(np.argmax(pred["scores"]))
    return {"segments": np.array([[0.0, video.duration / 2]]), "labels": np.array([c]),
            "scores": np.array([1.0]), "weights": np.array([1.0]), "origins": ["test"]}


def build_stages(cfg, checkpoint, num_classes, context):
    """``--stages`` hook of jobs/pseudolabel.py."""
    return make_mean_infer, one_segment_label


def _labels(rec: dict) -> dict:
    return {vid: (r.segments.tolist(), r.labels.tolist(), r.error) for vid, r in rec.items()}


@pytest.mark.ray
def test_pipeline_job_turns_per_video_problems_into_error_rows(ray_session, tiny_source, untrained_teacher, tmp_path,
                                                                capsys):
    vids = [dataclasses.replace(v, labeled=False) for v in read_shards(tiny_source / "shards" / "test")][:9]
    inf_v = dataclasses.replace(vids[1], video_id="bad_inf", features=vids[1].features.copy())
    inf_v.features[0, 0] = np.inf
    narrow = dataclasses.replace(vids[2], video_id="bad_dim", features=vids[2].features[:, :20].copy())
    good = [vids[0], *vids[3:8]]
    shards = write_shards([inf_v, *good[:3], narrow, *good[3:]], tmp_path / "unl", rows_per_shard=4, check=False)
    # A row whose feature bytes do not fill the [T, D] its header claims (a feature array cut short).
    short = video_to_row(dataclasses.replace(vids[8], video_id="bad_len"), check=False)
    short["T"] += 5
    pq.write_table(pa.Table.from_pylist([short], schema=SHARD_SCHEMA), tmp_path / "unl" / "extra.parquet")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data:\n  root: {tiny_source}\nrun:\n  dir: {tmp_path / 'run'}\nmodel:\n  input_dim: 32\n"
                   "ray:\n  actor_pool_size: 1\n  infer_batch_size: 4\n")
    # The job reads the teacher's kind off its checkpoint; the stand-in stages above never load it.
    argv = ["--config", str(cfg), "--checkpoint", str(untrained_teacher), "--round", "1", "--stages",
            "test_bad_input:build_stages", "--shards", str(tmp_path / "unl"), "--out", str(tmp_path / "out")]
    rc = _job("pseudolabel").main(argv)
    printed = capsys.readouterr().out
    assert rc == 0  # the job finishes; the problems are rows, not a crash
    rec = read_pseudo_labels(tmp_path / "out")
    # 9 videos in -> 9 rows out, 3 of them errors naming the video and the field.
    assert sorted(rec) == sorted([v.video_id for v in good] + ["bad_inf", "bad_dim", "bad_len"])
    assert {vid for vid, r in rec.items() if r.error} == {"bad_inf", "bad_dim", "bad_len"}
    assert "video 'bad_inf'" in rec["bad_inf"].error and "NaN/Inf" in rec["bad_inf"].error
    assert "video 'bad_dim'" in rec["bad_dim"].error and "D = 20" in rec["bad_dim"].error
    assert "video 'bad_len'" in rec["bad_len"].error and "field 'features'" in rec["bad_len"].error
    assert "error rows: 3" in printed and "with labels: 6" in printed and "error bad_dim" in printed
    # --in-process runs the same stage without Ray: the same rows, error rows included.
    assert _job("pseudolabel").main([*argv[:-1], str(tmp_path / "local"), "--in-process"]) == 0
    assert _labels(read_pseudo_labels(tmp_path / "local")) == _labels(rec)
    # One truncated shard among good ones: its videos cannot be named, so the job says which FILE and exits 1.
    _truncate(Path(shards[1]))
    capsys.readouterr()
    rc = _job("pseudolabel").main(argv)
    captured = capsys.readouterr()
    assert rc == 1
    assert f"unreadable shard {shards[1]}" in captured.out and "truncated or corrupt" in captured.out
    assert "1 shard file(s) unreadable" in captured.err
    # The readable shards' 4 + 1 videos have rows, and nothing is left over from the first run.
    assert len(read_pseudo_labels(tmp_path / "out")) == 5
