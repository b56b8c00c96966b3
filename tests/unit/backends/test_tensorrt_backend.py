"""The TensorRT backend's error paths and resource handling, through the fake TensorRT + pycuda."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from backend_models import assert_released

from agent.backends.base import open_backend
from agent.backends.engine_meta import sidecar_path
from agent.engine import BuildOptions, build_engine
from agent.errors import BackendError, ModelError


@pytest.fixture
def engine(fake_gpu, model_path, tmp_path) -> Path:
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
    fake_gpu.knobs.configure(version="10.4.0.1")
    calls = []
    monkeypatch.setattr(fake_gpu.trt.Runtime, "deserialize_cuda_engine", lambda *a: calls.append(a))
    with pytest.raises(ModelError, match=r"TensorRT 10\.3\.0\.26, this device runs TensorRT 10\.4\.0\.1.*"
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
    sidecar_path(engine).unlink()
    fake_gpu.knobs.configure(version="10.4.0.1")
    with pytest.raises(ModelError, match=r"cannot load this engine \(.*not compatible with this version.*"
                                         r"expecting library version 10\.4\.0\.1 got 10\.3\.0\.26.*"
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


def test_fixed_batch_engine_pads_a_short_batch(fake_gpu, dynamic_model, model_path, tmp_path):
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


def test_dynamic_engine_clamps_the_requested_batch(fake_gpu, dynamic_model, tmp_path, caplog):
    engine = tmp_path / "b2.engine"
    build_engine(BuildOptions(dynamic_model, engine, batch=2))
    with caplog.at_level(logging.WARNING):
        backend = open_backend(engine, "tensorrt", batch_size=8)
    assert backend.input_shape[0] == 2 and "batches of 1..2" in caplog.text
    backend.close()


def test_sidecar_records_what_was_built(fake_gpu, engine, model_path):
    data = json.loads(sidecar_path(engine).read_text())
    assert data["tensorrt_version"] == "10.3.0.26" and data["gpu_name"] == "Orin (fake)"
    assert data["compute_capability"] == [8, 7] and data["output_names"] == ["output0"]
    assert data["model_info"]["input_size"] == [416, 416] and data["model_info"]["class_names"]
    assert data["build"]["source"] == str(model_path) and data["build"]["fp16"] is False
