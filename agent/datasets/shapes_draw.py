"""Drawing primitives of the synthetic shapes data set: geometry, exact rasterisation, occlusion.

Coordinates are continuous pixel coordinates: pixel ``(col, row)`` covers ``[col, col+1) x
[row, row+1)``, so its centre is ``(col + 0.5, row + 0.5)`` and a box ``(x0, y0, x1, y1)`` has
exclusive ends (``x1 - x0`` is its width in pixels).

A shape is drawn as an anti-aliased coverage map (0-255) computed from its geometry, not
with OpenCV's fills: ``LINE_AA`` paints about half a pixel fatter than the geometry, and the
plain fills round span ends outwards, either of which would bias every label by a pixel. A
pixel belongs to a shape when at least half of it is covered; labels are the bounding box
of those pixels that no later shape covers, with untrimmed sides at the exact extent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.datasets.canvas import Color, hsv_color

log = logging.getLogger(__name__)

#: Class names in class-id order; the data set's ``names`` and the video's categories.
CLASS_NAMES = ("circle", "square", "triangle")
CIRCLE, SQUARE, TRIANGLE = 0, 1, 2
#: An object whose visible pixels are under this fraction of its full area gets no label.
MIN_VISIBLE = 0.4
#: Nor does one whose visible box is narrower or shorter than this, in pixels.
MIN_BOX_PX = 4
#: Coverage at or above which a pixel counts as the shape's (half covered).
SOLID = 128

_ROWS = 5  # sub-rows per pixel row in coverage maps; odd, so the middle one is the pixel's centre

Box = Tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Shape:
    """One object's geometry: a circle (``radius``) or a convex polygon (``vertices``, (K, 2))."""

    class_id: int
    center: Tuple[float, float]
    radius: float = 0.0
    vertices: Optional[np.ndarray] = None

    @property
    def area(self) -> float:
        """Exact area of the full (unclipped) shape, in square pixels."""
        if self.vertices is None:
            return math.pi * self.radius ** 2
        x, y = self.vertices[:, 0], self.vertices[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def extent(self) -> Tuple[float, float, float, float]:
        """Unclipped bounds ``(x0, y0, x1, y1)`` of the geometry."""
        if self.vertices is None:
            cx, cy = self.center
            return cx - self.radius, cy - self.radius, cx + self.radius, cy + self.radius
        lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def clipped_extent(self, width: int, height: int) -> Optional[Tuple[float, float, float, float]]:
        """Exact bounds of the part of the shape inside the image; None when nothing is inside."""
        if self.vertices is None:
            cx, cy = self.center
            # Projecting (circle within a band) onto an axis, then clipping that axis, is exact.
            spans = []
            for c, c_other, size_other, size in ((cx, cy, height, width), (cy, cx, width, height)):
                gap = c_other - min(max(c_other, 0.0), float(size_other))
                if abs(gap) > self.radius:
                    return None
                half = math.sqrt(self.radius ** 2 - gap ** 2)
                spans.append((max(c - half, 0.0), min(c + half, float(size))))
            (x0, x1), (y0, y1) = spans
        else:
            inside = _clip_polygon(self.vertices, width, height)
            if len(inside) == 0:
                return None
            (x0, y0), (x1, y1) = inside.min(axis=0), inside.max(axis=0)
        return (float(x0), float(y0), float(x1), float(y1)) if x1 > x0 and y1 > y0 else None


def _clip_polygon(vertices: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman: the convex polygon cut to ``[0, width] x [0, height]``."""
    points = [tuple(v) for v in vertices.tolist()]
    # Each half-plane as (axis, limit, sign): a point is inside when sign * (p[axis] - limit) >= 0.
    planes = ((0, 0.0, 1.0), (0, float(width), -1.0), (1, 0.0, 1.0), (1, float(height), -1.0))
    for axis, limit, sign in planes:
        out: List[Tuple[float, float]] = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            cur_in, prev_in = sign * (cur[axis] - limit) >= 0, sign * (prev[axis] - limit) >= 0
            if cur_in != prev_in:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        points = out
    return np.array(points, np.float64).reshape(-1, 2)


def make_circle(cx: float, cy: float, size: float) -> Shape:
    """A circle of diameter ``size``."""
    return Shape(CIRCLE, (cx, cy), radius=size / 2.0)


def make_square(cx: float, cy: float, size: float, angle: float) -> Shape:
    """A square rotated by ``angle`` radians whose bounding box is ``size`` wide."""
    c, s = math.cos(angle), math.sin(angle)
    # Sized by its rotated bounding box, so "size" means the same thing for every class.
    half = size / 2.0 / (abs(c) + abs(s))
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64) * half
    rot = np.array([[c, -s], [s, c]])
    return Shape(SQUARE, (cx, cy), vertices=corners @ rot.T + (cx, cy))


def make_triangle(cx: float, cy: float, size: float, angle: float,
                  arcs: Union[Sequence[float], np.ndarray]) -> Shape:
    """A triangle inscribed in a circle; ``arcs`` (three, summing to 2 pi) set its angles.

    Scaled so the longer side of its bounding box is ``size`` and centred on that box.
    """
    turns = angle + np.concatenate([[0.0], np.cumsum(arcs[:2])])
    unit = np.stack([np.cos(turns), np.sin(turns)], axis=1)
    lo, hi = unit.min(axis=0), unit.max(axis=0)
    scale = size / float((hi - lo).max())
    return Shape(TRIANGLE, (cx, cy), vertices=(unit - (lo + hi) / 2.0) * scale + (cx, cy))


def triangle_arcs(rng: np.random.Generator) -> np.ndarray:
    """Random arcs between the three vertices: every interior angle at least 25 degrees."""
    # An interior angle is half the opposite arc, so arcs >= 50 degrees rule out slivers.
    floor = math.radians(50.0)
    return floor + (2.0 * math.pi - 3.0 * floor) * rng.dirichlet((1.5, 1.5, 1.5))


def rasterise(shape: Shape, width: int, height: int) -> Optional[Tuple[Box, np.ndarray]]:
    """The shape's ROI in the image (clipped) and its uint8 coverage there; None when off-image.

    Coverage is exact along each row (the span's overlap with every pixel) and sampled on
    ``_ROWS`` sub-rows per pixel row, so it has no bias in any direction.
    """
    x0, y0, x1, y1 = shape.extent()
    rx0, ry0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    rx1, ry1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    ys = ry0 + (np.arange((ry1 - ry0) * _ROWS, dtype=np.float64) + 0.5) / _ROWS
    left, right = _spans(shape, ys)
    cols = np.arange(rx0, rx1, dtype=np.float64)[None, :]
    # Overlap of [left, right] with each pixel [col, col + 1), one sub-row at a time.
    part = np.minimum(right[:, None], cols + 1.0) - np.maximum(left[:, None], cols)
    part = np.clip(part, 0.0, 1.0).reshape(ry1 - ry0, _ROWS, rx1 - rx0).mean(axis=1)
    return (rx0, ry0, rx1, ry1), np.rint(part * 255.0).astype(np.uint8)


def _spans(shape: Shape, ys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Where each horizontal line ``y`` enters and leaves the shape (left > right: it misses)."""
    if shape.vertices is None:
        cx, cy = shape.center
        sq = shape.radius ** 2 - (ys - cy) ** 2
        half = np.sqrt(np.maximum(sq, 0.0))
        return np.where(sq >= 0, cx - half, np.inf), np.where(sq >= 0, cx + half, -np.inf)
    p = shape.vertices
    q = np.roll(p, -1, axis=0)
    dy = q[:, 1] - p[:, 1]
    flat = dy == 0
    # Horizontal edges add nothing a convex shape's other edges do not already bound.
    t = (ys[None, :] - p[:, 1:2]) / np.where(flat, 1.0, dy)[:, None]
    hit = (t >= 0) & (t <= 1) & ~flat[:, None]
    x = p[:, 0:1] + t * (q[:, 0] - p[:, 0])[:, None]
    return np.where(hit, x, np.inf).min(axis=0), np.where(hit, x, -np.inf).max(axis=0)


@dataclasses.dataclass
class Placed:
    """A drawn object: its shape, colour, ROI, coverage and the pixels still visible in the ROI."""

    shape: Shape
    color: Color
    roi: Box
    coverage: np.ndarray
    visible: np.ndarray

    full: Box  # pixel box of the whole (unoccluded) shape in the image
    exact: Tuple[float, float, float, float]  # exact bounds of the shape's in-image part

    @classmethod
    def create(cls, shape: Shape, width: int, height: int) -> Optional[Placed]:
        """Rasterise ``shape`` into a ``width`` x ``height`` image; None when no pixel of it shows."""
        drawn = rasterise(shape, width, height)
        if drawn is None:
            return None
        roi, cov = drawn
        solid = cov >= SOLID
        full, exact = _pixel_box(solid, roi), shape.clipped_extent(width, height)
        if full is None or exact is None:
            return None
        return cls(shape, (0.0, 0.0, 0.0), roi, cov, solid, full, exact)

    @property
    def class_id(self) -> int:
        return self.shape.class_id

    def under(self, top: Placed) -> np.ndarray:
        """This object's visible pixels once ``top`` is drawn over it (a new array)."""
        ax0, ay0, ax1, ay1 = self.roi
        bx0, by0, bx1, by1 = top.roi
        ix0, iy0, ix1, iy1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
        visible = self.visible.copy()
        if ix1 > ix0 and iy1 > iy0:
            hidden = top.coverage[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0] >= SOLID
            visible[iy0 - ay0:iy1 - ay0, ix0 - ax0:ix1 - ax0] &= ~hidden
        return visible

    def visible_fraction(self, visible: Optional[np.ndarray] = None) -> float:
        """Visible pixels over the full shape's area (border cuts and occlusion both count)."""
        count = int(np.count_nonzero(self.visible if visible is None else visible))
        return count / max(self.shape.area, 1e-9)

    def pixel_box(self, visible: Optional[np.ndarray] = None) -> Optional[Box]:
        """Bounding box ``(x0, y0, x1, y1)`` (ends exclusive) of the visible pixels; None if none."""
        return _pixel_box(self.visible if visible is None else visible, self.roi)

    def box(self, visible: Optional[np.ndarray] = None) -> Optional[Tuple[float, float, float, float]]:
        """The label box in pixels: the visible pixels' box, with every side that is not trimmed
        by an occluder (it lies where the whole shape's does) at the exact geometric extent."""
        pix = self.pixel_box(visible)
        if pix is None:
            return None
        x0, y0, x1, y1 = (e if p == f else float(p) for p, f, e in zip(pix, self.full, self.exact))
        return x0, y0, x1, y1

    def labelled(self, visible: Optional[np.ndarray] = None) -> bool:
        """Whether the object is visible enough to be labelled (see ``MIN_VISIBLE``, ``MIN_BOX_PX``)."""
        box = self.box(visible)
        return (box is not None and box[2] - box[0] >= MIN_BOX_PX and box[3] - box[1] >= MIN_BOX_PX
                and self.visible_fraction(visible) >= MIN_VISIBLE)

    def mask(self, width: int, height: int) -> np.ndarray:
        """The visible pixels as a full-image boolean mask (for checks and debugging)."""
        full = np.zeros((height, width), bool)
        x0, y0, x1, y1 = self.roi
        full[y0:y1, x0:x1] = self.visible
        return full


def _pixel_box(mask: np.ndarray, roi: Box) -> Optional[Box]:
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    x0, y0 = roi[:2]
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def paint(canvas: np.ndarray, obj: Placed) -> None:
    """Blend ``obj`` in its colour into the float32 ``canvas``, weighted by its coverage."""
    x0, y0, x1, y1 = obj.roi
    region = canvas[y0:y1, x0:x1]
    alpha = obj.coverage.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
    region += (np.asarray(obj.color, np.float32) - region) * alpha


def cover(objects: List[Placed], top: Placed) -> None:
    """Record that ``top`` is drawn over every object in ``objects``."""
    for obj in objects:
        obj.visible = obj.under(top)


def contrasting_color(rng: np.random.Generator, canvas: np.ndarray, obj: Placed,
                      sat: Tuple[float, float], val: Tuple[float, float], min_dist: float = 110.0) -> Color:
    """A palette colour far (in BGR) from what lies under ``obj`` now, so the object stands out."""
    x0, y0, x1, y1 = obj.roi
    under = canvas[y0:y1, x0:x1][obj.coverage >= SOLID]
    mean = under.mean(axis=0) if under.size else np.full(3, 127.0)
    best, best_dist = (0.0, 0.0, 0.0), -1.0
    for _ in range(24):
        color = hsv_color(rng, sat, val)
        dist = float(np.linalg.norm(np.asarray(color) - mean))
        if dist >= min_dist:
            return color
        if dist > best_dist:
            best, best_dist = color, dist
    # The palette cannot reach far enough from this background: push the best one to an extreme.
    far = np.where(mean > 127.0, 0.0, 255.0)
    b, g, r = (float(v) for v in (np.asarray(best) + far) / 2.0)
    return b, g, r
