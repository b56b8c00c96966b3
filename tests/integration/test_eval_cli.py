"""``detection-agent eval`` as users run it: a subprocess, files in and out, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SHARED = Path("../shared")
CONF = SHARED / "conformance"
COCO_GT = CONF / "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json"
COCO_DT = CONF / "cocoapi/results/instances_val2014_fakebbox100_results.json"
CFG = SHARED / "models/yolov3-tiny-coco/yolov3-tiny.cfg"
VAL128 = SHARED / "data/coco-val128"


def agent(*args, rc=None):
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if rc is not None:
        assert proc.returncode == rc, proc.stderr
    return proc


def test_coco_files_reproduce_the_cocoapi_demo(tmp_path):
    out = tmp_path / "r.json"
    proc = agent("eval", "--gt", COCO_GT, "--pred", COCO_DT, "--json", out, "--csv", tmp_path / "r.csv", rc=0)
    data = json.loads(out.read_text())
    assert data["stats"]["AP"] == pytest.approx(0.5045806987249628, abs=1e-12)
    assert data["stats"]["ARl"] == pytest.approx(0.5642905982905982, abs=1e-12)
    assert "AP      0.5046" in proc.stdout and "per class" in proc.stdout
    assert "Average Precision" not in proc.stdout  # no engine chatter
    assert (tmp_path / "r.csv").read_text().startswith("class,objects,predictions,AP,AP50\n")


def test_voc_xml_against_results_keyed_by_file_stem(tmp_path):
    base = CONF / "review_object_detection_metrics/toyexample"
    dets = []
    for f in sorted((base / "dets_classname_abs_xyx2y2").glob("*.txt")):
        for line in f.read_text().splitlines():
            _, score, x1, y1, x2, y2 = line.split()
            dets.append(
                {
                    "image_id": f.stem,
                    "category_id": 0,
                    "score": float(score),
                    "bbox": [float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)],
                }
            )
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(dets))
    voc07 = ["eval", "--gt", base / "gts_vocpascal_format", "--pred", pred,
             "--metric", "voc07", "--iou", "0.5"]
    proc = agent(*voc07, rc=2)
    assert proc.stderr.startswith(f"error: {pred}: [") and "--outside-boxes keep|clip" in proc.stderr
    out = tmp_path / "voc.json"
    agent(*voc07, "--outside-boxes", "keep", "--json", out, rc=0)
    data = json.loads(out.read_text())
    assert (data["metric"], data["iou"]) == ("voc07", 0.5)
    assert data["mAP"] == pytest.approx(0.8863636363636366, abs=1e-12) and data["plus_one"] is True


def test_bad_input_exits_2_with_one_error_line(tmp_path):
    bad = json.loads(COCO_GT.read_text())
    bad["annotations"][17]["bbox"] = [1, 2, 3]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(bad))
    proc = agent("eval", "--gt", gt, "--pred", COCO_DT, rc=2)
    assert proc.stderr.strip() == (
        f"error: {gt}: annotations[17]: 'bbox' must be a list of 4 numbers [x, y, w, h], got [1, 2, 3]"
    )
    assert proc.stdout == ""
    assert (
        agent("eval", "--gt", gt, rc=2).stderr.strip()
        == "error: eval: give --gt GT --pred PRED, or --model MODEL --data DATA"
    )
    proc = agent("eval", "--gt", COCO_GT, "--pred", COCO_DT, "--iou", "0.5", rc=2)
    assert "COCO always uses 0.50:0.05:0.95" in proc.stderr
    assert (
        agent("eval", "--gt", tmp_path / "nope.json", "--pred", COCO_DT, rc=2).stderr.strip()
        == f"error: {tmp_path / 'nope.json'}: no such file or folder"
    )


def test_synthetic_yolo_set_with_perfect_predictions(tmp_path):
    data = tmp_path / "shapes"
    agent("make-dataset", "shapes", "--out", data, "--train", "0", "--val", "6", "--imgsz", "128", rc=0)
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in (data / "labels" / "val").glob("*.txt"):
        lines = [line + " 0.9" for line in label.read_text().splitlines() if line.strip()]
        if lines:
            (pred / label.name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    agent("eval", "--gt", data / "data.yaml", "--pred", pred, "--json", out, rc=0)
    result = json.loads(out.read_text())
    assert result["stats"]["AP"] == pytest.approx(1.0, abs=1e-9)  # labels as predictions: perfect
    assert result["counts"]["images"] == 6 and set(result["per_class"]) == {"circle", "square", "triangle"}


def test_model_over_coco_val128_with_darknet_yolov3_tiny(tmp_path):
    out = tmp_path / "m.json"
    proc = agent(
        "eval",
        "--model",
        CFG,
        "--data",
        VAL128,
        "--class-match",
        "index",
        "--backend",
        "opencv",  # OpenCV's darknet importer: the path whose 0.2 score floor must be reported
        "--json",
        out,
        "--plots",
        tmp_path / "plots",
        "--quiet",
        rc=0,
    )
    data = json.loads(out.read_text())
    # yolov3-tiny is weak (published COCO val2017: AP 0.096, AP50 0.202); a low but real score.
    assert 0.05 < data["stats"]["AP"] < 0.25 and 0.1 < data["stats"]["AP50"] < 0.35
    assert data["counts"]["images"] == 128 and data["counts"]["objects"] == 898
    assert set(data["latency_ms"]) == {"read", "preprocess", "inference", "postprocess", "total"}
    assert data["latency_ms"]["inference"] > 0 and data["conf"] == 0.001 and data["nms_iou"] == 0.6
    assert "128/128 images" in proc.stderr and "motorbike->motorcycle" in proc.stderr
    assert "acts as 0.2" in proc.stderr  # the OpenCV darknet caveat is said, not hidden
    assert (tmp_path / "plots" / "pr_curves.png").stat().st_size > 10000
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_model_compare_prints_the_difference(tmp_path):
    out = tmp_path / "c.json"
    proc = agent(
        "eval",
        "--model",
        CFG,
        "--compare",
        CFG,
        "--data",
        VAL128,
        "--class-match",
        "index",
        "--limit",
        "6",
        "--quiet",
        "--json",
        out,
        rc=0,
    )
    data = json.loads(out.read_text())
    assert (
        data["models"]["a"]["model"] == data["models"]["b"]["model"] == str(CFG) and data["metric"] == "coco"
    )
    assert data["models"]["a"]["stats"] == data["models"]["b"]["stats"]
    assert all(v == 0 for v in data["difference"]["stats"].values())
    assert "comparison:" in proc.stdout and "+0.0000" in proc.stdout
    names = agent("eval", "--model", CFG, "--data", VAL128, "--limit", "2", rc=2)
    assert "6 of the model's 80 classes are not in the ground truth" in names.stderr


def test_the_evaluator_never_imports_torch_or_ultralytics():
    # The runtime path must fit a Jetson's shared memory: no torch, no ultralytics, even with --model.
    code = (
        "import sys\n"
        "import agent.cli.evaluate\n"
        "from agent.evaluate import report, run_model, runner\n"
        "from agent.evaluate.runner import evaluate_files\n"
        f"evaluate_files({str(COCO_GT)!r}, {str(COCO_DT)!r})\n"
        "import agent.inference.detector, agent.inference.backends.opencv\n"
        "print(sorted(m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
