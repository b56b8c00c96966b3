"""Postprocess benchmark: decode + NMS on a YOLOv3-416-sized output.

YOLOv3 at 416x416 predicts 10,647 candidate boxes over 80 COCO classes. The tensor here is
synthetic but shaped like a real frame: a few dozen objects, each seen by a cluster of
overlapping candidates with high scores, and low-score background everywhere else. Two
thresholds: 0.25 (a deployed agent) and 0.001 (an mAP evaluation, thousands of survivors).

Peers, measured in the same process: ultralytics' ``non_max_suppression`` + ``scale_boxes``
(what ``yolo predict`` runs on the same layout) and torchvision's C++ ``batched_nms`` on the
same 1,000 boxes as this project's ``nms``. torch is imported only when peers are on.
"""

from __future__ import annotations

import functools
import logging
import platform
from typing import Callable, Dict, Tuple

import numpy as np

from agent.bench.timing import ratio, time_interleaved
from agent.inference.postprocess.nms import nms
from agent.inference.postprocess.postprocessor import Postprocessor, PostprocessSettings
from agent.inference.preprocess import fit_transform
from agent.types import ModelInfo

log = logging.getLogger(__name__)

INPUT = 416
CANDIDATES = 10647  # 3 anchors x (13^2 + 26^2 + 52^2)
CLASSES = 80


def synthetic_yolo_output(seed: int = 0, objects: int = 30) -> np.ndarray:
    """``[1, 4+80, 10647]`` (ultralytics layout): cx, cy, w, h, class scores."""
    rng = np.random.default_rng(seed)
    pred = np.empty((4 + CLASSES, CANDIDATES), np.float32)
    pred[0:2] = rng.uniform(0, INPUT, (2, CANDIDATES))
    pred[2:4] = rng.uniform(4, 120, (2, CANDIDATES))
    # Background: a per-candidate objectness spread over decades (1e-5..3e-2) times class
    # probabilities; about 5% of background candidates then pass an evaluation threshold of
    # 0.001, as with a real detector, and none passes a deployment threshold.
    objectness = 10.0 ** rng.uniform(-5.0, -1.5, CANDIDATES)
    class_probs = rng.dirichlet(np.full(CLASSES, 0.5), CANDIDATES).T
    pred[4:] = (class_probs * objectness).astype(np.float32)
    # Objects: ~20 candidates each, jittered around the object, one class scoring high.
    per_object = 20
    chosen = rng.choice(CANDIDATES, objects * per_object, replace=False).reshape(objects, per_object)
    for idx in chosen:
        cx, cy = rng.uniform(20, INPUT - 20, 2)
        w, h = rng.uniform(16, 200, 2)
        pred[0, idx] = cx + rng.normal(0, w * 0.05, per_object)
        pred[1, idx] = cy + rng.normal(0, h * 0.05, per_object)
        pred[2, idx] = w * rng.uniform(0.85, 1.15, per_object)
        pred[3, idx] = h * rng.uniform(0.85, 1.15, per_object)
        pred[4 + rng.integers(CLASSES), idx] = rng.uniform(0.2, 0.95, per_object)
    return pred[None]


def nms_boxes(count: int = 1000, seed: int = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` boxes clustered around objects in a 416 image, over 80 classes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, INPUT, (50, 2))
    sizes = rng.uniform(10, 200, (50, 2))
    owner = rng.integers(0, 50, count)
    cxcy = centres[owner] + rng.normal(0, 8, (count, 2))
    wh = sizes[owner] * rng.uniform(0.8, 1.2, (count, 2))
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    classes = rng.integers(0, CLASSES, count).astype(np.int32)
    return boxes, scores, classes


def run_postprocess_bench(repeat: int = 200, peers: bool = True) -> Dict[str, object]:
    pred = synthetic_yolo_output()
    info = ModelInfo(input_size=(INPUT, INPUT), class_names=[str(i) for i in range(CLASSES)],
                     output_format="anchor_free")
    source = (480, 640)  # a VGA camera frame letterboxed into 416
    transform = fit_transform(source, info.input_size, "letterbox")
    report: Dict[str, object] = {"machine": platform.machine(), "python": platform.python_version(),
                                 "numpy": np.__version__, "candidates": CANDIDATES, "classes": CLASSES}
    for conf in (0.25, 0.001):
        post = Postprocessor(info, PostprocessSettings(conf_threshold=conf, iou_threshold=0.45,
                                                       max_detections=300))
        cases: Dict[str, Callable[[], object]] = {"ours": functools.partial(post, [pred], [transform])}
        if peers:
            cases["ultralytics"] = _ultralytics_case(pred, conf, source)
        timings = time_interleaved(cases, repeat)
        row: Dict[str, object] = {"timings": timings, "kept": len(post([pred], [transform])[0])}
        if peers:
            row["ultralytics_over_ours"] = ratio(timings["ultralytics"], timings["ours"])
        report[f"decode_nms_conf_{conf}"] = row

    boxes, scores, classes = nms_boxes()
    cases = {"ours": lambda: nms(boxes, scores, 0.45, classes)}
    if peers:
        cases["torchvision"] = _torchvision_case(boxes, scores, classes)
    timings = time_interleaved(cases, repeat * 2)
    row = {"timings": timings, "boxes": len(boxes), "kept": len(nms(boxes, scores, 0.45, classes))}
    if peers:
        row["torchvision_over_ours"] = ratio(timings["torchvision"], timings["ours"])
    report["nms_1000_boxes_80_classes"] = row
    _print_report(report)
    return report


def _ultralytics_case(pred: np.ndarray, conf: float, source: Tuple[int, int]):
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    def run() -> object:
        out = non_max_suppression(torch.from_numpy(pred), conf_thres=conf, iou_thres=0.45, max_det=300)
        out[0][:, :4] = scale_boxes((INPUT, INPUT), out[0][:, :4], source)
        return out[0].numpy()

    return run


def _torchvision_case(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray):
    import torch
    from torchvision.ops import batched_nms

    tb, ts, tc = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes.astype(np.int64))
    return lambda: batched_nms(tb, ts, tc, 0.45).numpy()


def _print_report(report: Dict[str, object]) -> None:
    for name, row in report.items():
        if not isinstance(row, dict):
            continue
        parts = [f"{who} {t['median_ms']:.3f} ms" for who, t in row["timings"].items()]
        ratios = [f"{k.replace('_over_ours', '')}/ours = {v}x"
                  for k, v in row.items() if k.endswith("_over_ours")]
        print(f"{name}: " + ", ".join(parts + ratios) + f" (kept {row['kept']})")
