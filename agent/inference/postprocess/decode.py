"""Turn raw network outputs into candidate boxes, whatever YOLO layout the model has.

Layouts (``ModelInfo.output_format``; detected from the output shapes when not given):

- ``anchor_free``: ultralytics YOLOv3u/v5u/v8 export, one ``[B, 4+nc, N]`` tensor of
  cx, cy, w, h and per-class scores, no objectness.
- ``objectness``: darknet / YOLOv5 style ``[B, N, 5+nc]`` (or one such tensor per head) of
  cx, cy, w, h, objectness and class probabilities; score = objectness x class.
- ``yolo_heads``: raw YOLOv3 heads ``[B, na*(5+nc), H, W]``, one per stride, still in logits;
  decoded here with the model's anchors (and darknet's ``scale_x_y``).
- ``efficient_nms``: TensorRT's EfficientNMS plugin outputs ``num_dets [B,1]``,
  ``boxes [B,K,4]``, ``scores [B,K]``, ``classes [B,K]``: already suppressed.

All boxes come out as x1, y1, x2, y2 in network-input pixels. The confidence threshold is
applied before any per-box work, because on a CPU most of the time of a naive decoder goes
into boxes that are then thrown away (10,647 candidates for YOLOv3 at 416, a few survive).

Candidates with a NaN or infinite coordinate or score are dropped here and counted
(``decode_counted``): an FP16 engine that overflows in one frame must cost that frame's
broken boxes, not the run. Outputs that cannot hold a box at all (fewer than 5 channels,
no candidates) are a ``ModelError``: the model is wrong, not one frame.
"""

from __future__ import annotations

import logging
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from agent.errors import ModelError
from agent.types import OUTPUT_FORMATS, ModelInfo

log = logging.getLogger(__name__)


class Candidates(NamedTuple):
    """Boxes of one image before NMS, in network-input pixels."""

    xyxy: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32


def detect_format(outputs: Sequence[np.ndarray], num_classes: int = 0) -> str:
    """Guess the layout from output shapes; ``num_classes`` (0 = unknown) resolves ambiguity."""
    shapes = [tuple(o.shape) for o in outputs]
    ndims = sorted(len(s) for s in shapes)
    if len(outputs) == 4 and ndims == [2, 2, 2, 3]:
        return "efficient_nms"
    if all(len(s) == 4 for s in shapes):
        return "yolo_heads"
    if all(len(s) == 3 for s in shapes):
        if len(outputs) > 1:
            return "objectness"  # one decoded tensor per head
        _, rows, cols = shapes[0]
        if num_classes:
            if cols == num_classes + 5:
                return "objectness"
            if rows == num_classes + 4:
                return "anchor_free"
        # Channels are far fewer than candidates: the short axis holds the channels.
        return "anchor_free" if rows < cols else "objectness"
    raise ModelError(f"cannot tell the YOLO output layout from output shapes {shapes}; "
                     f"set model.output_format to one of {', '.join(OUTPUT_FORMATS)}")


def resolve_format(outputs: Sequence[np.ndarray], info: ModelInfo, override: Optional[str] = None) -> str:
    """The layout to decode with: the explicit override, the model's metadata, or a guess."""
    return override or info.output_format or detect_format(outputs, info.num_classes)


def decode(outputs: Sequence[np.ndarray], info: ModelInfo, conf_threshold: float,
           output_format: Optional[str] = None, multi_label: bool = False) -> List[Candidates]:
    """Candidates per batch image scoring above ``conf_threshold`` (strictly), all finite."""
    return decode_counted(outputs, info, conf_threshold, output_format, multi_label)[0]


def decode_counted(outputs: Sequence[np.ndarray], info: ModelInfo, conf_threshold: float,
                   output_format: Optional[str] = None, multi_label: bool = False
                   ) -> Tuple[List[Candidates], int]:
    """Like ``decode``, and how many candidates were dropped for non-finite values."""
    fmt = resolve_format(outputs, info, output_format)
    if fmt == "anchor_free":
        (pred,) = _expect(outputs, 1, 3, fmt)
        _check_rows(pred, channels=pred.shape[1], candidates=pred.shape[2], fmt=fmt, minimum=5)
        batch = [_decode_anchor_free(p, conf_threshold, multi_label) for p in pred]
    elif fmt == "objectness":
        for out in outputs:
            (one,) = _expect([out], 1, 3, fmt)
            _check_rows(one, channels=one.shape[2], candidates=1, fmt=fmt, minimum=6)
        pred = np.concatenate(outputs, axis=1)
        _check_rows(pred, channels=pred.shape[2], candidates=pred.shape[1], fmt=fmt, minimum=6)
        batch = [_decode_objectness(p, conf_threshold, multi_label) for p in pred]
    elif fmt == "yolo_heads":
        batch = _decode_heads(outputs, info, conf_threshold, multi_label)
    elif fmt == "efficient_nms":
        batch = _decode_efficient_nms(outputs, conf_threshold)
    else:
        raise ModelError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    finite = [finite_only(c) for c in batch]
    return [c for c, _ in finite], sum(n for _, n in finite)


