"""The published numbers of well-known metric toolkits, reproduced (../shared/conformance).

Folders: cocoapi + faster_coco_eval (COCO API demo, bbox; the segm half needs mask IoU,
which a box evaluator does not do), review_object_detection_metrics (cases A-D),
Object-Detection-Metrics and Cartucho-mAP (VOC style). COCO numbers run through every
installed engine, VOC numbers through voc.py.
"""

from __future__ import annotations

import json
import logging

import pytest
from eval_helpers import CONFORMANCE, arrays_case, read_text_boxes

from agent.errors import DataError
from agent.evaluate.coco import STAT_NAMES, available_engines, evaluate_coco
from agent.evaluate.datasets import load_ground_truth, load_predictions
from agent.evaluate.runner import EvalConfig, evaluate_files
from agent.evaluate.structures import ReadOptions
from agent.evaluate.voc import evaluate_voc

ENGINES = available_engines()
REVIEW = CONFORMANCE / "review_object_detection_metrics"

# cocoapi/EXPECTED.md: pycocotools 2.0.11 full precision (published to 3 decimals).
COCOAPI_BBOX = [
    0.5045806987249628,
    0.6969727247299577,
    0.5729816669904824,
    0.5856257209410443,
    0.5193996948036719,
    0.5013978986347466,
    0.38681277964578054,
    0.5936795762842003,
    0.595352982877607,
    0.6398109626113442,
    0.5664205978994309,
    0.5642905982905982,
]
COCOAPI_PUBLISHED = [0.505, 0.697, 0.573, 0.586, 0.519, 0.501, 0.387, 0.594, 0.595, 0.640, 0.566, 0.564]
# review_object_detection_metrics/EXPECTED.md case A (published to 6 decimals, tests/test_eval_coco.py).
CASE_A = [
    0.5036473243630208,
    0.6969727247299577,
    0.5716670593726122,
    0.593252103002719,
    0.5579906676111427,
    0.48936321019618756,
    0.38681277964578054,
    0.5936795762842003,
    0.595352982877607,
    0.6547641893777741,
    0.6031300236406619,
    0.5537444355958507,
]


def coco_numbers(gt_path, pred_path, engine, **options):
    opts = ReadOptions(**options)
    gt = load_ground_truth(gt_path, options=opts)
    result = evaluate_coco(gt, load_predictions(pred_path, gt, options=opts), engine)
    return [result.stats[k] for k in STAT_NAMES]


@pytest.mark.parametrize("engine", ENGINES)
def test_cocoapi_demo_bbox(engine):
    got = coco_numbers(
        CONFORMANCE / "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json",
        CONFORMANCE / "cocoapi/results/instances_val2014_fakebbox100_results.json",
        engine,
    )
    assert got == pytest.approx(COCOAPI_BBOX, abs=1e-12)
    assert [round(v, 3) for v in got] == COCOAPI_PUBLISHED


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dets", ["cocoapi_results.json", "dets/sampled_bbox_results.json"])
def test_review_case_a_coco(engine, dets):
    # The same detections as a plain results list and as a COCO-style dict with scores.
    got = coco_numbers(
        REVIEW / "tests/test_coco_eval/gts/sampled_gts_bbox_area.json",
        REVIEW / "tests/test_coco_eval" / dets,
        engine,
    )
    assert got == pytest.approx(CASE_A, abs=1e-12)
    assert got == pytest.approx(
        [
            0.503647,
            0.696973,
            0.571667,
            0.593252,
            0.557991,
            0.489363,
            0.386813,
            0.593680,
            0.595353,
            0.654764,
            0.603130,
            0.553744,
        ],
        abs=1e-6,
    )


# The toy example's detections overhang their images by a few pixels (2 of 12): kept as given,
# as pycocotools takes them.
KEEP = {"outside": "keep"}


