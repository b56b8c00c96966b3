"""What the pipeline hands its sinks: one ``FrameResult`` per processed frame (and a few
without a new frame: the events when tracking ends, counts after a reset), and the ``Sink``
protocol the MQTT sink, the annotated video, the preview and tests implement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple

from agent.types import Detections, Frame

if TYPE_CHECKING:
    from agent.runtime.settings import CameraSettings

#: ``FrameResult.kind``: a processed frame, or events/counts only (tracking ended, counts reset).
FRAME, EVENTS = "frame", "events"


class FrameResult(NamedTuple):
    frame: Frame
    detections: Detections
    latency_ms: Dict[str, float]
    zones: Optional[List[List[str]]] = None  # per detection, when the camera has zones
    #: Per detection with tracking on: its confirmed track's id, or None (tentative).
    track_ids: Optional[List[Optional[int]]] = None
    events: Sequence[Dict[str, Any]] = ()  # events/1 bodies of this frame (tracking on)
    counts: Optional[Mapping[str, Any]] = None  # the camera's counts after this frame (tracking on)
    counts_changed: bool = False
    #: Recent anchor points of each confirmed track seen in this frame, when a sink draws them.
    trails: Optional[Dict[int, List[Tuple[float, float]]]] = None
    #: The camera's settings this result was made with (zones and lines to draw), or None.
    camera: Optional[CameraSettings] = None
    kind: str = FRAME


class Sink(Protocol):
    """Where results go (the MQTT publisher, a video writer, a test's list)."""

    def handle(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


__all__ = ["EVENTS", "FRAME", "FrameResult", "Sink"]
