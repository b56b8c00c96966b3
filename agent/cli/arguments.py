"""Argument types and options shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from agent.inference.detector import DetectorSettings


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--log-level``, accepted before or after the subcommand."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default=argparse.SUPPRESS,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default WARNING)")


def configured_detector(config_path: Optional[str]) -> Optional[DetectorSettings]:
    """``--config FILE`` of detect and eval: the model side of that config, as ``run`` loads it."""
    if not config_path:
        return None
    from agent.config import loader as config
    from agent.inference.detector import DetectorSettings

    return DetectorSettings.from_config(config.load(config_path))