def _case_d_files(tmp_path):
    dets = json.loads((REVIEW / "toyexample/dets_coco_format/coco_dets.json").read_text())["annotations"]
    pred = tmp_path / "dets.json"
    pred.write_text(
        json.dumps([{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets])
    )
    return REVIEW / "toyexample/gts_coco_format/toy_example_coco.JSON", pred


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "hotcoco"])
def test_review_case_d_annotation_id_zero_as_pycocotools(tmp_path, engine):
    got = coco_numbers(*_case_d_files(tmp_path), engine, **KEEP)
    assert got[:3] == pytest.approx([0.4952168788307403, 0.7594884488448845, 0.3962871287128712], abs=1e-12)
    assert got[6:9] == pytest.approx([0.475, 0.5833333333333334, 0.5833333333333334], abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_review_case_d_renumbered_ids_in_every_engine(tmp_path, engine):
    got = coco_numbers(*_case_d_files(tmp_path), engine, annotation_ids="renumber", **KEEP)
    assert got[:3] == pytest.approx([0.5979231494578029, 0.8902640264026401, 0.5092409240924093], abs=1e-12)
    assert got[5] == pytest.approx(0.5979231494578029, abs=1e-12) and got[3] == got[4] == -1
    assert got[8] == pytest.approx(0.6583333333333334, abs=1e-12)


def test_annotation_id_zero_auto_engine_avoids_hotcoco_and_forcing_it_fails(tmp_path, caplog):
    gt_path, pred = _case_d_files(tmp_path)
    gt = load_ground_truth(gt_path)
    preds = load_predictions(pred, gt, options=ReadOptions(**KEEP))
    with caplog.at_level(logging.WARNING):
        result = evaluate_coco(gt, preds, "auto")
    assert result.engine != "hotcoco" and result.stats["AP"] == pytest.approx(0.4952168788307403, abs=1e-12)
    if "hotcoco" in ENGINES:
        assert "id 0" in caplog.text
        with pytest.raises(
            DataError, match=r"annotations\[0\]: annotation id 0: .*--annotation-ids renumber"
        ):
            evaluate_coco(gt, preds, "hotcoco")


def _odm_case(folder_gt, folder_det):
    gt_rows = read_text_boxes(folder_gt, detections=False, xywh=True)
    det_rows = read_text_boxes(folder_det, detections=True, xywh=True)
    names = sorted({r[1] for r in gt_rows})
    return arrays_case(gt_rows, det_rows, names, 7)


@pytest.mark.parametrize("folder", ["Object-Detection-Metrics", "review_object_detection_metrics"])
@pytest.mark.parametrize(
    "iou,ap11,ap_all",
    [
        (0.10, 0.3333333333, 0.3371980676),
        (0.30, 0.2683982683982684, 0.24568668046928915),
        (0.50, 0.0303030303, 0.0222222222),
        (0.75, 0.0, 0.0),
    ],
)
def test_padilla_voc_case_with_plus_one(folder, iou, ap11, ap_all):
    base = CONFORMANCE / folder
    if folder == "Object-Detection-Metrics":
        gt, preds = _odm_case(base / "groundtruths", base / "detections")
    else:
        gt, preds = _odm_case(base / "tests/test_case_1/gts", base / "tests/test_case_1/dets")
    assert evaluate_voc(gt, preds, "voc07", iou, plus_one=True).mean_ap == pytest.approx(ap11, abs=1e-10)
    assert evaluate_voc(gt, preds, "voc12", iou, plus_one=True).mean_ap == pytest.approx(ap_all, abs=1e-10)


def test_padilla_case_needs_plus_one_and_file_order_for_ties():
    base = CONFORMANCE / "Object-Detection-Metrics"
    gt, preds = _odm_case(base / "groundtruths", base / "detections")
    assert evaluate_voc(gt, preds, "voc12", 0.3, plus_one=False).mean_ap == pytest.approx(
        0.2253968254, abs=1e-10
    )
    assert evaluate_voc(gt, preds, "voc12", 0.3, plus_one=True).mean_ap == 356 / 1449
    # Reading the files in reverse order flips the two .95 detections: the published number needs file order.
    flipped = preds.select(preds.scores > -1)
    order = list(range(len(flipped)))[::-1]
    for name in ("image_ids", "category_ids", "boxes", "scores"):
        setattr(flipped, name, getattr(flipped, name)[order])
    assert evaluate_voc(gt, flipped, "voc12", 0.3, plus_one=True).mean_ap == pytest.approx(
        0.2234644582, abs=1e-10
    )


@pytest.mark.parametrize(
    "iou,ap11,ap_all",
    [(0.5, 0.8863636363636366, 0.8958333333333334), (0.75, 0.4924242424242424, 0.5097222222222222)],
)
def test_review_case_c_voc_xml_reader_end_to_end(tmp_path, iou, ap11, ap_all):
    # Case C: real VOC XML files through the reader; detections as a COCO results list keyed by stem.
    dets = []
    for f in sorted((REVIEW / "toyexample/dets_classname_abs_xyx2y2").glob("*.txt")):
        for line in f.read_text().splitlines():
            _, score, x1, y1, x2, y2 = line.split()
            dets.append(
                {
                    "image_id": f.stem,
                    "category_id": 0,
                    "bbox": [float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)],
                    "score": float(score),
                }
            )
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(dets))
    gt_dir = REVIEW / "toyexample/gts_vocpascal_format"
    for metric, expected in (("voc07", ap11), ("voc12", ap_all)):
        result = evaluate_files(
            gt_dir, pred, options=ReadOptions(**KEEP), config=EvalConfig(metric=metric, iou=iou)
        )
        assert result.gt.format == "voc" and result.gt.names == ["cat"] and result.voc.plus_one
        assert result.voc.mean_ap == pytest.approx(expected, abs=1e-12)
        assert result.voc.n_gt[0] == 12


