"""``eval --track``: a recording of the agent's tracks scored against MOT ground truth.

The recording is what ``record`` saves (JSON lines, one MQTT payload each): ``detections/1``
messages whose boxes carry ``track_id`` (boxes with ``track_id: null`` belong to no confirmed
track and are not hypotheses), and, when the events topic was recorded too, ``events/1``
``line_cross`` messages. A message delivered twice (QoS 1 after a reconnect: the same
``(camera, run, seq)`` of a topic) is read once; several recordings (recorders sharing a
subscription) are read as one. Other lines (status, stats, counts) are skipped.

The scores are py-motmetrics' (CLEAR MOT and identity metrics), computed from a per-frame
IoU distance (1 - IoU, no match under IoU 0.5), as MOTChallenge does: MOTA, IDF1, ID
switches, precision, recall, MOTP (reported as the mean IoU of matches). Ground-truth boxes
marked ``consider = 0`` (too hidden to annotate) are neither objects nor false positives: a
hypothesis that matches one (IoU >= 0.5, Hungarian) is dropped before scoring, as the
MOTChallenge devkit drops those matching distractors.

Line counts: the recorded ``line_cross`` events per line and direction against the true
crossings (``make-video --lines`` writes them). A recording without events has its
crossings recomputed from the recorded tracks' boxes with the same rule, and says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from agent.datasets.video_truth import TruthBox, crossing_counts, read_lines_truth, read_mot, true_crossings
from agent.errors import DataError
from agent.evaluate.structures import read_bytes
from agent.tracking.lines import CountingLine
from agent.tracking.matching import iou_matrix, match

log = logging.getLogger(__name__)

#: A hypothesis matches a ground-truth box at IoU >= 0.5, MOTChallenge's threshold.
MATCH_IOU = 0.5
_METRICS = ["mota", "idf1", "idp", "idr", "num_switches", "num_objects", "num_predictions", "num_matches",
            "num_false_positives", "num_misses", "precision", "recall", "motp", "num_unique_objects",
            "mostly_tracked", "partially_tracked", "mostly_lost", "num_fragmentations"]
_COUNTS = {"mostly_tracked", "partially_tracked", "mostly_lost"}


@dataclasses.dataclass
class TrackRecording:
    """Per frame, the tracked boxes ``(track_id, [x1, y1, x2, y2], label)``; and line crossings."""

    frames: Dict[int, List[Tuple[int, List[float], str]]]
    crossings: List[Dict[str, Any]]  # line_cross events, deduplicated
    events_seen: int  # events/1 messages in the recording (any type)
    width: int
    height: int


def read_recording(paths: Union[str, Path, Sequence[Union[str, Path]]], camera: Optional[str] = None
                   ) -> TrackRecording:
    """The tracked detections and line crossings of one camera in ``record`` files (several:
    those of recorders sharing a subscription, read as one; a message delivered twice, the
    same ``(run, seq)`` of a topic, is read once)."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    messages: List[Tuple[str, Dict[str, Any]]] = []
    delivered: Set[Tuple[str, str, str, Any]] = set()
    for path in files:
        text = read_bytes(Path(path)).decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{n}: invalid JSON: {getattr(exc, 'msg', exc)}") from None
            schema = str(msg.get("schema", "")).split(".")[0] if isinstance(msg, dict) else ""
            if schema not in ("detections/1", "events/1"):
                continue
            key = (schema, str(msg.get("camera", "")), str(msg.get("run", "")), msg.get("seq", f"{path}:{n}"))
            if key not in delivered:
                delivered.add(key)
                messages.append((f"{path}:{n}", msg))
    source = str(files[0]) if len(files) == 1 else f"{len(files)} recordings"
    cameras = sorted({str(m.get("camera", "")) for _, m in messages})
    if camera is not None:
        if camera not in cameras:
            raise DataError(f"{source}: no messages of camera {camera!r} (cameras: {', '.join(cameras)})")
        cameras = [camera]
    elif len(cameras) > 1:
        raise DataError(f"{source}: messages of {len(cameras)} cameras ({', '.join(cameras)}); "
                        "pick one with --camera NAME")
    frames: Dict[int, List[Tuple[int, List[float], str]]] = {}
    seen_frames: Dict[int, str] = {}
    crossings: List[Dict[str, Any]] = []
    events = 0
    size = (0, 0)
    for where, msg in messages:
        if str(msg.get("camera", "")) not in cameras:
            continue
        if str(msg["schema"]).startswith("events/1"):
            events += 1
            if msg.get("type") == "line_cross":
                crossings.append(msg)
            continue
        frame = msg.get("frame")
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise DataError(f"{where}: 'frame' must be a non-negative integer, got {json.dumps(frame)}")
        if frame in seen_frames:
            raise DataError(f"{where}: frame {frame} was already recorded at {seen_frames[frame]}")
        seen_frames[frame] = where
        size = (int(msg.get("width", 0) or 0), int(msg.get("height", 0) or 0))
        frames[frame] = [_tracked(det, where) for det in _detections(msg, where)
                         if isinstance(det, dict) and det.get("track_id") is not None]
    return TrackRecording(frames, crossings, events, size[0], size[1])


