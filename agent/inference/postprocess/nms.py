"""Greedy non-maximum suppression in pure numpy, bit-for-bit equal to torchvision's CPU kernel.

``nms`` keeps the same boxes, in the same order, as ``torchvision.ops.nms`` (class-agnostic)
and ``torchvision.ops.batched_nms`` (class-aware), without importing torch: a Jetson cannot
spare the memory. Equal means the kernel's float32 arithmetic in its order of evaluation,
its strict ``iou > threshold`` against a C++ double, and its stable descending sort by score.
(``batched_nms`` above 1,000 CPU boxes takes a per-class path whose final sort is not
stable, so there it orders equal scores arbitrarily; the kept set is the same.)

Greedy NMS walks the boxes best first, one at a time; a Python loop per box is far too slow,
so two vectorised forms of the same greedy result are used:

- *blocked* (class-agnostic, and classes with many boxes): take the best few boxes, resolve
  them among themselves exactly, then let the ones kept suppress every later box in one
  vectorised step; repeat on the survivors. Work is about (kept x candidates), like the C++
  kernel; memory stays bounded (``_BUDGET``) however many boxes come in.
- *pairs* (many small classes): every same-class pair (i before j) is scored at once and
  the overlapping pairs become edges of a DAG. Greedy's keep vector is the unique fixed
  point of ``keep[j] = not any(keep[i] for edges i -> j)``, because each box's fate depends
  only on boxes before it; iterating that map from all-kept reaches it in (longest chain + 1)
  rounds (the "Cluster-NMS" argument, Zheng et al. 2020). The same fixed point resolves a
  block of the blocked form. Before it, the best box of each class, always kept, suppresses
  its classmates in one step ("peeling"), which shortens the pair list of clustered output.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: Box pairs per temporary array of the blocked form (4 MiB as float32).
_BUDGET = 1 << 20
#: Box pairs per pass of the pair form, which holds ~60 bytes per pair; a pass of whole
#: classes may reach twice this. Small classes (see _BIG_CLASS) fit one pass each.
_PAIRS_PER_PASS = 1 << 17
#: Boxes in the first block of the blocked form; later blocks double, up to _BLOCK_MAX.
_BLOCK = 64
_BLOCK_MAX = 1024
#: Classes with more boxes than this get their own blocked pass.
_BIG_CLASS = 128
#: Peel while the pair list would exceed this many pairs per remaining box.
_PEEL_UNTIL = 8


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    class_ids: Optional[np.ndarray] = None,
    max_det: Optional[int] = None,
) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (equal scores: lower index first).

    Args:
        boxes_xyxy: (N, 4) x1, y1, x2, y2; float64 is cast to float32 as torchvision users do.
        scores: (N,) scores, also compared in float32; NaN is rejected.
        iou_threshold: a box is dropped when its IoU with a kept, better box is strictly
            greater than this.
        class_ids: (N,) integer classes; boxes then only suppress boxes of their own class.
            ``None`` suppresses across classes.
        max_det: keep at most this many (the best); ``None`` for no limit.

    Returns:
        int64 indices into the inputs.

    Raises:
        ValueError: on shapes that disagree, non-finite boxes, NaN scores, non-integer
            class ids or a negative ``max_det``.
    """
    boxes, scores, classes = _validate(boxes_xyxy, scores, class_ids, max_det)
    n = scores.shape[0]
    if n == 0 or max_det == 0:
        return np.empty(0, np.int64)
    # Stable, like the kernel's sort(stable=True, descending=True): ties keep input order.
    order = np.argsort(-scores, kind="stable")
    # One (5, N) array of x1, y1, x2, y2, area in score order: a gather (np.take, much faster
    # than cols[:, index]) or a repeat of all five is then one call, and calls, not
    # arithmetic, dominate at N ~ 1,000.
    cols = np.empty((5, n), np.float32)
    np.take(boxes.T, order, axis=1, out=cols[:4])
    thr = _float32_threshold(iou_threshold)
    # Empty boxes give 0/0 = NaN and huge ones inf/inf; NaN never suppresses, as in the kernel.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cols[4] = (cols[2] - cols[0]) * (cols[3] - cols[1])
        if classes is None:
            kept = _blocked(np.arange(n), cols, thr, max_det)
        else:
            kept = _class_aware(classes[order], cols, thr, max_det)
    return order[kept[:max_det]]


