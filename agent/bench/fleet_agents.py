"""Simulated agents in one process, each with the real publisher (agent/publish); fleet_workers.py
spreads a fleet over several such processes.

Every simulated agent is a real ``MqttPublisher``: its own client id, sender thread, paho
connection, on-disk spool (SQLite, one file per agent), ``run`` id and per-camera ``seq``,
retained ``status`` with the ``offline`` last will. Only the camera and the network are
simulated: a few driver threads call ``publish_detections`` for each agent on its own
schedule (``rate`` messages/s, phases spread so the fleet does not publish in lockstep),
with a fixed handful of boxes, as a detector would hand them over.

The driver notes how far behind its schedule it falls (``lag``): on an overloaded machine
that, not the broker, is often the first thing that gives. A monitor thread samples each
publisher's ``connected`` flag every 50 ms, so the report can say when each agent got back
after a broker restart.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from agent.config.schema import AgentConfig
from agent.publish.mqtt import MqttPublisher
from agent.types import Detections

log = logging.getLogger(__name__)

NAMES = ("person", "car", "bicycle")
_DRIVERS_MAX = 4  # driver threads; each serves a slice of the fleet
_MONITOR_S = 0.05


@dataclasses.dataclass
class FleetSettings:
    agents: int
    rate: float  # messages per second per agent (one camera each)
    host: str
    port: int
    workdir: Path
    protocol: str = "5"
    reconnect_min: float = 0.5
    reconnect_max: float = 4.0
    keepalive: int = 10
    inflight_max: int = 100
    queue_size: int = 1000
    hold_unrouted_s: float = 0.0  # mqtt.hold_unrouted_s of every agent (MQTT 5)


def agent_config(settings: FleetSettings, index: int) -> AgentConfig:
    """The config a real agent would have, but for a simulated camera (no file is opened)."""
    return AgentConfig.model_validate({
        "device": {"id": device_id(index)},
        "cameras": [{"name": "cam0", "source": "simulated.mp4"}],
        "model": {"path": "simulated.onnx"},
        "mqtt": {"host": settings.host, "port": settings.port, "protocol": settings.protocol,
                 "keepalive": settings.keepalive, "reconnect_min": settings.reconnect_min,
                 "reconnect_max": settings.reconnect_max, "connect_timeout": 10,
                 "stats_interval": 3600, "inflight_max": settings.inflight_max,
                 "queue_size": settings.queue_size, "hold_unrouted_s": settings.hold_unrouted_s},
        "spool": {"path": str(settings.workdir / "spools" / f"{device_id(index)}.db")},
    })


def device_id(index: int) -> str:
    return f"sim-{index:05d}"


def _boxes() -> Detections:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 500, (3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (3, 2))], axis=1).astype(np.float32)
    return Detections(boxes, np.array([0.91, 0.74, 0.42], np.float32), np.array([0, 1, 2], np.int32))


class SimulatedFleet:
    """Start, drive, watch and stop the fleet's agents ``indices`` (of ``settings.agents``) in this
    process; see the module docstring. Per-agent lists follow the order of ``indices``."""

    def __init__(self, settings: FleetSettings, indices: Optional[Sequence[int]] = None) -> None:
        self.settings = settings
        self.indices = list(range(settings.agents) if indices is None else indices)
        n = len(self.indices)
        (settings.workdir / "spools").mkdir(parents=True, exist_ok=True)
        self.publishers: List[MqttPublisher] = [
            MqttPublisher(agent_config(settings, i), "fleet-sim", list(NAMES)) for i in self.indices]
        self.calls = [0] * n  # publish_detections calls = seqs used, dropped ones included
        self.refused = [0] * n  # calls that returned False (queue full: counted by the agent)
        self.created: List[List[float]] = [[] for _ in range(n)]  # ts of seq k at [k - 1]
        self.lag_max = 0.0  # seconds the drivers fell behind their schedule, worst case
        self.lag_late = 0  # messages published more than one interval late
        self._lag_lock = threading.Lock()
        self._stop = threading.Event()
        self._publishing = threading.Event()
        self._drivers: List[threading.Thread] = []
        self._monitor: Optional[threading.Thread] = None
        self.up_since: List[Optional[float]] = [None] * n  # wall time of the latest connect
        self.down_since: List[Optional[float]] = [None] * n
        self._detections = _boxes()

    @property
    def runs(self) -> Dict[str, str]:
        """device id -> run id of this start."""
        return {pub.config.device.id: pub.run for pub in self.publishers}

    def start(self, connect_timeout: float = 60.0) -> float:
        """Start every publisher and wait until all are connected; returns the seconds it took."""
        started = time.monotonic()
        for pub in self.publishers:
            pub.start()
        self._monitor = threading.Thread(target=self._watch, name="fleet-monitor", daemon=True)
        self._monitor.start()
        deadline = started + connect_timeout
        while time.monotonic() < deadline and not all(pub.connected for pub in self.publishers):
            time.sleep(0.05)
        waiting = sum(not pub.connected for pub in self.publishers)
        if waiting:
            log.warning("%d of %d simulated agents not connected after %.0f s; publishing anyway "
                        "(they spool)", waiting, len(self.publishers), connect_timeout)
        return time.monotonic() - started

    def publish_for(self, seconds: float, start_wall: Optional[float] = None) -> None:
        """Drive every agent at ``rate`` for ``seconds`` from ``start_wall`` (``time.time()``, so that
        several processes start together; default now); returns when done."""
        n = len(self.publishers)
        shards = max(1, min(_DRIVERS_MAX, n // 50 + 1))
        t0 = time.monotonic() + (0.05 if start_wall is None else start_wall - time.time())
        self._publishing.set()
        self._drivers = [threading.Thread(target=self._drive, args=(range(k, n, shards), t0, seconds),
                                          name=f"fleet-driver-{k}", daemon=True) for k in range(shards)]
        for thread in self._drivers:
            thread.start()
        for thread in self._drivers:
            thread.join()
        self._publishing.clear()

    def _drive(self, indices: Sequence[int], t0: float, seconds: float) -> None:
        interval = 1.0 / self.settings.rate
        # Agent g of the fleet publishes at t0 + interval * g / N + k * interval: phases spread
        # evenly over the whole fleet, whichever process drives it.
        slots = [(t0 + interval * self.indices[i] / self.settings.agents, i) for i in indices]
        end = t0 + seconds
        k = 0
        lag_max, late = 0.0, 0
        while not self._stop.is_set():
            base = k * interval
            if slots[0][0] + base >= end:
                break
            for due0, i in slots:
                due = due0 + base
                now = time.monotonic()
                if due > now:
                    if self._stop.wait(due - now):
                        break
                    now = time.monotonic()
                lag = now - due
                if lag > lag_max:
                    lag_max = lag
                if lag > interval:
                    late += 1
                self.calls[i] += 1
                frame = self.calls[i] - 1
                ts = time.time()
                self.created[i].append(ts)
                ok = self.publishers[i].publish_detections("cam0", frame, ts, 640, 480,
                                                           self._detections, {"inference": 5.0})
                if not ok:
                    self.refused[i] += 1
            k += 1
        with self._lag_lock:
            self.lag_max = max(self.lag_max, lag_max)
            self.lag_late += late

    def _watch(self) -> None:
        states = [False] * len(self.publishers)
        while not self._stop.wait(_MONITOR_S):
            now = time.time()
            for i, pub in enumerate(self.publishers):
                up = pub.connected
                if up != states[i]:
                    states[i] = up
                    if up:
                        self.up_since[i] = now
                    else:
                        self.down_since[i] = now

    def totals(self) -> Dict[str, Any]:
        """The publishers' counters summed (and the largest backlog of one agent)."""
        keys = ("sent", "acked", "spooled", "replayed", "dropped", "reconnects", "connects", "unrouted",
                "unrouted_resent")
        out: Dict[str, Any] = {key: 0 for key in keys}
        backlog_max = backlog = inflight = 0
        dropped_by: Dict[str, int] = {}
        for pub in self.publishers:
            c = pub.counters()
            for key in keys:
                out[key] += int(c.get(key, 0))
            backlog += c["backlog"]
            inflight += c["inflight"]
            backlog_max = max(backlog_max, c["backlog"])
            for reason, n in c.get("dropped_by", {}).items():
                dropped_by[reason] = dropped_by.get(reason, 0) + n
        out.update(backlog=backlog, backlog_max_one_agent=backlog_max, inflight=inflight,
                   dropped_by={k: v for k, v in dropped_by.items() if v},
                   connected=sum(pub.connected for pub in self.publishers),
                   publish_calls=sum(self.calls), refused_calls=sum(self.refused))
        return out

    def drained(self) -> bool:
        """True when every publisher has had every message acknowledged."""
        return all(c["backlog"] == 0 and c["queue"] == 0 and c["inflight"] == 0
                   for c in (pub.counters() for pub in self.publishers))

    def stop(self, timeout: float = 10.0) -> int:
        """Stop every publisher (``offline`` retained, clean disconnect); returns how many did not
        stop cleanly within ``timeout``."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        # Each stop waits for its offline PUBACK: in parallel, or N agents take N round trips.
        with concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="fleet-stop") as pool:
            futures = [pool.submit(pub.stop, max(0.5, deadline - time.monotonic()))
                       for pub in self.publishers]
            unclean = sum(1 for f in futures if not f.result())
        if self._monitor is not None:
            self._monitor.join(1.0)
        return unclean


__all__ = ["NAMES", "FleetSettings", "SimulatedFleet", "agent_config", "device_id"]
