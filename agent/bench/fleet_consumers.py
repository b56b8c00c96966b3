"""The fleet bench's consumers and status watcher.

``Consumers``: K ``detection-agent record --share GROUP`` processes, each with its own
persistent session (``--client-id``), output file and JSON summary: the same command an
operator runs, so the bench measures it too. Their stderr is read on threads to learn when
each (re)subscribed, which dates their return after a broker restart.

``StatusWatch``: a plain subscriber of every agent's retained ``status`` topic (online /
offline, the last will), to check that the fleet's status contract held.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import paho.mqtt.client as paho

from agent.errors import AgentError
from agent.publish.latency import LatencyHistogram, merged

log = logging.getLogger(__name__)


class Consumers:
    def __init__(self, address: str, group: str, count: int, folder: Path,
                 ready_timeout: float = 60.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.count = count
        self.outs = [folder / f"consumer-{k}.jsonl" for k in range(count)]
        self.summaries = [folder / f"consumer-{k}.json" for k in range(count)]
        self._subscribed: List[List[float]] = [[] for _ in range(count)]  # wall times of each subscribe
        self._stderr: List[List[str]] = [[] for _ in range(count)]
        self._offsets = [0] * count
        self._lines = [0] * count
        self.procs: List[subprocess.Popen] = []
        for k in range(count):
            cmd = [sys.executable, "-m", "agent", "record", "--broker", address, "--share", group,
                   "--client-id", f"fleet-consumer-{k}", "--session-expiry", "3600",
                   "--out", str(self.outs[k]), "--summary", str(self.summaries[k])]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(k, proc), name=f"consumer-{k}-stderr",
                             daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while not all(self._subscribed):
            dead = [k for k, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.kill()
                why = ("".join(self._stderr[dead[0]])[-2000:] if dead
                       else f"not subscribed in {ready_timeout:g} s")
                raise AgentError(f"fleet: a record consumer failed to start: {why}")
            time.sleep(0.05)

    def _read(self, k: int, proc: subprocess.Popen) -> None:
        if proc.stderr is None:  # started without stderr=PIPE: nothing to watch
            raise AgentError(f"fleet: record consumer {k} has no stderr pipe")
        for line in iter(proc.stderr.readline, ""):
            if "subscribed to" in line:
                self._subscribed[k].append(time.time())
            self._stderr[k].append(line)
            del self._stderr[k][:-50]

    def pids(self) -> Dict[str, int]:
        return {f"consumer-{k}": p.pid for k, p in enumerate(self.procs)}

    def files(self) -> List[Path]:
        return list(self.outs)

    def lines(self) -> int:
        """Lines written so far by all consumers (read incrementally)."""
        for k, path in enumerate(self.outs):
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offsets[k])
                    data = handle.read()
            except OSError:
                continue
            self._offsets[k] += len(data)
            self._lines[k] += data.count(b"\n")
        return sum(self._lines)

    def subscribed_after(self, since: float) -> List[float]:
        """Per consumer that subscribed again after ``since``, when it first did."""
        out = []
        for times in self._subscribed:
            later = [t for t in times if t >= since]
            if later:
                out.append(later[0])
        return out

    def stop(self, timeout: float = 30.0) -> List[Dict[str, Any]]:
        """SIGTERM every consumer, wait, and return their JSON summaries."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for k, proc in enumerate(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AgentError(f"fleet: consumer {k} did not stop within {timeout:g} s") from None
            if proc.returncode != 0:
                raise AgentError(f"fleet: consumer {k} exited with {proc.returncode}: "
                                 f"{''.join(self._stderr[k])[-2000:]}")
        return [json.loads(path.read_text(encoding="utf-8")) for path in self.summaries]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    @staticmethod
    def latency(summaries: List[Dict[str, Any]]) -> Dict[str, Any]:
        """The group's end-to-end latency: the consumers' histograms added up."""
        return merged(LatencyHistogram.from_dict(s["latency"]) for s in summaries).summary_ms()


class StatusWatch:
    """Last status payload and whether ``online`` was ever seen, per device."""

    def __init__(self, host: str, port: int, prefix: str = "detection-agent") -> None:
        self.last: Dict[str, str] = {}
        self.online: Set[str] = set()
        self._lock = threading.Lock()
        self._filter = f"{prefix}/+/status"
        self.client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self._filter, 1)
        self.client.on_message = self._on_message
        self.client.connect(host, port, 10)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        device = message.topic.split("/")[-2]
        payload = bytes(message.payload).decode("utf-8", errors="replace")
        with self._lock:
            self.last[device] = payload
            if payload == "online":
                self.online.add(device)

    def wait_offline(self, devices: Set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self.last.get(d) == "offline" for d in devices):
                    return True
            time.sleep(0.1)
        return False

    def summary(self, devices: Set[str]) -> Dict[str, Optional[int]]:
        with self._lock:
            return {"online_seen": len(self.online & devices),
                    "offline_at_end": sum(1 for d in devices if self.last.get(d) == "offline")}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


__all__ = ["Consumers", "StatusWatch"]
