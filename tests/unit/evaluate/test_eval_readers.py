"""Readers: what they accept, and the errors (FILE:LINE or FILE: element) for what they refuse."""

from __future__ import annotations

import json
import logging
import re

import cv2
import numpy as np
import pytest
from eval_helpers import coco_gt_dict, coco_results, random_case, write_coco, write_voc, write_yolo

from agent.errors import DataError
from agent.evaluate.datasets import detect_gt_format, detect_pred_format, load_ground_truth, load_predictions
from agent.evaluate.imagesize import image_size
from agent.evaluate.structures import ReadOptions


@pytest.fixture()
def coco_case(tmp_path):
    case = random_case(11, images=4, classes=3)
    gt_path, pred_path = write_coco(case, tmp_path)
    return case, gt_path, pred_path


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def edit_gt(case, tmp_path, fn):
    data = coco_gt_dict(case)
    fn(data)
    return write_json(tmp_path / "bad_gt.json", data)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda d: d["annotations"][2].update(bbox=[1, 2, 3]),
            r"annotations\[2\]: 'bbox' must be a list of 4 numbers",
        ),
        (
            lambda d: d["annotations"][1].update(category_id=99),
            r"annotations\[1\]: category_id 99 is not in 'categories'",
        ),
        (
            lambda d: d["annotations"][3].update(image_id=77),
            r"annotations\[3\]: image_id 77 is not in 'images'",
        ),
        (
            lambda d: d["annotations"][4].update(id=d["annotations"][0]["id"]),
            r"annotations\[4\]: id 1 is used twice \(pass --annotation-ids renumber",
        ),
        (lambda d: d["annotations"][0].pop("id"), r"annotations\[0\]: missing 'id'"),
        (
            lambda d: d["annotations"][1].update(bbox=[0, 0, 5000, 5]),
            r"annotations\[1\]: ground-truth box \[x, y, w, h\] = \[0, 0, 5000, 5\] lies outside "
            r"its \d+x\d+ image",
        ),
        (lambda d: d["images"][1].update(width=0), r"images\[1\]: width and height must be positive"),
        (lambda d: d["categories"][1].update(name="c0"), r"categories\[1\]: name 'c0' is used twice"),
        (lambda d: d.pop("categories"), r"'categories' must be a list \(missing\)"),
    ],
)
def test_coco_ground_truth_errors_name_the_element(coco_case, tmp_path, edit, message):
    case, _, _ = coco_case
    path = edit_gt(case, tmp_path, edit)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        load_ground_truth(path)


def test_empty_and_invalid_json_files(tmp_path, coco_case):
    _, gt_path, _ = coco_case
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=f"{re.escape(str(empty))}: file is empty"):
        load_ground_truth(empty)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"image_id": 1,\n "category_id": }\n]')
    gt = load_ground_truth(gt_path)
    with pytest.raises(DataError, match=f"{re.escape(str(broken))}:3: invalid JSON: Expecting value"):
        load_predictions(broken, gt)


def test_prediction_for_unknown_image_fails_or_is_left_out_with_a_count(coco_case, tmp_path, caplog):
    case, gt_path, _ = coco_case
    results = coco_results(case)
    results[5]["image_id"] = 999
    results[7]["image_id"] = 999
    path = write_json(tmp_path / "pred.json", results)
    gt = load_ground_truth(gt_path)
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: [5]: image 999 is not in the ground truth")
        + r".*2 predictions name unknown images \(pass --ignore-unknown-images",
    ):
        load_predictions(path, gt)
    with caplog.at_level(logging.WARNING):
        preds = load_predictions(path, gt, options=ReadOptions(ignore_unknown_images=True))
    assert len(preds) == len(results) - 2
    assert "left out 2 predictions of images not in the ground truth" in caplog.text


def test_prediction_of_unknown_category_fails(coco_case, tmp_path):
    case, gt_path, _ = coco_case
    results = coco_results(case)
    results[3]["category_id"] = 42
    path = write_json(tmp_path / "pred.json", results)
    with pytest.raises(
        DataError, match=re.escape(f"{path}: [3]: class category_id 42 is not in the ground truth")
    ):
        load_predictions(path, load_ground_truth(gt_path))
    preds = load_predictions(
        path, load_ground_truth(gt_path), options=ReadOptions(ignore_unknown_classes=True)
    )
    assert len(preds) == len(results) - 1 and 42 not in preds.category_ids


