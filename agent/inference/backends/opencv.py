"""OpenCV DNN backend: darknet ``.cfg`` + ``.weights`` and ONNX models, CPU or CUDA.

Needs no runtime beyond OpenCV 4.x (5.x dropped the darknet importer).

- darknet: OpenCV decodes the YOLO heads itself and returns, per head, rows of normalised
  cx, cy, w, h, objectness and class scores already multiplied by objectness and zeroed
  below the cfg's ``thresh`` (0.2 by default), so this backend cannot report scores under
  that floor.
- ONNX: the raw network outputs, decoded like ONNX Runtime's. OpenCV has no API for the
  model's metadata, so ``ModelInfo`` is read with the ``onnx`` package.

OpenCV builds with CUDA (JetPack's own, not pip's wheels) run on the GPU.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.errors import BackendError, ModelError
from agent.inference.backends.base import DarknetNetwork, WarmupMixin
from agent.inference.backends.onnx_info import read_summary
from agent.types import ModelInfo

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    """True when this OpenCV was built with CUDA and sees a device."""
    try:
        return hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0
    except cv2.error:  # built with CUDA, but no driver or device
        return False


class OpenCVBackend(WarmupMixin):
    name = "opencv"

    def __init__(self, model_path: Path, batch_size: int = 1, class_names: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, darknet: Optional[DarknetNetwork] = None) -> None:
        """``darknet``: for a ``.cfg``, its weights and ``ModelInfo`` (agent/inference/model_path.py)."""
        model_path = Path(model_path)
        self._darknet = model_path.suffix.lower() == ".cfg"
        if self._darknet:
            if darknet is None:
                raise ModelError(f"{model_path}: a darknet cfg is opened through "
                                 "agent.inference.model_path.open_backend (it finds the weights)")
            self.info, self._net, self._model_batch = self._load_darknet(model_path, darknet)
        else:
            self.info, self._net, self._model_batch = self._load_onnx(model_path, class_names)
        if threads:
            cv2.setNumThreads(int(threads))  # process-wide: the inference thread is OpenCV's only user
        if cuda_available():
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.target = "cuda"
        else:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self.target = "cpu"
        log.info("OpenCV %s DNN on %s", cv2.__version__, self.target)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        # A fixed batch of 1 (an ultralytics export) takes bigger batches image by image.
        fixed = self._model_batch is not None and self._model_batch > 1
        self._batch_size = int(self._model_batch or 1) if fixed else max(int(batch_size), 1)

    @staticmethod
    def _load_darknet(model_path: Path, darknet: DarknetNetwork) -> Tuple[ModelInfo, Any, None]:
        if not hasattr(cv2.dnn, "readNetFromDarknet"):
            raise BackendError(f"OpenCV {cv2.__version__} has no darknet importer (removed in 5.x); "
                               "install opencv-python-headless 4.x")
        # OpenCV emits decoded rows per head; the decoder sees them as the objectness layout.
        info = dataclasses.replace(darknet.info, output_format="objectness")
        try:
            net = cv2.dnn.readNetFromDarknet(str(model_path), str(darknet.weights))
        except cv2.error as exc:
            raise ModelError(f"{model_path}: OpenCV cannot load this darknet model: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        return info, net, None

    @staticmethod
    def _load_onnx(model_path: Path, class_names: Optional[Sequence[str]]
                   ) -> Tuple[ModelInfo, Any, Optional[int]]:
        summary = read_summary(model_path, "the opencv backend")
        if summary.input_dtype != "float32":
            raise ModelError(f"{model_path}: OpenCV DNN takes float32 input, this model takes "
                             f"{summary.input_dtype}; use the onnxruntime backend")
        info = summary.info
        if class_names is not None:
            info = dataclasses.replace(info, class_names=list(class_names))
        try:
            net = cv2.dnn.readNetFromONNX(str(model_path))
        except cv2.error as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            raise ModelError(f"{model_path}: OpenCV cannot load this ONNX model: "
                             f"{lines[-1][:200] if lines else exc}") from None
        return info, net, summary.input_shape[0]

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self._batch_size, 3, *self.info.input_size)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def output_names(self) -> List[str]:
        return list(self._outputs)

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Darknet: ``[B, N, 5+nc]`` per head (cx, cy, w, h in input pixels, objectness 1,
        final scores). ONNX: the model's own outputs."""
        if self._net is None:
            raise BackendError("the opencv backend is closed")
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape[1:]:
            raise BackendError(f"input batch has shape {batch.shape}, the model takes {self.input_shape}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._model_batch == 1 and batch.shape[0] > 1:
            per_image = [self._forward(batch[i:i + 1]) for i in range(batch.shape[0])]
            return [np.concatenate(parts) for parts in zip(*per_image)]
        return self._forward(batch)

    def _forward(self, batch: np.ndarray) -> List[np.ndarray]:
        self._net.setInput(batch)
        try:
            heads = self._net.forward(self._outputs)
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise BackendError(f"OpenCV DNN inference failed: {first}") from None
        if not self._darknet:
            return list(heads)
        h, w = self.info.input_size
        scale = np.array([w, h, w, h], np.float32)
        results = []
        for head in heads:
            rows = head.reshape(batch.shape[0], -1, head.shape[-1]).astype(np.float32, copy=True)
            rows[..., :4] *= scale
            # Class columns already hold objectness x class; objectness 1 keeps them as they are.
            rows[..., 4] = 1.0
            results.append(rows)
        return results

    def close(self) -> None:
        self._net = None
