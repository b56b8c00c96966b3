"""The MJPEG preview over real loopback HTTP: snapshots, streams, throttling, errors, shutdown."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from agent.errors import ConfigError
from agent.runtime.pipeline import FrameResult
from agent.runtime.preview import PreviewServer
from agent.tracking.zones import Zone, ZoneFilter
from agent.types import Detections, Frame

NAMES = ["person", "car", "dog"]
WIDTH, HEIGHT = 320, 240
BOX = (180, 60, 300, 200)  # on the black part of the picture, so its outline shows


def make_result(camera: str = "cam", index: int = 0) -> FrameResult:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cv2.rectangle(image, (40, 40), (120, 160), (200, 200, 200), -1)
    dets = Detections(np.array([BOX], np.float32), np.array([0.9], np.float32), np.array([1], np.int32))
    return FrameResult(Frame(image, camera, index), dets, {"inference": 1.0})


@pytest.fixture
def serve() -> Iterator[Callable[..., PreviewServer]]:
    """``serve(**options)`` -> a started server on a free port, closed at teardown."""
    made: List[PreviewServer] = []

    def make(**options: object) -> PreviewServer:
        server = PreviewServer(NAMES, port=0, **options)  # type: ignore[arg-type]
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


def get(server: PreviewServer, path: str) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class MjpegReader:
    """A raw-socket client of ``/CAMERA.mjpg`` that parses the multipart parts itself."""

    def __init__(self, server: PreviewServer, camera: str = "cam") -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.sock.sendall(f"GET /{camera}.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        self.file = self.sock.makefile("rb")
        self.status = self.file.readline().decode()
        self.headers = self._headers()

    def _headers(self) -> Dict[str, str]:
        headers = {}
        for line in iter(self.file.readline, b"\r\n"):
            assert line, "connection closed inside the headers"
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        return headers

    def part(self) -> Optional[bytes]:
        """The next JPEG, or None at the end of the stream."""
        line = self.file.readline()
        while line == b"\r\n":
            line = self.file.readline()
        if line in (b"", b"--frame--\r\n"):
            return None
        assert line == b"--frame\r\n", line
        headers = self._headers()
        assert headers["content-type"] == "image/jpeg"
        data = self.file.read(int(headers["content-length"]))
        assert len(data) == int(headers["content-length"])
        return data

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Feeder:
    """Hands results to the server from another thread, like the pipeline's publish thread."""

    def __init__(self, server: PreviewServer, interval: float = 0.01) -> None:
        self.server, self.interval = server, interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.server.handle(make_result(index=self.sent))
            self.sent += 1
            time.sleep(self.interval)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_snapshot_is_the_annotated_frame_at_full_size(serve):
    server = serve()
    result = make_result()
    original = result.frame.image.copy()
    server.handle(result)
    assert server.stats()["frames_encoded"] == 0  # nobody asked yet

    status, headers, body = get(server, "/cam.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    image = decode(body)
    assert image.shape == (HEIGHT, WIDTH, 3)
    x1, y1, _, y2 = BOX
    assert image[(y1 + y2) // 2, x1].max() > 100  # the box's left edge is drawn on black
    assert image[(y1 + y2) // 2, x1 + 20].max() < 40  # ...and only its outline
    assert np.array_equal(result.frame.image, original)  # drawn on a copy
    assert server.stats()["frames_encoded"] == 1

    assert get(server, "/cam.jpg")[2] == body  # same frame: served from the kept JPEG
    assert server.stats()["frames_encoded"] == 1


def test_nothing_is_encoded_without_a_watcher(serve):
    server = serve()
    for index in range(20):
        server.handle(make_result(index=index))
        server.handle(make_result("yard", index))
    assert server.stats() == {"clients": 0, "frames_encoded": 0, "port": server.port}
    assert server.url == f"http://127.0.0.1:{server.port}/"

    status, headers, page = get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<img src="/cam.mjpg"' in page and b'<img src="/yard.mjpg"' in page
    assert server.stats()["frames_encoded"] == 0


def test_stream_sends_decodable_jpeg_parts(serve):
    server = serve(max_fps=50, cameras=["cam"])  # known: its stream may open before a frame
    reader = MjpegReader(server)
    try:
        assert " 200 " in reader.status
        assert reader.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        assert wait_until(lambda: server.stats()["clients"] == 1)
        with Feeder(server):
            parts = [reader.part() for _ in range(3)]
            for part in parts:
                assert part is not None
                assert decode(part).shape == (HEIGHT, WIDTH, 3)
            reader.close()
            # The client left: its stream ends at the next write, quietly.
            assert wait_until(lambda: server.stats()["clients"] == 0)
    finally:
        reader.close()
    assert server.stats()["frames_encoded"] >= 3


def test_a_stream_starts_with_the_latest_frame(serve):
    server = serve()
    server.handle(make_result(index=7))  # e.g. a paused pipeline: no more frames come
    reader = MjpegReader(server)
    try:
        part = reader.part()
        assert part is not None and decode(part).shape == (HEIGHT, WIDTH, 3)
    finally:
        reader.close()


def test_max_fps_throttles_encoding(serve):
    server = serve(max_fps=5, cameras=["cam"])
    reader = MjpegReader(server)
    try:
        assert wait_until(lambda: server.stats()["clients"] == 1)
        started = time.monotonic()
        for index in range(50):
            server.handle(make_result(index=index))
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        encoded = server.stats()["frames_encoded"]
        # One at the start, then at most one per 1/max_fps seconds; 50 frames took >= 0.5 s.
        assert 2 <= encoded <= 2 + 5 * elapsed
        assert encoded < 25
        assert reader.part() is not None and reader.part() is not None
    finally:
        reader.close()


def test_unknown_camera_and_other_paths_are_404(serve):
    server = serve(cameras=["door"])
    server.handle(make_result())
    assert get(server, "/nope.jpg")[0] == 404
    assert get(server, "/nope.mjpg")[0] == 404
    assert get(server, "/cam.png")[0] == 404
    assert get(server, "/x/cam.jpg")[0] == 404
    assert get(server, "/favicon.ico")[0] == 404
    status, _, body = get(server, "/door.jpg")  # configured, but no frame yet
    assert status == 503 and b"door" in body
    assert get(server, "/cam.jpg")[0] == 200


def test_port_in_use_is_a_config_error(serve):
    first = serve()
    second = PreviewServer(NAMES, port=first.port)
    with pytest.raises(ConfigError) as caught:
        second.start()
    message = str(caught.value)
    assert f"127.0.0.1:{first.port}" in message and "\n" not in message
    second.close()
    assert get(first, "/")[0] == 200  # the first one is unharmed


def test_close_ends_an_open_stream(serve):
    server = serve()
    server.handle(make_result())
    reader = MjpegReader(server)
    try:
        assert reader.part() is not None
        started = time.monotonic()
        server.close()
        assert reader.part() is None  # the closing boundary, or the connection's end
        assert time.monotonic() - started < 2.0
        server.close()  # idempotent
        assert server.stats()["clients"] == 0
        server.handle(make_result(index=1))  # a late result after close is ignored
    finally:
        reader.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_zones_are_outlined(serve):
    square = [(10.0, 10.0), (100.0, 10.0), (100.0, 100.0), (10.0, 100.0)]
    fraction = Zone("yard", np.array([[0.9, 0.05], [0.99, 0.05], [0.99, 0.95]]), True, "bottom_center", None)
    server = serve(zones={"cam": [("door", square)], "yard": ZoneFilter([fraction])})
    server.handle(make_result())
    server.handle(make_result("yard"))

    image = decode(get(server, "/cam.jpg")[2])
    assert image[30:80, 8:13].max() > 150  # the square's left edge, drawn on black
    assert image[30:80, 20:35].max() < 40  # ...and not its inside

    image = decode(get(server, "/yard.jpg")[2])
    x = round(0.99 * WIDTH)
    assert image[60:180, x - 2:x + 3].max() > 150  # the fraction zone's right edge, in pixels
    assert image[100:180, 200:280].max() < 40  # inside the box, away from every line: still black
