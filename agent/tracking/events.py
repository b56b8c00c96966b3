"""The event engine of one camera: tracks in, events and counts out. Pure: no I/O, no clock.

The caller (the thread that decodes results) hands it each processed frame: detections
after NMS and zones, the zones of each detection (``ZoneFilter.apply``), the frame index
and its capture time. It returns each detection's track id (None until its track is
confirmed), the events of that frame as JSON-ready dicts, and the counts.

Events (the publisher adds ``schema``, ``device``, ``camera``, ``run`` and ``seq``):

- ``track_start`` when a track is confirmed (``min_hits`` matched frames);
- ``zone_enter`` for the zones it is in then, and later ``zone_enter``/``zone_exit`` when
  it has been in (or out of) a zone for ``zone_inertia`` consecutive matched frames, so a
  box jittering on an edge does not flap;
- ``line_cross`` when its anchor crosses a counting line (agent/tracking/lines.py) between
  two frames where it was seen; crossings made before confirmation are announced with it,
  and a track that ends inside a line's band but past the line crosses it as it ends;
- ``track_update`` when its zones change, when it becomes stationary or moves again, and
  every ``update_interval_s`` while it moves (a stationary track stays quiet);
- ``track_end`` (after a ``zone_exit`` for each zone it was still in) when it has been
  lost for ``lost_after_s``, or when the engine finishes.

Geometry uses the Kalman-filtered box, which jitters less than the detections; ``box`` and
``score`` in events are the last detection's, as published on the detections topic. A
lost track keeps its zones until it ends: an object hidden for a moment is still there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from agent.tracking.counts import Counts
from agent.tracking.lines import CountingLine, Point, advance
from agent.tracking.settings import TrackingSettings
from agent.tracking.tracker import ByteTracker, Track, TrackerStep
from agent.types import Detections

log = logging.getLogger(__name__)

#: Points kept per track for ``track_end``'s path (first and last included).
PATH_POINTS = 8
_PATH_KEEP = 256  # positions held per track before thinning to every other one


@dataclasses.dataclass
class _State:
    """What the engine remembers of one track (tentative ones too, for their crossings)."""

    line_refs: List[Optional[Point]]  # per line: the last anchor outside the line's band
    last_points: List[Optional[Point]]  # per line: the last anchor, wherever it was
    pending: List[Tuple[int, str]] = dataclasses.field(default_factory=list)  # crossings before confirmation
    zones: List[str] = dataclasses.field(default_factory=list)  # zones it is in (after inertia)
    streaks: Dict[str, int] = dataclasses.field(default_factory=dict)  # frames disagreeing with ``zones``
    visited: List[str] = dataclasses.field(default_factory=list)
    stationary: bool = False
    box: List[float] = dataclasses.field(default_factory=list)  # the filtered box this frame
    settle_box: Optional[List[float]] = None
    settle_ts: float = 0.0
    last_update_ts: float = 0.0
    path: List[Tuple[float, float, float]] = dataclasses.field(default_factory=list)  # (ts, x, y)


@dataclasses.dataclass
class FrameResult:
    track_ids: List[Optional[int]]  # per detection, in input order
    events: List[Dict[str, Any]]
    counts: Dict[str, Any]
    counts_changed: bool
    tracks: List[Track]  # confirmed tracks alive after this frame (tracked or lost)


class EventEngine:
    def __init__(self, settings: TrackingSettings, class_names: Sequence[str], zone_names: Sequence[str] = (),
                 lines: Sequence[CountingLine] = (), ids: Optional[Iterator[int]] = None,
                 start_ts: Optional[float] = None) -> None:
        self.settings = settings
        self.class_names = list(class_names)
        self.zone_names = list(zone_names)
        self.lines = list(lines)
        self._tracker = ByteTracker(settings, ids)
        self._states: Dict[int, _State] = {}
        #: Counting starts at ``start_ts``, or else at the first frame's time.
        self._counts = Counts([line.name for line in self.lines], self.zone_names, since=start_ts or 0.0)
        self._started = start_ts is not None
        self._size: Optional[Tuple[int, int]] = None  # of the last frame: where the lines are

    def apply(self, settings: TrackingSettings) -> None:
        """New settings (SIGHUP): tracks, ids and counts carry on under them."""
        self.settings = settings
        self._tracker.apply(settings)

    def update(self, dets: Detections, zones: Optional[Sequence[Sequence[str]]], frame: int, ts: float,
               width: int, height: int) -> FrameResult:
        """One processed frame: ``zones`` holds the zone names of each detection (or None)."""
        if zones is not None and len(zones) != len(dets):
            raise ValueError(f"zones: {len(zones)} entries for {len(dets)} detections")
        if not self._started:
            self._counts.since, self._started = float(ts), True
        self._size = (width, height)
        step = self._tracker.update(dets, ts, frame)
        ts = self._tracker.now if self._tracker.now is not None else float(ts)
        events: List[Dict[str, Any]] = []
        seen: Dict[int, int] = {id(t): d for d, t in enumerate(step.det_tracks) if t is not None}
        matched = [t for t in step.det_tracks if t is not None]
        # Filtered boxes as plain floats, once: the per-track geometry below is scalar maths,
        # where numpy's per-call cost would dominate.
        boxes = np.stack([t.box for t in matched]).tolist() if matched else []
        for track, box in zip(matched, boxes):
            state = self._states.get(track.serial)
            if state is None:
                state = self._states[track.serial] = self._new_state()
            state.box = box
            state.path.append((ts, (box[0] + box[2]) / 2.0, box[3]))  # bottom centre
            if len(state.path) > _PATH_KEEP:
                state.path = state.path[:-1:2] + state.path[-1:]  # thin evenly, keep the newest
        self._cross_lines(matched, {id(t) for t in step.confirmed}, frame, ts, width, height, events)
        for track in step.confirmed:
            self._start(track, zones[seen[id(track)]] if zones else [], frame, ts, events)
        for track in step.tracks:
            if id(track) in seen and all(track is not c for c in step.confirmed):
                self._follow(track, zones[seen[id(track)]] if zones else [], frame, ts, events)
        for track in step.ended:
            self._end(track, frame, ts, events)
        self._forget(step)
        return self._result(step, events)

    def finish(self, frame: int, ts: float) -> FrameResult:
        """End every track now (the camera stops): their ``zone_exit`` and ``track_end`` events."""
        events: List[Dict[str, Any]] = []
        ended = self._tracker.end_all()
        for track in ended:
            self._end(track, frame, ts, events)
        self._states.clear()
        return self._result(TrackerStep([], [], ended, []), events)

    def reset_counts(self, ts: float) -> Dict[str, Any]:
        """Line totals back to zero (``cmd/reset_counts``); returns the counts after it."""
        self._counts.reset(ts)
        return self._counts.take(self._occupants(self._confirmed()))[0]

    def path(self, track: Track) -> List[Tuple[float, float]]:
        """Recent anchor points of a live track (for drawing trails), oldest first."""
        state = self._states.get(track.serial)
        return [(round(x, 1), round(y, 1)) for _, x, y in state.path] if state else []

    # ------------------------------------------------------------------ per track

    def _start(self, track: Track, zones: Sequence[str], frame: int, ts: float,
               events: List[Dict[str, Any]]) -> None:
        state = self._states[track.serial]
        state.settle_box, state.settle_ts, state.last_update_ts = state.box, ts, ts
        events.append(self._event("track_start", track, state, frame, ts, first_seen=round(track.first_ts, 6),
                                  first_frame=track.first_frame))
        for zone in self._ordered(zones):
            self._enter(track, state, zone, frame, ts, events)
        for line_index, direction in state.pending:
            self._cross(track, state, line_index, direction, frame, ts, events)
        state.pending.clear()

    def _follow(self, track: Track, zones: Sequence[str], frame: int, ts: float,
                events: List[Dict[str, Any]]) -> None:
        state = self._states[track.serial]
        reason = self._zone_changes(track, state, set(zones), frame, ts, events)
        moved = self._stationary_change(track, state, ts)
        reason = reason or moved
        due = ts - state.last_update_ts >= self.settings.update_interval_s
        if reason is None and due and not state.stationary:
            reason = "interval"
        if reason is not None:
            state.last_update_ts = ts
            events.append(self._event("track_update", track, state, frame, ts, reason=reason,
                                      stationary=state.stationary, first_seen=round(track.first_ts, 6),
                                      duration_s=round(track.last_ts - track.first_ts, 3)))

    def _zone_changes(self, track: Track, state: _State, raw: set, frame: int, ts: float,
                      events: List[Dict[str, Any]]) -> Optional[str]:
        if not raw and not state.zones:  # the common case: in no zone, before or now
            state.streaks.clear()
            return None
        changed = False
        for zone in self._ordered(raw | set(state.zones)):
            if (zone in raw) == (zone in state.zones):
                state.streaks.pop(zone, None)
                continue
            state.streaks[zone] = state.streaks.get(zone, 0) + 1
            if state.streaks[zone] < self.settings.zone_inertia:
                continue
            del state.streaks[zone]
            changed = True
            if zone in raw:
                self._enter(track, state, zone, frame, ts, events)
            else:
                state.zones.remove(zone)
                events.append(self._event("zone_exit", track, state, frame, ts, zone=zone))
        return "zones" if changed else None

    def _stationary_change(self, track: Track, state: _State, ts: float) -> Optional[str]:
        box = state.box
        still = state.settle_box is not None and _iou(box, state.settle_box) >= self.settings.stationary_iou
        if not still:
            state.settle_box, state.settle_ts = box, ts
            if state.stationary:
                state.stationary = False
                return "moving"
        elif not state.stationary and ts - state.settle_ts >= self.settings.stationary_after_s:
            state.stationary = True
            return "stationary"
        return None

    def _enter(self, track: Track, state: _State, zone: str, frame: int, ts: float,
               events: List[Dict[str, Any]]) -> None:
        state.zones = self._ordered(set(state.zones) | {zone})
        if zone not in state.visited:
            state.visited.append(zone)
        events.append(self._event("zone_enter", track, state, frame, ts, zone=zone))

    def _end(self, track: Track, frame: int, ts: float, events: List[Dict[str, Any]]) -> None:
        state = self._states.pop(track.serial, None) or self._new_state()
        self._settle_lines(track, state, frame, ts, events)
        for zone in list(state.zones):
            state.zones.remove(zone)
            events.append(self._event("zone_exit", track, state, frame, ts, zone=zone))
        events.append(self._event(
            "track_end", track, state, frame, ts, first_seen=round(track.first_ts, 6),
            last_seen=round(track.last_ts, 6), duration_s=round(track.last_ts - track.first_ts, 3),
            first_frame=track.first_frame, last_frame=track.last_frame, top_score=round(track.top_score, 4),
            zones_visited=list(state.visited), path=_thin(state.path, PATH_POINTS)))

    # ------------------------------------------------------------------ lines

    def _cross_lines(self, matched: List[Track], starting: Set[int], frame: int, ts: float, width: int,
                     height: int, events: List[Dict[str, Any]]) -> None:
        if not self.lines or not matched:
            return
        for index, line in enumerate(self.lines):
            a, b = line.endpoints(width, height)
            length = math.hypot(b[0] - a[0], b[1] - a[1])
            # The box's extent across the line: its size projected on the line's normal.
            nx, ny = abs(b[1] - a[1]) / length, abs(b[0] - a[0]) / length
            bottom = line.anchor == "bottom_center"  # the anchors of agent/tracking/zones.py
            for track in matched:
                if not line.counts_class(track.class_id):
                    continue
                state = self._states[track.serial]
                x0, y0, x1, y1 = state.box
                point = ((x0 + x1) / 2.0, y1 if bottom else (y0 + y1) / 2.0)
                margin = self.settings.line_margin * (nx * (x1 - x0) + ny * (y1 - y0))
                state.last_points[index] = point
                ref, direction = advance(state.line_refs[index], point, a, b, margin)
                state.line_refs[index] = ref
                if direction is None:
                    continue
                if track.confirmed and id(track) not in starting:
                    self._cross(track, state, index, direction, frame, ts, events)
                else:  # announced after its track_start
                    state.pending.append((index, direction))

    def _settle_lines(self, track: Track, state: _State, frame: int, ts: float,
                      events: List[Dict[str, Any]]) -> None:
        """A track that ends inside a line's band, past the line, crossed it: a person who walks
        through a door and vanishes behind it must count. Decided on the exact side (no band)."""
        if not self.lines or self._size is None:
            return
        for index, line in enumerate(self.lines):
            ref, last = state.line_refs[index], state.last_points[index]
            if ref is None or last is None or last == ref:
                continue
            a, b = line.endpoints(*self._size)
            _, direction = advance(ref, last, a, b)
            if direction is not None:
                self._cross(track, state, index, direction, frame, ts, events)

    def _cross(self, track: Track, state: _State, index: int, direction: str, frame: int, ts: float,
               events: List[Dict[str, Any]]) -> None:
        self._counts.cross(self.lines[index].name, direction)
        events.append(self._event("line_cross", track, state, frame, ts, line=self.lines[index].name,
                                  direction=direction))

    # ------------------------------------------------------------------ helpers

    def _event(self, kind: str, track: Track, state: _State, frame: int, ts: float, **extra: Any
               ) -> Dict[str, Any]:
        event = {"type": kind, "ts": round(float(ts), 6), "frame": int(frame), "track_id": track.track_id,
                 "label": self._label(track.class_id), "score": round(track.score, 4),
                 "box": [round(float(v), 1) for v in track.det_box], "zones": list(state.zones)}
        event.update(extra)
        return event

    def _label(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)

    def _ordered(self, zones: Any) -> List[str]:
        """Zone names in config order (names the engine was not told of go last, sorted)."""
        known = [z for z in self.zone_names if z in zones]
        return known + sorted(z for z in zones if z not in self.zone_names)

    def _new_state(self) -> _State:
        return _State([None] * len(self.lines), [None] * len(self.lines))

    def _confirmed(self) -> List[Track]:
        return [t for t in self._tracker.tracks if t.confirmed]

    def _occupants(self, tracks: Sequence[Track]) -> List[Tuple[str, str]]:
        return [(zone, self._label(t.class_id)) for t in tracks
                for zone in (self._states[t.serial].zones if t.serial in self._states else [])]

    def _forget(self, step: TrackerStep) -> None:
        live = {t.serial for t in self._tracker.tracks}
        for serial in [s for s in self._states if s not in live]:
            del self._states[serial]

    def _result(self, step: TrackerStep, events: List[Dict[str, Any]]) -> FrameResult:
        counts, changed = self._counts.take(self._occupants(step.tracks))
        ids = [t.track_id if t is not None else None for t in step.det_tracks]
        return FrameResult(ids, events, counts, changed, list(step.tracks))


def _iou(a: List[float], b: List[float]) -> float:
    """IoU of two corner boxes, in plain floats (one pair per track per frame: numpy costs more)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = w * h if w > 0.0 and h > 0.0 else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0.0 else 0.0


def _thin(path: Sequence[Tuple[float, float, float]], n: int) -> List[List[float]]:
    """At most ``n`` points of ``path``, evenly spread over its length, first and last kept."""
    picks = range(len(path)) if len(path) <= n else np.unique(np.round(np.linspace(0, len(path) - 1, n)))
    return [[round(path[int(i)][1], 1), round(path[int(i)][2], 1)] for i in picks]
