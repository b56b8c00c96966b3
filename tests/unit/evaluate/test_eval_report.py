"""Reports (JSON schema, CSV, tables, comparison) and the model-run helpers that need no model."""

from __future__ import annotations

import csv
import json
import logging

import pytest
from eval_helpers import random_case, write_coco

from agent.errors import DataError
from agent.evaluate.coco import STAT_NAMES
from agent.evaluate.report import compare_json, compare_text, per_class_text, summary_text, to_json, write_csv
from agent.evaluate.run_model import class_table, limit_images
from agent.evaluate.runner import EvalConfig, evaluate_files


@pytest.fixture()
def files(tmp_path):
    return write_coco(random_case(21, images=8, classes=3), tmp_path)


def test_coco_json_has_the_documented_keys(files):
    data = to_json(evaluate_files(*files))
    assert data["metric"] == "coco" and data["engine"] in ("hotcoco", "faster-coco-eval", "pycocotools")
    assert list(data["stats"]) == list(STAT_NAMES)
    assert set(data["per_class"]) == {"c0", "c1", "c2"}
    assert all(isinstance(v, float) for v in data["per_class"].values())
    json.dumps(data, allow_nan=False)  # plain JSON, no NaN


def test_voc_json_csv_and_tables(files, tmp_path):
    result = evaluate_files(*files, config=EvalConfig(metric="voc07", iou=0.6, confusion=True))
    data = to_json(result)
    assert (data["metric"], data["iou"]) == ("voc07", 0.6)
    assert data["mAP"] == pytest.approx(sum(data["per_class"].values()) / 3)
    assert len(data["confusion_matrix"]["matrix"]) == 4
    out = tmp_path / "table.csv"
    write_csv(str(out), result)
    rows = list(csv.DictReader(out.open()))
    assert [r["class"] for r in rows] == ["c0", "c1", "c2"]
    assert float(rows[1]["AP"]) == pytest.approx(data["per_class"]["c1"])
    assert "VOC2007 11-point" in summary_text(result) and "mAP" in summary_text(result)
    assert "F1" in per_class_text(result)


def test_comparison_of_two_evaluations(files):
    a = evaluate_files(*files)
    b = evaluate_files(*files, config=EvalConfig(engine="pycocotools"))
    data = compare_json(a, b, ["one", "two"])
    assert (data["models"]["a"]["model"], data["models"]["b"]["model"]) == ("one", "two")
    assert all(abs(v) < 1e-12 for v in data["difference"]["stats"].values())
    assert "+0.0000" in compare_text(a, b, ["one", "two"])


class FakeGT:
    category_ids = [1, 2, 3]
    names = ["person", "bicycle", "car"]
    source = "gt.json"

    def name_to_category(self):
        return dict(zip(self.names, self.category_ids))


def test_class_table_by_name_by_index_and_unknown(caplog):
    gt = FakeGT()
    assert class_table(["car", "person"], gt, "name", False).tolist() == [3, 1]
    with pytest.raises(
        DataError,
        match=r"1 of the model's 3 classes are not in the ground truth .*motorbike.*--class-match index",
    ):
        class_table(["person", "motorbike", "car"], gt, "name", False)
    assert class_table(["person", "motorbike", "car", "dog"], gt, "name", True).tolist() == [1, -1, 3, -1]
    with caplog.at_level(logging.WARNING):
        assert class_table(["person", "motorbike", "car"], gt, "index", False).tolist() == [1, 2, 3]
    assert "motorbike->bicycle" in caplog.text


def test_limit_images_keeps_only_their_annotations(files):
    from agent.evaluate.datasets import load_ground_truth

    gt = load_ground_truth(files[0])
    small = limit_images(gt, 3)
    assert small.num_images == 3 and set(small.ann_image_ids.tolist()) <= set(gt.image_ids[:3].tolist())
    assert small.ann_ids.size == sum(int((gt.ann_image_ids == i).sum()) for i in gt.image_ids[:3])
    assert limit_images(gt, None) is gt
