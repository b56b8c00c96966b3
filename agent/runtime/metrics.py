"""Counters, latency percentiles over a sliding window, and system figures for ``stats``.

Percentiles come from the last ``window`` samples of each stage (a ring buffer, no growth
over months of uptime). Each stage also keeps cumulative counts in fixed buckets
(``LatencyHistogram``), per camera where the caller names one: what Prometheus scrapes
(agent/runtime/prometheus.py) without adding work to the hot path beyond one bisect.

System figures are read from /proc and /sys, which is where a Jetson exposes its thermal
zones and GPU load; nothing here needs psutil.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Deque, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

WINDOW = 1000  # samples per stage: ~30 s at 30 fps
# Histogram bucket bounds in milliseconds: a Jetson's TensorRT inference (a few ms) up to a
# CPU running full YOLOv3 (~0.6 s) and end-to-end delays of seconds while a backlog clears.
BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0,
              1000.0, 2500.0, 5000.0, 10000.0)


class LatencyWindow:
    """The last ``size`` samples of one quantity (milliseconds); thread-safe."""

    def __init__(self, size: int = WINDOW) -> None:
        self._samples: Deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._samples.append(float(value_ms))

    def percentiles(self) -> Dict[str, float]:
        with self._lock:
            data = np.fromiter(self._samples, dtype=np.float64, count=len(self._samples))
        if data.size == 0:
            return {"p50": 0.0, "p99": 0.0, "count": 0}
        p50, p99 = np.percentile(data, [50, 99])
        return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "count": int(data.size)}


class HistogramSnapshot(NamedTuple):
    bounds_ms: Tuple[float, ...]
    counts: List[int]  # per bucket, not cumulative; the last one is above every bound (+Inf)
    sum_ms: float

    @property
    def count(self) -> int:  # type: ignore[override]  # a property named like tuple.count, by design
        return sum(self.counts)


class LatencyHistogram:
    """Counts of one latency in fixed buckets since the start, never reset (a Prometheus histogram)."""

    def __init__(self, bounds_ms: Tuple[float, ...] = BUCKETS_MS) -> None:
        self._bounds = tuple(sorted(bounds_ms))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        index = bisect.bisect_left(self._bounds, value_ms)  # the first bound >= value: Prometheus' "le"
        with self._lock:
            self._counts[index] += 1
            self._sum += value_ms

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(self._bounds, list(self._counts), self._sum)


class RateMeter:
    """Events per second over the last ``horizon`` seconds."""

    def __init__(self, horizon: float = 10.0) -> None:
        self._times: Deque[float] = collections.deque()
        self._horizon = horizon
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = now - self._times[0]
            return round((len(self._times) - 1) / span, 2) if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._horizon:
            self._times.popleft()


class StageMetrics:
    """Latency per named stage plus named counters, as the ``stats`` payload shows them."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._stages: Dict[str, LatencyWindow] = {}
        self._histograms: Dict[Tuple[str, str], LatencyHistogram] = {}  # (stage, camera or "")
        self._labelled: Dict[str, Dict[Tuple[str, ...], int]] = {}  # name -> labels -> count (count_by)
        self._counters: Dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()
        self.fps = RateMeter()

    def observe(self, stage: str, value_ms: float, camera: str = "") -> None:
        """One latency sample; ``camera`` keeps a histogram per camera (the window stays per stage)."""
        window = self._stages.get(stage)
        histogram = self._histograms.get((stage, camera))
        if window is None or histogram is None:
            with self._lock:
                window = self._stages.setdefault(stage, LatencyWindow(self._window))
                histogram = self._histograms.setdefault((stage, camera), LatencyHistogram())
        window.add(value_ms)
        histogram.add(value_ms)

    def histograms(self) -> Dict[Tuple[str, str], HistogramSnapshot]:
        """(stage, camera) -> its histogram so far (camera "" where the caller named none)."""
        with self._lock:
            histograms = dict(self._histograms)
        return {key: histogram.snapshot() for key, histogram in histograms.items()}

    def counters(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def count_by(self, name: str, labels: Tuple[str, ...], amount: int = 1) -> None:
        """A counter split by a bounded set of labels (events by camera and type), for /metrics;
        the ``stats`` message keeps its flat counters."""
        with self._lock:
            counts = self._labelled.setdefault(name, {})
            counts[labels] = counts.get(labels, 0) + amount

    def counts_by(self, name: str) -> Dict[Tuple[str, ...], int]:
        with self._lock:
            return dict(self._labelled.get(name, {}))

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            counters = dict(self._counters)
            stages = dict(self._stages)
        return {"fps": self.fps.rate(), "latency_ms": {k: v.percentiles() for k, v in stages.items()},
                "counters": counters}


def resident_memory_mb() -> float:
    """This process's resident set size (VmRSS), in MB; 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return 0.0


def _read_number(path: Path) -> Optional[float]:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def thermal_zones(root: Path = Path("/sys/class/thermal")) -> Dict[str, float]:
    """Temperature in degrees C per thermal zone (``CPU-therm``, ``GPU-therm``... on a Jetson)."""
    zones: Dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        millidegrees = _read_number(zone / "temp")
        if millidegrees is None:
            continue
        try:
            name = (zone / "type").read_text().strip()
        except OSError:
            name = zone.name
        zones[name] = round(millidegrees / 1000.0, 1)
    return zones


# Where Jetson kernels publish GPU load (per mille), newest layout first.
_GPU_LOAD_PATHS = ("/sys/devices/platform/gpu.0/load", "/sys/devices/gpu.0/load",
                   "/sys/devices/17000000.ga10b/load", "/sys/devices/17000000.gv11b/load",
                   "/sys/devices/57000000.gpu/load")


def gpu_load_percent() -> Optional[float]:
    for path in _GPU_LOAD_PATHS:
        per_mille = _read_number(Path(path))
        if per_mille is not None:
            return round(per_mille / 10.0, 1)
    return None


class CpuMeter:
    """Process CPU use (percent of one core) between calls, from os.times()."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu_seconds())

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def percent(self) -> float:
        now, cpu = time.monotonic(), self._cpu_seconds()
        last_now, last_cpu = self._last
        self._last = (now, cpu)
        return round(100.0 * (cpu - last_cpu) / (now - last_now), 1) if now > last_now else 0.0


def system_stats(cpu: Optional[CpuMeter] = None) -> Dict[str, object]:
    """Memory, load, temperatures and (on a Jetson) GPU load, for the ``stats`` payload."""
    stats: Dict[str, object] = {"rss_mb": resident_memory_mb(), "threads": threading.active_count()}
    if cpu is not None:
        stats["cpu_percent"] = cpu.percent()
    with contextlib.suppress(OSError):  # no load average on some platforms
        stats["load1"] = round(os.getloadavg()[0], 2)
    temps = thermal_zones()
    if temps:
        stats["temperature_c"] = temps
    gpu = gpu_load_percent()
    if gpu is not None:
        stats["gpu_percent"] = gpu
    return stats
