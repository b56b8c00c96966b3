"""After decoding, per camera: zones, tracking, counting lines, and which boxes are published.

Runs in the pipeline's publish thread (never the inference thread, which only feeds the
accelerator). One ``EventEngine`` per tracking camera, made on its first frame; track ids
come from one counter shared by the cameras, so an id is unique within the run. When the
settings change (SIGHUP), an engine takes new tracking settings in place; if the camera's
lines or zone names changed it starts over (its counts restart, logged).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.runtime.metrics import StageMetrics
from agent.runtime.results import EVENTS, FrameResult
from agent.runtime.settings import CameraSettings, RuntimeSettings
from agent.tracking.events import EventEngine
from agent.types import Detections, Frame

log = logging.getLogger(__name__)

TRAIL_POINTS = 16  # anchor points per track drawn as its trail


class Scene:
    def __init__(self, class_names: Sequence[str], metrics: StageMetrics, trails: bool = False) -> None:
        self.class_names = list(class_names)
        self.metrics = metrics
        self.trails = trails  # compute trails (a sink draws them)
        self._engines: Dict[str, Tuple[EventEngine, CameraSettings]] = {}
        self._last: Dict[str, Frame] = {}
        self._ids = itertools.count(1)

    def frame(self, settings: Optional[RuntimeSettings], frame: Frame, dets: Detections,
              stages: Dict[str, float]) -> FrameResult:
        if settings is None:
            return FrameResult(frame, dets, stages)
        cam = settings.camera(frame.camera)
        zones: Optional[List[List[str]]] = None
        if cam.zones is not None:
            before = len(dets)
            dets, zones = cam.zones.apply(dets, frame.width, frame.height)
            self.metrics.count("detections_outside_zones", before - len(dets))
        if not cam.tracking.enabled:
            if settings.tracking:  # decoded below this camera's threshold for the others' trackers
                dets, zones, _ = _select(settings.publish_mask(dets, self.class_names), dets, zones, None)
            return FrameResult(frame, dets, stages, zones, camera=cam)
        started = time.perf_counter()
        engine = self._engine(frame.camera, cam)
        dets, zones, _ = _select(dets.scores >= cam.tracking.low_threshold, dets, zones, None)
        out = engine.update(dets, zones, frame.index, frame.wall_time, frame.width, frame.height)
        dets, zones, ids = _select(settings.publish_mask(dets, self.class_names), dets, zones, out.track_ids)
        trails = None
        if self.trails:
            trails = {t.track_id: engine.path(t)[-TRAIL_POINTS:] for t in out.tracks
                      if t.track_id is not None and t.last_frame == frame.index}
        self._last[frame.camera] = frame
        stages = dict(stages, tracking=(time.perf_counter() - started) * 1e3)
        self.metrics.observe("tracking", stages["tracking"])
        if out.events:
            self.metrics.count("events", len(out.events))
            self._count_events(frame.camera, out.events)
        return FrameResult(frame, dets, stages, zones, ids, out.events, out.counts, out.counts_changed,
                           trails, cam)

    def _count_events(self, camera: str, events: Sequence[Mapping[str, Any]]) -> None:
        for event in events:  # by camera and type for /metrics (a few per second at most)
            self.metrics.count_by("events", (camera, str(event.get("type"))))

    def finish(self) -> List[FrameResult]:
        """Every track ends (the input did, or the agent stops): their last events and counts."""
        results = []
        for name, (engine, cam) in self._engines.items():
            last = self._last.get(name)
            if last is None:
                continue
            out = engine.finish(last.index, last.wall_time)
            self._count_events(name, out.events)
            results.append(FrameResult(last, Detections.empty(), {}, events=out.events, counts=out.counts,
                                       counts_changed=True, camera=cam, kind=EVENTS))
        self._engines.clear()
        return results

    def reset_counts(self, camera: Optional[str]) -> List[FrameResult]:
        """``cmd/reset_counts``: line totals of one camera (None: all) back to zero, republished."""
        results = []
        for name, (engine, cam) in self._engines.items():
            last = self._last.get(name)
            if (camera is None or name == camera) and last is not None:
                counts = engine.reset_counts(time.time())
                results.append(FrameResult(last, Detections.empty(), {}, counts=counts, counts_changed=True,
                                           camera=cam, kind=EVENTS))
        return results

    def _engine(self, name: str, cam: CameraSettings) -> EventEngine:
        zone_names = [zone.name for zone in cam.zones.zones] if cam.zones is not None else []
        known = self._engines.get(name)
        if known is not None:
            engine, before = known
            if before is cam:
                return engine
            if before.lines == cam.lines and engine.zone_names == zone_names:
                if before.tracking != cam.tracking:
                    engine.apply(cam.tracking)
                self._engines[name] = (engine, cam)
                return engine
            log.warning("camera %s: counting lines or zones changed; tracks and counts start over", name)
        engine = EventEngine(cam.tracking, self.class_names, zone_names, cam.lines, self._ids)
        self._engines[name] = (engine, cam)
        return engine


def _select(mask: np.ndarray, dets: Detections, zones: Optional[List[List[str]]],
            ids: Optional[List[Optional[int]]]
            ) -> Tuple[Detections, Optional[List[List[str]]], Optional[List[Optional[int]]]]:
    """The boxes where ``mask`` holds, with their zones and track ids (which stay aligned)."""
    if bool(mask.all()):
        return dets, zones, ids
    picks = np.flatnonzero(mask).tolist()
    return (dets[mask], [zones[i] for i in picks] if zones is not None else None,
            [ids[i] for i in picks] if ids is not None else None)
