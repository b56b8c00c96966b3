"""The fake's network description, its serialized "plan", and how it executes.

A plan is ``MAGIC | u32 header length | JSON header | u64 payload length | ONNX bytes``.
The header carries what a real plan binds an engine to (TensorRT version, GPU compute
capability, precision flags, I/O tensors, the optimization profile); the payload is the
ONNX graph ONNX Runtime runs. A graph ending in an ``EfficientNMS_TRT`` node is cut before
it: ONNX Runtime runs the part up to the plugin's inputs and the plugin is emulated with
the project's own ``nms()`` (same semantics: multi-label candidates above the score
threshold, best 4096, class-aware greedy NMS, ``max_output_boxes``, corner boxes out).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._common import STATE, DataType, ILogger, emit, numpy_of, plugin_emit, volume

MAGIC = b"FTRTPLAN"
NMS_OP = "EfficientNMS_TRT"
NMS_TOPK = 4096  # the plugin's numSelectedBoxes
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 6: DataType.INT32, 7: DataType.INT64, 9: DataType.BOOL,
               2: DataType.UINT8, 3: DataType.INT8}


class PlanError(Exception):
    pass


class ParseFailure(Exception):
    def __init__(self, message: str, node: int = -1) -> None:
        super().__init__(message)
        self.node = node


@dataclasses.dataclass
class TensorInfo:
    name: str
    shape: Tuple[int, ...]  # -1 where dynamic
    dtype: int  # DataType


@dataclasses.dataclass
class NetworkSpec:
    onnx_bytes: bytes  # the graph ONNX Runtime runs
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    onnx_input_dtypes: Dict[str, int]  # what the ONNX graph itself takes
    run_outputs: List[str]  # ONNX Runtime outputs (the NMS plugin's inputs when cut)
    nms: Optional[Dict[str, Any]]
    num_layers: int


def _dims(value_info: Any) -> Tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)


def _io_type(value_info: Any, node: int = -1) -> int:
    """The TensorRT type of a graph input or output, as the release's ONNX parser imports it.

    Before TensorRT 10 there is no INT64: the parser casts INT64 tensors down to INT32, with
    a warning. TensorRT 8.4 has no UINT8 at all and refuses the model.
    """
    elem = value_info.type.tensor_type.elem_type
    trt_type = _ONNX_TYPES.get(elem, DataType.FLOAT)
    available = STATE.generation.dtypes
    if trt_type.name in available:
        return int(trt_type)
    if trt_type == DataType.INT64:
        emit(ILogger.Severity.WARNING, f"onnx2trt_utils.cpp: Your ONNX model has been generated with INT64 "
             f"weights, while TensorRT does not natively support INT64. Attempting to cast down to INT32 "
             f"({value_info.name}).")
        return int(DataType.INT32)
    raise ParseFailure(f"ModelImporter.cpp: {value_info.name}: unsupported data type {trt_type.name} "
                       f"(ONNX type {elem}) in TensorRT {STATE.version}", node)


def network_from_onnx(data: bytes, plugins_registered: bool) -> NetworkSpec:
    import onnx

    try:
        model = onnx.load_from_string(bytes(data))
    except Exception as exc:
        raise ParseFailure(f"ModelImporter.cpp: Failed to parse ONNX model: {str(exc)[:120]}") from None
    graph = model.graph
    if not graph.node:
        raise ParseFailure("ModelImporter.cpp: Failed to parse ONNX model: the graph has no nodes")
    weights = {i.name for i in graph.initializer}
    inputs = [TensorInfo(i.name, _dims(i), _io_type(i)) for i in graph.input if i.name not in weights]
    onnx_types = {i.name: int(_ONNX_TYPES.get(i.type.tensor_type.elem_type, DataType.FLOAT))
                  for i in graph.input if i.name not in weights}
    onnx_dtypes = {t.name: onnx_types[t.name] for t in inputs}
    nms_nodes = [(k, n) for k, n in enumerate(graph.node) if n.op_type == NMS_OP]
    if not nms_nodes:
        outputs = [TensorInfo(o.name, _dims(o), _io_type(o)) for o in graph.output]
        return NetworkSpec(model.SerializeToString(), inputs, outputs, onnx_dtypes, [o.name for o in outputs],
                           None, len(graph.node))
    index, node = nms_nodes[-1]
    if not plugins_registered:
        raise ParseFailure(f"getPluginCreator could not find plugin: {NMS_OP} version: 1; Assertion failed: "
                           "creator && \"Plugin not found, are the plugin name, version, and namespace "
                           "correct?\"", index)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    nms = {"score_threshold": float(attrs.get("score_threshold", 0.0)),
           "iou_threshold": float(attrs.get("iou_threshold", 0.5)),
           "max_output_boxes": int(attrs.get("max_output_boxes", 100)),
           "background_class": int(attrs.get("background_class", -1)),
           "score_activation": int(attrs.get("score_activation", 0)),
           "box_coding": int(attrs.get("box_coding", 0)),
           "class_agnostic": int(attrs.get("class_agnostic", 0))}
    if len(node.input) != 2 or len(node.output) != 4:
        raise ParseFailure(f"{NMS_OP}: expected 2 inputs (boxes, scores) and 4 outputs", index)
    _validate_nms(nms, index)
    # Cut: the plugin's inputs become the graph's outputs; the plugin runs in _efficient_nms.
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[index]
    del cut.graph.output[:]
    for name in node.input:
        cut.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    batch = inputs[0].shape[0] if inputs else -1
    k = nms["max_output_boxes"]
    shapes = [(batch, 1), (batch, k, 4), (batch, k), (batch, k)]
    dtypes = [DataType.INT32, DataType.FLOAT, DataType.FLOAT, DataType.INT32]
    outputs = [TensorInfo(name, shape, int(dt)) for name, shape, dt in zip(node.output, shapes, dtypes)]
    return NetworkSpec(cut.SerializeToString(), inputs, outputs, onnx_dtypes, list(node.input), nms,
                       len(graph.node))


def _validate_nms(nms: Dict[str, Any], index: int) -> None:
    """EfficientNMSPluginCreator::createPlugin's PLUGIN_VALIDATE checks (TensorRT 8.5+)."""
    checks = [("scoreThreshold >= 0.0F", nms["score_threshold"] >= 0.0),
              ("numOutputBoxes > 0", nms["max_output_boxes"] > 0)]
    if STATE.generation.nms_validates_iou:
        checks.append(("iouThreshold > 0.0F", nms["iou_threshold"] > 0.0))
    for condition, ok in checks:
        if not ok:
            plugin_emit(ILogger.Severity.ERROR, f"efficientNMSPlugin.cpp: Validation failed: {condition}")
            raise ParseFailure(f"ModelImporter.cpp: {NMS_OP}: Assertion failed: plugin && \"Could not create "
                               f"plugin\"", index)