def finite_only(cand: Candidates) -> Tuple[Candidates, int]:
    """``cand`` without boxes that have a NaN or infinite coordinate or score; how many went."""
    ok = np.isfinite(cand.xyxy).all(axis=1) & np.isfinite(cand.scores)
    if ok.all():
        return cand, 0
    return Candidates(cand.xyxy[ok], cand.scores[ok], cand.class_ids[ok]), int(ok.size - ok.sum())


def _expect(outputs: Sequence[np.ndarray], count: int, ndim: int, fmt: str) -> Sequence[np.ndarray]:
    if len(outputs) != count or any(o.ndim != ndim for o in outputs):
        raise ModelError(f"output format {fmt!r} expects {count} output(s) of {ndim} dimensions, "
                         f"got shapes {[tuple(o.shape) for o in outputs]}")
    return outputs


def _check_rows(out: np.ndarray, *, channels: int, candidates: int, fmt: str, minimum: int) -> None:
    """A decoded-box output must have room for a box and a class score, and some candidates."""
    if channels < minimum:
        raise ModelError(f"model output of shape {tuple(out.shape)} has {channels} values per box; the "
                         f"{fmt!r} layout needs at least {minimum} (4 box coordinates"
                         f"{', objectness' if fmt == 'objectness' else ''} and one class score)")
    if candidates == 0:
        raise ModelError(f"model output of shape {tuple(out.shape)} has no candidate boxes (0 anchors): "
                         "not a detection model this agent can decode")


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    xyxy = np.empty((cxcywh.shape[0], 4), np.float32)
    half_wh = cxcywh[:, 2:4] * np.float32(0.5)
    xyxy[:, :2] = cxcywh[:, :2] - half_wh
    xyxy[:, 2:] = cxcywh[:, :2] + half_wh
    return xyxy


