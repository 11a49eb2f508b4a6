"""Bad input, continued (issue 22's sweep): run directories, checkpoints, pseudo-label files, evaluation and
comparison inputs, extreme JSON, unexpected failures, through the real jobs (docs/reliability.md lists the
cases with the messages recorded by ``RAYTAL_BAD_INPUT_MESSAGES``).

Every case runs a job's ``run_job(main, argv)`` in this process (what ``python jobs/X.py`` runs; the process
boundary itself is checked by the busy-directory test, which starts the job as a real subprocess while
another process holds the run) and asserts the exit status, that no traceback is printed, and that the
message names the key, file or field. The run-directory cases resume one finished tiny run (1 epoch, built
once per module, copied by the cases that break it): they fail before any training (the branch test alone
trains one more round), so the module takes a few times as long as that one run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from raytal.core import storage
from raytal.core.errors import RunStateError
from raytal.data.pseudo_io import PSEUDO_SCHEMA
from raytal.data.shards import read_shards, write_shards
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.selftrain import run_lock
from raytal.selftrain.run_lock import Holder, RunLock

from test_bad_input import D, REPO, T_FULL, _convert, _det, _gt_json, _job, _pred, _raw_annotations

FAST = ["--set", "train.epochs=1", "--set", "train.warmup_epochs=0", "--set", "train.min_batches_per_epoch=1"]


def _record(job: str, rc: int, err: str) -> None:
    """With $RAYTAL_BAD_INPUT_MESSAGES set, append what the user saw to that file (JSON lines): the messages
    in docs/reliability.md come from it."""
    if path := os.environ.get("RAYTAL_BAD_INPUT_MESSAGES"):
        with open(path, "a") as f:
            test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]  # "<id> (call)"
            f.write(json.dumps({"test": test, "job": job, "rc": rc, "err": err}) + "\n")


def _run(job: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    capsys.readouterr()
    from raytal.cli import run_job

    rc = run_job(_job(job).main, argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Traceback" not in out.out
    _record(job, rc, out.err)
    return rc, out.out, out.err


def _expect(rc: int, err: str, status: int, *texts: str) -> None:
    assert rc == status, f"exit {rc}, stderr {err!r}"
    for text in texts:
        assert text in err, f"{text!r} not in {err!r}"


# ------------------------------------------------------------------------------ a finished run to resume


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    assert _job("make_dataset").main(["--preset", "tiny", "--out", str(out)]) == 0
    return out


def _argv(tiny: Path, run: Path, *extra: str, config: str = "tiny_npl.yaml") -> list[str]:
    return ["--config", str(REPO / "configs" / config), "--in-process", "--set", f"data.root={tiny}",
            "--set", f"run.dir={run}", *FAST, *extra]


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "npl"
    from raytal.cli import run_job

    assert run_job(_job("selftrain").main, _argv(tiny, run)) == 0
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A private copy of the finished run that a case may break."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _ledger(run: Path) -> dict:
    return json.loads((run / "stages.json").read_text())


def _forget(run: Path, *stages: str) -> None:
    """Drop stages from the ledger, as if the run had been killed before them."""
    data = _ledger(run)
    for s in stages:
        del data["stages"][s]
    (run / "stages.json").write_text(json.dumps(data))


# (case, how to break the copy (or None), extra argv, expected exit, substrings of stderr)
RUN_CASES: list[tuple[str, Callable[[Path], None] | None, list[str], int, list[str]]] = [
    ("labeled ratio changed", None, ["--set", "data.labeled_ratio=0.5"], 2,
     ["holds a run of another config", "'data.labeled_ratio' was 0.1, now 0.5", "another run.dir"]),
    ("model size changed", None, ["--set", "model.embed_dim=64", "--set", "model.head_dim=64"], 2,
     ["'model.embed_dim' was 32, now 64", "'model.head_dim' was 32, now 64"]),
    ("evaluation protocol changed", None, ["--set", "eval.tious=[0.5]"], 2, ["'eval.tious' was [], now [0.5]"]),
    ("split seed changed", None, ["--set", "data.split_seed=3"], 2, ["'data.split_seed' was 0, now 3"]),
    ("stages.json truncated (killed mid-write)", lambda r: (r / "stages.json").write_text(
        (r / "stages.json").read_text()[:100]), [], 2,
     ["stages.json: not valid JSON", "cannot tell which of its stages finished", "delete", "another run.dir"]),
    ("stages.json not a ledger", lambda r: (r / "stages.json").write_text("[1, 2]"), [], 2,
     ["stages.json: not a stage ledger"]),
    ("stages.json with a broken stage entry", lambda r: (r / "stages.json").write_text(
        json.dumps({"stages": {"split": {"result": {}, "seconds": "soon"}}})), [], 2,
     ["stages.json: stage 'split'", "broken entry"]),
    ("stages.json nested 5000 deep", lambda r: (r / "stages.json").write_text("[" * 5000 + "]" * 5000), [], 2,
     ["stages.json: refused: nested 5000 levels deep"]),
    ("stages.json empty", lambda r: (r / "stages.json").write_text(""), [], 2, ["stages.json: not valid JSON"]),
    ("config.yaml of the run corrupt", lambda r: (r / "config.yaml").write_bytes(b"\x00\x01binary"), [], 2,
     ["config.yaml: not a text YAML file", "record of the config that made the run"]),
    ("config.yaml of the run out of range", lambda r: (r / "config.yaml").write_text("train:\n  lr: .nan\n"), [], 2,
     ["config.yaml: config key 'train.lr'", "record of the config"]),
    ("config.yaml of the run gone", lambda r: (r / "config.yaml").unlink(), [], 2,
     ["config.yaml: missing, but", "stages.json records finished stages"]),
    ("run.json corrupt", lambda r: (r / "run.json").write_text("{\"data\": 7}"), [], 2,
     ["run.json: not a run record"]),
    ("a shard of the dataset rewritten", None, [], 2,
     ["the dataset under data.root=", "changed since this run was split", "shards/train/part-00000.parquet has"]),
    ("dataset.yaml edited", None, [], 2, ["changed since this run was split", "dataset.yaml changed"]),
]


def _rewrite_train_shard(tiny: Path) -> None:
    shard_dir = tiny / "shards" / "train"
    videos = list(read_shards(shard_dir))[1:]
    for old in shard_dir.glob("part-*.parquet"):  # the subset re-converted without its first video
        old.unlink()
    write_shards(videos, shard_dir, rows_per_shard=64)


def _edit_dataset_yaml(tiny: Path) -> None:
    info = yaml.safe_load((tiny / "dataset.yaml").read_text())
    info["name"] = "tiny (edited)"
    (tiny / "dataset.yaml").write_text(yaml.safe_dump(info))


@pytest.mark.parametrize("case, breaker, extra, status, expected", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_resuming_a_run_directory_names_what_differs(run, tiny, tmp_path, capsys, case, breaker, extra, status,
                                                     expected):
    data = tiny
    if case.startswith(("a shard", "dataset.yaml")):  # the data changes under the run: a private copy of it
        data = Path(shutil.copytree(tiny, tmp_path / "tiny"))
        (run / "run.json").write_text((run / "run.json").read_text().replace(str(tiny), str(data)))
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["data"]["root"] = str(data)
        (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (_rewrite_train_shard if case.startswith("a shard") else _edit_dataset_yaml)(data)
    elif breaker is not None:
        breaker(run)
    config_before = (run / "config.yaml").read_bytes() if (run / "config.yaml").exists() else None
    rc, _, err = _run("selftrain", _argv(data, run, *extra), capsys)
    _expect(rc, err, status, *expected)
    assert len(err.strip().splitlines()) == 1  # one line, the message
    if config_before is not None:
        assert (run / "config.yaml").read_bytes() == config_before  # the record is never overwritten by a refusal


def test_another_recipe_on_a_finished_run_is_refused_and_compare_keeps_the_old_recipe(run, tiny, capsys):
    # The issue: re-running a finished NPL run with the APL recipe reported "finished" with NPL's stages,
    # and config.yaml was already APL's, so compare.py filed NPL's numbers under APL.
    rc, _, err = _run("selftrain", _argv(tiny, run, config="tiny_apl.yaml"), capsys)
    _expect(rc, err, 2, "'model.quality_heads' was False, now True", "'recipe.npl.enabled' was True, now False",
            "'recipe.apl.enabled' was False, now True")
    rc, out, err = _run("compare", [str(run), "--group-by", "recipe", "--out", str(run / "c.png")], capsys)
    assert rc == 0, err
    assert "| npl | 1 |" in out


def test_the_supervised_job_on_a_self_training_run_is_refused(run, tiny, capsys):
    argv = ["--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={tiny}",
            "--set", f"run.dir={run}", *FAST]
    rc, _, err = _run("train", argv, capsys)
    _expect(rc, err, 2, "'data.labeled_ratio' was 0.1, now 1.0", "'recipe.npl.enabled' was True, now False")


def test_keys_that_may_change_on_resume_are_recorded(run, tiny, capsys):
    # ray.*, train.torch_threads and run.rounds say where and how far the run goes, not what it computes.
    before = _ledger(run)
    rc, out, err = _run("selftrain", _argv(tiny, run, "--set", "train.torch_threads=2", "--set",
                                           "ray.num_workers=2", "--set", "ray.actor_pool_size=5"), capsys)
    assert rc == 0, err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["train"]["torch_threads"], saved["ray"]["num_workers"], saved["ray"]["actor_pool_size"]) == (2, 2, 5)
    assert _ledger(run) == before  # nothing recomputed: the run was finished
    assert f"run directory: {run}" in out


def test_a_lost_index_is_rebuilt_and_the_run_finishes(run, tiny, capsys, caplog):
    original = json.loads((run / "index.json").read_text())
    (run / "index.json").write_text("{ cut short")
    _forget(run, "finished_1_rounds")  # the run resumes (nothing left to train) and reads its index
    rc, _, err = _run("selftrain", _argv(tiny, run), capsys)
    assert rc == 0, err
    assert json.loads((run / "index.json").read_text()) == original
    assert any("rebuilt it from the config and the unchanged dataset" in r.getMessage() for r in caplog.records)


def test_run_dir_that_is_a_regular_file(tiny, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    rc, _, err = _run("selftrain", _argv(tiny, target), capsys)
    _expect(rc, err, 2, f"run.dir={target}: is a regular file")
    assert target.read_text() == "my notes"


def test_train_job_with_run_dir_naming_a_regular_file(tiny, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    argv = ["--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={tiny}",
            "--set", f"run.dir={target}", *FAST]
    rc, _, err = _run("train", argv, capsys)
    _expect(rc, err, 2, f"run.dir={target}: is a regular file, expected a run directory")
    assert target.read_text() == "my notes"


def test_run_dir_below_a_regular_file(tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc, _, err = _run("selftrain", _argv(tiny, tmp_path / "file" / "run"), capsys)
    _expect(rc, err, 2, "run.dir=", "cannot create the run directory")


def test_a_changed_config_is_refused_and_branches_into_a_new_run_directory(run, tiny, tmp_path, capsys):
    # The way the refusal names: another run.dir; the finished teacher is shared by run.teacher, since
    # recipe.npl.alpha (the weight of the pseudo-labeled loss) cannot change round 0.
    config_before = (run / "config.yaml").read_bytes()
    rc, _, err = _run("selftrain", _argv(tiny, run, "--set", "recipe.npl.alpha=0.5"), capsys)
    _expect(rc, err, 2, "'recipe.npl.alpha' was 1.0, now 0.5", "another run.dir", "run.teacher=")
    assert (run / "config.yaml").read_bytes() == config_before
    teacher = run / "round_0" / "train" / "final.pt"
    branch = tmp_path / "branch"
    rc, _, err = _run("selftrain", _argv(tiny, branch, "--set", "recipe.npl.alpha=0.5", "--set",
                                         f"run.teacher={teacher}"), capsys)
    assert rc == 0, err
    assert _ledger(branch)["stages"]["round_0/train"]["result"] == str(teacher)  # shared, not retrained
    assert not (branch / "round_0" / "train" / "final.pt").exists()
    old, new = (json.loads((d / "metrics.json").read_text())["rounds"] for d in (run, branch))
    assert new[0]["eval"] == old[0]["eval"]  # one checkpoint, one test set: the same round-0 figures
    assert [r["round"] for r in new] == [0, 1]
    assert yaml.safe_load((branch / "config.yaml").read_text())["recipe"]["npl"]["alpha"] == 0.5
    assert (run / "config.yaml").read_bytes() == config_before


# --------------------------------------------------------------------------------------- checkpoints


class _Payload:
    """Unpickling it would create a directory: the code execution a checkpoint must never get."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def _malicious(tmp_path: Path) -> Path:
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(tmp_path / "pwned")}, path)  # a torch zip: only weights_only stops it
    return path


