"""The agent's recordings as predictions: JSON lines, one MQTT detections message per line.

``detection-agent record`` saves each message of ``{prefix}/{device}/{camera}/detections``
as it arrived (ARCHITECTURE.md, MQTT contract): ``schema`` "detections/1", ``camera``,
``frame``, ``width``, ``height`` and ``detections``, a list of ``{label, class_id, score,
box: [x1, y1, x2, y2]}`` in source pixels. The image id is the frame index (as in the
ground truth ``make-video`` writes), labels are matched to ground-truth category names.

A recording of several cameras needs ``--camera`` (frame indices would collide); a frame
seen twice, a frame whose size differs from its ground-truth image, or another schema
major version is an error with the line. Blank lines are skipped. Note that an agent
publishes only detections above its ``conf_threshold``, so AP from a recording is that of
the deployed operating point, lower than an evaluation at confidence 0.001.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..errors import DataError
from . import resolve
from .structures import GroundTruth, Predictions, ReadOptions, line_origin, read_bytes

log = logging.getLogger(__name__)

SCHEMA = "detections/1"


def _message(line: str, source: str, n: int) -> Dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{source}:{n}: invalid JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(msg, dict):
        raise DataError(f"{source}:{n}: expected a detections message object")
    schema = msg.get("schema")
    if not isinstance(schema, str) or schema.split(".")[0] != SCHEMA:
        raise DataError(f"{source}:{n}: schema {schema!r} is not {SCHEMA!r}")
    for key in ("frame", "width", "height"):
        value = msg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "frame" else 1):
            raise DataError(
                f"{source}:{n}: {key!r} must be a {'non-negative' if key == 'frame' else 'positive'} "
                f"integer, got {json.dumps(value)}"
            )
    if not isinstance(msg.get("detections"), list):
        raise DataError(f"{source}:{n}: 'detections' must be a list")
    return msg


def recording_predictions(path: Path, gt: GroundTruth, options: ReadOptions) -> Predictions:
    source = str(path)
    text = read_bytes(path).decode("utf-8", errors="replace")
    messages = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            messages.append((n, _message(line, source, n)))
    cameras = sorted({str(m.get("camera", "")) for _, m in messages})
    if options.camera is not None:
        if options.camera not in cameras:
            raise DataError(
                f"{source}: no messages of camera {options.camera!r} (cameras: {', '.join(cameras)})"
            )
        messages = [(n, m) for n, m in messages if str(m.get("camera", "")) == options.camera]
    elif len(cameras) > 1:
        raise DataError(
            f"{source}: messages of {len(cameras)} cameras ({', '.join(cameras)}); frame indices "
            "collide across cameras, so pick one with --camera NAME"
        )
    index = gt.image_index()
    seen: Dict[int, int] = {}
    labels: List[str] = []
    rows: List[List[float]] = []
    lines: List[int] = []
    frames: List[int] = []
    for n, msg in messages:
        frame = msg["frame"]
        if frame in seen:
            raise DataError(f"{source}:{n}: frame {frame} was already recorded at line {seen[frame]}")
        seen[frame] = n
        row = index.get(frame)
        if row is not None and (msg["width"], msg["height"]) != (gt.widths[row], gt.heights[row]):
            raise DataError(
                f"{source}:{n}: frame {frame} is {msg['width']}x{msg['height']}, but ground-truth "
                f"image {frame} is {gt.widths[row]:g}x{gt.heights[row]:g}"
            )
        for det in msg["detections"]:
            box = det.get("box") if isinstance(det, dict) else None
            score = det.get("score") if isinstance(det, dict) else None
            label = det.get("label") if isinstance(det, dict) else None
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(_number(v) for v in box)
                and _number(score)
                and isinstance(label, str)
            ):
                raise DataError(
                    f"{source}:{n}: a detection needs label, score and box [x1, y1, x2, y2], "
                    f"got {json.dumps(det)}"
                )
            rows.append([box[0], box[1], box[2] - box[0], box[3] - box[1], score])
            labels.append(label)
            lines.append(n)
            frames.append(frame)
    values = np.asarray(rows, np.float64).reshape(-1, 5)
    image_ids = np.asarray(frames, np.int64)
    known_image = resolve.known_image_ids(image_ids, gt)
    cats, known_class = resolve.categories_from_labels(labels, gt)
    origin = line_origin([source], np.zeros(len(lines), np.int64), np.asarray(lines, np.int64))
    if not len(values):
        log.warning("%s: holds no detections; every AP will be 0", source)
    return resolve.finish(
        source,
        gt,
        image_ids,
        known_image,
        lambda i: f"frame {frames[i]}",
        cats,
        known_class,
        lambda i: repr(labels[i]),
        values[:, :4],
        values[:, 4],
        origin,
        options,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
