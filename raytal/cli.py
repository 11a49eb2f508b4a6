"""What every Ray job's command line shares: --config/--set/--address, log format, config errors."""

from __future__ import annotations

import argparse
import logging
import sys

from raytal.config import Config, ConfigError, add_config_args, config_from_args


def job_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--address", default=None, help="Ray cluster address (overrides ray.address / RAY_ADDRESS)")
    return parser


def job_config(args: argparse.Namespace) -> Config | None:
    """The job's config with ``--address`` applied and INFO logging set up; None (after printing why)
    when the config is invalid."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = config_from_args(args)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    if args.address is not None:
        cfg.ray.address = args.address
    return cfg
