"""Fair timing of in-process callables: interleaved runs, medians, ratios."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Mapping


def time_interleaved(cases: Mapping[str, Callable[[], object]], repeat: int, warmup: int = 5
                     ) -> Dict[str, Dict[str, float]]:
    """Milliseconds per call of each case: min, median, p90.

    The cases take turns call by call, so frequency scaling, cache state and a busy
    neighbour on the other core fall on every contender alike.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, list] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: summarize(values) for name, values in samples.items()}


def summarize(values_ms: list) -> Dict[str, float]:
    ordered = sorted(values_ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {"min_ms": round(ordered[0], 4), "median_ms": round(statistics.median(ordered), 4),
            "p90_ms": round(p90, 4), "runs": len(ordered)}


def ratio(peer: Dict[str, float], ours: Dict[str, float]) -> float:
    """How many times faster ours is than the peer (median over median)."""
    return round(peer["median_ms"] / ours["median_ms"], 2)
