"""What OpenCV should open for each kind of camera source.

- USB/V4L2 (``/dev/videoN`` or an index): the V4L2 backend, with size, rate and FOURCC
  (MJPG lets USB 2 cameras reach 30 fps at 720p).
- Jetson CSI (``csi://N``): ``nvarguscamerasrc`` through ``nvvidconv`` to BGR, with
  ``appsink drop=1 max-buffers=1`` so a slow consumer never builds a backlog.
- RTSP: on a Jetson (OpenCV with GStreamer and the ``nvv4l2decoder`` element), a hardware
  decode pipeline for H.264/H.265; elsewhere FFmpeg over TCP by default.
- HTTP(S) MJPEG and other URLs: FFmpeg.
- ``gstreamer: ...``: the user's own pipeline, ending in ``appsink``.
- A video file; a folder or glob of images (read by ``ImageSequence``, not OpenCV).

Every description of a source that reaches a log goes through ``mask_url`` first.

Network sources read through FFmpeg get two sets of timeouts: OpenCV's (its interrupt
callback, ``CAP_PROP_OPEN/READ_TIMEOUT_MSEC``) and FFmpeg's own socket timeouts, passed in
``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (RTSP ``timeout``, ``stimeout`` before FFmpeg 5; HTTP
``rw_timeout``). Either bounds a read of a stream that stalls, so a capture thread always
comes back from the driver and can be stopped. That variable is process-wide and OpenCV
reads it while opening, so each FFmpeg open sets it under a lock.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import List, Optional, Protocol, Tuple, Union

import cv2
import numpy as np

from agent.config.schema import CameraConfig, mask_url
from agent.errors import CaptureError
from agent.fileio import image_files, is_image_file

log = logging.getLogger(__name__)

# Network reads block inside FFmpeg; these bound them so a dead stream is noticed.
_FFMPEG_TIMEOUT_MS = 5000  # opening; reads use the camera's stall_timeout
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# Held while an FFmpeg capture opens with this process's options variable set for it.
_FFMPEG_OPEN_LOCK = threading.Lock()
# What the environment said before we touched it: files and devices open with that.
_USER_FFMPEG_OPTIONS = os.environ.get(_FFMPEG_OPTIONS_ENV)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """How to open one camera: a ``cv2.VideoCapture`` target, or a list of image files."""

    kind: str  # usb | csi | rtsp | http | gstreamer | file | images
    target: Union[int, str]  # int index, device path, pipeline string, URL or file path
    api: int = cv2.CAP_ANY
    params: Tuple[int, ...] = ()
    images: Tuple[Path, ...] = ()
    description: str = ""
    ffmpeg_options: str = ""  # OPENCV_FFMPEG_CAPTURE_OPTIONS while this source opens (FFmpeg only)

    @property
    def is_live(self) -> bool:
        return self.kind not in ("file", "images")


@functools.lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float, flip_method: int = 0,
                 sensor_mode: Optional[int] = None) -> str:
    """The Jetson CSI camera pipeline: ISP-processed NV12 in NVMM memory -> BGR for OpenCV."""
    mode = f" sensor-mode={sensor_mode}" if sensor_mode is not None else ""
    return (f"nvarguscamerasrc sensor-id={sensor_id}{mode} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={round(fps)}/1,format=NV12 ! "
            f"nvvidconv flip-method={flip_method} ! video/x-raw,format=BGRx ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false")


def rtsp_jetson_pipeline(url: str, latency_ms: int, transport: str, codec: str = "h264") -> str:
    """Hardware-decoded RTSP on a Jetson (``nvv4l2decoder``), newest frame only."""
    depay, parse = ("rtph265depay", "h265parse") if codec == "h265" else ("rtph264depay", "h264parse")
    protocols = "tcp" if transport == "tcp" else "udp"
    return (f"rtspsrc location={url} latency={latency_ms} protocols={protocols} ! {depay} ! {parse} ! "
            "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false")


@functools.lru_cache(maxsize=1)
def ffmpeg_major() -> int:
    """FFmpeg's major release as OpenCV was built with it (from libavformat's version), 0 if unknown."""
    match = re.search(r"avformat:\s+YES \((\d+)\.", cv2.getBuildInformation())
    if not match:
        return 0
    avformat = int(match.group(1))
    return 5 if avformat >= 59 else 4  # libavformat 59 came with FFmpeg 5.0; 5+ share the names below


def ffmpeg_options(kind: str, camera: CameraConfig) -> str:
    """FFmpeg's own socket timeouts (microseconds) and RTSP transport, as OpenCV passes them."""
    timeout_us = int(camera.stall_timeout * 1e6)
    if kind == "rtsp":
        # FFmpeg 4's RTSP "timeout" means "listen for a connection": its socket timeout was "stimeout".
        key = "timeout" if ffmpeg_major() >= 5 or ffmpeg_major() == 0 else "stimeout"
        # probesize 32: take the stream's parameters from the SDP instead of probing the stream.
        # FFmpeg's default probing buffers ~3 s of frames at each (re)open, which the first reads
        # then return at once: pictures seconds old stamped as new (measured: open 2.9 s, first
        # frame 2.9 s old; with this, open 0.2 s and every frame live; tests/integration/test_rtsp.py).
        return f"rtsp_transport;{camera.rtsp.transport}|{key};{timeout_us}|probesize;32"
    return f"rw_timeout;{timeout_us}"