CARTUCHO_AP = {
    "backpack": 0.22727272727272724,
    "bed": 0.859375,
    "book": 0.17523056653491434,
    "chair": 0.5384346220032398,
    "cup": 0.42500329735623854,
    "tincan": 0.0,
    "doll": 0.0,
    "tvmonitor": 0.6325,
    "pillow": 0.13012345679012347,
}


def _cartucho():
    base = CONFORMANCE / "Cartucho-mAP/input"
    gt_rows = read_text_boxes(base / "ground-truth", detections=False, xywh=False)
    det_rows = read_text_boxes(base / "detection-results", detections=True, xywh=False)
    assert {f.name for f in (base / "ground-truth").glob("*.txt")} == {
        f.name for f in (base / "detection-results").glob("*.txt")
    }  # same images, same sorted order
    names = sorted({r[1] for r in gt_rows if not r[4]})  # classes with a non-difficult object: 30
    assert len(names) == 30 and len(gt_rows) == 686
    # Detections of classes absent from the ground truth are ignored by this tool (arrays_case drops them).
    return arrays_case(gt_rows, det_rows, names, len(list((base / "ground-truth").glob("*.txt"))))


def test_cartucho_map_and_per_class():
    gt, preds = _cartucho()
    result = evaluate_voc(gt, preds, "voc12", 0.5, plus_one=True)
    assert result.mean_ap == pytest.approx(0.31047718500906324, abs=1e-12)
    by_name = {gt.names[c]: ap for c, ap in result.per_class.items()}
    for name, ap in CARTUCHO_AP.items():
        assert by_name[name] == pytest.approx(ap, abs=1e-12), name
    assert evaluate_voc(gt, preds, "voc12", 0.5, plus_one=False).mean_ap == pytest.approx(
        0.31029685105846394, abs=1e-12
    )
    assert evaluate_voc(gt, preds, "voc07", 0.5, plus_one=True).mean_ap == pytest.approx(
        0.31696509585696503, abs=1e-12
    )
