# ruff: noqa: F811 - fixtures imported from backend_fixtures are, by design, redefined as arguments
"""build-engine: builder settings, INT8 calibration, caches, profiles, and the EfficientNMS graph surgery.

The builder runs against the fake TensorRT (tests/fakes), which records what each build saw;
the NMS surgery is checked by running the graph up to the plugin with ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parent / "backends"))  # backend_models and the fake_gpu fixture

from backend_fixtures import dynamic_model, fake_gpu, fp16_model, model_path  # noqa: F401
from backend_models import assert_released, sample_images

from agent.errors import BackendError, BadInputError, ModelError
from agent.fileio import list_images, read_image, write_image
from agent.inference.backends.onnx_info import read_summary
from agent.inference.model_path import open_backend
from agent.inference.postprocess.decode import cxcywh_to_xyxy
from agent.inference.preprocess import Preprocessor
from agent.modeltools.tensorrt.build import BuildOptions, build_engine
from agent.modeltools.tensorrt.nms_plugin import add_efficient_nms


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(sample_images()[:5]):
        write_image(folder / f"{i:02d}.png", image)
    return folder


def test_int8_calibrates_with_the_agent_preprocessing_then_reuses_the_cache(fake_gpu, dynamic_model,
                                                                           calib_dir, tmp_path):
    engine, cache = tmp_path / "int8.engine", tmp_path / "int8.calib"
    meta = build_engine(BuildOptions(dynamic_model, engine, int8=True, calib_images=calib_dir,
                                     calib_cache=cache, batch=2))
    record = fake_gpu.knobs.STATE.builds[-1]
    assert record.flags == {"INT8", "FP16"} and meta.build["int8"] and meta.build["fp16"]
    # 5 images in batches of 2: two whole batches (the calibration shape is the profile's opt shape).
    assert len(record.calibration_batches) == 2 and not record.calibration_from_cache
    paths = list_images([str(calib_dir)])
    expected, _ = Preprocessor((416, 416), "letterbox", 2)([read_image(p) for p in paths[2:4]])
    np.testing.assert_array_equal(record.calibration_batches[1], expected)
    assert cache.read_text().startswith("TRT-100300-EntropyCalibration2\nimages: ")
    assert_released(fake_gpu)  # the calibrator's device buffer was freed

    build_engine(BuildOptions(dynamic_model, tmp_path / "again.engine", int8=True, calib_cache=cache,
                              batch=2))
    assert fake_gpu.knobs.STATE.builds[-1].calibration_from_cache
    assert fake_gpu.knobs.STATE.builds[-1].calibration_batches == []


def test_int8_needs_images_or_a_cache(fake_gpu, model_path, tmp_path):
    with pytest.raises(BadInputError, match="--int8 needs calibration images"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", int8=True))
    with pytest.raises(BadInputError, match="--calib-images only applies with --int8"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", calib_images=tmp_path))


def test_timing_cache_is_written_and_reused(fake_gpu, model_path, tmp_path):
    build_engine(BuildOptions(model_path, tmp_path / "a.engine"))
    timing = tmp_path / "tensorrt-timing.cache"
    assert timing.is_file() and fake_gpu.knobs.STATE.builds[-1].timing_cache_entries_before == 0
    build_engine(BuildOptions(model_path, tmp_path / "b.engine", workspace_mb=256))
    assert fake_gpu.knobs.STATE.builds[-1].timing_cache_entries_before > 0
    assert fake_gpu.knobs.STATE.builds[-1].workspace == 256 << 20
    timing.write_bytes(b"corrupt")
    build_engine(BuildOptions(model_path, tmp_path / "c.engine"))  # a bad cache is replaced, not fatal
    assert fake_gpu.knobs.STATE.builds[-1].timing_cache_entries_before == 0


def test_batch_needs_a_dynamic_model(fake_gpu, model_path, tmp_path):
    with pytest.raises(BadInputError, match=r"fixed batch of 1 .*export it with --dynamic"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", batch=4))


def test_parser_and_input_errors(fake_gpu, tmp_path):
    with pytest.raises(BadInputError, match="no such ONNX model"):
        build_engine(BuildOptions(tmp_path / "missing.onnx", tmp_path / "x.engine"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not protobuf at all")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        build_engine(BuildOptions(bad, tmp_path / "x.engine"))
    image = onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 416, 416])
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [image], []))
    empty.metadata_props.add(key="imgsz", value="[416, 416]")
    onnx.save(empty, str(tmp_path / "empty.onnx"))
    with pytest.raises(ModelError, match="TensorRT's ONNX parser failed"):
        build_engine(BuildOptions(tmp_path / "empty.onnx", tmp_path / "x.engine"))
    assert_released(fake_gpu)


def test_nms_split_matches_the_decoder(model_path):
    """The graph up to the plugin, run by ONNX Runtime: corners and scores as the decoder makes them."""
    summary = read_summary(model_path, "test")
    model = onnx.load(str(model_path))
    split = add_efficient_nms(model, summary.info, with_plugin=False)
    raw_session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    split_session = ort.InferenceSession(split.SerializeToString(), providers=["CPUExecutionProvider"])
    tensor, _ = Preprocessor((416, 416))(sample_images()[-1:])
    (raw,) = raw_session.run(None, {"images": tensor})
    boxes, scores = split_session.run(["nms_boxes", "nms_scores"], {"images": tensor})
    nc = len(summary.info.class_names)
    assert boxes.shape == (1, raw.shape[2], 4) and scores.shape == (1, raw.shape[2], nc)
    np.testing.assert_allclose(boxes[0], cxcywh_to_xyxy(raw[0, :4].T), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(scores[0], raw[0, 4:].T)


def test_nms_plugin_node(model_path):
    summary = read_summary(model_path, "test")
    model = add_efficient_nms(onnx.load(str(model_path)), summary.info, 0.3, 0.5, 50)
    onnx.checker.check_model(model)  # the plugin sits in its own domain, so the model stays valid ONNX
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["max_output_boxes"] == 50 and attrs["background_class"] == -1 and attrs["box_coding"] == 0
    assert attrs["score_activation"] == 0 and attrs["iou_threshold"] == pytest.approx(0.5)
    assert attrs["score_threshold"] == pytest.approx(0.3) and node.domain == "TRT"
    outputs = {o.name: (o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim])
               for o in model.graph.output}
    assert outputs == {"num_dets": (6, [1, 1]), "det_boxes": (1, [1, 50, 4]), "det_scores": (1, [1, 50]),
                       "det_classes": (6, [1, 50])}
    meta = {p.key: p.value for p in model.metadata_props}
    assert '"output_format": "efficient_nms"' in meta["detection_agent.model_info"]
    assert summary.info.output_format == "anchor_free"  # the caller's ModelInfo is left alone


def test_nms_box_codings_give_the_same_engine_output(fake_gpu, model_path, tmp_path):
    summary = read_summary(model_path, "test")
    outputs = []
    for coding in (0, 1):
        path = tmp_path / f"coding{coding}.onnx"
        model = add_efficient_nms(onnx.load(str(model_path)), summary.info, 0.2, box_coding=coding)
        onnx.save(model, str(path))
        build_engine(BuildOptions(path, tmp_path / f"coding{coding}.engine"))
        backend = open_backend(tmp_path / f"coding{coding}.engine", "tensorrt")
        tensor, _ = Preprocessor((416, 416))(sample_images()[-1:])
        outputs.append(backend.infer(tensor))
        backend.close()
    assert outputs[0][0][0, 0] > 0
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_nms_refuses_other_layouts(model_path):
    summary = read_summary(model_path, "test")
    with pytest.raises(BadInputError, match="ultralytics-layout"):
        add_efficient_nms(onnx.load(str(model_path)),
                          dataclasses.replace(summary.info, output_format="objectness"))
    with pytest.raises(BadInputError, match="must lie in"):
        add_efficient_nms(onnx.load(str(model_path)), dataclasses.replace(summary.info, output_format=None),
                          score_threshold=1.5)


# -- issue 19: the build path against the real TensorRT API --------------------------------------------


def _fixed_batch_dynamic_size(src: Path, dst: Path, batch: int) -> Path:
    """The model with a fixed leading dimension but a dynamic height (so it needs a profile)."""
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = batch
    dims[2].dim_param = "height"
    onnx.save(model, str(dst))
    return dst


def test_failed_build_frees_tensorrt_objects_before_the_cuda_context(fake_gpu, model_path, tmp_path):
    """The builder holds resources of the build's CUDA context; a failure's traceback must not
    keep it alive past ctx.detach() (the fake records a context destroyed with them live)."""
    graph = onnx.load(str(model_path)).graph
    no_output = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["copy"])], "no-output", [graph.input[0]], []))
    no_output.metadata_props.add(key="imgsz", value="[416, 416]")
    onnx.save(no_output, str(tmp_path / "no-output.onnx"))
    with pytest.raises(BackendError, match=r"could not build the engine: .*at least one output") as failure:
        build_engine(BuildOptions(tmp_path / "no-output.onnx", tmp_path / "x.engine"))
    assert failure.value.__traceback__ is not None  # still held here, as by any caller's handler
    assert_released(fake_gpu)


def test_nms_iou_must_be_above_zero(fake_gpu, model_path, tmp_path):
    """EfficientNMS (TensorRT 8.5+) rejects IoU 0: a one-line error before any GPU work."""
    with pytest.raises(BadInputError, match=r"--iou 0\.0: the NMS IoU threshold must be above 0"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", nms=True, iou=0.0))
    assert not fake_gpu.cuda.FAKE.initialized
    summary = read_summary(model_path, "test")
    with pytest.raises(BadInputError, match="above 0"):
        add_efficient_nms(onnx.load(str(model_path)), summary.info, iou_threshold=0.0)
    build_engine(BuildOptions(model_path, tmp_path / "x.engine", iou=0.0))  # without --nms it is unused


def test_batch_below_a_fixed_leading_dimension_is_a_one_line_error(fake_gpu, model_path, tmp_path, capsys):
    from agent.cli.main import main

    model = _fixed_batch_dynamic_size(model_path, tmp_path / "b2.onnx", 2)
    with pytest.raises(BadInputError, match=r"--batch 1: .* fixed batch of 2 .*--batch 2"):
        build_engine(BuildOptions(model, tmp_path / "x.engine", batch=1))
    capsys.readouterr()
    assert main(["build-engine", str(model), "-o", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --batch 1: ")
    assert_released(fake_gpu)


def test_refused_optimization_profile_is_bad_input(fake_gpu, dynamic_model, tmp_path, monkeypatch):
    """set_shape raises RuntimeError on shapes TensorRT finds inconsistent: exit code 2, not a traceback."""
    def refuse(self, *args):
        raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")

    monkeypatch.setattr(fake_gpu.trt.IOptimizationProfile, "set_shape", refuse)
    with pytest.raises(BadInputError, match=r"refused the optimization profile of input images .*"
                                            r"inconsistent with other shapes"):
        build_engine(BuildOptions(dynamic_model, tmp_path / "x.engine", batch=2))
    assert_released(fake_gpu)


def test_timing_cache_of_another_gpu_is_not_used_and_is_replaced(fake_gpu, model_path, tmp_path, caplog):
    build_engine(BuildOptions(model_path, tmp_path / "a.engine"))
    timing = tmp_path / "tensorrt-timing.cache"
    assert b"Orin (fake)" in timing.read_bytes()
    fake_gpu.cuda.FAKE.device_name, fake_gpu.cuda.FAKE.compute_capability = "Xavier (fake)", (7, 2)
    with caplog.at_level(logging.WARNING):
        build_engine(BuildOptions(model_path, tmp_path / "b.engine"))
    assert "timing cache made on another GPU" in caplog.text
    assert fake_gpu.knobs.STATE.builds[-1].timing_cache_entries_before == 0  # built without its timings
    assert b"Xavier (fake)" in timing.read_bytes() and b"Orin (fake)" not in timing.read_bytes()
    assert_released(fake_gpu)


def test_int8_on_a_release_without_calibration_says_what_it_needs(fake_gpu, model_path, calib_dir, tmp_path):
    fake_gpu.knobs.configure(generation="11")
    with pytest.raises(BadInputError, match=r"--int8 .*TensorRT 11\.\S+ has no INT8 calibration .*"
                                            r"deprecated since TensorRT 10\.1.*Q/DQ"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", int8=True, calib_images=calib_dir))
    with pytest.raises(BadInputError, match=r"--fp16 .*no FP16 builder flag .*export --half"):
        build_engine(BuildOptions(model_path, tmp_path / "x.engine", fp16=True))
    assert not fake_gpu.cuda.FAKE.initialized  # refused before any GPU work
    meta = build_engine(BuildOptions(model_path, tmp_path / "fp32.engine"))  # FP32 builds as before
    assert meta.build["fp16"] is False
    assert_released(fake_gpu)


def test_int8_on_tensorrt_10_warns_about_the_deprecation(fake_gpu, dynamic_model, calib_dir, tmp_path,
                                                         caplog):
    fake_gpu.knobs.configure(generation="10", fast_int8=False)
    with caplog.at_level(logging.WARNING):
        build_engine(BuildOptions(dynamic_model, tmp_path / "x.engine", int8=True, calib_images=calib_dir))
    assert "deprecates INT8 calibration" in caplog.text and "no fast INT8" in caplog.text
    fake_gpu.knobs.configure(generation="8.6")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_engine(BuildOptions(dynamic_model, tmp_path / "y.engine", int8=True, calib_images=calib_dir))
    assert "deprecates" not in caplog.text


def test_int8_calibration_of_a_float16_input_model(fake_gpu, fp16_model, calib_dir, tmp_path):
    """The calibrator's batches are in the input's own type: float16 for an `export --half` model."""
    build_engine(BuildOptions(fp16_model, tmp_path / "x.engine", int8=True, calib_images=calib_dir))
    record = fake_gpu.knobs.STATE.builds[-1]
    assert record.input_dtypes == {"images": "HALF"} and len(record.calibration_batches) == 5
    paths = list_images([str(calib_dir)])
    expected, _ = Preprocessor((416, 416), "letterbox", 1, np.float16)([read_image(paths[2])])
    assert record.calibration_batches[2].dtype == np.float16
    np.testing.assert_array_equal(record.calibration_batches[2], expected)
    assert_released(fake_gpu)
