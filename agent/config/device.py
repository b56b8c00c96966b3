"""The device's own sections: ``device:``, ``spool:``, ``preview:``, ``metrics:``, ``service:``
and ``logging:``."""

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from agent.config.base import StrictModel, parse_duration, parse_size

# The device id is a topic level, the default client id and a file-name-safe token; the
# docs (configs/agent.yaml) allow letters, digits, '-' and '_' only.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class DeviceConfig(StrictModel):
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


class SpoolConfig(StrictModel):
    enabled: bool = True  # keep messages on disk while the broker is away
    path: str = Field("/var/lib/detection-agent/spool.db", min_length=1)
    max_bytes: int = Field(100 * 10**6, ge=4096)  # oldest messages go first when full
    max_messages: int = Field(100000, ge=1)
    max_age: float = Field(7 * 86400.0, gt=0)  # seconds, or 30m, 12h, 7d; older messages are dropped
    # Bound of the in-memory fallback while the disk spool is unusable (disk full, read-only).
    memory_max_messages: int = Field(10000, ge=1)

    _size = field_validator("max_bytes", mode="before")(parse_size)
    _duration = field_validator("max_age", mode="before")(parse_duration)


class PreviewConfig(StrictModel):
    """A live MJPEG view of every camera with boxes and zones, for setting cameras up."""

    enabled: bool = False
    # Loopback by default: the pictures are served without authentication.
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8090, ge=0, le=65535)  # 0: any free port (logged)
    max_fps: float = Field(5.0, gt=0, le=60)  # per camera, while someone watches
    jpeg_quality: int = Field(80, ge=1, le=100)


class MetricsConfig(StrictModel):
    """Prometheus ``/metrics`` and ``/healthz`` over HTTP (agent/runtime/prometheus.py)."""

    enabled: bool = False
    # Loopback by default; a Prometheus on another machine needs the device's address (or 0.0.0.0).
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9108, ge=0, le=65535)  # 0: any free port (logged)
    # /healthz answers 503 once the inference loop has not gone round for this long.
    stall_timeout: float = Field(10.0, gt=0, le=3600)

    _duration = field_validator("stall_timeout", mode="before")(parse_duration)


class ServiceConfig(StrictModel):
    state_dir: str = Field("/var/lib/detection-agent", min_length=1)
    watchdog: bool = True  # ping systemd's watchdog when WATCHDOG_USEC is set
    pid_file: Optional[str] = None


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["text", "json"] = "text"  # text for journald, json for log shippers

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
