"""One object that turns images into ``Detections``: preprocess -> backend -> postprocess.

Shared by ``detect``, the daemon's inference thread and ``eval --model``, so the three
cannot drift apart. Not thread-safe: it owns one backend and one reused input buffer; only
``prepare`` may be called from other threads (each call allocates its own input).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from agent.inference.backends.base import Backend, open_backend
from agent.inference.postprocess.postprocessor import Postprocessor, PostprocessSettings
from agent.inference.preprocess import Preprocessor
from agent.types import Detections, FitTransform

log = logging.getLogger(__name__)


class Prepared(NamedTuple):
    """A frame already made into network input (``Detector.prepare``), waiting for inference."""

    tensor: np.ndarray  # (1, 3, H, W)
    transform: FitTransform
    preprocess_ms: float


class Detector:
    def __init__(self, backend: Backend, settings: Optional[PostprocessSettings] = None,
                 resize_mode: Optional[str] = None) -> None:
        self.backend = backend
        self.info = backend.info
        if resize_mode:
            self.info.resize_mode = resize_mode
        batch = int(backend.input_shape[0]) if backend.input_shape[0] else 1
        self.preprocess = Preprocessor(self.info.input_size, self.info.resize_mode, batch,
                                       backend.input_dtype)
        self.postprocess = Postprocessor(self.info, settings)
        #: Milliseconds spent in each stage by the last call.
        self.last_latency_ms: Dict[str, float] = {}

    @classmethod
    def open(cls, model_path: Path, backend: str = "auto", batch_size: int = 1,
             settings: Optional[PostprocessSettings] = None,
             class_names: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> Detector:
        return cls(open_backend(Path(model_path), backend, batch_size, class_names, threads), settings)

    @property
    def class_names(self) -> List[str]:
        return self.info.class_names

    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Detections for each BGR image, in source pixels; batches of any length."""
        results = []
        step = self.preprocess.batch_size
        for start in range(0, len(images), step):
            results.extend(self._run_batch(images[start:start + step]))
        return results

    def _run_batch(self, images: Sequence[np.ndarray]) -> List[Detections]:
        t0 = time.perf_counter()
        tensor, transforms = self.preprocess(images)
        return self._infer(tensor, transforms, (time.perf_counter() - t0) * 1e3)

    def prepare(self, image: np.ndarray) -> Prepared:
        """``image`` made into its own network input; thread-safe (capture threads call it)."""
        t0 = time.perf_counter()
        tensor, transform = self.preprocess.prepare(image)
        return Prepared(tensor, transform, (time.perf_counter() - t0) * 1e3)

    def infer_prepared(self, batch: Sequence[Prepared]) -> Tuple[List[np.ndarray], float]:
        """Only the network on inputs made by ``prepare``: (raw outputs, milliseconds).

        The pipeline decodes the outputs (``postprocess``) in another thread, so the
        inference thread is free for the next batch meanwhile; every backend returns
        outputs that the next call does not overwrite.
        """
        tensor = self._stack(batch)
        t0 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        return outputs, (time.perf_counter() - t0) * 1e3

    def _stack(self, batch: Sequence[Prepared]) -> np.ndarray:
        if len(batch) == 1:
            return batch[0].tensor  # already (1, 3, H, W): no copy
        tensor = self.preprocess.buffer(len(batch))
        for slot, item in enumerate(batch):
            tensor[slot] = item.tensor[0]
        return tensor

    def _infer(self, tensor: np.ndarray, transforms: Sequence[FitTransform], preprocess_ms: float
               ) -> List[Detections]:
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(outputs, transforms)
        t3 = time.perf_counter()
        self.last_latency_ms = {"preprocess": preprocess_ms, "inference": (t2 - t1) * 1e3,
                                "postprocess": (t3 - t2) * 1e3}
        return detections

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
