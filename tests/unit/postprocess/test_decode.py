"""Decoding each YOLO output layout, on hand-built tensors whose right answer is known."""

import math

import numpy as np
import pytest

from agent.errors import ModelError
from agent.inference.postprocess.decode import decode, detect_format
from agent.types import ModelInfo

INFO3 = ModelInfo(input_size=(416, 416), class_names=["a", "b", "c"])


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def anchor_free(cands):
    """[1, 4+3, N] from (cx, cy, w, h, scores...) rows."""
    return np.asarray(cands, np.float32).T[None]


def test_anchor_free_picks_best_class_and_converts_boxes():
    pred = anchor_free([
        (100, 50, 20, 10, 0.1, 0.9, 0.3),   # kept as class 1
        (200, 200, 40, 40, 0.2, 0.1, 0.25),  # best 0.25 is not > 0.25: dropped
        (10, 10, 4, 8, 0.6, 0.0, 0.0),       # kept as class 0
    ])
    (c,) = decode([pred], INFO3, 0.25, "anchor_free")
    np.testing.assert_allclose(c.xyxy, [[90, 45, 110, 55], [8, 6, 12, 14]])
    np.testing.assert_allclose(c.scores, [0.9, 0.6])
    assert c.class_ids.tolist() == [1, 0] and c.class_ids.dtype == np.int32


def test_anchor_free_multi_label_returns_each_class_over_threshold():
    pred = anchor_free([(100, 50, 20, 10, 0.5, 0.9, 0.1)])
    (c,) = decode([pred], INFO3, 0.25, "anchor_free", multi_label=True)
    assert sorted(zip(c.class_ids.tolist(), [round(s, 3) for s in c.scores.tolist()])) == [(0, 0.5), (1, 0.9)]
    assert len(c.xyxy) == 2 and (c.xyxy[0] == c.xyxy[1]).all()


def test_objectness_multiplies_objectness_by_class_probability():
    pred = np.array([[
        [50, 60, 10, 20, 0.8, 0.5, 0.9, 0.1],  # 0.8 * 0.9 = 0.72, class 1
        [50, 60, 10, 20, 0.2, 1.0, 1.0, 1.0],  # objectness 0.2 can never pass 0.25
        [30, 30, 6, 6, 0.5, 0.4, 0.4, 0.45],   # 0.5 * 0.45 = 0.225: dropped
    ]], np.float32)
    (c,) = decode([pred], INFO3, 0.25, "objectness")
    np.testing.assert_allclose(c.xyxy, [[45, 50, 55, 70]])
    np.testing.assert_allclose(c.scores, [0.72], rtol=1e-6)
    assert c.class_ids.tolist() == [1]


def test_objectness_heads_are_concatenated():
    a = np.array([[[10, 10, 2, 2, 1.0, 0.9, 0, 0]]], np.float32)
    b = np.array([[[20, 20, 2, 2, 1.0, 0, 0, 0.8], [0, 0, 1, 1, 0, 0, 0, 0]]], np.float32)
    (c,) = decode([a, b], INFO3, 0.25)  # several 3-D outputs: per-head objectness rows
    assert c.class_ids.tolist() == [0, 2]


def head_tensor(na=2, nc=3, h=4, w=4):
    """Raw head logits with every cell's objectness far below any threshold."""
    t = np.zeros((1, na, 5 + nc, h, w), np.float32)
    t[:, :, 4] = -20.0
    t[:, :, 5:] = -20.0
    return t


def test_yolo_heads_decode_with_grid_anchor_and_stride():
    info = ModelInfo(input_size=(128, 128), class_names=["a", "b", "c"], strides=[32],
                     anchors=[[(10, 14), (40, 30)]])
    t = head_tensor()
    # anchor 1, cell (row 2, col 1): centre offsets 0.25/0.75, w = anchor_w * e^0, h = anchor_h * 2
    t[0, 1, 0:4, 2, 1] = [logit(0.25), logit(0.75), 0.0, math.log(2.0)]
    t[0, 1, 4, 2, 1] = logit(0.9)
    t[0, 1, 7, 2, 1] = logit(0.5)  # class 2
    (c,) = decode([t.reshape(1, -1, 4, 4)], info, 0.25, "yolo_heads")
    cx, cy, w, h = (1 + 0.25) * 32, (2 + 0.75) * 32, 40.0, 60.0
    np.testing.assert_allclose(c.xyxy, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-5)
    np.testing.assert_allclose(c.scores, [0.45], rtol=1e-5)
    assert c.class_ids.tolist() == [2]


