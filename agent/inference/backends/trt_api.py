"""What the backend and the engine builder need from any TensorRT release (8.4 to 11).

- ``import_tensorrt``: the module, or a BackendError saying where it comes from.
- ``process_logger``: one logger for the whole process. TensorRT keeps the first logger it
  gets while any builder or runtime lives and sends every later object's messages there
  (a second logger only hears that it "differs from one already provided"), and
  ``init_libnvinfer_plugins`` keeps a raw pointer to the logger it was given: a logger made
  per backend or per build would miss messages, or be freed while TensorRT still writes
  to it. So one is made and kept for the life of the process.
- ``TrtErrors``: the errors TensorRT logs in this thread while a block runs, so each call
  reports its own failure, not an older one.
- ``numpy_dtype``: a tensor's numpy type, by the ``DataType`` member's name. Never
  ``trt.nptype``: TensorRT 8.4-8.5 (JetPack 5) builds its table with ``np.bool``, which
  numpy 1.24-1.26 removed, so it raises AttributeError for every type there (NVIDIA/TensorRT
  issues 2557, 2701).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any, List, Optional, Type

import numpy as np

from agent.errors import BackendError, ModelError

log = logging.getLogger(__name__)

#: TensorRT data types with a numpy equivalent; FP8, BF16, INT4 and FP4 have none.
_NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}

_logger: Any = None
_logger_lock = threading.Lock()
_captures = threading.local()


def import_tensorrt(purpose: str = "the tensorrt backend") -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"{purpose} needs TensorRT, which is missing ({exc}); it comes "
                           "with JetPack (apt install python3-libnvinfer). Without an NVIDIA GPU, run the "
                           ".onnx model with --backend onnxruntime") from None
    return trt


def numpy_dtype(trt_type: Any, tensor: str = "tensor") -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType`` member, whatever the release and numpy."""
    name = str(getattr(trt_type, "name", trt_type)).rsplit(".", 1)[-1]
    if name not in _NUMPY_TYPES:
        raise ModelError(f"{tensor} is a TensorRT {name} tensor, which has no numpy type; export the model "
                         "with float32, float16 or integer inputs and outputs")
    return np.dtype(_NUMPY_TYPES[name])


def process_logger(trt: Any) -> Any:
    """The process's TensorRT logger: made on first use, then kept (see the module doc)."""
    global _logger
    with _logger_lock:
        # A logger of another tensorrt module happens only when tests swap the module.
        if _logger is None or not isinstance(_logger, trt.ILogger):
            _logger = _make_logger(trt)
        return _logger


def _make_logger(trt: Any) -> Any:
    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]  # tensorrt has no stubs
        """Forwards to ``logging``; errors also go to the ``TrtErrors`` blocks of this thread."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                for capture in getattr(_captures, "stack", ()):
                    capture.messages.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


class TrtErrors:
    """``with TrtErrors() as errors:`` collects what TensorRT reports as errors in the block.

    TensorRT calls the logger on the thread that made the failing call, so a thread-local
    collection belongs to that call alone.
    """

    def __init__(self) -> None:
        self.messages: List[str] = []

    def __enter__(self) -> TrtErrors:
        if not hasattr(_captures, "stack"):
            _captures.stack = []
        _captures.stack.append(self)
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        _captures.stack.remove(self)

    def text(self) -> str:
        """The last few errors, for a one-line message."""
        return "; ".join(self.messages[-3:]) or "no message from TensorRT"
