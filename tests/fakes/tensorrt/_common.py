"""Enums, ``Dims``, loggers, ``nptype``/``volume`` and the fake's own state (API generation, version)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import sys
from typing import Any, Dict, Iterable, List, Optional, Set

import numpy as np

#: The TensorRT release each emulated API generation reports.
VERSIONS = {"v3": "10.3.0.26", "both": "8.6.2.3", "v2": "8.4.1.5"}

#: Named-tensor API (8.5+); absent from TensorRT 8.4.
V3_ONLY = {"num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
           "get_tensor_profile_shape", "set_input_shape", "set_tensor_address", "get_tensor_address",
           "execute_async_v3"}
#: Binding-index API (8.x); removed in TensorRT 10.
V2_ONLY = {"num_bindings", "get_binding_name", "get_binding_index", "get_binding_shape", "get_binding_dtype",
           "binding_is_input", "get_profile_shape", "set_binding_shape", "execute_async_v2", "execute_v2",
           "all_binding_shapes_specified", "max_batch_size", "has_implicit_batch_dimension"}


@dataclasses.dataclass
class BuildRecord:
    """What one ``build_serialized_network`` call saw, for tests to inspect."""

    flags: Set[str]
    workspace: Optional[int]
    profile: Dict[str, List[tuple]]
    calibration_batches: List[np.ndarray] = dataclasses.field(default_factory=list)
    calibration_from_cache: bool = False
    timing_cache_entries_before: Optional[int] = None
    input_dtypes: Dict[str, str] = dataclasses.field(default_factory=dict)


class _State:
    def __init__(self) -> None:
        self.api = "v3"
        self.version = VERSIONS["v3"]
        self.plugins = False  # init_libnvinfer_plugins called
        self.reorder_outputs = False  # engines list outputs in reverse ONNX order
        self.fast_fp16 = True
        self.fast_int8 = True
        self.builds: List[BuildRecord] = []
        self.executions = 0

    def hidden(self) -> Set[str]:
        return {"v3": V2_ONLY, "v2": V3_ONLY}.get(self.api, set())


STATE = _State()


class Gated:
    """Hides the attributes the emulated TensorRT release does not have (``hasattr`` is False)."""

    def __getattribute__(self, name: str) -> Any:
        if name in STATE.hidden():
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        return object.__getattribute__(self, name)


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}


def nptype(trt_type: DataType) -> type:
    try:
        return _NP[DataType(trt_type)]
    except (KeyError, ValueError):
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.") from None


def from_numpy(dtype: Any) -> DataType:
    dtype = np.dtype(dtype)
    for trt_type, np_type in _NP.items():
        if np.dtype(np_type) == dtype:
            return trt_type
    raise TypeError(f"no TensorRT type for {dtype}")


def volume(iterable: Iterable[int]) -> int:
    return functools.reduce(operator.mul, iterable, 1)


class Dims(tuple):
    """``trt.Dims``: a sequence of ints, -1 where dynamic."""

    def __new__(cls, values: Iterable[int] = ()) -> Dims:
        return super().__new__(cls, (int(v) for v in values))

    def __repr__(self) -> str:
        return "(" + ", ".join(str(v) for v in self) + ")"


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    EXPLICIT_PRECISION = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    STRICT_TYPES = 6


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_SHARED_MEMORY = 4


class CalibrationAlgoType(enum.IntEnum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


class ILogger:
    """Base of loggers; a subclass must call ``ILogger.__init__`` (pybind11 enforces it)."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        self._trt_initialised = True

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


class Logger(ILogger):
    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] [{severity.name[0]}] {msg}", file=sys.stderr)


def check_logger(logger: Any) -> None:
    if not isinstance(logger, ILogger):
        raise TypeError(f"incompatible constructor arguments: expected tensorrt.ILogger, got {type(logger)}")
    if not getattr(logger, "_trt_initialised", False):
        raise TypeError(f"tensorrt.ILogger.__init__() must be called when overriding __init__ "
                        f"({type(logger).__name__})")


def error(logger: ILogger, message: str) -> None:
    logger.log(ILogger.Severity.ERROR, message)


def warning(logger: ILogger, message: str) -> None:
    logger.log(ILogger.Severity.WARNING, message)
