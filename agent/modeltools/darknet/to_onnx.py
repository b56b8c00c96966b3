"""Darknet ``.cfg`` + ``.weights`` -> ONNX, built with the ``onnx`` package only (no torch).

The graph reproduces OpenCV's darknet importer (the reference the tests compare with):

- convolutional: batch norm folded into the convolution (epsilon ``BN_EPSILON``, the value
  OpenCV's importer uses), activations linear / leaky (0.1) / relu / logistic / mish / swish;
- maxpool: ``padding`` defaults to ``size - 1``, split as floor left/top and ceil
  right/bottom, so ``size=2 stride=1`` keeps the spatial size (yolov3-tiny);
- upsample (nearest), route (several layers, negative or absolute indices, ``groups`` /
  ``group_id``), shortcut (``from``, ``activation``);
- yolo heads are decoded inside the graph: one output ``yolo_<layer>`` per head of shape
  ``[B, H*W*na, 5+nc]``: cx, cy, w, h in input pixels, sigmoid objectness and sigmoid class
  probabilities (the ``objectness`` layout of agent/inference/postprocess/decode.py). Rows run
  ``(y, x, anchor)``, OpenCV's order, so outputs compare row by row; the names are OpenCV's
  layer names. Keeping the decode in the graph lets TensorRT build it without plugins.

The layer plan is layers.py; the weights file, weights.py; conversion on the fly, cache.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import BackendError, ModelError
from agent.inference.labels import read_names
from agent.modeltools.darknet import cfg as darknet
from agent.modeltools.darknet.layers import Layer, PathLike, plan
from agent.modeltools.darknet.weights import read_weights
from agent.types import ModelInfo

if TYPE_CHECKING:  # onnx is imported when a conversion runs
    from onnx import ModelProto, NodeProto, TensorProto

log = logging.getLogger(__name__)

#: OpenCV's darknet importer sets BatchNorm ``eps`` to 1e-6 (darknet's own ``.000001f``).
BN_EPSILON = 1e-6
#: Opset 13: Resize with scales, Slice with inputs; TensorRT 8 (JetPack 5) parses it.
OPSET = 13
#: Bumped whenever the graph changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: List[NodeProto] = []
        self.initializers: List[TensorProto] = []
        self._count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{name}" if name else f"t{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _activate(b: _Builder, x: str, activation: str, name: str) -> str:
    if activation == "linear":
        return x
    if activation == "leaky":
        return b.op("LeakyRelu", [x], name, alpha=0.1)
    if activation == "relu":
        return b.op("Relu", [x], name)
    if activation == "logistic":
        return b.op("Sigmoid", [x], name)
    if activation == "swish":
        return b.op("Mul", [x, b.op("Sigmoid", [x], name + "_sig")], name)
    # mish = x * tanh(softplus(x)): the Mish op needs opset 18, which TensorRT 8 lacks.
    soft = b.op("Softplus", [x], name + "_softplus")
    return b.op("Mul", [x, b.op("Tanh", [soft], name + "_tanh")], name)


class _Weights:
    """Sequential reader of the parameter array, with the position for error messages."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.pos = values, 0

    def take(self, count: int) -> np.ndarray:
        part = self.values[self.pos:self.pos + count]
        self.pos += count
        return part.astype(np.float32)


