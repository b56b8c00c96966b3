"""Where the pipeline's results go: MQTT (with snapshots and per-camera pause), and an
annotated video file per camera for demos and for checking a camera's view.

With tracking on, the MQTT sink also publishes each frame's events (``{camera}/events``)
and the camera's counts (retained ``{camera}/counts``: when they change, at most once a
second, and always at the end), and ``mqtt.detections`` decides which frames get a
detections message: ``every_frame``; ``on_change`` (the confirmed tracks, their labels or
zones changed, or ``detections_heartbeat`` seconds passed); ``off``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, FrozenSet, Mapping, Optional, Sequence, Set, Tuple

import cv2

from agent.config.schema import SnapshotConfig
from agent.errors import OutputError
from agent.publish.api import Publisher
from agent.runtime.draw import draw_result
from agent.runtime.results import FRAME, FrameResult
from agent.tracking.zones import ZoneFilter

log = logging.getLogger(__name__)

COUNTS_INTERVAL_S = 1.0  # retained counts at most this often per camera


class MqttSink:
    """Publishes each result; also snapshots on request or when a new class appears."""

    def __init__(self, publisher: Publisher, class_names: Sequence[str], snapshot: SnapshotConfig,
                 detections: str = "every_frame", heartbeat_s: float = 30.0, events: bool = True,
                 counts_interval_s: float = COUNTS_INTERVAL_S) -> None:
        self.publisher = publisher
        self.class_names = list(class_names)
        self.snapshot = snapshot
        self.detections = detections  # every_frame | on_change | off
        self.heartbeat_s = heartbeat_s
        self.events = events
        self.counts_interval_s = counts_interval_s
        self._scene: Dict[str, Tuple[FrozenSet[Tuple[int, str, Tuple[str, ...]]], float]] = {}
        self._counts_sent: Dict[str, float] = {}
        self._counts_waiting: Dict[str, Tuple[float, Mapping[str, object]]] = {}
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
        # Events and counts are never paused: a pause stops the detections stream (bandwidth),
        # but a count that missed a crossing would be wrong for good.
        if self.events and result.events:
            self.publisher.publish_events(frame.camera, result.events)
        if self.events and result.counts is not None:
            self._counts(frame.camera, frame.wall_time, result.counts, result.counts_changed,
                         flush=result.kind != FRAME)
        if result.kind != FRAME:
            return
        with self._lock:
            if frame.camera in self._paused:
                return
            wanted = frame.camera in self._snapshot_wanted
            self._snapshot_wanted.discard(frame.camera)
        if self._wants_detections(result):
            self.publisher.publish_detections(frame.camera, frame.index, frame.wall_time, frame.width,
                                              frame.height, dets, result.latency_ms, result.zones,
                                              result.track_ids)
        if wanted or self._new_objects(frame.camera, set(dets.class_ids.tolist()), frame.mono_time):
            from agent.runtime.draw import snapshot_jpeg

            jpeg = snapshot_jpeg(frame.image, dets, self.class_names, self.snapshot.jpeg_quality)
            self.publisher.publish_snapshot(frame.camera, jpeg)

    def _wants_detections(self, result: FrameResult) -> bool:
        if self.detections == "every_frame" or (self.detections == "on_change" and result.track_ids is None):
            return True  # on_change without tracking: nothing to compare, every frame
        if self.detections == "off":
            return False
        frame, names = result.frame, self.class_names
        zones = result.zones or [[] for _ in result.track_ids or ()]
        ids, classes = result.track_ids or (), result.detections.class_ids.tolist()
        scene = frozenset((tid, names[c] if 0 <= c < len(names) else str(c), tuple(z))
                          for tid, c, z in zip(ids, classes, zones) if tid is not None)
        before = self._scene.get(frame.camera)
        if before is not None and before[0] == scene and frame.mono_time - before[1] < self.heartbeat_s:
            return False
        self._scene[frame.camera] = (scene, frame.mono_time)
        return True

    def _counts(self, camera: str, ts: float, counts: Mapping[str, object], changed: bool,
                flush: bool) -> None:
        """Retained counts when they change, at most once every ``counts_interval_s``; a change
        inside the interval waits and goes with the next frame after it (or at the end)."""
        now = time.monotonic()
        if changed:
            self._counts_waiting[camera] = (ts, counts)
        waiting = self._counts_waiting.get(camera)
        if waiting is None:
            return
        if not flush and now - self._counts_sent.get(camera, -1e9) < self.counts_interval_s:
            return
        del self._counts_waiting[camera]
        self._counts_sent[camera] = now
        self.publisher.publish_counts(camera, waiting[0], waiting[1])

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

    draws_tracks = True  # the pipeline computes trails for sinks that say so

    def __init__(self, folder: Path, class_names: Sequence[str], fps: float = 15.0,
                 zones: Optional[Mapping[str, ZoneFilter]] = None) -> None:
        """``zones``: outlines for results made without settings (tests); a result's own
        camera settings (zones, lines) win."""
        self.folder = Path(folder)
        self.class_names = list(class_names)
        self._zones: Mapping[str, ZoneFilter] = zones if zones is not None else {}
        self.fps = fps
        self._writers: Dict[str, cv2.VideoWriter] = {}
        self._partial: Dict[str, Path] = {}

    def handle(self, result: FrameResult) -> None:
        frame = result.frame
        if result.kind != FRAME:
            return
        writer = self._writers.get(frame.camera)
        if writer is None:
            writer = self._open(frame.camera, frame.width, frame.height)
        zone_filter = self._zones.get(frame.camera)
        outlines = None  # the result's own zones
        if zone_filter is not None and result.camera is None:
            outlines = zone_filter.outlines(frame.width, frame.height)
        writer.write(draw_result(result, self.class_names, outlines))

    def _open(self, camera: str, width: int, height: int) -> cv2.VideoWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{camera}.partial.mp4"
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            raise OutputError(f"cannot write the annotated video {partial}")
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
