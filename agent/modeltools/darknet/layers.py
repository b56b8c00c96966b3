"""A darknet network planned layer by layer: inputs, output shapes and parameter counts.

The plan checks every layer, key and value the ONNX converter (to_onnx.py) implements, and
reports the rest as ``FILE:LINE: unsupported ...``; the converter and the loader of darknet
weights into ultralytics (agent/training/darknet_init.py) both walk it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from agent.errors import ModelError
from agent.modeltools.darknet import cfg as darknet

ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "mish", "swish")

#: Keys that change inference and are implemented, per section kind.
SUPPORTED_KEYS: Dict[str, Tuple[str, ...]] = {
    "convolutional": ("filters", "size", "stride", "pad", "padding", "groups", "batch_normalize",
                      "activation"),
    "maxpool": ("size", "stride", "padding"),
    "upsample": ("stride",),
    "route": ("layers", "groups", "group_id"),
    "shortcut": ("from", "activation"),
    "yolo": ("mask", "anchors", "classes", "num", "scale_x_y", "thresh"),
}
#: Training-only keys: accepted and ignored (they do not change the forward pass).
TRAINING_KEYS: Dict[str, Tuple[str, ...]] = {
    "convolutional": ("flipped",),
    "yolo": ("jitter", "ignore_thresh", "truth_thresh", "random", "iou_normalizer", "cls_normalizer",
             "obj_normalizer", "iou_loss", "iou_thresh", "nms_kind", "beta_nms", "max_delta",
             "counters_per_class", "label_smooth_eps", "resize", "focal_loss", "max"),
}

PathLike = Union[str, Path]


@dataclasses.dataclass
class Layer:
    """One planned darknet layer: its section, input indices and output shape (C, H, W)."""

    index: int
    section: darknet.Section
    inputs: List[int]
    shape: Tuple[int, int, int]
    params: int = 0  # float32 values it takes from the weights file


def _unsupported(path: Path, section: darknet.Section, what: str, line: Optional[int] = None) -> ModelError:
    return ModelError(f"{path}:{line or section.line}: unsupported {what}")


def _check_keys(path: Path, section: darknet.Section) -> None:
    allowed = SUPPORTED_KEYS[section.kind] + TRAINING_KEYS.get(section.kind, ())
    for key, line in section.option_lines.items():
        if key not in allowed:
            raise _unsupported(path, section, f"key {key!r} in [{section.kind}]", line)


def _resolve(path: Path, section: darknet.Section, index: int, ref: int, key: str) -> int:
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise ModelError(f"{path}:{section.option_lines.get(key, section.line)}: [{section.kind}] "
                         f"{key}={ref} points at layer {target}, outside 0..{index - 1}")
    return target


def plan(cfg_path: PathLike, imgsz: Optional[Tuple[int, int]] = None) -> Tuple[darknet.Section, List[Layer]]:
    """The ``[net]`` section and every layer with its output shape and parameter count.

    Raises ``FILE:LINE: unsupported ...`` for layers, keys and values this converter lacks.
    """
    path = Path(cfg_path)
    sections = darknet.parse_cfg(path)
    net = sections[0]
    height, width = imgsz or (net.get_int("height", None, path), net.get_int("width", None, path))
    channels = net.get_int("channels", 3, path)
    layers: List[Layer] = []
    shape = (channels, height, width)
    for index, sec in enumerate(sections[1:]):
        if sec.kind not in SUPPORTED_KEYS:
            raise _unsupported(path, sec, f"layer [{sec.kind}]")
        _check_keys(path, sec)
        prev = index - 1
        c, h, w = layers[prev].shape if layers else shape
        inputs = [prev] if layers else [-1]  # -1: the image input
        params = 0
        if sec.kind == "convolutional":
            filters, size = sec.get_int("filters", 1, path), sec.get_int("size", 1, path)
            stride, groups = sec.get_int("stride", 1, path), sec.get_int("groups", 1, path)
            pad = size // 2 if sec.get_int("pad", 0, path) else sec.get_int("padding", 0, path)
            activation = sec.options.get("activation", "logistic")  # darknet's default
            if activation not in ACTIVATIONS:
                raise _unsupported(path, sec, f"activation {activation!r}", sec.option_lines["activation"])
            if c % groups or filters % groups:
                raise ModelError(f"{path}:{sec.line}: [convolutional] groups={groups} does not divide "
                                 f"{c} input / {filters} output channels")
            params = filters * (4 if sec.get_int("batch_normalize", 0, path) else 1)
            params += filters * (c // groups) * size * size
            shape = (filters, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1)
        elif sec.kind == "maxpool":
            stride = sec.get_int("stride", 1, path)
            size = sec.get_int("size", stride, path)
            padding = sec.get_int("padding", size - 1, path)
            shape = (c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
        elif sec.kind == "upsample":
            stride = sec.get_int("stride", 2, path)
            if stride < 1:
                raise _unsupported(path, sec, f"upsample stride {stride}", sec.option_lines.get("stride"))
            shape = (c, h * stride, w * stride)
        elif sec.kind == "route":
            refs = [int(v) for v in sec.get_floats("layers", path)]
            if not refs:
                raise ModelError(f"{path}:{sec.line}: [route] is missing layers=")
            inputs = [_resolve(path, sec, index, r, "layers") for r in refs]
            groups, group_id = sec.get_int("groups", 1, path), sec.get_int("group_id", 0, path)
            shapes = [layers[i].shape for i in inputs]
            if any(s[1:] != shapes[0][1:] for s in shapes):
                raise ModelError(f"{path}:{sec.line}: [route] joins layers of different sizes "
                                 f"{[s[1:] for s in shapes]}")
            if any(s[0] % groups for s in shapes) or not 0 <= group_id < groups:
                raise ModelError(f"{path}:{sec.line}: [route] groups={groups} group_id={group_id} "
                                 f"does not split channels {[s[0] for s in shapes]}")
            shape = (sum(s[0] // groups for s in shapes), shapes[0][1], shapes[0][2])
        elif sec.kind == "shortcut":
            refs = [int(v) for v in sec.get_floats("from", path)]
            if len(refs) != 1:
                raise _unsupported(path, sec, "shortcut with other than one from= layer",
                                   sec.option_lines.get("from"))
            other = _resolve(path, sec, index, refs[0], "from")
            if layers[other].shape != (c, h, w):
                raise _unsupported(path, sec, f"shortcut between shapes {layers[other].shape} "
                                              f"and {(c, h, w)}")
            activation = sec.options.get("activation", "linear")
            if activation not in ACTIVATIONS:
                raise _unsupported(path, sec, f"activation {activation!r}", sec.option_lines["activation"])
            inputs = [prev, other]
        elif sec.kind == "yolo":
            shape = (c, h, w)  # passes its input through; the decode is a separate output
        if shape[1] < 1 or shape[2] < 1:
            raise ModelError(f"{path}:{sec.line}: [{sec.kind}] output size {shape[1:]} at input "
                             f"{height}x{width}; use a larger input size")
        layers.append(Layer(index, sec, inputs, shape, params))
    return net, layers


def parameter_count(cfg_path: PathLike) -> int:
    """Float32 values a weights file for this cfg holds after its header."""
    return sum(layer.params for layer in plan(cfg_path)[1])