def filter_by_class_threshold(
    scores: np.ndarray, class_ids: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Boolean mask of boxes whose score is strictly above their class's threshold.

    ``thresholds[c]`` is the minimum score of class ``c`` (strict ``>``, like the decoder's
    confidence threshold). Raises ValueError on shape mismatch or a class id outside it.
    """
    scores = np.asarray(scores)
    class_ids = np.asarray(class_ids)
    thresholds = np.asarray(thresholds)
    if scores.ndim != 1 or class_ids.shape != scores.shape:
        raise ValueError(f"scores and class_ids must both have shape (N,), got {scores.shape} "
                         f"and {class_ids.shape}")
    if thresholds.ndim != 1:
        raise ValueError(f"thresholds must be 1-D, one per class, got shape {thresholds.shape}")
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= thresholds.shape[0]):
        raise ValueError(f"class ids must lie in [0, {thresholds.shape[0]}) to index thresholds; "
                         f"got {class_ids.min()}..{class_ids.max()}")
    return scores > thresholds[class_ids]


def _validate(boxes: np.ndarray, scores: np.ndarray, class_ids: Optional[np.ndarray],
              max_det: Optional[int]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.shape == (0,):  # np.array([]) for "no boxes"
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},) to match boxes_xyxy, "
                         f"got {scores.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy contains NaN or infinite coordinates; drop those boxes first")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; drop those boxes first")
    if max_det is not None and (not isinstance(max_det, (int, np.integer)) or max_det < 0):
        raise ValueError(f"max_det must be an integer >= 0 or None, got {max_det!r}")
    if class_ids is None:
        return boxes, scores, None
    classes = np.asarray(class_ids)
    if classes.shape != scores.shape:
        raise ValueError(f"class_ids must have shape {scores.shape} to match scores, got {classes.shape}")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"class_ids must be integers, got dtype {classes.dtype}; "
                         "cast with .astype(np.int64)")
    return boxes, scores, classes


def _float32_threshold(iou_threshold: float) -> np.float32:
    """The largest float32 ``f <= iou_threshold``; for any float32 x, ``x > t`` iff ``x > f``.

    The kernel compares float32 IoUs with a C++ double. Comparing in float32 against ``f``
    gives the same answers under NumPy 1's value-based casting and NumPy 2's NEP 50 alike,
    and spares casting every IoU to float64.
    """
    t = float(iou_threshold)
    with np.errstate(over="ignore"):
        f = np.float32(t)
    if float(f) > t:  # rounded up (NaN compares False and stays NaN: nothing suppressed)
        f = np.nextafter(f, np.float32(-np.inf))
    return f


def _overlap(a: np.ndarray, b: np.ndarray, thr: np.float32) -> np.ndarray:
    """``IoU(a, b) > thr`` elementwise over broadcast (5, ...) column arrays, in kernel arithmetic.

    ``a`` holds the better box of each pair: the kernel's ``i`` (only matters for the order
    of ``areas[i] + areas[j]``, which IEEE addition makes symmetric anyway).
    """
    ax1, ay1, ax2, ay2, aarea = a
    bx1, by1, bx2, by2, barea = b
    w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    np.maximum(w, 0, out=w)
    h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    union = aarea + barea
    union -= w  # (area_i + area_j) - inter: the kernel's order of evaluation
    w /= union
    return w > thr


def _resolve(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Greedy keep mask of n nodes given suppression edges src -> dst (src before dst)."""
    keep = np.ones(n, bool)
    if src.size == 0:
        return keep
    # Each round fixes at least one more level of the DAG, so n + 1 rounds always suffice.
    for _ in range(n + 1):
        new = np.ones(n, bool)
        new[dst[keep[src]]] = False
        if not (new ^ keep).any():
            return keep
        keep = new
    raise RuntimeError("NMS fixed point did not converge; this is a bug")


