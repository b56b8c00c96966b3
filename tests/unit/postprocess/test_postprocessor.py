"""decode -> filters -> NMS -> max_detections -> source pixels, on hand-built outputs."""

import numpy as np
import pytest

from agent.errors import ModelError
from agent.inference.postprocess.postprocessor import Postprocessor, PostprocessSettings
from agent.inference.preprocess import fit_transform
from agent.types import ModelInfo

INFO = ModelInfo(input_size=(416, 416), class_names=["cat", "dog", "car"], output_format="anchor_free")
IDENTITY = fit_transform((416, 416), (416, 416), "letterbox")


def output(rows):
    """[1, 4+3, N] from (cx, cy, w, h, cat, dog, car) rows."""
    return [np.asarray(rows, np.float32).T[None]]


TWO_DOGS_AND_A_CAT = output([
    (100, 100, 50, 50, 0.0, 0.9, 0.0),   # dog
    (104, 102, 50, 50, 0.0, 0.8, 0.0),   # same dog again: suppressed
    (104, 102, 50, 50, 0.7, 0.0, 0.0),   # a cat in the same place: other class, kept
    (300, 300, 20, 20, 0.0, 0.5, 0.0),   # a second dog
])


def run(settings, outputs=TWO_DOGS_AND_A_CAT, transform=IDENTITY, info=INFO):
    (dets,) = Postprocessor(info, settings)(outputs, [transform])
    return dets


def test_class_aware_nms_keeps_other_classes_and_orders_by_score():
    dets = run(PostprocessSettings())
    assert dets.class_ids.tolist() == [1, 0, 1]
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.5])
    np.testing.assert_allclose(dets.xyxy[0], [75, 75, 125, 125])


def test_class_agnostic_nms_lets_the_dog_suppress_the_cat():
    dets = run(PostprocessSettings(class_agnostic=True))
    assert dets.class_ids.tolist() == [1, 1]


def test_max_detections_and_class_filter():
    assert len(run(PostprocessSettings(max_detections=2))) == 2
    dets = run(PostprocessSettings(classes=["cat"]))
    assert dets.class_ids.tolist() == [0]
    with pytest.raises(ModelError, match="'horse' is not in the model's labels"):
        Postprocessor(INFO, PostprocessSettings(classes=["horse"]))


def test_per_class_thresholds_can_lower_and_raise_the_bar():
    low = output([(50, 50, 10, 10, 0.15, 0.0, 0.0), (200, 200, 10, 10, 0.0, 0.6, 0.0)])
    dets = run(PostprocessSettings(conf_threshold=0.25, class_thresholds={"cat": 0.1, "dog": 0.7}), low)
    assert dets.class_ids.tolist() == [0]  # the cat passes its lower bar, the dog misses its higher one


def test_boxes_come_back_in_source_pixels_and_small_ones_can_be_dropped():
    transform = fit_transform((480, 640), (416, 416), "letterbox")  # scale 0.65, 52 px bars
    dets = run(PostprocessSettings(), transform=transform)
    np.testing.assert_allclose(dets.xyxy[0], [75 / 0.65, (75 - 52) / 0.65, 125 / 0.65, (125 - 52) / 0.65],
                               rtol=1e-5)
    big_only = run(PostprocessSettings(min_box_area=40 * 40), transform=transform)
    assert big_only.scores.tolist() == pytest.approx([0.9, 0.7])  # the 20 px dog is 31 px: dropped


def test_engine_side_nms_output_is_not_suppressed_again():
    num = np.array([[3]], np.int32)
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    classes = np.array([[1, 1, 2]], np.int32)
    dets = run(PostprocessSettings(max_detections=10), [num, boxes, scores, classes],
               info=ModelInfo(input_size=(416, 416), class_names=["cat", "dog", "car"]))
    assert len(dets) == 3  # the engine already decided; overlapping boxes stay


@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_full_postprocess_agrees_with_ultralytics_on_a_yolov3_sized_output(conf):
    torch = pytest.importorskip("torch")
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    from agent.bench.postprocess import CLASSES, synthetic_yolo_output

    pred = synthetic_yolo_output(seed=5)
    info = ModelInfo(input_size=(416, 416), class_names=[str(i) for i in range(CLASSES)],
                     output_format="anchor_free")
    transform = fit_transform((480, 640), (416, 416), "letterbox")
    (ours,) = Postprocessor(info, PostprocessSettings(conf, 0.45, max_detections=300))([pred], [transform])
    (theirs,) = non_max_suppression(torch.from_numpy(pred), conf_thres=conf, iou_thres=0.45, max_det=300)
    theirs[:, :4] = scale_boxes((416, 416), theirs[:, :4], (480, 640))
    theirs = theirs.numpy()
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours.scores, theirs[:, 4], rtol=1e-6)
    assert ours.class_ids.tolist() == theirs[:, 5].astype(int).tolist()
    np.testing.assert_allclose(ours.xyxy, theirs[:, :4], atol=1e-3)


def test_update_swaps_settings_and_rejects_unknown_labels_without_change():
    post = Postprocessor(INFO, PostprocessSettings(classes=["cat"]))
    post.update(PostprocessSettings(conf_threshold=0.6))
    (dets,) = post(TWO_DOGS_AND_A_CAT, [IDENTITY])
    assert dets.scores.tolist() == pytest.approx([0.9, 0.7])  # class filter gone, higher bar
    with pytest.raises(ModelError, match="'horse'"):
        post.update(PostprocessSettings(classes=["horse"]))
    assert post.settings.conf_threshold == 0.6  # the failed update changed nothing