def test_yolo_heads_apply_darknet_scale_x_y():
    info = ModelInfo(input_size=(64, 64), class_names=["a", "b", "c"], strides=[16],
                     anchors=[[(8, 8), (16, 16)]], scale_x_y=[1.2])
    t = head_tensor()
    t[0, 0, 0:4, 0, 0] = [logit(0.25), logit(1.0 - 1e-7), 0, 0]
    t[0, 0, 4, 0, 0] = 10.0
    t[0, 0, 5, 0, 0] = 10.0
    (c,) = decode([t.reshape(1, -1, 4, 4)], info, 0.25, "yolo_heads")
    # x = (0.25 * 1.2 - 0.1) * 16 = 3.2 ; y = (1.0 * 1.2 - 0.1) * 16 = 17.6
    np.testing.assert_allclose(c.xyxy[0], [3.2 - 4, 17.6 - 4, 3.2 + 4, 17.6 + 4], atol=1e-4)


def test_yolo_heads_pair_outputs_with_anchors_by_stride_and_batch():
    info = ModelInfo(input_size=(64, 64), class_names=["a", "b", "c"], strides=[32, 16],
                     anchors=[[(30, 30), (50, 50)], [(5, 5), (10, 10)]])
    coarse, fine = head_tensor(h=2, w=2), head_tensor(h=4, w=4)
    coarse = np.concatenate([coarse, coarse])  # batch of 2
    fine = np.concatenate([fine, fine])
    fine[1, 0, 4, 3, 3] = 10.0  # only image 1, fine head, anchor 0
    fine[1, 0, 5, 3, 3] = 10.0
    # Outputs given fine-first: pairing must follow the stride, not the order.
    out = decode([fine.reshape(2, -1, 4, 4), coarse.reshape(2, -1, 2, 2)], info, 0.25, "yolo_heads")
    assert len(out[0].scores) == 0
    np.testing.assert_allclose(out[1].xyxy, [[(3.5 * 16) - 2.5, (3.5 * 16) - 2.5, 58.5, 58.5]])


def test_yolo_heads_need_anchors_and_matching_strides():
    with pytest.raises(ModelError, match="anchors"):
        decode([head_tensor().reshape(1, -1, 4, 4)], INFO3, 0.25, "yolo_heads")
    info = ModelInfo(input_size=(128, 128), class_names=["a", "b", "c"], strides=[8],
                     anchors=[[(1, 1), (2, 2)]])
    with pytest.raises(ModelError, match="stride 32"):
        decode([head_tensor().reshape(1, -1, 4, 4)], info, 0.25, "yolo_heads")


def efficient_nms_outputs(classes_dtype=np.int32):
    num = np.array([[2], [0]], np.int32)
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 0] = [1, 2, 3, 4]
    boxes[0, 1] = [5, 6, 7, 8]
    boxes[0, 2] = [9, 9, 9, 9]  # padding beyond num_dets: must be ignored
    scores = np.array([[0.9, 0.2, 0.99], [0.8, 0.8, 0.8]], np.float32)
    classes = np.array([[3, 1, 7], [1, 1, 1]], classes_dtype)
    return [num, boxes, scores, classes]


@pytest.mark.parametrize("classes_dtype", [np.int32, np.float32])
def test_efficient_nms_reads_only_num_dets_and_filters_scores(classes_dtype):
    first, second = decode(efficient_nms_outputs(classes_dtype), INFO3, 0.25)
    np.testing.assert_allclose(first.xyxy, [[1, 2, 3, 4]])
    assert first.class_ids.tolist() == [3] and first.scores.tolist() == pytest.approx([0.9])
    assert len(second.scores) == 0


def test_efficient_nms_accepts_classes_before_scores_when_typed():
    num, boxes, scores, classes = efficient_nms_outputs()
    (first, _) = decode([num, boxes, classes, scores], INFO3, 0.25)
    assert first.class_ids.tolist() == [3]


@pytest.mark.parametrize("shapes, nc, expected", [
    ([(1, 84, 8400)], 80, "anchor_free"),
    ([(1, 10647, 85)], 80, "objectness"),
    ([(1, 84, 8400)], 0, "anchor_free"),
    ([(1, 2535, 85)], 0, "objectness"),
    ([(1, 255, 13, 13), (1, 255, 26, 26)], 80, "yolo_heads"),
    ([(1, 1), (1, 100, 4), (1, 100), (1, 100)], 80, "efficient_nms"),
    ([(1, 507, 85), (1, 2028, 85)], 80, "objectness"),
])
def test_layout_detection_from_shapes(shapes, nc, expected):
    outputs = [np.zeros(s, np.float32) for s in shapes]
    assert detect_format(outputs, nc) == expected


