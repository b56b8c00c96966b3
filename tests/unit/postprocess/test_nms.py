"""agent.inference.postprocess.nms against torchvision, the reference it must equal bit for bit.

Order among equal scores, as found in the sources (not guessed):

- torchvision's CPU kernel (``torchvision/csrc/ops/cpu/nms_kernel.cpp``, 0.29) sorts with
  ``scores.sort(/*stable=*/true, 0, /*descending=*/true)``: equal scores keep input order,
  as ``nms`` does. So ``torchvision.ops.nms`` and ``batched_nms``'s coordinate-offset path
  (one kernel call) must match us index for index; ``test_reference_kernel_sorts_stably``
  pins that assumption.
- ``_batched_nms_vanilla`` (per-class kernel calls; ``batched_nms`` takes it above 4,000
  box coordinates on CPU) ends with ``scores[keep].sort(descending=True)``, which is not
  stable: ATen's CPU sort uses x86-simd-sort or ``std::sort`` when ``stable`` is false, so
  kept boxes with equal scores come out in an arbitrary order. The per-class kernel calls
  see each class in input order, so *which* boxes survive is still deterministic. Against
  that path we compare the kept set and require our order to be the stable one.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.inference.postprocess import nms as nms_module
from agent.inference.postprocess.nms import filter_by_class_threshold, nms

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.ops.boxes import _batched_nms_vanilla  # noqa: E402

Case = Tuple[np.ndarray, np.ndarray, np.ndarray, float]
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Tuning that forces every code path (chunked temporaries, several pair passes, big-class
# blocked passes, growing blocks) on small inputs; the real values take the fast paths.
TINY = {"_BUDGET": 64, "_PAIRS_PER_PASS": 64, "_BLOCK": 3, "_BLOCK_MAX": 16, "_BIG_CLASS": 12,
        "_PEEL_UNTIL": 1}


@contextmanager
def tuning(tiny: bool) -> Iterator[None]:
    if not tiny:
        yield
        return
    with mock.patch.multiple(nms_module, **TINY):
        yield


# ---------------------------------------------------------------- strategies


def _boxes(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "clusters":  # detector-like: jittered copies of a few objects, exact duplicates
        k = int(rng.integers(1, 20))
        centre = rng.uniform(0, 500, (k, 2))
        size = 10 ** rng.uniform(-2, 3, (k, 2))
        obj = rng.integers(0, k, n)
        jitter = rng.normal(0, 0.15, (n, 2)) * (rng.random((n, 1)) < 0.8)
        c = centre[obj] + jitter * size[obj]
        wh = size[obj] * np.exp(rng.normal(0, 0.2, (n, 2)) * (rng.random((n, 1)) < 0.8))
        b = np.concatenate([c - wh / 2, c + wh / 2], 1)
    elif kind == "grid":  # eighths: exact IoU ties with simple thresholds, zero/negative sizes
        unit = rng.choice([0.125, 1.0])
        xy = rng.integers(0, 64, (n, 2)) * unit
        wh = rng.integers(-2, 32, (n, 2)) * unit
        b = np.concatenate([xy, np.maximum(xy + wh, 0)], 1)
    elif kind == "wild":  # every size at once, inverted and empty boxes
        xy = rng.uniform(-1e3, 1e3, (n, 2))
        wh = rng.choice([0.0, -1.0, 1e-6, 1e-2, 1.0, 30.0, 1e5], (n, 2)) * rng.uniform(0.5, 1.5, (n, 2))
        b = np.concatenate([xy, xy + wh], 1)
    else:  # "extreme": overflowing areas (inf, inf/inf) and subnormal products
        scale = 10.0 ** rng.choice([-25, -20, 0, 18, 30, 38], (n, 1))
        xy = rng.uniform(-1, 1, (n, 2)) * scale
        b = np.concatenate([xy, xy + rng.uniform(-0.1, 1, (n, 2)) * scale], 1)
    if n > 1:  # identical boxes
        dup = rng.random(n) < 0.1
        b[dup] = b[rng.integers(0, n, int(dup.sum()))]
    return np.clip(b, -3e38, 3e38).astype(np.float32)


def _scores(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "ties":  # a handful of values: many exactly equal scores
        return rng.choice(rng.random(int(rng.integers(1, 6))), n).astype(np.float32)
    if kind == "special":
        return rng.choice(np.array([0.0, -0.0, 1.0, 0.5, np.inf, -np.inf, 1e-45]), n).astype(np.float32)
    return rng.random(n).astype(np.float32)


def _iou32(b: np.ndarray, i: int, j: int) -> np.float32:
    """One IoU in the kernel's float32 arithmetic, to put thresholds exactly on the boundary."""
    with np.errstate(all="ignore"):
        w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
        h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
        inter = w * h
        ai = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1])
        aj = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
        return inter / (ai + aj - inter)


