"""Association: IoU between boxes, and the best one-to-one matching above a threshold.

The assignment is the Hungarian method from scipy (``linear_sum_assignment``); when the
``lap`` package is installed its Jonker-Volgenant solver is used instead (the same
optimum, faster on large matrices). Neither is imported until the first match, so importing
the tracker stays cheap.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

Solver = Callable[[np.ndarray, float], List[Tuple[int, int]]]
_solver: Optional[Solver] = None


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,M) IoU of corner boxes ``a`` (N,4) and ``b`` (M,4); 0 for empty boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    # Written with ufuncs only: np.clip and np.prod cost more in Python overhead than in maths
    # at tracking sizes (tens of boxes), and this runs several times per frame.
    w = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0)
    h = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0)
    inter = w * h
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def _scipy_solver(cost: np.ndarray, limit: float) -> List[Tuple[int, int]]:
    from scipy.optimize import linear_sum_assignment

    # Forbidden pairs get a cost no allowed matching can reach, then are dropped: the optimum
    # among allowed pairs is unchanged, and scipy needs finite costs.
    big = cost.shape[0] + cost.shape[1] + limit + 1.0
    rows, cols = linear_sum_assignment(np.where(cost <= limit, cost, big))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= limit]


def _lap_solver(cost: np.ndarray, limit: float) -> List[Tuple[int, int]]:
    import lap  # type: ignore[import-not-found]  # optional, often not installed

    _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=limit + 1e-9)
    return [(int(r), int(c)) for r, c in enumerate(x) if c >= 0 and cost[r, c] <= limit]


def _pick_solver() -> Solver:
    global _solver
    if _solver is None:
        try:
            import lap  # type: ignore[import-not-found]  # noqa: F401  # optional

            _solver = _lap_solver
        except ImportError:
            _solver = _scipy_solver
        log.debug("assignment solver: %s", _solver.__name__)
    return _solver


def match(iou: np.ndarray, min_iou: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Pairs (row, col) maximising total IoU among pairs with IoU >= ``min_iou``, and the rows
    and columns left unmatched (ascending)."""
    n, m = iou.shape
    pairs: List[Tuple[int, int]] = []
    if n and m and (iou >= min_iou).any():
        pairs = _pick_solver()(1.0 - iou, 1.0 - min_iou)
    rows = {r for r, _ in pairs}
    cols = {c for _, c in pairs}
    return pairs, [r for r in range(n) if r not in rows], [c for c in range(m) if c not in cols]
