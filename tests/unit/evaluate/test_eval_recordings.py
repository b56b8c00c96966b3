"""The agent's recordings (JSON lines of MQTT detections messages) as predictions."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from agent.errors import DataError
from agent.evaluate.coco import evaluate_coco
from agent.evaluate.datasets import load_ground_truth, load_predictions
from agent.evaluate.structures import ReadOptions

NAMES = ["circle", "square", "triangle"]


def ground_truth(tmp_path):
    # As make-video writes it: image ids = frame indices, category ids = class ids.
    images = [{"id": f, "file_name": f"frame{f:06d}", "width": 640, "height": 480} for f in range(4)]
    anns = [
        {"id": 1, "image_id": 0, "category_id": 0, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 60, 60], "area": 3600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [300, 200, 80, 70], "area": 5600, "iscrowd": 0},
    ]
    path = tmp_path / "truth.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": k, "name": n} for k, n in enumerate(NAMES)],
            }
        )
    )
    return load_ground_truth(path)


def message(frame, detections, camera="front", width=640, height=480, **extra):
    msg = {
        "schema": "detections/1",
        "device": "jetson-01",
        "camera": camera,
        "run": "r1",
        "seq": frame + 1,
        "frame": frame,
        "ts": 1700000000.0 + frame,
        "width": width,
        "height": height,
        "model": "m.onnx",
        "latency_ms": {"inference": 12.0},
        "detections": detections,
    }
    msg.update(extra)
    return json.dumps(msg)


def det(label, box, score=0.9, class_id=0):
    return {"label": label, "class_id": class_id, "score": score, "box": box}


def write(tmp_path, lines):
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recorded_messages_evaluate_as_predictions(tmp_path):
    gt = ground_truth(tmp_path)
    path = write(
        tmp_path,
        [
            message(0, [det("circle", [10, 10, 60, 50])]),
            message(1, [det("square", [100, 100, 160, 160], 0.8), det("circle", [400, 300, 450, 350], 0.3)]),
            "",
            message(2, [det("triangle", [300, 200, 380, 270], 0.7)]),
            message(3, []),
        ],
    )
    preds = load_predictions(path, gt)
    assert preds.image_ids.tolist() == [0, 1, 1, 2]
    assert preds.category_ids.tolist() == [0, 1, 0, 2]
    np.testing.assert_array_equal(preds.boxes[0], [10, 10, 50, 40])  # x1 y1 x2 y2 -> x y w h
    result = evaluate_coco(gt, preds)
    assert result.stats["AP50"] == pytest.approx(1.0) and result.stats["AP"] == pytest.approx(1.0)


def test_recording_errors_name_the_line(tmp_path):
    gt = ground_truth(tmp_path)
    cases = [
        # the same frame in another message (a second run over the video), not a redelivery
        ([message(0, []), message(0, [], seq=7)], r":2: frame 0 was already recorded at line 1"),
        (
            [message(0, []), message(0, [det("circle", [1, 1, 5, 5])])],
            r":2: seq 1 of jetson-01/front run r1 differs",
        ),
        (
            [message(0, []), message(1, [], width=1280, height=720)],
            r":2: frame 1 is 1280x720, but ground-truth image 1 is 640x480",
        ),
        ([message(0, [], schema="detections/2")], r":1: schema 'detections/2' is not 'detections/1'"),
        ([message(0, [det("hexagon", [1, 1, 5, 5])])], r":1: class 'hexagon' is not in the ground truth"),
        ([message(9, [det("circle", [1, 1, 5, 5])])], r":1: image frame 9 is not in the ground truth"),
        ([message(0, [{"label": "circle", "score": 0.5}])], r":1: a detection needs label, score and box"),
        ([message(0, [det("circle", [50, 50, 10, 10])])], r":1: predicted box .* has a negative width"),
        (["{not json"], r":1: invalid JSON"),
    ]
    for lines, message_re in cases:
        path = write(tmp_path, lines)
        with pytest.raises(DataError, match=re.escape(str(path)) + message_re):
            load_predictions(path, gt)


def test_several_cameras_need_a_choice(tmp_path):
    gt = ground_truth(tmp_path)
    path = write(
        tmp_path,
        [
            message(0, [det("circle", [10, 10, 60, 50])], camera="front"),
            message(0, [det("square", [1, 1, 9, 9])], camera="back"),
        ],
    )
    with pytest.raises(DataError, match=r"messages of 2 cameras \(back, front\).*--camera NAME"):
        load_predictions(path, gt)
    preds = load_predictions(path, gt, options=ReadOptions(camera="front"))
    assert preds.category_ids.tolist() == [0]
    with pytest.raises(DataError, match="no messages of camera 'side'"):
        load_predictions(path, gt, options=ReadOptions(camera="side"))


def test_several_recordings_read_as_one_with_redeliveries_once(tmp_path, caplog):
    # What two recorders of one shared subscription saved: the frames split between them, and
    # frame 1 in both (QoS 1 redelivery to the other member after a broker restart).
    gt = ground_truth(tmp_path)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    one = message(1, [det("square", [100, 100, 160, 160], 0.8)])
    first.write_text("\n".join([message(0, [det("circle", [10, 10, 60, 50])]), one]) + "\n")
    second.write_text("\n".join([one, message(2, [det("triangle", [300, 200, 380, 270], 0.7)]),
                                  one]) + "\n")
    with caplog.at_level("WARNING"):
        preds = load_predictions([first, second], gt)
    assert sorted(preds.image_ids.tolist()) == [0, 1, 2] and len(preds) == 3
    assert "2 message(s) received twice (QoS 1 redelivery) read once" in caplog.text
    assert evaluate_coco(gt, preds).stats["AP"] == pytest.approx(1.0)
    assert str(first) in preds.source and str(second) in preds.source
    # an error in the second file names that file and its line
    second.write_text(message(3, [det("hexagon", [1, 1, 5, 5])]) + "\n")
    with pytest.raises(DataError, match=re.escape(str(second)) + r":1: class 'hexagon'"):
        load_predictions([first, second], gt)
    second.write_text(message(0, [], seq=9) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{second}:1: frame 0 was already recorded at {first}:1")):
        load_predictions([first, second], gt)


def test_several_prediction_files_must_all_be_recordings(tmp_path):
    gt = ground_truth(tmp_path)
    rec = write(tmp_path, [message(0, [])])
    coco = tmp_path / "results.json"
    coco.write_text("[]")
    with pytest.raises(DataError, match=re.escape(str(coco)) + ": several prediction files .* recordings"):
        load_predictions([rec, coco], gt)
