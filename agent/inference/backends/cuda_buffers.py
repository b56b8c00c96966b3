"""pycuda plumbing for the TensorRT backend: the CUDA context and host/device buffer pairs.

Page-locked host buffers are allocated once and written by copy (``np.copyto``), never
replaced: the asynchronous copies read the memory pycuda pinned, and a fresh numpy array
would be pageable memory the DMA engine cannot use asynchronously. Every pycuda call that
can fail is wrapped so that a failure becomes a ``BackendError`` naming what was attempted;
``free()`` returns all device and pinned memory without waiting for the garbage collector.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, List, Optional, Tuple

import numpy as np

from agent.errors import BackendError

log = logging.getLogger(__name__)

MB = 1 << 20


def import_pycuda(purpose: str = "the tensorrt backend") -> Any:
    """``pycuda.driver``, or a BackendError saying how to install it.

    Never ``pycuda.autoinit``: it creates a context at import time, in whichever thread
    imports first; the inference thread must own its context.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError(f"{purpose} needs pycuda, which is missing "
                           f"({exc}); on a Jetson: pip install pycuda (with the CUDA toolkit on PATH)"
                           ) from None
    return cuda


def open_context(cuda: Any, device_index: int = 0) -> Tuple[Any, Any]:
    """(context, device): a new CUDA context on ``device_index``, current in the calling thread."""
    try:
        cuda.init()
        count = cuda.Device.count()
        if not 0 <= device_index < count:
            raise BackendError(f"no CUDA device {device_index}: this machine has {count}")
        device = cuda.Device(device_index)
        return device.make_context(), device
    except cuda.Error as exc:
        raise BackendError(f"cannot create a CUDA context on device {device_index}: {exc}") from None


def memory_note(cuda: Any) -> str:
    """``" (X MB free of Y MB)"``, or nothing when the driver cannot say."""
    try:
        free, total = cuda.mem_get_info()
    except Exception:  # only decorates an error message; never hide the real error
        return ""
    return f" ({free // MB} MB free of {total // MB} MB)"


@dataclasses.dataclass
class Buffer:
    """One engine tensor: its page-locked host array and its device allocation."""

    name: str
    is_input: bool
    host: np.ndarray
    device: Any  # pycuda DeviceAllocation; int(device) is the device pointer

    @property
    def address(self) -> int:
        return int(self.device)


class Buffers:
    """All buffer pairs of one engine; ``free()`` releases every one of them."""

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda
        self.items: List[Buffer] = []

    def allocate(self, name: str, is_input: bool, shape: Tuple[int, ...], dtype: np.dtype) -> Buffer:
        cuda = self._cuda
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        host: Optional[np.ndarray] = None
        try:
            host = cuda.pagelocked_empty(tuple(int(d) for d in shape), np.dtype(dtype))
            device = cuda.mem_alloc(max(nbytes, 1))  # cuMemAlloc rejects 0 bytes
        except cuda.MemoryError as exc:
            _free_host(host)
            raise BackendError(f"out of GPU memory allocating {nbytes / MB:.1f} MB for tensor {name!r}"
                               f"{memory_note(cuda)}: {exc}. Stop other GPU programs, or build the "
                               "engine for a smaller --batch") from None
        except cuda.Error as exc:
            _free_host(host)
            raise BackendError(f"CUDA error allocating {nbytes / MB:.1f} MB for tensor {name!r}: "
                               f"{exc}") from None
        buffer = Buffer(name, is_input, host, device)
        self.items.append(buffer)
        return buffer

    def free(self) -> None:
        """Release every allocation; keeps going past failures so nothing else leaks."""
        failures = []
        for buffer in self.items:
            try:
                buffer.device.free()
            except self._cuda.Error as exc:
                failures.append(f"{buffer.name}: {exc}")
            _free_host(buffer.host)
        self.items = []
        if failures:
            log.error("freeing CUDA memory failed: %s", "; ".join(failures))


def _free_host(host: Optional[np.ndarray]) -> None:
    """Unpin a pagelocked_empty array now (its ``base`` is pycuda's HostAllocation)."""
    base = getattr(host, "base", None)
    if base is not None and hasattr(base, "free"):
        try:
            base.free()
        except Exception as exc:  # an unpin failure must not hide the caller's error
            log.error("freeing page-locked memory failed: %s", exc)