def _pick_classes(class_scores: np.ndarray, conf: float, multi_label: bool
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From (N, nc) scores: (row index, class id, score) of each kept (box, class) pair."""
    if multi_label:
        rows, cls = np.nonzero(class_scores > conf)
        return rows, cls.astype(np.int32), class_scores[rows, cls]
    cls = class_scores.argmax(axis=1)
    best = class_scores[np.arange(class_scores.shape[0]), cls]
    rows = np.flatnonzero(best > conf)
    return rows, cls[rows].astype(np.int32), best[rows]


def _candidates(cxcywh: np.ndarray, rows: np.ndarray, cls: np.ndarray, scores: np.ndarray) -> Candidates:
    return Candidates(cxcywh_to_xyxy(cxcywh[rows]), scores.astype(np.float32, copy=False), cls)


def _decode_anchor_free(pred: np.ndarray, conf: float, multi_label: bool) -> Candidates:
    """One image of ``[4+nc, N]``."""
    class_scores = pred[4:]
    # Max over classes first (one pass, no transpose), then per-box work on survivors only.
    keep = np.flatnonzero(class_scores.max(axis=0) > conf)
    rows, cls, scores = _pick_classes(class_scores[:, keep].T, conf, multi_label)
    return _candidates(pred[:4, keep].T, rows, cls, scores)


def _decode_objectness(pred: np.ndarray, conf: float, multi_label: bool) -> Candidates:
    """One image of ``[N, 5+nc]``; class score = objectness x class probability."""
    # score <= objectness, so boxes whose objectness misses the threshold can go first.
    sub = pred[pred[:, 4] > conf]
    class_scores = sub[:, 5:] * sub[:, 4:5]
    rows, cls, scores = _pick_classes(class_scores, conf, multi_label)
    return _candidates(sub[:, :4], rows, cls, scores)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    """Inverse sigmoid, so raw logits can be thresholded without a sigmoid over all of them."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _decode_heads(outputs: Sequence[np.ndarray], info: ModelInfo, conf: float,
                  multi_label: bool) -> List[Candidates]:
    """Raw darknet YOLO heads ``[B, na*(5+nc), H, W]``, logits, anchors in input pixels."""
    if not info.anchors:
        raise ModelError("raw YOLO head outputs need anchors in the model metadata (ModelInfo.anchors)")
    in_h, in_w = info.input_size
    heads = _match_heads_to_anchors(outputs, info)
    batch = outputs[0].shape[0]
    parts: List[List[Tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(batch)]
    obj_logit_min = _logit(conf)
    for out, anchors, scale_xy in heads:
        na = len(anchors)
        b, c, gh, gw = out.shape
        if c % na or c // na < 6:
            raise ModelError(f"YOLO head of shape {tuple(out.shape)} does not fit {na} anchors")
        nc = c // na - 5
        grid = out.reshape(b, na, 5 + nc, gh, gw)
        # Indices of cells whose objectness alone passes the threshold (score = obj x cls).
        bi, ai, yi, xi = np.nonzero(grid[:, :, 4] > obj_logit_min)
        if bi.size == 0:
            continue
        cell = grid[bi, ai, :, yi, xi].astype(np.float32)  # (M, 5+nc)
        anchor_wh = np.asarray(anchors, np.float32)[ai]
        stride_x, stride_y = in_w / gw, in_h / gh
        xy = _sigmoid(cell[:, :2]) * scale_xy - (scale_xy - 1.0) / 2.0
        cxcywh = np.empty((cell.shape[0], 4), np.float32)
        cxcywh[:, 0] = (xy[:, 0] + xi) * stride_x
        cxcywh[:, 1] = (xy[:, 1] + yi) * stride_y
        cxcywh[:, 2:] = np.exp(cell[:, 2:4]) * anchor_wh
        class_scores = _sigmoid(cell[:, 5:]) * _sigmoid(cell[:, 4:5])
        rows, cls, scores = _pick_classes(class_scores, conf, multi_label)
        image_of_row = bi[rows]
        for image in np.unique(image_of_row):
            mine = image_of_row == image
            parts[image].append((cxcywh_to_xyxy(cxcywh[rows[mine]]), scores[mine], cls[mine]))
    return [_join(p) for p in parts]


def _match_heads_to_anchors(outputs: Sequence[np.ndarray], info: ModelInfo
                            ) -> List[Tuple[np.ndarray, Sequence[Tuple[float, float]], float]]:
    """Pair each head output with its anchors, by stride when the metadata lists strides."""
    if len(outputs) != len(info.anchors):
        raise ModelError(f"model has {len(outputs)} YOLO head outputs but metadata lists "
                         f"anchors for {len(info.anchors)}")
    in_h = info.input_size[0]
    scales = info.scale_x_y or [1.0] * len(outputs)
    if info.strides:
        by_stride = {s: i for i, s in enumerate(info.strides)}
        paired: List[Tuple[np.ndarray, Sequence[Tuple[float, float]], float]] = []
        for out in outputs:
            stride = round(in_h / out.shape[2])
            if stride not in by_stride:
                raise ModelError(f"head of shape {tuple(out.shape)} has stride {stride}, "
                                 f"not one of the model's strides {info.strides}")
            i = by_stride[stride]
            paired.append((out, info.anchors[i], float(scales[i])))
        return paired
    return [(out, list(info.anchors[i]), float(scales[i])) for i, out in enumerate(outputs)]


def _join(parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Candidates:
    if not parts:
        return Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
    return Candidates(*(np.concatenate(arrays) for arrays in zip(*parts)))


def _decode_efficient_nms(outputs: Sequence[np.ndarray], conf: float) -> List[Candidates]:
    """EfficientNMS plugin outputs, told apart by shape, not by (engine-specific) names."""
    num = next(o for o in outputs if o.ndim == 2 and o.shape[1] == 1)
    boxes = next(o for o in outputs if o.ndim == 3)
    scores, classes = [o for o in outputs if o.ndim == 2 and o is not num]
    # The plugin emits classes as int32; some exporters cast them to float and keep the
    # plugin's order (scores, then classes).
    if np.issubdtype(scores.dtype, np.integer) and not np.issubdtype(classes.dtype, np.integer):
        scores, classes = classes, scores
    result = []
    for b in range(boxes.shape[0]):
        n = int(num[b, 0])
        keep = np.flatnonzero(scores[b, :n] > conf)
        result.append(Candidates(boxes[b, keep].astype(np.float32), scores[b, keep].astype(np.float32),
                                 classes[b, keep].astype(np.int32)))
    return result

