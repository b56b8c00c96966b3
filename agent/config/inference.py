"""``model:`` (which network, how to run it) and ``inference:`` (thresholds, filters, batch)."""

from typing import Dict, List, Literal, Optional

from pydantic import Field, field_validator
from typing_extensions import Annotated

from agent.config.base import StrictModel

#: agent.types.OUTPUT_FORMATS and RESIZE_MODES written out, so a type checker reads them as
#: Literal types (tests/unit/test_config.py keeps the two spellings equal).
OutputFormat = Literal["anchor_free", "objectness", "yolo_heads", "efficient_nms"]
ResizeMode = Literal["letterbox", "resize"]


class ModelConfig(StrictModel):
    path: str = Field(min_length=1)  # .engine/.plan | .onnx | .cfg (+ .weights beside it)
    backend: Literal["auto", "tensorrt", "onnxruntime", "opencv"] = "auto"
    labels: Optional[str] = None  # names file, one class per line; overrides model metadata
    input_size: Optional[List[int]] = Field(None, min_length=2, max_length=2)  # [height, width]
    output_format: Optional[OutputFormat] = None  # None: read from the model
    resize_mode: Optional[ResizeMode] = None  # None: read from the model
    precision: Literal["fp32", "fp16", "int8"] = "fp16"  # for engines built on the device
    # Where detection-agent-engine.service (detection-agent ensure-engine) builds the engine at
    # ``path`` from when it is missing or stale; None: ``path`` with the suffix .onnx. Unused by
    # the agent itself.
    onnx_path: Optional[str] = None
    calib_images: Optional[str] = None  # folder of INT8 calibration images for that build
    warmup_runs: int = Field(3, ge=0, le=1000)  # first runs are slow (CUDA init, autotuning)
    threads: Optional[int] = Field(None, ge=1, le=256)  # CPU backends; None: the runtime's default

    @field_validator("input_size")
    @classmethod
    def _check_input_size(cls, value: Optional[List[int]]) -> Optional[List[int]]:
        if value is not None and any(v < 32 or v > 4096 or v % 32 for v in value):
            raise ValueError(f"input_size {value} must be [height, width], multiples of 32 in 32..4096")
        return value


class InferenceConfig(StrictModel):
    conf_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    max_detections: int = Field(100, ge=1, le=10000)  # per image, after NMS
    class_agnostic: bool = False  # NMS across classes (one box per object whatever its label)
    multi_label: bool = False  # a box may carry several classes above the threshold
    classes: Optional[List[str]] = Field(None, min_length=1)  # keep only these names; None: all
    class_thresholds: Dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)  # per name
    min_box_area: float = Field(0.0, ge=0)  # source pixels squared; drops specks
    batch_size: int = Field(1, ge=1, le=64)  # frames of several cameras per engine call
