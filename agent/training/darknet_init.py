"""Darknet weights as a starting point for training: a darknet ``.cfg`` becomes an ultralytics
model description, and the ``.weights`` fill every convolution that maps onto it.

The description is derived from the cfg itself, layer by layer, so the loaded network computes
what darknet computes:

- ``[convolutional]`` (batch-normalised, leaky) -> ``Conv [filters, size, stride]``; the whole
  model uses ``activation: nn.LeakyReLU(0.1)``, darknet's ``leaky``;
- a residual block (1x1 conv, 3x3 conv, ``[shortcut] from=-3``) -> ``Bottleneck`` with kernels
  (1, 3) (ultralytics' own yolov3.yaml uses 3x3 twice, which darknet-53 weights do not fit);
- ``[maxpool]`` -> ``nn.MaxPool2d``; darknet pads a stride-1 pool of even size on the right
  and bottom only, with values that never win, so that pool gets ``nn.ReplicationPad2d``
  first (ultralytics' yolov3-tiny.yaml pads with zeros, which changes the border wherever all
  the features there are negative);
- ``[upsample]`` -> ``nn.Upsample``; ``[route]`` -> ``Concat`` (or just a new input);
- each ``[yolo]`` head and the linear convolution feeding it -> one anchor-free ``Detect``
  over the features that fed those convolutions, finest stride first. That head is new: its
  classes are the data set's.

Batch norm: darknet's weights hold beta, gamma, running mean and variance for an epsilon
of ``BN_EPSILON``; ultralytics normalises with its own (1e-3), so gamma is rescaled on load
and the loaded layer's output is darknet's to float precision.

``stride8_branch`` adds a third head at stride 8 to a two-head cfg (yolov3-tiny ->
yolov3-tiny-3l, as darknet's yolov3-tiny_3l): a 1x1 conv on the stride-16 head's features,
upsampled and joined with the backbone's last stride-8 layer, then a 3x3 conv. Its backbone
and the two original heads' necks are the original cfg's layers, so the original weights load.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from agent.errors import ModelError
from agent.modeltools.darknet import cfg as darknet
from agent.modeltools.darknet import layers as darknet_layers
from agent.modeltools.darknet.to_onnx import BN_EPSILON
from agent.modeltools.darknet.weights import read_weights

log = logging.getLogger(__name__)

ACTIVATION = "nn.LeakyReLU(0.1)"
#: Topologies ``--model`` can name when starting from darknet weights.
FAMILIES = ("yolov3-tiny", "yolov3-tiny-3l", "yolov3", "yolov3-spp")


@dataclasses.dataclass
class ConvSpec:
    """A darknet convolution as the loader needs it: shape and where it lives in the model."""

    index: int
    line: int
    filters: int
    size: int
    stride: int
    in_channels: int
    module: Optional[str]  # state_dict prefix, e.g. "model.13" or "model.5.cv1"; None: a head conv


@dataclasses.dataclass
class Topology:
    """An ultralytics model description derived from a darknet cfg."""

    cfg: Path
    spec: Dict[str, Any]
    convs: List[ConvSpec]
    head_inputs: List[int]  # darknet layer indices feeding the heads, in Detect order
    head_layers: List[int]  # yaml indices of the same features

    @property
    def family(self) -> str:
        return family_of(self.cfg)


def family_of(cfg: Path) -> str:
    """Which YOLOv3 variant a cfg describes (by its heads, residual blocks and SPP pools)."""
    sections = darknet.parse_cfg(Path(cfg))[1:]
    heads = sum(s.kind == "yolo" for s in sections)
    residual = any(s.kind == "shortcut" for s in sections)
    spp = any(s.kind == "maxpool" and s.options.get("stride", "1") == "1"
              and int(s.options.get("size", "1")) > 2 for s in sections)
    if residual:
        return "yolov3-spp" if spp else "yolov3"
    return "yolov3-tiny-3l" if heads >= 3 else "yolov3-tiny"


def _int(sec: darknet.Section, key: str, default: int, path: Path) -> int:
    return sec.get_int(key, default, path)


def translate(cfg_path: Path, num_classes: int) -> Topology:
    """The ultralytics model description of a darknet cfg, with the new head for ``num_classes``."""
    path = Path(cfg_path)
    _net, layers = darknet_layers.plan(path)
    n = len(layers)
    kinds = [layer.section.kind for layer in layers]
    yaml_of: Dict[int, Optional[int]] = {}
    entries: List[List[Any]] = []
    convs: List[ConvSpec] = []
    head_inputs: List[int] = []

    def source(dk: int, layer: darknet_layers.Layer) -> int:
        if dk < 0:  # the image
            return -1
        target = yaml_of.get(dk)
        if target is None:
            raise ModelError(f"{path}:{layer.section.line}: [{layer.section.kind}] reads layer {dk}, "
                             "a YOLO head output, which has no counterpart in the training model")
        return -1 if target == len(entries) - 1 else target

    def conv_spec(layer: darknet_layers.Layer, module: Optional[str]) -> ConvSpec:
        sec = layer.section
        in_c = layers[layer.inputs[0]].shape[0] if layer.inputs[0] >= 0 else 3
        return ConvSpec(layer.index, sec.line, _int(sec, "filters", 1, path), _int(sec, "size", 1, path),
                        _int(sec, "stride", 1, path), in_c, module)

    i = 0
    while i < n:
        layer, sec = layers[i], layers[i].section
        feeds_head = i + 1 < n and kinds[i + 1] == "yolo"
        if sec.kind == "convolutional" and feeds_head:
            head_inputs.append(layer.inputs[0])
            convs.append(conv_spec(layer, None))
            yaml_of[i] = None
            i += 1
            continue
        if sec.kind == "yolo":
            yaml_of[i] = None
            i += 1
            continue
        if sec.kind == "convolutional":
            _check_trainable_conv(path, sec)
            size, stride = _int(sec, "size", 1, path), _int(sec, "stride", 1, path)
            if _int(sec, "groups", 1, path) != 1:
                raise ModelError(f"{path}:{sec.line}: [convolutional] groups= is not supported for training")
            args: List[Any] = [_int(sec, "filters", 1, path), size, stride]
            if size > 1 and not _int(sec, "pad", 0, path):
                args.append(_int(sec, "padding", 0, path))
            if _is_residual(layers, i, path):
                c = layers[layer.inputs[0]].shape[0]
                hidden = args[0]
                entries.append([source(layer.inputs[0], layer), 1, "Bottleneck",
                                [c, True, 1, [1, 3], hidden / c]])
                k = len(entries) - 1
                convs.append(conv_spec(layer, f"model.{k}.cv1"))
                convs.append(conv_spec(layers[i + 1], f"model.{k}.cv2"))
                yaml_of[i] = yaml_of[i + 1] = yaml_of[i + 2] = k
                i += 3
                continue
            entries.append([source(layer.inputs[0], layer), 1, "Conv", args])
            convs.append(conv_spec(layer, f"model.{len(entries) - 1}"))
        elif sec.kind == "maxpool":
            stride = _int(sec, "stride", 1, path)
            size = _int(sec, "size", stride, path)
            padding = _int(sec, "padding", size - 1, path)
            src = source(layer.inputs[0], layer)
            if stride == size and padding == size - 1:
                # input sizes are multiples of the network stride: darknet's right/bottom padding is unused
                entries.append([src, 1, "nn.MaxPool2d", [size, stride, 0]])
            elif stride == 1 and padding % 2 == 0:
                entries.append([src, 1, "nn.MaxPool2d", [size, 1, padding // 2]])
            elif stride == 1:
                lo, hi = padding // 2, padding - padding // 2
                entries.append([src, 1, "nn.ReplicationPad2d", [[lo, hi, lo, hi]]])
                entries.append([-1, 1, "nn.MaxPool2d", [size, 1, 0]])
            else:
                raise ModelError(f"{path}:{sec.line}: [maxpool] size={size} stride={stride} is not "
                                 "supported for training")
        elif sec.kind == "upsample":
            entries.append([source(layer.inputs[0], layer), 1, "nn.Upsample",
                            [None, _int(sec, "stride", 2, path), "nearest"]])
        elif sec.kind == "route":
            if _int(sec, "groups", 1, path) != 1:
                raise ModelError(f"{path}:{sec.line}: [route] groups= is not supported for training")
            if len(layer.inputs) == 1:
                yaml_of[i] = yaml_of.get(layer.inputs[0])
                i += 1
                continue
            entries.append([[source(k, layer) for k in layer.inputs], 1, "Concat", [1]])
        else:  # a shortcut outside a residual block
            raise ModelError(f"{path}:{sec.line}: [{sec.kind}] outside a 1x1-3x3 residual block is not "
                             "supported for training")
        yaml_of[i] = len(entries) - 1
        i += 1
    if not head_inputs:
        raise ModelError(f"{path}: no [yolo] head: not a YOLO detection network")
    # Detect takes its inputs finest stride first (P3, P4, P5).
    order = sorted(range(len(head_inputs)), key=lambda k: -layers[head_inputs[k]].shape[1])
    head_inputs = [head_inputs[k] for k in order]
    head_layers = []
    for dk in head_inputs:
        target = yaml_of.get(dk)
        if target is None:
            raise ModelError(f"{path}: a [yolo] head reads layer {dk}, which the training model lacks")
        head_layers.append(target)
    split = _backbone_end(entries)
    spec = {"nc": int(num_classes), "depth_multiple": 1.0, "width_multiple": 1.0, "activation": ACTIVATION,
            "backbone": entries[:split], "head": [*entries[split:], [head_layers, 1, "Detect", ["nc"]]]}
    return Topology(path, spec, convs, head_inputs, head_layers)


def _check_trainable_conv(path: Path, sec: darknet.Section) -> None:
    activation = sec.options.get("activation", "logistic")
    if not sec.get_int("batch_normalize", 0, path) or activation != "leaky":
        raise ModelError(f"{path}:{sec.line}: [convolutional] with activation={activation} and "
                         f"batch_normalize={sec.options.get('batch_normalize', '0')}: only batch-normalised "
                         "leaky convolutions (or the linear one feeding a [yolo] head) can be trained")


def _is_residual(layers: List[darknet_layers.Layer], i: int, path: Path) -> bool:
    """Layers i, i+1, i+2 are conv 1x1, conv 3x3, shortcut from=-3 (linear): a darknet-53 block."""
    if i + 2 >= len(layers):
        return False
    a, b, s = layers[i].section, layers[i + 1].section, layers[i + 2].section
    return (b.kind == "convolutional" and s.kind == "shortcut" and layers[i + 2].inputs == [i + 1, i - 1]
            and a.get_int("size", 1, path) == 1 and b.get_int("size", 1, path) == 3
            and a.get_int("stride", 1, path) == 1 and b.get_int("stride", 1, path) == 1
            and s.options.get("activation", "linear") == "linear"
            and layers[i + 1].shape == layers[i - 1].shape)


def _backbone_end(entries: List[List[Any]]) -> int:
    """Index of the first head layer: the first 1x1 Conv after the last downsampling layer."""
    last_down = 0
    for k, (_src, _n, module, args) in enumerate(entries):
        if (module == "Conv" and args[2] == 2) or (module == "nn.MaxPool2d" and args[1] == 2):
            last_down = k
    for k in range(last_down + 1, len(entries)):
        if entries[k][2] == "Conv" and entries[k][3][1] == 1:
            return k
    return len(entries)


def stride8_branch(cfg_path: Path, out_path: Path) -> Path:
    """Write ``cfg_path`` plus a third [yolo] head at stride 8 (yolov3-tiny -> yolov3-tiny-3l)."""
    path = Path(cfg_path)
    net, layers = darknet_layers.plan(path)
    height = net.get_int("height", None, path)
    yolos = [layer for layer in layers if layer.section.kind == "yolo"]
    if len(yolos) != 2:
        raise ModelError(f"{path}: a stride-8 head is added to two-head networks (yolov3-tiny); "
                         f"this cfg has {len(yolos)} [yolo] sections")
    # The finer existing head's features (stride 16) and the backbone's last stride-8 layer.
    finer = min((layers[layers[y.index - 1].inputs[0]] for y in yolos), key=lambda la: height // la.shape[1])
    if height // finer.shape[1] != 16:
        raise ModelError(f"{path}: expected a stride-16 head to branch from, found stride "
                         f"{height // finer.shape[1]}")
    stride8 = [la for la in layers if height // la.shape[1] == 8 and la.section.kind == "convolutional"]
    if not stride8:
        raise ModelError(f"{path}: no stride-8 convolution in the backbone to join")
    last = yolos[-1].section
    classes = last.get_int("classes", None, path)
    n = len(layers)
    text = Path(path).read_text(encoding="utf-8").rstrip() + f"""