@st.composite
def cases(draw: st.DrawFn, kinds: Tuple[str, ...] = ("clusters", "grid", "wild", "extreme"),
          max_n: int = 300, negative_thresholds: bool = True,
          class_offsets: Tuple[int, ...] = (0, 0, -7, 40000, 2**40)) -> Case:
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**63 - 1)))
    boxes = _boxes(rng, n, draw(st.sampled_from(kinds)))
    scores = _scores(rng, n, draw(st.sampled_from(["ties", "ties", "uniform", "special"])))
    offset = draw(st.sampled_from(class_offsets))
    dtype = draw(st.sampled_from([np.int64, np.int32])) if abs(offset) < 2**30 else np.int64
    classes = (rng.integers(0, draw(st.integers(1, 12)), n) + offset).astype(dtype)
    low = -0.5 if negative_thresholds else 0.0
    thr = draw(st.one_of(
        st.sampled_from([0.0, 0.5, 1.0, 0.45, 1 / 3, 0.7]),
        st.floats(low, 1.5 if negative_thresholds else 1.0),
        st.sampled_from(["on", "above", "below"]) if n >= 2 else st.just(0.5),
    ))
    if isinstance(thr, str):
        # Exactly at, or one double ulp around, the IoU of the best box (always kept, so the
        # kernel compares it with every other box) and another box, of its class if any.
        best = int(np.argsort(-scores, kind="stable")[0])
        mates = np.flatnonzero(classes == classes[best])
        others = mates[mates != best] if mates.size > 1 else np.delete(np.arange(n), best)
        iou = float(_iou32(boxes, best, int(rng.choice(others))))
        if not np.isfinite(iou) or (iou < 0 and not negative_thresholds):
            iou = 0.5
        thr = {"on": iou, "above": np.nextafter(iou, np.inf), "below": np.nextafter(iou, -np.inf)}[thr]
    return boxes, scores, classes, float(thr) if negative_thresholds else max(float(thr), 0.0)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _stable_order(keep: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``keep`` re-sorted by descending score, equal scores by index: our documented order."""
    keep = np.sort(keep)
    return keep[np.argsort(-scores[keep], kind="stable")]


# ---------------------------------------------------------------- randomized vs torchvision


@pytest.mark.parametrize("tiny", [False, True])
@settings(FAST, max_examples=1500)
@given(case=cases())
def test_agnostic_matches_torchvision_nms(case: Case, tiny: bool) -> None:
    boxes, scores, _, thr = case
    expected = torchvision.ops.nms(_t(boxes), _t(scores), thr).numpy()
    with tuning(tiny):
        got = nms(boxes, scores, thr)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("tiny", [False, True])
@settings(FAST, max_examples=1500)
@given(case=cases())
def test_class_aware_matches_torchvision_per_class(case: Case, tiny: bool) -> None:
    boxes, scores, classes, thr = case
    reference = _batched_nms_vanilla(_t(boxes), _t(scores), _t(classes.astype(np.int64)), thr).numpy()
    with tuning(tiny):
        got = nms(boxes, scores, thr, classes)
    # Same boxes kept; order: ours is the stable one (see the module docstring).
    np.testing.assert_array_equal(np.sort(got), np.sort(reference))
    np.testing.assert_array_equal(got, _stable_order(reference, scores))
    np.testing.assert_array_equal(scores[got], scores[reference])


@pytest.mark.parametrize("tiny", [False, True])
@settings(FAST, max_examples=1000)
@given(case=cases(kinds=("grid",), negative_thresholds=False, class_offsets=(0,)))
def test_class_aware_matches_batched_nms_offset_trick(case: Case, tiny: bool) -> None:
    # Non-negative coordinates on a 1/8 grid: the per-class offsets are exact in float32, so
    # they change no IoU, and boxes of different classes never touch (IoU 0, threshold >= 0).
    boxes, scores, classes, thr = case
    expected = torchvision.ops.batched_nms(_t(boxes), _t(scores), _t(classes.astype(np.int64)), thr).numpy()
    with tuning(tiny):
        got = nms(boxes, scores, thr, classes)
    np.testing.assert_array_equal(got, expected)


@settings(FAST, max_examples=500)
@given(case=cases(), max_det=st.integers(0, 40), aware=st.booleans(), tiny=st.booleans())
def test_max_det_keeps_the_best_prefix(case: Case, max_det: int, aware: bool, tiny: bool) -> None:
    boxes, scores, classes, thr = case
    cls = classes if aware else None
    full = nms(boxes, scores, thr, cls)
    with tuning(tiny):
        got = nms(boxes, scores, thr, cls, max_det=max_det)
    np.testing.assert_array_equal(got, full[:max_det])
    if not aware:
        np.testing.assert_array_equal(got, torchvision.ops.nms(_t(boxes), _t(scores), thr).numpy()[:max_det])


def test_reference_kernel_sorts_stably() -> None:
    # Disjoint boxes, three score values: the kernel keeps all, in its sort order.
    rng = np.random.default_rng(0)
    n = 2000
    x = np.arange(n, dtype=np.float32) * 10
    boxes = np.stack([x, np.zeros(n), x + 5, np.full(n, 5)], 1).astype(np.float32)
    scores = rng.choice(np.array([0.1, 0.5, 0.9], np.float32), n)
    kept = torchvision.ops.nms(_t(boxes), _t(scores), 0.5).numpy()
    np.testing.assert_array_equal(kept, np.argsort(-scores, kind="stable"))
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), kept)


# ---------------------------------------------------------------- large randomized cases


def _detector_like(n: int, objects: int, num_classes: int, seed: int) -> Tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 416, (objects, 2))
    size = rng.uniform(10, 200, (objects, 2))
    obj = rng.integers(0, objects, n)
    c = centre[obj] + rng.normal(0, 0.1, (n, 2)) * size[obj]
    wh = size[obj] * np.exp(rng.normal(0, 0.15, (n, 2)))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], 1), 0, 416).astype(np.float32)
    scores = rng.choice(rng.random(n // 4), n).astype(np.float32)  # ties too
    return boxes, scores, rng.integers(0, num_classes, n)


@pytest.mark.parametrize("thr", [0.3, 0.45, 0.7])
def test_5000_boxes_80_classes(thr: float) -> None:
    boxes, scores, classes = _detector_like(5000, 60, 80, seed=int(thr * 100))
    reference = torchvision.ops.batched_nms(_t(boxes), _t(scores), _t(classes), thr).numpy()
    got = nms(boxes, scores, thr, classes)
    assert 100 < got.size < 5000
    np.testing.assert_array_equal(got, _stable_order(reference, scores))


@pytest.mark.parametrize("thr", [0.3, 0.45, 0.7])
def test_3000_boxes_one_class(thr: float) -> None:
    boxes, scores, _ = _detector_like(3000, 80, 1, seed=int(thr * 100))
    expected = torchvision.ops.nms(_t(boxes), _t(scores), thr).numpy()
    got = nms(boxes, scores, thr, np.zeros(3000, np.int64))
    assert 10 < got.size < 3000
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(nms(boxes, scores, thr), expected)


def test_many_identical_boxes_stay_cheap_and_exact() -> None:
    # 10,000 copies of one box: a dense pair list would be 50M pairs; one survivor.
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (10000, 1))
    scores = np.linspace(0, 1, 10000, dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [9999])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, np.zeros(10000, np.int32)), [9999])


# ---------------------------------------------------------------- hand-worked cases

A, B = [0, 0, 10, 10], [1, 1, 11, 11]  # IoU 81 / 119 = 0.68


def _f32(*rows: list) -> np.ndarray:
    return np.array(rows, np.float32)


def test_overlapping_pair_of_one_class_keeps_the_better() -> None:
    boxes, scores = _f32(A, B), _f32(0.8, 0.9)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, np.array([3, 3])), [1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [1, 0])  # 0.68 is not > 0.7


def test_classes_do_not_suppress_each_other_when_class_aware() -> None:
    boxes, scores = _f32(A, B), _f32(0.8, 0.9)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, np.array([0, 1])), [1, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1])


def test_iou_exactly_at_threshold_is_kept() -> None:
    boxes, scores = _f32([0, 0, 4, 1], [0, 0, 2, 1]), _f32(0.9, 0.8)  # IoU = 2 / 4 exactly
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(nms(boxes, scores, np.nextafter(0.5, 0)), [0])


def test_threshold_is_compared_as_a_double() -> None:
    # IoU 1/3 in float32 is 0.33333334 > 1/3 as a double: torchvision suppresses. A float32
    # comparison (NumPy 2's rule for float32 array > Python float) would keep both.
    boxes, scores = _f32([0, 0, 1, 1], [0, 0, 3, 1]), _f32(0.9, 0.8)
    assert torchvision.ops.nms(_t(boxes), _t(scores), 1 / 3).tolist() == [0]
    np.testing.assert_array_equal(nms(boxes, scores, 1 / 3), [0])
    np.testing.assert_array_equal(nms(boxes, scores, float(np.float32(1 / 3))), [0, 1])


def test_iou_rounding_follows_the_kernel() -> None:
    # Float boxes with thresholds exactly at each pair's float32 IoU (kept: strict >) and one
    # double ulp below (suppressed): off by one rounding anywhere in the IoU, and this fails.
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 100, (400, 2, 2))
    pairs = np.concatenate([xy, xy + rng.uniform(5, 60, (400, 2, 2))], 2).astype(np.float32)
    scores = _f32(0.9, 0.8)
    for boxes in pairs:
        iou = float(_iou32(boxes, 0, 1))
        if not 0 < iou < 1:
            continue
        for thr, expected in ((iou, [0, 1]), (np.nextafter(iou, 0), [0])):
            assert torchvision.ops.nms(_t(boxes), _t(scores), thr).tolist() == expected
            np.testing.assert_array_equal(nms(boxes, scores, thr), expected)


def test_chain_suppressed_box_cannot_suppress() -> None:
    # A suppresses B (IoU 0.43); B would suppress C (0.43) but is gone; A and C: 0.11.
    boxes = _f32([0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10])
    scores = _f32(0.9, 0.8, 0.7)
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.3, np.zeros(3, np.int64)), [0, 2])


def test_max_det_truncates_in_score_order() -> None:
    boxes = _f32(*[[10 * i, 0, 10 * i + 5, 5] for i in range(5)])  # disjoint
    scores = _f32(0.1, 0.5, 0.3, 0.9, 0.7)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_det=3), [3, 4, 1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, np.arange(5), max_det=2), [3, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_det=99), [3, 4, 1, 2, 0])
    assert nms(boxes, scores, 0.5, max_det=0).shape == (0,)


def test_equal_scores_keep_input_order() -> None:
    boxes, scores = _f32(A, [20, 20, 30, 30], B), _f32(0.5, 0.5, 0.5)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1])


def test_degenerate_boxes_never_suppress() -> None:
    # Zero-area boxes give 0/0 = NaN, which compares False even against a negative threshold.
    boxes, scores = _f32([5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 0, 9]), _f32(0.9, 0.8, 0.7)
    np.testing.assert_array_equal(nms(boxes, scores, -1.0), [0, 1, 2])


@pytest.mark.parametrize("class_ids", [None, np.zeros(0, np.int64)])
def test_empty_input(class_ids: Optional[np.ndarray]) -> None:
    for boxes in (np.zeros((0, 4), np.float32), np.array([])):
        got = nms(boxes, np.zeros(0, np.float32), 0.5, class_ids)
        assert got.dtype == np.int64 and got.shape == (0,)


def test_float64_input_is_computed_in_float32() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    boxes64 = np.concatenate([xy, xy + rng.uniform(1, 30, (200, 2))], 1)
    scores64 = rng.random(200)
    expected = torchvision.ops.nms(_t(boxes64.astype(np.float32)), _t(scores64.astype(np.float32)), 0.5)
    np.testing.assert_array_equal(nms(boxes64, scores64, 0.5), expected.numpy())
    np.testing.assert_array_equal(nms(boxes64.tolist(), scores64.tolist(), 0.5), expected.numpy())


@pytest.mark.parametrize(
    ("boxes", "scores", "class_ids", "max_det", "message"),
    [
        (np.zeros((3, 5)), np.zeros(3), None, None, r"shape \(N, 4\)"),
        (np.zeros(4), np.zeros(1), None, None, r"shape \(N, 4\)"),
        (np.zeros((3, 4)), np.zeros(2), None, None, "scores must have shape"),
        (np.zeros((3, 4)), np.zeros((3, 1)), None, None, "scores must have shape"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(2, np.int64), None, "class_ids must have shape"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(3), None, "integers"),
        (np.full((1, 4), np.nan), np.zeros(1), None, None, "NaN or infinite"),
        (np.full((1, 4), np.inf), np.zeros(1), None, None, "NaN or infinite"),
        (np.zeros((1, 4)), np.full(1, np.nan), None, None, "scores contain NaN"),
        (np.zeros((1, 4)), np.zeros(1), None, -1, "max_det"),
        (np.zeros((1, 4)), np.zeros(1), None, 2.5, "max_det"),
    ],
)
def test_bad_input_raises_value_error(boxes: np.ndarray, scores: np.ndarray, class_ids: Optional[np.ndarray],
                                      max_det: Optional[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nms(boxes, scores, 0.5, class_ids, max_det=max_det)


# ---------------------------------------------------------------- per-class thresholds


def test_filter_by_class_threshold_is_strict_per_class() -> None:
    scores = np.array([0.3, 0.3, 0.5, 0.2, 0.9], np.float32)
    classes = np.array([0, 1, 1, 2, 2])
    mask = filter_by_class_threshold(scores, classes, np.array([0.25, 0.3, 0.95], np.float32))
    np.testing.assert_array_equal(mask, [True, False, True, False, False])
    assert filter_by_class_threshold(np.zeros(0), np.zeros(0, np.int64), np.ones(3)).shape == (0,)


@pytest.mark.parametrize(
    ("scores", "classes", "thresholds", "message"),
    [
        (np.zeros(2), np.zeros(3, np.int64), np.ones(3), "same shape|shape"),
        (np.zeros(2), np.array([0, 3]), np.ones(3), r"\[0, 3\)"),
        (np.zeros(2), np.array([0, -1]), np.ones(3), r"\[0, 3\)"),
        (np.zeros(2), np.array([0, 1]), np.ones((3, 1)), "1-D"),
    ],
)
def test_filter_by_class_threshold_rejects_bad_input(scores: np.ndarray, classes: np.ndarray,
                                                     thresholds: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        filter_by_class_threshold(scores, classes, thresholds)


# ---------------------------------------------------------------- runtime contract


def test_module_imports_without_torch() -> None:
    code = "import sys, agent.inference.postprocess.nms; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