def test_prediction_outside_its_image_error_keep_or_clip(coco_case, tmp_path, caplog):
    case, gt_path, _ = coco_case
    results = coco_results(case)
    w = case.images[0].width
    results[0]["bbox"] = [w - 5.0, 0.0, 20.0, 5.0]  # 15 px past the right border
    path = write_json(tmp_path / "pred.json", results)
    gt = load_ground_truth(gt_path)
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{path}: [0]: predicted box [x, y, w, h] = [{w - 5}, 0, 20, 5] lies outside its {w}x"
        ),
    ):
        load_predictions(path, gt)
    with caplog.at_level(logging.WARNING):
        kept = load_predictions(path, gt, options=ReadOptions(outside="keep"))
        clipped = load_predictions(path, gt, options=ReadOptions(outside="clip"))
    assert kept.boxes[0].tolist() == [w - 5, 0, 20, 5]
    assert clipped.boxes[0].tolist() == [w - 5, 0, 5, 5]
    assert "kept 1 predicted boxes" in caplog.text and "clipped 1 predicted boxes" in caplog.text
    # Within the 1 px tolerance nothing is reported and nothing changes.
    results[0]["bbox"] = [w - 5.0, 0.0, 5.5, 5.0]
    assert load_predictions(write_json(path, results), gt).boxes[0].tolist() == [w - 5, 0, 5.5, 5]


def test_results_dict_with_annotations_and_mixed_ids_use_the_json_path(coco_case, tmp_path):
    case, gt_path, pred_path = coco_case
    gt = load_ground_truth(gt_path)
    reference = load_predictions(pred_path, gt)
    wrapped = write_json(tmp_path / "wrapped.json", {"annotations": coco_results(case)})
    mixed = coco_results(case)
    mixed[0]["image_id"] = case.images[0].stem  # a file stem, as ultralytics writes non-numeric names
    for path in (wrapped, write_json(tmp_path / "mixed.json", mixed)):
        got = load_predictions(path, gt)
        np.testing.assert_array_equal(got.image_ids, reference.image_ids)
        np.testing.assert_array_equal(got.boxes, reference.boxes)


def test_yolo_errors_name_file_and_line(tmp_path):
    case = random_case(12, images=3, classes=2)
    root, pred_dir = write_yolo(case, tmp_path / "d")
    label = root / "labels" / "val" / f"{case.images[0].stem}.txt"
    good = label.read_text()
    label.write_text(good + "1 0.5 0.5 0.1\n")
    n = good.count("\n") + 1
    with pytest.raises(
        DataError, match=re.escape(f"{label}:{n}: expected 5 values (class cx cy w h), got 4")
    ):
        load_ground_truth(root)
    label.write_text(good + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=re.escape(f"{label}:{n}: class 7 is out of range: 2 class names")):
        load_ground_truth(root)
    label.write_text(good + "0 0.5 0.5 x 0.1\n")
    with pytest.raises(DataError, match=re.escape(f"{label}:{n}: expected numbers")):
        load_ground_truth(root)
    label.write_text(good)
    orphan = root / "labels" / "val" / "nosuchimage.txt"
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=re.escape(f"{orphan}: label file has no image")):
        load_ground_truth(root)
    orphan.unlink()
    bad_pred = pred_dir / "nosuchimage.txt"
    bad_pred.write_text("0 0.5 0.5 0.1 0.1 0.9\n")
    with pytest.raises(
        DataError, match=re.escape(f"{bad_pred}:1: image 'nosuchimage' is not in the ground truth")
    ):
        load_predictions(pred_dir, load_ground_truth(root))


