"""The ``Backend`` protocol every inference runtime implements, and the registry.

A backend owns one loaded model. The inference thread creates it, calls ``infer`` with a
preprocessed NCHW batch and closes it; nothing else touches it (TensorRT's CUDA context
belongs to the thread that made it). Runtime libraries are imported inside each backend
module, never here, so the package imports on any machine.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import BackendError, ModelError
from ..types import ModelInfo

log = logging.getLogger(__name__)

#: Backend name -> "module:Class", imported only when chosen.
REGISTRY: Dict[str, str] = {
    "onnxruntime": "agent.backends.onnxruntime:OnnxRuntimeBackend",
    "opencv": "agent.backends.opencv:OpenCVBackend",
}

#: Model file suffixes and the backends that can run them, in order of preference.
SUFFIX_BACKENDS: Dict[str, Tuple[str, ...]] = {
    ".onnx": ("onnxruntime",),
    ".cfg": ("opencv",),
}


class Backend(Protocol):
    """A loaded network: fixed input, a list of output arrays per call."""

    name: str
    info: ModelInfo

    @property
    def input_shape(self) -> Tuple[int, ...]: ...

    @property
    def input_dtype(self) -> np.dtype: ...

    @property
    def output_names(self) -> List[str]: ...

    def infer(self, batch: np.ndarray) -> List[np.ndarray]: ...

    def warmup(self, runs: int = 1) -> None: ...

    def close(self) -> None: ...


def choose_backend(model_path: Path, requested: str = "auto") -> str:
    """Backend name for ``model_path``: the requested one, or the best that can run it."""
    suffix = Path(model_path).suffix.lower()
    candidates = SUFFIX_BACKENDS.get(suffix)
    if candidates is None:
        known = ", ".join(sorted(SUFFIX_BACKENDS))
        raise ModelError(f"{model_path}: unsupported model file type {suffix or '(none)'!r}; "
                         f"this build runs: {known}")
    if requested == "auto":
        return candidates[0]
    if requested not in REGISTRY:
        raise ModelError(f"unknown backend {requested!r}; available: {', '.join(sorted(REGISTRY))}")
    if requested not in candidates:
        raise ModelError(f"{model_path}: backend {requested!r} cannot run {suffix} files "
                         f"(use one of: {', '.join(candidates)})")
    return requested


def open_backend(model_path: Path, requested: str = "auto", batch_size: int = 1,
                 class_names: Optional[Sequence[str]] = None) -> Backend:
    """Load ``model_path`` with the chosen backend."""
    model_path = Path(model_path)
    if not model_path.exists():
        raise ModelError(f"{model_path}: model file not found")
    name = choose_backend(model_path, requested)
    module_name, class_name = REGISTRY[name].split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} needs a library that is not installed: {exc}") from exc
    log.info("loading %s with the %s backend", model_path, name)
    return cls(model_path, batch_size=batch_size, class_names=class_names)
