"""Backend choice, ONNX Runtime providers and threads, OpenCV DNN on ONNX, engine sidecar versions."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import onnx
import pytest

from agent.errors import BackendError, ModelError
from agent.inference.backends import base
from agent.inference.backends.engine_meta import parse_version
from agent.inference.backends.onnxruntime import choose_providers
from agent.inference.model_path import open_backend


def _only(*present):
    return lambda name: name in present


@pytest.mark.parametrize(("suffix", "present", "expected"), [
    (".engine", ("tensorrt", "onnxruntime", "opencv"), "tensorrt"),
    (".plan", ("tensorrt",), "tensorrt"),
    (".onnx", ("tensorrt", "onnxruntime", "opencv"), "onnxruntime"),
    (".onnx", ("opencv",), "opencv"),  # a Jetson without onnxruntime still runs ONNX
    (".cfg", ("onnxruntime", "opencv"), "onnxruntime"),  # darknet: converted to ONNX on the fly
    (".cfg", ("opencv",), "opencv"),
])
def test_auto_picks_the_best_installed_backend(monkeypatch, suffix, present, expected):
    monkeypatch.setattr(base, "installed", _only(*present))
    assert base.choose_backend(f"model{suffix}", "auto") == expected


def test_explicit_choices_are_checked():
    with pytest.raises(ModelError, match=r"cannot run \.onnx files.*build-engine"):
        base.choose_backend("model.onnx", "tensorrt")
    with pytest.raises(ModelError, match="unknown backend 'tflite'"):
        base.choose_backend("model.onnx", "tflite")
    with pytest.raises(ModelError, match=r"unsupported model file type '\.pt'"):
        base.choose_backend("model.pt", "auto")
    assert base.choose_backend("model.onnx", "opencv") == "opencv"


def test_installed_checks_without_importing(monkeypatch):
    assert base.installed("onnxruntime") and base.installed("opencv")
    monkeypatch.setitem(base.REQUIRES, "tensorrt", "no_such_module_here")
    assert not base.installed("tensorrt")
    monkeypatch.setitem(sys.modules, "no_such_module_here", None)  # a package that failed to import
    assert not base.installed("tensorrt")


def test_auto_runs_the_onnx_beside_an_engine_without_tensorrt(monkeypatch, model_path, tmp_path):
    monkeypatch.setattr(base, "installed", _only("onnxruntime", "opencv"))
    shutil.copy(model_path, tmp_path / "model.onnx")
    (tmp_path / "model.engine").write_bytes(b"plan")
    backend = open_backend(tmp_path / "model.engine", "auto")
    assert backend.name == "onnxruntime"
    backend.close()


def test_choose_providers(tmp_path):
    cpu = ["CPUExecutionProvider"]
    assert choose_providers(cpu) == cpu
    assert choose_providers(["AzureExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                              cache_dir=tmp_path / "cache")
    assert chosen[0] == ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                       "trt_engine_cache_path": str(tmp_path / "cache")})
    assert chosen[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"] and (tmp_path / "cache").is_dir()
    assert choose_providers(cpu, requested=["CPUExecutionProvider"]) == cpu
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        choose_providers(cpu, requested=["CUDAExecutionProvider"])


def test_onnxruntime_thread_count(model_path):
    backend = open_backend(model_path, "onnxruntime", threads=1)
    assert backend._session.get_session_options().intra_op_num_threads == 1
    assert backend.providers == ["CPUExecutionProvider"]
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer(np.zeros(backend.input_shape, np.float32))


def test_opencv_runs_a_fixed_batch_one_model_image_by_image(model_path):
    backend = open_backend(model_path, "opencv", batch_size=2)
    single = open_backend(model_path, "opencv")
    assert backend.input_shape[0] == 2 and backend.target == "cpu"
    batch = np.random.default_rng(0).random((2, 3, 416, 416), dtype=np.float32)
    (both,) = backend.infer(batch)
    np.testing.assert_array_equal(both[1:], single.infer(batch[1:])[0])
    assert backend.info.class_names and backend.info.output_format == "anchor_free"
    backend.close()
    single.close()


def test_opencv_onnx_needs_float32_input_and_the_onnx_package(fp16_model, model_path, monkeypatch):
    with pytest.raises(ModelError, match=r"OpenCV DNN takes float32 input.*onnxruntime"):
        open_backend(fp16_model, "opencv")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackendError, match="opencv backend needs the onnx package"):
        open_backend(model_path, "opencv")


def test_corrupt_onnx_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    for backend in ("onnxruntime", "opencv"):
        with pytest.raises(ModelError):
            open_backend(bad, backend)


def test_model_without_project_metadata_uses_ultralytics_keys(model_path, tmp_path):
    model = onnx.load(str(model_path))
    kept = [p for p in model.metadata_props if p.key != "detection_agent.model_info"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "plain.onnx"))
    for name in ("onnxruntime", "opencv"):
        backend = open_backend(tmp_path / "plain.onnx", name)
        assert backend.info.input_size == (416, 416) and len(backend.info.class_names) == 3
        backend.close()


def test_versions_compare_as_numbers():
    assert parse_version("8.10.0") > parse_version("8.9.9")
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    with pytest.raises(ValueError):
        parse_version("unknown")