def test_unrecognisable_outputs_name_the_fix():
    with pytest.raises(ModelError, match=r"model\.output_format"):
        detect_format([np.zeros((10,), np.float32)])
    with pytest.raises(ModelError, match="expects 1 output"):
        decode([np.zeros((1, 7, 5), np.float32)] * 2, INFO3, 0.25, "anchor_free")


def test_empty_survivors_give_empty_candidates_everywhere():
    pred = anchor_free([(1, 1, 1, 1, 0.0, 0.0, 0.0)])
    (c,) = decode([pred], INFO3, 0.25, "anchor_free")
    assert c.xyxy.shape == (0, 4) and c.scores.shape == (0,) and c.class_ids.shape == (0,)


# -- non-finite values and outputs that cannot hold a box (issue 14, item 2) -----------------

def test_non_finite_boxes_are_dropped_and_counted_in_every_layout():
    from agent.inference.postprocess.decode import decode_counted

    nan, inf = float("nan"), float("inf")
    pred = anchor_free([
        (100, 50, 20, 10, 0.1, 0.9, 0.3),    # fine
        (nan, 50, 20, 10, 0.9, 0.0, 0.0),    # NaN centre
        (100, 50, inf, 10, 0.0, 0.8, 0.0),   # infinite width
        (100, 50, 20, 10, 0.0, 0.0, inf),    # infinite score passes any threshold
    ])
    (c,), dropped = decode_counted([pred], INFO3, 0.25, "anchor_free")
    assert dropped == 3 and c.class_ids.tolist() == [1]
    assert np.isfinite(c.xyxy).all() and np.isfinite(c.scores).all()

    obj = np.array([[[50, 60, 10, 20, 0.8, 0.5, 0.9, 0.1],
                     [50, -inf, 10, 20, 0.9, 0.9, 0.1, 0.1]]], np.float32)
    (c,), dropped = decode_counted([obj], INFO3, 0.25, "objectness")
    assert dropped == 1 and c.class_ids.tolist() == [1]

    # Raw heads: a huge w/h logit overflows exp() in float32, as an FP16 engine's output can.
    info = ModelInfo(input_size=(32, 32), class_names=["a"], anchors=[[(10.0, 10.0)]], strides=[32])
    head = np.zeros((1, 6, 1, 1), np.float32)
    head[0, 4] = head[0, 5] = 5.0  # objectness and class both ~0.99
    head[0, 2] = 1000.0
    with np.errstate(over="ignore"):
        (c,), dropped = decode_counted([head], info, 0.25, "yolo_heads")
    assert dropped == 1 and len(c.scores) == 0

    num = np.array([[2]], np.int32)
    boxes = np.array([[[0, 0, 10, 10], [nan, 0, 5, 5]]], np.float32)
    scores = np.array([[0.9, 0.8]], np.float32)
    classes = np.array([[0, 1]], np.int32)
    (c,), dropped = decode_counted([num, boxes, scores, classes], INFO3, 0.25, "efficient_nms")
    assert dropped == 1 and c.class_ids.tolist() == [0]


def test_decode_never_hands_non_finite_boxes_to_nms():
    from agent.inference.postprocess.postprocessor import Postprocessor
    from agent.types import FitTransform

    pred = anchor_free([(100, 50, 20, 10, 0.9, 0.0, 0.0), (float("nan"), 50, 20, 10, 0.95, 0.0, 0.0)])
    post = Postprocessor(INFO3)
    (dets,) = post([pred], [FitTransform((416, 416), (416, 416), (0, 0))])
    assert len(dets) == 1 and post.nonfinite_dropped == 1
    post([pred], [FitTransform((416, 416), (416, 416), (0, 0))])
    assert post.nonfinite_dropped == 2


@pytest.mark.parametrize("shape, fmt, message", [
    ((1, 3, 10), "anchor_free", r"\(1, 3, 10\) has 3 values per box.*at least 5"),
    ((1, 3, 10), None, r"\(1, 3, 10\) has 3 values per box"),
    ((1, 7, 0), "anchor_free", r"\(1, 7, 0\) has no candidate boxes \(0 anchors\)"),
    ((1, 10, 5), "objectness", r"has 5 values per box.*at least 6"),
    ((1, 0, 8), "objectness", r"has no candidate boxes"),
])
def test_outputs_that_cannot_hold_a_box_are_a_model_error(shape, fmt, message):
    with pytest.raises(ModelError, match=message):
        decode([np.zeros(shape, np.float32)], INFO3, 0.25, fmt)
