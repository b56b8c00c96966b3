"""Real RTSP cameras for the tests: ``rtsp_server.py`` (GStreamer's RTSP server, H.264) run by
the system python3 on a free loopback port, killed and brought back on the same port.

GStreamer's Python bindings live in the system packages, not in the project's venv, hence a
subprocess of ``/usr/bin/python3``; ``make test`` installs the packages as root
(gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{base,good,ugly});
without them ``missing()`` says what is missing and the RTSP tests skip.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional

from mosquitto import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
X0, SPEED, PERIOD = 40.0, 24.0, 10.0  # as rtsp_server.py draws the time into the picture
SERVER = Path(__file__).with_name("rtsp_server.py")
PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")
_PROBE = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
          "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
          "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') "
          "if not Gst.ElementFactory.find(e)]; "
          "print(' '.join(missing))")


@functools.lru_cache(maxsize=1)
def missing() -> Optional[str]:
    """Why no RTSP server can run here, or None when one can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return (f"GStreamer's RTSP server is not importable by {SYSTEM_PYTHON} "
                f"(apt-get install -y {PACKAGES}): {probe.stderr.strip().splitlines()[-1:]}")
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()} (apt-get install -y {PACKAGES})"
    return None


class RtspCamera:
    """One RTSP server process serving ``rtsp://127.0.0.1:PORT/cam``; ``kill`` and ``start`` keep the
    port. ``start(shape)`` picks the shape this life of the server draws (rtsp_server.py)."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 10) -> None:
        self.port = free_port()
        self.args = ["--port", str(self.port), "--width", str(width), "--height", str(height),
                     "--fps", str(fps)]
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.proc: Optional[subprocess.Popen] = None
        self.setups: List[str] = []  # Transport header of every SETUP, over all lives of the server
        self.ready_at: Optional[float] = None  # wall time the current life started listening

    def start(self, shape: str = "circle", timeout: float = 30.0) -> RtspCamera:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), *self.args, "--shape", shape],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc, ready), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"RTSP server on port {self.port} did not start within {timeout} s")
        self.ready_at = time.time()
        return self

    def _read(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            if line.startswith("ready "):
                ready.set()
            elif line.startswith("setup "):
                self.setups.append(line[len("setup "):].strip())

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream, as when it loses power."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    @staticmethod
    def picture_age(ts: float, box: List[float]) -> float:
        """How old the picture was at capture time ``ts``, from where the shape's box is (its
        centre encodes when the server drew it; rtsp_server.py)."""
        drawn = ((box[0] + box[2]) / 2.0 - X0) / SPEED  # seconds into the period
        return ((ts % PERIOD) - drawn) % PERIOD

    def transports(self) -> List[str]:
        """``tcp`` / ``udp`` per SETUP seen."""
        return ["tcp" if "/TCP" in s.upper() else "udp" for s in self.setups]