def _edited(checkpoint: Path, out: Path, **fields) -> Path:
    """A detector checkpoint claiming another class count or feature width (what another dataset's has)."""
    state = load_checkpoint(checkpoint)
    state.update(fields)
    save_checkpoint(out, state)
    return out


NOT_RAYTAL = "not a raytal checkpoint (refused by weights-only loading: it holds Python objects beyond tensors"
NOT_FOUND = "checkpoint not found"
TWENTY = "a detector checkpoint for 20 classes, expected 5 classes"
NOT_FITTING = "its weights do not fit the configured model (model.* differs)"
WIDER = ["--set", "model.embed_dim=64", "--set", "model.head_dim=64"]

# (case, the checkpoint given (from the finished run and tmp_path), extra argv, expected in stderr)
CHECKPOINT_CASES: list[tuple[str, Callable[[Path, Path], Path], list[str], list[str]]] = [
    ("malicious pickle", lambda run, tmp: _malicious(tmp), [], [NOT_RAYTAL]),
    ("missing file", lambda run, tmp: tmp / "teacher.pt", [], [NOT_FOUND]),
    ("another class count", lambda run, tmp: _edited(run / "round_0/train/final.pt", tmp / "c20.pt", num_classes=20),
     [], [TWENTY]),
    ("another feature width", lambda run, tmp: _edited(run / "round_0/train/final.pt", tmp / "d64.pt", input_dim=64),
     [], ["for D = 64 features, expected D = 32 features"]),
    ("another model size", lambda run, tmp: run / "round_0/train/final.pt", WIDER, [NOT_FITTING, "size mismatch"]),
    ("a training state, not a model", lambda run, tmp: run / "round_0/train/last.pt", [],
     ["a training-state checkpoint, expected a detector checkpoint"]),
]


