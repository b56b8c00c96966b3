"""ONNX Runtime backend: the CPU path (and any machine without a built TensorRT engine).

The model describes itself: this project's exports carry ``ModelInfo`` in the ONNX
``metadata_props``; a plain ultralytics export carries ``names``/``imgsz``/``stride``,
which are read as a fallback so any ultralytics ONNX model runs too.

Execution providers: the TensorRT and CUDA providers are used when the installed
onnxruntime has them (onnxruntime-gpu, Jetson Zoo wheels), the CPU provider otherwise.
The TensorRT provider compiles engines when a session starts; they are cached on disk so
only the first start of a model pays for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import BackendError, ModelError
from agent.inference.backends.base import WarmupMixin
from agent.inference.backends.onnx_info import info_from_metadata

log = logging.getLogger(__name__)

# Re-exported: callers used to import it from here.
__all__ = ["OnnxRuntimeBackend", "choose_providers", "info_from_metadata"]

_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

#: Execution providers in order of preference; those missing from the installed build are skipped.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

Provider = Union[str, Tuple[str, Dict[str, Any]]]


def trt_cache_dir() -> Path:
    """Where the TensorRT provider keeps compiled engines (per user, survives restarts)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "detection-agent" / "onnxruntime-tensorrt"


def choose_providers(available: Sequence[str], requested: Optional[Sequence[str]] = None,
                     cache_dir: Optional[Path] = None) -> List[Provider]:
    """The providers to ask for: ``requested`` (checked) or the preferred ones present.

    Raises BackendError when a requested provider is not in this onnxruntime build.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendError(f"onnxruntime has no {', '.join(missing)} (this build has: "
                               f"{', '.join(available)})")
        names = list(requested)
    else:
        names = [p for p in PREFERRED_PROVIDERS if p in available]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # a fallback for nodes the others do not take
    providers: List[Provider] = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            directory = cache_dir or trt_cache_dir()
            try:
                directory.mkdir(parents=True, exist_ok=True)
                providers.append((name, {"trt_engine_cache_enable": True,
                                         "trt_engine_cache_path": str(directory)}))
            except OSError as exc:
                # Still usable, only slower to start: each start rebuilds the engine.
                log.warning("TensorRT provider without an engine cache (%s: %s)", directory, exc.strerror)
                providers.append(name)
        else:
            providers.append(name)
    return providers


class OnnxRuntimeBackend(WarmupMixin):
    name = "onnxruntime"

    def __init__(self, model_path: Path, batch_size: int = 1, class_names: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, providers: Optional[Sequence[str]] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("the onnxruntime backend needs the onnxruntime package "
                               "(pip install 'detection-agent[cpu]')") from exc
        options = ort.SessionOptions()
        # 0 lets ONNX Runtime use one thread per physical core; a device running several
        # cameras or services may want fewer (model.threads).
        options.intra_op_num_threads = int(threads or 0)
        options.inter_op_num_threads = 1  # the graph is one chain: parallel branches buy nothing
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        chosen = choose_providers(ort.get_available_providers(), providers)
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise ModelError(f"{model_path}: ONNX Runtime cannot load this model: "
                             f"{str(exc).strip().splitlines()[0][:200]}") from None
        log.info("ONNX Runtime %s, providers %s, %s threads", ort.__version__,
                 self._session.get_providers(), threads or "default")
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
            self.info = dataclasses.replace(self.info, class_names=list(class_names))
        self._batch = dims[0] or batch_size
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def providers(self) -> List[str]:
        """The providers the session actually runs on, best first."""
        return list(self._session.get_providers())

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
        if self._session is None:
            raise BackendError("the onnxruntime backend is closed")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise BackendError(f"input batch has shape {batch.shape}, the model takes {self.input_shape}")
        try:
            return self._session.run(self._outputs, {self._input.name: batch})
        except Exception as exc:
            raise BackendError(f"ONNX Runtime inference failed: {str(exc).strip()[:200]}") from None

    def close(self) -> None:
        self._session = None