def _conv(b: _Builder, x: str, layer: Layer, in_c: int, weights: _Weights, path: Path) -> str:
    sec, i = layer.section, layer.index
    filters, size = sec.get_int("filters", 1, path), sec.get_int("size", 1, path)
    stride, groups = sec.get_int("stride", 1, path), sec.get_int("groups", 1, path)
    pad = size // 2 if sec.get_int("pad", 0, path) else sec.get_int("padding", 0, path)
    if sec.get_int("batch_normalize", 0, path):
        beta, gamma, mean, var = (weights.take(filters) for _ in range(4))
        rows = weights.take(filters * (in_c // groups) * size * size).reshape(filters, -1)
        # folded in float64, applied in float32 (a 60 M-parameter kernel in float64 is slow)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPSILON)
        flat = rows * scale[:, None].astype(np.float32)
        bias = beta - mean * scale
    else:
        bias = weights.take(filters)
        flat = weights.take(filters * (in_c // groups) * size * size)
    kernel = flat.reshape(filters, in_c // groups, size, size).astype(np.float32)
    w_name = b.const(f"conv_{i}.weight", kernel)
    b_name = b.const(f"conv_{i}.bias", bias.astype(np.float32))
    y = b.op("Conv", [x, w_name, b_name], f"conv_{i}", kernel_shape=[size, size], strides=[stride, stride],
             pads=[pad, pad, pad, pad], group=groups)
    return _activate(b, y, sec.options.get("activation", "logistic"), f"conv_{i}_act")


def _yolo_head(b: _Builder, x: str, layer: Layer, info: ModelInfo, head: int, input_hw: Tuple[int, int],
               path: Path) -> Tuple[str, int]:
    """Decode a raw head into ``[B, H*W*na, 5+nc]`` rows ordered (y, x, anchor)."""
    c, h, w = layer.shape
    anchors = np.array(info.anchors[head], np.float32)
    na, nc = len(anchors), info.num_classes
    if c != na * (5 + nc):
        raise ModelError(f"{path}:{layer.section.line}: [yolo] expects {na}x(5+{nc}) = {na * (5 + nc)} "
                         f"input channels, the layer before gives {c}")
    i, n = layer.index, h * w * na
    shape5 = b.const(f"yolo_{i}.shape5", np.array([-1, na, 5 + nc, h, w], np.int64))
    shape3 = b.const(f"yolo_{i}.shape3", np.array([-1, n, 5 + nc], np.int64))
    t = b.op("Reshape", [x, shape5], f"yolo_{i}_reshape5")
    t = b.op("Transpose", [t], f"yolo_{i}_transpose", perm=[0, 3, 4, 1, 2])
    t = b.op("Reshape", [t, shape3], f"yolo_{i}_rows")
    sig = b.op("Sigmoid", [t], f"yolo_{i}_sigmoid")
    ys, xs, anchor = np.meshgrid(np.arange(h), np.arange(w), np.arange(na), indexing="ij")
    grid = np.stack([xs, ys], -1).reshape(1, n, 2).astype(np.float32)
    scale = info.scale_x_y[head]
    stride = np.array([input_hw[1] / w, input_hw[0] / h], np.float32)

    def sl(src: str, start: int, end: int, tag: str) -> str:
        starts = b.const(f"yolo_{i}.{tag}_start", np.array([start], np.int64))
        ends = b.const(f"yolo_{i}.{tag}_end", np.array([end], np.int64))
        axes = b.const(f"yolo_{i}.{tag}_axes", np.array([2], np.int64))
        return b.op("Slice", [src, starts, ends, axes], f"yolo_{i}_{tag}")

    xy = sl(sig, 0, 2, "xy")
    if scale != 1.0:  # darknet's scale_x_y lets centres reach the cell borders
        xy = b.op("Mul", [xy, b.const(f"yolo_{i}.scale_x_y", np.array(scale, np.float32))], f"yolo_{i}_xys")
    # (sig * s - (s - 1) / 2 + grid) * stride: one Add with the offset folded into the grid
    xy = b.op("Add", [xy, b.const(f"yolo_{i}.grid", grid - np.float32((scale - 1) / 2))], f"yolo_{i}_xyg")
    xy = b.op("Mul", [xy, b.const(f"yolo_{i}.stride", stride)], f"yolo_{i}_xypx")
    wh = b.op("Exp", [sl(t, 2, 4, "wh")], f"yolo_{i}_whexp")
    wh = b.op("Mul", [wh, b.const(f"yolo_{i}.anchors", anchors[anchor].reshape(1, n, 2))], f"yolo_{i}_whpx")
    rest = sl(sig, 4, 5 + nc, "scores")
    return b.op("Concat", [xy, wh, rest], f"yolo_{i}", axis=2), n


def build(cfg_path: PathLike, weights_path: PathLike, names: Optional[Sequence[str]] = None,
          imgsz: Optional[Union[int, Tuple[int, int]]] = None, batch: int = 1,
          dynamic: bool = False) -> ModelProto:
    """The ``onnx.ModelProto`` of a darknet network (checked with the ONNX checker)."""
    try:
        import onnx
    except ImportError:
        raise BackendError("converting darknet models needs the onnx package (pip install onnx)") from None
    path = Path(cfg_path)
    hw = _imgsz(imgsz, path)
    net, layers = plan(path, hw)
    input_hw = hw or (net.get_int("height", None, path), net.get_int("width", None, path))
    info = _info(path, names, input_hw, layers)
    version, seen, values = read_weights(weights_path)
    expected = sum(layer.params for layer in layers)
    if values.size != expected:
        raise ModelError(f"{weights_path}: holds {values.size} float32 parameters after its header but "
                         f"{path} needs {expected}; the weights belong to another cfg")
    log.info("%s: weights version %d.%d.%d, %d images seen", weights_path, *version, seen)
    weights = _Weights(values)
    b = _Builder()
    tensors: List[str] = []
    outputs: List[Tuple[str, int]] = []
    head = 0
    for layer in layers:
        sec, i = layer.section, layer.index
        x = tensors[layer.inputs[0]] if layer.inputs[0] >= 0 else "images"
        in_c = layers[layer.inputs[0]].shape[0] if layer.inputs[0] >= 0 else net.get_int("channels", 3, path)
        if sec.kind == "convolutional":
            y = _conv(b, x, layer, in_c, weights, path)
        elif sec.kind == "maxpool":
            stride = sec.get_int("stride", 1, path)
            size = sec.get_int("size", stride, path)
            padding = sec.get_int("padding", size - 1, path)
            lo, hi = padding // 2, padding - padding // 2  # OpenCV: floor left/top, ceil right/bottom
            y = b.op("MaxPool", [x], f"pool_{i}", kernel_shape=[size, size], strides=[stride, stride],
                     pads=[lo, lo, hi, hi])
        elif sec.kind == "upsample":
            s = float(sec.get_int("stride", 2, path))
            scales = b.const(f"upsample_{i}.scales", np.array([1, 1, s, s], np.float32))
            y = b.op("Resize", [x, "", scales], f"upsample_{i}", mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        elif sec.kind == "route":
            groups, group_id = sec.get_int("groups", 1, path), sec.get_int("group_id", 0, path)
            parts = []
            for k, src in enumerate(layer.inputs):
                part = tensors[src]
                if groups > 1:
                    step = layers[src].shape[0] // groups
                    starts = b.const(f"route_{i}.{k}_start", np.array([step * group_id], np.int64))
                    ends = b.const(f"route_{i}.{k}_end", np.array([step * (group_id + 1)], np.int64))
                    axes = b.const(f"route_{i}.{k}_axes", np.array([1], np.int64))
                    part = b.op("Slice", [part, starts, ends, axes], f"route_{i}_{k}")
                parts.append(part)
            y = parts[0] if len(parts) == 1 else b.op("Concat", parts, f"route_{i}", axis=1)
        elif sec.kind == "shortcut":
            y = b.op("Add", [x, tensors[layer.inputs[1]]], f"shortcut_{i}")
            y = _activate(b, y, sec.options.get("activation", "linear"), f"shortcut_{i}_act")
        else:  # yolo
            outputs.append(_yolo_head(b, x, layer, info, head, input_hw, path))
            head += 1
            y = x
        tensors.append(y)
    helper = onnx.helper
    batch_dim: Union[int, str] = "batch" if dynamic else int(batch)
    nc = info.num_classes
    graph = helper.make_graph(
        b.nodes, path.stem,
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT,
                                       [batch_dim, net.get_int("channels", 3, path), *input_hw])],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [batch_dim, n, 5 + nc])
         for name, n in outputs],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="detection-agent convert-darknet")
    model.ir_version = 8  # ONNX Runtime >= 1.14 and TensorRT 8.5 read IR 8
    helper.set_model_props(model, {**info.to_metadata(),
                                   "detection_agent.darknet": f"{path.name} {Path(weights_path).name}"})
    onnx.checker.check_model(model)
    return model


def _imgsz(imgsz: Optional[Union[int, Tuple[int, int]]], path: Path) -> Optional[Tuple[int, int]]:
    if imgsz is None:
        return None
    hw = (int(imgsz), int(imgsz)) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    if min(hw) < 32 or hw[0] % 32 or hw[1] % 32:
        raise ModelError(f"{path}: input size {hw} must be a positive multiple of 32")
    return hw


def _info(path: Path, names: Optional[Sequence[str]], input_hw: Tuple[int, int],
          layers: List[Layer]) -> ModelInfo:
    if names is None:
        names_file = darknet.find_names_file(path)
        names = read_names(names_file) if names_file else None
        heads = [layer for layer in layers if layer.section.kind == "yolo"]
        classes = heads[-1].section.get_int("classes", None, path) if heads else 0
        if names is not None and len(names) != classes:
            # A coco.names beside a 20-class cfg: numbered names rather than a failed load.
            log.warning("%s: %s has %d names, the network %d classes; using class numbers",
                        path, names_file, len(names), classes)
            names = [str(k) for k in range(classes)]
    strides = [input_hw[0] // layers[layer.index].shape[1] for layer in layers
               if layer.section.kind == "yolo"]
    return dataclasses.replace(darknet.model_info(path, names), input_size=input_hw,
                               output_format="objectness", strides=strides)


def convert(cfg_path: PathLike, weights_path: PathLike, output: PathLike,
            names: Optional[Sequence[str]] = None, imgsz: Optional[Union[int, Tuple[int, int]]] = None,
            batch: int = 1, dynamic: bool = False) -> Path:
    """Convert and write ``output`` atomically; returns its path."""
    from agent.fileio import atomic_write_bytes

    model = build(cfg_path, weights_path, names, imgsz, batch, dynamic)
    atomic_write_bytes(output, model.SerializeToString())
    return Path(output)
