"""The agent's configuration schema: one pydantic v2 model per YAML section.

Loading, line numbers and overrides live in ``agent.config.loader``; this module only says what a
valid configuration is. Every model forbids unknown keys so a typo is an error, not a
silently ignored setting. Relative paths are kept as written: they are relative to the
working directory of the process (the systemd unit sets one), not to the config file.

Types come from ``typing`` (not ``list[int]`` / ``X | None``) because pydantic evaluates
them at run time and the agent must run on Python 3.8 (JetPack 5).
"""

import re
from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    confloat,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.config.tracking import LineConfig, TrackingConfig
from agent.types import OUTPUT_FORMATS, RESIZE_MODES

#: What ``resolved_yaml`` and any JSON dump of the config print instead of a secret.
MASK = "***"

# One MQTT topic level: no separator, no wildcards, no whitespace (it would work but breaks
# every shell script that subscribes to it).
_TOPIC_LEVEL = re.compile(r"^[^/+#\s\x00]+$")
# The device id is a topic level, the default client id and a file-name-safe token; the
# docs (configs/agent.yaml) allow letters, digits, '-' and '_' only.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
# user:password@ inside a URL, masked when the config is printed.
_URL_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)[^@/]*@")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def conflict(field: str, message: str) -> PydanticCustomError:
    """A cross-field error to raise from a model validator.

    Pydantic puts model-validator errors at the model's own location; ``field`` (dotted,
    relative to the model) lets the loader report the key the user has to change instead.
    """
    return PydanticCustomError("conflict", message, {"field": field})


def _topic_level(value: str, what: str) -> str:
    if not _TOPIC_LEVEL.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in an MQTT topic: "
                         "use letters, digits, '-' or '_' (no '/', '+', '#' or spaces)")
    return value


def _number_to_str(value: Any) -> Any:
    # YAML reads ``protocol: 5`` and ``min_version: 1.2`` as numbers; the schema wants text.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _loose_text(value: Any) -> Any:
    # ``password: ${MQTT_PASSWORD:-}`` yields "" when the variable is unset: that means "none";
    # an unquoted numeric password or user name arrives as a number.
    if value == "":
        return None
    return _number_to_str(value)


def parse_size(value: Any) -> Any:
    """``"100MB"`` -> 100000000, ``"64MiB"`` -> 67108864; other values pass through."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"cannot read {value!r} as a size; write bytes (1048576) or 100MB, 64MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_duration(value: Any) -> Any:
    """``"7d"`` -> 604800.0, ``"90m"`` -> 5400.0, ``"30s"`` -> 30.0; other values pass through."""
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"cannot read {value!r} as a duration; write seconds (3600) or 30s, 90m, 12h, 7d")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]


def mask_url(url: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://user:***@cam/stream``."""
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", url)


