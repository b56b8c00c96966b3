"""agent.inference.model_path: what a backend loads for the model path a user names."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import ModelError
from agent.inference.backends import base
from agent.inference.model_path import open_backend, resolve_model

onnx = pytest.importorskip("onnx")

# A two-class darknet network small enough to convert in a blink (see test_darknet_onnx.py).
TINY = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=14
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1
anchors=5,6, 10,12
classes=2
num=2
"""
PARAMS = 8 * 4 + 8 * 27 + 14 + 14 * 8


@pytest.fixture
def darknet_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from agent.modeltools.darknet.weights import write_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    cfg = models / "net.cfg"
    cfg.write_text(TINY)
    weights = np.random.default_rng(0).uniform(0.01, 0.2, PARAMS).astype(np.float32)
    write_weights(models / "net.weights", weights)
    (models / "net.names").write_text("cat\ndog\n")
    return cfg


def test_cfg_for_onnxruntime_resolves_to_the_cached_conversion(darknet_cfg: Path, tmp_path: Path) -> None:
    model = resolve_model(darknet_cfg, "onnxruntime")
    assert model.backend == "onnxruntime" and model.darknet is None
    assert model.path.suffix == ".onnx"
    assert model.path.parent == tmp_path / "cache" / "detection-agent" / "darknet"
    assert resolve_model(darknet_cfg, "onnxruntime") == model  # converted once


def test_cfg_for_opencv_carries_its_weights_and_names(darknet_cfg: Path) -> None:
    model = resolve_model(darknet_cfg, "opencv")
    assert model.path == darknet_cfg and model.backend == "opencv"
    assert model.darknet is not None and model.darknet.weights == darknet_cfg.with_suffix(".weights")
    assert model.darknet.info.class_names == ["cat", "dog"] and model.darknet.info.input_size == (64, 64)
    assert resolve_model(darknet_cfg, "opencv", ["a", "b"]).darknet.info.class_names == ["a", "b"]
    with pytest.raises(ModelError, match="2 classes but the names list has 3"):
        resolve_model(darknet_cfg, "opencv", ["a", "b", "c"])
    darknet_cfg.with_suffix(".weights").unlink()
    with pytest.raises(ModelError, match="no weights file beside it"):
        resolve_model(darknet_cfg, "opencv")


@pytest.mark.skipif(not hasattr(cv2.dnn, "readNetFromDarknet"),
                    reason="OpenCV 5 dropped the darknet importer")
def test_a_darknet_cfg_gives_the_same_rows_through_either_backend(darknet_cfg: Path) -> None:
    image = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    opencv = open_backend(darknet_cfg, "opencv")
    ort = open_backend(darknet_cfg, "onnxruntime")
    try:
        assert opencv.info.class_names == ort.info.class_names == ["cat", "dog"]
        (rows_cv,), (rows_ort,) = opencv.infer(image), ort.infer(image)
        # OpenCV multiplies class columns by objectness; the converted graph keeps them apart.
        np.testing.assert_allclose(rows_cv[..., :4], rows_ort[..., :4], rtol=1e-4, atol=1e-3)
    finally:
        opencv.close()
        ort.close()


def test_the_opencv_backend_alone_refuses_a_bare_cfg(darknet_cfg: Path) -> None:
    from agent.inference.backends.opencv import OpenCVBackend

    with pytest.raises(ModelError, match=r"opened through agent\.inference\.model_path"):
        OpenCVBackend(darknet_cfg)


def test_missing_model_and_engine_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(tmp_path / "absent.onnx")
    (tmp_path / "model.engine").write_bytes(b"plan")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    monkeypatch.setattr(base, "installed", lambda name: name != "tensorrt")
    assert resolve_model(tmp_path / "model.engine") == base.ModelFile(tmp_path / "model.onnx", "onnxruntime")
    # Asked for by name, TensorRT is not swapped for anything.
    assert resolve_model(tmp_path / "model.engine", "tensorrt").backend == "tensorrt"
