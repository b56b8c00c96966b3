"""``mqtt:``: the broker, TLS, topics and QoS, commands, Home Assistant discovery, snapshots."""

from typing import Any, List, Literal, Optional

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from agent.config.base import MASK, StrictModel, conflict, loose_text, number_to_str, topic_level


class TlsConfig(StrictModel):
    enabled: bool = False
    ca_file: Optional[str] = None  # None: the system's CA store
    cert_file: Optional[str] = None  # client certificate (mutual TLS)
    key_file: Optional[str] = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    insecure: bool = False  # skip hostname/certificate checks: tests only

    _as_text = field_validator("min_version", mode="before")(number_to_str)

    @model_validator(mode="after")
    def _check_pair(self) -> "TlsConfig":
        if self.cert_file and not self.key_file:
            raise conflict("key_file", "cert_file needs key_file (the client certificate's private key)")
        if self.key_file and not self.cert_file:
            raise conflict("cert_file", "key_file needs cert_file (the client certificate)")
        return self


class SnapshotConfig(StrictModel):
    on_new_objects: bool = False  # publish a JPEG when a class appears that was not in the last frame
    min_interval: float = Field(5.0, ge=0, le=86400)  # seconds between automatic snapshots per camera
    jpeg_quality: int = Field(80, ge=1, le=100)


class CommandsConfig(StrictModel):
    enabled: bool = False  # subscribe to {prefix}/{device}/cmd/# and obey pause/resume/snapshot/set
    max_payload: int = Field(4096, ge=64, le=1048576)  # bytes; larger command bodies are refused
    # MQTT 5 response topics allowed besides {prefix}/{device}/cmd/result[/...]: topics under
    # this prefix ("replies" allows "replies/anything"). None: only the device's own.
    response_prefix: Optional[str] = None

    _blank = field_validator("response_prefix", mode="before")(loose_text)

    @field_validator("response_prefix")
    @classmethod
    def _check_response_prefix(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        for level in value.rstrip("/").split("/"):
            topic_level(level, "response_prefix level")
        return value.rstrip("/")


class HomeAssistantConfig(StrictModel):
    enabled: bool = False  # publish MQTT discovery configs (retained) on every connect
    discovery_prefix: str = "homeassistant"
    # Classes that get an object-count sensor per camera; None: inference.classes, else all.
    classes: Optional[List[str]] = Field(None, min_length=1)

    @field_validator("discovery_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        for level in value.split("/"):
            topic_level(level, "discovery_prefix level")
        return value


class TopicQosConfig(StrictModel):
    """QoS per topic class; None: the same as ``mqtt.qos``."""

    detections: Optional[int] = Field(None, ge=0, le=2)
    stats: Optional[int] = Field(None, ge=0, le=2)
    status: Optional[int] = Field(None, ge=0, le=2)
    snapshot: Optional[int] = Field(0, ge=0, le=2)  # JPEGs go stale fast: never spooled at 0
    result: Optional[int] = Field(None, ge=0, le=2)  # command results
    events: Optional[int] = Field(None, ge=0, le=2)  # tracking events (spooled at 1: none lost)
    counts: Optional[int] = Field(None, ge=0, le=2)  # retained counts (the newest waits in the spool)


class MqttConfig(StrictModel):
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
    # MQTT 5: a QoS 1 message the broker acknowledged with "no matching subscribers" (code 16)
    # stays in the spool and is sent again after this many seconds, until a subscriber takes it
    # or the spool's bounds drop it (consumers on $share subscriptions that a broker restart
    # forgot); 0: such a message is gone, as on any acknowledgement.
    hold_unrouted_s: float = Field(0.0, ge=0, le=86400)
    # Seconds `run` keeps sending after its input ended (files, --max-frames, --duration) until
    # the broker acknowledged everything; 0: exit at once, leaving the rest in the spool.
    drain_timeout: float = Field(30.0, ge=0, le=86400)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)

    _as_text = field_validator("protocol", mode="before")(number_to_str)
    _blank = field_validator("client_id", "username", "password", "password_file", mode="before")(
        loose_text)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        # Several levels are fine ("site-a/detection-agent"), empty ones are not.
        for level in value.split("/"):
            topic_level(level, "topic_prefix level")
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
        if self.hold_unrouted_s > 0 and self.protocol != "5":
            raise conflict("hold_unrouted_s", "needs protocol: 5 (an MQTT 3.1.1 PUBACK does not say "
                                              "whether the message reached a subscriber)")
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
