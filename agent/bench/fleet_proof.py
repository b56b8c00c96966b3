"""What the fleet bench proves and measures: every seq exactly once across the consumers'
files, and where the CPU and the disk went.

``union`` reads the JSON lines the shared-subscription recorders wrote and counts each
``(device, camera, run, seq)``; ``verdict`` compares that with what each simulated agent
published (its ``run`` and how many seqs it used): a seq no consumer has is *missing*
(the proof fails), a seq held more than once is a *duplicate* (QoS 1 redelivery: allowed,
counted apart). Missing seqs are told apart: still in the agent's spool at the end (not
delivered yet), created in a broker restart's gap (see fleet.py), or *lost*.
``CpuSampler`` reads ``/proc/PID/stat`` once a second for the processes it is given (the
broker, each recorder, this process), so the report can name the one that ran out of CPU
first. Linux only; elsewhere CPU figures are left out.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

log = logging.getLogger(__name__)

StreamKey = Tuple[str, str, str]  # device, camera, run


def union(files: Iterable[Path]) -> Tuple[Dict[StreamKey, Dict[int, int]], int]:
    """(stream -> {seq: times received}, lines that were no detections message)."""
    seen: Dict[StreamKey, Dict[int, int]] = {}
    other = 0
    for path in files:
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    msg = json.loads(line)
                    key = (msg["device"], msg["camera"], msg["run"])
                    seq = int(msg["seq"])
                except (ValueError, KeyError, TypeError):
                    other += 1
                    continue
                counts = seen.setdefault(key, {})
                counts[seq] = counts.get(seq, 0) + 1
    return seen, other


def spooled(folder: Path) -> Dict[StreamKey, Set[int]]:
    """The detections messages still in the agents' spools (SQLite files in ``folder``) after
    they stopped: not delivered yet, not lost; an agent sends them first at its next start."""
    out: Dict[StreamKey, Set[int]] = {}
    for path in sorted(folder.glob("*.db")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT payload FROM messages").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("%s: cannot read the spool: %s", path, exc)
            continue
        for (payload,) in rows:
            try:
                msg = json.loads(bytes(payload))
                out.setdefault((msg["device"], msg["camera"], msg["run"]), set()).add(int(msg["seq"]))
            except (ValueError, KeyError, TypeError):
                continue  # status, stats: not a detections message
    return out


def verdict(expected: Mapping[StreamKey, int], seen: Mapping[StreamKey, Mapping[int, int]],
            created: Optional[Mapping[StreamKey, Sequence[float]]] = None,
            gap_until: Optional[Mapping[StreamKey, Optional[float]]] = None,
            kept: Optional[Mapping[StreamKey, Set[int]]] = None) -> Dict[str, Any]:
    """Per stream, seqs 1..expected[stream] against what the consumers hold.

    A missing seq still in its agent's spool (``kept``) was not delivered by the end, not
    lost. ``gap_until[stream]`` is set for the agents that were back after a broker restart
    before the consumers had subscribed again: until that wall-clock time, what such an agent
    sent (its backlog, however old, and what it made meanwhile) could reach nobody. A missing
    seq of such an agent created (``created``: each seq's ``ts`` at index seq - 1) before that
    time is counted as ``missing_in_restart_gap``; every other missing seq is ``lost``.
    """
    missing_total = duplicates = received = in_gap = in_spool = 0
    missing_streams: List[Dict[str, Any]] = []
    for key, last in sorted(expected.items()):
        counts = seen.get(key, {})
        absent = [s for s in range(1, last + 1) if s not in counts]
        received += sum(counts.values())
        duplicates += sum(n - 1 for n in counts.values())
        if absent:
            missing_total += len(absent)
            waiting = (kept or {}).get(key, set())
            in_spool += sum(1 for s in absent if s in waiting)
            absent_gone = [s for s in absent if s not in waiting]
            until = (gap_until or {}).get(key)
            if created is not None and until is not None:
                times = created.get(key, ())
                in_gap += sum(1 for s in absent_gone if s <= len(times) and times[s - 1] <= until)
            missing_streams.append({"device": key[0], "camera": key[1], "run": key[2], "missing": len(absent),
                                    "first_missing": absent[:10]})
    unexpected = sorted(set(seen) - set(expected))
    return {"streams": len(expected), "expected": sum(expected.values()), "received": received,
            "unique": received - duplicates, "missing": missing_total, "duplicates": duplicates,
            "missing_still_in_spools": in_spool,
            "missing_in_restart_gap": in_gap if gap_until is not None else None,
            "lost": missing_total - in_spool - in_gap,
            "streams_with_missing": missing_streams[:20], "streams_with_missing_count": len(missing_streams),
            "unexpected_streams": [list(k) for k in unexpected[:10]],
            "exactly_once": missing_total == 0}


def _cpu_seconds(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class CpuSampler:
    """CPU seconds and the busiest second of named processes, sampled once a second.

    A name may change its pid (the broker after a restart): ``track`` it again, and the
    seconds of each incarnation add up.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._pids: Dict[str, int] = {}
        self._last: Dict[str, Tuple[float, float]] = {}  # name -> (time, cpu seconds) of the last sample
        self.total: Dict[str, float] = {}
        self.peak: Dict[str, float] = {}  # name -> highest share of one core over one interval
        self.series: Dict[str, List[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def track(self, name: str, pid: int) -> None:
        with self._lock:
            self._sample_one(name)  # close the books of the previous incarnation
            self._pids[name] = pid
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self._last[name] = (time.monotonic(), cpu)
            self.total.setdefault(name, 0.0)

    def start(self) -> CpuSampler:
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval)
        with self._lock:
            for name in list(self._pids):
                self._sample_one(name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for name in list(self._pids):
                    self._sample_one(name)

    def _sample_one(self, name: str) -> None:
        pid = self._pids.get(name)
        last = self._last.get(name)
        if pid is None or last is None:
            return
        cpu = _cpu_seconds(pid)
        now = time.monotonic()
        if cpu is None:  # exited: what it used after the last sample is lost (at most one interval)
            self._last.pop(name, None)
            return
        used = max(0.0, cpu - last[1])
        self.total[name] = self.total.get(name, 0.0) + used
        if now - last[0] >= self.interval / 2:  # a share over a very short span is noise
            share = used / (now - last[0])
            self.peak[name] = max(self.peak.get(name, 0.0), share)
            self.series.setdefault(name, []).append(round(share, 3))
        self._last[name] = (now, cpu)

    def report(self, seconds: float) -> Dict[str, Dict[str, float]]:
        """name -> cpu seconds, mean and peak share of one core (1.0 = one core busy)."""
        return {name: {"cpu_s": round(total, 2), "mean_cores": round(total / seconds, 3) if seconds else 0.0,
                       "peak_cores": round(self.peak.get(name, 0.0), 3)}
                for name, total in sorted(self.total.items())}


def disk_writes() -> Optional[int]:
    """Bytes this process has caused to be written to storage (``/proc/self/io``)."""
    try:
        with open("/proc/self/io", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


__all__ = ["CpuSampler", "disk_writes", "spooled", "union", "verdict"]
