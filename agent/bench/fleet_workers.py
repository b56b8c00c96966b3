"""The simulated fleet spread over worker processes.

Why not one process: paho-mqtt's network loop waits on ``select()``, which cannot watch a
file descriptor numbered 1024 or more. Each simulated agent holds about five (its socket,
paho's wake-up socket pair, the spool's SQLite database and WAL files), so a process with
about 200 agents hands new sockets numbers above 1023 after a broker restart, and their
CONNECT is never written: measured, 200 agents in one process took 12-60 s to reconnect,
all through "no CONNACK" timeouts, against 0.1-1.7 s for 100. A real agent is one process
with a few dozen descriptors, so this is the simulator's limit, not the agent's; keeping
each worker at ``AGENTS_PER_WORKER`` agents also spreads the fleet over the CPU cores (one
Python process runs on about one).

``WorkerPool`` (the bench's side) starts the workers with the ``spawn`` method (no fork of a
process that already runs threads) and talks to each over a pipe: start, publish from a
common wall-clock time, report whether everything is acknowledged, hand over the figures,
stop. ``worker_main`` is the worker's side.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.bench.fleet_agents import FleetSettings, SimulatedFleet
from agent.bench.fleet_proof import disk_writes
from agent.errors import AgentError

log = logging.getLogger(__name__)

AGENTS_PER_WORKER = 100
_REPLY_S = 120.0  # the longest a worker may take to answer (start waits up to 60 s for connections)


def split(agents: int, workers: int) -> List[List[int]]:
    """Agent indices per worker, as even as possible, in order."""
    size = math.ceil(agents / workers)
    return [list(range(k, min(agents, k + size))) for k in range(0, agents, size)]


def worker_main(conn: Any, settings: FleetSettings, indices: Sequence[int], log_level: int) -> None:
    """One worker: its slice of the fleet, driven by commands from ``conn``."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = SimulatedFleet(settings, indices)
    publisher: Optional[threading.Thread] = None
    cpu0, writes0 = time.process_time(), disk_writes()
    try:
        while True:
            command, args = conn.recv()
            if command == "start":
                conn.send(fleet.start())
            elif command == "publish":
                seconds, start_wall = args
                cpu0, writes0 = time.process_time(), disk_writes()  # figures from here on
                publisher = threading.Thread(target=fleet.publish_for, args=(seconds, start_wall),
                                             name="fleet-publish", daemon=True)
                publisher.start()
                conn.send(True)
            elif command == "status":
                done = publisher is None or not publisher.is_alive()
                conn.send((done and fleet.drained(), sum(fleet.calls)))
            elif command == "report":
                writes = disk_writes()
                conn.send({"runs": fleet.runs, "indices": fleet.indices, "calls": fleet.calls,
                           "created": fleet.created, "refused": fleet.refused, "lag_max": fleet.lag_max,
                           "lag_late": fleet.lag_late, "up_since": fleet.up_since, "totals": fleet.totals(),
                           "cpu_s": time.process_time() - cpu0,
                           "disk_write_bytes": None if writes is None or writes0 is None
                           else writes - writes0})
            elif command == "stop":
                conn.send(fleet.stop(float(args)))
                return
    except (EOFError, KeyboardInterrupt):
        fleet.stop(2.0)


class WorkerPool:
    """The parent's handle on the worker processes of one fleet."""

    def __init__(self, settings: FleetSettings, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.slices = split(settings.agents, workers)
        self.procs: List[Any] = []
        self.conns: List[Any] = []
        for indices in self.slices:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, settings, indices, logging.getLogger().level),
                               name=f"fleet-worker-{indices[0]}", daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def pids(self) -> Dict[str, int]:
        return {f"agents-{k}": proc.pid for k, proc in enumerate(self.procs)}

    def _ask(self, command: str, args: Any = None, timeout: float = _REPLY_S) -> List[Any]:
        for conn in self.conns:
            conn.send((command, args))
        out = []
        for k, conn in enumerate(self.conns):
            try:
                if not conn.poll(timeout):
                    raise AgentError(f"fleet: worker {k} did not answer {command!r} within {timeout:g} s")
                out.append(conn.recv())
            except (EOFError, OSError):
                raise AgentError(f"fleet: worker {k} died (exit code {self.procs[k].exitcode}); its log is "
                                 "above") from None
        return out

    def start(self) -> float:
        """Connect every agent; the slowest worker's seconds."""
        return max(self._ask("start"))

    def publish(self, seconds: float, start_wall: float) -> None:
        self._ask("publish", (seconds, start_wall))

    def status(self) -> Tuple[bool, int]:
        """(every worker done publishing and fully acknowledged, publish calls so far)."""
        replies = self._ask("status")
        return all(done for done, _ in replies), sum(calls for _, calls in replies)

    def report(self) -> Dict[str, Any]:
        """Every worker's figures, merged; per-agent lists in fleet order."""
        parts = self._ask("report")
        merged: Dict[str, Any] = {"runs": {}, "calls": [], "created": [], "up_since": [], "cpu_s": 0.0,
                                  "lag_max": 0.0, "lag_late": 0, "disk_write_bytes": 0, "totals": {}}
        for part in parts:
            merged["runs"].update(part["runs"])
            for key in ("calls", "created", "up_since"):
                merged[key].extend(part[key])
            merged["cpu_s"] += part["cpu_s"]
            merged["lag_max"] = max(merged["lag_max"], part["lag_max"])
            merged["lag_late"] += part["lag_late"]
            if part["disk_write_bytes"] is None or merged["disk_write_bytes"] is None:
                merged["disk_write_bytes"] = None
            else:
                merged["disk_write_bytes"] += part["disk_write_bytes"]
            merged["totals"] = _add_totals(merged["totals"], part["totals"])
        return merged

    def stop(self, timeout: float = 15.0) -> int:
        """Stop every agent (offline status, clean disconnect); how many did not stop cleanly."""
        try:
            unclean = sum(self._ask("stop", timeout, timeout=timeout + 10.0))
        finally:
            self.kill()
        return unclean

    def kill(self) -> None:
        for proc in self.procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)


def _add_totals(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "dropped_by":
            reasons = dict(out.get(key, {}))
            for reason, n in value.items():
                reasons[reason] = reasons.get(reason, 0) + n
            out[key] = reasons
        elif key == "backlog_max_one_agent":
            out[key] = max(out.get(key, 0), value)
        else:
            out[key] = out.get(key, 0) + value
    return out


__all__ = ["AGENTS_PER_WORKER", "WorkerPool", "split", "worker_main"]
