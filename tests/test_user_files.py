"""Nothing a user owns is ever lost (issue 31), through the real jobs: a job removes only files it can prove it
wrote (its manifest, ``raytal/core/outputs.py``), refuses an output overlapping an input or a folder of someone
else's files (``--overwrite`` writes beside them, deleting none), removes its temporary folders on every exit,
never follows a link it did not make, respects a run's lock whichever job writes into the run, and notices
changed data on resume even when every shard kept its size.

Every case runs a job's ``run_job(main, argv)`` in this process (``_run``: no traceback, the message recorded for
docs/reliability.md) on the tiny dataset of 12 videos; the cases that need a run train one epoch, once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from raytal.core import storage
from raytal.core.errors import InputError
from raytal.core.outputs import MANIFEST, OutputDir, read_manifest
from raytal.selftrain.run_lock import RunLock

from test_bad_input import REPO
from test_bad_input_runs import FAST, _expect, _run

CONFIG = str(REPO / "configs" / "tiny_npl.yaml")


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as links) -> a digest of its bytes: what "left as it was" means."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _users_folder(path: Path) -> dict[str, str]:
    (path / "figures").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    (path / "figures" / "fig1.png").write_bytes(b"\x89PNG my figure")
    return _tree(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    rc = _job_main("make_dataset", ["--preset", "tiny", "--num-videos", "12", "--out", str(out)])
    assert rc == 0
    return out


def _job_main(name: str, argv: list[str]) -> int:
    from raytal.cli import run_job

    from test_bad_input import _job

    return run_job(_job(name).main, argv)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    """A finished run of round 0 (one epoch) and its round-1 pseudo labels (pseudolabel.py into the run)."""
    run = tmp_path_factory.mktemp("runs") / "npl"
    assert _job_main("train", [a for a in _sel(tiny, run) if a != "--in-process"]) == 0
    assert _job_main("pseudolabel", _pseudo(tiny, run, run / "round_0" / "train" / "final.pt")) == 0
    return run


def _sel(tiny: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--in-process", "--set", f"data.root={tiny}", "--set", f"run.dir={run}", *FAST,
            "--set", "run.rounds=0", *extra]


def _pseudo(tiny: Path, run: Path, teacher: Path | str, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--in-process", "--set", f"data.root={tiny}", "--set", f"run.dir={run}",
            "--checkpoint", str(teacher), "--round", "1", *extra]


def _predict(tiny: Path, teacher: Path | str, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--set", f"data.root={tiny}", "--checkpoint", str(teacher), "--in-process", *extra]


# --------------------------------------------------------------------- 1. jobs delete only what they wrote


def test_pseudolabel_refuses_a_folder_of_the_users_files_and_deletes_nothing(tiny, untrained_teacher, tmp_path,
                                                                             capsys):
    # The issue: pseudolabel.py --out DIR emptied the folder (the user's notes and figures) and exited 0.
    out = tmp_path / "mine"
    before = _users_folder(out)
    rc, _, err = _run("pseudolabel", _pseudo(tiny, tmp_path / "run", untrained_teacher, "--out", str(out)), capsys)
    _expect(rc, err, 2, f"--out {out}: holds files raytal did not write (figures, notes.txt)", "--overwrite")
    assert _tree(out) == before and not (out / MANIFEST).exists()


def test_overwrite_writes_beside_the_users_files_and_a_rerun_replaces_only_its_own(tiny, untrained_teacher,
                                                                                   tmp_path, capsys):
    out = tmp_path / "mine"
    before = _users_folder(out)
    rc, _, err = _run("pseudolabel", _pseudo(tiny, tmp_path / "run", untrained_teacher, "--out", str(out),
                                             "--overwrite"), capsys)
    assert rc == 0, err
    written = sorted(read_manifest(str(out)).files)
    assert written and all(f.startswith("shard=") for f in written)  # only its own files are listed
    assert {k: v for k, v in _tree(out).items() if k in before} == before
    # Again, now a folder raytal made: its own labels are replaced, the user's files stay.
    stale = out / "shard=0" / written[0].split("/")[-1]
    rc, _, err = _run("pseudolabel", _pseudo(tiny, tmp_path / "run", untrained_teacher, "--out", str(out)), capsys)
    assert rc == 0, err
    assert {k: v for k, v in _tree(out).items() if k in before} == before and stale.exists()
    # A file of the user's among the labels (where readers would take it for a label file) is refused.
    (out / "shard=0" / "mine.parquet").write_bytes(b"not labels")
    rc, _, err = _run("pseudolabel", _pseudo(tiny, tmp_path / "run", untrained_teacher, "--out", str(out)), capsys)
    _expect(rc, err, 2, "not written by raytal (not in its manifest", "shard=0/mine.parquet")
    assert (out / "shard=0" / "mine.parquet").read_bytes() == b"not labels"


def _copy_shards_into(tiny: Path, folder: Path) -> list[str]:
    shutil.copytree(tiny / "shards" / "test", folder)
    return [str(folder)]


OVERLAP_CASES = [
    # (job, argv given (tiny, tmp, teacher), the input that must survive, the message)
    ("predict", lambda t, d, c: _predict(t, c, "--shards", *_copy_shards_into(t, d / "x.parquet"), "--out",
                                         str(d / "x.parquet")),
     "x.parquet", ("is the input --shards",)),
    ("predict", lambda t, d, c: _predict(t, c, "--shards", *_copy_shards_into(t, d / "x.parquet" / "in"), "--out",
                                         str(d / "x.parquet")),
     "x.parquet", ("contains the input --shards",)),
    ("pseudolabel", lambda t, d, c: _pseudo(t, d / "run", c, "--out", str(t / "shards" / "train")),
     None, ("is inside the input data.root",)),
    ("make_dataset", lambda t, d, c: ["--preset", "tiny", "--num-videos", "6", "--out", str(d / "D"),
                                      "--unlabeled-features", str(_pool_features(d / "D" / "features"))],
     "D", ("contains the input --unlabeled-features",)),
    ("selftrain", lambda t, d, c: _sel(t, t), None, ("run.dir=", "is the input data.root")),
    ("train", lambda t, d, c: ["--config", CONFIG, "--set", f"data.root={t}", "--set", f"run.dir={t / 'runs' / 'x'}",
                               *FAST], None, ("is inside the input data.root",)),
]


def _pool_features(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(3):
        np.save(folder / f"pool{i}.npy", np.random.default_rng(i).standard_normal((40, 32)).astype(np.float32))
    return folder


@pytest.mark.parametrize("job, argv_of, survivor, expected", OVERLAP_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(OVERLAP_CASES)])
def test_an_output_overlapping_an_input_is_refused(tiny, untrained_teacher, tmp_path, capsys, job, argv_of, survivor,
                                                   expected):
    # The issue: predict.py cleared its output folder though it held the shards it was about to read, and
    # make_dataset.py --out D deleted D/features, where the pool features it was told to read lived.
    data = Path(shutil.copytree(tiny, tmp_path / "tiny"))
    argv = argv_of(data, tmp_path, untrained_teacher)
    guarded = tmp_path / survivor if survivor else data
    before = _tree(guarded)
    rc, _, err = _run(job, argv, capsys)
    _expect(rc, err, 2, *expected, "must not overlap what it reads")
    assert _tree(guarded) == before


def test_predict_leaves_no_temporary_folder_and_never_replaces_a_results_file_it_did_not_write(
        tiny, untrained_teacher, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    theirs = tmp_path / "actionformer_results.json"
    theirs.write_text(json.dumps({"results": {}, "mine": True}))
    argv = _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"))
    rc, _, err = _run("predict", [*argv, "--out", str(theirs)], capsys)
    _expect(rc, err, 2, "exists and was not written by raytal")
    assert json.loads(theirs.read_text())["mine"] is True
    ours = tmp_path / "results.json"
    for _ in range(2):  # the second run replaces its own file
        rc, _, err = _run("predict", [*argv, "--out", str(ours)], capsys)
        assert rc == 0, err
    assert len(json.loads(ours.read_text())["results"]) == 4
    assert list((tmp_path / "tmp").iterdir()) == []  # a temporary folder was left per run before


def test_an_output_on_object_storage_is_claimed_staged_and_replaced(s3_dir, tiny, untrained_teacher, capsys):
    out = f"{s3_dir}/preds.parquet"
    storage.write_text(f"{s3_dir}/theirs.parquet/notes.txt", "mine")
    argv = _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"))
    rc, _, err = _run("predict", [*argv, "--out", f"{s3_dir}/theirs.parquet"], capsys)
    _expect(rc, err, 2, f"--out {s3_dir}/theirs.parquet: holds files raytal did not write (notes.txt)")
    for _ in range(2):  # the second run replaces the first's files, listed in the manifest
        rc, _, err = _run("predict", [*argv, "--out", out], capsys)
        assert rc == 0, err
    files = storage.list_files(out)
    assert sorted(storage.join(out, f) for f in read_manifest(out).files) == files and files
    fs, inner = storage.filesystem(out)  # every object, raytal's own names included: no staging folder is left
    raw = [i.path for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True))]
    assert raw and not [p for p in raw if ".raytal-staging" in p]


def test_make_dataset_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "D"
    before = _users_folder(out)
    (out / "annotations.json").write_text('{"mine": true}')
    argv = ["--preset", "tiny", "--num-videos", "12", "--rows-per-shard", "2", "--out", str(out)]
    rc, _, err = _run("make_dataset", argv, capsys)
    _expect(rc, err, 2, "holds files raytal did not write (annotations.json, figures, notes.txt)")
    rc, _, err = _run("make_dataset", [*argv, "--overwrite"], capsys)  # would replace the user's annotations.json
    _expect(rc, err, 2, "1 file(s) raytal did not write lie where this job writes (e.g. annotations.json)")
    assert (out / "annotations.json").read_text() == '{"mine": true}'
    (out / "annotations.json").unlink()
    rc, _, err = _run("make_dataset", [*argv, "--overwrite"], capsys)
    assert rc == 0, err
    assert len(list((out / "shards" / "train").glob("*.parquet"))) == 4  # 8 training videos, 2 per shard
    # Again with 6 videos: the stale shards of the larger dataset go (the manifest lists them), the user's stay.
    rc, _, err = _run("make_dataset", [*argv[:3], "6", *argv[4:]], capsys)
    assert rc == 0, err
    assert len(list((out / "shards" / "train").glob("*.parquet"))) == 2
    assert {k: v for k, v in _tree(out).items() if k in before} == before
    listed = read_manifest(str(out)).files
    assert sorted(listed) == sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                                    and p.name != MANIFEST and not str(p.relative_to(out)) in before)


def test_a_failed_conversion_keeps_the_previous_dataset_and_leaves_no_staging_folder(tmp_path, capsys):
    out = tmp_path / "D"
    rc, _, err = _run("make_dataset", ["--preset", "tiny", "--num-videos", "6", "--out", str(out)], capsys)
    assert rc == 0, err
    before, listed = _tree(out), read_manifest(str(out)).files
    pool = _pool_features(tmp_path / "pool")
    bad = np.load(pool / "pool1.npy")
    bad[5, 2] = np.nan
    np.save(pool / "pool1.npy", bad)
    rc, _, err = _run("make_dataset", ["--preset", "tiny", "--num-videos", "6", "--out", str(out),
                                       "--unlabeled-features", str(pool)], capsys)
    _expect(rc, err, 2, "pool1.npy", "NaN/Inf")  # found after the annotated subsets were written
    after = _tree(out)
    assert after.keys() == before.keys() and read_manifest(str(out)).files == listed  # no staging folder left
    assert {k: v for k, v in after.items() if k != MANIFEST} == {k: v for k, v in before.items() if k != MANIFEST}


def test_a_run_directory_holding_the_users_files(tiny, tmp_path, capsys):
    run = tmp_path / "home"
    before = _users_folder(run)
    rc, _, err = _run("selftrain", _sel(tiny, run), capsys)
    _expect(rc, err, 2, f"run.dir={run}: holds files raytal did not write (figures, notes.txt)")
    assert _tree(run) == before
    rc, _, err = _run("selftrain", _sel(tiny, run, "--overwrite"), capsys)
    assert rc == 0, err
    assert {k: v for k, v in _tree(run).items() if k in before} == before and (run / "metrics.json").is_file()


def test_compare_never_replaces_a_plot_it_did_not_write(trained, tmp_path, capsys):
    figure = tmp_path / "figure1.png"
    figure.write_bytes(b"\x89PNG my figure")
    rc, _, err = _run("compare", [str(trained), "--out", str(figure)], capsys)
    _expect(rc, err, 2, "figure1.png: exists and was not written by raytal")
    assert figure.read_bytes() == b"\x89PNG my figure"
    ours = tmp_path / "compare.png"
    for _ in range(2):  # its own plot is replaced
        rc, _, err = _run("compare", [str(trained), "--out", str(ours)], capsys)
        assert rc == 0, err


# ------------------------------------------------------------------------------ 2. no link is followed


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_kept(tiny, tmp_path, capsys):
    # The issue: a run.lock planted as a symlink made the job overwrite the file it points to.
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "bashrc"
    victim.write_text("export PATH=/usr/bin")
    (run / "run.lock").symlink_to(victim)
    rc, _, err = _run("selftrain", _sel(tiny, run), capsys)
    _expect(rc, err, 2, f"{run / 'run.lock'}", "symbolic link")
    assert victim.read_text() == "export PATH=/usr/bin"


@pytest.mark.parametrize("planted", ["round_1", "round_1/pseudo/shard=0", "stages.json", "index.json"])
def test_a_link_planted_inside_a_run_is_refused(trained, tiny, tmp_path, capsys, planted):
    run = Path(shutil.copytree(trained, tmp_path / "run", symlinks=True))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    target = run / planted
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(elsewhere if planted.startswith("round") else elsewhere / "keep.txt")
    before = _tree(elsewhere)
    rc, _, err = _run("pseudolabel", _pseudo(tiny, run, run / "round_0" / "train" / "final.pt"), capsys)
    _expect(rc, err, 2, "symbolic link", "never follows a link it did not make")
    assert _tree(elsewhere) == before


def test_a_linked_folder_inside_a_dataset_is_refused_before_the_work(tmp_path, capsys):
    out = tmp_path / "D"
    argv = ["--preset", "tiny", "--num-videos", "6", "--out", str(out)]
    assert _run("make_dataset", argv, capsys)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "shards", elsewhere)
    (out / "shards").symlink_to(elsewhere)  # the dataset's shards now live (or are planted) elsewhere
    before = _tree(elsewhere)
    rc, _, err = _run("make_dataset", argv, capsys)
    _expect(rc, err, 2, f"{out / 'shards'} is a symbolic link where this job writes")
    assert _tree(elsewhere) == before


def test_predict_refuses_an_output_that_is_a_link(tiny, untrained_teacher, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "r.json").symlink_to(victim)
    rc, _, err = _run("predict", _predict(tiny, untrained_teacher, "--shards", str(tiny / "shards" / "test"),
                                          "--out", str(tmp_path / "r.json")), capsys)
    _expect(rc, err, 2, "r.json: is a symbolic link")
    assert victim.read_text() == "precious"


def test_writes_below_a_held_folder_never_go_through_a_planted_link(tmp_path):
    held = tmp_path / "out"
    (held / "a").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (held / "b").symlink_to(elsewhere)
    (held / "a" / "c.json").symlink_to(elsewhere / "c.json")
    with storage.guard(held):
        storage.write_text(held / "a" / "ok.json", "{}")
        with pytest.raises(storage.StorageError, match=r"out/b: a symbolic link inside .*out, which raytal writes"):
            storage.write_text(held / "b" / "x.json", "{}")
        with pytest.raises(storage.StorageError, match=r"out/b: a symbolic link inside"):
            storage.makedirs(held / "b" / "sub")
    with pytest.raises(storage.StorageError, match=r"c.json: is a symbolic link"):
        storage.write_text(held / "a" / "c.json", "{}")  # a link at the target, guarded or not
    assert list(elsewhere.iterdir()) == [] and (held / "a" / "ok.json").read_text() == "{}"


# --------------------------------------------------------------------------- 3. locks cannot be bypassed


@pytest.mark.parametrize("job", ["pseudolabel", "predict", "make_dataset"])
def test_a_job_writing_into_a_locked_run_is_refused(trained, tiny, tmp_path, capsys, job):
    # The issue: pseudolabel.py --out <run>/round_1/pseudo rewrote a run's pseudo labels while another job
    # held that run's lock.
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    teacher = run / "round_0" / "train" / "final.pt"
    argv = {"pseudolabel": _pseudo(tiny, tmp_path / "other", teacher, "--out", str(run / "round_1" / "pseudo")),
            "predict": _predict(tiny, teacher, "--shards", str(tiny / "shards" / "test"), "--out",
                                str(run / "preds.parquet")),
            "make_dataset": ["--preset", "tiny", "--num-videos", "6", "--out", str(run / "data")]}[job]
    before = _tree(run)
    with RunLock(str(run)):  # another job works in the run (a second lock in one process excludes like a process)
        rc, _, err = _run(job, argv, capsys)
        _expect(rc, err, 2, f"{run}: run directory in use by pid {os.getpid()}")
    assert {k: v for k, v in _tree(run).items() if k != MANIFEST} == {k: v for k, v in before.items() if k != MANIFEST}


# ---------------------------------------------------------------------------- 4. resume does not trust sizes


def _raw(folder: Path) -> list[str]:
    """Annotations and features of 12 videos of 30 snippets (16 features), for make_dataset's converter."""
    (folder / "feats").mkdir(parents=True)
    rng = np.random.default_rng(0)
    db = {}
    for i in range(12):
        np.save(folder / "feats" / f"v{i}.npy", rng.standard_normal((30, 16)).astype(np.float32))
        db[f"v{i}"] = {"subset": "train" if i < 8 else "test", "duration": 16.0, "fps": 30.0,
                       "annotations": [{"label": "AB"[i % 2], "segment": [2.0, 6.0], "label_id": i % 2}]}
    (folder / "ann.json").write_text(json.dumps({"database": db}))
    return ["--annotations", str(folder / "ann.json"), "--features", str(folder / "feats"), "--feat-stride", "16",
            "--num-frames", "16", "--out", str(folder / "data")]


