"""The TensorRT releases the fake emulates, and what each one has (read from the bindings' source).

Sources: NVIDIA/TensorRT ``python/src/infer/pyFoundationalTypes.cpp`` (the ``DataType``
members), ``python/packaging/tensorrt/__init__.py`` and, from 8.6, ``python/packaging/
bindings_wheel/tensorrt/__init__.py`` (``nptype``), ``plugin/efficientNMSPlugin`` (its
creator's ``PLUGIN_VALIDATE(iouThreshold > 0.0F)``), the 10.x deprecation list and the
10.x -> 11.x Python migration guide (what the main branch removed).

- 8.4.1 (JetPack 5.0.2): binding-index API only; DataType FLOAT, HALF, INT8, INT32, BOOL;
  ``nptype`` maps ``bool`` to ``np.bool``.
- 8.5.2 (JetPack 5.1): both I/O APIs; UINT8 added; ``nptype`` still says ``np.bool``
  (NVIDIA/TensorRT issues 2557, 2567, 2701: fixed in 8.6). Whether 8.5's ``nptype`` table
  lists ``uint8`` was not checked; it is listed here (8.5 added the type).
- 8.6.2 (JetPack 6.0): both APIs; FP8 added; ``nptype`` fixed (``np.bool_``), no INT64 yet.
- 10.3 (JetPack 6.1/6.2): named tensors only; BF16, INT64, INT4 added, ``nptype`` maps
  ``int64``. The INT8 calibrators are deprecated (10.1) and ``platform_has_fast_*`` too
  (10.5), but present.
- 11.x (the main branch): the calibrator classes, ``IBuilderConfig.int8_calibrator`` and
  the calibration profile, ``platform_has_fast_*`` and the FP16/INT8 builder flags are
  gone (strong typing and explicit Q/DQ quantization replace them). The build number of
  its version string is made up.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, FrozenSet, Tuple

import numpy as np

_BASE = ("FLOAT", "HALF", "INT8", "INT32", "BOOL")
_V85 = (*_BASE, "UINT8")
_V86 = (*_V85, "FP8")
_V10 = (*_V86, "BF16", "INT64", "INT4")

#: What 11.x no longer has, by the name ``hasattr`` asks for (module, Builder, IBuilderConfig).
REMOVED_IN_11 = frozenset({
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator", "CalibrationAlgoType", "int8_calibrator", "set_calibration_profile",
    "get_calibration_profile", "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32"})


@dataclasses.dataclass(frozen=True)
class Generation:
    key: str
    version: str
    api: str  # "v2" bindings only, "both", "v3" named tensors only
    dtypes: Tuple[str, ...]  # DataType members of this release
    nptype_types: Tuple[str, ...]  # what its nptype() maps
    nptype_bool: str  # "np.bool" (breaks on numpy 1.24-1.26) or "np.bool_"
    nms_validates_iou: bool  # EfficientNMS_TRT's creator rejects iou_threshold <= 0
    removed: FrozenSet[str] = frozenset()
    builder_flags_removed: FrozenSet[str] = frozenset()

    @property
    def number(self) -> Tuple[int, ...]:
        return tuple(int(p) for p in self.version.split("."))


GENERATIONS: Dict[str, Generation] = {
    "8.4": Generation("8.4", "8.4.1.5", "v2", _BASE, _BASE, "np.bool", False),
    "8.5": Generation("8.5", "8.5.2.2", "both", _V85, _V85, "np.bool", True),
    "8.6": Generation("8.6", "8.6.2.3", "both", _V86, _V85, "np.bool_", True),
    "10": Generation("10", "10.3.0.26", "v3", _V10, (*_V85, "INT64"), "np.bool_", True),
    "11": Generation("11", "11.4.0.0", "v3", (*_V10, "FP4"), (*_V85, "INT64"), "np.bool_", True,
                     REMOVED_IN_11, frozenset({"FP16", "INT8"})),
}
#: The older knob: configure(api=...) picks the generation that has exactly that API.
API_GENERATIONS = {"v2": "8.4", "both": "8.6", "v3": "10"}


def installed_numpy() -> Tuple[int, int]:
    major, minor = np.__version__.split(".")[:2]
    return int(major), int(minor)


def numpy_bool_alias(numpy_version: Tuple[int, int]) -> Any:
    """What ``np.bool`` gives under that numpy: the builtin, an AttributeError, or ``np.bool_``.

    numpy 1.20 deprecated the alias, 1.24 removed it, 2.0 brought it back as ``np.bool_``.
    """
    if numpy_version >= (2, 0):
        return np.bool_
    if numpy_version >= (1, 24):
        raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias "
                             "for the builtin `bool`. To avoid this error in existing code, use `bool` by "
                             "itself. Doing this will not modify any behavior and is safe. If you "
                             "specifically wanted the numpy scalar type, use `np.bool_` here.")
    if numpy_version >= (1, 20):
        warnings.warn("`np.bool` is a deprecated alias for the builtin `bool`", DeprecationWarning,
                      stacklevel=3)
    return bool
