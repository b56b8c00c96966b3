"""End-to-end latency as a log-bucketed histogram: percentiles of millions of samples in a few kB.

A consumer measures each message's latency as its own receive time minus the message's
``ts`` (capture time, Unix seconds). Samples go into buckets 2% wide on a log scale, so
p50 / p99 are exact to within 2%, memory does not grow with the message count, and the
histograms of several consumers (shared-subscription ``record`` processes) add up into the
fleet's. A negative latency (the sender's clock ahead of the consumer's) is counted apart
and kept in the lowest bucket, not hidden.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, Mapping, Optional

log = logging.getLogger(__name__)

RATIO = 1.02  # width of one bucket: each upper edge is 2% above the previous one
FLOOR = 1e-5  # seconds; everything at or below 10 us shares bucket 0
_LOG_RATIO = math.log(RATIO)


class LatencyHistogram:
    """Seconds, bucketed; ``add``, ``merge``, ``percentile`` and a JSON-friendly ``to_dict``."""

    def __init__(self) -> None:
        self.buckets: Dict[int, int] = {}
        self.count = 0
        self.negative = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        if seconds < 0:
            self.negative += 1
        index = bucket_index(seconds)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add ``other``'s samples to this histogram (returns self)."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.negative += other.negative
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> Optional[float]:
        """The ``q``-th percentile (0..100) in seconds: the upper edge of the bucket that holds
        it, clamped to the largest sample; None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * min(max(q, 0.0), 100.0) / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(upper_edge(index), self.max)
        return self.max

    def summary_ms(self) -> Dict[str, Any]:
        """count, mean, p50, p90, p99 and max in milliseconds (rounded to 0.01 ms)."""
        def ms(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value * 1000.0, 2)

        return {"count": self.count, "negative": self.negative,
                "mean": ms(self.total / self.count) if self.count else None,
                "p50": ms(self.percentile(50)), "p90": ms(self.percentile(90)),
                "p99": ms(self.percentile(99)), "max": ms(self.max) if self.count else None}

    def to_dict(self) -> Dict[str, Any]:
        return {"ratio": RATIO, "floor": FLOOR, "count": self.count, "negative": self.negative,
                "total": self.total, "min": self.min if self.count else None,
                "max": self.max if self.count else None,
                "buckets": {str(k): v for k, v in sorted(self.buckets.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """The inverse of ``to_dict``; ``ValueError`` for another bucket layout or bad numbers."""
        if data.get("ratio") != RATIO or data.get("floor") != FLOOR:
            raise ValueError(f"histogram buckets ratio {data.get('ratio')} / floor {data.get('floor')} "
                             f"differ from this version's {RATIO} / {FLOOR}")
        out = cls()
        out.buckets = {int(k): int(v) for k, v in dict(data.get("buckets") or {}).items()}
        out.count = int(data.get("count", 0))
        out.negative = int(data.get("negative", 0))
        out.total = float(data.get("total", 0.0))
        if out.count:
            out.min, out.max = float(data["min"]), float(data["max"])
        if sum(out.buckets.values()) != out.count:
            raise ValueError("histogram bucket counts do not add up to its count")
        return out


def bucket_index(seconds: float) -> int:
    if seconds <= FLOOR:
        return 0
    return max(0, math.ceil(math.log(seconds / FLOOR) / _LOG_RATIO - 1e-9))


def upper_edge(index: int) -> float:
    return FLOOR * RATIO ** index


def merged(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    out = LatencyHistogram()
    for h in histograms:
        out.merge(h)
    return out


__all__ = ["LatencyHistogram", "bucket_index", "merged", "upper_edge"]
