"""PASCAL VOC metrics, in numpy: AP per class (VOC2007 11-point or VOC2010+ all-point),
precision / recall / F1 at a score threshold, and a confusion matrix.

Matching follows the devkit (and the conformance tools built on it) exactly:

- per class, detections are ranked by descending score; ties keep the order they were
  read in (file-name order, then line order), as the devkit's stable sort does;
- each detection takes the same-class ground truth of its image with the largest IoU
  (the first one on ties), matched or not;
- IoU >= threshold: if that object is ``difficult`` (or a COCO crowd region) the detection
  is ignored, neither true nor false positive; if it is still unmatched it is a true
  positive and becomes matched; if already matched, the detection is a duplicate: a false
  positive. Below the threshold, or with no same-class object: a false positive;
- recall counts the non-difficult objects only; a class without any has no AP (``None``)
  and stays out of the mean;
- ``plus_one``: the devkit's inclusive pixel convention, widths ``x2 - x1 + 1`` and
  intersections ``min - max + 1``; on for VOC XML data, off otherwise (boxes in
  continuous coordinates).

AP: all-point (VOC2010+) is the area under the precision envelope with recall sentinels
0 and 1; 11-point (VOC2007) is the mean over recall r in {0, 0.1, ..., 1} (numpy's
``arange(0, 1.1, 0.1)``, as the Python devkit) of the best precision at recall >= r.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np

from agent.evaluate.structures import GroundTruth, Predictions

log = logging.getLogger(__name__)

METRICS = ("voc07", "voc12")


@dataclasses.dataclass
class ClassCurve:
    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray  # of the ranked, non-ignored detections


@dataclasses.dataclass
class VocResult:
    metric: str
    iou: float
    plus_one: bool
    score_threshold: float
    per_class: Dict[int, Optional[float]]  # category id -> AP (None: no non-difficult ground truth)
    mean_ap: Optional[float]
    n_gt: Dict[int, int]
    n_pred: Dict[int, int]
    prf: Dict[int, Tuple[float, float, float]]  # precision, recall, F1 at score_threshold
    curves: Dict[int, ClassCurve]


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool) -> float:
    """AP of one class from its cumulative recall and precision (ranked order)."""
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = precision[recall >= t]
            ap += (float(above.max()) if above.size else 0.0) / 11.0
        return ap
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def box_iou_pairs(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU of row i of ``a`` with row i of ``b``; boxes COCO ``[x, y, w, h]``."""
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + one
    ih = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + one
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] + one) * (a[:, 3] + one) + (b[:, 2] + one) * (b[:, 3] + one) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match(gt: GroundTruth, preds: Predictions, iou: float, plus_one: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Ranking order of the predictions (by class, then score) and each one's outcome there:
    1 true positive, 0 false positive, -1 ignored (best match is difficult / crowd)."""
    order = np.lexsort((-preds.scores, preds.category_ids))  # stable: ties keep reading order
    img, cat, boxes = preds.image_ids[order], preds.category_ids[order], preds.boxes[order]
    # Ground truth grouped by (image, class), file order kept inside each group.
    g_order = np.lexsort((gt.ann_category_ids, gt.ann_image_ids))
    g_img, g_cat = gt.ann_image_ids[g_order], gt.ann_category_ids[g_order]
    g_key = np.stack([g_img, g_cat], 1)
    lo = _searchsorted_rows(g_key, np.stack([img, cat], 1), "left")
    hi = _searchsorted_rows(g_key, np.stack([img, cat], 1), "right")
    counts = hi - lo
    det_of_pair = np.repeat(np.arange(img.size), counts)
    offsets = np.arange(det_of_pair.size) - np.repeat(np.cumsum(counts) - counts, counts)
    gt_of_pair = g_order[np.repeat(lo, counts) + offsets]
    ious = box_iou_pairs(boxes[det_of_pair], gt.boxes[gt_of_pair], plus_one)
    best_iou = np.zeros(img.size)
    best_gt = np.full(img.size, -1, np.int64)
    has = counts > 0
    if det_of_pair.size:
        starts = (np.cumsum(counts) - counts)[has]
        group_max = np.maximum.reduceat(ious, starts)
        is_max = ious == np.repeat(group_max, counts[has])
        # First pair reaching the maximum: pairs run in file order, so ties go to the first object.
        first = np.minimum.reduceat(np.where(is_max, np.arange(ious.size), ious.size), starts)
        best_iou[has] = group_max
        best_gt[has] = gt_of_pair[first]
    outcome = np.zeros(img.size, np.int8)
    hit = (best_iou >= iou) & (best_gt >= 0)
    ignored = hit & (gt.iscrowd[np.clip(best_gt, 0, None)] != 0)
    outcome[ignored] = -1
    claims = np.flatnonzero(hit & ~ignored)
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    outcome[claims[first_claim]] = 1
    return order, outcome


def _searchsorted_rows(keys: np.ndarray, queries: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """searchsorted on (image, class) rows, through one combined int64 key per row."""
    if keys.size == 0:
        return np.zeros(len(queries), np.int64)
    cat_lo = min(int(keys[:, 1].min()), int(queries[:, 1].min()) if queries.size else 0)
    span = max(int(keys[:, 1].max()), int(queries[:, 1].max()) if queries.size else 0) - cat_lo + 1
    img_lo = min(int(keys[:, 0].min()), int(queries[:, 0].min()) if queries.size else 0)
    combined = (keys[:, 0] - img_lo) * span + (keys[:, 1] - cat_lo)
    wanted = (queries[:, 0] - img_lo) * span + (queries[:, 1] - cat_lo)
    return np.searchsorted(combined, wanted, side=side)


def evaluate_voc(
    gt: GroundTruth,
    preds: Predictions,
    metric: str = "voc12",
    iou: float = 0.5,
    plus_one: Optional[bool] = None,
    score_threshold: float = 0.25,
) -> VocResult:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    plus_one = gt.plus_one if plus_one is None else plus_one
    order, outcome = match(gt, preds, iou, plus_one)
    cats, scores = preds.category_ids[order], preds.scores[order]
    counted = gt.iscrowd == 0
    per_class: Dict[int, Optional[float]] = {}
    n_gt, n_pred, prf, curves = {}, {}, {}, {}
    bounds = (
        np.searchsorted(cats, np.asarray(gt.category_ids, np.int64), side="left"),
        np.searchsorted(cats, np.asarray(gt.category_ids, np.int64), side="right"),
    )
    for k, cid in enumerate(gt.category_ids):
        npos = int(np.count_nonzero(counted & (gt.ann_category_ids == cid)))
        block = slice(int(bounds[0][k]), int(bounds[1][k]))
        out, sc = outcome[block], scores[block]
        live = out >= 0
        tp = np.cumsum(out[live] == 1).astype(np.float64)
        fp = np.cumsum(out[live] == 0).astype(np.float64)
        n_gt[cid], n_pred[cid] = npos, int(out.size)
        recall = tp / npos if npos else np.zeros_like(tp)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        curves[cid] = ClassCurve(recall, precision, sc[live])
        per_class[cid] = voc_ap(recall, precision, metric == "voc07") if npos else None
        prf[cid] = _prf(sc[live], tp, fp, npos, score_threshold)
    defined = [v for v in per_class.values() if v is not None]
    mean_ap = float(np.mean(defined)) if defined else None
    return VocResult(metric, iou, plus_one, score_threshold, per_class, mean_ap, n_gt, n_pred, prf, curves)


def _prf(
    scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, npos: int, threshold: float
) -> Tuple[float, float, float]:
    kept = int(np.count_nonzero(scores >= threshold))  # ranked by score: a prefix
    t = float(tp[kept - 1]) if kept else 0.0
    f = float(fp[kept - 1]) if kept else 0.0
    precision = t / (t + f) if t + f else 0.0
    recall = t / npos if npos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def confusion_matrix(
    gt: GroundTruth,
    preds: Predictions,
    iou: float = 0.5,
    score_threshold: float = 0.25,
    plus_one: Optional[bool] = None,
) -> np.ndarray:
    """(K+1, K+1) counts: rows true class, columns predicted class, index K = background.

    Per image, detections at or above ``score_threshold`` and objects of any class are paired
    greedily by descending IoU (>= ``iou``), one to one. Unpaired objects count as missed
    (column K), unpaired detections as background false positives (row K). Detections whose
    best partner is a difficult/crowd object are left out, as the AP ignores them.
    """
    plus_one = gt.plus_one if plus_one is None else plus_one
    k = len(gt.category_ids)
    index = {c: i for i, c in enumerate(gt.category_ids)}
    matrix = np.zeros((k + 1, k + 1), np.int64)
    keep = preds.scores >= score_threshold
    d_img, d_cat, d_box = preds.image_ids[keep], preds.category_ids[keep], preds.boxes[keep]
    d_cls = np.asarray([index[c] for c in d_cat.tolist()], np.int64)
    g_cls = np.asarray([index[c] for c in gt.ann_category_ids.tolist()], np.int64)
    d_rows = _groups(d_img)
    g_rows = _groups(gt.ann_image_ids)
    for image in set(d_rows) | set(g_rows):
        di = d_rows.get(image, np.zeros(0, np.int64))
        gi = g_rows.get(image, np.zeros(0, np.int64))
        matched = _greedy(_pairs_by_iou(d_box[di], gt.boxes[gi], iou, plus_one))
        for a, b in matched:
            if gt.iscrowd[gi[b]] == 0:
                matrix[g_cls[gi[b]], d_cls[di[a]]] += 1
        paired_d = {a for a, _ in matched}
        paired_g = {b for _, b in matched}
        for b in range(gi.size):
            if b not in paired_g and gt.iscrowd[gi[b]] == 0:
                matrix[g_cls[gi[b]], k] += 1
        for a in range(di.size):
            if a not in paired_d:
                matrix[k, d_cls[di[a]]] += 1
    return matrix


def _groups(image_ids: np.ndarray) -> Dict[int, np.ndarray]:
    order = np.argsort(image_ids, kind="stable")
    uniq, starts = np.unique(image_ids[order], return_index=True)
    return {
        int(u): order[s:e]
        for u, s, e in zip(uniq.tolist(), starts.tolist(), [*starts[1:].tolist(), order.size])
    }


def _pairs_by_iou(dets: np.ndarray, gts: np.ndarray, iou: float, plus_one: bool) -> List[Tuple[int, int]]:
    if not dets.size or not gts.size:
        return []
    a = np.repeat(np.arange(len(dets)), len(gts))
    b = np.tile(np.arange(len(gts)), len(dets))
    ious = box_iou_pairs(dets[a], gts[b], plus_one)
    ok = np.flatnonzero(ious >= iou)
    ranked = ok[np.argsort(-ious[ok], kind="stable")]
    return list(zip(a[ranked].tolist(), b[ranked].tolist()))


def _greedy(pairs: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    used_d, used_g, out = set(), set(), []
    for a, b in pairs:
        if a not in used_d and b not in used_g:
            used_d.add(a)
            used_g.add(b)
            out.append((a, b))
    return out
