"""Every reader yields ground truth and predictions that give the same 12 COCO numbers as the
equivalent COCO JSON, and every installed engine gives the same numbers (to 1e-9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_helpers import coco_gt_dict, coco_results, random_case, write_coco, write_voc, write_yolo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.evaluate.coco import STAT_NAMES, available_engines, evaluate_coco
from agent.evaluate.datasets import load_ground_truth, load_predictions
from agent.evaluate.structures import ReadOptions

ENGINES = available_engines()


def stats(gt, preds, engine="auto"):
    result = evaluate_coco(gt, preds, engine)
    return np.asarray([result.stats[k] for k in STAT_NAMES]), result


def coco_stats(tmp_path, case, engine="auto"):
    gt_path, pred_path = write_coco(case, tmp_path / "coco")
    gt = load_ground_truth(gt_path)
    return stats(gt, load_predictions(pred_path, gt), engine)[0]


def test_at_least_two_engines_are_installed():
    # The agreement tests below are only meaningful with more than one engine.
    assert {"faster-coco-eval", "pycocotools"} <= set(ENGINES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_yolo_ground_truth_and_predictions_match_coco_json(tmp_path, seed):
    case = random_case(seed)
    root, pred_dir = write_yolo(case, tmp_path / "yolo")
    gt = load_ground_truth(root)
    assert gt.format == "yolo" and gt.ann_ids.size == sum(len(im.objects) for im in case.images)
    from_yolo = stats(gt, load_predictions(pred_dir, gt))[0]
    reference = coco_stats(tmp_path, case)
    assert from_yolo[0] > 0.05  # a real case, not all zeros
    np.testing.assert_allclose(from_yolo, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_voc_xml_ground_truth_matches_coco_json_including_difficult(tmp_path, seed):
    case = random_case(seed, integer=True, difficult=0.2)
    folder = write_voc(case, tmp_path / "voc")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(case.names))
    gt = load_ground_truth(folder, options=ReadOptions(names=str(names)))
    assert (
        gt.format == "voc"
        and gt.plus_one
        and gt.iscrowd.sum() == sum(o.difficult for im in case.images for o in im.objects) > 0
    )
    _, pred_path = write_coco(case, tmp_path / "coco")
    from_voc = stats(gt, load_predictions(pred_path, gt))[0]
    np.testing.assert_array_equal(from_voc, coco_stats(tmp_path, case))


def test_predictions_keyed_by_file_stem_equal_predictions_keyed_by_id(tmp_path):
    case = random_case(6)
    gt_path, pred_path = write_coco(case, tmp_path)
    by_stem = tmp_path / "by_stem.json"
    by_stem.write_text(json.dumps(coco_results(case, image_key="stem")))
    gt = load_ground_truth(gt_path)
    a = load_predictions(pred_path, gt)
    b = load_predictions(by_stem, gt)
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    np.testing.assert_array_equal(stats(gt, a)[0], stats(gt, b)[0])


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_engines_agree_to_1e9_with_crowd_regions(tmp_path, seed):
    case = random_case(seed, images=20, classes=6, difficult=0.1)  # difficult -> iscrowd in COCO JSON
    gt_path, pred_path = write_coco(case, tmp_path)
    gt = load_ground_truth(gt_path)
    preds = load_predictions(pred_path, gt)
    results = {e: stats(gt, preds, e) for e in ENGINES}
    ref_stats, ref = results[ENGINES[-1]]
    for engine, (values, result) in results.items():
        assert result.engine == engine
        np.testing.assert_allclose(values, ref_stats, rtol=0, atol=1e-9)
        for cid in gt.category_ids:
            a, b = result.per_class[cid], ref.per_class[cid]
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-9)


def test_engines_agree_on_an_empty_prediction_set(tmp_path):
    case = random_case(10)
    for im in case.images:
        im.dets = []
    gt_path, pred_path = write_coco(case, tmp_path)
    gt = load_ground_truth(gt_path)
    preds = load_predictions(pred_path, gt)
    assert len(preds) == 0
    for engine in ENGINES:
        values = stats(gt, preds, engine)[0]
        assert values.max() <= 0 and (values == 0).any(), engine


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), images=st.integers(1, 6), classes=st.integers(1, 3))
def test_property_yolo_voc_and_coco_json_agree(tmp_path_factory, seed, images, classes):
    tmp = tmp_path_factory.mktemp("case")
    case = random_case(seed, images=images, classes=classes, integer=True, max_objects=4)
    reference = coco_stats(tmp, case)
    root, pred_dir = write_yolo(case, tmp / "yolo")
    gt = load_ground_truth(root)
    np.testing.assert_allclose(stats(gt, load_predictions(pred_dir, gt))[0], reference, rtol=0, atol=1e-12)
    names = tmp / "names.txt"
    names.write_text("\n".join(case.names))
    gt_voc = load_ground_truth(write_voc(case, tmp / "voc"), options=ReadOptions(names=str(names)))
    np.testing.assert_array_equal(
        stats(gt_voc, load_predictions(tmp / "coco" / "pred.json", gt_voc))[0], reference
    )
    gt_dict = coco_gt_dict(case)
    assert gt_voc.ann_ids.size == len(gt_dict["annotations"])
