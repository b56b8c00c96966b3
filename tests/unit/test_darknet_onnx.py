"""Darknet converter without OpenCV: weights headers, size checks, cfg errors, graph shape."""

from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelError
from agent.modeltools.darknet import cache as darknet_cache
from agent.modeltools.darknet import layers as darknet_layers
from agent.modeltools.darknet import to_onnx as darknet_onnx
from agent.modeltools.darknet import weights as darknet_weights

onnx = pytest.importorskip("onnx")

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
[maxpool]
size=2
stride=1
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
jitter=.3
"""
# 8 * 4 (BN) + 8*3*3*3 kernel, then 14 biases + 14*8 kernel
PARAMS = 8 * 4 + 8 * 27 + 14 + 14 * 8


def write(tmp_path: Path, text: str = TINY, name: str = "net.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parameter_count_and_plan(tmp_path):
    cfg = write(tmp_path)
    assert darknet_layers.parameter_count(cfg) == PARAMS
    _, layers = darknet_layers.plan(cfg)
    # size-2 stride-1 maxpool keeps 32x32 (darknet pads right/bottom)
    assert [layer.shape for layer in layers] == [(8, 64, 64), (8, 32, 32), (8, 32, 32), (14, 32, 32),
                                                 (14, 32, 32)]


@pytest.mark.parametrize("version, header_bytes", [((0, 1, 0), 16), ((0, 2, 0), 20), ((1, 0, 0), 20),
                                                    ((1000, 2, 0), 16)])
def test_weights_header_variants(tmp_path, version, header_bytes):
    params = np.arange(PARAMS, dtype=np.float32)
    path = tmp_path / "w.weights"
    darknet_weights.write_weights(path, params, version=version, seen=123456)
    assert path.stat().st_size == header_bytes + 4 * PARAMS
    got_version, seen, values = darknet_weights.read_weights(path)
    assert (got_version, seen) == (version, 123456)
    np.testing.assert_array_equal(values, params)


def test_converted_graph_shapes_metadata_and_batch(tmp_path):
    cfg = write(tmp_path)
    weights = tmp_path / "net.weights"
    darknet_weights.write_weights(weights, np.zeros(PARAMS, np.float32))
    model = darknet_onnx.build(cfg, weights, names=["a", "b"], batch=3)
    (out,) = model.graph.output
    assert out.name == "yolo_4"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [3, 32 * 32 * 2, 7]
    meta = {p.key: p.value for p in model.metadata_props}
    from agent.types import ModelInfo

    info = ModelInfo.from_metadata(meta)
    assert info.output_format == "objectness" and info.strides == [2] and info.class_names == ["a", "b"]
    assert info.anchors == [[(5, 6), (10, 12)]] and info.resize_mode == "resize"
    dynamic = darknet_onnx.build(cfg, weights, names=["a", "b"], dynamic=True, imgsz=96)
    dims = dynamic.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 96, 96]
    with pytest.raises(ModelError, match="multiple of 32"):
        darknet_onnx.build(cfg, weights, imgsz=100)


def test_weights_size_mismatch_names_both_counts(tmp_path):
    cfg = write(tmp_path)
    weights = tmp_path / "net.weights"
    darknet_weights.write_weights(weights, np.zeros(PARAMS - 5, np.float32))
    with pytest.raises(ModelError, match=f"holds {PARAMS - 5} float32 parameters.*needs {PARAMS}"):
        darknet_onnx.build(cfg, weights, names=["a", "b"])
    (tmp_path / "bad.weights").write_bytes(b"\0" * 10)
    with pytest.raises(ModelError, match="too short"):
        darknet_weights.read_weights(tmp_path / "bad.weights")


@pytest.mark.parametrize("edit, message", [
    (("[maxpool]\nsize=2\nstride=2\n", "[local]\nsize=2\nstride=2\n"), ":12: unsupported layer [local]"),
    (("activation=leaky", "activation=elu"), ":11: unsupported activation 'elu'"),
    (("batch_normalize=1", "batch_normalize=1\ndilation=2"),
     ":7: unsupported key 'dilation' in [convolutional]"),
    (("jitter=.3", "new_coords=1"), ":29: unsupported key 'new_coords' in [yolo]"),
])
def test_unsupported_cfg_content_names_file_and_line(tmp_path, edit, message):
    cfg = write(tmp_path, TINY.replace(*edit, 1))
    with pytest.raises(ModelError) as caught:
        darknet_layers.plan(cfg)
    assert str(caught.value).startswith(f"{cfg}{message}")


def test_route_out_of_range_is_reported(tmp_path):
    route = "[route]\nlayers=-9\n[convolutional]\nfilters=14"
    cfg = write(tmp_path, TINY.replace("[convolutional]\nfilters=14", route))
    with pytest.raises(ModelError, match=r":19: \[route\] layers=-9 points at layer -6"):
        darknet_layers.plan(cfg)


def test_cached_onnx_converts_once_into_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    cfg = write(models)
    darknet_weights.write_weights(models / "net.weights", np.zeros(PARAMS, np.float32))
    (models / "net.names").write_text("a\nb\n")
    first = darknet_cache.cached_onnx(cfg)
    assert first.parent == tmp_path / "cache" / "detection-agent" / "darknet" and first.is_file()
    mtime = first.stat().st_mtime_ns
    assert darknet_cache.cached_onnx(cfg) == first and first.stat().st_mtime_ns == mtime
    darknet_weights.write_weights(models / "net.weights", np.ones(PARAMS, np.float32))
    assert darknet_cache.cached_onnx(cfg) != first  # new weights, new conversion
