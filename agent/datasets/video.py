"""Videos of moving shapes with exact ground truth: boxes (COCO), identities (MOT) and line crossings.

A static background (same kinds as the data set's "default" style) with fresh noise each
frame, and 2-6 shapes moving at constant velocity that bounce off the edges (a closed form,
so any frame can be rebuilt alone); squares and triangles spin slowly. Motion cannot be
rejected, so the occlusion rule is applied to labels: a frame's object under 40% visible
(or with a box under 4 px) is drawn but not annotated. COCO category ids equal the class
ids (0, 1, 2), so detections map to them without a table; image ids are frame indices.

Beside ``clip.mp4``, ``make_video`` writes ``clip.json`` (COCO boxes), ``clip.mot.txt``
(every shape's identity in every frame, MOTChallenge layout) and, given counting lines,
``clip.lines.json`` (the true crossings): see agent/datasets/video_truth.py.
Same seed, same arguments: identical frames and byte-identical ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from agent.datasets.canvas import background, to_uint8
from agent.datasets.shapes_draw import (
    CIRCLE,
    CLASS_NAMES,
    SQUARE,
    Placed,
    Shape,
    contrasting_color,
    cover,
    make_circle,
    make_square,
    make_triangle,
    paint,
    triangle_arcs,
)
from agent.datasets.synthetic import _PALETTES, MIN_SIDE, _check_int
from agent.datasets.video_truth import TruthBox, lines_truth, mot_text, truth_boxes
from agent.errors import DataError
from agent.fileio import atomic_write_text
from agent.tracking.lines import CountingLine

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Mover:
    """A video object: where it is at any frame follows from these numbers alone."""

    class_id: int
    size: float
    start: Tuple[float, float]
    velocity: Tuple[float, float]  # px per frame
    angle: float
    spin: float  # radians per frame
    arcs: Tuple[float, float, float]
    color: Tuple[float, float, float]

    def shape_at(self, frame: int, width: int, height: int) -> Shape:
        # Bounce the centre between limits that let up to a quarter of the size leave the image.
        margin = 0.25 * self.size
        cx = _bounce(self.start[0] + self.velocity[0] * frame, margin, width - margin)
        cy = _bounce(self.start[1] + self.velocity[1] * frame, margin, height - margin)
        angle = self.angle + self.spin * frame
        if self.class_id == CIRCLE:
            return make_circle(cx, cy, self.size)
        if self.class_id == SQUARE:
            return make_square(cx, cy, self.size, angle)
        return make_triangle(cx, cy, self.size, angle, self.arcs)


def _bounce(p: float, lo: float, hi: float) -> float:
    """``p`` reflected into ``[lo, hi]``: constant-velocity motion with elastic bounces."""
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2.0
    q = (p - lo) % (2.0 * span)
    return lo + (q if q <= span else 2.0 * span - q)


class VideoScene:
    """A clip's static background and movers; ``render(k)`` draws frame ``k`` on its own."""

    def __init__(self, seed: int, width: int, height: int, fps: float) -> None:
        self.seed, self.width, self.height = seed, width, height
        rng = np.random.default_rng([seed, 1000])
        kinds, bg_hsv, obj_hsv = _PALETTES["default"]
        kind = str(kinds[int(rng.integers(0, len(kinds)))])
        self.background = background(rng, kind, width, height, *bg_hsv)
        self.noise = float(rng.uniform(2.0, 6.0))
        scale = max(width, height) / 640.0
        lo = max(8.0, 16.0 * scale)
        hi = max(lo, min(200.0 * scale, 0.45 * min(width, height)))
        self.movers: List[Mover] = []
        for _ in range(int(rng.integers(2, 7))):
            size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            speed, heading = rng.uniform(15.0, 90.0) * scale / fps, rng.uniform(0, 2 * math.pi)
            class_id = int(rng.integers(0, len(CLASS_NAMES)))
            spin = 0.0 if class_id == CIRCLE else math.radians(rng.uniform(10.0, 45.0)) / fps
            mover = Mover(class_id, size, (rng.uniform(0, width), rng.uniform(0, height)),
                          (speed * math.cos(heading), speed * math.sin(heading)), rng.uniform(0, 2 * math.pi),
                          spin * (1.0 if rng.random() < 0.5 else -1.0), tuple(triangle_arcs(rng)), (0, 0, 0))
            first = Placed.create(mover.shape_at(0, width, height), width, height)
            # Contrast against the clip's background where it starts, the best a moving object allows.
            color = (contrasting_color(rng, self.background, first, *obj_hsv) if first
                     else (255.0, 255.0, 255.0))
            self.movers.append(dataclasses.replace(mover, color=color))

    def render(self, frame: int) -> Tuple[np.ndarray, List[Placed], List[int]]:
        """Frame ``frame`` (uint8 BGR), every object drawn on it in drawing order, and each
        object's identity (its mover's index: the same object in every frame)."""
        canvas = self.background.copy()
        objects: List[Placed] = []
        ids: List[int] = []
        for index, mover in enumerate(self.movers):
            obj = Placed.create(mover.shape_at(frame, self.width, self.height), self.width, self.height)
            if obj is None:
                continue
            obj.color = mover.color
            cover(objects, obj)
            paint(canvas, obj)
            objects.append(obj)
            ids.append(index)
        rng = np.random.default_rng([self.seed, 1001, frame])
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(self.noise)
        return to_uint8(canvas), objects, ids


