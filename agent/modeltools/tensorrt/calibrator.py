"""INT8 calibration for ``build-engine --int8``: TensorRT's entropy calibrator fed by the agent.

Calibration images go through the agent's own ``Preprocessor``, so TensorRT sees exactly
what inference will feed it, in the network input's own data type: a float16-input model
(``export --half``) is calibrated with float16 batches in a buffer sized for them.

TensorRT deprecated this API (implicit quantization) in 10.1 and its main branch removed
it; ``engine.check_release`` stops ``--int8`` early where it is gone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from agent.errors import BackendError

log = logging.getLogger(__name__)


def make_calibrator(trt: Any, cuda: Any, images: List[Path], info: Any, batch: int, cache_path: Path,
                    dtype: Any = np.float32) -> Any:
    """An ``IInt8EntropyCalibrator2`` for batches of ``batch`` images of numpy type ``dtype``."""
    from agent.fileio import atomic_write_bytes, read_image
    from agent.inference.preprocess import Preprocessor

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.preprocess = Preprocessor(info.input_size, info.resize_mode, batch, dtype)
            # Whole batches only: the engine's calibration shape is the profile's opt shape.
            self.batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]
            self.index = 0
            self.failure: Optional[BaseException] = None
            h, w = info.input_size
            try:
                self.device = cuda.mem_alloc(batch * 3 * h * w * np.dtype(dtype).itemsize)
            except cuda.Error as exc:
                raise BackendError(f"cannot allocate the calibration batch on the GPU: {exc}") from None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            if self.index >= len(self.batches) or self.failure is not None:
                return None
            try:
                tensor, _ = self.preprocess([read_image(p) for p in self.batches[self.index]])
                cuda.memcpy_htod(self.device, np.ascontiguousarray(tensor))
            except Exception as exc:  # an exception must not cross into TensorRT's C++ caller
                self.failure = exc
                return None
            self.index += 1
            if self.index % 10 == 0 or self.index == len(self.batches):
                log.info("calibration batch %d/%d", self.index, len(self.batches))
            return [int(self.device)]

        def read_calibration_cache(self) -> Optional[bytes]:
            if cache_path.is_file():
                log.info("using calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))
            log.info("calibration cache written: %s", cache_path)

        def free(self) -> None:
            self.device.free()

    return EntropyCalibrator()
