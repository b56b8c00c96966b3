"""The ``Backend`` protocol every inference runtime implements, and the registry.

A backend owns one loaded model. The inference thread creates it, calls ``infer`` with a
preprocessed NCHW batch and closes it; nothing else touches it (TensorRT's CUDA context
belongs to the thread that made it). Runtime libraries are imported inside each backend
module, never here, so the package imports on any machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Protocol, Sequence, Tuple

import numpy as np

from agent.errors import BackendError, ModelError
from agent.types import ModelInfo

log = logging.getLogger(__name__)

#: Backend name -> "module:Class", imported only when chosen.
REGISTRY: Dict[str, str] = {
    "tensorrt": "agent.inference.backends.tensorrt:TensorRTBackend",
    "onnxruntime": "agent.inference.backends.onnxruntime:OnnxRuntimeBackend",
    "opencv": "agent.inference.backends.opencv:OpenCVBackend",
}

#: The library each backend cannot start without (checked by ``auto`` without importing it).
REQUIRES: Dict[str, str] = {"tensorrt": "tensorrt", "onnxruntime": "onnxruntime", "opencv": "cv2"}

#: Model file suffixes and the backends that can run them, in order of preference.
SUFFIX_BACKENDS: Dict[str, Tuple[str, ...]] = {
    ".engine": ("tensorrt",),
    ".plan": ("tensorrt",),
    ".onnx": ("onnxruntime", "opencv"),
    # darknet: converted once to a cached ONNX model, or read by OpenCV's importer (the step
    # above the backends, agent/inference/model_path.py, decides)
    ".cfg": ("onnxruntime", "opencv"),
}

#: Install hints for a backend whose library is missing.
INSTALL_HINTS: Dict[str, str] = {
    "tensorrt": "TensorRT comes with JetPack (apt install python3-libnvinfer); engines need an NVIDIA GPU, "
                "elsewhere run the .onnx model with the onnxruntime backend",
    "onnxruntime": "pip install 'detection-agent[cpu]'",
    "opencv": "pip install opencv-python-headless",
}


class DarknetNetwork(NamedTuple):
    """A darknet ``.cfg`` for OpenCV's own importer: the weights beside it and what the cfg says."""

    weights: Path
    info: ModelInfo


class ModelFile(NamedTuple):
    """What a backend loads, worked out above the backends (agent/inference/model_path.py)."""

    path: Path  # .engine/.plan, .onnx, or a darknet .cfg (OpenCV only, with ``darknet``)
    backend: str  # a REGISTRY name
    darknet: Optional[DarknetNetwork] = None


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


def installed(name: str) -> bool:
    """Whether backend ``name``'s runtime library can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(REQUIRES[name]) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False


class WarmupMixin:
    """``warmup`` for every backend: the first calls are slow (allocation, CUDA init, autotuning)."""

    def warmup(self, runs: int = 1) -> None:
        dummy = np.zeros(self.input_shape, self.input_dtype)  # type: ignore[attr-defined]  # the Backend's
        for _ in range(runs):
            self.infer(dummy)  # type: ignore[attr-defined]  # the Backend's, mixed in


def choose_backend(model_path: Path, requested: str = "auto") -> str:
    """Backend name for ``model_path``: the requested one, or the best installed one that can run it.

    ``auto`` takes TensorRT for ``.engine``/``.plan`` files and, for ``.onnx`` and darknet
    ``.cfg`` (converted on the fly), ONNX Runtime when it is installed, else OpenCV DNN.
    """
    suffix = Path(model_path).suffix.lower()
    candidates = SUFFIX_BACKENDS.get(suffix)
    if candidates is None:
        known = ", ".join(sorted(SUFFIX_BACKENDS))
        raise ModelError(f"{model_path}: unsupported model file type {suffix or '(none)'!r}; "
                         f"this build runs: {known}")
    if requested == "auto":
        present = [name for name in candidates if installed(name)]
        if suffix == ".cfg" and importlib.util.find_spec("onnx") is None:
            present = [name for name in present if name == "opencv"]  # no converter without onnx
        return present[0] if present else candidates[0]  # the first one's error says what to install
    if requested not in REGISTRY:
        raise ModelError(f"unknown backend {requested!r}; available: {', '.join(sorted(REGISTRY))}")
    if requested not in candidates:
        hint = ""
        if requested == "tensorrt":
            hint = " (build an engine on the device: detection-agent build-engine)"
        raise ModelError(f"{model_path}: backend {requested!r} cannot run {suffix} files "
                         f"(use one of: {', '.join(candidates)}){hint}")
    return requested


def load_backend(model: ModelFile, batch_size: int = 1, class_names: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> Backend:
    """Load a resolved model (``agent.inference.model_path.open_backend`` resolves and loads)."""
    name = model.backend
    module_name, class_name = REGISTRY[name].split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} needs a library that is not installed: {exc} "
                           f"({INSTALL_HINTS[name]})") from exc
    log.info("loading %s with the %s backend", model.path, name)
    if model.darknet is not None:
        return cls(model.path, batch_size=batch_size, class_names=class_names, threads=threads,
                   darknet=model.darknet)
    return cls(model.path, batch_size=batch_size, class_names=class_names, threads=threads)
