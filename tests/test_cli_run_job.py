"""``run_job``: every failure of a job becomes one line on stderr and an exit status, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from raytal.cli import run_job
from raytal.config import ConfigError
from raytal.core.errors import CheckpointError, DataError, InputError


def _raiser(error: BaseException):
    def main(argv: list[str] | None = None) -> int:
        raise error
    return main


def _failing_deep_inside(argv: list[str] | None = None) -> int:
    def train_step() -> None:
        raise RuntimeError("loss is nan\nat epoch 3, batch 2")
    train_step()
    return 0


@pytest.fixture()
def log_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RAYTAL_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


@pytest.mark.parametrize("error", [InputError("x.yaml: bad"), ConfigError("config key 'train.lr': bad"),
                                   DataError("shard: video 'v': field 'features': bad"),
                                   CheckpointError("a.pt: checkpoint not found")], ids=lambda e: type(e).__name__)
def test_input_errors_are_one_line_and_status_2(error, log_dir, capsys):
    assert run_job(_raiser(error), []) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {error}\n" and captured.out == ""
    assert not log_dir.exists()  # nothing to debug: no log file


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_log(log_dir, capsys):
    assert run_job(_failing_deep_inside, ["--config", "c.yaml"]) == 1
    err = capsys.readouterr().err
    (log,) = log_dir.iterdir()
    assert log.name.startswith("raytal-test_cli_run_job-") and log.suffix == ".log"  # the job is the main's module
    assert err == f"internal error: RuntimeError: loss is nan (full traceback in {log})\n"
    text = log.read_text()
    assert text.startswith("raytal job test_cli_run_job: test_cli_run_job --config c.yaml\n")
    assert "Traceback (most recent call last)" in text and "in train_step" in text
    assert "RuntimeError: loss is nan\nat epoch 3, batch 2" in text


def test_the_log_goes_to_the_temp_dir_without_raytal_log_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAYTAL_LOG_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_job(_raiser(KeyError("k")), []) == 1
    (log,) = tmp_path.glob("raytal-test_cli_run_job-*.log")
    assert capsys.readouterr().err == f"internal error: KeyError: 'k' (full traceback in {log})\n"


def test_without_a_writable_log_dir_the_traceback_is_printed(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RAYTAL_LOG_DIR", str(blocker / "logs"))  # below a file: cannot be created
    assert run_job(_raiser(RuntimeError("boom")), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: RuntimeError: boom (no log file: ")
    assert "Traceback (most recent call last)" in err  # the only place it can go


def test_an_input_error_behind_another_is_still_the_users(log_dir, capsys):
    # `raise ... from` a DataError, and a remote error that keeps the original in .cause (Ray's RayTaskError;
    # its own text carries the worker's traceback, which must not reach the user).
    def chained(argv=None):
        try:
            raise DataError("s.parquet: video 'v': field 'features': NaN/Inf values")
        except DataError as e:
            raise RuntimeError("training failed") from e

    class RemoteError(RuntimeError):
        def __init__(self, cause: BaseException):
            super().__init__("ray::worker (pid=1)\nTraceback (most recent call last): ...")
            self.cause = cause

    assert run_job(chained, []) == 2
    assert capsys.readouterr().err == "error: s.parquet: video 'v': field 'features': NaN/Inf values\n"
    assert run_job(_raiser(RemoteError(ConfigError("config key 'x': bad"))), []) == 2
    assert capsys.readouterr().err == "error: config key 'x': bad\n"
    assert run_job(_raiser(RemoteError(ZeroDivisionError("division by zero"))), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: RemoteError: ray::worker (pid=1) (full traceback in ") and "\n" not in err[:-1]


def test_ctrl_c_is_130_and_the_jobs_own_status_passes_through(log_dir, capsys):
    assert run_job(_raiser(KeyboardInterrupt()), []) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert run_job(lambda argv: 0, []) == 0
    assert run_job(lambda argv: 1, []) == 1  # e.g. pseudolabel: a shard was unreadable
    with pytest.raises(SystemExit):  # argparse's --help / usage errors keep their own exit
        run_job(_raiser(SystemExit(2)), [])
    assert not log_dir.exists()
