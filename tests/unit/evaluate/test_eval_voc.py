"""voc.py on hand-worked cases: AP interpolations, difficult objects, duplicates, +1 pixels, ties."""

from __future__ import annotations

import numpy as np
import pytest

from agent.evaluate.structures import GroundTruth, Predictions
from agent.evaluate.voc import confusion_matrix, evaluate_voc, match, voc_ap


def make(gt_rows, det_rows, classes=1, images=1):
    """gt_rows: (image, class, box, difficult); det_rows: (image, class, box, score); boxes x y w h."""
    gt = GroundTruth(
        "gt",
        "test",
        np.arange(images, dtype=np.int64),
        [f"{i}.jpg" for i in range(images)],
        np.full(images, 200.0),
        np.full(images, 200.0),
        list(range(classes)),
        [f"c{k}" for k in range(classes)],
        np.arange(1, len(gt_rows) + 1, dtype=np.int64),
        np.asarray([r[0] for r in gt_rows], np.int64),
        np.asarray([r[1] for r in gt_rows], np.int64),
        np.asarray([r[2] for r in gt_rows], float).reshape(-1, 4),
        np.ones(len(gt_rows)),
        np.asarray([r[3] for r in gt_rows], np.uint8),
    )
    preds = Predictions(
        "pred",
        np.asarray([r[0] for r in det_rows], np.int64),
        np.asarray([r[1] for r in det_rows], np.int64),
        np.asarray([r[2] for r in det_rows], float).reshape(-1, 4),
        np.asarray([r[3] for r in det_rows], float),
    )
    return gt, preds


A, B, C, D = [0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10], [60, 0, 10, 10]
FAR = [100, 100, 10, 10]
# Ranked: TP, duplicate FP, TP, FP, TP -> precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
BASE_GT = [(0, 0, A, 0), (0, 0, B, 0), (0, 0, C, 0)]
BASE_DETS = [(0, 0, A, 0.9), (0, 0, A, 0.8), (0, 0, B, 0.7), (0, 0, FAR, 0.6), (0, 0, C, 0.5)]


def test_all_point_and_11_point_worked_by_hand():
    gt, preds = make(BASE_GT, BASE_DETS)
    # all-point: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 (envelope) = 34/45
    assert evaluate_voc(gt, preds, "voc12").mean_ap == pytest.approx(34 / 45, abs=1e-15)
    # 11-point: r = 0..0.3 -> 1 (4 points), 0.4..0.6 -> 2/3 (3), 0.7..1.0 -> 3/5 (4)
    assert evaluate_voc(gt, preds, "voc07").mean_ap == pytest.approx((4 + 2 + 2.4) / 11, abs=1e-15)


def test_duplicate_detection_is_a_false_positive():
    gt, preds = make(BASE_GT, BASE_DETS)
    order, outcome = match(gt, preds, 0.5, plus_one=False)
    assert outcome[np.argsort(order)].tolist() == [1, 0, 1, 0, 1]


def test_difficult_object_is_ignored_both_ways():
    # A detection on a difficult object is neither TP nor FP, and the object does not count in recall.
    gt, preds = make([*BASE_GT, (0, 0, D, 1)], [(0, 0, D, 0.95), *BASE_DETS])
    result = evaluate_voc(gt, preds, "voc12")
    assert result.mean_ap == pytest.approx(34 / 45, abs=1e-15)
    assert result.n_gt[0] == 3
    _, outcome = match(gt, preds, 0.5, plus_one=False)
    assert -1 in outcome.tolist()
    # The same object not difficult: found first, 4 objects, so AP changes.
    gt2, preds2 = make([*BASE_GT, (0, 0, D, 0)], [(0, 0, D, 0.95), *BASE_DETS])
    assert evaluate_voc(gt2, preds2, "voc12").mean_ap != pytest.approx(34 / 45)


def test_plus_one_pixel_convention_changes_the_match():
    # x 0..2 vs 1..3: continuous IoU 2/6; with +1 pixels (3x3 boxes, 2x3 overlap) 6/12 = 0.5 >= 0.5.
    gt, preds = make([(0, 0, [0, 0, 2, 2], 0)], [(0, 0, [1, 0, 2, 2], 0.9)])
    assert evaluate_voc(gt, preds, "voc12", plus_one=True).mean_ap == 1.0
    assert evaluate_voc(gt, preds, "voc12", plus_one=False).mean_ap == 0.0
    gt.plus_one = True  # the ground truth's own default (VOC XML) applies when not given
    assert evaluate_voc(gt, preds, "voc12").mean_ap == 1.0


def test_equal_scores_keep_reading_order():
    gt, fp_first = make([(0, 0, A, 0)], [(0, 0, FAR, 0.5), (0, 0, A, 0.5)])
    _, tp_first = make([(0, 0, A, 0)], [(0, 0, A, 0.5), (0, 0, FAR, 0.5)])
    assert evaluate_voc(gt, fp_first, "voc12").mean_ap == 0.5
    assert evaluate_voc(gt, tp_first, "voc12").mean_ap == 1.0


def test_best_match_is_taken_even_if_already_matched():
    # Devkit rule: the detection's best-IoU object is already matched -> FP, even though another
    # object (IoU 0.6) is free.
    left, right = [0, 0, 10, 10], [3, 0, 10, 10]
    det = [1, 0, 10, 10]  # IoU 9/11 with left, 8/12 with right
    gt, preds = make([(0, 0, left, 0), (0, 0, right, 0)], [(0, 0, left, 0.9), (0, 0, det, 0.8)])
    _, outcome = match(gt, preds, 0.5, plus_one=False)
    assert outcome.tolist() == [1, 0]


def test_class_without_ground_truth_has_no_ap_and_stays_out_of_the_mean():
    gt, preds = make(BASE_GT, [*BASE_DETS, (0, 1, FAR, 0.9)], classes=2)
    result = evaluate_voc(gt, preds, "voc12")
    assert result.per_class == {0: pytest.approx(34 / 45), 1: None}
    assert result.mean_ap == pytest.approx(34 / 45)
    assert result.n_pred == {0: 5, 1: 1}


def test_precision_recall_f1_at_score_threshold():
    gt, preds = make(BASE_GT, BASE_DETS)
    p, r, f1 = evaluate_voc(gt, preds, "voc12", score_threshold=0.65).prf[0]
    assert (p, r, f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert evaluate_voc(gt, preds, "voc12", score_threshold=0.95).prf[0] == (0.0, 0.0, 0.0)


def test_voc_ap_formulas_directly():
    recall = np.array([0.5, 1.0])
    precision = np.array([1.0, 0.5])
    assert voc_ap(recall, precision, use_07=False) == 0.75
    assert voc_ap(recall, precision, use_07=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07=False) == 0.0


def test_confusion_matrix():
    gt, preds = make(
        [(0, 0, A, 0), (0, 1, B, 0), (0, 0, C, 0)],
        [(0, 1, A, 0.9), (0, 1, B, 0.8), (0, 0, FAR, 0.7), (0, 0, C, 0.1)],
        classes=2,
    )
    m = confusion_matrix(gt, preds, iou=0.5, score_threshold=0.25)
    # rows true (c0, c1, background), columns predicted
    assert m.tolist() == [[0, 1, 1], [0, 1, 0], [1, 0, 0]]
