"""``run``, ``detect``, ``eval --model`` and ``bench`` build their Detector the same way
(``build_detector``), so for one model and one config they find the same boxes.

The config deliberately departs from the model's own metadata (``resize_mode: resize``
where the model says letterbox, a warm-up): a path that ignored it would box differently.
Real ONNX model, real photos from ../shared/data/coco128, a real broker for ``run``.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mosquitto import Subscriber, wait

from agent.bench.pipeline import CountingSink, pipeline_fps
from agent.config import loader as config_loader
from agent.evaluate.datasets import load_ground_truth
from agent.evaluate.run_model import limit_images, run_model
from agent.inference.detector import DetectorSettings, build_detector
from agent.runtime.pipeline import FrameResult

MODEL = Path("models/shapes-yolov3-tiny.onnx")
COCO = Path("../shared/data/coco128")
IMAGES = 5
CONF, IOU, MAX_DET = 0.02, 0.45, 100  # a shapes model on photos: a low threshold so there are boxes

pytestmark = pytest.mark.skipif(not (MODEL.exists() and COCO.exists()), reason="needs the model and coco128")


def rounded(boxes, scores):
    """As the wire has them (``Detections.to_list``): boxes to 0.1 px, scores to 1e-4, sorted."""
    rows = [(*(round(float(v), 1) for v in b), round(float(s), 4)) for b, s in zip(boxes, scores)]
    return sorted(rows)


def same(a, b):
    """Equal row for row, allowing one rounding step (eval's xywh float64 round trip)."""
    if len(a) != len(b):
        return False
    return all(np.allclose(x, y, atol=0.11) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The first photos of coco128, by name (eval's order), linked into a folder for run and bench."""
    folder = tmp_path_factory.mktemp("photos")
    gt = limit_images(load_ground_truth(COCO), IMAGES)
    for path in gt.image_paths:
        (folder / Path(path).name).symlink_to(Path(path).resolve())
    return folder, gt


def write_config(tmp_path, broker, source):
    cfg = {
        "device": {"id": "box"},
        "cameras": [{"name": "cam", "source": str(source)}],
        "model": {"path": str(MODEL), "resize_mode": "resize", "warmup_runs": 2, "threads": 1},
        "inference": {"conf_threshold": CONF, "iou_threshold": IOU, "max_detections": MAX_DET},
        "mqtt": {"host": broker.host, "port": broker.port, "stats_interval": 3600, "reconnect_min": 0.05},
        "spool": {"path": str(tmp_path / "spool.db")},
        "service": {"state_dir": str(tmp_path / "state")},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Recorder(CountingSink):
    def __init__(self) -> None:
        super().__init__()
        self.results = []

    def handle(self, result: FrameResult) -> None:
        super().handle(result)
        self.results.append(result)


def test_run_detect_eval_and_bench_find_the_same_boxes(broker, tmp_path, photos):
    folder, gt = photos
    config = write_config(tmp_path, broker, folder)
    settings = DetectorSettings.from_config(config_loader.load(str(config)))
    names = [Path(p).name for p in gt.image_paths]

    # run: the daemon, over MQTT
    sub = Subscriber(broker, ["detection-agent/box/cam/detections"])
    try:
        agent = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                               capture_output=True, text=True, timeout=120)
        assert agent.returncode == 0, agent.stderr
        wait(lambda: len(sub.payloads("/detections")) >= IMAGES, 10, "a message per photo")
        messages = [json.loads(p) for p in sub.payloads("/detections")]
    finally:
        sub.close()
    by_run = [rounded([d["box"] for d in m["detections"]], [d["score"] for d in m["detections"]])
              for m in sorted(messages, key=lambda m: m["frame"])]

    # detect --config: the model side from the config, thresholds from the arguments
    out = tmp_path / "detect.json"
    detect = subprocess.run([sys.executable, "-m", "agent", "detect", "--model", str(MODEL),
                             "--config", str(config), "--conf", str(CONF), "--iou", str(IOU),
                             "--max-det", str(MAX_DET), "--json", str(out), "--quiet", str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert detect.returncode == 0, detect.stderr
    records = {Path(r["image"]).name: r for r in json.loads(out.read_text())}
    by_detect = [rounded([d["box"] for d in records[n]["detections"]],
                         [d["score"] for d in records[n]["detections"]]) for n in names]

    # eval --model --config: predictions (COCO xywh) turned back into corners
    run = run_model(str(MODEL), gt, "auto", CONF, IOU, MAX_DET, 1, "index", True, progress=False,
                    detector_settings=settings)
    preds = run.preds
    by_eval = []
    for image_id in gt.image_ids:
        keep = preds.image_ids == image_id
        xywh = preds.boxes[keep]
        by_eval.append(rounded(np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]), preds.scores[keep]))

    # bench --pipeline's pipeline, with the same settings
    sink = Recorder()
    pipeline_fps(MODEL, folder, settings=settings, sink=sink)
    by_bench = [rounded(r.detections.xyxy, r.detections.scores)
                for r in sorted(sink.results, key=lambda r: r.frame.index)]

    assert sum(len(rows) for rows in by_run) > 0, "no boxes at all: the comparison would prove nothing"
    assert len(by_run) == len(by_detect) == len(by_eval) == len(by_bench) == IMAGES
    for k in range(IMAGES):
        assert by_run[k] == by_detect[k], names[k]
        assert by_run[k] == by_bench[k], names[k]
        assert same(by_run[k], by_eval[k]), names[k]

    # The configured resize mode matters: the model's own letterbox boxes differently.
    with build_detector(MODEL, DetectorSettings(threads=1, postprocess=settings.postprocess)) as plain:
        from agent.fileio import read_image

        (dets,) = plain([read_image(Path(gt.image_paths[0]))])
    assert rounded(dets.xyxy, dets.scores) != by_run[0]


def test_config_overrides_leave_the_backend_info_alone():
    settings = DetectorSettings(resize_mode="resize", threads=1)
    with build_detector(MODEL, settings) as detector:
        assert detector.info.resize_mode == "resize"
        assert detector.backend.info.resize_mode == "letterbox"  # the model's own, untouched
        with pytest.raises(Exception, match=r"cannot assign|frozen"):
            detector.info.resize_mode = "letterbox"  # ModelInfo is frozen: dataclasses.replace
