import json

import numpy as np
import pytest

from agent.errors import ModelError
from agent.types import Detections, Frame, ModelInfo


def make(n: int) -> Detections:
    xyxy = np.arange(n * 4, dtype=np.float64).reshape(n, 4)
    return Detections(xyxy, np.linspace(0.9, 0.1, n), np.arange(n))


def test_arrays_are_normalised_to_the_contract_dtypes():
    dets = make(3)
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (3, 4)
    assert dets.scores.dtype == np.float32
    assert dets.class_ids.dtype == np.int32
    assert len(dets) == 3


@pytest.mark.parametrize("xyxy, scores, ids", [
    (np.zeros((2, 3)), np.zeros(2), np.zeros(2)),       # 3 coordinates
    (np.zeros((2, 4)), np.zeros(3), np.zeros(2)),       # scores too long
    (np.zeros((2, 4)), np.zeros(2), np.zeros((2, 1))),  # ids not flat
])
def test_shape_mismatches_are_rejected(xyxy, scores, ids):
    with pytest.raises(ValueError, match="Detections"):
        Detections(xyxy, scores, ids)


def test_empty_has_the_right_shapes():
    dets = Detections.empty()
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4)
    assert Detections([], [], []).xyxy.shape == (0, 4)


def test_mask_and_index_selection_keep_arrays_parallel():
    dets = make(4)
    picked = dets[dets.scores > 0.5]
    assert len(picked) == 2
    np.testing.assert_array_equal(picked.class_ids, [0, 1])
    np.testing.assert_array_equal(picked.xyxy[1], [4, 5, 6, 7])
    assert len(dets[np.array([3, 0])]) == 2 and dets[np.array([3, 0])].class_ids.tolist() == [3, 0]
    assert dets[2].class_ids.tolist() == [2]


def test_area_clips_inverted_boxes_to_zero():
    dets = Detections([[0, 0, 10, 5], [5, 5, 1, 1]], [0.5, 0.5], [0, 0])
    assert dets.area.tolist() == [50.0, 0.0]


def test_to_list_uses_label_names_and_rounds():
    dets = Detections([[1.234, 2.0, 3.0, 4.56]], [0.87654], [1])
    (box,) = dets.to_list(["cat", "dog"])
    assert box == {"label": "dog", "class_id": 1, "score": 0.8765, "box": [1.2, 2.0, 3.0, 4.6]}
    assert dets.to_list()[0]["label"] == "1"  # no names: the id as text


def test_frame_reports_its_size():
    frame = Frame(np.zeros((48, 64, 3), np.uint8), "front", 7)
    assert (frame.height, frame.width) == (48, 64) and frame.wall_time > 0


def test_model_info_round_trips_through_metadata():
    info = ModelInfo(input_size=(320, 416), class_names=["a", "b"], output_format="yolo_heads",
                     strides=[32, 16], anchors=[[(81, 82), (135, 169)], [(23, 27), (37, 58)]],
                     scale_x_y=[1.05, 1.1], resize_mode="resize", name="tiny")
    props = info.to_metadata()
    assert all(isinstance(v, str) for v in props.values())
    assert ModelInfo.from_metadata(props) == info
    assert ModelInfo.from_metadata({}) is None


def test_model_info_rejects_bad_values():
    with pytest.raises(ModelError, match="output format"):
        ModelInfo(output_format="ssd")
    with pytest.raises(ModelError, match="resize mode"):
        ModelInfo(resize_mode="crop")
    with pytest.raises(ModelError, match="positive"):
        ModelInfo(input_size=(0, 416))
    with pytest.raises(ModelError, match="unreadable"):
        ModelInfo.from_metadata({"detection_agent.model_info": json.dumps({"class_names": []})})
