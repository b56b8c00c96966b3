"""The agent's recordings as predictions: JSON lines, one MQTT detections message per line.

``detection-agent record`` saves each message of ``{prefix}/{device}/{camera}/detections``
as it arrived (ARCHITECTURE.md, MQTT contract): ``schema`` "detections/1", ``camera``,
``frame``, ``width``, ``height`` and ``detections``, a list of ``{label, class_id, score,
box: [x1, y1, x2, y2]}`` in source pixels. The image id is the frame index (as in the
ground truth ``make-video`` writes), labels are matched to ground-truth category names.

Several recordings read as one (``eval --pred a.jsonl b.jsonl``): what recorders of one
shared subscription (``record --share``) saved between them. A message whose ``(device,
camera, run, seq)`` was already read with the same content is a QoS 1 redelivery: it is
skipped and counted, in one file or across files. The same ``seq`` with other content, or
one frame in two different messages (a second run over the same video), is an error.

A recording of several cameras needs ``--camera`` (frame indices would collide); a frame
whose size differs from its ground-truth image, or another schema major version is an
error with the line. Blank lines are skipped. Note that an agent
publishes only detections above its ``conf_threshold``, so AP from a recording is that of
the deployed operating point, lower than an evaluation at confidence 0.001.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
from typing_extensions import TypeGuard

from agent.errors import DataError
from agent.evaluate import resolve
from agent.evaluate.structures import GroundTruth, Predictions, ReadOptions, line_origin, read_bytes

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


def _read(paths: Sequence[Path]) -> List[Tuple[int, int, Dict[str, Any]]]:
    """(file index, line, message) of every message, QoS 1 redeliveries left out."""
    messages = []
    first: Dict[Tuple[str, str, str, int], Tuple[int, int, Dict[str, Any]]] = {}
    redelivered = 0
    for f, path in enumerate(paths):
        source = str(path)
        text = read_bytes(path).decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            msg = _message(line, source, n)
            seq = msg.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                key = (str(msg.get("device", "")), str(msg.get("camera", "")), str(msg.get("run", "")), seq)
                seen = first.get(key)
                if seen is not None:
                    if seen[2] != msg:
                        raise DataError(
                            f"{source}:{n}: seq {seq} of {key[0]}/{key[1]} run {key[2]} differs from the "
                            f"message with that seq at {paths[seen[0]]}:{seen[1]}"
                        )
                    redelivered += 1
                    continue
                first[key] = (f, n, msg)
            messages.append((f, n, msg))
    if redelivered:
        log.warning(
            "%s: %d message(s) received twice (QoS 1 redelivery) read once",
            ", ".join(map(str, paths)),
            redelivered,
        )
    return messages


def recording_predictions(
    path: Union[Path, Sequence[Path]], gt: GroundTruth, options: ReadOptions
) -> Predictions:
    """Predictions from one recording, or from several read as one (``path`` a sequence)."""
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    files = [str(p) for p in paths]
    source = " + ".join(files)
    tagged = _read(paths)
    cameras = sorted({str(m.get("camera", "")) for _, _, m in tagged})
    if options.camera is not None:
        if options.camera not in cameras:
            raise DataError(
                f"{source}: no messages of camera {options.camera!r} (cameras: {', '.join(cameras)})"
            )
        tagged = [(f, n, m) for f, n, m in tagged if str(m.get("camera", "")) == options.camera]
    elif len(cameras) > 1:
        raise DataError(
            f"{source}: messages of {len(cameras)} cameras ({', '.join(cameras)}); frame indices "
            "collide across cameras, so pick one with --camera NAME"
        )
    index = gt.image_index()
    seen: Dict[int, Tuple[int, int]] = {}
    labels: List[str] = []
    rows: List[List[float]] = []
    lines: List[int] = []
    frames: List[int] = []
    file_index: List[int] = []
    for f, n, msg in tagged:
        frame = msg["frame"]
        where = files[f]
        if frame in seen:
            was = seen[frame]
            at = f"line {was[1]}" if was[0] == f else f"{files[was[0]]}:{was[1]}"
            raise DataError(f"{where}:{n}: frame {frame} was already recorded at {at}")
        seen[frame] = (f, n)
        row = index.get(frame)
        if row is not None and (msg["width"], msg["height"]) != (gt.widths[row], gt.heights[row]):
            raise DataError(
                f"{where}:{n}: frame {frame} is {msg['width']}x{msg['height']}, but ground-truth "
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
                    f"{where}:{n}: a detection needs label, score and box [x1, y1, x2, y2], "
                    f"got {json.dumps(det)}"
                )
            rows.append([box[0], box[1], box[2] - box[0], box[3] - box[1], score])
            labels.append(label)
            lines.append(n)
            file_index.append(f)
            frames.append(frame)
    values = np.asarray(rows, np.float64).reshape(-1, 5)
    image_ids = np.asarray(frames, np.int64)
    known_image = resolve.known_image_ids(image_ids, gt)
    cats, known_class = resolve.categories_from_labels(labels, gt)
    origin = line_origin(files, np.asarray(file_index, np.int64), np.asarray(lines, np.int64))
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


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
