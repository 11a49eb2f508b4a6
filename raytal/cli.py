"""What every job's command line shares: --config/--set/--address/--verbose, the back-end its stages run on
(``job_backend``, chosen here once for every job), the log format, and ``run_job``, the entry wrapper that
turns any failure into one line on stderr and an exit status.

Exit status of ``run_job``: the job's own, 2 for input the user can fix (``InputError``: config, data,
checkpoint), 130 for Ctrl+C, 1 for anything else; then the full traceback goes to a log file
(``raytal-<job>-<time>.log`` under ``$RAYTAL_LOG_DIR``, else the system temp directory: ``raytal.core.logfiles``), not the terminal.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from raytal.config import Config, add_config_args, config_from_args
from raytal.core.errors import InputError
from raytal.core.logfiles import log_file

if TYPE_CHECKING:  # the jobs' --help must not wait for torch
    from raytal.selftrain.backend import Backend


OVERWRITE_HELP = ("write into an output folder that holds files raytal did not write, beside them: none of them "
                  "is deleted or replaced (the job refuses when one lies where it writes). Without it such a "
                  "folder is refused; a folder raytal wrote is always replaced by the job's new output")


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def job_parser(doc: str | None, in_process: bool = True) -> argparse.ArgumentParser:
    """The shared options; ``in_process`` adds ``--in-process`` (jobs whose stages may run without Ray)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--address", default=None, help="Ray cluster address (overrides ray.address / RAY_ADDRESS)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own output here too (its progress bars, worker and system logs); by default "
                             "it goes to Ray's session logs only")
    if in_process:
        parser.add_argument("--in-process", action="store_true", help="run every stage in this process, without Ray")
    add_overwrite_arg(parser)
    return parser


def job_backend(args: argparse.Namespace, cfg: Config) -> "Backend":
    """Where the job's stages run, for all of them: in this process (``--in-process``), else on Ray (the
    cluster of ``--address`` / ``ray.address`` / RAY_ADDRESS, else a private local Ray on 127.0.0.1)."""
    if getattr(args, "in_process", False):
        from raytal.selftrain.local import LocalBackend

        return LocalBackend()
    from raytal.distributed.backend import RayBackend

    return RayBackend(cfg, verbose=args.verbose)


def job_config(args: argparse.Namespace) -> Config:
    """The job's validated config with ``--address`` applied, after setting up INFO logging; a bad config
    raises ``ConfigError`` (``run_job`` reports it)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_args(args)
    if args.address is not None:
        cfg.ray.address = args.address
    return cfg


def _input_error(exc: BaseException) -> InputError | None:
    """The user-fixable error behind ``exc``: itself, or one it was raised from. A remote error (Ray's
    ``RayTaskError``) keeps the original in ``.cause``; its own text carries the remote traceback."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            current = cause
            continue
        if isinstance(current, InputError):
            return current
        current = current.__cause__
    return None


def _write_log(job: str, argv: list[str]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = log_file(f"raytal-{job}-{stamp}.log")
    path.write_text(f"raytal job {job}: {' '.join(argv)}\n\n{traceback.format_exc()}")
    return path


def run_job(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)``'s exit status, with every failure reported in one line (module docstring).
    Used as ``sys.exit(run_job(main))`` by every job in jobs/."""
    job = Path(inspect.getfile(main)).stem
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        user = _input_error(e)
        if user is not None:
            print(f"error: {user}", file=sys.stderr)
            return 2
        first = (str(e).strip().splitlines() or [""])[0]
        summary = f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__
        try:
            log = _write_log(job, sys.argv if argv is None else [job, *argv])
        except OSError as log_error:  # nowhere to write it: the traceback is all there is to go on
            print(f"internal error: {summary} (no log file: {log_error}); traceback:\n{traceback.format_exc()}",
                  file=sys.stderr)
            return 1
        print(f"internal error: {summary} (full traceback in {log})", file=sys.stderr)
        return 1
