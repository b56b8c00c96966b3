"""One object that turns images into ``Detections``: preprocess -> backend -> postprocess.

Shared by ``detect``, the daemon's inference thread and ``eval --model``, so the three
cannot drift apart. Not thread-safe: it owns one backend and one reused input buffer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .backends.base import Backend, open_backend
from .postprocess.postprocessor import Postprocessor, PostprocessSettings
from .preprocess import Preprocessor
from .types import Detections

log = logging.getLogger(__name__)


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
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(outputs, transforms)
        t3 = time.perf_counter()
        self.last_latency_ms = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                                "postprocess": (t3 - t2) * 1e3}
        return detections

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
