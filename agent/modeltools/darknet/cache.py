"""Darknet models converted on the fly: one ONNX conversion per cfg + weights, kept in a cache.

``agent.inference.model_path`` calls ``cached_onnx`` when ONNX Runtime is to run a ``.cfg``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

from agent.errors import ModelError
from agent.modeltools.darknet import cfg as darknet
from agent.modeltools.darknet.layers import PathLike
from agent.modeltools.darknet.to_onnx import CONVERTER_VERSION, convert

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Per-user cache for converted models (the model folder may be read-only)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "detection-agent" / "darknet"


def cached_onnx(cfg_path: PathLike, imgsz: Optional[int] = None) -> Path:
    """The ONNX model of ``cfg_path`` + its weights, converted once and reused.

    Keyed by a hash of the cfg, the weights, the names file beside them and the converter
    version, so an edited cfg or retrained weights convert again.
    """
    cfg = Path(cfg_path)
    weights = darknet.weights_for(cfg)
    digest = hashlib.sha256(f"v{CONVERTER_VERSION} {imgsz}".encode())
    names_file = darknet.find_names_file(cfg)
    for part in (cfg, weights, names_file):
        if part is not None:
            with open(part, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    name = f"{cfg.stem}-{digest.hexdigest()[:16]}.onnx"
    user = os.getuid() if hasattr(os, "getuid") else 0  # no getuid on Windows
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"detection-agent-{user}"):
        target = folder / name
        if target.is_file():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            log.info("converting %s to %s", cfg, target)
            return convert(cfg, weights, target, imgsz=imgsz, dynamic=True)
        except PermissionError as exc:
            log.warning("cannot write the converted model to %s (%s)", folder, exc.strerror)
    raise ModelError(f"{cfg}: no writable cache folder for the converted ONNX model (tried {cache_dir()})")
