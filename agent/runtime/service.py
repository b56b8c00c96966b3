"""Living under systemd: the notify protocol, signals turned into events, one agent per state.

``Notifier`` speaks sd_notify over ``NOTIFY_SOCKET`` (a Unix datagram socket, abstract
when the path starts with ``@``); outside systemd every call is a no-op. The daemon sends
READY=1 once the model is loaded and the publisher started (a camera that is not up yet
does not hold it back), WATCHDOG=1 only while the inference loop makes progress, cameras or
not (so a hung pipeline gets restarted by ``WatchdogSec=``, a camera outage does not), and
STATUS= lines people see in ``systemctl status``.

``hold_reload_signal`` catches SIGHUP from the first line of the CLI on, so a reload sent
while the agent still imports and loads its model (whose default action would kill it)
is kept and applied once the daemon runs. ``InstanceLock`` is an ``flock`` on
``{service.state_dir}/agent.lock``: a second agent on the same configuration refuses to
start instead of sharing the spool and evicting the first from the broker every second.
The kernel drops the lock when the process ends, however it ends.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from agent.errors import AlreadyRunningError

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: Optional[str] = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address: Optional[str] = None
        self._sock: Optional[socket.socket] = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` -> ``READY=1``); False when not under systemd."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with self._lock:
                self._sock.sendto(message, self._address)
            return True
        except OSError as exc:  # systemd went away or the socket is full: never fatal
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify(ready=1, status=status) if status else self.notify(ready=1)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> Optional[float]:
    """Half of systemd's ``WatchdogSec=`` (from WATCHDOG_USEC), the usual ping period."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the watchdog is meant for another process
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


# SIGHUPs received before the daemon's own handlers were installed (see hold_reload_signal).
_held_reloads: List[int] = []


def hold_reload_signal() -> None:
    """Catch SIGHUP at once and keep it for ``install_signal_handlers`` to apply.

    Called first thing by the CLI: importing the runtime and loading a model take seconds,
    and SIGHUP's default action would kill the agent meanwhile (``systemctl reload`` right
    after a start). Appending to a list is all the handler does.
    """
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, _frame: _held_reloads.append(signum))


def release_reload_signal() -> None:
    """Give SIGHUP its default action back (commands other than ``run``); one that came while
    it was held is delivered again now, so it acts as if it had never been caught."""
    if not hasattr(signal, "SIGHUP"):
        return
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if _held_reloads:
        _held_reloads.clear()
        os.kill(os.getpid(), signal.SIGHUP)


def install_signal_handlers(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> Dict[int, object]:
    """SIGTERM/SIGINT -> ``on_stop``; SIGHUP -> ``on_reload``. Returns the previous handlers.

    Handlers only set flags for the main loop: no locks or I/O happen in signal context.
    A SIGHUP held since start-up (``hold_reload_signal``) becomes one ``on_reload`` now.
    """
    previous: Dict[int, object] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: on_stop())
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: on_reload())
        if _held_reloads:
            _held_reloads.clear()
            on_reload()
    return previous


def restore_signal_handlers(previous: Dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]  # what signal.signal returned before


LOCK_NAME = "agent.lock"


class InstanceLock:
    """One running agent per state directory: an exclusive, non-blocking ``flock``.

    The lock file stays (it holds the last owner's pid, for the error message); the lock is
    on the open file, so a crashed or killed agent never leaves a stale one behind.
    """

    def __init__(self, state_dir: Union[str, os.PathLike]) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self, config_path: str = "") -> bool:
        """Take the lock; ``AlreadyRunningError`` when another process holds it.

        False (with a warning) when the state directory cannot be created or written: the
        agent still runs, as it does with a spool it cannot write, unprotected.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            log.warning("cannot lock %s (%s): a second agent on this config would not be noticed",
                        self.path, exc.strerror or exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                by = f" (pid {owner})" if owner else ""
                where = f" of {config_path}" if config_path else ""
                raise AlreadyRunningError(
                    f"another detection-agent{by} is already running with service.state_dir{where} "
                    f"({self.path.parent}): stop it first, or give this one its own state_dir and "
                    "spool.path") from None
            log.warning("cannot lock %s (%s): a second agent on this config would not be noticed",
                        self.path, exc.strerror or exc)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