def _detections(msg: Dict[str, Any], where: str) -> List[Any]:
    dets = msg.get("detections")
    if not isinstance(dets, list):
        raise DataError(f"{where}: 'detections' must be a list")
    return dets


def _tracked(det: Dict[str, Any], where: str) -> Tuple[int, List[float], str]:
    box, track_id = det.get("box"), det.get("track_id")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            and isinstance(track_id, int) and not isinstance(track_id, bool)):
        raise DataError(f"{where}: a tracked detection needs box [x1, y1, x2, y2] and an integer "
                        f"track_id, got {json.dumps(det)}")
    return track_id, [float(v) for v in box], str(det.get("label", ""))


def score_tracks(truth: Sequence[TruthBox], recording: TrackRecording) -> Dict[str, Any]:
    """py-motmetrics' scores of the recorded tracks against the ground truth."""
    try:
        import motmetrics as mm
    except ImportError as exc:
        raise DataError("eval --track needs py-motmetrics: pip install motmetrics "
                        "(or the eval extra: pip install 'detection-agent[eval]')") from exc
    by_frame: Dict[int, List[TruthBox]] = {}
    for row in truth:
        by_frame.setdefault(row.frame, []).append(row)
    acc = mm.MOTAccumulator(auto_id=False)
    dropped = 0
    for frame in sorted(set(by_frame) | set(recording.frames)):
        rows = by_frame.get(frame, [])
        hyps = recording.frames.get(frame, [])
        hyp_boxes = np.array([h[1] for h in hyps], np.float64).reshape(-1, 4)
        keep = _not_distractors(rows, hyp_boxes)
        dropped += len(hyps) - int(keep.sum())
        hyps = [h for h, k in zip(hyps, keep) if k]
        objects = [r for r in rows if r.considered]
        iou = iou_matrix(np.array([r.box for r in objects], np.float64).reshape(-1, 4), hyp_boxes[keep])
        dist = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        acc.update([r.identity for r in objects], [h[0] for h in hyps], dist, frameid=frame)
    summary = mm.metrics.create().compute(acc, metrics=_METRICS, name="tracks")
    row = summary.loc["tracks"]
    out: Dict[str, Any] = {k: _plain(k, row[k]) for k in _METRICS}
    out["mean_iou"] = None if out["motp"] is None else round(1.0 - out["motp"], 4)
    out["id_switches_per_1000"] = (round(1000.0 * out["num_switches"] / out["num_objects"], 3)
                                   if out["num_objects"] else None)
    out["frames"] = len(set(by_frame) | set(recording.frames))
    out["ignored_hypotheses"] = dropped
    return out


def _not_distractors(rows: Sequence[TruthBox], hyp_boxes: np.ndarray) -> np.ndarray:
    """Which hypotheses to keep: not those matched to an ignored box when matched against all."""
    keep = np.ones(len(hyp_boxes), bool)
    if not any(not r.considered for r in rows) or not len(hyp_boxes):
        return keep
    iou = iou_matrix(np.array([r.box for r in rows], np.float64), hyp_boxes)
    pairs, _, _ = match(iou, MATCH_IOU)
    for r, c in pairs:
        if not rows[r].considered:
            keep[c] = False
    return keep


def _plain(key: str, value: Any) -> Any:
    """A metric as JSON: counts as integers, rates rounded, undefined ones (no objects) None."""
    number = float(value)
    if not np.isfinite(number):
        return None
    if key.startswith("num_") or key in _COUNTS:
        return round(number)
    return round(number, 4)


