"""Boxes, labels and zones drawn onto a copy of a frame, for snapshots, videos and ``detect --save``."""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from agent.types import Detections


def class_colour(class_id: int) -> Tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


ZONE_COLOUR = (255, 255, 0)  # BGR cyan: distinct from the class colours' full-saturation hues


def draw_detections(image: np.ndarray, detections: Detections, names: Sequence[str] = (),
                    zones: Sequence[Tuple[str, np.ndarray]] = ()) -> np.ndarray:
    """A copy of ``image`` with each zone outline (name, polygon in pixels), then each box,
    its label and score."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for name, polygon in zones:
        points = np.round(np.asarray(polygon)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], True, ZONE_COLOUR, thickness)
        x, y = points[:, 0].min(axis=0)
        cv2.putText(canvas, name, (int(x) + 3, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ZONE_COLOUR, 1,
                    cv2.LINE_AA)
    for box, score, cid in zip(detections.xyxy, detections.scores, detections.class_ids):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = class_colour(int(cid))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{names[cid] if 0 <= cid < len(names) else cid} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - baseline - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 2), colour, -1)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
