"""Graph surgery for ``build-engine --nms``: TensorRT's EfficientNMS plugin at the end of the model.

The ultralytics output ``[B, 4+nc, N]`` (cx, cy, w, h, then one score per class) is split
with standard ONNX ops into what the plugin takes:

    output [B, 4+nc, N] -Transpose-> [B, N, 4+nc] -Slice-> cxcywh [B, N, 4] -> boxes [B, N, 4] x1y1x2y2
                                                  -Slice-> scores [B, N, nc]
    boxes, scores -EfficientNMS_TRT-> num_dets [B, 1], det_boxes [B, K, 4], det_scores [B, K],
                                      det_classes [B, K]

Corners are computed in the graph (``box_coding=0``) so the split can be checked with ONNX
Runtime against the project's own decoder; ``box_coding=1`` hands the plugin centre-size
boxes instead (the plugin writes corners either way). The plugin is class-aware and
multi-label: every (box, class) pair above ``score_threshold`` is a candidate, as in
``PostprocessSettings(multi_label=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Tuple

from agent.errors import BadInputError
from agent.types import ModelInfo

log = logging.getLogger(__name__)

NMS_OP = "EfficientNMS_TRT"
NMS_DOMAIN = "TRT"  # a custom domain: onnx.checker skips it, the TensorRT parser looks plugins up by op name
OUTPUT_NAMES = ("num_dets", "det_boxes", "det_scores", "det_classes")
_INT64_MAX = (1 << 63) - 1


def add_efficient_nms(model: Any, info: ModelInfo, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                      max_output_boxes: int = 100, box_coding: int = 0, with_plugin: bool = True) -> Any:
    """A copy of ``model`` (an ``onnx.ModelProto``) ending in EfficientNMS_TRT.

    ``with_plugin=False`` stops after the split: the graph's outputs are then the plugin's
    inputs (``nms_boxes``, ``nms_scores``), which ONNX Runtime can run.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not 0.0 <= score_threshold <= 1.0:
        raise BadInputError(f"--score {score_threshold} must lie in [0, 1]")
    if not 0.0 < iou_threshold <= 1.0:
        # EfficientNMS_TRT's creator validates iouThreshold > 0 (TensorRT 8.5+): at 0 the ONNX
        # parse fails with a bare "Could not create plugin".
        raise BadInputError(f"--iou {iou_threshold}: the NMS IoU threshold must be above 0 and at most 1")
    if max_output_boxes < 1:
        raise BadInputError(f"--max-det must be at least 1, got {max_output_boxes}")
    if box_coding not in (0, 1):
        raise BadInputError(f"box_coding must be 0 (corners) or 1 (centre-size), got {box_coding}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    source, batch_dim, nc = _anchor_free_output(graph, info)
    graph.output.remove(source)
    name = source.name

    def const(tag: str, values: Any, dtype: Any = np.int64) -> str:
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), f"nms/{tag}")
        graph.initializer.append(tensor)
        return tensor.name

    def node(op: str, inputs: list, output: str, **attrs: Any) -> str:
        graph.node.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    axis2 = const("axis2", [2])
    rows = node("Transpose", [name], "nms/rows", perm=[0, 2, 1])  # [B, N, 4+nc]
    cxcywh = node("Slice", [rows, const("start0", [0]), const("end4", [4]), axis2], "nms/cxcywh")
    scores = node("Slice", [rows, const("start4", [4]), const("end_max", [_INT64_MAX]), axis2],
                  "nms/class_scores")
    if box_coding == 0:
        cxcy = node("Slice", [cxcywh, const("s0", [0]), const("e2", [2]), axis2], "nms/cxcy")
        wh = node("Slice", [cxcywh, const("s2", [2]), const("e4", [4]), axis2], "nms/wh")
        half = node("Mul", [wh, const("half", 0.5, _float_type(source))], "nms/half_wh")
        xy1 = node("Sub", [cxcy, half], "nms/xy1")
        xy2 = node("Add", [cxcy, half], "nms/xy2")
        boxes = node("Concat", [xy1, xy2], "nms/xyxy", axis=2)
    else:
        boxes = cxcywh
    # The plugin takes float16 too; float32 keeps its outputs in the type the decoder expects.
    boxes = node("Cast", [boxes], "nms_boxes", to=TensorProto.FLOAT)
    scores = node("Cast", [scores], "nms_scores", to=TensorProto.FLOAT)
    if not with_plugin:
        graph.output.extend([
            helper.make_tensor_value_info("nms_boxes", TensorProto.FLOAT, [batch_dim, None, 4]),
            helper.make_tensor_value_info("nms_scores", TensorProto.FLOAT, [batch_dim, None, nc])])
        return out
    graph.node.append(helper.make_node(
        NMS_OP, [boxes, scores], list(OUTPUT_NAMES), name="nms/efficient_nms", domain=NMS_DOMAIN,
        plugin_version="1", background_class=-1, max_output_boxes=int(max_output_boxes),
        score_threshold=float(score_threshold), iou_threshold=float(iou_threshold), score_activation=0,
        box_coding=int(box_coding)))
    k = int(max_output_boxes)
    graph.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch_dim, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [batch_dim, k, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [batch_dim, k]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [batch_dim, k])])
    if not any(o.domain == NMS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(NMS_DOMAIN, 1))
    _set_metadata(out, dataclasses.replace(info, output_format="efficient_nms"))
    log.info("appended %s (score > %g, IoU %g, at most %d boxes) after %s", NMS_OP, score_threshold,
             iou_threshold, k, name)
    return out


def _anchor_free_output(graph: Any, info: ModelInfo) -> Tuple[Any, Any, Optional[int]]:
    """(output, its batch dimension (int or name), class count) of an ultralytics ``[B, 4+nc, N]`` model."""
    if info.output_format not in (None, "anchor_free"):
        raise BadInputError(f"--nms needs an ultralytics-layout model (one [B, 4+nc, N] output); this "
                            "model's "
                            f"output format is {info.output_format!r}")
    if len(graph.output) != 1:
        raise BadInputError(f"--nms needs a model with one output, this one has {len(graph.output)} "
                            f"({[o.name for o in graph.output]})")
    output = graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 3:
        raise BadInputError(f"--nms needs a [B, 4+nc, N] output, {output.name!r} has {len(dims)} dimensions")
    channels = dims[1].dim_value if dims[1].HasField("dim_value") else None
    nc = info.num_classes or (channels - 4 if channels else None)
    if channels is not None and nc is not None and channels != nc + 4:
        raise BadInputError(f"--nms: output {output.name!r} has {channels} channels, expected 4 + {nc} "
                            "classes")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else (dims[0].dim_param or "batch")
    return output, batch, nc


def _float_type(value_info: Any) -> Any:
    import numpy as np

    return np.float16 if value_info.type.tensor_type.elem_type == 10 else np.float32


def _set_metadata(model: Any, info: ModelInfo) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in info.to_metadata().items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value
