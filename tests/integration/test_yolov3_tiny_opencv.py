"""The official COCO yolov3-tiny through OpenCV's darknet importer and this project's code.

Two independent checks with real weights and real photos:
- the raw head decoder (``yolo_heads``) reproduces OpenCV's own YOLO layer outputs from the
  same raw convolution outputs;
- ``Detector`` (our preprocess, decode, NMS, scale-back) finds what OpenCV's stock pipeline
  (blobFromImage + NMSBoxesBatched) finds, box for box.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.inference.detector import Detector
from agent.inference.postprocess.decode import decode
from agent.inference.postprocess.postprocessor import PostprocessSettings
from agent.modeltools.darknet import cfg as darknet

MODEL_DIR = Path("../shared/models/yolov3-tiny-coco")
CFG = MODEL_DIR / "yolov3-tiny.cfg"
SAMPLES = sorted(Path("../shared/data/darknet-samples").glob("*.jpg"))

pytestmark = pytest.mark.skipif(not CFG.exists(), reason="shared yolov3-tiny model not present")


@pytest.fixture(scope="module")
def net():
    return cv2.dnn.readNetFromDarknet(str(CFG), str(MODEL_DIR / "yolov3-tiny.weights"))


def blob(path: Path) -> np.ndarray:
    return cv2.dnn.blobFromImage(cv2.imread(str(path)), 1 / 255.0, (416, 416), swapRB=True, crop=False)


@pytest.mark.parametrize("image", SAMPLES[:3], ids=lambda p: p.name)
def test_raw_head_decoder_reproduces_opencv_yolo_layers(net, image):
    net.setInput(blob(image))
    conv13, conv26, yolo13, yolo26 = net.forward(["conv_15", "conv_22", "yolo_16", "yolo_23"])
    info = dataclasses.replace(darknet.model_info(CFG), strides=[32, 16])  # ModelInfo is frozen
    (ours,) = decode([conv13, conv26], info, 0.25, "yolo_heads")
    rows = np.concatenate([yolo13, yolo26])
    best = rows[:, 5:].max(axis=1)
    picked = rows[best > 0.25]
    assert len(picked) > 0
    cxcywh = picked[:, :4] * 416
    theirs_xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
    theirs = sorted(zip(np.round(theirs_xyxy, 1).tolist(), picked[:, 5:].argmax(1).tolist()))
    mine = sorted(zip(np.round(ours.xyxy, 1).tolist(), ours.class_ids.tolist()))
    assert len(mine) == len(theirs)
    for (box_a, cls_a), (box_b, cls_b) in zip(mine, theirs):
        assert cls_a == cls_b
        np.testing.assert_allclose(box_a, box_b, atol=0.15)
    np.testing.assert_allclose(np.sort(ours.scores), np.sort(best[best > 0.25]), rtol=1e-4)


def opencv_reference(net, path: Path, conf: float = 0.25, iou: float = 0.45):
    """OpenCV's own pipeline: plain resize, YOLO layers, class-aware NMS, source pixels."""
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    net.setInput(blob(path))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    scores, classes = rows[:, 5:].max(1), rows[:, 5:].argmax(1)
    keep = scores > conf
    cxcywh = rows[keep, :4] * [w, h, w, h]
    xywh = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, 2:]], 1)
    idx = np.array(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores[keep].tolist(),
                                           classes[keep].tolist(), conf, iou)).reshape(-1)
    boxes = xywh[idx].copy()
    boxes[:, 2:] += boxes[:, :2]
    return np.clip(boxes, 0, [w, h, w, h]), scores[keep][idx], classes[keep][idx]


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_detector_matches_opencv_pipeline(net, image):
    ref_boxes, ref_scores, ref_classes = opencv_reference(net, image)
    with Detector.open(CFG, "opencv", settings=PostprocessSettings(0.25, 0.45)) as detector:
        (dets,) = detector([cv2.imread(str(image))])
    assert len(dets) == len(ref_scores) > 0
    order = np.argsort(-ref_scores, kind="stable")
    np.testing.assert_allclose(dets.scores, ref_scores[order], rtol=1e-5)
    assert dets.class_ids.tolist() == ref_classes[order].tolist()
    np.testing.assert_allclose(dets.xyxy, ref_boxes[order], atol=0.05)


def test_dog_photo_finds_dog_car_and_truck():
    with Detector.open(CFG) as detector:
        (dets,) = detector([cv2.imread(str(MODEL_DIR.parent.parent / "data/darknet-samples/dog.jpg"))])
    labels = [detector.class_names[c] for c in dets.class_ids]
    assert {"dog", "car", "truck"} <= set(labels)
    dog = dets.xyxy[labels.index("dog")]
    # The dog sits in the lower left of the 768x576 photo.
    assert dog[0] < 200 and dog[1] > 150 and dog[2] < 400
