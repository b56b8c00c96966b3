"""Living under systemd: the notify protocol, and signals turned into events.

``Notifier`` speaks sd_notify over ``NOTIFY_SOCKET`` (a Unix datagram socket, abstract
when the path starts with ``@``); outside systemd every call is a no-op. The daemon sends
READY=1 once the model is loaded and the first frame is through, WATCHDOG=1 only while
inference makes progress (so a hung pipeline gets restarted by ``WatchdogSec=``), and
STATUS= lines people see in ``systemctl status``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Callable, Dict, Optional

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


def install_signal_handlers(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> Dict[int, object]:
    """SIGTERM/SIGINT -> ``on_stop``; SIGHUP -> ``on_reload``. Returns the previous handlers.

    Handlers only set flags for the main loop: no locks or I/O happen in signal context.
    """
    previous: Dict[int, object] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: on_stop())
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: on_reload())
    return previous


def restore_signal_handlers(previous: Dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]