@pytest.mark.parametrize("case, checkpoint, extra, expected", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_predict_checks_its_checkpoint(finished, tiny, tmp_path, capsys, case, checkpoint, extra, expected):
    ckpt = checkpoint(finished, tmp_path)
    argv = ["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--set", f"data.root={tiny}", *extra, "--checkpoint",
            str(ckpt), "--shards", str(tiny / "shards" / "test"), "--out", str(tmp_path / "out.json"), "--in-process"]
    rc, _, err = _run("predict", argv, capsys)
    _expect(rc, err, 2, f"{ckpt}: ", *expected)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("case, checkpoint, extra, expected", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_shared_teacher_is_checked_before_the_run_records_it(finished, tiny, tmp_path, capsys, case, checkpoint,
                                                               extra, expected):
    ckpt = checkpoint(finished, tmp_path)
    run = tmp_path / "run"
    rc, _, err = _run("selftrain", _argv(tiny, run, *extra, "--set", f"run.teacher={ckpt}"), capsys)
    _expect(rc, err, 2, f"run.teacher: {ckpt}: ", *expected)
    assert not (tmp_path / "pwned").exists()
    assert list(_ledger(run)["stages"]) == ["split"]  # round 0 not recorded: a fixed file is used on the re-run


def _resume_with_last(edit: Callable[[Path, Path], None]) -> Callable[[Path, Path], Path]:
    def breaker(run: Path, tmp: Path) -> Path:
        _forget(run, "round_1/train", "round_1/eval", "finished_1_rounds")
        last = run / "round_1" / "train" / "last.pt"
        edit(last, tmp)
        return last
    return breaker


def _teacher_gone(run: Path, tmp: Path) -> Path:
    path = run / "round_0" / "train" / "final.pt"  # the ledger names the copy's own file (run-relative)
    _forget(run, "round_1/pseudo", "round_1/quality", "round_1/train", "round_1/eval", "finished_1_rounds")
    path.unlink()
    return path


def _student_replaced(run: Path, tmp: Path) -> Path:
    path = run / "round_1" / "train" / "final.pt"
    _forget(run, "round_1/eval", "finished_1_rounds")
    _edited(path, path, num_classes=20)
    return path


RESUME_CHECKPOINT_CASES = [
    ("malicious last.pt", _resume_with_last(lambda last, tmp: shutil.copy(_malicious(tmp), last)), [NOT_RAYTAL]),
    ("truncated last.pt", _resume_with_last(lambda last, tmp: last.write_bytes(last.read_bytes()[:4096])),
     ["not a raytal checkpoint (RuntimeError: PytorchStreamReader failed"]),
    ("finished teacher deleted", _teacher_gone, [NOT_FOUND]),
    ("finished student replaced", _student_replaced, [TWENTY]),
]


@pytest.mark.parametrize("case, breaker, expected", RESUME_CHECKPOINT_CASES,
                         ids=[c[0] for c in RESUME_CHECKPOINT_CASES])
def test_resuming_with_a_bad_checkpoint(run, tiny, tmp_path, capsys, case, breaker, expected):
    ckpt = breaker(run, tmp_path)
    rc, _, err = _run("selftrain", _argv(tiny, run), capsys)
    _expect(rc, err, 2, f"{ckpt}: ", *expected)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------- pseudo-label files of a run


def _pseudo_file(run: Path) -> Path:
    return sorted((run / "round_1" / "pseudo").rglob("*.parquet"))[0]


def _tamper(run: Path, edit: Callable[[list[dict]], None]) -> None:
    """Rewrite the round's first pseudo-label file with ``edit`` applied to its rows, and forget the student,
    so a resume reads them before it trains."""
    f = _pseudo_file(run)
    rows = pq.read_table(f).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), f)
    _forget(run, "round_1/train", "round_1/eval", "finished_1_rounds")


