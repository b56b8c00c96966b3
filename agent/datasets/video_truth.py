"""Tracking ground truth of a generated clip: who is where in every frame, and who crossed
which counting line.

MOT file (``clip.mot.txt``, MOTChallenge ``gt.txt`` layout), one line per object per frame::

    frame,id,x,y,w,h,consider,class,visibility

``frame`` counts from 1 (the clip's frame index + 1) and ``id`` from 1 (the mover's index + 1),
as MOTChallenge does; the box is in pixels (top-left, width, height). ``consider`` is 1 for
an annotated object and 0 for one drawn but too hidden to annotate (under 40% visible, or a
box under 4 px): an evaluator must neither reward nor punish a tracker for those. ``class``
is the class id as in the COCO file (0 circle, 1 square, 2 triangle); ``visibility`` is the
visible fraction of the shape.

Line crossings (``clip.lines.json``): for each identity, the anchor points of its annotated
boxes in frame order, gaps bridged (the path a perfect detector and tracker would see), run
through the same crossing rule as the agent (agent/tracking/lines.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from agent.datasets.shapes_draw import CLASS_NAMES, Placed
from agent.errors import ConfigError, DataError
from agent.tracking.lines import CountingLine, Point, advance
from agent.tracking.zones import anchor_points

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TruthBox:
    frame: int  # 0-based, as the agent numbers frames
    identity: int  # 1-based
    class_id: int
    box: Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    considered: bool
    visibility: float


def truth_boxes(frame: int, objects: Sequence[Placed], ids: Sequence[int]) -> List[TruthBox]:
    """The frame's drawn objects (``ids``: each one's mover index) as ground-truth rows."""
    rows = []
    for obj, index in zip(objects, ids):
        box = obj.box()
        if box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        rows.append(TruthBox(frame, index + 1, obj.class_id, (x0, y0, x1, y1),
                             obj.labelled(), round(min(1.0, obj.visible_fraction()), 3)))
    return rows


def mot_text(rows: Sequence[TruthBox]) -> str:
    lines = []
    for r in rows:
        x0, y0, x1, y1 = r.box
        lines.append(f"{r.frame + 1},{r.identity},{x0:.3f},{y0:.3f},{x1 - x0:.3f},{y1 - y0:.3f},"
                     f"{int(r.considered)},{r.class_id},{r.visibility:.3f}\n")
    return "".join(lines)


def read_mot(path: Union[str, Path]) -> List[TruthBox]:
    """A MOT ground-truth file (the layout above; 6 to 10 columns, as MOTChallenge writes them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the MOT ground truth: {exc.strerror or exc}") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            v = [float(x) for x in line.split(",")]
        except ValueError:
            raise DataError(f"{path}:{n}: expected comma-separated numbers frame,id,x,y,w,h,..., "
                            f"got {line.strip()[:60]!r}") from None
        if len(v) < 6 or v[0] < 1 or v[0] != int(v[0]) or v[1] != int(v[1]) or v[4] < 0 or v[5] < 0:
            raise DataError(f"{path}:{n}: expected frame (>= 1), id, x, y, w (>= 0), h (>= 0), "
                            f"got {line.strip()[:60]!r}")
        considered = len(v) < 7 or v[6] != 0
        rows.append(TruthBox(int(v[0]) - 1, int(v[1]), int(v[7]) if len(v) > 7 else -1,
                             (v[2], v[3], v[2] + v[4], v[3] + v[5]), considered, v[8] if len(v) > 8 else 1.0))
    return rows


def load_lines(path: Union[str, Path], class_names: Sequence[str] = CLASS_NAMES) -> List[CountingLine]:
    """Counting lines from a YAML or JSON file: a list of ``{name, points, units, anchor,
    classes}`` (the entries of a camera's ``lines:`` in the agent's config), or a mapping
    with that list under ``lines``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the lines file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML or JSON: {exc}") from exc
    if isinstance(data, dict) and "lines" in data:
        data = data["lines"]
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a list of lines ({{name, points: [[x1, y1], [x2, y2]], ...}})")
    lines = [CountingLine.from_mapping(entry, class_names, f"{path}: lines.{i}")
             for i, entry in enumerate(data)]
    names = [line.name for line in lines]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError([f"{path}: lines: line names must be unique; repeated: {', '.join(repeated)}"])
    return lines


def true_crossings(rows: Sequence[TruthBox], lines: Sequence[CountingLine], width: int, height: int,
                   class_names: Sequence[str] = CLASS_NAMES) -> List[Dict[str, Any]]:
    """Every crossing of every line by the annotated boxes, in frame order."""
    tracks: Dict[int, List[TruthBox]] = {}
    for r in rows:
        if r.considered:
            tracks.setdefault(r.identity, []).append(r)
    found = []
    for identity, path in sorted(tracks.items()):
        path.sort(key=lambda r: r.frame)
        boxes = np.array([r.box for r in path], np.float64)
        for line in lines:
            if not line.counts_class(path[0].class_id):
                continue
            a, b = line.endpoints(width, height)
            ref: Optional[Point] = None
            for r, (x, y) in zip(path, anchor_points(boxes, line.anchor).tolist()):
                ref, direction = advance(ref, (x, y), a, b)
                if direction is not None:
                    label = class_names[r.class_id] if 0 <= r.class_id < len(class_names) else str(r.class_id)
                    found.append({"line": line.name, "direction": direction, "identity": identity,
                                  "label": label, "frame": r.frame})
    found.sort(key=lambda c: (c["frame"], c["identity"], c["line"]))
    return found


def crossing_counts(crossings: Sequence[Dict[str, Any]], line_names: Sequence[str]
                    ) -> Dict[str, Dict[str, int]]:
    counts = {name: {"in": 0, "out": 0} for name in line_names}
    for c in crossings:
        counts.setdefault(c["line"], {"in": 0, "out": 0})[c["direction"]] += 1
    return counts


def lines_truth(rows: Sequence[TruthBox], lines: Sequence[CountingLine], width: int, height: int,
                video: str) -> Dict[str, Any]:
    """The ``clip.lines.json`` document: the lines (as config entries), crossings and totals."""
    crossings = true_crossings(rows, lines, width, height)
    return {"video": video, "width": width, "height": height,
            "lines": [line.to_dict(CLASS_NAMES) for line in lines],
            "crossings": crossings,
            "counts": crossing_counts(crossings, [line.name for line in lines])}


def read_lines_truth(path: Union[str, Path]) -> Dict[str, Any]:
    """A ``clip.lines.json`` file, checked enough to compare counts against it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the line-crossing truth: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise DataError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("counts"), dict) or not isinstance(
            data.get("lines"), list):
        raise DataError(f"{path}: expected the lines, crossings and counts that make-video --lines writes")
    return data
