"""OpenCV DNN backend: runs darknet ``.cfg`` + ``.weights`` models on the CPU.

Needs no runtime beyond OpenCV 4.x (5.x dropped the darknet importer). OpenCV decodes the
YOLO heads itself and returns, per head, rows of normalised cx, cy, w, h, objectness and
class scores already multiplied by objectness and zeroed below the cfg's ``thresh``
(0.2 by default), so this backend cannot report scores under that floor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .. import darknet
from ..errors import BackendError, ModelError
from ..types import ModelInfo

log = logging.getLogger(__name__)


class OpenCVBackend:
    name = "opencv"

    def __init__(self, model_path: Path, batch_size: int = 1,
                 class_names: Optional[Sequence[str]] = None) -> None:
        if not hasattr(cv2.dnn, "readNetFromDarknet"):
            raise BackendError(f"OpenCV {cv2.__version__} has no darknet importer (removed in 5.x); "
                               "install opencv-python-headless 4.x")
        weights = darknet.weights_for(model_path)
        info = darknet.model_info(model_path, class_names)
        # OpenCV emits decoded rows per head; the decoder sees them as the objectness layout.
        info.output_format = "objectness"
        self.info: ModelInfo = info
        try:
            self._net = cv2.dnn.readNetFromDarknet(str(model_path), str(weights))
        except cv2.error as exc:
            raise ModelError(f"{model_path}: OpenCV cannot load this darknet model: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        self._batch_size = batch_size

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
        """``[B, N, 5+nc]`` per head: cx, cy, w, h in input pixels, objectness 1, final scores."""
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape[1:]:
            raise BackendError(f"input batch has shape {batch.shape}, the model takes {self.input_shape}")
        self._net.setInput(np.ascontiguousarray(batch, dtype=np.float32))
        heads = self._net.forward(self._outputs)
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

    def warmup(self, runs: int = 1) -> None:
        dummy = np.zeros(self.input_shape, np.float32)
        for _ in range(runs):
            self.infer(dummy)

    def close(self) -> None:
        self._net = None
