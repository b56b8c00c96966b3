"""Counting lines: a named segment A->B, and the rule for when a moving point crosses it.

Side of a point P: the sign of the cross product (B - A) x (P - A) in image coordinates
(x right, y down). A crossing from the negative side to the positive side is ``in``, the
other way ``out``; swapping A and B swaps them. On the screen, the positive side is on the
right of someone walking from A to B: for a door line drawn left to right, ``in`` is
downwards in the picture.

A crossing needs both: the point moves from one side to the other between two of its
positions, and the straight path between them meets the segment itself, not the line's
extension beyond A or B. The ends are deliberate:

- the segment is closed: a path through A or B exactly crosses (a path an epsilon past
  the end does not), so no crossing slips between two lines that share an end point;
- a position exactly on the line has no side: it is skipped, and the next position with a
  side is compared with the last one that had one, so a point that stops on the line and
  then goes on counts once, and one that touches it and turns back does not count.

The tracker's boxes jitter, so the agent widens "on the line" to a band: a position within
``line_margin`` of the box's extent across the line (``margin``, in pixels) has no side
either. An object that lingers on the line then crosses once, not in-out-in; the truth of a
generated clip is computed with no band (its boxes do not jitter).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from agent.errors import ConfigError

ANCHORS = ("bottom_center", "center")
UNITS = ("pixels", "fraction")
IN, OUT = "in", "out"
_FORBIDDEN = set("/+#") | {"\x00"}


Point = Tuple[float, float]


def side(a: Point, b: Point, p: Point) -> float:
    """(B - A) x (P - A): > 0 on the ``in`` side of A->B, < 0 on the ``out`` side, 0 on the line."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def meets_segment(p0: Point, p1: Point, a: Point, b: Point) -> bool:
    """Whether the path p0 -> p1, whose ends lie strictly on opposite sides of the line AB
    (so it meets the line once), meets the closed segment A-B: A and B are not strictly on
    the same side of the path."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    side_a = dx * (a[1] - p0[1]) - dy * (a[0] - p0[0])
    side_b = dx * (b[1] - p0[1]) - dy * (b[0] - p0[0])
    return side_a * side_b <= 0.0


def advance(ref: Optional[Point], p: Point, a: Point, b: Point, margin: float = 0.0
            ) -> Tuple[Optional[Point], Optional[str]]:
    """One new position ``p`` of a point whose last position off the line was ``ref`` (None at
    first): (the new ``ref``, ``in``/``out``/None). A position within ``margin`` pixels of
    the line counts as on it. Plain floats: it runs per track and line on every frame, where
    numpy's per-call cost would dominate."""
    s1 = side(a, b, p)
    if s1 == 0.0 or (margin > 0.0 and abs(s1) <= margin * math.hypot(b[0] - a[0], b[1] - a[1])):
        return ref, None  # on the line: no side yet
    if ref is None:
        return p, None
    s0 = side(a, b, ref)
    if (s0 > 0.0) == (s1 > 0.0) or not meets_segment(ref, p, a, b):
        return p, None
    return p, IN if s1 > 0.0 else OUT


def crossing(a: Point, b: Point, p0: Point, p1: Point) -> Optional[str]:
    """``in``, ``out`` or None for one move from ``p0`` to ``p1`` (None when ``p0`` is on the line)."""
    ref = (float(p0[0]), float(p0[1])) if side(a, b, p0) != 0.0 else None
    return advance(ref, (float(p1[0]), float(p1[1])), a, b)[1]


@dataclasses.dataclass(frozen=True)
class CountingLine:
    """A named counting line of one camera."""

    name: str
    a: Tuple[float, float]
    b: Tuple[float, float]
    relative: bool = False  # units: fraction (of the frame's width and height)
    anchor: str = "bottom_center"
    class_ids: Optional[FrozenSet[int]] = None  # None: every class

    def endpoints(self, width: int, height: int) -> Tuple[Point, Point]:
        """A and B in pixels of a ``width`` x ``height`` frame."""
        sx, sy = (float(width), float(height)) if self.relative else (1.0, 1.0)
        return (self.a[0] * sx, self.a[1] * sy), (self.b[0] * sx, self.b[1] * sy)

    def counts_class(self, class_id: int) -> bool:
        return self.class_ids is None or class_id in self.class_ids

    def to_dict(self, class_names: Sequence[str] = ()) -> dict:
        """The line as its config entry (``{name, points, units, anchor, classes}``)."""
        out: dict = {"name": self.name, "points": [list(self.a), list(self.b)],
                     "units": "fraction" if self.relative else "pixels", "anchor": self.anchor}
        if self.class_ids is not None:
            out["classes"] = [class_names[i] if i < len(class_names) else str(i)
                              for i in sorted(self.class_ids)]
        return out

    @classmethod
    def from_mapping(cls, data: Any, class_names: Sequence[str], where: str) -> CountingLine:
        """A line from its config entry; ``where`` names it in errors (``FILE: lines.0``)."""
        if not isinstance(data, Mapping):
            raise ConfigError([f"{where}: a line must be a mapping with name and points"])
        problems: List[str] = []
        unknown = sorted(set(data) - {"name", "points", "units", "anchor", "classes"})
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
        name = data.get("name")
        if not isinstance(name, str) or not name or any(c in _FORBIDDEN or c.isspace() for c in name):
            problems.append(f"{where}.name: a non-empty name without spaces, '/', '+' or '#', got {name!r}")
        units = data.get("units", "pixels")
        if units not in UNITS:
            problems.append(f"{where}.units: must be pixels or fraction, got {units!r}")
        anchor = data.get("anchor", "bottom_center")
        if anchor not in ANCHORS:
            problems.append(f"{where}.anchor: must be bottom_center or center, got {anchor!r}")
        points = _points(data.get("points"), where, units == "fraction", problems)
        class_ids = _classes(data.get("classes"), class_names, where, problems)
        if problems:
            raise ConfigError(problems)
        return cls(str(name), points[0], points[1], units == "fraction", str(anchor), class_ids)


def _points(value: Any, where: str, fraction: bool, problems: List[str]
            ) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    bad = ((0.0, 0.0), (0.0, 0.0))
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for p in value for v in p))
    if not ok:
        problems.append(f"{where}.points: must be two points [[x1, y1], [x2, y2]], got {value!r}")
        return bad
    a, b = (float(value[0][0]), float(value[0][1])), (float(value[1][0]), float(value[1][1]))
    if a == b:
        problems.append(f"{where}.points: the two points are the same; a line needs two distinct ends")
    if any(v < 0 for v in a + b):
        problems.append(f"{where}.points: coordinates cannot be negative")
    if fraction and any(v > 1 for v in a + b):
        problems.append(f"{where}.points: with units: fraction every coordinate must be within 0..1")
    return a, b


def _classes(value: Any, class_names: Sequence[str], where: str, problems: List[str]
             ) -> Optional[FrozenSet[int]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}.classes: must be a non-empty list of labels, got {value!r}")
        return None
    unknown = [v for v in value if v not in class_names]
    if unknown:
        problems.append(f"{where}.classes: {', '.join(map(repr, unknown))} not in the model's labels "
                        f"({', '.join(class_names[:10])}{'...' if len(class_names) > 10 else ''})")
        return None
    return frozenset(list(class_names).index(v) for v in value)
