"""Topics and payloads of the MQTT contract (ARCHITECTURE.md, docs/mqtt.md, schemas/*.json).

Pure functions and small classes, no network: what goes on which topic, in which shape,
and which frames are published at all (``FrameGate``: ``skip_empty`` and ``max_rate``).

Sequence rule (a consumer's way to tell skipping from loss): ``seq`` counts the messages of
one ``(device, camera, run)``, +1 per published message, starting at 1. A frame that is not
published (no detections with ``skip_empty``, over ``max_rate``) takes no ``seq``; the next
message says how many processed frames were skipped before it in ``skipped``. So a gap in
``seq`` is always a lost message, and ``skipped`` > 0 is always a deliberate omission.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent.types import Detections

log = logging.getLogger(__name__)

DETECTIONS_SCHEMA = "detections/1"
STATS_SCHEMA = "stats/1"
RESULT_SCHEMA = "command-result/1"
EVENTS_SCHEMA = "events/1"
COUNTS_SCHEMA = "counts/1"

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


def new_run_id(now: Optional[float] = None) -> str:
    """A new id per agent start: UTC start time (sorts by age) + 6 random hex digits."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, one line (``record`` writes payloads as JSON lines unchanged)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class Topics:
    """Every topic of one agent, from ``{prefix}/{device}``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.status = f"{root}/status"
        self.stats = f"{root}/stats"
        self.cmd_filter = f"{root}/cmd/#"
        self.cmd_prefix = f"{root}/cmd/"
        self.cmd_result = f"{root}/cmd/result"

    def detections(self, camera: str) -> str:
        return f"{self.root}/{camera}/detections"

    def snapshot(self, camera: str) -> str:
        return f"{self.root}/{camera}/snapshot"

    def camera_status(self, camera: str) -> str:
        return f"{self.root}/{camera}/status"

    def events(self, camera: str) -> str:
        return f"{self.root}/{camera}/events"

    def counts(self, camera: str) -> str:
        return f"{self.root}/{camera}/counts"


def detections_payload(*, device: str, camera: str, run: str, seq: int, frame: int, skipped: int,
                       ts: float, width: int, height: int, model: str, latency_ms: Mapping[str, float],
                       detections: Detections, names: Sequence[str],
                       zones: Optional[Sequence[Sequence[str]]] = None,
                       track_ids: Optional[Sequence[Optional[int]]] = None) -> Dict[str, Any]:
    """The ``detections/1`` message of one processed frame (schemas/detections.schema.json).

    ``zones``: the zone names of each detection, for a camera with zones (``zones`` key per box).
    ``track_ids``: with tracking on, each box's confirmed track id or None (``track_id`` per box).
    """
    boxes = detections.to_list(names, zones)
    if track_ids is not None:
        for box, track_id in zip(boxes, track_ids):
            box["track_id"] = track_id
    return {
        "schema": DETECTIONS_SCHEMA,
        "device": device,
        "camera": camera,
        "run": run,
        "seq": seq,
        "frame": int(frame),
        "skipped": skipped,
        "ts": round(float(ts), 6),
        "width": int(width),
        "height": int(height),
        "model": model,
        "latency_ms": {str(k): round(float(v), 3) for k, v in latency_ms.items()},
        "detections": boxes,
    }


def event_payload(*, device: str, camera: str, run: str, seq: int, event: Mapping[str, Any]
                  ) -> Dict[str, Any]:
    """One ``events/1`` message (schemas/events.schema.json) from an ``EventEngine`` event.

    ``seq`` counts the events messages of one camera and run, separately from the detections
    topic's, so either topic can be followed alone and a gap in either is a lost message.
    """
    payload: Dict[str, Any] = {"schema": EVENTS_SCHEMA, "device": device, "camera": camera, "run": run,
                               "seq": seq}
    payload.update(event)
    return payload


def counts_payload(*, device: str, camera: str, run: str, ts: float, counts: Mapping[str, Any]
                   ) -> Dict[str, Any]:
    """The retained ``counts/1`` message of a camera (schemas/counts.schema.json)."""
    payload: Dict[str, Any] = {"schema": COUNTS_SCHEMA, "device": device, "camera": camera, "run": run,
                               "ts": round(float(ts), 6)}
    payload.update(counts)
    return payload


def stats_payload(*, device: str, run: str, started: float, mqtt: Mapping[str, Any],
                  extra: Optional[Mapping[str, Any]] = None, now: Optional[float] = None) -> Dict[str, Any]:
    """The retained ``stats/1`` message: the publisher's counters plus the pipeline's own.

    ``extra`` (cameras, inference, system, ...) is merged in at the top level; it cannot
    replace the keys this function sets.
    """
    now = time.time() if now is None else now
    payload: Dict[str, Any] = dict(extra or {})
    payload.update({
        "schema": STATS_SCHEMA,
        "device": device,
        "run": run,
        "ts": round(now, 3),
        "uptime_s": round(max(0.0, now - started), 1),
        "mqtt": dict(mqtt),
    })
    return payload


def result_payload(*, device: str, command: str, ok: bool, request_id: Any = None,
                   result: Optional[Mapping[str, Any]] = None, error: Optional[str] = None,
                   now: Optional[float] = None) -> Dict[str, Any]:
    """The ``command-result/1`` answer to one command (schemas/command-result.schema.json)."""
    payload: Dict[str, Any] = {"schema": RESULT_SCHEMA, "device": device, "command": command, "ok": ok,
                               "ts": round(time.time() if now is None else now, 3)}
    if request_id is not None:
        payload["id"] = request_id
    if ok:
        payload["result"] = dict(result or {})
    else:
        payload["error"] = error or "failed"
    return payload


class FrameGate:
    """Decides which processed frames of one camera are published.

    ``skip_empty`` drops frames without detections; ``max_rate`` (messages/s) drops frames
    that come sooner than ``1/max_rate`` after the last published one. Skipped frames are
    counted, and the count is handed to the next published message (``take_skipped``).
    """

    def __init__(self, skip_empty: bool, max_rate: Optional[float]) -> None:
        self.skip_empty = skip_empty
        self.min_interval = 1.0 / max_rate if max_rate else 0.0
        self._last: Optional[float] = None
        self._skipped = 0
        self.skipped_total = 0

    def admit(self, count: int, now: float) -> bool:
        """True if a frame with ``count`` detections at monotonic time ``now`` is published."""
        if (self.skip_empty and count == 0) or (
                self.min_interval and self._last is not None and now - self._last < self.min_interval):
            self._skipped += 1
            self.skipped_total += 1
            return False
        # Advance by the interval rather than to ``now`` so a 30 fps camera capped at 10/s
        # publishes every third frame, not every fourth (frame times jitter around 33 ms).
        if self.min_interval and self._last is not None and now - self._last < 2 * self.min_interval:
            self._last += self.min_interval
        else:
            self._last = now
        return True

    def take_skipped(self) -> int:
        skipped, self._skipped = self._skipped, 0
        return skipped


def class_counts(message: Mapping[str, Any]) -> Dict[str, int]:
    """Objects per label in a detections message (what the Home Assistant sensors show)."""
    counts: Dict[str, int] = {}
    for item in message.get("detections", []):
        label = str(item.get("label"))
        counts[label] = counts.get(label, 0) + 1
    return counts


def describe(payload: bytes, limit: int = 80) -> str:
    """A short printable excerpt of a payload for log lines (never the whole thing)."""
    text = payload[:limit].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(payload) > limit else ""))


__all__: List[str] = [
    "COUNTS_SCHEMA", "DETECTIONS_SCHEMA", "EVENTS_SCHEMA", "RESULT_SCHEMA", "STATS_SCHEMA",
    "STATUS_OFFLINE", "STATUS_ONLINE", "FrameGate", "Topics", "class_counts", "counts_payload", "describe",
    "detections_payload", "encode", "event_payload", "new_run_id", "result_payload",
    "stats_payload",
]
