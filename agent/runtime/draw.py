"""Boxes, labels, zones, track ids, trails and counting lines drawn onto a copy of a frame,
for snapshots, videos, the preview and ``detect --save``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.runtime.results import FrameResult
from agent.types import Detections


def class_colour(class_id: int) -> Tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


ZONE_COLOUR = (255, 255, 0)  # BGR cyan: distinct from the class colours' full-saturation hues
LINE_COLOUR = (0, 0, 255)  # BGR red: counting lines


def draw_detections(image: np.ndarray, detections: Detections, names: Sequence[str] = (),
                    zones: Sequence[Tuple[str, np.ndarray]] = (),
                    track_ids: Optional[Sequence[Optional[int]]] = None,
                    trails: Optional[Mapping[int, Sequence[Tuple[float, float]]]] = None,
                    lines: Sequence[Tuple[str, Tuple[float, float], Tuple[float, float]]] = (),
                    counts: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """A copy of ``image`` with each zone outline (name, polygon in pixels), each counting line
    (name, A, B in pixels) with its in/out totals from ``counts``, each track's trail, then
    each box, its label, score and (``track_ids``) ``#id``."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    totals: Dict[str, Any] = dict((counts or {}).get("lines", {}))
    for name, a, b in lines:
        pa, pb = (round(a[0]), round(a[1])), (round(b[0]), round(b[1]))
        cv2.line(canvas, pa, pb, LINE_COLOUR, thickness + 1)
        cv2.circle(canvas, pa, thickness + 2, LINE_COLOUR, -1)  # A: "in" is to the right walking A->B
        line_totals = totals.get(name)
        text = f"{name} in {line_totals['in']} out {line_totals['out']}" if line_totals else name
        cv2.putText(canvas, text, (min(pa[0], pb[0]) + 3, max(min(pa[1], pb[1]) - 6, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, LINE_COLOUR, 1, cv2.LINE_AA)
    for tid, trail in (trails or {}).items():
        if len(trail) > 1:
            path: List[List[int]] = [[round(x), round(y)] for x, y in trail]
            cv2.polylines(canvas, [np.asarray(path, np.int32).reshape(-1, 1, 2)], False,
                          class_colour(tid + 7), thickness)
    for name, polygon in zones:
        points = np.round(np.asarray(polygon)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], True, ZONE_COLOUR, thickness)
        x, y = points[:, 0].min(axis=0)
        cv2.putText(canvas, name, (int(x) + 3, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ZONE_COLOUR, 1,
                    cv2.LINE_AA)
    for index, (box, score, cid) in enumerate(zip(detections.xyxy, detections.scores, detections.class_ids)):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = class_colour(int(cid))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{names[cid] if 0 <= cid < len(names) else cid} {score:.2f}"
        track_id = track_ids[index] if track_ids is not None else None
        if track_id is not None:
            label = f"#{track_id} {label}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - baseline - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 2), colour, -1)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas


def draw_result(result: FrameResult, names: Sequence[str],
                zones: Optional[Sequence[Tuple[str, np.ndarray]]] = None) -> np.ndarray:
    """``draw_detections`` for one pipeline result: its zones (unless ``zones`` is given), its
    camera's counting lines with their counts, track ids and trails."""
    frame, camera = result.frame, result.camera
    if zones is None:
        zones = camera.zones.outlines(frame.width, frame.height) if camera and camera.zones else ()
    lines = [(line.name, *line.endpoints(frame.width, frame.height))
             for line in (camera.lines if camera else ())]
    return draw_detections(frame.image, result.detections, names, zones, result.track_ids, result.trails,
                           lines, result.counts)


def snapshot_jpeg(image: Any, detections: Detections, names: Sequence[str], quality: int = 80) -> bytes:
    """A JPEG of ``image`` (HxWx3 BGR) with the boxes drawn, for ``{camera}/snapshot``."""
    ok, encoded = cv2.imencode(".jpg", draw_detections(image, detections, names),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cannot encode the snapshot as JPEG")
    return encoded.tobytes()
