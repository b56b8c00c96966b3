"""Cameras on real sources: a generated video, image folders, an HTTP MJPEG stream."""

import time

import cv2
import numpy as np
import pytest
from mjpeg_server import MjpegCamera  # tests/integration is on sys.path (pytest's rootdir-less import mode)

from agent.capture import Camera
from agent.config.schema import CameraConfig
from agent.datasets.video import make_video
from agent.errors import CaptureError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_video(path, frames=30, fps=30, seed=2, width=320, height=240)
    return path


def drain(camera, limit=10_000, timeout=5.0):
    frames = []
    while len(frames) < limit:
        frame = camera.read(timeout)
        if frame is None:
            break
        frames.append(frame)
    return frames


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_video_file_delivers_every_frame_in_order(clip):
    camera = Camera(CameraConfig(name="file", source=str(clip))).start()
    try:
        frames = drain(camera)
    finally:
        camera.stop()
    assert [f.index for f in frames] == list(range(30))
    assert frames[0].image.shape == (240, 320, 3) and frames[0].camera == "file"
    stats = camera.stats()
    assert (stats.state, stats.dropped, stats.delivered) == ("finished", 0, 30)
    assert camera.finished


def test_realtime_file_is_paced_and_keeps_only_the_newest_frame(clip):
    camera = Camera(CameraConfig(name="rt", source=str(clip), realtime=True)).start()
    started = time.monotonic()
    seen = []
    try:
        while not camera.finished:
            frame = camera.read(0.5)
            if frame is not None:
                seen.append(frame.index)
                time.sleep(0.1)  # a slow consumer: about 10 frames a second
    finally:
        camera.stop()
    elapsed = time.monotonic() - started
    assert elapsed > 0.8  # 30 frames at 30 fps take a second; unpaced they take milliseconds
    assert seen == sorted(set(seen)) and len(seen) < 30  # in order, none twice, some dropped
    assert camera.stats().dropped == 30 - len(seen)


def test_looping_file_starts_over(clip):
    camera = Camera(CameraConfig(name="loop", source=str(clip), loop=True)).start()
    try:
        frames = drain(camera, limit=45)
    finally:
        camera.stop()
    assert [f.index for f in frames] == list(range(45))  # the index keeps counting across loops


def test_image_folder_skips_unreadable_and_blank_images(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 60, 3), 50 + i, np.uint8))
    cv2.imwrite(str(tmp_path / "3-black.png"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "4-broken.jpg").write_bytes(b"not a jpeg")
    camera = Camera(CameraConfig(name="imgs", source=str(tmp_path))).start()
    try:
        frames = drain(camera)
    finally:
        camera.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [50, 51, 52]
    assert camera.stats().blank == 1


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(CaptureError, match=r"camera 'x': source .* is not a device, URL, video file"):
        Camera(CameraConfig(name="x", source=str(tmp_path / "nope.mp4")))


def test_http_stream_cut_and_restored_reconnects_while_another_camera_runs(clip):
    server = MjpegCamera(fps=25).start()
    stream = Camera(CameraConfig(name="http", source=server.url, reconnect_min=0.2, reconnect_max=0.5,
                                 stall_timeout=2)).start()
    other = Camera(CameraConfig(name="file", source=str(clip), loop=True, realtime=True)).start()
    try:
        assert stream.read(10) is not None and stream.state == "online"
        server.cut()
        assert wait_for(lambda: stream.state == "reconnecting"), stream.state
        other_before = other.stats().frames
        time.sleep(1.0)
        assert other.stats().frames > other_before  # the other camera kept going
        server.restore()
        assert wait_for(lambda: stream.state == "online"), stream.last_error
        drain(stream, limit=1, timeout=0)  # discard anything from before the cut
        assert stream.read(10) is not None
        assert stream.stats().reconnects >= 1
    finally:
        stream.stop()
        other.stop()
        server.stop()