def _instance(**bad) -> dict:
    return {"label_id": 1, "start": 0.5, "end": 1.5, "score": 0.9, "weight": 1.0, "origin": "test", **bad}


def _set_instance(**bad) -> Callable[[list[dict]], None]:
    def edit(rows: list[dict]) -> None:
        rows[0].update(instances=[_instance(**bad)], error=None)
    return edit


def _append_row_for(video: str) -> Callable[[list[dict]], None]:
    def edit(rows: list[dict]) -> None:
        rows.append({**rows[0], "video_id": video})
    return edit


PSEUDO_CASES = [
    ("label id outside the classes", _set_instance(label_id=9), ["instances[0].label_id", "class id 0..4", "got 9"]),
    ("NaN weight", _set_instance(weight=float("nan")), ["instances[0].weight", "finite weight >= 0", "nan"]),
    ("negative weight", _set_instance(weight=-2.0), ["instances[0].weight", "got -2.0"]),
    ("NaN score", _set_instance(score=float("nan")), ["instances[0].score", "expected a finite number"]),
    ("reversed segment", _set_instance(start=3.0, end=1.0), ["instances[0].end", "after the start", "(start 3.0)"]),
    ("negative start", _set_instance(start=-4.0), ["instances[0].start", "finite time >= 0 s"]),
    ("segment past the video's end", _set_instance(end=1e6), ["instances[0].end", "after the end of the video"]),
    ("row for an unknown video", _append_row_for("zzz_not_in_the_split"),
     ["video 'zzz_not_in_the_split'", "field 'video_id'", "not in its source", "another run or split"]),
    ("instances on an error row", lambda rows: rows[0].update(instances=[_instance()], error="teacher failed"),
     ["field 'instances'", "an error row ('teacher failed') with 1 instances"]),
    ("dense targets with NaN", lambda rows: rows[0].update(
        targets=np.full((4, 5), np.nan, np.float16).tobytes(), T=4, C=5, error=None, instances=[]),
     ["field 'targets'", "NaN/Inf"]),
    ("dense targets of the wrong width", lambda rows: rows[0].update(
        targets=np.zeros((4, 3), np.float16).tobytes(), T=4, C=3, error=None, instances=[]),
     ["field 'targets'", "C = 3 columns, expected one per class (5)"]),
]


