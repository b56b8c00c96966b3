"""A looping video served as a live HTTP MJPEG camera that can be cut and restored.

The soak test (``agent.bench.soak``) points the agent at ``MjpegCamera.url``; ``cut()``
drops every client and refuses new connections (a camera losing power), ``restore()``
serves again on the same port. Frames are JPEG-encoded once, up front, so serving costs
almost no CPU on a small shared machine.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Union

import cv2

BOUNDARY = "frameboundary"


def load_jpegs(video: Union[str, Path], quality: int = 85) -> List[bytes]:
    """Every frame of ``video`` as JPEG bytes, in order."""
    cap = cv2.VideoCapture(str(video))
    jpegs: List[bytes] = []
    try:
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                break
            jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    finally:
        cap.release()
    if not jpegs:
        raise RuntimeError(f"{video}: no frames could be read")
    return jpegs


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MjpegCamera:
    """Serves ``jpegs`` in a loop at ``fps`` on ``url`` until ``cut()``; ``restore()`` resumes."""

    def __init__(self, jpegs: List[bytes], fps: float = 10.0, port: Optional[int] = None) -> None:
        self.jpegs = jpegs
        self.fps = fps
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.served = 0  # frames written to clients, all connections together
        self.connections = 0  # GET requests answered: the agent's (re)connects
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._live = threading.Event()

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def start(self) -> MjpegCamera:
        """Listen on ``port`` (the same one after a cut) and stream to every client."""
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: the soak prints its own lines
                pass

            def do_GET(self) -> None:
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                interval = 1.0 / camera.fps
                due = time.monotonic()
                try:
                    while camera._live.is_set():
                        jpeg = camera.jpegs[camera.served % len(camera.jpegs)]
                        camera.served += 1
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        due += interval
                        time.sleep(max(0.0, due - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client went away (the agent reconnecting or stopping)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._live.set()
        self._thread = threading.Thread(target=server.serve_forever, name="mjpeg-camera", daemon=True)
        self._thread.start()
        return self

    def cut(self) -> None:
        """Drop every client (their responses end) and stop listening: connections are refused."""
        self._live.clear()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def restore(self) -> None:
        """Serve again on the same port, as a camera coming back after a power cut."""
        if not self.live:
            self.start()

    def stop(self) -> None:
        if self.live:
            self.cut()
