"""``cameras:``: one entry per camera, its source, capture options, zones and counting lines."""

from typing import Any, List, Literal, Optional, Tuple

from pydantic import Field, field_serializer, field_validator, model_validator

from agent.config.base import StrictModel, conflict, mask_url, topic_level
from agent.config.tracking import LineConfig, TrackingConfig


class CsiOptions(StrictModel):
    sensor_mode: Optional[int] = Field(None, ge=0, le=16)  # nvarguscamerasrc sensor-mode
    flip_method: int = Field(0, ge=0, le=7)  # nvvidconv flip-method (2 = rotate 180)


class RtspOptions(StrictModel):
    latency_ms: int = Field(200, ge=0, le=10000)  # jitter buffer
    transport: Literal["tcp", "udp"] = "tcp"  # tcp survives lossy Wi-Fi; udp has less delay


class ZoneConfig(StrictModel):
    """A named polygon in the picture; detections whose anchor point is inside carry its name."""

    name: str
    polygon: List[Tuple[float, float]] = Field(min_length=3)  # [[x, y], ...] in order around the zone
    units: Literal["pixels", "fraction"] = "pixels"  # fraction: 0..1 of the frame's width and height
    anchor: Literal["bottom_center", "center"] = "bottom_center"  # the box point that must be inside
    classes: Optional[List[str]] = Field(None, min_length=1)  # only these labels count; None: all

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return topic_level(value, "zone name")

    @model_validator(mode="after")
    def _check_points(self) -> "ZoneConfig":
        if self.units == "fraction" and any(not (0 <= v <= 1) for point in self.polygon for v in point):
            raise conflict("polygon", "with units: fraction every coordinate must be within 0..1")
        if any(v < 0 for point in self.polygon for v in point):
            raise conflict("polygon", "coordinates cannot be negative")
        return self


class CameraConfig(StrictModel):
    name: str
    source: str = Field(min_length=1)
    enabled: bool = True
    width: Optional[int] = Field(None, ge=16, le=8192)  # None: the source's own size
    height: Optional[int] = Field(None, ge=16, le=8192)
    fps: Optional[float] = Field(None, gt=0, le=1000)  # None: the source's own rate
    fourcc: Optional[str] = Field(None, min_length=4, max_length=4)  # e.g. MJPG for USB cameras
    realtime: Optional[bool] = None  # None: live sources newest-frame-only, files every frame
    loop: bool = False  # restart a file at its end instead of stopping
    stall_timeout: float = Field(5.0, gt=0, le=3600)  # seconds without a frame before reconnecting
    reconnect_min: float = Field(1.0, gt=0, le=3600)  # backoff doubles from min up to max
    reconnect_max: float = Field(30.0, gt=0, le=3600)
    csi: CsiOptions = Field(default_factory=CsiOptions)
    rtsp: RtspOptions = Field(default_factory=RtspOptions)
    zones: List[ZoneConfig] = Field(default_factory=list)
    require_zone: bool = False  # drop detections that are in none of the zones
    lines: List[LineConfig] = Field(default_factory=list)  # counting lines (tracking on)
    tracking: Optional[TrackingConfig] = None  # this camera's overrides of the top-level tracking:

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value == "cmd":  # {prefix}/{device}/cmd/# carries commands
            raise ValueError("camera name 'cmd' is reserved for MQTT commands; choose another name")
        return topic_level(value, "camera name")

    @field_validator("source", mode="before")
    @classmethod
    def _index_to_str(cls, value: Any) -> Any:
        # ``source: 0`` is a camera index; kept as the string "0" (see source_kind).
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value.startswith("csi://") and not value[len("csi://"):].isdigit():
            raise ValueError(f"CSI source {value!r} needs a sensor number, e.g. csi://0")
        if value.startswith("gstreamer:") and not value[len("gstreamer:"):].strip():
            raise ValueError("'gstreamer:' must be followed by a pipeline ending in appsink")
        return value

    @field_serializer("source", when_used="json")
    def _mask_source(self, value: str) -> str:
        return mask_url(value)

    @model_validator(mode="after")
    def _check_pairs(self) -> "CameraConfig":
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise conflict(missing, "width and height go together: set both or neither")
        if self.reconnect_min > self.reconnect_max:
            raise conflict("reconnect_max", f"must be >= reconnect_min ({self.reconnect_min:g})")
        names = [zone.name for zone in self.zones]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise conflict(f"zones.{index}.name", f"duplicate zone name {name!r}; names must be unique")
        if self.require_zone and not self.zones:
            raise conflict("require_zone", "needs at least one zone in zones")
        lines = [line.name for line in self.lines]
        for index, name in enumerate(lines):
            if name in lines[:index]:
                raise conflict(f"lines.{index}.name", f"duplicate line name {name!r}; names must be unique")
        return self

    @property
    def source_kind(self) -> str:
        """``usb`` | ``csi`` | ``rtsp`` | ``http`` | ``gstreamer`` | ``path`` (file, folder, glob)."""
        src = self.source
        lower = src.lower()
        if src.isdigit() or src.startswith("/dev/video"):
            return "usb"
        if lower.startswith("csi://"):
            return "csi"
        if lower.startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        if lower.startswith(("http://", "https://")):
            return "http"
        if lower.startswith("gstreamer:"):
            return "gstreamer"
        return "path"

    @property
    def is_live(self) -> bool:
        return self.source_kind != "path"

    @property
    def effective_realtime(self) -> bool:
        """``realtime`` if set, else True for live sources and False for files and folders."""
        return self.is_live if self.realtime is None else self.realtime