def test_yolo_layouts_names_and_sizes_file(tmp_path):
    case = random_case(13, images=3, classes=2)
    root, _ = write_yolo(case, tmp_path / "d")
    reference = load_ground_truth(root)
    assert reference.names == ["c0", "c1"] and reference.image_ids.tolist() == [1, 2, 3]
    assert reference.widths.tolist() == [im.width for im in case.images]
    # The images folder itself, a data YAML with an index map, and sizes from a file.
    same = load_ground_truth(root / "images" / "val")
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text(f"path: {root}\nval: images/val\nnames:\n  0: c0\n  1: c1\n")
    by_yaml = load_ground_truth(yaml_path)
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("".join(f"{im.stem}.png {im.width} {im.height}\n" for im in case.images))
    by_sizes = load_ground_truth(root, options=ReadOptions(sizes=str(sizes)))
    for other in (same, by_yaml, by_sizes):
        np.testing.assert_array_equal(other.boxes, reference.boxes)
        assert other.names == reference.names
    sizes.write_text(f"{case.images[0].stem}.png 10\n")
    with pytest.raises(DataError, match=re.escape(f"{sizes}:1: expected 'NAME WIDTH HEIGHT'")):
        load_ground_truth(root, options=ReadOptions(sizes=str(sizes)))
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"no class names found .* pass --names FILE"):
        load_ground_truth(root)


def test_voc_errors_carry_xml_lines(tmp_path):
    case = random_case(14, images=2, classes=2, integer=True)
    folder = write_voc(case, tmp_path / "voc")
    xml = folder / f"{case.images[1].stem}.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<xmin>", "<xmin>abc", 1) if "<xmin>" in text else text)
    if "<xmin>abc" in xml.read_text():
        with pytest.raises(DataError, match=re.escape(f"{xml}:") + r"\d+: <xmin> must be a number"):
            load_ground_truth(folder)
    xml.write_text(
        "<annotation>\n<size><width>10</width>\n<height>10</height></size>\n<object>\n</annotation>"
    )
    with pytest.raises(DataError, match=re.escape(f"{xml}:5: invalid XML: mismatched tag")):
        load_ground_truth(folder)
    xml.write_text(
        "<annotation><size><width>100</width><height>100</height></size>\n"
        "<object><name>zebra</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>"
    )
    names = tmp_path / "names.txt"
    names.write_text("c0\nc1\n")
    with pytest.raises(DataError, match=re.escape(f"{xml}:2: class 'zebra' is not in {names}")):
        load_ground_truth(folder, options=ReadOptions(names=str(names)))


def test_format_detection(tmp_path, coco_case):
    _, gt_path, pred_path = coco_case
    assert detect_gt_format(gt_path) == "coco" and detect_pred_format(pred_path) == "coco"
    case = random_case(15, images=2, integer=True)
    root, pred_dir = write_yolo(case, tmp_path / "y")
    assert detect_gt_format(root) == "yolo" and detect_pred_format(pred_dir) == "yolo"
    assert detect_gt_format(write_voc(case, tmp_path / "v")) == "voc"
    rec = tmp_path / "run.jsonl"
    rec.write_text("")
    assert detect_pred_format(rec) == "jsonl"
    with pytest.raises(DataError, match="no such file or folder"):
        detect_gt_format(tmp_path / "missing.json")


def test_image_size_from_headers_matches_decoding(tmp_path):
    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".jpg", ".png", ".bmp", ".webp"):
        path = tmp_path / f"a{suffix}"
        assert cv2.imwrite(str(path), image)
        assert image_size(path) == (53, 37), suffix


def test_jpeg_exif_rotation_swaps_width_and_height_like_opencv(tmp_path):
    path = tmp_path / "rotated.jpg"
    data = cv2.imencode(".jpg", np.zeros((30, 80, 3), np.uint8))[1].tobytes()
    # APP1 Exif segment, little-endian TIFF, one IFD entry: Orientation (0x0112) = 6 (rotate 90).
    tiff = (
        b"II*\x00\x08\x00\x00\x00"
        + b"\x01\x00"
        + b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00"
        + b"\x00" * 4
    )
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:])
    decoded = cv2.imread(str(path))
    assert (decoded.shape[1], decoded.shape[0]) == (30, 80)  # OpenCV applies the orientation
    assert image_size(path) == (30, 80)
