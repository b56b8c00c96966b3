"""A live MJPEG preview over HTTP, for pointing and setting up cameras.

``PreviewServer`` is a pipeline sink. It serves, on localhost by default:

- ``/``             a small page with one live picture per camera seen so far;
- ``/CAMERA.mjpg``  a ``multipart/x-mixed-replace`` stream of annotated JPEGs;
- ``/CAMERA.jpg``   the latest annotated JPEG (503 while a known camera has no frame yet).

The sink sits in the publish thread, so ``handle()`` has to stay cheap: it only keeps a
reference to the newest result per camera, and draws and encodes a JPEG only while someone
watches that camera's stream, at most ``max_fps`` times a second. A single ``.jpg`` request
is encoded on demand in its own HTTP thread, from the newest result.
"""

from __future__ import annotations

import html
import logging
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import quote, unquote, urlsplit

import cv2
import numpy as np

from agent.runtime.draw import draw_result
from agent.runtime.http import HttpServer, handler_class, is_loopback, serve, url_of
from agent.runtime.results import FRAME, FrameResult
from agent.tracking.zones import ZoneFilter

log = logging.getLogger(__name__)

BOUNDARY = "frame"
WAIT_S = 0.25  # the longest a stream waits for a JPEG before it checks for close() or a gone client
SEND_TIMEOUT_S = 10.0  # a client that stops reading is dropped instead of holding a thread forever

Point = Tuple[float, float]
ZoneOutline = Tuple[str, Sequence[Point]]
#: Per camera: (zone name, polygon in source pixels) pairs, or a ``ZoneFilter`` (its zones may
#: be given in fractions of the frame, so they are resolved per frame size). The daemon passes
#: none: each result carries the zones and lines it was made with, which win.
CameraZones = Union[Sequence[ZoneOutline], ZoneFilter]


class _Jpeg:
    """One encoded picture of a camera; ``seq`` grows with each new one so streams see news."""

    __slots__ = ("data", "seq", "source")

    def __init__(self, data: bytes, seq: int, source: FrameResult) -> None:
        self.data, self.seq, self.source = data, seq, source


