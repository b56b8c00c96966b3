"""Tracking settings: one immutable value per camera, replaced whole when the config changes.

Times are seconds, never frames: cameras run at different rates, and a live camera's rate
varies with what inference sustains, so "lost for 30 frames" would mean a different time
on every camera.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List

from agent.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = False
    #: Detections at or above this score are matched first and may start tracks. 0.25, not
    #: ByteTrack's 0.5: YOLOv8-style heads (the shipped model's) score lower than the MOT17
    #: detectors ByteTrack was tuned on; ultralytics' tracker defaults to 0.25 for the same reason.
    high_threshold: float = 0.25
    #: Detections between this and ``high_threshold`` only keep existing tracks alive
    #: (ByteTrack's second association); below it they are ignored.
    low_threshold: float = 0.1
    #: Least IoU between a track's predicted box and a detection for them to match (ByteTrack's
    #: first association: 0.2; small fast objects overlap their prediction little).
    match_iou: float = 0.2
    #: A track unmatched for this long ends (``track_end``); until then it may be found again.
    lost_after_s: float = 1.0
    #: Matched frames in a row before a track is confirmed, gets an id and is announced.
    min_hits: int = 3
    #: A track whose box keeps at least this IoU with where it settled, for
    #: ``stationary_after_s``, is stationary (no periodic updates until it moves again).
    stationary_iou: float = 0.9
    stationary_after_s: float = 5.0
    #: While a moving track lasts, a ``track_update`` at most this often (seconds).
    update_interval_s: float = 60.0
    #: Consecutive frames a track must be in (or out of) a zone before it enters (or leaves) it.
    zone_inertia: int = 3
    #: A box overlapping a higher-scoring box (of another class: NMS runs per class) by at least
    #: this IoU is the same object seen twice; it is not tracked on its own. 1 turns this off.
    duplicate_iou: float = 0.7
    #: Band around a counting line, as a fraction of the box's extent across the line, inside
    #: which the anchor has no side: jitter on the line does not count as crossings.
    line_margin: float = 0.1

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError([f"tracking.{p}" for p in problems])

    def problems(self) -> List[str]:
        """One line per invalid value (``key: message``); empty when all are valid."""
        out: List[str] = []

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                out.append(f"{name}: must be a number, got {value!r}")
                return math.nan
            return float(value)

        for name in ("high_threshold", "low_threshold", "match_iou", "stationary_iou", "line_margin",
                     "duplicate_iou"):
            value = number(name)
            if not 0.0 <= value <= 1.0:
                out.append(f"{name}: must be within [0, 1], got {getattr(self, name)!r}")
        for name in ("lost_after_s", "stationary_after_s", "update_interval_s"):
            value = number(name)
            if not value > 0.0:
                out.append(f"{name}: must be a number of seconds > 0, got {getattr(self, name)!r}")
        if number("low_threshold") > number("high_threshold"):
            out.append(f"low_threshold: {self.low_threshold} is above high_threshold {self.high_threshold}")
        for name, least in (("min_hits", 1), ("zone_inertia", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                out.append(f"{name}: must be an integer >= {least}, got {value!r}")
        if not isinstance(self.enabled, bool):
            out.append(f"enabled: must be true or false, got {self.enabled!r}")
        return out
