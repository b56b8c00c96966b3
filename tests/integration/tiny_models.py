"""Tiny real ONNX detection models, built with the ``onnx`` package, for fault tests.

Each model takes a ``[1, 3, S, S]`` image and returns one anchor-free output ``[1, C, N]``
(cx, cy, w, h, class scores) holding the same boxes for every image, except that the boxes
can be made to depend on the picture's mean brightness ``m`` (0..1 after preprocessing):

- ``nan_below``: every box coordinate is NaN when ``m`` is below it (``sqrt`` of a negative);
- ``inf_below``: every box coordinate is +inf when ``m`` is below it (a division by zero).

That is how an FP16 engine overflowing on one frame looks from outside: the same network,
finite on most frames and not on one. ONNX Runtime runs them for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from agent.types import ModelInfo


def anchor_free_model(path: Path, *, channels: int = 5, anchors: int = 4, size: int = 64,
                      nan_below: Optional[float] = None, inf_below: Optional[float] = None,
                      class_names: Optional[List[str]] = None) -> Path:
    """Write the model to ``path``; ``channels`` < 5 or ``anchors`` 0 give malformed outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    boxes = np.zeros((1, 4, anchors), np.float32)
    scores = np.zeros((1, max(channels - 4, 0), anchors), np.float32)
    for i in range(anchors):  # well separated boxes, all scoring 0.9 for class 0
        boxes[0, :, i] = (8 + 12 * i, size / 2, 8, 8)
    if scores.shape[1]:
        scores[0, 0, :] = 0.9
    const = np.concatenate([boxes, scores], axis=1)[:, :channels]
    weights = [numpy_helper.from_array(const, "const")]
    if nan_below is not None or inf_below is not None:
        weights.append(numpy_helper.from_array(np.float32(0.0), "zero"))
    nodes = []
    offset = "zero"
    if nan_below is not None or inf_below is not None:
        nodes += [helper.make_node("GlobalAveragePool", ["images"], ["mean3"]),
                  helper.make_node("ReduceMean", ["mean3"], ["mean"], keepdims=0)]
    if nan_below is not None:
        weights.append(numpy_helper.from_array(np.float32(nan_below), "nan_below"))
        nodes += [helper.make_node("Sub", ["mean", "nan_below"], ["nan_d"]),
                  helper.make_node("Sqrt", ["nan_d"], ["nan_s"]),  # NaN below the threshold
                  helper.make_node("Mul", ["nan_s", "zero"], ["nan_z"]),  # 0 above, NaN below
                  helper.make_node("Add", [offset, "nan_z"], ["off1"])]
        offset = "off1"
    if inf_below is not None:
        weights += [numpy_helper.from_array(np.float32(inf_below), "inf_below"),
                    numpy_helper.from_array(np.float32(1e-30), "tiny")]
        nodes += [helper.make_node("Sub", ["mean", "inf_below"], ["inf_d"]),
                  helper.make_node("Relu", ["inf_d"], ["inf_r"]),  # 0 below the threshold
                  helper.make_node("Div", ["tiny", "inf_r"], ["inf_q"]),  # +inf below, ~0 above
                  helper.make_node("Add", [offset, "inf_q"], ["off2"])]
        offset = "off2"
    box_rows = min(channels, 4)
    if box_rows and anchors and offset != "zero":
        is_box = np.zeros((1, channels, 1), bool)
        is_box[0, :box_rows] = True
        weights += [numpy_helper.from_array(is_box, "is_box"),
                    numpy_helper.from_array(np.zeros((1, channels, 1), np.float32), "no_shift")]
        # Only the box rows move: a NaN score would simply never pass the threshold.
        nodes += [helper.make_node("Where", ["is_box", offset, "no_shift"], ["shift"]),
                  helper.make_node("Add", ["const", "shift"], ["output0"])]
    else:
        nodes.append(helper.make_node("Identity", ["const"], ["output0"]))
    graph = helper.make_graph(
        nodes, "tiny-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, channels, anchors])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older ONNX Runtime releases too
    info = ModelInfo(input_size=(size, size), class_names=class_names or ["thing"],
                     output_format="anchor_free" if channels >= 5 else None, name=path.stem)
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
