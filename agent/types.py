"""Core value types that flow through the agent: frames in, detections out.

``Detections`` holds parallel numpy arrays rather than a list of objects: per-box Python
objects cost more than the inference itself on a small CPU, and arrays index with masks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import ModelError

#: Output layouts the decoder understands (see agent/inference/postprocess/decode.py).
OUTPUT_FORMATS = ("anchor_free", "objectness", "yolo_heads", "efficient_nms")
#: How a frame is fitted to the network input: keep aspect ratio and pad, or stretch.
RESIZE_MODES = ("letterbox", "resize")


@dataclasses.dataclass(frozen=True)
class Detections:
    """Boxes of one image: ``xyxy`` (N,4) float32 in source pixels, ``scores`` (N,) float32,
    ``class_ids`` (N,) int32. Class names live in the model's label map."""

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        scores = np.asarray(self.scores, dtype=np.float32)
        class_ids = np.asarray(self.class_ids, dtype=np.int32)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy must have shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        if scores.shape != (n,) or class_ids.shape != (n,):
            raise ValueError(
                f"Detections arrays disagree: xyxy {xyxy.shape}, scores {scores.shape}, "
                f"class_ids {class_ids.shape}"
            )
        # Frozen dataclass: normalised arrays are stored through object.__setattr__.
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: Union[np.ndarray, slice, Sequence[int]]) -> Detections:
        """Select boxes with a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index])

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def to_list(self, names: Sequence[str] = (),
                zones: Optional[Sequence[Sequence[str]]] = None) -> List[Dict[str, Any]]:
        """JSON-ready boxes: ``{label, class_id, score, box}``, rounded for the wire; with
        ``zones`` (one list of zone names per box) each also carries ``zones``."""
        out = []
        for i, (box, score, cid) in enumerate(zip(self.xyxy.tolist(), self.scores.tolist(),
                                                  self.class_ids.tolist())):
            label = names[cid] if 0 <= cid < len(names) else str(cid)
            item: Dict[str, Any] = {"label": label, "class_id": cid, "score": round(score, 4),
                                    "box": [round(v, 1) for v in box]}
            if zones is not None:
                item["zones"] = list(zones[i])
            out.append(item)
        return out


@dataclasses.dataclass(frozen=True)
class FitTransform:
    """How one source image was placed in the network input: ``input = source * scale + pad``."""

    source_size: Tuple[int, int]  # (height, width) of the source image
    resized_size: Tuple[int, int]  # (height, width) of the image inside the input, before padding
    pad: Tuple[int, int]  # (left, top) padding in input pixels

    @property
    def scale(self) -> Tuple[float, float]:
        """(x, y) scale from source to input; per axis because each side is rounded."""
        return (self.resized_size[1] / self.source_size[1], self.resized_size[0] / self.source_size[0])

    def boxes_to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from input pixels to source pixels, clipped to the source image."""
        sx, sy = self.scale
        out = np.empty_like(boxes_xyxy, dtype=np.float32)
        out[:, 0::2] = (boxes_xyxy[:, 0::2] - self.pad[0]) / sx
        out[:, 1::2] = (boxes_xyxy[:, 1::2] - self.pad[1]) / sy
        h, w = self.source_size
        np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
        return out

    def boxes_to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from source pixels to input pixels (for labels and tests)."""
        sx, sy = self.scale
        out = np.empty_like(boxes_xyxy, dtype=np.float32)
        out[:, 0::2] = boxes_xyxy[:, 0::2] * sx + self.pad[0]
        out[:, 1::2] = boxes_xyxy[:, 1::2] * sy + self.pad[1]
        return out


@dataclasses.dataclass
class Frame:
    """One captured image (HxWx3 uint8 BGR) and where and when it came from."""

    image: np.ndarray
    camera: str
    index: int
    wall_time: float = dataclasses.field(default_factory=time.time)
    mono_time: float = dataclasses.field(default_factory=time.monotonic)
    #: The network input made from ``image`` in the capture thread (``Detector.prepare``), if any.
    prepared: Optional[Any] = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the pre- and post-processing need to know about a network.

    Frozen: a backend's own shape checks read it, so a change (config ``input_size``,
    ``resize_mode``, labels) makes a new value with ``dataclasses.replace``.

    Read from the model's own metadata (ONNX ``metadata_props``, a JSON sidecar for engines,
    the cfg for darknet files). ``anchors`` are per output head, in input pixels, and
    ``strides`` are matched to them by position.
    """

    input_size: Tuple[int, int] = (416, 416)  # (height, width)
    class_names: List[str] = dataclasses.field(default_factory=list)
    output_format: Optional[str] = None  # None: detect from output shapes
    resize_mode: str = "letterbox"
    layout: str = "NCHW"
    strides: List[int] = dataclasses.field(default_factory=list)
    anchors: List[List[Tuple[float, float]]] = dataclasses.field(default_factory=list)
    scale_x_y: List[float] = dataclasses.field(default_factory=list)  # darknet option, per head
    name: str = "model"

    def __post_init__(self) -> None:
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            raise ModelError(f"unknown output format {self.output_format!r}; "
                             f"expected one of {', '.join(OUTPUT_FORMATS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ModelError(f"unknown resize mode {self.resize_mode!r}; "
                             f"expected one of {', '.join(RESIZE_MODES)}")
        h, w = (int(v) for v in self.input_size)
        if h <= 0 or w <= 0:
            raise ModelError(f"model input size must be positive, got {self.input_size}")
        object.__setattr__(self, "input_size", (h, w))  # frozen: normalised once, here

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_metadata(self) -> Dict[str, str]:
        """Flat string map, the form ONNX ``metadata_props`` and engine sidecars store."""
        return {"detection_agent.model_info": json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_metadata(cls, props: Dict[str, str]) -> Optional[ModelInfo]:
        raw = props.get("detection_agent.model_info")
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            data["input_size"] = tuple(data["input_size"])
            data["anchors"] = [[tuple(a) for a in head] for head in data.get("anchors", [])]
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model metadata 'detection_agent.model_info' is unreadable: {exc}") from exc