def serialize(header: Dict[str, Any], payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + struct.pack("<Q", len(payload)) + payload


def deserialize(data: bytes) -> Tuple[Dict[str, Any], bytes]:
    if data[:len(MAGIC)] != MAGIC:
        raise PlanError("1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                        "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic Tag does not "
                        "match)")
    try:
        (head_len,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        header = json.loads(data[start:start + head_len])
        (payload_len,) = struct.unpack_from("<Q", data, start + head_len)
        payload = data[start + head_len + 8:]
    except (struct.error, ValueError):
        raise PlanError("2: [stdArchiveReader.cpp::StdArchiveReader::54] Error Code 2: Internal Error "
                        "(Assertion size == trueSize failed.)") from None
    if len(payload) != payload_len:
        raise PlanError("1: [stdArchiveReader.cpp::StdArchiveReader::54] Error Code 1: Serialization "
                        f"(Serialization assertion size == trueSize failed: {len(payload)} != {payload_len})")
    return header, payload


class Executor:
    """Runs a plan's graph with ONNX Runtime; FP16 engines see and give float16-rounded numbers."""

    def __init__(self, header: Dict[str, Any], payload: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        self.header = header
        self.fp16 = bool(header["fp16"])
        self.nms = header.get("nms")
        self._shapes: Dict[Tuple, Dict[str, Tuple[int, ...]]] = {}

    def output_shapes(self, input_shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, Tuple[int, ...]]:
        key = tuple(sorted(input_shapes.items()))
        if key not in self._shapes:
            if self.nms:
                batch = next(iter(input_shapes.values()))[0]
                k = self.nms["max_output_boxes"]
                names = [t["name"] for t in self.header["outputs"]]
                self._shapes[key] = dict(zip(names, [(batch, 1), (batch, k, 4), (batch, k), (batch, k)]))
            else:
                # Shapes follow from running the graph once at this input shape.
                feeds = {t["name"]: np.zeros(input_shapes[t["name"]], numpy_of(t["onnx_dtype"]))
                         for t in self.header["inputs"]}
                names = [o.name for o in self.session.get_outputs()]
                outs = self.session.run(names, feeds)
                self._shapes[key] = {n: tuple(o.shape) for n, o in zip(names, outs)}
        return self._shapes[key]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        onnx_feeds = {}
        for t in self.header["inputs"]:
            array = feeds[t["name"]]
            if self.fp16 and array.dtype == np.float32:
                array = array.astype(np.float16).astype(np.float32)  # FP16 kernels see FP16 inputs
            onnx_feeds[t["name"]] = array.astype(numpy_of(t["onnx_dtype"]), copy=False)
        names = [o.name for o in self.session.get_outputs()]
        values = dict(zip(names, self.session.run(names, onnx_feeds)))
        if self.fp16:
            values = {k: v.astype(np.float16).astype(v.dtype) if v.dtype.kind == "f" else v
                      for k, v in values.items()}
        if self.nms:
            boxes, scores = (values[n] for n in self.header["run_outputs"])
            results = efficient_nms(boxes.astype(np.float32), scores.astype(np.float32), **self.nms)
            return dict(zip([t["name"] for t in self.header["outputs"]], results))
        return values


def efficient_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                  max_output_boxes: int, background_class: int = -1, score_activation: int = 0,
                  box_coding: int = 0, class_agnostic: int = 0) -> List[np.ndarray]:
    """EfficientNMS_TRT: ``boxes [B,N,4]``, ``scores [B,N,C]`` -> num, boxes, scores, classes."""
    from agent.inference.postprocess.nms import nms

    batch = boxes.shape[0]
    num = np.zeros((batch, 1), np.int32)
    out_boxes = np.zeros((batch, max_output_boxes, 4), np.float32)
    out_scores = np.zeros((batch, max_output_boxes), np.float32)
    out_classes = np.zeros((batch, max_output_boxes), np.int32)
    if score_activation:
        scores = 1.0 / (1.0 + np.exp(-scores))
    for b in range(batch):
        bx = boxes[b]
        if box_coding == 1:  # centre-size in, corners out (the plugin always writes corners)
            bx = np.concatenate([bx[:, :2] - bx[:, 2:] / 2, bx[:, :2] + bx[:, 2:] / 2], axis=1)
        rows, cls = np.nonzero(scores[b] > score_threshold)  # every (box, class) pair: multi-label
        if background_class >= 0:
            keep = cls != background_class
            rows, cls = rows[keep], cls[keep]
        sc = scores[b][rows, cls]
        top = np.argsort(-sc, kind="stable")[:NMS_TOPK]
        rows, cls, sc = rows[top], cls[top], sc[top]
        kept = nms(bx[rows], sc, iou_threshold, None if class_agnostic else cls, max_det=max_output_boxes)
        n = kept.shape[0]
        num[b, 0] = n
        out_boxes[b, :n] = bx[rows[kept]]
        out_scores[b, :n] = sc[kept]
        out_classes[b, :n] = cls[kept]
    return [num, out_boxes, out_scores, out_classes]


def shape_matches(shape: Tuple[int, ...], pattern: Tuple[int, ...]) -> bool:
    return len(shape) == len(pattern) and all(p in (-1, s) for s, p in zip(shape, pattern))


def bytes_of(dtype: int, shape: Tuple[int, ...]) -> int:
    return volume(shape) * np.dtype(numpy_of(dtype)).itemsize
