"""What an ONNX model says about itself: ``ModelInfo``, its image input and its outputs.

Shared by every consumer of ONNX files. ONNX Runtime reads the metadata through its own
session; OpenCV DNN and the TensorRT engine builder have no such API, so they read the file
with the ``onnx`` package (imported here, inside the function, as it is optional).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from agent.errors import BackendError, ModelError
from agent.types import ModelInfo

if TYPE_CHECKING:  # onnx is optional at run time; its protobuf classes carry type stubs
    from onnx import ModelProto, ValueInfoProto

log = logging.getLogger(__name__)

#: ONNX element types an image input may have (TensorProto.FLOAT, TensorProto.FLOAT16).
ONNX_IMAGE_TYPES = {1: "float32", 10: "float16"}


@dataclasses.dataclass
class OnnxSummary:
    """A model's metadata and I/O, read without running it."""

    info: ModelInfo
    input_name: str
    input_shape: Tuple[Optional[int], ...]  # None where the dimension is dynamic
    input_dtype: str  # "float32" | "float16"
    output_names: List[str]
    opset: int


def info_from_metadata(meta: Dict[str, str], input_hw: Tuple[Optional[int], Optional[int]],
                       model_path: Path) -> ModelInfo:
    """``ModelInfo`` from this project's metadata, else from ultralytics' own keys."""
    info = ModelInfo.from_metadata(meta)
    if info is not None:
        return info
    try:
        names = ast.literal_eval(meta["names"]) if "names" in meta else {}
        imgsz = ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else list(input_hw)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{model_path}: unreadable ultralytics metadata: {exc}") from None
    class_names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    if not imgsz or None in imgsz:
        raise ModelError(f"{model_path}: the input size is dynamic and the model has no metadata; "
                         "set model.input_size in the config")
    dims = [int(v) for v in imgsz if v is not None]  # none is None here: checked above
    return ModelInfo(input_size=(dims[0], dims[-1]), class_names=class_names,
                     resize_mode="letterbox", name=model_path.stem)


def load_onnx(model_path: Path, purpose: str) -> ModelProto:
    """The parsed ``onnx.ModelProto``; ``purpose`` names who needs it, for the error message."""
    try:
        import onnx
    except ImportError:
        raise BackendError(f"{purpose} needs the onnx package to read {model_path} "
                           "(pip install onnx)") from None
    try:
        return onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx its own types
        raise ModelError(f"{model_path}: not a readable ONNX model: {str(exc).strip()[:200]}") from None


def summarize(model: ModelProto, model_path: Path) -> OnnxSummary:
    """The image input, outputs and ``ModelInfo`` of an ``onnx.ModelProto``."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ModelError(f"{model_path}: expected one NCHW image input, got "
                         f"{[(i.name, _dims(i)) for i in inputs]}")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in ONNX_IMAGE_TYPES:
        raise ModelError(f"{model_path}: input type {elem} is not float32 or float16")
    shape = _dims(inputs[0])
    meta = {p.key: p.value for p in model.metadata_props}
    info = info_from_metadata(meta, (shape[2], shape[3]), Path(model_path))
    opset = max((o.version for o in model.opset_import
                 if o.domain in ("", "ai.onnx")),
                default=0)
    return OnnxSummary(info, inputs[0].name, shape, ONNX_IMAGE_TYPES[elem],
                       [o.name for o in graph.output], opset)


def read_summary(model_path: Path, purpose: str) -> OnnxSummary:
    return summarize(load_onnx(model_path, purpose), model_path)


def _dims(value_info: ValueInfoProto) -> Tuple[Optional[int], ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
