"""The JSON sidecar of a TensorRT engine: what was built, with what, for which GPU.

A serialized engine only runs with the TensorRT version and on the GPU generation that
built it, and TensorRT's own complaint about a mismatch is a log line after a failed
deserialization. The builder writes ``model.engine.json`` beside the engine (``ModelInfo``,
TensorRT version, GPU name and compute capability, build flags) so the backend can compare
before it deserializes, and say what to do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from agent.errors import ModelError
from agent.types import ModelInfo

log = logging.getLogger(__name__)

SCHEMA = "detection-agent/engine/1"


@dataclasses.dataclass
class EngineMeta:
    info: ModelInfo
    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]
    output_names: List[str] = dataclasses.field(default_factory=list)  # the ONNX order
    build: Dict[str, Any] = dataclasses.field(default_factory=dict)  # flags, batch, source, NMS

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, "model_info": dataclasses.asdict(self.info),
                           "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
                           "compute_capability": list(self.compute_capability),
                           "output_names": self.output_names, "build": self.build}, indent=2) + "\n"


def sidecar_path(engine_path: Path) -> Path:
    return Path(engine_path).with_name(Path(engine_path).name + ".json")


def read_sidecar(engine_path: Path) -> Optional[EngineMeta]:
    """The engine's sidecar, None when there is none; ModelError when it is unreadable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA!r}")
        info = ModelInfo.from_metadata({"detection_agent.model_info": json.dumps(data["model_info"])})
        cc = tuple(int(v) for v in data["compute_capability"])
        if info is None or len(cc) != 2:
            raise ValueError("model_info or compute_capability missing")
        return EngineMeta(info, str(data["tensorrt_version"]), str(data["gpu_name"]), (cc[0], cc[1]),
                          [str(n) for n in data.get("output_names", [])], dict(data.get("build", {})))
    except (OSError, ValueError, KeyError, TypeError, ModelError) as exc:
        raise ModelError(f"{path}: unreadable engine sidecar ({exc}); rebuild the engine with "
                         "detection-agent build-engine") from None


def parse_version(text: str) -> Tuple[int, ...]:
    """``"8.6.2.3"`` -> (8, 6, 2, 3): versions compare as numbers, never as strings."""
    parts = re.findall(r"\d+", str(text))
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in parts)


def check_compatible(meta: EngineMeta, engine_path: Path, tensorrt_version: str, gpu_name: str,
                     compute_capability: Tuple[int, int]) -> None:
    """Raise ModelError when the engine cannot run here; warn when it runs but not at its best.

    TensorRT plans are tied to the exact TensorRT release and to the GPU's compute
    capability. A different GPU with the same compute capability (Orin NX and AGX Orin)
    deserializes, but its kernels were timed on the other device.
    """
    built = parse_version(meta.tensorrt_version)
    running = parse_version(tensorrt_version)
    problems = []
    if built != running:
        problems.append(f"TensorRT {meta.tensorrt_version}, this device runs TensorRT {tensorrt_version}")
    if tuple(meta.compute_capability) != tuple(compute_capability):
        problems.append(f"GPU {meta.gpu_name} (compute {_cc(meta.compute_capability)}), this device has "
                        f"{gpu_name} (compute {_cc(compute_capability)})")
    if problems:
        source = meta.build.get("source") or "model.onnx"
        raise ModelError(f"{engine_path}: engine built for {'; and for '.join(problems)}. An engine only "
                         "runs "
                         f"where it was built: run `detection-agent build-engine {source} -o {engine_path}` "
                         "on this device")
    if meta.gpu_name != gpu_name:
        log.warning("%s: built on %s, running on %s (same compute capability): it works, but rebuilding "
                    "on this device may be faster", engine_path, meta.gpu_name, gpu_name)


def _cc(cc: Tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"
