"""The project's exception hierarchy and the process exit codes.

Every error the agent raises on purpose is an ``AgentError``. The command line
(agent/cli/errors.py) turns one into a single ``error: ...`` line and the error's exit code.
Every exit code of ``detection-agent``, in one place:

====  =======================  =====================================================================
code  name                     when
====  =======================  =====================================================================
0     ``EXIT_OK``              done; ``ensure-engine``: the engine is current, was built, or none is needed
1     ``EXIT_FAILURE``         a run-time failure (backend, camera, broker, disk); ``ensure-engine``: an
                               engine is needed and could not be built (or, with ``--check``, is needed)
2     ``EXIT_BAD_INPUT``       bad usage or bad input (arguments, config, model file, data set)
3     ``EXIT_ALREADY_RUNNING`` ``run``: another agent holds this config's state directory
4     ``EXIT_UNDELIVERED``     ``run``: stopped with messages still in the spool after the drain
130   ``EXIT_INTERRUPTED``     interrupted (Ctrl-C)
====  =======================  =====================================================================
"""

from __future__ import annotations

from typing import Iterable, List

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_ALREADY_RUNNING = 3
EXIT_UNDELIVERED = 4
EXIT_INTERRUPTED = 130


class AgentError(Exception):
    """Base of all errors the agent raises deliberately."""

    #: Process exit code the CLI uses for this error.
    exit_code = EXIT_FAILURE


class BadInputError(AgentError):
    """The user gave something unusable (a file, a value, a path): exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """An invalid configuration file or override.

    ``problems`` holds one line per problem, each ``FILE:LINE: key.path: message`` so an
    editor can jump to it; ``str(error)`` joins them.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: List[str] = list(problems) or ["invalid configuration"]
        super().__init__("\n".join(self.problems))


class ModelError(BadInputError):
    """A model file that cannot be read, or whose shape or metadata make no sense."""


class DataError(BadInputError):
    """Bad images, labels, ground truth or prediction files."""


class BackendError(AgentError):
    """The inference runtime failed (missing library, out of memory, engine mismatch)."""


class AlreadyRunningError(AgentError):
    """Another agent holds this configuration's state directory: exit code 3.

    Its own code, so that a script (or ``RestartPreventExitStatus=3``) can tell "already
    running" from a failure worth retrying.
    """

    exit_code = EXIT_ALREADY_RUNNING


class CaptureError(AgentError):
    """A camera or video source could not be opened or stopped delivering frames."""


class PublishError(AgentError):
    """The MQTT client or the on-disk spool failed."""


class OutputError(AgentError):
    """An output the user asked for could not be written (``run --save-video``'s annotated video)."""