def coco_annotations(objects: List[Placed], frame: int, first_id: int) -> List[Dict[str, Any]]:
    """COCO annotations of a frame's labelled objects (ids from ``first_id``; bbox in pixels)."""
    anns: List[Dict[str, Any]] = []
    for obj in objects:
        box = obj.box()
        if box is None or not obj.labelled():
            continue
        x0, y0, x1, y1 = box
        anns.append({"id": first_id + len(anns), "image_id": frame, "category_id": obj.class_id,
                     "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                     "area": int(np.count_nonzero(obj.visible)),
                     "iscrowd": 0})
    return anns


_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


def make_video(out_path: Union[str, Path], frames: int, fps: float = 15, seed: int = 0, width: int = 640,
               height: int = 480, lines: Sequence[CountingLine] = ()) -> Path:
    """Write a clip of moving shapes (.mp4 or .avi) and its ground truth; returns the COCO JSON path.

    Beside the clip: ``clip.json`` (COCO; ``area`` is the visible pixel count), ``clip.mot.txt``
    (identities) and, with ``lines``, ``clip.lines.json`` (true crossings). The clip is written
    under a temporary name and renamed when complete; the truth files after it.
    """
    out = Path(out_path).expanduser().resolve()
    if out.suffix.lower() not in _FOURCC:
        raise DataError(f"{out}: video must end in {' or '.join(_FOURCC)}")
    _check_int("frames", frames, 1)
    _check_int("seed", seed, 0)
    w, h = _check_int("width", width, MIN_SIDE), _check_int("height", height, MIN_SIDE)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise DataError(f"fps must be a number in (0, 1000], got {fps!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out.parent}: cannot create the folder: {exc.strerror or exc}") from exc
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    fourcc = _FOURCC[out.suffix.lower()]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise DataError(f"{out}: OpenCV cannot open a {fourcc} video writer there")
    scene = VideoScene(seed, w, h, float(fps))
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    truth: List[TruthBox] = []
    try:
        for k in range(frames):
            image, objects, ids = scene.render(k)
            writer.write(image)
            images.append({"id": k, "file_name": f"{out.name}#{k}", "width": w, "height": h})
            annotations += coco_annotations(objects, k, len(annotations) + 1)
            truth += truth_boxes(k, objects, ids)
        writer.release()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    gt = {
        "info": {"description": "synthetic shapes video", "seed": seed, "fps": fps, "frames": frames,
                 "video": out.name},
        "images": images,
        "annotations": annotations,
        # Category ids are the class ids (0-based), unlike COCO's 1-based ids.
        "categories": [{"id": i, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASS_NAMES)],
    }
    json_path = out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(gt, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".mot.txt"), mot_text(truth))
    if lines:
        crossings = lines_truth(truth, lines, w, h, out.name)
        atomic_write_text(out.with_suffix(".lines.json"), json.dumps(crossings, indent=1) + "\n")
    log.info("wrote %d frames to %s and ground truth to %s", frames, out, json_path)
    return json_path
