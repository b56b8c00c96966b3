"""The agent's configuration schema: ``AgentConfig``, the whole file, made of one pydantic v2
model per YAML section (cameras.py, inference.py, mqtt.py, device.py, tracking.py; the
shared base in base.py), all importable from here.

Loading, line numbers and overrides live in ``agent.config.loader``; the schema only says what a
valid configuration is. Every model forbids unknown keys so a typo is an error, not a
silently ignored setting. Relative paths are kept as written: they are relative to the
working directory of the process (the systemd unit sets one), not to the config file.

Types come from ``typing`` (not ``list[int]`` / ``X | None``) because pydantic evaluates
them at run time and the agent must run on Python 3.8 (JetPack 5).
"""

from typing import Dict, List

from pydantic import Field, field_validator

from agent.config.base import MASK, StrictModel, conflict, mask_url, parse_duration, parse_size
from agent.config.cameras import CameraConfig, CsiOptions, RtspOptions, ZoneConfig
from agent.config.device import (
    DeviceConfig,
    LoggingConfig,
    MetricsConfig,
    PreviewConfig,
    ServiceConfig,
    SpoolConfig,
)
from agent.config.inference import InferenceConfig, ModelConfig
from agent.config.mqtt import (
    CommandsConfig,
    HomeAssistantConfig,
    MqttConfig,
    SnapshotConfig,
    TlsConfig,
    TopicQosConfig,
)
from agent.config.tracking import LineConfig, TrackingConfig

__all__ = [
    "MASK", "AgentConfig", "CameraConfig", "CommandsConfig", "CsiOptions", "DeviceConfig",
    "HomeAssistantConfig", "InferenceConfig", "LineConfig", "LoggingConfig", "MetricsConfig",
    "ModelConfig", "MqttConfig", "PreviewConfig", "RtspOptions", "ServiceConfig", "SnapshotConfig",
    "SpoolConfig", "TlsConfig", "TopicQosConfig", "TrackingConfig", "ZoneConfig", "conflict", "mask_url",
    "parse_duration", "parse_size",
]


class AgentConfig(StrictModel):
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
