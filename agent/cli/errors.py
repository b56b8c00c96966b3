"""The one mapping from what a subcommand raised to its exit code and ``error: ...`` lines.

The codes themselves are listed in agent/errors.py. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from agent.errors import EXIT_FAILURE, EXIT_INTERRUPTED, AgentError

log = logging.getLogger("agent")

Handler = Callable[[argparse.Namespace], int]


def call_handler(handler: Handler, args: argparse.Namespace, debug: bool = False) -> int:
    """The subcommand's exit code; errors become ``error: ...`` lines and their codes."""
    try:
        return handler(args)
    except AgentError as exc:
        if debug:
            log.exception("failed")
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, permissions: a runtime failure, not a bug
        if debug:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
