"""Enums, ``Dims``, loggers, ``nptype``/``volume`` and the fake's own state (generation, version).

Loggers follow TensorRT's rules: the first logger given to a ``Builder`` or ``Runtime``
becomes the process's logger while any of them lives, and every message of every object
goes there (a later, different logger only gets TensorRT's "differs from one already
provided" note, sent to the first); ``init_libnvinfer_plugins`` keeps a raw pointer to its
logger. A message sent through a logger that Python already freed is what crashes real
TensorRT: the fake records it in ``STATE.problems``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import sys
import weakref
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Type

import numpy as np

from ._generations import API_GENERATIONS, GENERATIONS, Generation, installed_numpy, numpy_bool_alias

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
        self.generation: Generation = GENERATIONS[API_GENERATIONS["v3"]]
        self.version = self.generation.version
        self.numpy: Tuple[int, int] = installed_numpy()  # the numpy the emulated device runs
        self.plugins = False  # init_libnvinfer_plugins called
        self.reorder_outputs = False  # engines list outputs in reverse ONNX order
        self.fast_fp16 = True
        self.fast_int8 = True
        self.builds: List[BuildRecord] = []
        self.executions = 0
        self.problems: List[str] = []  # misuse real TensorRT would crash on or silently mishandle
        self.global_logger: Optional[weakref.ref] = None
        self.logger_owners: weakref.WeakSet[Any] = weakref.WeakSet()  # live builders and runtimes
        self.plugin_logger: Optional[weakref.ref] = None

    @property
    def api(self) -> str:
        return self.generation.api

    def hidden(self) -> Set[str]:
        by_api = {"v3": V2_ONLY, "v2": V3_ONLY}.get(self.api, set())
        return set(by_api) | set(self.generation.removed)


STATE = _State()


class Gated:
    """Hides the attributes the emulated TensorRT release does not have (``hasattr`` is False)."""

    def __getattribute__(self, name: str) -> Any:
        if name in STATE.hidden():
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in STATE.hidden():  # pybind11 objects take no new attributes either
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


class DataType(enum.IntEnum):
    """Every TensorRT data type (the C++ values); ``public_dtype`` gives the release's own enum."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


_NP: Dict[str, Any] = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                       "BOOL": np.bool_, "UINT8": np.uint8, "INT64": np.int64}


def numpy_of(trt_type: Any) -> Any:
    """The fake's own (always correct) numpy type of a data type, for its buffers."""
    return _NP[DataType(int(trt_type)).name]


@functools.lru_cache(maxsize=None)
def _dtype_enum(names: Tuple[str, ...]) -> Type[enum.IntEnum]:
    cls = enum.IntEnum("DataType", [(n, DataType[n].value) for n in names])  # type: ignore[misc]
    cls.__module__ = "tensorrt"
    return cls


def dtype_enum() -> Type[enum.IntEnum]:
    """``tensorrt.DataType`` of the emulated release: members it lacks do not exist."""
    return _dtype_enum(STATE.generation.dtypes)


def public_dtype(trt_type: Any) -> Any:
    return dtype_enum()(int(trt_type))


def nptype(trt_type: Any) -> type:
    """``tensorrt.nptype`` as the emulated release wrote it, running on ``STATE.numpy``.

    Like the real function, it builds its whole table first: on TensorRT 8.4-8.5 with numpy
    1.24-1.26 the ``np.bool`` entry raises AttributeError whatever type is asked for.
    """
    generation = STATE.generation
    mapping = {}
    for name in generation.nptype_types:
        if name == "BOOL":
            value = np.bool_ if generation.nptype_bool == "np.bool_" else numpy_bool_alias(STATE.numpy)
        else:
            value = _NP[name]
        mapping[public_dtype(DataType[name])] = value
    if trt_type in mapping:
        return mapping[trt_type]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


def from_numpy(dtype: Any) -> DataType:
    dtype = np.dtype(dtype)
    for name, np_type in _NP.items():
        if np.dtype(np_type) == dtype:
            return DataType[name]
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


def builder_flag_enum() -> Type[enum.IntEnum]:
    """``tensorrt.BuilderFlag`` of the emulated release (11.x has no FP16 and INT8 flags)."""
    return _flag_enum(STATE.generation.builder_flags_removed)


@functools.lru_cache(maxsize=None)
def _flag_enum(removed: frozenset) -> Type[enum.IntEnum]:
    if not removed:
        return BuilderFlag
    cls = enum.IntEnum("BuilderFlag", [(f.name, f.value) for f in BuilderFlag  # type: ignore[misc]
                                       if f.name not in removed])
    cls.__module__ = "tensorrt"
    return cls


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


def adopt_logger(owner: Any, logger: Any, creator: str) -> None:
    """A Builder or Runtime takes its logger: the process's logger unless one is already in use."""
    check_logger(logger)
    current = STATE.global_logger() if STATE.global_logger is not None else None
    if not len(STATE.logger_owners):
        STATE.global_logger = weakref.ref(logger)
    elif current is not logger:
        emit(ILogger.Severity.INFO, f"The logger passed into {creator} differs from one already provided for "
             "an existing builder, runtime, or refitter. Uses of the global logger, returned by "
             "nvinfer1::getLogger(), will return the existing value.")
    STATE.logger_owners.add(owner)


def emit(severity: ILogger.Severity, message: str) -> None:
    """A message from any TensorRT object: it goes to the process's logger."""
    _send(STATE.global_logger, "TensorRT", severity, message)


def plugin_emit(severity: ILogger.Severity, message: str) -> None:
    """A message from a bundled plugin: it goes to the logger init_libnvinfer_plugins got last."""
    _send(STATE.plugin_logger, "a plugin", severity, message)


def _send(ref: Optional[weakref.ref], who: str, severity: ILogger.Severity, message: str) -> None:
    if ref is None:
        return  # no logger was ever given: TensorRT's default logger prints nothing we check
    logger = ref()
    if logger is None:
        STATE.problems.append(f"{who} logged through a logger Python already freed (a dangling pointer: "
                              f"real TensorRT crashes here): {message}")
        return
    logger.log(severity, message)


def error(message: str) -> None:
    emit(ILogger.Severity.ERROR, message)


def warning(message: str) -> None:
    emit(ILogger.Severity.WARNING, message)
