"""Darknet model files: read ``.cfg`` network descriptions.

This module parses the cfg into sections (keeping line numbers for error messages) and
derives the ``ModelInfo`` the agent needs to run a darknet model. Converting cfg +
weights into ONNX builds on the same parser.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from agent.errors import ModelError
from agent.inference.labels import read_names
from agent.types import ModelInfo

log = logging.getLogger(__name__)

T = TypeVar("T", int, float)


@dataclasses.dataclass
class Section:
    """One ``[type]`` block of a cfg file with its ``key=value`` options."""

    kind: str
    line: int
    options: Dict[str, str] = dataclasses.field(default_factory=dict)
    option_lines: Dict[str, int] = dataclasses.field(default_factory=dict)

    def get_int(self, key: str, default: Optional[int], path: Path) -> int:
        return self._get(key, default, path, int)

    def get_float(self, key: str, default: Optional[float], path: Path) -> float:
        return float(self._get(key, default, path, float))

    def get_floats(self, key: str, path: Path) -> List[float]:
        raw = self.options.get(key, "")
        try:
            return [float(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise ModelError(f"{path}:{self.option_lines.get(key, self.line)}: [{self.kind}] {key}: "
                             f"expected comma-separated numbers, got {raw!r}") from None

    def _get(self, key: str, default: Optional[T], path: Path, cast: Type[T]) -> T:
        if key not in self.options:
            if default is None:
                raise ModelError(f"{path}:{self.line}: [{self.kind}] is missing {key}=")
            return default
        try:
            return cast(self.options[key])
        except ValueError:
            raise ModelError(f"{path}:{self.option_lines[key]}: [{self.kind}] {key}: "
                             f"expected {cast.__name__}, got {self.options[key]!r}") from None


def parse_cfg(path: Path) -> List[Section]:
    """Sections of a darknet cfg, in order. Comments (``#``, ``;``) and blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    sections: List[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ModelError(f"{path}:{number}: malformed section header {raw.strip()!r}")
            sections.append(Section(line[1:-1].strip().lower(), number))
        elif "=" in line:
            if not sections:
                raise ModelError(f"{path}:{number}: option outside any [section]: {raw.strip()!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            sections[-1].options[key] = value
            sections[-1].option_lines[key] = number
        else:
            raise ModelError(f"{path}:{number}: expected [section] or key=value, got {raw.strip()!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ModelError(f"{path}:1: a darknet cfg starts with a [net] section")
    return sections


def find_names_file(cfg_path: Path) -> Optional[Path]:
    """A names file beside the cfg: ``MODEL.names``, then ``coco.names``/``classes.txt``."""
    for candidate in (cfg_path.with_suffix(".names"), cfg_path.parent / "coco.names",
                      cfg_path.parent / "classes.txt"):
        if candidate.is_file():
            return candidate
    return None


def model_info(cfg_path: Path, names: Optional[Sequence[str]] = None) -> ModelInfo:
    """``ModelInfo`` of a darknet network: input size, heads (anchors, strides), classes."""
    cfg_path = Path(cfg_path)
    sections = parse_cfg(cfg_path)
    net = sections[0]
    height, width = net.get_int("height", None, cfg_path), net.get_int("width", None, cfg_path)
    heads = [s for s in sections if s.kind in ("yolo", "region")]
    if not heads:
        raise ModelError(f"{cfg_path}: no [yolo] section: not a YOLO detection network")
    anchors: List[List[Tuple[float, float]]] = []
    scales: List[float] = []
    classes = 0
    for head in heads:
        flat = head.get_floats("anchors", cfg_path)
        if len(flat) % 2:
            raise ModelError(f"{cfg_path}:{head.option_lines.get('anchors', head.line)}: "
                             f"[{head.kind}] anchors: odd number of values")
        pairs = list(zip(flat[0::2], flat[1::2]))
        mask = [int(m) for m in head.get_floats("mask", cfg_path)] or list(range(len(pairs)))
        anchors.append([pairs[m] for m in mask])
        scales.append(head.get_float("scale_x_y", 1.0, cfg_path))
        classes = head.get_int("classes", None, cfg_path)
    if names is None:
        names_file = find_names_file(cfg_path)
        names = read_names(names_file) if names_file else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise ModelError(f"{cfg_path}: the network has {classes} classes but the names list has {len(names)}")
    return ModelInfo(input_size=(height, width), class_names=list(names), resize_mode="resize",
                     anchors=anchors, scale_x_y=scales, name=cfg_path.stem)


def weights_for(cfg_path: Path) -> Path:
    """The ``.weights`` file that belongs to a cfg: same stem, same folder."""
    weights = Path(cfg_path).with_suffix(".weights")
    if not weights.is_file():
        raise ModelError(f"{cfg_path}: no weights file beside it (expected {weights.name})")
    return weights
