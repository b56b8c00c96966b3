"""``detection-agent`` (and ``python -m agent``): the parser of every subcommand, then its handler.

Each command group lives in its own module here (run, detect, bench, data, training,
models, evaluate, record) with its arguments and a ``cmd_*`` handler that calls into the
package; agent/cli/errors.py maps what a handler raises to the exit codes listed in
agent/errors.py, with one ``error: ...`` line on stderr (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from agent.cli import bench, data, detect, evaluate, models, record, run, training
from agent.cli.arguments import add_common
from agent.cli.errors import call_handler

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Plain text on stderr, once per process; journald adds its own timestamps on a device."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detection-agent",
        description="Edge real-time object detection: cameras -> YOLO -> NMS -> MQTT.",
    )
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (run, detect, bench, data, training, models, evaluate, record):
        group.register(sub)
    for p in sub.choices.values():
        add_common(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from agent.runtime import service

    # First of all: a SIGHUP (systemctl reload) while `run` still imports and loads its model
    # would otherwise kill it; it is kept and applied once the daemon runs.
    service.hold_reload_signal()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        service.release_reload_signal()
    debug = getattr(args, "debug", False)
    level = getattr(args, "log_level", getattr(args, "default_log_level", "WARNING"))
    configure_logging("DEBUG" if debug else level)
    usage_check = getattr(args, "usage_check", None)
    if usage_check is not None:
        usage_check(parser, args)  # usage errors that argparse cannot express: exit 2
    code = call_handler(args.handler, args, debug)
    if args.command == "run":
        run.leave_after_run(code)
    return code
