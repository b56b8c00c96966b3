"""TensorRT and pycuda for real, on an NVIDIA GPU (a Jetson): skipped where they are missing.

The same checks as the fake-backed unit tests, with tolerances for what real TensorRT does
differently: FP32 engines use TF32 on Ampere GPUs (Orin) and FP16/INT8 change numbers, so
detections are matched (class, IoU >= 0.9, score within 0.02) rather than compared exactly.
Building the engines takes a few minutes; tests/gpu/check_tensorrt.sh runs these, then mAP
and latency.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt")
cuda = pytest.importorskip("pycuda.driver")
FAKES = Path(__file__).resolve().parents[1] / "fakes"
if str(Path(trt.__file__).resolve()).startswith(str(FAKES)):
    pytest.skip("only the fake tensorrt is importable", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "backends"))

import numpy as np  # noqa: E402
from backend_models import (  # noqa: E402
    SHIPPED,
    add_typed_outputs,
    make_batch_dynamic,
    matched_fraction,
    sample_images,
)

from agent.errors import BackendError, BadInputError, ModelError  # noqa: E402
from agent.fileio import write_image  # noqa: E402
from agent.inference.backends.engine_meta import sidecar_path  # noqa: E402
from agent.inference.backends.trt_api import numpy_dtype  # noqa: E402
from agent.inference.detector import Detector  # noqa: E402
from agent.inference.model_path import open_backend  # noqa: E402
from agent.inference.postprocess.postprocessor import PostprocessSettings  # noqa: E402
from agent.modeltools.tensorrt.build import BuildOptions, build_engine  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not SHIPPED.is_file(), reason="models/shapes-yolov3-tiny.onnx not present")]

SETTINGS = PostprocessSettings(conf_threshold=0.25, iou_threshold=0.45)


@pytest.fixture(scope="module")
def images():
    return sample_images()


@pytest.fixture(scope="module")
def reference(images):
    with Detector.open(SHIPPED, "onnxruntime", settings=SETTINGS) as detector:
        return detector(images)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("engines")
    calib = folder / "calib"
    from agent.datasets.synthetic import render_scene

    for i in range(64):
        write_image(calib / f"{i:03d}.jpg", render_scene(np.random.default_rng(100 + i), 640, 480).image)
    built = {}
    for name, options in {"fp32": {}, "fp16": {"fp16": True},
                          "int8": {"int8": True, "calib_images": calib},
                          "nms": {"fp16": True, "nms": True, "score": 0.25, "iou": 0.45}}.items():
        built[name] = folder / f"{name}.engine"
        build_engine(BuildOptions(SHIPPED, built[name], **options))
    return built


def _detect(engine, images, settings=SETTINGS, batch=1):
    with Detector.open(engine, "tensorrt", batch_size=batch, settings=settings) as detector:
        assert detector.backend.api == ("v3" if hasattr(trt, "TensorIOMode") else "v2")
        return detector(images)


@pytest.mark.parametrize(("name", "share"), [("fp32", 0.98), ("fp16", 0.95), ("int8", 0.7)])
def test_engines_find_what_onnxruntime_finds(engines, images, reference, name, share):
    got = _detect(engines[name], images)
    fraction = matched_fraction(got, reference)
    print(f"{name}: {fraction:.1%} of ONNX Runtime's detections reproduced")
    assert fraction >= share


def test_nms_engine_matches_host_nms(engines, images):
    multi_label = PostprocessSettings(0.25, 0.45, multi_label=True)
    with Detector.open(SHIPPED, "onnxruntime", settings=multi_label) as detector:
        host = detector(images)
    assert matched_fraction(_detect(engines["nms"], images), host) >= 0.95


def test_dynamic_batch(tmp_path, images, reference):
    model = make_batch_dynamic(SHIPPED, tmp_path / "dynamic.onnx")
    engine = tmp_path / "b4.engine"
    build_engine(BuildOptions(model, engine, batch=4, fp16=True))
    assert matched_fraction(_detect(engine, images, batch=4), reference) >= 0.95


def test_version_mismatch_is_caught_before_deserializing(engines, tmp_path):
    engine = tmp_path / "old.engine"
    engine.write_bytes(engines["fp16"].read_bytes())
    text = sidecar_path(engines["fp16"]).read_text().replace(trt.__version__, "7.0.0.1")
    sidecar_path(engine).write_text(text)
    with pytest.raises(ModelError, match="build-engine"):
        open_backend(engine, "tensorrt")


def test_close_gives_the_memory_back(engines):
    cuda.init()
    ctx = cuda.Device(0).make_context()
    try:
        free_before, _ = cuda.mem_get_info()
        ctx.pop()
        for _ in range(5):
            backend = open_backend(engines["fp16"], "tensorrt")
            backend.infer(np.zeros(backend.input_shape, backend.input_dtype))
            backend.close()
        ctx.push()
        free_after, _ = cuda.mem_get_info()
    finally:
        ctx.detach()
    assert free_before - free_after < 64 << 20  # five loads leaked nothing that adds up


# -- issue 19: what the fake claims about this TensorRT, checked on the device ------------------------


def test_dtype_mapping_agrees_with_tensorrt():
    """Our DataType -> numpy table against trt.nptype, wherever this TensorRT's nptype works
    (on TensorRT 8.4-8.5 with numpy 1.24-1.26 it raises AttributeError for every type)."""
    compared = []
    for name, member in trt.DataType.__members__.items():
        try:
            theirs = trt.nptype(member)
        except AttributeError as exc:
            print(f"trt.nptype({name}) fails here (expected on TensorRT 8.4-8.5 with numpy 1.24-1.26): {exc}")
            continue
        except TypeError:
            theirs = None  # no numpy equivalent in TensorRT's table
        try:
            ours = numpy_dtype(member)
        except ModelError:
            assert theirs is None, f"{name}: TensorRT maps it to {theirs}, the agent refuses it"
            continue
        if theirs is not None:
            assert ours == np.dtype(theirs), f"{name}: agent {ours}, TensorRT {theirs}"
            compared.append(name)
    print(f"TensorRT {trt.__version__}: agreed on {compared}")


def test_engine_tensor_types_on_this_tensorrt(tmp_path):
    members = trt.DataType.__members__
    kinds = ["bool", "int32", "int64"] + (["uint8"] if "UINT8" in members else [])
    model = add_typed_outputs(SHIPPED, tmp_path / "typed.onnx", kinds)
    build_engine(BuildOptions(model, tmp_path / "typed.engine"))
    backend = open_backend(tmp_path / "typed.engine", "tensorrt")
    try:
        x = np.random.default_rng(0).random(backend.input_shape, dtype=np.float32)
        outputs = dict(zip(backend.output_names, backend.infer(x)))
    finally:
        backend.close()
    raw = outputs["output0"]
    int64 = np.int64 if "INT64" in members else np.int32  # before TensorRT 10 the parser casts down
    expected = {"bool": (np.bool_, raw > 0.5), "int32": (np.int32, raw.astype(np.int32)),
                "int64": (int64, raw.astype(np.int64)), "uint8": (np.uint8, raw.astype(np.uint8))}
    for kind in kinds:
        dtype, values = expected[kind]
        got = outputs[f"out_{kind}"]
        assert got.dtype == dtype, kind
        # casts of TF32/FP32 values near an integer may round either way on the GPU
        assert np.mean(got == values.astype(dtype)) > 0.99, kind


def test_failed_builds_leave_the_gpu_usable(engines, tmp_path):
    """A refused plugin, a network that cannot build and a bad profile: each one a clear error,
    and afterwards engines still load and the memory is back."""
    import onnx

    from agent.inference.backends.onnx_info import read_summary
    from agent.modeltools.tensorrt.nms_plugin import add_efficient_nms

    cuda.init()
    ctx = cuda.Device(0).make_context()
    free_before, _ = cuda.mem_get_info()
    ctx.pop()
    try:
        # EfficientNMS with IoU 0: the agent refuses it; TensorRT 8.5+ refuses it too (checked here)
        with pytest.raises(BadInputError, match="--iou"):
            build_engine(BuildOptions(SHIPPED, tmp_path / "x.engine", nms=True, iou=0.0))
        model = add_efficient_nms(onnx.load(str(SHIPPED)), read_summary(SHIPPED, "gpu").info, 0.25, 0.5)
        (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
        next(a for a in node.attribute if a.name == "iou_threshold").f = 0.0
        onnx.save(model, str(tmp_path / "iou0.onnx"))
        if tuple(int(v) for v in trt.__version__.split(".")[:2]) >= (8, 5):
            with pytest.raises(ModelError, match="Could not create plugin"):
                build_engine(BuildOptions(tmp_path / "iou0.onnx", tmp_path / "x.engine"))
        # a network without outputs parses but cannot build
        graph = onnx.load(str(SHIPPED)).graph
        no_output = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["images"], ["copy"])], "no-output", [graph.input[0]], []),
            opset_imports=[onnx.helper.make_opsetid("", 13)])
        no_output.metadata_props.add(key="imgsz", value="[416, 416]")
        onnx.save(no_output, str(tmp_path / "no-output.onnx"))
        with pytest.raises((BackendError, ModelError)):
            build_engine(BuildOptions(tmp_path / "no-output.onnx", tmp_path / "x.engine"))
        # --batch against a fixed leading dimension with a dynamic size: set_shape raises, one line
        fixed = make_batch_dynamic(SHIPPED, tmp_path / "dyn.onnx")
        fixed_model = onnx.load(str(fixed))
        dims = fixed_model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_value = 2
        dims[2].dim_param = "height"
        onnx.save(fixed_model, str(tmp_path / "b2.onnx"))
        with pytest.raises(BadInputError, match="fixed batch of 2"):
            build_engine(BuildOptions(tmp_path / "b2.onnx", tmp_path / "x.engine", batch=1))
        backend = open_backend(engines["fp16"], "tensorrt")
        backend.infer(np.zeros(backend.input_shape, backend.input_dtype))
        backend.close()
        ctx.push()
        free_after, _ = cuda.mem_get_info()
    finally:
        ctx.detach()
    assert free_before - free_after < 64 << 20


def test_a_second_backend_reports_its_own_tensorrt_errors(engines, tmp_path):
    """TensorRT logs to the first logger it got while that runtime lives: errors must still reach
    the backend that caused them."""
    first = open_backend(engines["fp16"], "tensorrt")
    try:
        broken = tmp_path / "broken.engine"
        broken.write_bytes(b"\x00" * 4096)
        with pytest.raises(ModelError, match=r"cannot load this engine \((?!no message from TensorRT)"):
            open_backend(broken, "tensorrt")
    finally:
        first.close()