@pytest.mark.parametrize("case, edit, expected", PSEUDO_CASES, ids=[c[0] for c in PSEUDO_CASES])
def test_pseudo_labels_are_checked_before_a_student_trains(run, tiny, capsys, case, edit, expected):
    _tamper(run, edit)
    checkpoints = sorted(p.name for p in (run / "round_1" / "train").glob("*.pt"))
    rc, _, err = _run("selftrain", _argv(tiny, run), capsys)
    _expect(rc, err, 2, str(_pseudo_file(run)), *expected)
    assert sorted(p.name for p in (run / "round_1" / "train").glob("*.pt")) == checkpoints  # nothing trained


def test_truncated_pseudo_label_file(run, tiny, capsys):
    f = _pseudo_file(run)
    _forget(run, "round_1/train", "round_1/eval", "finished_1_rounds")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rc, _, err = _run("selftrain", _argv(tiny, run), capsys)
    _expect(rc, err, 2, str(f), "not a readable Parquet file (truncated or corrupt?)")


# ----------------------------------------------------------------------------- two jobs, one directory

HOLD = """
import sys, time
from raytal.selftrain.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(3600)
"""


def test_a_second_run_on_a_busy_directory_is_refused_and_a_dead_holders_lock_is_taken_over(finished, tiny, tmp_path):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        job = [sys.executable, str(REPO / "jobs" / "selftrain.py"), *_argv(tiny, run)]
        busy = subprocess.run(job, capture_output=True, text=True, env=env, cwd=REPO)
        _record("selftrain", busy.returncode, busy.stderr)
        assert busy.returncode == 2, busy.stderr
        assert "Traceback" not in busy.stderr
        assert f"run directory in use by pid {holder.pid} on host " in busy.stderr
        assert f"lock {run / 'run.lock'}" in busy.stderr
        assert (run / "config.yaml").read_bytes() == (finished / "config.yaml").read_bytes()
    finally:
        holder.send_signal(signal.SIGKILL)  # the holder dies without releasing: its identity stays in the file
        holder.wait()
    assert json.loads((run / "run.lock").read_text())["pid"] == holder.pid
    again = subprocess.run(job, capture_output=True, text=True, env=env, cwd=REPO)
    assert again.returncode == 0, again.stderr
    assert f"taking over the lock of pid {holder.pid}" in again.stderr and "already finished" in again.stderr
    assert not (run / "run.lock").exists()  # released at the end


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    first = RunLock(str(tmp_path))
    first.acquire()
    with pytest.raises(RunStateError, match=f"in use by pid {os.getpid()} on host"):
        RunLock(str(tmp_path)).acquire()
    first.release()
    with RunLock(str(tmp_path)):
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_holder(path: str, **fields) -> None:
    h = Holder.me()
    for k, v in fields.items():
        setattr(h, k, v)
    storage.write_text(path, h.to_text())


def test_object_store_lock(s3_dir, monkeypatch, caplog):
    path = storage.join(s3_dir, run_lock.LOCK_NAME)
    # held by this process: a second claim is refused
    first = RunLock(s3_dir)
    first.acquire()
    with pytest.raises(RunStateError, match=f"in use by pid {os.getpid()}.*last heartbeat"):
        RunLock(s3_dir).acquire()
    first.release()
    assert not storage.exists(path)
    # a holder of this machine whose process is gone: taken over at once
    _write_holder(path, pid=_dead_pid(), process_start=0.0)
    with RunLock(s3_dir):
        pass
    assert any("its process is gone" in r.getMessage() for r in caplog.records)
    # another machine: alive while its heartbeat is fresh, stale after STALE_AFTER_S
    _write_holder(path, machine="elsewhere/boot", host="node7")
    with pytest.raises(RunStateError, match="in use by pid .* on host node7"):
        RunLock(s3_dir).acquire()
    _write_holder(path, machine="elsewhere/boot", host="node7", heartbeat=time.time() - run_lock.STALE_AFTER_S - 60)
    with RunLock(s3_dir):
        pass


def test_object_store_lock_taken_over_stops_the_holder(s3_dir, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.0)
    lock = RunLock(s3_dir)
    lock.acquire()
    # The beat runs here, after the newcomer's write: in a thread, a beat that read the lock just before that
    # write would write itself back over it (a real newcomer then sees that when it reads its claim back
    # after SETTLE_S, and refuses; this fake newcomer does not read back).
    lock._stop.set()
    lock._beat.join()
    lock._stop.clear()
    _write_holder(lock.path, machine="elsewhere/boot", host="node7")  # a newcomer that judged us stale
    lock._heartbeat()  # notices and returns
    with pytest.raises(RunStateError, match="lost the run directory's lock to another job .*node7"):
        lock.check()
    lock.release()
    assert storage.exists(lock.path)  # the newcomer's lock is left alone


# ---------------------------------------------------------------------------------- evaluation inputs


def _evaluate(tmp_path: Path, capsys, pred_text: str | None = None, results: dict | None = None,
              gt: Path | None = None, *extra: str) -> tuple[int, str, str]:
    gt = gt or _gt_json(tmp_path / "gt.json")
    pred = tmp_path / "pred.json"
    if results is not None:
        _pred(pred, results)
    else:
        pred.write_text(pred_text or "")
    return _run("evaluate", ["--gt", str(gt), "--pred", str(pred), *extra], capsys)


EXACT_B = [_det("Throw", (5.0, 9.0))]

