"""Darknet ``.weights`` files: the header and the float32 parameters.

Weights file: int32 major, minor, revision; images seen as int64 when
``major*10+minor >= 2`` (and both < 1000), else int32; then float32 parameters per conv
layer: biases (or BN beta, gamma, mean, variance) followed by the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np

from agent.errors import ModelError

PathLike = Union[str, Path]


def read_weights(path: PathLike) -> Tuple[Tuple[int, int, int], int, np.ndarray]:
    """``((major, minor, revision), images_seen, float32 parameters)`` of a darknet weights file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise ModelError(f"{path}: too short for a darknet weights header ({len(data)} bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    # darknet's parser.c: a 64-bit "seen" counter from version 0.2 on.
    wide = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    offset = 20 if wide else 16
    seen = int(np.frombuffer(data, "<i8" if wide else "<i4", 1, 12)[0])
    if (len(data) - offset) % 4:
        raise ModelError(f"{path}: {len(data) - offset} bytes after the header is not a whole number "
                         "of float32 values")
    return (major, minor, revision), seen, np.frombuffer(data, "<f4", offset=offset)


def write_weights(path: PathLike, params: np.ndarray, version: Tuple[int, int, int] = (0, 2, 0),
                  seen: int = 0) -> None:
    """Write a darknet weights file (tests and tools; the header width follows ``version``)."""
    major, minor, revision = version
    wide = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    header = np.array([major, minor, revision], "<i4").tobytes()
    header += np.array([seen], "<i8" if wide else "<i4").tobytes()
    Path(path).write_bytes(header + np.asarray(params, "<f4").tobytes())
