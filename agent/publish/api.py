"""``Publisher``: what the runtime needs of a publisher (``MqttPublisher`` implements it).

The runtime types its publisher with this protocol rather than importing the MQTT class,
so it loads without paho when MQTT is off, and a test can hand in its own publisher.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Sequence

from agent.publish.commands import Commands
from agent.types import Detections


class Publisher(Protocol):
    commands: Commands

    def start(self) -> None: ...

    def publish_detections(self, camera: str, frame_index: int, capture_ts: float, width: int, height: int,
                           detections: Detections, latency_ms: Mapping[str, float],
                           zones: Optional[Sequence[Sequence[str]]] = None,
                           track_ids: Optional[Sequence[Optional[int]]] = None) -> bool: ...

    def publish_events(self, camera: str, events: Sequence[Mapping[str, Any]]) -> int: ...

    def publish_counts(self, camera: str, ts: float, counts: Mapping[str, Any]) -> bool: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> bool: ...

    def publish_camera_status(self, camera: str, state: str) -> bool: ...

    def set_stats_provider(self, provider: Optional[Callable[[], Mapping[str, Any]]]) -> None: ...

    def counters(self) -> Dict[str, Any]: ...

    def drain(self, timeout: float, abort: Optional[threading.Event] = None) -> int: ...

    def stop(self, timeout: float = 5.0) -> bool: ...


__all__ = ["Publisher"]
