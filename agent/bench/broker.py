"""A private Mosquitto: its own free loopback port, config and persistence folder.

Never the system broker on 1883. ``stop()`` is a graceful SIGTERM (mosquitto writes its
persistence file and exits); ``start()`` afterwards brings the same broker back on the same
port with the same files, so persistent sessions and their queued QoS 1 messages survive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

from agent.bench.mjpeg import free_port
from agent.errors import AgentError


def mosquitto_binary() -> Optional[str]:
    """The mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class Mosquitto:
    """One broker process on ``127.0.0.1:port``, config and persistence under ``workdir``.

    Shared by the demo, the benchmarks, the soak test and the integration tests. ``tls``
    (``cafile``, ``certfile``, ``keyfile``, optional ``require_certificate``) adds a TLS
    listener on ``tls_port``; ``password_file`` turns anonymous access off on both;
    ``acl_file`` applies a Mosquitto ACL file (docs/mqtt.md has the one the docs recommend).
    """

    def __init__(self, workdir: Path, port: Optional[int] = None, *, persistence: bool = True,
                 password_file: Optional[Path] = None, tls: Optional[Dict[str, str]] = None,
                 acl_file: Optional[Path] = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("no mosquitto broker installed: apt-get install -y mosquitto")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if password_file else 'true'}",
            "user root" if os.geteuid() == 0 else "",  # as root mosquitto would drop to 'mosquitto'
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # A subscriber away for a broker restart must find everything queued for it.
            "max_queued_messages 1000000",
            "max_inflight_messages 0",  # forward at once: nothing acknowledged waits in broker memory
            "set_tcp_nodelay true",
        ]
        if password_file:
            lines.append(f"password_file {password_file}")
        if acl_file:
            lines.append(f"acl_file {acl_file}")
        if tls:  # settings after a listener line belong to that listener
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls['cafile']}",
                      f"certfile {tls['certfile']}", f"keyfile {tls['keyfile']}",
                      f"require_certificate {tls.get('require_certificate', 'false')}"]
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def version(self) -> str:
        """What ``mosquitto -h`` says of itself on its first line."""
        lines = subprocess.run([self.binary, "-h"], capture_output=True, text=True).stdout.splitlines()
        return lines[0] if lines else "mosquitto"

    def freeze(self) -> None:
        """SIGSTOP: the broker hangs (reads nothing, acknowledges nothing) until killed."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``: the broker goes on with the same connections, late."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int:
        """The broker's process id (started brokers only)."""
        if self.proc is None:
            raise AgentError("mosquitto is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start and wait until the port answers (mosquitto has no readiness signal)."""
        if self.running:
            return self
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM; mosquitto saves its persistence file and exits."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: int, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log(self) -> str:
        """The last few kB of the broker's log."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""
