"""A small MJPEG-over-HTTP camera for tests: serves numbered frames until cut, can restart."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import cv2
import numpy as np

BOUNDARY = "frameboundary"


def numbered_jpeg(number: int, width: int = 320, height: int = 240) -> bytes:
    image = np.full((height, width, 3), 60, np.uint8)
    cv2.putText(image, str(number), (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
    return cv2.imencode(".jpg", image)[1].tobytes()


class MjpegCamera:
    """``url`` streams JPEGs at ``fps``; ``cut()`` drops every client and refuses new ones."""

    def __init__(self, fps: float = 20.0) -> None:
        self.fps = fps
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.served = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._live = threading.Event()

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                try:
                    while camera._live.is_set():
                        jpeg = numbered_jpeg(camera.served)
                        camera.served += 1
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._live.set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def cut(self) -> None:
        self._live.clear()  # streaming handlers end their response
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restore(self) -> None:
        """Serve again on the same port, as a camera coming back after a power cut."""
        self.start()

    def stop(self) -> None:
        self.cut()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