class _Model(BaseModel):
    """Common settings: unknown keys are errors; assignments at run time are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null: treat it as {}.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if data.get(name, {}) is None and isinstance(field.annotation, type) \
                        and issubclass(field.annotation, BaseModel):
                    data = {**data, name: {}}
        return data


class DeviceConfig(_Model):
    id: str = "jetson-01"  # second level of every topic; default client id
    location: Optional[str] = None
    description: Optional[str] = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _DEVICE_ID.match(value):
            raise ValueError(f"device id {value!r} may only use letters, digits, '-' and '_' (it is an MQTT "
                             "topic level and the default client id)")
        return value


class CsiOptions(_Model):
    sensor_mode: Optional[int] = Field(None, ge=0, le=16)  # nvarguscamerasrc sensor-mode
    flip_method: int = Field(0, ge=0, le=7)  # nvvidconv flip-method (2 = rotate 180)


class RtspOptions(_Model):
    latency_ms: int = Field(200, ge=0, le=10000)  # jitter buffer
    transport: Literal["tcp", "udp"] = "tcp"  # tcp survives lossy Wi-Fi; udp has less delay


class ZoneConfig(_Model):
    """A named polygon in the picture; detections whose anchor point is inside carry its name."""

    name: str
    polygon: List[Tuple[float, float]] = Field(min_length=3)  # [[x, y], ...] in order around the zone
    units: Literal["pixels", "fraction"] = "pixels"  # fraction: 0..1 of the frame's width and height
    anchor: Literal["bottom_center", "center"] = "bottom_center"  # the box point that must be inside
    classes: Optional[List[str]] = Field(None, min_length=1)  # only these labels count; None: all

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _topic_level(value, "zone name")

    @model_validator(mode="after")
    def _check_points(self) -> "ZoneConfig":
        if self.units == "fraction" and any(not (0 <= v <= 1) for point in self.polygon for v in point):
            raise conflict("polygon", "with units: fraction every coordinate must be within 0..1")
        if any(v < 0 for point in self.polygon for v in point):
            raise conflict("polygon", "coordinates cannot be negative")
        return self


class CameraConfig(_Model):
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
        return _topic_level(value, "camera name")

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


class ModelConfig(_Model):
    path: str = Field(min_length=1)  # .engine/.plan | .onnx | .cfg (+ .weights beside it)
    backend: Literal["auto", "tensorrt", "onnxruntime", "opencv"] = "auto"
    labels: Optional[str] = None  # names file, one class per line; overrides model metadata
    input_size: Optional[List[int]] = Field(None, min_length=2, max_length=2)  # [height, width]
    output_format: Optional[Literal[OUTPUT_FORMATS]] = None  # None: read from the model
    resize_mode: Optional[Literal[RESIZE_MODES]] = None  # None: read from the model
    precision: Literal["fp32", "fp16", "int8"] = "fp16"  # for engines built on the device
    # Where detection-agent-engine.service (agent.modeltools.tensorrt.deploy) builds the engine
    # at ``path`` from when
    # it is missing or stale; None: ``path`` with the suffix .onnx. Unused by the agent itself.
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


class InferenceConfig(_Model):
    conf_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    max_detections: int = Field(100, ge=1, le=10000)  # per image, after NMS
    class_agnostic: bool = False  # NMS across classes (one box per object whatever its label)
    multi_label: bool = False  # a box may carry several classes above the threshold
    classes: Optional[List[str]] = Field(None, min_length=1)  # keep only these names; None: all
    class_thresholds: Dict[str, confloat(ge=0, le=1)] = Field(default_factory=dict)  # per name
    min_box_area: float = Field(0.0, ge=0)  # source pixels squared; drops specks
    batch_size: int = Field(1, ge=1, le=64)  # frames of several cameras per engine call


class TlsConfig(_Model):
    enabled: bool = False
    ca_file: Optional[str] = None  # None: the system's CA store
    cert_file: Optional[str] = None  # client certificate (mutual TLS)
    key_file: Optional[str] = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    insecure: bool = False  # skip hostname/certificate checks: tests only

    _as_text = field_validator("min_version", mode="before")(_number_to_str)

    @model_validator(mode="after")
    def _check_pair(self) -> "TlsConfig":
        if self.cert_file and not self.key_file:
            raise conflict("key_file", "cert_file needs key_file (the client certificate's private key)")
        if self.key_file and not self.cert_file:
            raise conflict("cert_file", "key_file needs cert_file (the client certificate)")
        return self


class SnapshotConfig(_Model):
    on_new_objects: bool = False  # publish a JPEG when a class appears that was not in the last frame
    min_interval: float = Field(5.0, ge=0, le=86400)  # seconds between automatic snapshots per camera
    jpeg_quality: int = Field(80, ge=1, le=100)


class CommandsConfig(_Model):
    enabled: bool = False  # subscribe to {prefix}/{device}/cmd/# and obey pause/resume/snapshot/set
    max_payload: int = Field(4096, ge=64, le=1048576)  # bytes; larger command bodies are refused
    # MQTT 5 response topics allowed besides {prefix}/{device}/cmd/result[/...]: topics under
    # this prefix ("replies" allows "replies/anything"). None: only the device's own.
    response_prefix: Optional[str] = None

    _blank = field_validator("response_prefix", mode="before")(_loose_text)

    @field_validator("response_prefix")
    @classmethod
    def _check_response_prefix(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        for level in value.rstrip("/").split("/"):
            _topic_level(level, "response_prefix level")
        return value.rstrip("/")


class HomeAssistantConfig(_Model):
    enabled: bool = False  # publish MQTT discovery configs (retained) on every connect
    discovery_prefix: str = "homeassistant"
    # Classes that get an object-count sensor per camera; None: inference.classes, else all.
    classes: Optional[List[str]] = Field(None, min_length=1)

    @field_validator("discovery_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        for level in value.split("/"):
            _topic_level(level, "discovery_prefix level")
        return value


class TopicQosConfig(_Model):
    """QoS per topic class; None: the same as ``mqtt.qos``."""

    detections: Optional[int] = Field(None, ge=0, le=2)
    stats: Optional[int] = Field(None, ge=0, le=2)
    status: Optional[int] = Field(None, ge=0, le=2)
    snapshot: Optional[int] = Field(0, ge=0, le=2)  # JPEGs go stale fast: never spooled at 0
    result: Optional[int] = Field(None, ge=0, le=2)  # command results
    events: Optional[int] = Field(None, ge=0, le=2)  # tracking events (spooled at 1: none lost)
    counts: Optional[int] = Field(None, ge=0, le=2)  # retained counts (the newest waits in the spool)


class MqttConfig(_Model):
    enabled: bool = True  # false: no broker, detections are logged (bench, debugging)
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: Optional[str] = None  # None: "detection-agent-<device id>"
    keepalive: int = Field(60, ge=5, le=3600)  # seconds
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: Optional[str] = None
    password: Optional[SecretStr] = None
    password_file: Optional[str] = None  # first line is the password (keeps it out of the config)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_prefix: str = "detection-agent"
    qos: int = Field(1, ge=0, le=2)  # detections, and every topic class topic_qos leaves at None
    topic_qos: TopicQosConfig = Field(default_factory=TopicQosConfig)
    stats_interval: float = Field(10.0, gt=0, le=86400)  # seconds
    skip_empty: bool = False  # publish nothing for frames without detections
    # every_frame: a detections message per processed frame; on_change (tracking on): only when
    # the confirmed tracks, their labels or zones change, plus one every detections_heartbeat
    # seconds; off: none (events and counts only).
    detections: Literal["every_frame", "on_change", "off"] = "every_frame"
    detections_heartbeat: float = Field(30.0, gt=0, le=86400)  # seconds, for on_change
    events: bool = True  # {camera}/events and {camera}/counts when tracking is on
    max_rate: Optional[float] = Field(None, gt=0, le=1000)  # messages/s per camera; None: every frame
    reconnect_min: float = Field(1.0, gt=0, le=3600)  # seconds; backoff doubles up to max
    reconnect_max: float = Field(60.0, gt=0, le=3600)
    connect_timeout: float = Field(10.0, gt=0, le=600)  # seconds from TCP connect to CONNACK
    session_expiry: int = Field(86400, ge=0, le=4294967295)  # MQTT 5: seconds the broker keeps our session
    inflight_max: int = Field(100, ge=1, le=65000)  # QoS>0 messages sent and not yet acknowledged
    queue_size: int = Field(1000, ge=1, le=1000000)  # messages between the caller and the sender thread
    # Seconds `run` keeps sending after its input ended (files, --max-frames, --duration) until
    # the broker acknowledged everything; 0: exit at once, leaving the rest in the spool.
    drain_timeout: float = Field(30.0, ge=0, le=86400)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)

    _as_text = field_validator("protocol", mode="before")(_number_to_str)
    _blank = field_validator("client_id", "username", "password", "password_file", mode="before")(
        _loose_text)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        # Several levels are fine ("site-a/detection-agent"), empty ones are not.
        for level in value.split("/"):
            _topic_level(level, "topic_prefix level")
        return value

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "commands_enabled" in data:
            raise conflict("commands_enabled", "renamed: write 'commands: {enabled: true}' "
                                               "(mqtt.commands.enabled)")
        return data

    def qos_for(self, topic_class: str) -> int:
        """QoS of ``detections`` | ``stats`` | ``status`` | ``snapshot`` | ``result`` | ``events``
        | ``counts``."""
        value = getattr(self.topic_qos, topic_class)
        return self.qos if value is None else value

    @field_serializer("password", when_used="json")
    def _mask_password(self, value: Optional[SecretStr]) -> Optional[str]:
        return None if value is None else MASK

    @model_validator(mode="after")
    def _check_pairs(self) -> "MqttConfig":
        if self.password is not None and self.password_file is not None:
            raise conflict("password_file", "set password or password_file, not both")
        if self.reconnect_min > self.reconnect_max:
            raise conflict("reconnect_max", f"must be >= reconnect_min ({self.reconnect_min:g})")
        return self

    def resolve_password(self) -> Optional[str]:
        """The password from ``password`` or the first line of ``password_file``.

        Raises OSError when the file cannot be read; the caller reports it with the path.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as handle:
                return handle.readline().rstrip("\r\n")
        return None


