"""Fake ``pycuda.driver``: the subset the agent and the fake TensorRT use, with the real rules.

Device memory is a registry of numpy byte buffers keyed by fake pointers (``int(alloc)``);
copies really copy. The rules of the real driver that code gets wrong are enforced:

- ``init()`` before ``Device``; a current context (per thread, as in CUDA) for allocations,
  streams, page-locked memory and copies; ``LogicError("... invalid device context")``
  otherwise;
- the asynchronous copies take page-locked memory only (pycuda's documented rule) and run
  when the stream is synchronized, so output read before ``synchronize()`` is stale, as on
  a GPU; fresh device memory is filled with 0xFF bytes (NaN as float), never zeros;
- out-of-range copies are ``LogicError``, reads past an allocation at execution time are
  ``LaunchError`` (an illegal memory access), an allocation past the device's memory is
  ``MemoryError``;
- ``Context.detach()`` follows pycuda's source: it destroys the context when current here or
  created by this thread, and silently does nothing from another thread.

Test knobs live in ``FAKE`` (``reset()`` restores them): device name, compute capability,
total memory, ``fail_alloc_after`` (the Nth next allocation fails as out of memory). Leak
checks: ``live_allocations()``, ``live_pinned()``, ``FAKE.problems``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np


class Error(Exception):
    pass


class MemoryError(Error):
    pass


class LogicError(Error):
    pass


class RuntimeError(Error):
    pass


class LaunchError(Error):
    pass


class _Fake:
    def __init__(self) -> None:
        self.initialized = False
        self.device_name = "Orin (fake)"
        self.compute_capability = (8, 7)
        self.total_memory = 8 << 30
        self.device_count = 1
        self.fail_alloc_after: Optional[int] = None  # allocations that still succeed before OOM
        self.allocations: Dict[int, _Allocation] = {}
        self.pinned: Dict[int, HostAllocation] = {}
        self.streams: Dict[int, Stream] = {}
        self.problems: List[str] = []  # misuse the real driver would not report at once
        self._next_pointer = 0x7F0000000000
        self._handles = itertools.count(0x5000)


FAKE = _Fake()
_tls = threading.local()


def reset() -> None:
    """Forget everything: a fresh driver with default knobs (same object: importers keep it)."""
    FAKE.__init__()  # type: ignore[misc]
    _tls.__dict__.clear()


def _stack() -> List[Context]:
    if not hasattr(_tls, "stack"):
        _tls.stack = []
    return _tls.stack


def _require_context(call: str) -> Context:
    stack = _stack()
    if not stack or not stack[-1].valid:
        raise LogicError(f"{call} failed: invalid device context")
    return stack[-1]


def init(flags: int = 0) -> None:
    FAKE.initialized = True


# ---------------------------------------------------------------- devices and contexts


class Device:
    def __init__(self, ordinal: int) -> None:
        if not FAKE.initialized:
            raise LogicError("cuDeviceGet failed: initialization error")
        if not 0 <= ordinal < FAKE.device_count:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.ordinal = ordinal

    @staticmethod
    def count() -> int:
        if not FAKE.initialized:
            raise LogicError("cuDeviceGetCount failed: initialization error")
        return FAKE.device_count

    def name(self) -> str:
        return FAKE.device_name

    def compute_capability(self) -> Tuple[int, int]:
        return tuple(FAKE.compute_capability)  # type: ignore[return-value]

    def total_memory(self) -> int:
        return FAKE.total_memory

    def make_context(self, flags: int = 0) -> Context:
        ctx = Context(self)
        _stack().append(ctx)
        return ctx


class Context:
    def __init__(self, device: Device) -> None:
        self.device = device
        self.valid = True
        self.thread = threading.get_ident()

    @staticmethod
    def pop() -> None:
        stack = _stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    @staticmethod
    def get_current() -> Optional[Context]:
        stack = _stack()
        return stack[-1] if stack else None

    def push(self) -> None:
        if not self.valid:
            raise LogicError("cuCtxPushCurrent failed: invalid device context")
        _stack().append(self)

    def synchronize(self) -> None:
        _require_context("cuCtxSynchronize")
        for stream in list(FAKE.streams.values()):
            if stream.context is self:
                stream.synchronize()

    def detach(self) -> None:
        if not self.valid:
            raise LogicError("context::detach failed: cannot detach from invalid context")
        stack = _stack()
        if stack and stack[-1] is self:
            self._destroy()
            stack.pop()
        elif self.thread == threading.get_ident():
            self._destroy()
        else:
            # pycuda assumes the creating thread has exited and the context died with it.
            FAKE.problems.append("Context.detach() from a thread that neither created the context nor has it "
                                 "current: pycuda skips the destruction, the context and its memory leak")
        self.valid = False

    def _destroy(self) -> None:
        # The real driver frees a destroyed context's memory; code that relied on that instead
        # of freeing explicitly is reported.
        mine = [a for a in FAKE.allocations.values() if a.context is self]
        if mine:
            FAKE.problems.append(f"context destroyed with {len(mine)} live allocations: "
                                 f"{sorted(a.tag for a in mine)}")
        for alloc in mine:
            del FAKE.allocations[alloc.pointer]
        for handle in [h for h, s in FAKE.streams.items() if s.context is self]:
            del FAKE.streams[handle]


# ---------------------------------------------------------------- memory


class _Allocation:
    def __init__(self, nbytes: int, context: Optional[Context], tag: str) -> None:
        # Never reused, 256-byte aligned like cudaMalloc, with a gap so overruns hit no neighbour.
        self.pointer = FAKE._next_pointer
        FAKE._next_pointer += (nbytes + 255) // 256 * 256 + 4096
        self.data = np.full(nbytes, 0xFF, np.uint8)  # uninitialised memory is not zeros
        self.context = context
        self.tag = tag


def _allocate(nbytes: int, context: Optional[Context], tag: str, call: str = "cuMemAlloc") -> _Allocation:
    if nbytes <= 0:
        raise LogicError(f"{call} failed: invalid argument")
    if FAKE.fail_alloc_after is not None:
        if FAKE.fail_alloc_after <= 0:
            raise MemoryError(f"{call} failed: out of memory")
        FAKE.fail_alloc_after -= 1
    used = sum(a.data.nbytes for a in FAKE.allocations.values())
    if used + nbytes > FAKE.total_memory:
        raise MemoryError(f"{call} failed: out of memory")
    alloc = _Allocation(nbytes, context, tag)
    FAKE.allocations[alloc.pointer] = alloc
    return alloc


class DeviceAllocation:
    def __init__(self, alloc: _Allocation) -> None:
        self._alloc: Optional[_Allocation] = alloc
        self._pointer = alloc.pointer

    def __int__(self) -> int:
        return self._pointer

    __index__ = __int__

    def free(self) -> None:
        alloc = self._alloc
        if alloc is None or alloc.pointer not in FAKE.allocations:
            raise LogicError("cuMemFree failed: invalid argument")
        if alloc.context is not None and not alloc.context.valid:
            raise LogicError("cuMemFree failed: invalid device context")
        del FAKE.allocations[alloc.pointer]
        self._alloc = None


def mem_alloc(nbytes: int) -> DeviceAllocation:
    ctx = _require_context("cuMemAlloc")
    return DeviceAllocation(_allocate(int(nbytes), ctx, "mem_alloc"))


def mem_get_info() -> Tuple[int, int]:
    _require_context("cuMemGetInfo")
    used = sum(a.data.nbytes for a in FAKE.allocations.values())
    return FAKE.total_memory - used, FAKE.total_memory


def device_bytes(pointer: int, nbytes: int) -> np.ndarray:
    """The ``nbytes`` at ``pointer`` as a writable uint8 view (for the fake TensorRT)."""
    for alloc in FAKE.allocations.values():
        offset = pointer - alloc.pointer
        if 0 <= offset < alloc.data.nbytes:
            if offset + nbytes > alloc.data.nbytes:
                break
            return alloc.data[offset:offset + nbytes]
    raise LaunchError("cuStreamSynchronize failed: an illegal memory access was encountered")


def allocate_internal(nbytes: int, tag: str) -> int:
    """Device memory TensorRT itself takes (weights, activations); MemoryError when full."""
    return _allocate(nbytes, Context.get_current(), tag).pointer


def free_internal(pointer: int) -> None:
    alloc = FAKE.allocations.pop(pointer, None)
    if alloc is None:
        return  # already released with its context
    if alloc.context is not None and not alloc.context.valid:
        FAKE.problems.append(f"{alloc.tag} released after its CUDA context was destroyed")


def live_allocations() -> List[Tuple[str, int]]:
    return [(a.tag, a.data.nbytes) for a in FAKE.allocations.values()]


class HostAllocation(bytearray):
    """Page-locked host memory: the ``base`` of arrays from ``pagelocked_empty``."""

    freed = False

    def free(self) -> None:
        self.freed = True
        FAKE.pinned.pop(id(self), None)


def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    _require_context("cuMemHostAlloc")
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    host = HostAllocation(max(int(np.prod(shape)) * dtype.itemsize, 1))
    FAKE.pinned[id(host)] = host
    # As in pycuda, the array's base is the HostAllocation (``array.base.free()`` unpins it).
    return np.ndarray(shape, dtype, buffer=host, order=order)


def live_pinned() -> int:
    return len(FAKE.pinned)


def _host_allocation(array: Any) -> Optional[HostAllocation]:
    base = array
    while base is not None:
        if isinstance(base, HostAllocation):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def _host_bytes(array: Any, call: str, pinned: bool, writable: bool) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{call}: expected a numpy array, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise BufferError("ndarray is not contiguous")
    if writable and not array.flags.writeable:
        raise ValueError("assignment destination is read-only")
    owner = _host_allocation(array)
    if pinned and owner is None:
        raise LogicError(f"{call} failed: invalid argument (host memory is not page-locked; "
                         "use pagelocked_empty and copy into it)")
    if owner is not None and owner.freed:
        raise LogicError(f"{call} failed: invalid argument (page-locked memory already freed)")
    return array.reshape(-1).view(np.uint8)


def _device_range(pointer: Any, nbytes: int, call: str) -> np.ndarray:
    try:
        return device_bytes(int(pointer), nbytes)
    except LaunchError:
        raise LogicError(f"{call} failed: invalid argument") from None


# ---------------------------------------------------------------- streams and copies


class Stream:
    def __init__(self, flags: int = 0) -> None:
        self.context = _require_context("cuStreamCreate")
        self.handle = next(FAKE._handles)
        self._queue: List[Callable[[], None]] = []
        FAKE.streams[self.handle] = self

    def enqueue(self, op: Callable[[], None]) -> None:
        self._queue.append(op)

    def synchronize(self) -> None:
        _require_context("cuStreamSynchronize")
        queue, self._queue = self._queue, []
        for op in queue:
            op()

    def is_done(self) -> bool:
        return not self._queue


def _run(op: Callable[[], None], stream: Optional[Stream]) -> None:
    if stream is None:
        op()
    else:
        stream.enqueue(op)


def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Optional[Stream] = None) -> None:
    _require_context("cuMemcpyHtoDAsync")
    host = _host_bytes(src, "cuMemcpyHtoDAsync", pinned=True, writable=False)
    device = _device_range(dest, host.nbytes, "cuMemcpyHtoDAsync")
    # Read at execution time, like the DMA engine: later writes to src before the sync count.
    _run(lambda: np.copyto(device, host), stream)


def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Optional[Stream] = None) -> None:
    _require_context("cuMemcpyDtoHAsync")
    host = _host_bytes(dest, "cuMemcpyDtoHAsync", pinned=True, writable=True)
    device = _device_range(src, host.nbytes, "cuMemcpyDtoHAsync")
    _run(lambda: np.copyto(host, device), stream)


def memcpy_htod(dest: Any, src: np.ndarray) -> None:
    _require_context("cuMemcpyHtoD")
    host = _host_bytes(src, "cuMemcpyHtoD", pinned=False, writable=False)
    np.copyto(_device_range(dest, host.nbytes, "cuMemcpyHtoD"), host)


def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
    _require_context("cuMemcpyDtoH")
    host = _host_bytes(dest, "cuMemcpyDtoH", pinned=False, writable=True)
    np.copyto(host, _device_range(src, host.nbytes, "cuMemcpyDtoH"))