DEGENERATE_CASES = [
    # Jump: the zero-length detection (score 0.95) ranks first and matches nothing, then the exact one:
    # precision 1/2 at recall 1 -> AP 0.5; Throw exact -> 1. mAP 0.75 at every tIoU.
    ("zero-length segment", {"a": [_det(seg=(2.0, 2.0), score=0.95), _det()], "b": EXACT_B},
     "predictions with a zero-length segment: 1 in 1 video(s)", 0.75),
    # [-2, 4] against [1, 4]: tIoU 3/6 = 0.5, a match at 0.3, 0.4, 0.5, not at 0.6, 0.7: Jump AP 1,1,1,0,0;
    # with Throw's 1: mAP 1,1,1,.5,.5 -> average 0.8.
    ("segment starting before 0", {"a": [_det(seg=(-2.0, 4.0))], "b": EXACT_B},
     "predictions starting before 0 s: 1 (min start -2 s), scored as given", 0.8),
    # Only the order counts: the exact detection (-0.5) ranks above the false one (-0.9): AP 1 and 1.
    ("negative scores", {"a": [_det(score=-0.5), _det(seg=(10.0, 12.0), score=-0.9)], "b": EXACT_B},
     "predictions with a negative score: 2 (min -0.9), ranked as given", 1.0),
]


@pytest.mark.parametrize("case, results, warning, average", DEGENERATE_CASES,
                         ids=[c[0] for c in DEGENERATE_CASES])
def test_degenerate_predictions_are_scored_as_given_with_a_warning(tmp_path, capsys, case, results, warning, average):
    rc, out, err = _evaluate(tmp_path, capsys, None, results, None, "--json")
    assert rc == 0, err
    assert f"warning: {warning}" in err
    assert json.loads(out)["average_mAP"] == pytest.approx(average)


LONG_ID = "v" * 1_000_000

EVAL_FILE_CASES = [
    ("NaN segment", '{"results": {"a": [{"label": "Jump", "segment": [NaN, 4.0], "score": 0.9}]}}',
     ["video 'a'", "field 'results[0].segment'", "expected finite [start, end] seconds"]),
    ("Infinity score", '{"results": {"a": [{"label": "Jump", "segment": [1.0, 4.0], "score": Infinity}]}}',
     ["field 'results[0].score'", "expected a finite number, got inf"]),
    ("score as text", json.dumps({"results": {"a": [_det() | {"score": "high"}]}}),
     ["field 'results[0].score'", "expected a number, got 'high'"]),
    ("label not a string", json.dumps({"results": {"a": [_det() | {"label": ["Jump"]}]}}),
     ["field 'results[0].label'", "label ['Jump'] is not in the ground-truth classes"]),
    ("integer of 400 digits", '{"results": {"a": [{"label": "Jump", "segment": [1, 1' + "0" * 400 + '], "score": 1}]}}',
     ["pred.json: refused: an integer of 401 digits"]),
    ("number beyond the float range", '{"results": {"a": [{"label": "Jump", "segment": [1, 1e999], "score": 1}]}}',
     ["pred.json: refused: the number 1e999 is beyond the float range"]),
    ("nested 100000 deep", '{"results": ' + "[" * 100_000 + "]" * 100_000 + "}", ["pred.json: refused: nested 100001"]),
    ("a one-megabyte video id", json.dumps({"results": {LONG_ID: [_det()]}}),
     ["video 'vvvv", "(1000000 characters)", "unknown video"]),
    ("not JSON at all", "\x89PNG\r\n\x1a\n\x00\x00", ["pred.json: not valid JSON"]),
    ("results a list", '{"results": [1, 2]}', ["pred.json: field 'results': expected a top-level object with a "
                                               "'results' mapping"]),
    ("a detection not an object", '{"results": {"a": [7]}}', ["video 'a'", "field 'results[0]': expected an object"]),
    ("a segment of 3 numbers", json.dumps({"results": {"a": [_det() | {"segment": [1, 2, 3]}]}}),
     ["field 'results[0].segment': expected [start, end] numbers, got [1, 2, 3]"]),
]


@pytest.mark.parametrize("case, text, expected", EVAL_FILE_CASES, ids=[c[0] for c in EVAL_FILE_CASES])
def test_evaluator_refuses_a_bad_prediction_file(tmp_path, capsys, case, text, expected):
    rc, _, err = _evaluate(tmp_path, capsys, pred_text=text)
    _expect(rc, err, 2, *expected)
    assert len(err) < 2000  # one short line, even for a megabyte id


def test_endless_prediction_input(tmp_path, capsys):
    gt = _gt_json(tmp_path / "gt.json")
    rc, _, err = _run("evaluate", ["--gt", str(gt), "--pred", "/dev/zero"], capsys)
    _expect(rc, err, 2, "/dev/zero: not a regular file")


def test_ground_truth_with_an_overlong_video_id(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"x" * 300: {"subset": "test", "duration": 5.0, "fps": 30.0,
                                                        "annotations": []}}}))
    rc, _, err = _evaluate(tmp_path, capsys, results={}, gt=gt)
    _expect(rc, err, 2, "gt.json", "video id of 300 bytes: expected at most 250")