def test_resume_refuses_a_reconverted_dataset_whose_shards_kept_their_sizes(tmp_path, capsys):
    convert = _raw(tmp_path)
    data = tmp_path / "data"
    assert _run("make_dataset", convert, capsys)[0] == 0
    for rel, entry in read_manifest(str(data)).files.items():  # hashed while writing: the file's own sha256
        if rel.endswith(".parquet"):
            assert entry["sha256"] == hashlib.sha256((data / rel).read_bytes()).hexdigest()
    run = tmp_path / "run"
    train = ["--config", CONFIG, "--set", f"data.root={data}", "--set", f"run.dir={run}", *FAST,
             "--set", "model.input_dim=16", "--set", "data.labeled_ratio=0.5"]
    rc, _, err = _run("train", train, capsys)
    assert rc == 0, err
    sizes = {p.name: p.stat().st_size for p in data.rglob("*.parquet")}
    feats = np.load(tmp_path / "feats" / "v1.npy")
    feats[3, 3] += 1.0  # one value of one feature file
    np.save(tmp_path / "feats" / "v1.npy", feats)
    rc, _, err = _run("make_dataset", convert, capsys)  # re-converted into the same folder (raytal's own)
    assert rc == 0, err
    assert {p.name: p.stat().st_size for p in data.rglob("*.parquet")} == sizes  # every shard the same size
    rc, _, err = _run("train", train, capsys)
    _expect(rc, err, 2, "changed since this run was split", "shards/train/part-00000.parquet: its bytes changed",
            "same size")


