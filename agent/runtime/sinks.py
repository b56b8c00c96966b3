"""Where the pipeline's results go: MQTT (with snapshots and per-camera pause), and an
annotated video file per camera for demos and for checking a camera's view."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Set

import cv2

from agent.config.schema import SnapshotConfig
from agent.errors import CaptureError
from agent.runtime.draw import draw_detections
from agent.runtime.pipeline import FrameResult
from agent.tracking.zones import ZoneFilter

log = logging.getLogger(__name__)


class MqttSink:
    """Publishes each result; also snapshots on request or when a new class appears."""

    def __init__(self, publisher: object, class_names: Sequence[str], snapshot: SnapshotConfig) -> None:
        self.publisher = publisher
        self.class_names = list(class_names)
        self.snapshot = snapshot
        self._paused: Set[str] = set()
        self._snapshot_wanted: Set[str] = set()
        self._last_labels: Dict[str, Set[int]] = {}
        self._last_auto_snapshot: Dict[str, float] = {}
        self._lock = threading.Lock()

    def pause(self, camera: str) -> None:
        with self._lock:
            self._paused.add(camera)

    def resume(self, camera: str) -> None:
        with self._lock:
            self._paused.discard(camera)

    def request_snapshot(self, camera: str) -> None:
        with self._lock:
            self._snapshot_wanted.add(camera)

    def handle(self, result: FrameResult) -> None:
        frame, dets = result.frame, result.detections
        with self._lock:
            if frame.camera in self._paused:
                return
            wanted = frame.camera in self._snapshot_wanted
            self._snapshot_wanted.discard(frame.camera)
        self.publisher.publish_detections(frame.camera, frame.index, frame.wall_time, frame.width,  # type: ignore[attr-defined]
                                          frame.height, dets, result.latency_ms, result.zones)
        if wanted or self._new_objects(frame.camera, set(dets.class_ids.tolist()), frame.mono_time):
            from agent.publish.payloads import snapshot_jpeg

            jpeg = snapshot_jpeg(frame.image, dets, self.class_names, self.snapshot.jpeg_quality)
            self.publisher.publish_snapshot(frame.camera, jpeg)  # type: ignore[attr-defined]

    def _new_objects(self, camera: str, labels: Set[int], now: float) -> bool:
        previous = self._last_labels.get(camera, set())
        self._last_labels[camera] = labels
        if not self.snapshot.on_new_objects or labels <= previous:
            return False
        if now - self._last_auto_snapshot.get(camera, -1e9) < self.snapshot.min_interval:
            return False
        self._last_auto_snapshot[camera] = now
        return True

    def close(self) -> None:
        """The publisher outlives the pipeline: the daemon stops it after the last result."""


class VideoSink:
    """One annotated video per camera under ``folder`` (``CAMERA.mp4``), finished atomically."""

    def __init__(self, folder: Path, class_names: Sequence[str], fps: float = 15.0,
                 zones: Optional[Mapping[str, ZoneFilter]] = None) -> None:
        self.folder = Path(folder)
        self.class_names = list(class_names)
        self.zones = zones if zones is not None else {}  # camera name -> its zones, outlined
        self.fps = fps
        self._writers: Dict[str, cv2.VideoWriter] = {}
        self._partial: Dict[str, Path] = {}

    def handle(self, result: FrameResult) -> None:
        frame = result.frame
        writer = self._writers.get(frame.camera)
        if writer is None:
            writer = self._open(frame.camera, frame.width, frame.height)
        zone_filter = self.zones.get(frame.camera)
        outlines = zone_filter.outlines(frame.width, frame.height) if zone_filter else ()
        writer.write(draw_detections(frame.image, result.detections, self.class_names, outlines))

    def _open(self, camera: str, width: int, height: int) -> cv2.VideoWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{camera}.partial.mp4"
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            raise CaptureError(f"cannot write the annotated video {partial}")
        self._writers[camera], self._partial[camera] = writer, partial
        return writer

    def close(self) -> None:
        for camera, writer in self._writers.items():
            writer.release()
            os.replace(self._partial[camera], self.folder / f"{camera}.mp4")
        self._writers.clear()

    def path(self, camera: str) -> Optional[Path]:
        final = self.folder / f"{camera}.mp4"
        return final if final.exists() else None