class PreviewServer:
    """An MJPEG preview of every camera's annotated frames; a pipeline ``Sink``."""

    def __init__(self, class_names: Sequence[str], host: str = "127.0.0.1", port: int = 8090,
                 max_fps: float = 5.0, jpeg_quality: int = 80,
                 zones: Optional[Mapping[str, CameraZones]] = None,
                 cameras: Sequence[str] = ()) -> None:
        if max_fps <= 0:
            raise ValueError(f"max_fps must be positive, got {max_fps}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {jpeg_quality}")
        self.class_names = list(class_names)
        self.host = host
        self.max_fps = float(max_fps)
        self.jpeg_quality = int(jpeg_quality)
        self._requested_port = int(port)
        self._cond = threading.Condition()  # guards the state below; streams wait on it
        self._zones: Dict[str, Union[ZoneFilter, List[Tuple[str, np.ndarray]]]] = {}
        self._known: Set[str] = set(cameras)  # cameras that answer 503 rather than 404 before a frame
        self.set_zones(zones or {})
        self._latest: Dict[str, FrameResult] = {}
        self._jpegs: Dict[str, _Jpeg] = {}
        self._watchers: Dict[str, int] = {}
        self._last_encode: Dict[str, float] = {}
        self._seq = 0
        self._clients = 0
        self._encoded = 0
        self._closed = False
        self._server: Optional[HttpServer] = None
        self._thread: Optional[threading.Thread] = None

    def set_zones(self, zones: Mapping[str, CameraZones]) -> None:
        """Replace the zone outlines (after a config reload); takes effect with the next picture."""
        converted: Dict[str, Union[ZoneFilter, List[Tuple[str, np.ndarray]]]] = {}
        for camera, outlines in zones.items():
            if isinstance(outlines, ZoneFilter):
                converted[camera] = outlines  # resolved per frame: may depend on the frame size
            else:  # converted once, not per frame
                converted[camera] = [(str(name), np.asarray(points, np.float64).reshape(-1, 2))
                                     for name, points in outlines]
        with self._cond:
            self._zones = converted  # replaced whole: a picture being drawn sees the old or the new
            self._known.update(converted)

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound port once started (the one picked when ``port`` was 0), else the one asked for."""
        return int(self._server.server_address[1]) if self._server is not None else self._requested_port

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    def start(self) -> PreviewServer:
        """Bind and serve in a daemon thread; ``ConfigError`` if the address cannot be bound."""
        if self._closed:
            raise RuntimeError("the preview server was closed")
        if self._server is not None:
            return self
        self._server, self._thread = serve(self.host, self._requested_port,
                                           handler_class("preview", self._route, SEND_TIMEOUT_S), "preview")
        log.info("camera preview at %s", self.url)
        if not is_loopback(self.host):
            log.warning("preview.host is %s: the camera pictures at %s are served WITHOUT authentication "
                        "to anyone who can reach this port; keep it on 127.0.0.1 and use an SSH tunnel "
                        "(ssh -L %d:127.0.0.1:%d DEVICE)", self.host, self.url, self.port, self.port)
        return self

    def close(self) -> None:
        """Stop serving and end every stream; safe to call more than once."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()  # streams wake now rather than at their next timeout
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._cond:
            # Give woken streams a moment to write their closing boundary; never long.
            self._cond.wait_for(lambda: self._clients == 0, timeout=1.0)

    def stats(self) -> Dict[str, int]:
        with self._cond:
            return {"clients": self._clients, "frames_encoded": self._encoded, "port": self.port}

    # ------------------------------------------------------------ sink (publish thread)

    draws_tracks = True  # the pipeline computes trails for sinks that say so

    def handle(self, result: FrameResult) -> None:
        if result.kind != FRAME:  # events and counts only: no new picture
            return
        camera = result.frame.camera
        with self._cond:
            if self._closed:
                return
            self._latest[camera] = result  # a reference only: frames are never written to
            self._known.add(camera)
            if not self._watchers.get(camera):
                return
            now = time.monotonic()
            if now - self._last_encode.get(camera, -1e9) < 1.0 / self.max_fps:
                return
            self._last_encode[camera] = now
        data = self._encode(result)  # outside the lock: HTTP threads keep serving meanwhile
        with self._cond:
            self._store(camera, data, result)

    # ------------------------------------------------------------ pictures

    def _encode(self, result: FrameResult) -> bytes:
        frame = result.frame
        outlines = None  # the result's own zones, else those given to the server
        if result.camera is None:
            outlines = self._outlines(frame.camera, frame.width, frame.height)
        canvas = draw_result(result, self.class_names, outlines)  # draws on a copy
        ok, buffer = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for camera {frame.camera!r}")
        with self._cond:
            self._encoded += 1
        return buffer.tobytes()

    def _outlines(self, camera: str, width: int, height: int) -> List[Tuple[str, np.ndarray]]:
        zones = self._zones.get(camera)
        if zones is None:
            return []
        if isinstance(zones, ZoneFilter):
            return list(zones.outlines(width, height))
        return zones

    def _store(self, camera: str, data: bytes, source: FrameResult) -> _Jpeg:
        """Keep a new JPEG and wake the streams (call with the lock held)."""
        self._seq += 1
        jpeg = self._jpegs[camera] = _Jpeg(data, self._seq, source)
        self._cond.notify_all()
        return jpeg

    def _current_jpeg(self, camera: str) -> Optional[_Jpeg]:
        """The JPEG of the newest result, encoded now if the one kept is older (or missing)."""
        with self._cond:
            latest, kept = self._latest.get(camera), self._jpegs.get(camera)
            if latest is None or (kept is not None and kept.source is latest):
                return kept
        data = self._encode(latest)
        with self._cond:
            if self._jpegs.get(camera) is not kept:  # a newer one arrived while encoding: keep that
                return self._jpegs[camera]
            return self._store(camera, data, latest)

    def _next_jpeg(self, camera: str, after: int) -> Optional[_Jpeg]:
        """A JPEG newer than ``after``, or None after a short wait or once closed."""
        def ready() -> bool:
            jpeg = self._jpegs.get(camera)
            return self._closed or (jpeg is not None and jpeg.seq > after)

        with self._cond:
            if not self._cond.wait_for(ready, timeout=WAIT_S) or self._closed:
                return None
            return self._jpegs[camera]

    # ------------------------------------------------------------ HTTP

    def _route(self, request: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(request.path).path)
        if path in ("/", "/index.html"):
            self._send(request, 200, "text/html; charset=utf-8", self._index().encode())
            return
        for suffix in (".mjpg", ".jpg"):
            camera = path[1:-len(suffix)] if path.endswith(suffix) else ""
            if camera and "/" not in camera:
                with self._cond:
                    known = camera in self._known
                if not known:
                    break
                if suffix == ".mjpg":
                    self._stream(request, camera)
                else:
                    self._snapshot(request, camera)
                return
        self._send(request, 404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, request: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(body)

    def _index(self) -> str:
        with self._cond:
            cameras = sorted(self._known | set(self._latest))  # configured ones show before their first frame
        items = "".join(f'<h2>{html.escape(c)}</h2><img src="/{quote(c)}.mjpg" alt="{html.escape(c)}">\n'
                        for c in cameras) or "<p>No cameras yet.</p>\n"
        return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>detection-agent preview</title>"
                "<style>img{max-width:100%}</style></head><body>\n" + items + "</body></html>\n")

    def _snapshot(self, request: BaseHTTPRequestHandler, camera: str) -> None:
        jpeg = self._current_jpeg(camera)
        if jpeg is None:
            self._send(request, 503, "text/plain; charset=utf-8", f"no frame yet from {camera}\n".encode())
        else:
            self._send(request, 200, "image/jpeg", jpeg.data)

    def _stream(self, request: BaseHTTPRequestHandler, camera: str) -> None:
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        request.send_header("Cache-Control", "no-store")
        request.send_header("Connection", "close")
        request.end_headers()
        request.close_connection = True
        with self._cond:
            self._clients += 1
            self._watchers[camera] = self._watchers.get(camera, 0) + 1
        try:
            sent = -1
            jpeg = self._current_jpeg(camera)  # the picture now, even if the pipeline is paused
            while not self._closed:
                if jpeg is not None and jpeg.seq > sent:
                    request.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                        f"Content-Length: {len(jpeg.data)}\r\n\r\n".encode()
                                        + jpeg.data + b"\r\n")
                    request.wfile.flush()
                    sent = jpeg.seq
                elif jpeg is None and _client_gone(request.connection):
                    return  # noticed without waiting for a frame that may never come
                jpeg = self._next_jpeg(camera, sent)
            request.wfile.write(f"--{BOUNDARY}--\r\n".encode())
        finally:
            with self._cond:
                self._clients -= 1
                self._watchers[camera] -= 1
                self._cond.notify_all()  # close() waits for the streams to end


def _client_gone(connection: socket.socket) -> bool:
    """True once the client has closed its end (readable, and a peek reads nothing)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True

