"""Fake ``tensorrt``: the TensorRT Python API the agent uses, running ONNX models with ONNX Runtime.

Same names and call rules as TensorRT 8.4 / 8.6 / 10.x (see _runtime.py and _builder.py for
the rules enforced); device memory comes from the fake ``pycuda``. Test knobs:

- ``_fake.configure(api="v3" | "both" | "v2")``: emulate TensorRT 10.x (named tensors only),
  8.6 (both APIs) or 8.4 (bindings only); sets ``__version__`` to match, hides the other
  generation's methods (``hasattr`` is False) and, for 8.4, ``TensorIOMode``;
- ``_fake.configure(version=...)``, ``reorder_outputs=True``, ``fast_fp16=False``...;
- ``_fake.STATE.builds`` (what each build saw), ``_fake.STATE.executions``.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

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
from ._runtime import ICudaEngine, IExecutionContext, IHostMemory, Runtime

__version__ = _common.VERSIONS["v3"]

float32 = DataType.FLOAT
float16 = DataType.HALF
int8 = DataType.INT8
int32 = DataType.INT32
bool = DataType.BOOL
uint8 = DataType.UINT8

Dims32 = Dims


def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
    """Register the bundled plugins (EfficientNMS_TRT among them)."""
    _common.check_logger(logger)
    _common.STATE.plugins = True
    return True


class _Knobs:
    STATE = _common.STATE

    @staticmethod
    def configure(api: Optional[str] = None, version: Optional[str] = None, **flags: Any) -> None:
        module = sys.modules[__name__]
        state = _common.STATE
        if api is not None:
            if api not in _common.VERSIONS:
                raise ValueError(f"api must be one of {sorted(_common.VERSIONS)}")
            state.api = api
            state.version = _common.VERSIONS[api]
            if api == "v2":
                module.__dict__.pop("TensorIOMode", None)  # added in 8.5
            else:
                module.TensorIOMode = TensorIOMode
        if version is not None:
            state.version = version
        for name, value in flags.items():
            if not hasattr(state, name):
                raise ValueError(f"unknown knob {name!r}")
            setattr(state, name, value)
        module.__version__ = state.version

    @staticmethod
    def reset() -> None:
        _common.STATE.__init__()  # type: ignore[misc]
        _Knobs.configure(api="v3")


_fake = _Knobs

__all__ = ["Builder", "BuilderFlag", "CalibrationAlgoType", "DataType", "Dims", "IBuilderConfig",
           "ICudaEngine", "IExecutionContext", "IHostMemory", "IInt8Calibrator", "IInt8EntropyCalibrator2",
           "ILogger", "INetworkDefinition", "IOptimizationProfile", "ITensor", "ITimingCache", "Logger",
           "MemoryPoolType", "NetworkDefinitionCreationFlag", "OnnxParser", "ParserError", "Runtime",
           "TensorIOMode", "init_libnvinfer_plugins", "nptype", "volume"]
