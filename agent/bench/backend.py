"""``bench --model M --backend B``: raw inference latency of a backend, after warm-up.

Only ``backend.infer`` is timed, on a fixed random batch already in the network's layout:
no decoding, no NMS, no image I/O. Several backends (``--backend onnxruntime,opencv``) are
opened together and take turns call by call, so the machine's state (frequency scaling, a
busy neighbour) falls on all of them alike and the ratio between them is fair.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

log = logging.getLogger(__name__)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def summarize(samples_ms: Sequence[float], batch: int) -> Dict[str, float]:
    ordered = sorted(samples_ms)
    total_s = sum(ordered) / 1e3
    return {"p50_ms": round(percentile(ordered, 50), 3), "p90_ms": round(percentile(ordered, 90), 3),
            "p99_ms": round(percentile(ordered, 99), 3), "mean_ms": round(total_s * 1e3 / len(ordered), 3),
            "min_ms": round(ordered[0], 3), "fps": round(batch * len(ordered) / total_s, 2),
            "iterations": len(ordered)}


def run_backend_bench(model: Path, backends: Sequence[str] = ("auto",), batch: int = 1, iterations: int = 100,
                      warmup: int = 10, threads: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Latency percentiles and FPS per backend; ``ratios`` compare each with the first (p50 over p50)."""
    import numpy as np

    from agent.errors import BadInputError
    from agent.inference.backends.base import choose_backend
    from agent.inference.model_path import open_backend

    if iterations < 1 or warmup < 0 or batch < 1:
        raise BadInputError("--iterations and --batch must be at least 1, --warmup at least 0")
    names = [choose_backend(Path(model), b.strip()) for b in backends if b.strip()]
    if len(set(names)) != len(names):
        raise BadInputError(f"--backend lists a backend twice: {', '.join(names)}")
    opened: Dict[str, Any] = {}
    try:
        for name in names:
            opened[name] = open_backend(Path(model), name, batch, threads=threads)
        rng = np.random.default_rng(seed)
        inputs = {}
        for name, backend in opened.items():
            shape = (min(batch, int(backend.input_shape[0])), *backend.input_shape[1:])
            if shape[0] < batch:
                log.warning("%s: the model takes batches of at most %d", name, shape[0])
            inputs[name] = rng.random(shape, dtype=np.float32).astype(backend.input_dtype)
        for name, backend in opened.items():
            for _ in range(warmup):
                backend.infer(inputs[name])
        samples: Dict[str, List[float]] = {name: [] for name in opened}
        for _ in range(iterations):
            for name, backend in opened.items():
                start = time.perf_counter()
                backend.infer(inputs[name])
                samples[name].append((time.perf_counter() - start) * 1e3)
        results = {}
        for name, backend in opened.items():
            results[name] = {**summarize(samples[name], int(inputs[name].shape[0])), **_describe(backend)}
    finally:
        for backend in opened.values():
            backend.close()
    first = names[0]
    ratios = {f"{other}/{first}": round(results[other]["p50_ms"] / results[first]["p50_ms"], 2)
              for other in names[1:]}
    return {"model": str(model), "batch": batch, "warmup": warmup, "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "backends": results,
            "p50_ratios": ratios}


def _describe(backend: Any) -> Dict[str, Any]:
    details: Dict[str, Any] = {"input": list(backend.input_shape), "dtype": str(backend.input_dtype)}
    for attribute in ("providers", "target"):
        if hasattr(backend, attribute):
            details[attribute] = getattr(backend, attribute)
    if hasattr(backend, "describe"):
        details.update(backend.describe())
    return details


def run_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    return run_backend_bench(Path(args.model), args.backend.split(","), batch=args.batch,
                             iterations=args.iterations, warmup=args.warmup, threads=args.threads)


def format_report(report: Dict[str, Any]) -> List[str]:
    """One line per backend, then the ratios: what ``bench`` prints."""
    lines = []
    for name, r in report["backends"].items():
        lines.append(f"{name:12s} batch {r['input'][0]}: p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f} ms  "
                     f"p99 {r['p99_ms']:.2f} ms  {r['fps']:.1f} images/s ({r['iterations']} runs)")
    for pair, value in report["p50_ratios"].items():
        lines.append(f"p50 ratio {pair}: {value:.2f}")
    return lines