def _jetson_decoder_available() -> bool:
    # nvv4l2decoder exists only with JetPack's GStreamer plugins; gst-inspect says so cheaply.
    return opencv_has_gstreamer() and shutil.which("gst-inspect-1.0") is not None and \
        os.path.exists("/usr/lib/aarch64-linux-gnu/gstreamer-1.0/libgstnvvideo4linux2.so")


def source_spec(camera: CameraConfig) -> SourceSpec:
    """The ``SourceSpec`` for a camera's config; ``CaptureError`` for a path that is not there."""
    kind = camera.source_kind
    src = camera.source
    width, height, fps = camera.width, camera.height, camera.fps
    if kind == "usb":
        index_or_path: Union[int, str] = int(src) if src.isdigit() else src
        params: List[int] = []
        if camera.fourcc:
            params += [cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*camera.fourcc)]
        if width and height:
            params += [cv2.CAP_PROP_FRAME_WIDTH, width, cv2.CAP_PROP_FRAME_HEIGHT, height]
        if fps:
            params += [cv2.CAP_PROP_FPS, round(fps)]
        return SourceSpec("usb", index_or_path, cv2.CAP_V4L2, tuple(params), description=f"V4L2 {src}")
    if kind == "csi":
        pipeline = csi_pipeline(int(src[len("csi://"):]), width or 1280, height or 720, fps or 30,
                                camera.csi.flip_method, camera.csi.sensor_mode)
        return SourceSpec("csi", pipeline, cv2.CAP_GSTREAMER, description=f"CSI {src}")
    if kind == "gstreamer":
        return SourceSpec("gstreamer", src[len("gstreamer:"):].strip(), cv2.CAP_GSTREAMER,
                          description="GStreamer pipeline")
    timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _FFMPEG_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(camera.stall_timeout * 1000))
    if kind == "rtsp":
        if _jetson_decoder_available():
            pipeline = rtsp_jetson_pipeline(src, camera.rtsp.latency_ms, camera.rtsp.transport)
            return SourceSpec("rtsp", pipeline, cv2.CAP_GSTREAMER,
                              description=f"RTSP {mask_url(src)} (nvv4l2decoder)")
        return SourceSpec("rtsp", src, cv2.CAP_FFMPEG, timeouts, description=f"RTSP {mask_url(src)} (FFmpeg)",
                          ffmpeg_options=ffmpeg_options("rtsp", camera))
    if kind == "http":
        return SourceSpec("http", src, cv2.CAP_FFMPEG, timeouts, description=f"HTTP {mask_url(src)}",
                          ffmpeg_options=ffmpeg_options("http", camera))
    # A path: a video file, a folder of images, or a glob.
    path = Path(src)
    if path.is_file():
        if is_image_file(path):
            return SourceSpec("images", src, images=(path,), description=f"image {src}")
        return SourceSpec("file", str(path), cv2.CAP_ANY, description=f"file {src}")
    images = image_files(src)
    if images:
        return SourceSpec("images", src, images=tuple(images), description=f"{len(images)} images in {src}")
    raise CaptureError(f"camera {camera.name!r}: source {src!r} is not a device, URL, video file or "
                       "folder of images")


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a camera uses; ``ImageSequence`` has it too."""

    def isOpened(self) -> bool: ...

    def read(self) -> Tuple[bool, Optional[np.ndarray]]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


class ImageSequence:
    """A folder of images behind the part of the ``cv2.VideoCapture`` interface we use."""

    def __init__(self, files: Tuple[Path, ...]) -> None:
        self._files = files
        self._next = 0

    def isOpened(self) -> bool:  # mirrors cv2.VideoCapture
        return self._next < len(self._files)

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return True, image
            log.warning("skipping unreadable image %s", path)
        return False, None

    def get(self, prop: int) -> float:  # mirrors cv2.VideoCapture: no property is known (0)
        return 0.0

    def release(self) -> None:
        self._next = len(self._files)


def open_capture(spec: SourceSpec) -> Capture:
    """An opened capture for ``spec`` (``cv2.VideoCapture`` or ``ImageSequence``), or raise."""
    if spec.kind == "images":
        return ImageSequence(spec.images)
    if spec.api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        # The options variable is process-wide: no other camera may open with this one's.
        with _FFMPEG_OPEN_LOCK:
            options = spec.ffmpeg_options or _USER_FFMPEG_OPTIONS
            if options:
                os.environ[_FFMPEG_OPTIONS_ENV] = options
            else:
                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
            cap = _video_capture(spec)
    else:
        cap = _video_capture(spec)
    if not cap.isOpened():
        cap.release()
        hint = " (this OpenCV has no GStreamer)" if spec.api == cv2.CAP_GSTREAMER and \
            not opencv_has_gstreamer() else ""
        raise CaptureError(f"cannot open {spec.description}{hint}")
    return cap


def _video_capture(spec: SourceSpec) -> cv2.VideoCapture:
    if spec.params:
        return cv2.VideoCapture(spec.target, spec.api, list(spec.params))
    return cv2.VideoCapture(spec.target, spec.api)