def line_counts(recording: TrackRecording, lines_truth: Dict[str, Any]) -> Dict[str, Any]:
    """Recorded crossings per line and direction against the truth, with each line's verdict."""
    names = [str(line["name"]) for line in lines_truth["lines"]]
    if recording.events_seen:
        source = "events"
        got = crossing_counts([{"line": e.get("line"), "direction": e.get("direction")}
                               for e in recording.crossings if e.get("direction") in ("in", "out")], names)
    else:
        source = "recomputed from the recorded tracks (the recording holds no events)"
        labels = _labels(lines_truth)
        lines = [CountingLine.from_mapping(entry, labels, f"lines.{i}")
                 for i, entry in enumerate(lines_truth["lines"])]
        rows = [TruthBox(frame, tid, labels.index(label) if label in labels else -1,
                         (box[0], box[1], box[2], box[3]), True, 1.0)
                for frame, hyps in recording.frames.items() for tid, box, label in hyps]
        got = crossing_counts(true_crossings(rows, lines, recording.width or int(lines_truth["width"]),
                                             recording.height or int(lines_truth["height"])), names)
    truth = lines_truth["counts"]
    per_line = {name: {"in": got.get(name, {}).get("in", 0), "out": got.get(name, {}).get("out", 0),
                       "true_in": truth.get(name, {}).get("in", 0),
                       "true_out": truth.get(name, {}).get("out", 0)}
                for name in names}
    for entry in per_line.values():
        entry["exact"] = entry["in"] == entry["true_in"] and entry["out"] == entry["true_out"]
    return {"source": source, "lines": per_line, "all_exact": all(e["exact"] for e in per_line.values())}


def _labels(lines_truth: Dict[str, Any]) -> List[str]:
    from agent.datasets.shapes_draw import CLASS_NAMES

    return list(lines_truth.get("class_names") or CLASS_NAMES)


def truth_paths(gt: Union[str, Path], lines: Optional[Union[str, Path]]) -> Tuple[Path, Optional[Path]]:
    """The MOT file for ``--gt`` (the file itself, or ``clip.mot.txt`` beside ``clip.json``)
    and the line-crossing truth (``--lines``, or ``clip.lines.json`` beside it when present)."""
    gt_path = Path(gt)
    if gt_path.suffix == ".json":
        gt_path = gt_path.with_suffix(".mot.txt")
    if not gt_path.is_file():
        raise DataError(f"{gt_path}: no MOT ground truth there "
                        "(make-video writes CLIP.mot.txt beside the clip)")
    if lines is not None:
        return gt_path, Path(lines)
    base = gt_path.name[:-len(".mot.txt")] if gt_path.name.endswith(".mot.txt") else gt_path.stem
    beside = gt_path.with_name(base + ".lines.json")
    return gt_path, beside if beside.is_file() else None


def evaluate_tracks(gt: Union[str, Path], pred: Union[str, Path, Sequence[Union[str, Path]]],
                    lines: Optional[Union[str, Path]] = None, camera: Optional[str] = None) -> Dict[str, Any]:
    """The whole ``eval --track``: scores, and line counts when there is line truth."""
    gt_path, lines_path = truth_paths(gt, lines)
    recording = read_recording(pred, camera)
    preds = [str(pred)] if isinstance(pred, (str, Path)) else [str(p) for p in pred]
    result: Dict[str, Any] = {"metric": "mot", "gt": str(gt_path), "pred": preds,
                              "scores": score_tracks(read_mot(gt_path), recording)}
    if lines_path is not None:
        result["line_counts"] = line_counts(recording, read_lines_truth(lines_path))
    return result


def summary_text(result: Dict[str, Any]) -> str:
    s = result["scores"]

    def f(key: str) -> str:
        return "-" if s[key] is None else f"{s[key]:.3f}"

    lines = [f"tracks: {s['frames']} frames, {s['num_objects']} ground-truth boxes of "
             f"{s['num_unique_objects']} objects, {s['num_predictions']} tracked boxes",
             f"MOTA {f('mota')}  IDF1 {f('idf1')}  ID switches {s['num_switches']} "
             f"({s['id_switches_per_1000']} per 1000 boxes)  precision {f('precision')}  "
             f"recall {f('recall')}  mean IoU {f('mean_iou')}",
             f"false positives {s['num_false_positives']}  misses {s['num_misses']}  fragmentations "
             f"{s['num_fragmentations']}  mostly tracked {s['mostly_tracked']}/{s['num_unique_objects']}"]
    counts = result.get("line_counts")
    if counts:
        for name, c in counts["lines"].items():
            verdict = "exact" if c["exact"] else "DIFFERS"
            lines.append(f"line {name}: in {c['in']} / true {c['true_in']}, out {c['out']} / true "
                         f"{c['true_out']} ({verdict}; {counts['source']})")
    return "\n".join(lines)