def test_resume_accepts_the_same_bytes_with_a_new_time_and_records_it(trained, tiny, tmp_path, capsys):
    data = Path(shutil.copytree(tiny, tmp_path / "tiny"))  # copied: every shard has a new time, the same bytes
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    for name in ("run.json", "config.yaml"):
        (run / name).write_text((run / name).read_text().replace(str(tiny), str(data)))
    rc, _, err = _run("selftrain", _sel(data, run), capsys)
    assert rc == 0, err
    shard = data / "shards" / "train" / "part-00000.parquet"
    recorded = json.loads((run / "run.json").read_text())["data"]["shards"]["shards/train/part-00000.parquet"]
    assert recorded["mtime_us"] == shard.stat().st_mtime_ns // 1000  # the next resume reads nothing


# ----------------------------------------------------------------------------------------- the mechanism


def test_output_dir_claims_stages_and_commits(tmp_path):
    out = tmp_path / "out"
    with OutputDir(str(out), kind="predictions", owns=("*.parquet",)) as o:
        with o.staged() as staged:
            storage.write_text(storage.join(staged, "a.parquet"), "1")
            storage.write_text(storage.join(staged, "sub", "b.parquet"), "2")
            o.commit(staged, {storage.join(staged, "a.parquet"): "f" * 64})
        assert not any(p.name.startswith(".raytal-staging") for p in out.iterdir())
        with o.staged() as staged:  # a second pass writes a.parquet only: b.parquet, listed, goes
            storage.write_text(storage.join(staged, "a.parquet"), "3")
            o.commit(staged)
    assert sorted(read_manifest(str(out)).files) == ["a.parquet"] and not (out / "sub").exists()
    with pytest.raises(InputError, match="holds raytal's predictions, not dataset"):
        OutputDir(str(out), kind="dataset").claim()  # a folder raytal made for another job is not this one's
    with OutputDir(str(out), kind="predictions", owns=("*.parquet",)) as o, pytest.raises(KeyboardInterrupt):
        with o.staged():
            raise KeyboardInterrupt  # Ctrl+C: the staging folder goes, the output stays
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "a.parquet"] and (out / "a.parquet").read_text() == "3"
