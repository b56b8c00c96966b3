"""``bench --pipeline --scrape-hz HZ``: what Prometheus scraping costs the pipeline.

The same pipeline as ``bench --pipeline`` (every frame of a video -> preprocess -> infer ->
decode -> NMS -> a counting sink), with the metrics server of ``metrics.enabled`` serving
that pipeline and an MQTT publisher (built, not connected, so the MQTT and spool metrics
are collected too). Runs without and with a scraper take turns, ABBA order (off/on,
on/off, ...), so drift and a busy neighbour fall on both alike; each pair gives one ratio
of FPS with scraping over FPS without. The scraper is another process (``python -m
agent.bench.scrape URL HZ``), as Prometheus would be: only the server's side of each scrape
is paid inside the agent's process.

Also timed: one ``StageMetrics.observe`` (what every frame pays for the histograms, whether
anyone scrapes or not) against the sliding window alone that it had before.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.bench.pipeline import CountingSink
from agent.capture import Camera
from agent.config.schema import AgentConfig, CameraConfig
from agent.inference.detector import DetectorSettings, build_detector
from agent.runtime.metrics import LatencyWindow, StageMetrics
from agent.runtime.pipeline import Pipeline


def _run_once(model: Path, video: Path, backend: str, threads: Optional[int], hz: float) -> Dict[str, Any]:
    from agent.publish.mqtt import MqttPublisher
    from agent.runtime.prometheus import MetricsServer

    config = AgentConfig.model_validate({"cameras": [{"name": "bench", "source": str(video)}],
                                         "model": {"path": str(model)}, "spool": {"enabled": False}})
    publisher = MqttPublisher(config, "bench", ["object"])
    sink = CountingSink()
    camera = Camera(CameraConfig(name="bench", source=str(video)))
    settings = DetectorSettings(backend=backend, threads=threads)
    pipeline = Pipeline([camera], lambda: build_detector(model, settings), [sink])
    server = MetricsServer(lambda: pipeline, lambda: publisher, port=0).start()
    scraper: Optional[subprocess.Popen] = None
    try:
        if hz > 0:
            scraper = subprocess.Popen([sys.executable, "-m", "agent.bench.scrape", server.url, str(hz)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pipeline.start()
        started, scrapes_before = time.perf_counter(), server.scrapes
        pipeline.finished.wait(3600)
        elapsed = time.perf_counter() - started
        frames, scrapes = sink.frames, server.scrapes - scrapes_before
    finally:
        pipeline.stop()
        scraped: Dict[str, Any] = {}
        if scraper is not None:
            out, _ = scraper.communicate("", timeout=30)  # EOF on its stdin: it stops and reports
            scraped = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        server.close()
    return {"fps": frames / elapsed, "frames": frames, "seconds": round(elapsed, 2),
            "scrapes": scrapes, **({"scraper": scraped} if scraped else {})}


def observe_cost_us(repeat: int = 200000) -> Dict[str, float]:
    """Microseconds per ``StageMetrics.observe`` (window + histogram) and per window alone."""
    metrics, window = StageMetrics(), LatencyWindow()
    metrics.observe("inference", 1.0, "cam")
    observe = min(timeit.repeat(lambda: metrics.observe("inference", 42.0, "cam"), number=repeat, repeat=3))
    alone = min(timeit.repeat(lambda: window.add(42.0), number=repeat, repeat=3))
    return {"observe_us": round(observe / repeat * 1e6, 3), "window_only_us": round(alone / repeat * 1e6, 3)}


def run_scrape_bench(model: Path, video: Path, backend: str = "auto", threads: Optional[int] = None,
                     hz: float = 10.0, rounds: int = 4) -> Dict[str, Any]:
    runs: List[Dict[str, Any]] = []
    ratios: List[float] = []
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        pair: Dict[bool, float] = {}
        for scraping in order:
            result = _run_once(model, video, backend, threads, hz if scraping else 0.0)
            result["scraping"] = scraping
            runs.append(result)
            pair[scraping] = result["fps"]
            print(f"round {index + 1}/{rounds}, {'with' if scraping else 'without'} scraping: "
                  f"{result['fps']:.2f} fps ({result['scrapes']} scrapes)", flush=True)
        ratios.append(pair[True] / pair[False])
    with_runs = [r for r in runs if r["scraping"]]
    report: Dict[str, Any] = {
        "model": str(model), "video": str(video), "scrape_hz": hz, "rounds": rounds,
        "fps_without": [round(r["fps"], 2) for r in runs if not r["scraping"]],
        "fps_with": [round(r["fps"], 2) for r in with_runs],
        "ratios": [round(r, 4) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_mean": round(statistics.mean(ratios), 4),
        "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
        "ratio_stdev": round(statistics.stdev(ratios), 4) if len(ratios) > 1 else 0.0,
        "scrapes_per_s": round(statistics.mean(r["scrapes"] / r["seconds"] for r in with_runs), 2),
        "scrape_ms": {"p50": statistics.median(r.get("scraper", {}).get("p50_ms", 0.0) for r in with_runs),
                      "p99": max(r.get("scraper", {}).get("p99_ms", 0.0) for r in with_runs)},
        **observe_cost_us(),
    }
    print(f"pipeline FPS with / without scraping /metrics at {hz:g} Hz: median ratio "
          f"{report['ratio_median']} "
          f"(mean {report['ratio_mean']}, min {report['ratio_min']}, max {report['ratio_max']}, stdev "
          f"{report['ratio_stdev']}, {rounds} ABBA pairs); {report['scrapes_per_s']} scrapes/s, scrape p50 "
          f"{report['scrape_ms']['p50']} ms; StageMetrics.observe {report['observe_us']} us "
          f"(window alone {report['window_only_us']} us)")
    return report


def _scrape_until_eof(url: str, hz: float) -> Dict[str, Any]:
    """GET ``url`` ``hz`` times a second until stdin closes; the scraper's own timings."""
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    latencies: List[float] = []
    errors = 0
    next_at = time.monotonic()
    while not done.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            latencies.append((time.perf_counter() - started) * 1e3)
        except OSError:
            errors += 1
        next_at += 1.0 / hz
        done.wait(max(0.0, next_at - time.monotonic()))
    ordered = sorted(latencies) or [0.0]
    return {"scrapes": len(latencies), "errors": errors, "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}


if __name__ == "__main__":  # the scraper process: python -m agent.bench.scrape URL HZ
    print(json.dumps(_scrape_until_eof(sys.argv[1], float(sys.argv[2]))), flush=True)