class SpoolConfig(_Model):
    enabled: bool = True  # keep messages on disk while the broker is away
    path: str = Field("/var/lib/detection-agent/spool.db", min_length=1)
    max_bytes: int = Field(100 * 10**6, ge=4096)  # oldest messages go first when full
    max_messages: int = Field(100000, ge=1)
    max_age: float = Field(7 * 86400.0, gt=0)  # seconds, or 30m, 12h, 7d; older messages are dropped
    # Bound of the in-memory fallback while the disk spool is unusable (disk full, read-only).
    memory_max_messages: int = Field(10000, ge=1)

    _size = field_validator("max_bytes", mode="before")(parse_size)
    _duration = field_validator("max_age", mode="before")(parse_duration)


class PreviewConfig(_Model):
    """A live MJPEG view of every camera with boxes and zones, for setting cameras up."""

    enabled: bool = False
    # Loopback by default: the pictures are served without authentication.
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8090, ge=0, le=65535)  # 0: any free port (logged)
    max_fps: float = Field(5.0, gt=0, le=60)  # per camera, while someone watches
    jpeg_quality: int = Field(80, ge=1, le=100)


class MetricsConfig(_Model):
    """Prometheus ``/metrics`` and ``/healthz`` over HTTP (agent/runtime/prometheus.py)."""

    enabled: bool = False
    # Loopback by default; a Prometheus on another machine needs the device's address (or 0.0.0.0).
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9108, ge=0, le=65535)  # 0: any free port (logged)
    # /healthz answers 503 once the inference loop has not gone round for this long.
    stall_timeout: float = Field(10.0, gt=0, le=3600)

    _duration = field_validator("stall_timeout", mode="before")(parse_duration)


class ServiceConfig(_Model):
    state_dir: str = Field("/var/lib/detection-agent", min_length=1)
    watchdog: bool = True  # ping systemd's watchdog when WATCHDOG_USEC is set
    pid_file: Optional[str] = None


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["text", "json"] = "text"  # text for journald, json for log shippers

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class AgentConfig(_Model):
    """The whole configuration file."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    cameras: List[CameraConfig] = Field(min_length=1)
    model: ModelConfig
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: List[CameraConfig]) -> List[CameraConfig]:
        seen: Dict[str, int] = {}
        for index, camera in enumerate(cameras):
            if camera.name in seen:
                raise conflict(f"{index}.name", f"duplicate camera name {camera.name!r} "
                               f"(also cameras.{seen[camera.name]}.name); names must be unique")
            seen[camera.name] = index
        return cameras

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"detection-agent-{self.device.id}"

    @property
    def topic_root(self) -> str:
        """``{prefix}/{device}``: every topic of this agent starts with it."""
        return f"{self.mqtt.topic_prefix}/{self.device.id}"

    @property
    def enabled_cameras(self) -> List[CameraConfig]:
        return [camera for camera in self.cameras if camera.enabled]
