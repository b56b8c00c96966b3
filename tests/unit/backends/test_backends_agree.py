"""ONNX Runtime, OpenCV DNN and (faked) TensorRT find the same objects on the same images.

Detections go through the one shared path (Preprocessor -> backend.infer -> Postprocessor),
so any difference comes from the backend: buffer handling, shapes, output order, dtypes.
Tolerances: boxes within 1e-3 relative (1e-2 px near zero), same classes, scores within
1e-4. FP16 engines compute differently, so their check is looser and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
from backend_models import SHIPPED, assert_released, assert_same_detections, matched_fraction

from agent.inference.detector import Detector
from agent.inference.postprocess.postprocessor import PostprocessSettings
from agent.modeltools.tensorrt.build import BuildOptions, build_engine
from agent.types import Detections

# The shipped model is confident on shapes; the train-free stand-in scores lower.
CONF = 0.25 if SHIPPED.is_file() else 0.5
#: Share of float32 detections an FP16 engine must reproduce; the untrained stand-in amplifies
#: rounding far more than a trained network does.
FP16_MATCHED = 0.95 if SHIPPED.is_file() else 0.8
SETTINGS = PostprocessSettings(conf_threshold=CONF, iou_threshold=0.45)


def detect(model: Path, backend: str, images: List[np.ndarray], batch: int = 1,
           settings: PostprocessSettings = SETTINGS) -> List[Detections]:
    with Detector.open(model, backend, batch_size=batch, settings=settings) as detector:
        assert detector.backend.name == backend
        return detector(images)


@pytest.fixture(scope="module")
def reference(model_path: Path, images: List[np.ndarray]) -> List[Detections]:
    return detect(model_path, "onnxruntime", images)


def test_opencv_dnn_matches_onnxruntime(model_path, images, reference):
    assert_same_detections(detect(model_path, "opencv", images), reference)


def test_tensorrt_matches_onnxruntime(fake_gpu, generation, model_path, images, reference, tmp_path):
    """Every release: 8.4 through its binding API, 8.5 and 8.6 (both APIs) through named tensors."""
    engine = tmp_path / "model.engine"
    build_engine(BuildOptions(model_path, engine))
    with Detector.open(engine, "tensorrt", settings=SETTINGS) as detector:
        assert detector.backend.api == ("v2" if generation == "8.4" else "v3")
        got = detector(images)
    assert_same_detections(got, reference)
    assert fake_gpu.knobs.STATE.executions == len(images)
    assert_released(fake_gpu)


def test_dynamic_batch_engine_takes_full_and_partial_batches(fake_gpu, generation, dynamic_model, images,
                                                              reference, tmp_path):
    engine = tmp_path / "batch4.engine"
    meta = build_engine(BuildOptions(dynamic_model, engine, batch=4))
    assert meta.build["dynamic_batch"] and fake_gpu.knobs.STATE.builds[-1].profile == {
        "images": [(1, 3, 416, 416), (4, 3, 416, 416), (4, 3, 416, 416)]}
    assert len(images) % 4 != 0  # the last call is a smaller batch: the input shape must change
    with Detector.open(engine, "tensorrt", batch_size=4, settings=SETTINGS) as detector:
        assert detector.backend.input_shape == (4, 3, 416, 416)
        got = detector(images)
        executions = fake_gpu.knobs.STATE.executions
        tensor, _ = detector.preprocess(images[:3])
        three = detector.backend.infer(tensor)
        (one,) = detector.backend.infer(tensor[1:2])
    assert_same_detections(got, reference)
    assert executions == -(-len(images) // 4)
    # A smaller batch runs at its own shape and returns only its own rows.
    assert three[0].shape[0] == 3 and one.shape[0] == 1
    np.testing.assert_allclose(one[0], three[0][1], rtol=1e-5, atol=1e-4)
    assert_released(fake_gpu)


def test_dynamic_model_itself_is_batch_invariant(dynamic_model, images, reference):
    # Guards the test helper that made the batch dynamic: ONNX Runtime, batch 4, same answers.
    assert_same_detections(detect(dynamic_model, "onnxruntime", images, batch=4), reference)


def test_fp16_engine_with_float16_input(fake_gpu, generation, fp16_model, images, reference, tmp_path):
    """An FP16 engine of a float16-input model (``export --half``): float16 in, float32 out.

    Against ONNX Runtime on the same float16 model the detections must be the same (the
    plumbing: float16 page-locked input, float16 output converted). Against the float32
    model, FP16 arithmetic moves boxes and scores (the fake rounds the engine's inputs and
    outputs to float16, much as FP16 kernels do), so detections are matched by class, IoU
    >= 0.9 and score within 0.02, and nearly all must match.
    """
    engine = tmp_path / "fp16.engine"
    # TensorRT 11 has no FP16 flag: a strongly typed network runs a float16 model in float16.
    fp16_flag = generation != "11"
    build_engine(BuildOptions(fp16_model, engine, fp16=fp16_flag))
    assert fake_gpu.knobs.STATE.builds[-1].flags == ({"FP16"} if fp16_flag else set())
    assert fake_gpu.knobs.STATE.builds[-1].input_dtypes == {"images": "HALF"}
    with Detector.open(engine, "tensorrt", settings=SETTINGS) as detector:
        assert detector.backend.input_dtype == np.float16
        assert detector.preprocess.dtype == np.float16
        tensor, _ = detector.preprocess(images[:1])
        assert [o.dtype for o in detector.backend.infer(tensor)] == [np.float32]
        got = detector(images)
    assert_same_detections(got, detect(fp16_model, "onnxruntime", images))
    assert matched_fraction(got, reference) >= FP16_MATCHED
    assert_released(fake_gpu)


def test_efficient_nms_engine_matches_host_nms(fake_gpu, generation, model_path, images, tmp_path):
    """NMS in the engine (EfficientNMS_TRT) = host-side decode + NMS, multi-label like the plugin."""
    engine = tmp_path / "nms.engine"
    meta = build_engine(BuildOptions(model_path, engine, nms=True, score=CONF, iou=0.45, max_det=100))
    assert meta.info.output_format == "efficient_nms"
    assert meta.output_names == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    host = detect(model_path, "onnxruntime", images,
                  settings=PostprocessSettings(conf_threshold=CONF, iou_threshold=0.45, multi_label=True))
    with Detector.open(engine, "tensorrt", settings=SETTINGS) as detector:
        tensor, _ = detector.preprocess(images[:1])
        num, boxes, scores, classes = detector.backend.infer(tensor)
        shapes = (num.shape, boxes.shape, scores.shape, classes.shape)
        assert shapes == ((1, 1), (1, 100, 4), (1, 100), (1, 100))
        assert num.dtype == np.int32 and classes.dtype == np.int32
        got = detector(images)
    assert_same_detections(got, host)
    assert_released(fake_gpu)


def test_engine_outputs_come_back_in_onnx_order(fake_gpu, generation, model_path, images, tmp_path):
    # TensorRT may list outputs in another order than the ONNX model; the sidecar restores it.
    fake_gpu.knobs.configure(reorder_outputs=True)
    engine = tmp_path / "nms.engine"
    build_engine(BuildOptions(model_path, engine, nms=True, score=CONF))
    with Detector.open(engine, "tensorrt", settings=SETTINGS) as detector:
        trt_engine = detector.backend._engine
        name_of = "get_tensor_name" if hasattr(trt_engine, "get_tensor_name") else "get_binding_name"
        engine_order = [getattr(trt_engine, name_of)(i) for i in range(1, 5)]
        del trt_engine  # TensorRT objects must not outlive the backend's CUDA context
        assert engine_order == ["det_classes", "det_scores", "det_boxes", "num_dets"]
        assert detector.backend.output_names == ["num_dets", "det_boxes", "det_scores", "det_classes"]
        outputs = detector.backend.infer(detector.preprocess(images[:1])[0])
        assert [o.shape[1:] for o in outputs] == [(1,), (100, 4), (100,), (100,)]
        assert detector(images[-1:])[0] is not None  # decodes as efficient_nms
    assert_released(fake_gpu)