GROUND_TRUTH_CASES = [
    ("duration beyond the float range", '{"database": {"a": {"subset": "test", "duration": 1e999, "annotations": []}}}',
     ["gt.json: refused: the number 1e999 is beyond the float range"]),
    ("NaN segment", '{"database": {"a": {"subset": "test", "duration": 20, "fps": 30, "annotations": '
                    '[{"label": "Jump", "segment": [NaN, 4]}]}}}',
     ["gt.json: video 'a': field 'annotations[0].segment': expected finite times, got [nan, 4.0]"]),
    ("database a list", '{"database": []}', ["gt.json: field 'database': expected a top-level object"]),
]


@pytest.mark.parametrize("case, text, expected", GROUND_TRUTH_CASES, ids=[c[0] for c in GROUND_TRUTH_CASES])
def test_evaluator_refuses_bad_ground_truth(tmp_path, capsys, case, text, expected):
    gt = tmp_path / "gt.json"
    gt.write_text(text)
    rc, _, err = _evaluate(tmp_path, capsys, results={}, gt=gt)
    _expect(rc, err, 2, *expected)


THUMOS_DET_CASES = [
    ("class id outside the detection classes", "video_test_1 1.0 4.0 99 0.9",
     "video 'video_test_1': field 'line 1: class_id': '99' is not a THUMOS14 detection class id (one of [7, 9,"),
    ("unknown video", "video_x 1.0 4.0 7 0.9",
     "video 'video_x': field 'line 1: video': unknown video (not in the ground truth)"),
    ("NaN score", "video_test_1 1.0 4.0 7 nan",
     "video 'video_test_1': field 'line 1: score': expected a finite number, got 'nan'"),
    ("end beyond the float range", "video_test_1 1.0 1e400 7 0.9",
     "video 'video_test_1': field 'line 1: end': expected a finite number, got '1e400'"),
    ("a field missing", "video_test_1 1.0 4.0 7",
     "video 'video_test_1': field 'line 1': expected 5 fields (video start end class_id score), got 4"),
]


@pytest.mark.parametrize("case, line, expected", THUMOS_DET_CASES, ids=[c[0] for c in THUMOS_DET_CASES])
def test_thumos14_detection_txt_refused(tmp_path, capsys, case, line, expected):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / "BaseballPitch_test.txt").write_text("video_test_1 1.0 4.0\n")
    (tmp_path / "det.txt").write_text(line + "\n")
    rc, _, err = _run("evaluate", ["--gt", str(gt_dir), "--pred", str(tmp_path / "det.txt"), "--protocol", "thumos14"],
                      capsys)
    _expect(rc, err, 2, f"{tmp_path / 'det.txt'}: {expected}")


def test_thumos14_detection_txt_with_a_reversed_segment(tmp_path, capsys):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / "BaseballPitch_test.txt").write_text("video_test_1 1.0 4.0\n")
    (tmp_path / "det.txt").write_text("video_test_1 1.0 4.0 7 0.9\nvideo_test_1 6.0 2.0 7 0.8\n")
    rc, _, err = _run("evaluate", ["--gt", str(gt_dir), "--pred", str(tmp_path / "det.txt"), "--protocol", "thumos14"],
                      capsys)
    _expect(rc, err, 2, "det.txt: video 'video_test_1': field 'line 2: segment': end 2.0 < start 6.0")


# ------------------------------------------------------------------------------------------- compare


def _metrics(run: Path, edit: Callable[[dict], None]) -> None:
    """``edit`` the run's metrics.json, whose model is made its round 1 (the round compare reports)."""
    data = json.loads((run / "metrics.json").read_text())
    data["selection"]["round"] = 1
    edit(data)
    (run / "metrics.json").write_text(json.dumps(data))


COMPARE_CASES = [
    ("NaN average mAP", lambda m: m["rounds"][1]["eval"].update(average_mAP=float("nan")),
     ["metrics.json: field 'rounds[1].eval.average_mAP'", "expected a fraction in [0, 1], got nan"]),
    ("mAP@0.5 above 1", lambda m: m["rounds"][1]["eval"]["mAP"].update({"0.5": 1.5}),
     ["field 'rounds[1].eval.mAP.0.5'", "got 1.5"]),
    ("quality as text", lambda m: m["rounds"][1]["quality"].update(class_accuracy="high"),
     ["field 'rounds[1].quality.class_accuracy'", "fraction in [0, 1] or null, got 'high'"]),
    ("round number as text", lambda m: m["rounds"][0].update(round="zero"), ["metrics.json: not a selftrain metrics"]),
    ("rounds not a list", lambda m: m.update(rounds=5),
     ["metrics.json: not a selftrain metrics.json (expected rounds[]"]),
]


METRICS_FILE_CASES = [
    ("nested 100000 deep", "[" * 100_000 + "]" * 100_000, "refused: nested 100000 levels deep (expected at most 64)"),
    ("an integer of 400 digits", '{"rounds": [{"round": 1' + "0" * 399 + "}]}",
     "refused: an integer of 400 digits (expected at most 18)"),
    ("empty", "", "not valid JSON"),
]


