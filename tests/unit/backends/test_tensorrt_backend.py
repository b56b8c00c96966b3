"""The TensorRT backend's error paths and resource handling, through the fake TensorRT + pycuda.

Tests that load an engine run once per emulated TensorRT release (the ``generation``
fixture: 8.4.1, 8.5.2, 8.6, 10.3, 11.x), JetPack 5's on the numpy 1.24 that broke them.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from backend_models import add_typed_outputs, assert_released

from agent.errors import BackendError, ModelError
from agent.inference.backends.engine_meta import sidecar_path
from agent.inference.model_path import open_backend
from agent.modeltools.tensorrt.build import BuildOptions, build_engine


@pytest.fixture
def engine(fake_gpu, generation, model_path, tmp_path) -> Path:
    path = tmp_path / "model.engine"
    build_engine(BuildOptions(model_path, path))
    return path


def _input(backend) -> np.ndarray:
    return np.random.default_rng(0).random(backend.input_shape, dtype=np.float32)


def test_missing_tensorrt_says_where_it_comes_from(tmp_path, monkeypatch):
    path = tmp_path / "model.engine"
    path.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendError, match=r"TensorRT.*JetPack.*onnxruntime"):
        open_backend(path, "tensorrt")


def test_missing_pycuda_is_named(fake_gpu, engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendError, match="needs pycuda"):
        open_backend(engine, "tensorrt")


def test_other_tensorrt_version_is_refused_before_deserializing(fake_gpu, engine, monkeypatch):
    built = fake_gpu.trt.__version__
    fake_gpu.knobs.configure(version="10.4.0.1")
    calls = []
    monkeypatch.setattr(fake_gpu.trt.Runtime, "deserialize_cuda_engine", lambda *a: calls.append(a))
    with pytest.raises(ModelError, match=rf"TensorRT {re.escape(built)}, this device runs TensorRT "
                                         r"10\.4\.0\.1.*"
                                         r"build-engine .*model\.engine"):
        open_backend(engine, "tensorrt")
    assert calls == []
    assert_released(fake_gpu)


def test_other_gpu_is_refused_and_same_generation_only_warned(fake_gpu, engine, caplog):
    fake_gpu.cuda.FAKE.compute_capability = (7, 2)  # a Xavier
    with pytest.raises(ModelError, match=r"compute 8\.7\), this device has .* \(compute 7\.2\).*"
                                         r"build-engine"):
        open_backend(engine, "tensorrt")
    fake_gpu.cuda.FAKE.compute_capability = (8, 7)
    fake_gpu.cuda.FAKE.device_name = "Orin NX (fake)"
    with caplog.at_level(logging.WARNING):
        open_backend(engine, "tensorrt").close()
    assert "same compute capability" in caplog.text
    assert_released(fake_gpu)


def test_without_sidecar_tensorrt_own_error_is_reported(fake_gpu, engine):
    built = fake_gpu.trt.__version__
    sidecar_path(engine).unlink()
    fake_gpu.knobs.configure(version="10.4.0.1")
    with pytest.raises(ModelError, match=r"cannot load this engine \(.*not compatible with this version.*"
                                         rf"expecting library version 10\.4\.0\.1 got {re.escape(built)}.*"
                                         r"build-engine"):
        open_backend(engine, "tensorrt")
    assert_released(fake_gpu)


def test_without_sidecar_the_engine_still_runs(fake_gpu, engine, caplog):
    sidecar_path(engine).unlink()
    with caplog.at_level(logging.WARNING):
        backend = open_backend(engine, "tensorrt", class_names=["a", "b", "c"])
    assert "no model.engine.json sidecar" in caplog.text
    assert backend.info.class_names == ["a", "b", "c"] and backend.info.input_size == (416, 416)
    assert backend.infer(_input(backend))[0].shape[:2] == (1, 7)
    backend.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_engine_file(fake_gpu, engine, damage):
    data = engine.read_bytes()
    engine.write_bytes(b"\x00" * 64 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cannot load this engine \(.*Serialization.*\).*corrupt"):
        open_backend(engine, "tensorrt")
    assert_released(fake_gpu)


def test_unreadable_sidecar(fake_gpu, engine):
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable engine sidecar"):
        open_backend(engine, "tensorrt")


@pytest.mark.parametrize(("allocations_left", "message"), [
    (1, "cannot create an execution context .*out of GPU memory"),  # weights fit, activations do not
    (3, r"out of GPU memory allocating 0\.\d MB for tensor 'output0' \(\d+ MB free of 8192 MB\)"),
])
def test_out_of_gpu_memory_frees_what_was_taken(fake_gpu, engine, allocations_left, message):
    fake_gpu.cuda.FAKE.fail_alloc_after = allocations_left
    with pytest.raises(BackendError, match=message):
        open_backend(engine, "tensorrt")
    assert_released(fake_gpu)


def test_close_frees_everything_and_is_final(fake_gpu, engine):
    backend = open_backend(engine, "tensorrt")
    backend.infer(_input(backend))
    assert fake_gpu.cuda.live_allocations() and fake_gpu.cuda.live_pinned()
    backend.close()
    backend.close()  # idempotent
    assert_released(fake_gpu)
    assert fake_gpu.cuda.Context.get_current() is None  # the context is gone from this thread's stack
    with pytest.raises(BackendError, match="closed"):
        backend.infer(np.zeros((1, 3, 416, 416), np.float32))
    assert "pycuda.autoinit" not in sys.modules  # never: it would make a context at import time


def test_the_cuda_context_belongs_to_the_opening_thread(fake_gpu, engine):
    backend = open_backend(engine, "tensorrt")
    errors = []

    def other_thread_infer() -> None:
        try:
            backend.infer(_input(backend))
        except BackendError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=other_thread_infer)
    worker.start()
    worker.join()
    assert errors and "does not own its CUDA context" in errors[0]
    expected = backend.infer(_input(backend))[0]
    # Shutdown from another thread (after the inference thread is done) still frees everything.
    closer = threading.Thread(target=backend.close)
    closer.start()
    closer.join()
    assert_released(fake_gpu)
    assert np.isfinite(expected).all()


def test_input_shape_checks(fake_gpu, engine):
    backend = open_backend(engine, "tensorrt")
    with pytest.raises(BackendError, match="input batch has shape"):
        backend.infer(np.zeros((1, 3, 320, 320), np.float32))
    with pytest.raises(BackendError, match="up to"):
        backend.infer(np.zeros((2, 3, 416, 416), np.float32))
    backend.close()


def test_fixed_batch_engine_pads_a_short_batch(fake_gpu, generation, dynamic_model, model_path, tmp_path):
    import onnx

    fixed = onnx.load(str(dynamic_model))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    fixed.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(fixed, str(tmp_path / "batch2.onnx"))
    engine = tmp_path / "batch2.engine"
    meta = build_engine(BuildOptions(tmp_path / "batch2.onnx", engine, batch=2))
    assert not meta.build["dynamic_batch"]
    single = open_backend(model_path, "onnxruntime")
    backend = open_backend(engine, "tensorrt", batch_size=2)
    assert backend.input_shape[0] == 2
    one = np.random.default_rng(1).random((1, 3, 416, 416), dtype=np.float32)
    (out,) = backend.infer(one)
    assert out.shape[0] == 1
    np.testing.assert_allclose(out, single.infer(one)[0], rtol=1e-5, atol=1e-4)
    backend.close()
    single.close()
    assert_released(fake_gpu)


def test_dynamic_engine_clamps_the_requested_batch(fake_gpu, generation, dynamic_model, tmp_path, caplog):
    engine = tmp_path / "b2.engine"
    build_engine(BuildOptions(dynamic_model, engine, batch=2))
    with caplog.at_level(logging.WARNING):
        backend = open_backend(engine, "tensorrt", batch_size=8)
    assert backend.input_shape[0] == 2 and "batches of 1..2" in caplog.text
    backend.close()


def test_sidecar_records_what_was_built(fake_gpu, engine, model_path):
    data = json.loads(sidecar_path(engine).read_text())
    assert data["tensorrt_version"] == fake_gpu.trt.__version__ and data["gpu_name"] == "Orin (fake)"
    assert data["compute_capability"] == [8, 7] and data["output_names"] == ["output0"]
    assert data["model_info"]["input_size"] == [416, 416] and data["model_info"]["class_names"]
    assert data["build"]["source"] == str(model_path) and data["build"]["fp16"] is False


# -- data types, loggers (issue 19: items 1, 2 and 4) ------------------------------------------------


def test_tensor_types_come_from_the_engine_on_every_release(fake_gpu, generation, model_path, tmp_path):
    """bool, uint8, int32, int64 outputs, typed by DataType name: never trt.nptype, which on
    TensorRT 8.4-8.5 with numpy 1.24 raises AttributeError for every type."""
    kinds = ["bool", "int32", "int64"] + (["uint8"] if generation != "8.4" else [])  # 8.4 has no UINT8
    model = add_typed_outputs(model_path, tmp_path / "typed.onnx", kinds)
    build_engine(BuildOptions(model, tmp_path / "typed.engine"))
    backend = open_backend(tmp_path / "typed.engine", "tensorrt")
    outputs = dict(zip(backend.output_names, backend.infer(_input(backend))))
    backend.close()
    raw = outputs["output0"]
    int64 = np.int64 if generation in ("10", "11") else np.int32  # 8.x's parser casts INT64 down
    expected = {"out_bool": (np.bool_, raw > 0.5), "out_int32": (np.int32, raw.astype(np.int32)),
                "out_int64": (int64, raw.astype(np.int64)), "out_uint8": (np.uint8, raw.astype(np.uint8))}
    for name in [f"out_{k}" for k in kinds]:
        dtype, values = expected[name]
        assert outputs[name].dtype == dtype, name
        np.testing.assert_array_equal(outputs[name], values.astype(dtype), err_msg=name)
    assert_released(fake_gpu)


def test_uint8_output_is_refused_by_tensorrt_8_4(fake_gpu, model_path, tmp_path):
    fake_gpu.knobs.configure(generation="8.4")
    model = add_typed_outputs(model_path, tmp_path / "typed.onnx", ["uint8"])
    with pytest.raises(ModelError, match=r"ONNX parser failed: .*unsupported data type UINT8"):
        build_engine(BuildOptions(model, tmp_path / "typed.engine"))
    assert_released(fake_gpu)


def test_each_backend_reports_its_own_tensorrt_errors(fake_gpu, engine, tmp_path):
    """TensorRT sends every message to the first logger it got while that one's runtime lives:
    a second backend's error must still reach the second backend's message."""
    first = open_backend(engine, "tensorrt")
    broken = tmp_path / "broken.engine"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"cannot load this engine \(.*Magic Tag does not match"):
        open_backend(broken, "tensorrt")
    first.infer(_input(first))
    first.close()
    assert_released(fake_gpu)


def test_the_logger_tensorrt_keeps_outlives_builds_and_backends(fake_gpu, engine, model_path, tmp_path):
    """init_libnvinfer_plugins keeps a raw pointer to its logger: it must never be freed."""
    build_engine(BuildOptions(model_path, tmp_path / "nms.engine", nms=True))
    gc.collect()
    assert fake_gpu.knobs.STATE.plugin_logger() is not None, "the plugins' logger was freed after the build"
    backend = open_backend(tmp_path / "nms.engine", "tensorrt")
    backend.close()
    del backend
    gc.collect()
    assert fake_gpu.knobs.STATE.plugin_logger() is not None, "the plugins' logger was freed with the backend"
    assert fake_gpu.knobs.STATE.global_logger() is fake_gpu.knobs.STATE.plugin_logger()
    assert_released(fake_gpu)
