"""Zones: named polygons in a camera's picture ("driveway", "door").

A detection is in a zone when its anchor point lies inside the polygon: by default the
bottom centre of the box, where a person or a car touches the ground, so a tall box that
only leans over a zone does not count. A zone may be limited to some classes. With
``require_zone`` a camera drops every detection that is in no zone.

The test is even-odd ray casting over all boxes and edges at once (numpy), so zones cost
microseconds per frame, not a Python loop per box.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from agent.config.schema import CameraConfig, ZoneConfig
from agent.errors import ConfigError
from agent.types import Detections

ANCHORS = ("bottom_center", "center")


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which of ``points`` (N,2) lie inside ``polygon`` (K,2) (even-odd rule)."""
    if len(points) == 0:
        return np.zeros(0, bool)
    x, y = points[:, :1], points[:, 1:2]  # (N,1): broadcast against the K edges
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)  # the edge crosses the horizontal line through the point
    dy = np.where(y2 == y1, 1.0, y2 - y1)  # horizontal edges never straddle; avoid 0/0
    x_cross = x1 + (y - y1) * (x2 - x1) / dy
    crossings = (straddles & (x < x_cross)).sum(axis=1)
    return crossings % 2 == 1


def anchor_points(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """The point of each box that decides its zones."""
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.stack([cx, y], axis=1)


@dataclasses.dataclass(frozen=True)
class Zone:
    name: str
    points: np.ndarray  # (K,2) float64, in pixels, or fractions of the frame when ``relative``
    relative: bool
    anchor: str
    class_ids: Optional[FrozenSet[int]]  # None: every class

    def polygon(self, width: int, height: int) -> np.ndarray:
        """The polygon in pixels of a ``width`` x ``height`` frame."""
        return self.points * np.array([width, height], np.float64) if self.relative else self.points

    def contains(self, dets: Detections, width: int, height: int) -> np.ndarray:
        inside = points_in_polygon(anchor_points(dets.xyxy.astype(np.float64), self.anchor),
                                   self.polygon(width, height))
        if self.class_ids is not None:
            inside &= np.isin(dets.class_ids, list(self.class_ids))
        return inside


class ZoneFilter:
    """One camera's zones: tags each detection with the zones it is in, drops the rest if asked."""

    def __init__(self, zones: Sequence[Zone], require_zone: bool = False) -> None:
        self.zones = list(zones)
        self.require_zone = require_zone

    def apply(self, dets: Detections, width: int, height: int) -> Tuple[Detections, List[List[str]]]:
        """The detections kept, and for each the names of its zones (config order)."""
        if not self.zones or len(dets) == 0:
            return dets, [[] for _ in range(len(dets))]
        member = np.stack([zone.contains(dets, width, height) for zone in self.zones], axis=1)  # (N,Z)
        if self.require_zone:
            keep = np.asarray(member.any(axis=1), bool)
            dets, member = dets[keep], member[keep]
        names = [zone.name for zone in self.zones]
        return dets, [[names[j] for j in np.flatnonzero(row)] for row in member]

    def outlines(self, width: int, height: int) -> List[Tuple[str, np.ndarray]]:
        """(name, polygon in pixels) of each zone, for drawing."""
        return [(zone.name, zone.polygon(width, height)) for zone in self.zones]


def compile_zone(zone: ZoneConfig, class_names: Sequence[str], where: str) -> Zone:
    """A config zone with its class names resolved against the model's labels.

    ``where`` names the zone in an error (``agent.yaml: cameras.0.zones.1``): only the
    model knows its labels, so this check runs once it is loaded, not with the schema.
    """
    class_ids: Optional[FrozenSet[int]] = None
    if zone.classes is not None:
        unknown = [name for name in zone.classes if name not in class_names]
        if unknown:
            raise ConfigError([f"{where}.classes: {', '.join(map(repr, unknown))} not in the model's labels "
                              f"({', '.join(class_names[:10])}{'...' if len(class_names) > 10 else ''})"])
        class_ids = frozenset(class_names.index(name) for name in zone.classes)
    return Zone(zone.name, np.asarray(zone.polygon, np.float64), zone.units == "fraction", zone.anchor,
                class_ids)


def zone_filters(cameras: Sequence[CameraConfig], class_names: Sequence[str],
                 source: str = "config") -> Dict[str, ZoneFilter]:
    """A ``ZoneFilter`` per camera that has zones, keyed by camera name (``source``: the file)."""
    filters: Dict[str, ZoneFilter] = {}
    for index, camera in enumerate(cameras):
        if camera.zones:
            zones = [compile_zone(zone, class_names, f"{source}: cameras.{index}.zones.{z}")
                     for z, zone in enumerate(camera.zones)]
            filters[camera.name] = ZoneFilter(zones, camera.require_zone)
    return filters
