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
from backend_models import SHIPPED, make_batch_dynamic, matched_fraction, sample_images  # noqa: E402

from agent.backends.base import open_backend  # noqa: E402
from agent.backends.engine_meta import sidecar_path  # noqa: E402
from agent.detector import Detector  # noqa: E402
from agent.engine import BuildOptions, build_engine  # noqa: E402
from agent.errors import ModelError  # noqa: E402
from agent.fileio import write_image  # noqa: E402
from agent.postprocess.postprocessor import PostprocessSettings  # noqa: E402

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