@pytest.mark.parametrize("case, text, expected", METRICS_FILE_CASES, ids=[c[0] for c in METRICS_FILE_CASES])
def test_compare_refuses_an_unreadable_metrics_file(run, tmp_path, capsys, case, text, expected):
    (run / "metrics.json").write_text(text)
    rc, out, err = _run("compare", [str(run), "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, f"{run / 'metrics.json'}: {expected}")
    assert out == "" and not (tmp_path / "c.png").exists()


def test_compare_on_a_directory_without_metrics(tmp_path, capsys):
    rc, _, err = _run("compare", [str(tmp_path / "nothing"), "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, f"{tmp_path / 'nothing' / 'metrics.json'}: missing (is {tmp_path / 'nothing'} a finished "
            "selftrain run directory?)")


@pytest.mark.parametrize("case, edit, expected", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
def test_compare_refuses_metrics_it_cannot_report(run, tmp_path, capsys, case, edit, expected):
    _metrics(run, edit)
    rc, out, err = _run("compare", [str(run), "--out", str(tmp_path / "c.png")], capsys)
    _expect(rc, err, 2, *expected)
    assert "| recipe |" not in out  # no table printed as if valid
    assert not (tmp_path / "c.png").exists()


def test_compare_out_in_a_missing_directory(finished, tmp_path, capsys):
    rc, out, err = _run("compare", [str(finished), "--out", str(tmp_path / "no" / "such" / "c.png")], capsys)
    _expect(rc, err, 2, f"--out {tmp_path / 'no' / 'such' / 'c.png'}: directory {tmp_path / 'no' / 'such'} does not "
            "exist")
    assert out == ""


def test_compare_out_naming_a_directory(finished, tmp_path, capsys):
    rc, _, err = _run("compare", [str(finished), "--out", str(tmp_path)], capsys)
    _expect(rc, err, 2, "is a directory; expected a PNG file name")


# ----------------------------------------------------------------------------------- dataset inputs


ANNOTATION_EXTREMES = [
    ("duration as a 30-digit integer", lambda a: a["database"]["v1"].update(duration=10 ** 30),
     ["ann.json: refused: an integer of 31 digits"]),
    ("video id of 300 bytes", lambda a: a["database"].update({"w" * 300: a["database"].pop("v3")}),
     ["ann.json", "video id of 300 bytes"]),
]


@pytest.mark.parametrize("case, mutate, expected", ANNOTATION_EXTREMES, ids=[c[0] for c in ANNOTATION_EXTREMES])
def test_annotation_file_extremes(tmp_path, capsys, case, mutate, expected):
    ann = _raw_annotations()
    mutate(ann)
    capsys.readouterr()
    rc, err = _convert(tmp_path, capsys, ann)
    _record("make_dataset", rc, err)
    _expect(rc, err, 2, *expected)
    assert "Traceback" not in err


def test_annotation_file_nested_too_deep(tmp_path, capsys):
    rc, err = _convert(tmp_path, capsys, '{"database": ' + "[" * 3000 + "]" * 3000 + "}")
    _record("make_dataset", rc, err)
    _expect(rc, err, 2, "ann.json: refused: nested 3001 levels deep")


def test_features_of_an_absurd_magnitude(tmp_path, capsys):
    feats = np.full((T_FULL, D), 0.5, np.float32)
    feats[6, 3] = 3e30  # uninitialised memory, say
    rc, err = _convert(tmp_path, capsys, None, v2=feats)
    _record("make_dataset", rc, err)
    _expect(rc, err, 2, "v2.npy: video 'v2': field 'features'", "beyond +-1e+06", "snippet 6")


def test_pool_video_info_nested_too_deep(tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    np.save(pool / "u1.npy", np.zeros((T_FULL, D), np.float32))
    info = tmp_path / "info.json"
    info.write_text('{"u1": ' + "{\"a\": " * 200 + "1" + "}" * 200 + "}")
    rc, err = _convert(tmp_path, capsys, None, "--unlabeled-features", str(pool), "--video-info", str(info))
    _record("make_dataset", rc, err)
    _expect(rc, err, 2, "info.json: refused: nested 201 levels deep")


# ------------------------------------------------------------------------------- unexpected failures

BUG = """
import runpy, sys
import raytal.eval.detection as detection

def evaluate_detection(*args, **kwargs):  # a bug deep inside the job
    return 1 / 0

detection.evaluate_detection = evaluate_detection
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_an_unexpected_failure_in_a_real_job_is_one_line_naming_its_log(tmp_path):
    gt = _gt_json(tmp_path / "gt.json")
    pred = _pred(tmp_path / "pred.json", {"a": [_det()]})
    env = {**os.environ, "RAYTAL_LOG_DIR": str(tmp_path / "logs"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", BUG, str(REPO / "jobs" / "evaluate.py"), "--gt", str(gt), "--pred",
                           str(pred)], capture_output=True, text=True, env=env, cwd=tmp_path)
    _record("evaluate", proc.returncode, proc.stderr)
    (log,) = (tmp_path / "logs").iterdir()
    assert proc.returncode == 1
    assert proc.stderr == f"internal error: ZeroDivisionError: division by zero (full traceback in {log})\n"
    text = log.read_text()
    assert text.startswith(f"raytal job evaluate: {REPO / 'jobs' / 'evaluate.py'} --gt {gt} --pred {pred}\n")
    assert "Traceback (most recent call last)" in text and "in evaluate_detection" in text


@pytest.mark.parametrize("job", sorted(p.stem for p in (REPO / "jobs").glob("*.py")))
def test_every_job_runs_its_main_through_run_job(job):
    text = (REPO / "jobs" / f"{job}.py").read_text()
    assert text.rstrip().endswith('if __name__ == "__main__":\n    sys.exit(run_job(main))')