# --- stride-8 head (yolov3-tiny-3l), added by detection-agent ---
[route]
layers = {finer.index - n}

[convolutional]
batch_normalize=1
filters=128
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers = -1, {stride8[-1].index}

[convolutional]
batch_normalize=1
filters=128
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters={3 * (5 + classes)}
activation=linear

[yolo]
mask = 0,1,2
anchors = {last.options.get('anchors', '10,14, 23,27, 37,58')}
classes={classes}
num=6
"""
    out_path.write_text(text, encoding="utf-8")
    return out_path


# ---------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadReport:
    loaded: int
    total: int  # convolutions in the weights' cfg
    new: int  # convolutions of the training model the weights do not cover (outside the head)
    weights: Path
    classes: int
    names: str

    def describe(self, num_classes: int) -> str:
        line = (f"pretrained: {self.loaded} of {self.total} convolutions loaded from {self.weights.name} "
                f"({self.names}, {self.classes} classes: backbone and neck)")
        if self.new:
            line += f"; new: {self.new} neck convolution{'s' if self.new > 1 else ''}"
        return line + f"; head: new, {num_classes} classes"


def darknet_convs(cfg_path: Path, weights_path: Path
                  ) -> Tuple[Topology, Dict[int, Tuple[np.ndarray, ...]], int]:
    """(topology of the weights' cfg, darknet layer -> (beta, gamma, mean, var, kernel) or (bias, kernel),
    class count). Every float of the weights file must be consumed exactly."""
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    _version, _seen, values = read_weights(weights_path)
    _net, layers = darknet_layers.plan(cfg_path)
    expected = sum(layer.params for layer in layers)
    if values.size != expected:
        what = "truncated" if values.size < expected else "too long"
        raise ModelError(f"{weights_path}: {what}: holds {values.size} float32 parameters after its header "
                         f"but {cfg_path.name} needs {expected}")
    classes = next(la.section.get_int("classes", None, cfg_path)
                   for la in layers if la.section.kind == "yolo")
    topo = translate(cfg_path, classes)
    params: Dict[int, Tuple[np.ndarray, ...]] = {}
    pos = 0
    for layer in layers:
        if layer.section.kind != "convolutional":
            continue
        spec = next(c for c in topo.convs if c.index == layer.index)
        kernel_size = spec.filters * spec.in_channels * spec.size * spec.size
        parts = 4 if layer.section.get_int("batch_normalize", 0, cfg_path) else 1
        chunks = [values[pos + k * spec.filters: pos + (k + 1) * spec.filters] for k in range(parts)]
        pos += parts * spec.filters
        kernel = values[pos:pos + kernel_size].reshape(spec.filters, spec.in_channels, spec.size, spec.size)
        pos += kernel_size
        params[layer.index] = (*chunks, kernel)
    return topo, params, classes


def load_into(model: Any, target: Topology, cfg_path: Path, weights_path: Path) -> LoadReport:
    """Copy every non-head darknet convolution of ``cfg_path`` into ``model`` (built from ``target``).

    Each must sit at the same darknet layer index with the same shape in ``target``'s cfg;
    otherwise the cfg does not fit the topology and nothing is loaded (``ModelError``).
    """
    import torch

    source, params, classes = darknet_convs(cfg_path, weights_path)
    by_index = {c.index: c for c in target.convs}
    plan_: List[Tuple[ConvSpec, ConvSpec]] = []
    for conv in source.convs:
        if conv.module is None:
            continue
        mine = by_index.get(conv.index)
        fits = mine is not None and mine.module is not None and (
            mine.filters, mine.size, mine.stride, mine.in_channels) == (
            conv.filters, conv.size, conv.stride, conv.in_channels)
        if not fits or mine is None:
            got = ("nothing" if mine is None else
                   f"{mine.filters} filters {mine.size}x{mine.size}/{mine.stride} from {mine.in_channels}"
                   + (" (a head)" if mine.module is None else ""))
            raise ModelError(f"{cfg_path}:{conv.line}: layer {conv.index} ({conv.filters} filters "
                             f"{conv.size}x{conv.size}/{conv.stride} from {conv.in_channels} channels) "
                             f"does not fit the {target.family} topology, which has {got} there")
        plan_.append((conv, mine))
    state = model.state_dict()
    with torch.no_grad():
        for conv, mine in plan_:
            beta, gamma, mean, var, kernel = params[conv.index]
            prefix = mine.module
            bn = model.get_submodule(f"{prefix}.bn")
            # darknet normalises with BN_EPSILON; fold the difference to ultralytics' eps into gamma.
            var64 = var.astype(np.float64)
            gamma = gamma * np.sqrt(var64 + bn.eps) / np.sqrt(var64 + BN_EPSILON)
            for key, value in ((f"{prefix}.conv.weight", kernel), (f"{prefix}.bn.bias", beta),
                               (f"{prefix}.bn.weight", gamma), (f"{prefix}.bn.running_mean", mean),
                               (f"{prefix}.bn.running_var", var)):
                state[key].copy_(torch.from_numpy(np.array(value, np.float32)))
    total = len(source.convs)
    own = [c for c in target.convs if c.module is not None]
    names_file = darknet.find_names_file(Path(cfg_path))
    label = "COCO" if names_file is not None and names_file.name == "coco.names" else (
        names_file.name if names_file else Path(cfg_path).name)
    return LoadReport(len(plan_), total, len(own) - len(plan_), Path(weights_path), classes, label)
