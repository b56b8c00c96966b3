"""The soak test's live parts: the subscriber that records everything, the fault actuators,
the agent's config, and /proc sampling. The harness itself is soak.py."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from agent.bench.soak_report import FAULTS, Sample

DEVICE_ID = "soak"
PREFIX = "detection-agent"
CLIENT_ID = "detection-agent-soak-recorder"
LIVE, FILE = "live", "file"  # camera names


def say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def read_process(pid: int, t: float) -> Optional[Sample]:
    """RSS, fd count and thread count of ``pid`` from /proc; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        return Sample(round(t, 1), int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"]))
    except (KeyError, ValueError, IndexError):
        return None  # a zombie has no VmRSS


class Recorder:
    """A persistent QoS 1 subscriber (paho 2.x): every detections message's (camera, run, seq)
    and the newest stats payload."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as paho

        root = f"{PREFIX}/{DEVICE_ID}"
        self.topics = [(f"{root}/+/detections", 1), (f"{root}/stats", 1)]
        self.records: List[Tuple[str, str, int]] = []
        self.stats: Optional[Dict[str, Any]] = None
        self.connects = 0
        self.bad_payloads = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # clean_session False + fixed id: the broker queues our messages while we are away,
        # and keeps them (persistence) across its own restarts.
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=CLIENT_ID,
                                  clean_session=False)
        self.client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]  # paho annotates int; it waits float seconds
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"the soak subscriber could not subscribe at {host}:{port}")

    def _on_connect(self, client: Any, userdata: object, flags: object, rc: Any, props: object) -> None:
        if not rc.is_failure:
            self.connects += 1
            client.subscribe(self.topics)

    def _on_message(self, client: Any, userdata: object, message: Any) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            self.bad_payloads += 1
            return
        with self._lock:
            if message.topic.endswith("/stats"):
                self.stats = payload
            else:
                self.records.append((str(payload["camera"]), str(payload["run"]), int(payload["seq"])))

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def drain(self, quiet: float = 3.0, timeout: float = 60.0) -> None:
        """Wait until nothing has arrived for ``quiet`` seconds (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_count = self.count
            if now_count != last:
                last, since = now_count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Faults:
    """Turns the schedule's ``{fault}_start`` / ``{fault}_end`` actions into real faults on the
    broker process, the TCP relay between agent and broker, and the live camera's server."""

    def __init__(self, broker: Any, relay: Any, camera: Any) -> None:
        self.broker = broker
        self.relay = relay
        self.camera = camera
        self.done: Dict[str, int] = {name: 0 for name in FAULTS}
        self._stalled = False

    def apply(self, action: str) -> None:
        name, _, phase = action.rpartition("_")
        if name not in FAULTS or phase not in ("start", "end"):
            raise ValueError(f"unknown soak action {action!r}")
        if phase == "start":
            self.done[name] += 1
        getattr(self, f"_{name}")(phase == "start")
        say(f"{name.replace('_', ' ')} {'begins' if phase == 'start' else 'ends'} ({self.done[name]})")

    def _broker_restart(self, start: bool) -> None:
        if start:
            self._broker_stall(False)  # a hung broker cannot act on SIGTERM
            self.broker.stop()
        else:
            self.broker.start()

    def _broker_stall(self, start: bool) -> None:
        if start and self.broker.running:
            self.broker.freeze()
            self._stalled = True
        elif not start and self._stalled:
            self.broker.thaw()
            self._stalled = False

    def _network_freeze(self, start: bool) -> None:
        (self.relay.freeze if start else self.relay.thaw)()

    def _camera_cut(self, start: bool) -> None:
        if self.camera is not None:
            (self.camera.cut if start else self.camera.restore)()

    def clear(self) -> None:
        """End every fault still on (the run ended during one, or failed)."""
        self._broker_stall(False)
        if self.relay.frozen:
            self.relay.thaw()
        self.broker.start()
        if self.camera is not None:
            self.camera.restore()


def write_config(path: Path, *, broker_port: int, live_url: Optional[str], clip: Path, model: str,
                 state: Path, file_fps: float, stats_interval: float, mqtt_defaults: bool) -> Path:
    """The agent's YAML: the MJPEG camera and/or the looping file camera; short reconnect times
    unless ``mqtt_defaults`` (the shipped keepalive, backoff and timeouts)."""
    cameras: List[Dict[str, Any]] = []
    if live_url:
        cameras.append({"name": LIVE, "source": live_url, "stall_timeout": 5, "reconnect_min": 0.5,
                        "reconnect_max": 2})
    if file_fps > 0:
        # Paced at file_fps (realtime) so two cameras stay within a 2-core machine's budget.
        cameras.append({"name": FILE, "source": str(clip), "loop": True, "realtime": True, "fps": file_fps})
    mqtt: Dict[str, Any] = {"host": "127.0.0.1", "port": broker_port, "stats_interval": stats_interval}
    if not mqtt_defaults:
        mqtt.update({"keepalive": 5, "reconnect_min": 0.2, "reconnect_max": 2, "connect_timeout": 3})
    cfg = {
        "device": {"id": DEVICE_ID},
        "cameras": cameras,
        "model": {"path": model, "warmup_runs": 1},
        "mqtt": mqtt,
        "spool": {"path": str(state / "spool.db")},
        "service": {"state_dir": str(state), "watchdog": False},
        "logging": {"level": "INFO"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def spooled_detections(spool: Path) -> Optional[int]:
    """Detections messages still in the agent's spool after it stopped (not lost: kept for
    the next start); None when the spool cannot be read."""
    if not spool.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{spool}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT COUNT(*) FROM messages WHERE topic LIKE '%/detections'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return None


__all__ = ["CLIENT_ID", "DEVICE_ID", "FILE", "LIVE", "PREFIX", "Faults", "Recorder", "read_process", "say",
           "spooled_detections", "write_config"]
