"""Is the agent doing its job? The answer ``/healthz`` gives (agent/runtime/prometheus.py).

Healthy means the inference loop goes round: ``Pipeline.heartbeat`` moves at every round,
idle or not (the loop wakes at least every 0.1 s), so a heartbeat older than the stall
timeout means a backend hung in a driver call, a dead inference thread or a stopped
pipeline. Cameras are not part of it: a camera that is down is reported by its own metrics
and status topic, and restarting the agent would not bring it back.
"""

from __future__ import annotations

import time
from typing import Dict, NamedTuple, Optional

from agent.runtime.pipeline import Pipeline


class Health(NamedTuple):
    ok: bool
    reason: str  # one line, for people and for the 503 body
    details: Dict[str, object]

    def as_json(self) -> Dict[str, object]:
        return {"status": "ok" if self.ok else "unhealthy", "reason": self.reason, **self.details}


def check_health(pipeline: Optional[Pipeline], stall_timeout: float, now: Optional[float] = None) -> Health:
    """The inference loop's health from its heartbeat; ``now`` is a ``time.monotonic()`` value."""
    if pipeline is None:
        return Health(False, "starting: the pipeline is not built yet", {})
    if pipeline.error is not None:
        error = pipeline.error
        return Health(False, f"the inference loop failed: {type(error).__name__}: {error}"[:300], {})
    if pipeline.detector is None:
        return Health(False, "starting: the model is loading", {})
    now = time.monotonic() if now is None else now
    age = max(0.0, now - pipeline.heartbeat)
    details: Dict[str, object] = {"heartbeat_age_s": round(age, 3), "frames": pipeline.frames_processed,
                                  "paused": pipeline.paused}
    if pipeline.finished.is_set():
        return Health(False, "the input ended: no more frames will be processed", details)
    if age > stall_timeout:
        return Health(False, f"the inference loop has not gone round for {age:.1f} s: stalled or stopped "
                             f"(metrics.stall_timeout {stall_timeout:g} s)", details)
    return Health(True, "the inference loop is running", details)


def agent_version() -> str:
    """The installed package's version ("unknown" when run from a tree that was never installed)."""
    try:
        from importlib.metadata import version

        return version("detection-agent")
    except Exception:  # PackageNotFoundError, or no metadata at all
        return "unknown"


__all__ = ["Health", "agent_version", "check_health"]
