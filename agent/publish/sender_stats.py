"""What the sender counts: messages by outcome, drops by reason, deliveries by kind of topic,
the connection's state and last error, and the sender's own internal errors.

The sender thread writes them (``drop`` also from callers of ``submit``); ``snapshot`` reads
them from any thread, under the one lock they share. Log lines go to the sender's logger
(``agent.publish.sender``), which journald filters and the soak harness reads.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Dict, Optional

from agent.publish.throttle import Throttled

# The last topic level -> the kind of message, for counters by kind (see topic_kind).
_KINDS = ("detections", "events", "counts", "snapshot", "stats", "status")
#: Counters ``snapshot`` reports (others may be bumped, but are not part of the stats message).
REPORTED = ("sent", "acked", "spooled", "replayed", "reconnects", "connects")


def topic_kind(topic: str) -> str:
    """``detections``, ``events``, ``counts``, ``snapshot``, ``stats``, ``status`` (the device's
    and each camera's), ``command_result``, or ``other`` (e.g. an MQTT 5 response topic)."""
    head, _, last = topic.rpartition("/")
    if last in _KINDS:
        return last
    if last == "result" and head.endswith("/cmd"):
        return "command_result"
    return "other"


class SenderStats:
    """The sender's counters; see the module docstring."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._count: Dict[str, int] = collections.defaultdict(int)
        self._dropped: Dict[str, int] = collections.defaultdict(int)
        self._published: Dict[str, int] = collections.defaultdict(int)  # by topic_kind
        self.state = "down"  # down | connecting | up
        self._last_error: Optional[str] = None
        self.internal = 0
        self._last_internal: Optional[str] = None
        self.internal_log = Throttled(log, logging.ERROR, self._describe_internal)

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._count[name] += n

    def bump_published(self, topic: str) -> None:
        kind = topic_kind(topic)
        with self._lock:
            self._published[kind] += 1

    def drop(self, reason: str, why: str, count: int = 1) -> None:
        with self._lock:
            first = self._dropped[reason] == 0
            self._dropped[reason] += count
            total = self._dropped[reason]
        if first or total % 1000 == 0:
            self.log.warning("dropped %d message(s) so far (%s): %s", total, reason, why)

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        with self._lock:
            self.state = state
            if error is not None:
                self._last_error = error

    def connected(self) -> None:
        """A CONNACK accepted: up, one more connect (a reconnect after the first), no error."""
        with self._lock:
            self.state = "up"
            if self._count["connects"]:
                self._count["reconnects"] += 1
            self._count["connects"] += 1
            self._last_error = None

    def internal_error(self, text: str, exc: BaseException) -> None:
        """A bug in one part of a sender step: counted, and logged (the first with its traceback)."""
        with self._lock:
            self.internal += 1
            self._last_internal = text[:300]
        self.internal_log.note({text[:160]: 1}, exc_info=exc)

    def _describe_internal(self, count: int, by_reason: Dict[str, int]) -> str:
        last = list(by_reason)[-1] if by_reason else ""
        return (f"MQTT sender internal error (a bug: please report it): {count} since the last report, "
                f"{self.internal} in all; sending goes on. Last: {last}")

    def snapshot(self) -> Dict[str, Any]:
        """Counters, state and errors; ``dropped_by`` holds the sender's own drops by reason."""
        with self._lock:
            out: Dict[str, Any] = {key: self._count[key] for key in REPORTED}
            out["connected"] = self.state == "up"
            out["state"] = self.state
            out["last_error"] = self._last_error
            out["internal_errors"] = self.internal
            out["last_internal_error"] = self._last_internal
            # Delivered: acknowledged by the broker (QoS 1), or written to the socket (QoS 0).
            out["published_by"] = dict(self._published)
            out["dropped_by"] = dict(self._dropped)
        return out

    def report(self, attempts: int, unrouted: Dict[str, int], spool: Any, oldest_created: Optional[float],
               inflight: int, queued: int) -> Dict[str, Any]:
        """``Sender.counters()``: these counters with the connection attempts, the held (unrouted)
        messages, the spool's backlog and drops, the in-flight window and the queue."""
        snap = self.snapshot()
        out: Dict[str, Any] = {key: snap[key] for key in REPORTED}
        out["attempts"] = attempts
        for key in ("connected", "state", "last_error", "internal_errors", "last_internal_error",
                    "published_by"):
            out[key] = snap[key]
        dropped = snap["dropped_by"]
        out.update(unrouted)
        if spool is not None:  # copy first: the sender thread may add a reason meanwhile
            dropped.update({f"spool_{k}": v for k, v in spool.dropped.copy().items()})
        out["dropped"] = sum(dropped.values())
        out["dropped_by"] = dropped
        out["backlog"] = len(spool) if spool is not None else 0
        out["backlog_bytes"] = spool.bytes if spool is not None else 0
        # The oldest message is looked up once a second: the age may be up to 1 s short.
        out["backlog_age_s"] = round(max(0.0, time.time() - oldest_created), 3) \
            if oldest_created is not None and out["backlog"] else 0.0
        out["inflight"] = inflight
        out["queue"] = queued
        out["spool"] = spool.mode if spool is not None else "closed"
        return out