def _blocked(ranks: np.ndarray, cols: np.ndarray, thr: np.float32, limit: Optional[int]) -> np.ndarray:
    """Greedy NMS over ``ranks`` (ascending score ranks of one class, or of all boxes)."""
    rest = ranks
    parts = []
    k = 0
    size = _BLOCK
    while rest.shape[0]:
        block, rest = rest[:size], rest[size:]
        # Small first: it usually holds the heads of all clusters. Then grow, so that output
        # with little overlap costs few blocks.
        size = min(2 * size, _BLOCK_MAX)
        if block.shape[0] > 1:
            bc = np.take(cols, block, axis=1)
            src, dst = np.nonzero(_overlap(bc[:, :, None], bc[:, None, :], thr))
            later = src < dst  # only a better box suppresses: the upper triangle
            block = block[_resolve(src[later], dst[later], block.shape[0])]
        parts.append(block)
        k += block.shape[0]
        if not rest.shape[0] or (limit is not None and k >= limit):
            break  # later boxes are all worse than the ones kept
        # The block's kept boxes now suppress every later box at once; in real detector output
        # most boxes sit in the clusters of the best ones, so few blocks remain after this.
        hit = np.zeros(rest.shape[0], bool)
        rc = np.take(cols, rest, axis=1)[:, None, :]
        step = max(1, _BUDGET // rest.shape[0])  # (kept x rest) temporaries within the budget
        for lo in range(0, block.shape[0], step):
            hit |= _overlap(np.take(cols, block[lo:lo + step], axis=1)[:, :, None], rc, thr).any(axis=0)
        rest = rest[~hit]
    return np.concatenate(parts)


def _class_aware(classes: np.ndarray, cols: np.ndarray, thr: np.float32, limit: Optional[int]) -> np.ndarray:
    """Kept score ranks, ascending, when boxes only suppress boxes of their own class."""
    n = classes.shape[0]
    # Group by class; stable, so each group stays in score order. NumPy radix-sorts 16-bit
    # keys, several times faster than its merge sort of int64 at detector sizes.
    if classes.min() >= -(1 << 15) and classes.max() < 1 << 15:
        classes = classes.astype(np.int16)
    grouped = np.argsort(classes, kind="stable")
    gc = classes[grouped]
    first = np.concatenate(([True], gc[1:] != gc[:-1]))
    group = np.cumsum(first) - 1
    sizes = np.bincount(group)
    keep = np.ones(n, bool)
    big = np.flatnonzero(sizes > _BIG_CLASS)
    for g in big:
        # A big class gets its own blocked pass: bounded memory, work ~ kept x members.
        members = grouped[group == g]
        keep[members] = False
        keep[_blocked(members, cols, thr, limit)] = True
    if big.size:
        small = sizes[group] <= _BIG_CLASS
        grouped, group = grouped[small], group[small]
    _peel_and_pairs(grouped, group, cols, thr, keep)
    return np.flatnonzero(keep)


def _peel_and_pairs(members: np.ndarray, group: np.ndarray, cols: np.ndarray, thr: np.float32,
                    keep: np.ndarray) -> None:
    """Greedy NMS of many small classes at once, written into ``keep`` (indexed by rank).

    ``members`` are score ranks grouped by class (``group``, non-decreasing), each class in
    score order. The best box of a class is always kept, so while the pair list would be long,
    every class's best box suppresses its overlapping classmates in one vectorised round
    ("peeling" the clusters of the best boxes); the rest goes to the pair form.
    """
    peel = True
    while True:
        if members.shape[0] < 2:
            return
        head = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
        sizes = np.diff(np.append(head, members.shape[0]))
        pairs = sizes * (sizes - 1) // 2
        if not peel or pairs.sum() <= _PEEL_UNTIL * members.shape[0]:
            break
        mc = np.take(cols, members, axis=1)
        hit = _overlap(np.repeat(np.take(mc, head, axis=1), sizes, axis=1), mc, thr)
        hit[head] = False  # a head against itself
        keep[members[hit]] = False
        hit[head] = True  # decided too (kept), so out of the next round
        # Heads that overlap little (sparse scenes) make peeling slow: then pairs it is.
        peel = hit.sum() * 4 >= members.shape[0]
        members, group = members[~hit], group[~hit]
    ok = sizes > 1
    head, sizes, pairs = head[ok], sizes[ok], pairs[ok]
    if not head.shape[0]:
        return
    # Several whole classes per pass, at most 2 x _PAIRS_PER_PASS pairs (usually one pass).
    cum = np.cumsum(pairs)
    marks = np.arange(1, cum[-1] // _PAIRS_PER_PASS + 1) * _PAIRS_PER_PASS
    cuts = np.searchsorted(cum, marks, side="right")
    cuts = np.unique(cuts[(cuts > 0) & (cuts < head.shape[0])])
    for h, g in zip(np.split(head, cuts), np.split(sizes, cuts)):
        _pairs_pass(members, h, g, cols, thr, keep)


def _pairs_pass(grouped: np.ndarray, starts: np.ndarray, sizes: np.ndarray, cols: np.ndarray,
                thr: np.float32, keep: np.ndarray) -> None:
    """Resolve whole classes (runs ``grouped[start:start + size]``) by the pair form, into keep."""
    # Members of these classes, concatenated; pos = position in that list.
    total = int(sizes.sum())
    offsets = np.cumsum(sizes) - sizes
    pos = np.arange(total)
    group_end = np.repeat(offsets + sizes, sizes)
    members = grouped[np.repeat(starts - offsets, sizes) + pos]
    # Member p pairs with every later member of its class: p+1 .. group_end-1.
    later = group_end - pos - 1
    m = int(later.sum())
    mc = np.take(cols, members, axis=1)
    first = np.repeat(pos, later)
    second = np.arange(m) - np.repeat(np.cumsum(later) - later - pos - 1, later)
    # The first box of each pair is a repeat, cheaper than a gather.
    hit = _overlap(np.repeat(mc, later, axis=1), np.take(mc, second, axis=1), thr)
    keep[members] = _resolve(first[hit], second[hit], total)
