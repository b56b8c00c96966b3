"""ONNX Runtime backend: the CPU path (and any machine without TensorRT).

The model describes itself: this project's exports carry ``ModelInfo`` in the ONNX
``metadata_props``; a plain ultralytics export carries ``names``/``imgsz``/``stride``,
which are read as a fallback so any ultralytics ONNX model runs too.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendError, ModelError
from ..types import ModelInfo

log = logging.getLogger(__name__)

_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


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
    return ModelInfo(input_size=(int(imgsz[0]), int(imgsz[-1])), class_names=class_names,
                     resize_mode="letterbox", name=model_path.stem)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_path: Path, batch_size: int = 1,
                 class_names: Optional[Sequence[str]] = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("the onnxruntime backend needs the onnxruntime package "
                               "(pip install 'detection-agent[cpu]')") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise ModelError(f"{model_path}: ONNX Runtime cannot load this model: "
                             f"{str(exc).strip().splitlines()[0][:200]}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{model_path}: expected one NCHW image input, got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0]
        if self._input.type not in _ONNX_DTYPES:
            raise ModelError(f"{model_path}: input type {self._input.type} is not float32 or float16")
        dims = [d if isinstance(d, int) else None for d in self._input.shape]
        meta = self._session.get_modelmeta().custom_metadata_map
        self.info = info_from_metadata(meta, (dims[2], dims[3]), Path(model_path))
        if class_names is not None:
            self.info.class_names = list(class_names)
        self._batch = dims[0] or batch_size
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self._batch, 3, *self.info.input_size)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(_ONNX_DTYPES[self._input.type])

    @property
    def output_names(self) -> List[str]:
        return list(self._outputs)

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise BackendError(f"input batch has shape {batch.shape}, the model takes {self.input_shape}")
        try:
            return self._session.run(self._outputs, {self._input.name: batch})
        except Exception as exc:
            raise BackendError(f"ONNX Runtime inference failed: {str(exc).strip()[:200]}") from None

    def warmup(self, runs: int = 1) -> None:
        dummy = np.zeros(self.input_shape, self.input_dtype)
        for _ in range(runs):
            self.infer(dummy)

    def close(self) -> None:
        self._session = None
