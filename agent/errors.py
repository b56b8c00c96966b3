"""The project's exception hierarchy.

Every error the agent raises on purpose is an ``AgentError``. The CLI turns one into a
single ``error: ...`` line and an exit code: 2 when the user's input is at fault (config,
model file, data set), 1 when something failed at run time (backend, camera, broker), 3
when ``run`` finds another agent already running on the same state directory.
"""

from __future__ import annotations

from typing import Iterable, List


class AgentError(Exception):
    """Base of all errors the agent raises deliberately."""

    #: Process exit code the CLI uses for this error.
    exit_code = 1


class BadInputError(AgentError):
    """The user gave something unusable (a file, a value, a path): exit code 2."""

    exit_code = 2


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

    exit_code = 3


class CaptureError(AgentError):
    """A camera or video source could not be opened or stopped delivering frames."""


class PublishError(AgentError):
    """The MQTT client or the on-disk spool failed."""

