"""``bench --tracker``: what tracking costs per frame, with 50 objects on screen.

Fifty boxes drift at their own constant velocities (bouncing inside a 1280x720 frame) with
a pixel of jitter; each scores 0.55-1.0 but one box in six scores 0.15-0.5 in any frame,
so both association stages work. Three
figures per frame: the tracker alone, the event engine (tracker, two zones with inertia,
two counting lines, events and counts), and the zones' point-in-polygon tagging that runs
before it (agent/tracking/zones.py). The frames are generated before timing starts. Each figure is
wall time per frame (median, p90) and, because a shared machine's wall clock also counts
other processes' turns, the thread's CPU time per frame (mean).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Tuple

import numpy as np

from agent.bench.timing import summarize
from agent.tracking import ByteTracker, CountingLine, EventEngine, TrackingSettings
from agent.tracking.zones import Zone, ZoneFilter
from agent.types import Detections

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 1280, 720


def moving_objects(count: int, frames: int, fps: float, seed: int = 0) -> List[Detections]:
    """``frames`` frames of ``count`` boxes moving at constant velocity, bouncing off the edges."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30.0, 90.0, (count, 2))
    pos = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], (count, 2)) - size / 2
    vel = rng.uniform(-60.0, 60.0, (count, 2))  # px/s
    level = rng.uniform(0.55, 1.0, count)  # each object's usual score
    classes = rng.integers(0, 3, count).astype(np.int32)
    limit = np.array([WIDTH, HEIGHT]) - size
    out = []
    for _ in range(frames):
        pos += vel / fps
        over = (pos < 0) | (pos > limit)
        vel[over] *= -1
        pos = np.clip(pos, 0, limit)
        corners = pos + rng.normal(0.0, 1.0, pos.shape)
        xyxy = np.concatenate([corners, corners + size], axis=1).astype(np.float32)
        # One box in six scores low this frame (partly hidden): the second association's work.
        scores = np.where(rng.random(count) < 1 / 6, rng.uniform(0.15, 0.5, count), level)
        out.append(Detections(xyxy, scores.astype(np.float32), classes))
    return out


def _zones() -> ZoneFilter:
    left = Zone("left", np.array([[0, 0], [640, 0], [640, 720], [0, 720]], np.float64), False,
                "bottom_center", None)
    band = Zone("band", np.array([[0, 300], [1280, 300], [1280, 420], [0, 420]], np.float64), False,
                "bottom_center", None)
    return ZoneFilter([left, band])


def _lines() -> List[CountingLine]:
    return [CountingLine("vertical", (640.0, 0.0), (640.0, 720.0)),
            CountingLine("horizontal", (0.0, 360.0), (1280.0, 360.0))]


def run_tracker_bench(objects: int = 50, frames: int = 600, fps: float = 30.0) -> Dict[str, Any]:
    """Per-frame milliseconds (min, median, p90) of the tracker, the engine and zone tagging."""
    data = moving_objects(objects, frames, fps)
    settings = TrackingSettings(enabled=True)
    zones = _zones()
    tagged: List[Tuple[Detections, List[List[str]]]] = []
    zone_ms = []
    for d in data:
        t0 = time.perf_counter()
        tagged.append(zones.apply(d, WIDTH, HEIGHT))
        zone_ms.append((time.perf_counter() - t0) * 1e3)
    tracker = ByteTracker(settings)
    engine = EventEngine(settings, ["circle", "square", "triangle"], ["left", "band"], _lines())
    wall: Dict[str, List[float]] = {"tracker": [], "engine": []}
    cpu: Dict[str, List[float]] = {"tracker": [], "engine": []}
    events = 0
    for k, (d, z) in enumerate(tagged):
        ts = k / fps
        # Wall time and this thread's CPU time: on a shared machine the wall clock also counts
        # the time other processes held the core; the CPU time is what tracking itself costs.
        t0, c0 = time.perf_counter(), time.thread_time()
        tracker.update(d, ts, k)
        t1, c1 = time.perf_counter(), time.thread_time()
        result = engine.update(d, z, k, ts, WIDTH, HEIGHT)
        t2, c2 = time.perf_counter(), time.thread_time()
        wall["tracker"].append((t1 - t0) * 1e3)
        wall["engine"].append((t2 - t1) * 1e3)
        cpu["tracker"].append((c1 - c0) * 1e3)
        cpu["engine"].append((c2 - c1) * 1e3)
        events += len(result.events)
    warm = min(30, frames // 4)  # the first frames start tracks: time the steady state
    report: Dict[str, Any] = {"objects": objects, "frames": frames, "fps": fps,
                              "tracked_at_end": len(result.tracks), "events": events,
                              "tracker": summarize(wall["tracker"][warm:]),
                              "engine": summarize(wall["engine"][warm:]),
                              "zones": summarize(zone_ms[warm:]),
                              "cpu_ms_per_frame": {part: round(sum(v[warm:]) / len(v[warm:]), 4)
                                                   for part, v in cpu.items()}}
    print(f"tracking, {objects} objects, {frames} frames: tracker median {report['tracker']['median_ms']} ms "
          f"(p90 {report['tracker']['p90_ms']}; CPU {report['cpu_ms_per_frame']['tracker']} ms/frame), "
          f"event engine with 2 zones and 2 lines median {report['engine']['median_ms']} ms "
          f"(p90 {report['engine']['p90_ms']}; CPU {report['cpu_ms_per_frame']['engine']} ms/frame), zone "
          f"tagging median {report['zones']['median_ms']} ms; {report['tracked_at_end']} tracks at the end")
    return report
