"""Fake ``tensorrt``: the TensorRT Python API the agent uses, running ONNX models with ONNX Runtime.

Same names and call rules as the releases listed in _generations.py (8.4.1, 8.5.2, 8.6.2,
10.3 and the main branch, 11.x; see _runtime.py and _builder.py for the rules enforced);
device memory comes from the fake ``pycuda``. Test knobs:

- ``_fake.configure(generation="8.4" | "8.5" | "8.6" | "10" | "11")``: that release's
  ``__version__``, I/O API (the other generation's methods fail ``hasattr``), ``DataType``
  members, ``nptype`` table, and what it removed;
- ``_fake.configure(api="v3" | "both" | "v2")``: the older knob (10.3, 8.6, 8.4);
- ``_fake.configure(numpy=(1, 24))``: the numpy the emulated device runs, for ``nptype``;
- ``_fake.configure(version=...)``, ``reorder_outputs=True``, ``fast_fp16=False``...;
- ``_fake.STATE.builds`` (what each build saw), ``_fake.STATE.executions``,
  ``_fake.STATE.problems`` (misuse real TensorRT crashes on).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple, Union

from . import _common
from ._builder import (
    Builder,
    IBuilderConfig,
    IInt8Calibrator,
    IInt8EntropyCalibrator2,
    INetworkDefinition,
    IOptimizationProfile,
    ITensor,
    ITimingCache,
    OnnxParser,
    ParserError,
)
from ._common import (
    BuilderFlag,
    CalibrationAlgoType,
    DataType,
    Dims,
    ILogger,
    Logger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    TensorIOMode,
    nptype,
    volume,
)
from ._generations import API_GENERATIONS, GENERATIONS
from ._runtime import ICudaEngine, IExecutionContext, IHostMemory, Runtime

__version__ = _common.STATE.version

Dims32 = Dims

#: Lower-case aliases (trt.float32 ...) and the DataType member each stands for.
_ALIASES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
            "uint8": "UINT8", "fp8": "FP8", "bfloat16": "BF16", "int64": "INT64", "int4": "INT4",
            "fp4": "FP4"}
#: Module attributes a generation may take away, with their full-featured values.
_OPTIONAL: Dict[str, Any] = {"TensorIOMode": TensorIOMode, "IInt8Calibrator": IInt8Calibrator,
                             "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
                             "CalibrationAlgoType": CalibrationAlgoType}


def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
    """Register the bundled plugins (EfficientNMS_TRT among them); they log through ``logger``.

    The plugin library keeps a raw pointer to the logger of the latest call.
    """
    import weakref

    _common.check_logger(logger)
    _common.STATE.plugins = True
    _common.STATE.plugin_logger = weakref.ref(logger)
    return True


def _apply_generation() -> None:
    module = sys.modules[__name__]
    state = _common.STATE
    generation = state.generation
    module.DataType = _common.dtype_enum()
    module.BuilderFlag = _common.builder_flag_enum()
    for alias, member in _ALIASES.items():
        if member in generation.dtypes:
            setattr(module, alias, module.DataType[member])
        else:
            module.__dict__.pop(alias, None)
    for name, value in _OPTIONAL.items():
        absent = name in generation.removed or (name == "TensorIOMode" and generation.api == "v2")  # 8.5+
        if absent:
            module.__dict__.pop(name, None)
        else:
            setattr(module, name, value)
    module.__version__ = state.version


class _Knobs:
    STATE = _common.STATE

    @staticmethod
    def configure(api: Optional[str] = None, generation: Optional[str] = None, version: Optional[str] = None,
                  numpy: Union[str, Tuple[int, int], None] = None, **flags: Any) -> None:
        state = _common.STATE
        if api is not None:
            if api not in API_GENERATIONS:
                raise ValueError(f"api must be one of {sorted(API_GENERATIONS)}")
            generation = API_GENERATIONS[api]
        if generation is not None:
            if generation not in GENERATIONS:
                raise ValueError(f"generation must be one of {sorted(GENERATIONS)}")
            state.generation = GENERATIONS[generation]
            state.version = state.generation.version
        if version is not None:
            state.version = version
        if numpy is not None:
            parts = numpy.split(".") if isinstance(numpy, str) else numpy
            state.numpy = (int(parts[0]), int(parts[1]))
        for name, value in flags.items():
            if not hasattr(state, name):
                raise ValueError(f"unknown knob {name!r}")
            setattr(state, name, value)
        _apply_generation()

    @staticmethod
    def reset() -> None:
        _common.STATE.__init__()  # type: ignore[misc]
        _Knobs.configure(generation=API_GENERATIONS["v3"])


_fake = _Knobs
_apply_generation()

__all__ = ["Builder", "BuilderFlag", "CalibrationAlgoType", "DataType", "Dims", "IBuilderConfig",
           "ICudaEngine", "IExecutionContext", "IHostMemory", "IInt8Calibrator", "IInt8EntropyCalibrator2",
           "ILogger", "INetworkDefinition", "IOptimizationProfile", "ITensor", "ITimingCache", "Logger",
           "MemoryPoolType", "NetworkDefinitionCreationFlag", "OnnxParser", "ParserError", "Runtime",
           "TensorIOMode", "init_libnvinfer_plugins", "nptype", "volume"]
