"""``bench --pipeline --scrape-hz HZ``: what Prometheus scraping costs the pipeline.

The same pipeline as ``bench --pipeline`` (every frame of a video, looped -> preprocess ->
infer -> decode -> NMS -> a counting sink), with the metrics server of ``metrics.enabled``
serving that pipeline and an MQTT publisher (built, not connected, so the MQTT and spool
metrics are collected too). One run of the pipeline, cut into windows of ``window_s``
seconds in which a scraper is off or on, ABBA order (off/on, on/off, ...), so drift and a
busy neighbour fall on both alike; each pair gives one ratio of FPS with scraping over FPS
without. (Whole runs taking turns were tried first: on a shared machine their FPS moved by
a factor of five from one run to the next.) The scraper is another process (``python -m
agent.bench.scrape URL HZ``) on one kept-alive connection, as Prometheus would be: only the
server's side of each scrape is paid inside the agent's process, and the server counts the CPU
time it spends on them; the scraper reports its own (on a 2-core machine it competes for the
same cores, as a Prometheus on another machine would not).

Besides FPS, each window's frames per CPU second of the agent's process (all its threads):
what scraping costs a CPU-bound pipeline, much less moved by other processes than FPS is.
Also timed: one ``StageMetrics.observe`` (what every frame pays for the histograms, whether
anyone scrapes or not) against the sliding window alone that it had before.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from agent.bench.pipeline import CountingSink
from agent.capture import Camera
from agent.config.schema import AgentConfig, CameraConfig
from agent.inference.detector import DetectorSettings, build_detector
from agent.runtime.metrics import LatencyWindow, StageMetrics
from agent.runtime.pipeline import Pipeline


def observe_cost_us(repeat: int = 200000) -> Dict[str, float]:
    """Microseconds per ``StageMetrics.observe`` (window + histogram) and per window alone."""
    metrics, window = StageMetrics(), LatencyWindow()
    metrics.observe("inference", 1.0, "cam")
    observe = min(timeit.repeat(lambda: metrics.observe("inference", 42.0, "cam"), number=repeat, repeat=3))
    alone = min(timeit.repeat(lambda: window.add(42.0), number=repeat, repeat=3))
    return {"observe_us": round(observe / repeat * 1e6, 3), "window_only_us": round(alone / repeat * 1e6, 3)}


def _quartiles(values: List[float]) -> List[float]:
    ordered = sorted(values)
    return [round(ordered[len(ordered) // 4], 4), round(ordered[(3 * len(ordered)) // 4], 4)]


def run_scrape_bench(model: Path, video: Path, backend: str = "auto", threads: Optional[int] = None,
                     hz: float = 10.0, rounds: int = 10, window_s: float = 5.0) -> Dict[str, Any]:
    from agent.publish.mqtt import MqttPublisher
    from agent.runtime.prometheus import MetricsServer

    config = AgentConfig.model_validate({"cameras": [{"name": "bench", "source": str(video)}],
                                         "model": {"path": str(model)}, "spool": {"enabled": False}})
    publisher = MqttPublisher(config, "bench", ["object"])
    sink = CountingSink()
    camera = Camera(CameraConfig(name="bench", source=str(video), loop=True))  # every frame, endlessly
    settings = DetectorSettings(backend=backend, threads=threads)
    pipeline = Pipeline([camera], lambda: build_detector(model, settings), [sink])
    server = MetricsServer(lambda: pipeline, lambda: publisher, port=0).start()
    scraper = subprocess.Popen([sys.executable, "-m", "agent.bench.scrape", server.url, str(hz)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    commands = scraper.stdin
    if commands is None:
        raise RuntimeError("the scraper process has no stdin")
    windows: List[Dict[str, Any]] = []
    ratios: List[float] = []
    cpu_ratios: List[float] = []  # frames per CPU second of the agent's process, with / without
    try:
        pipeline.start()
        time.sleep(window_s)  # warm-up: caches, the first frames' queue
        for index in range(rounds):
            order = (False, True) if index % 2 == 0 else (True, False)  # ABBA
            fps: Dict[bool, float] = {}
            per_cpu: Dict[bool, float] = {}
            for scraping in order:
                commands.write("on\n" if scraping else "off\n")
                commands.flush()
                frames, scrapes, scrape_cpu = sink.frames, server.scrapes, server.scrape_cpu_s
                started, process_cpu = time.perf_counter(), time.process_time()
                time.sleep(window_s)
                elapsed, process_cpu = time.perf_counter() - started, time.process_time() - process_cpu
                done = sink.frames - frames
                windows.append({"scraping": scraping, "fps": done / elapsed, "seconds": elapsed,
                                "scrapes": server.scrapes - scrapes,
                                "scrape_cpu_s": server.scrape_cpu_s - scrape_cpu})
                fps[scraping] = done / elapsed
                per_cpu[scraping] = done / process_cpu if process_cpu > 0 else 0.0
            ratios.append(fps[True] / fps[False] if fps[False] else 0.0)
            cpu_ratios.append(per_cpu[True] / per_cpu[False] if per_cpu[False] else 0.0)
            print(f"pair {index + 1}/{rounds}: {fps[False]:.2f} fps without, {fps[True]:.2f} fps with "
                  f"scraping (ratio {ratios[-1]:.4f}; frames per CPU second {cpu_ratios[-1]:.4f})",
                  flush=True)
    finally:
        out, _ = scraper.communicate("", timeout=30)  # EOF: the scraper stops and reports
        pipeline.stop()
        server.close()
    scraped = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    on = [w for w in windows if w["scraping"]]
    on_seconds = sum(w["seconds"] for w in on)
    on_scrapes = sum(w["scrapes"] for w in on)
    on_cpu = sum(w["scrape_cpu_s"] for w in on)
    report: Dict[str, Any] = {
        "model": str(model), "video": str(video), "scrape_hz": hz, "pairs": rounds, "window_s": window_s,
        "fps_without": [round(w["fps"], 2) for w in windows if not w["scraping"]],
        "fps_with": [round(w["fps"], 2) for w in on],
        "ratios": [round(r, 4) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_mean": round(statistics.mean(ratios), 4),
        "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
        "ratio_iqr": _quartiles(ratios),
        "ratio_stdev": round(statistics.stdev(ratios), 4) if len(ratios) > 1 else 0.0,
        "cpu_ratios": [round(r, 4) for r in cpu_ratios],
        "cpu_ratio_median": round(statistics.median(cpu_ratios), 4),
        "cpu_ratio_iqr": _quartiles(cpu_ratios),
        "scrapes_per_s": round(on_scrapes / on_seconds, 2) if on_seconds else 0.0,
        "scrapes_while_off": sum(w["scrapes"] for w in windows if not w["scraping"]),  # at a switch only
        # CPU time the agent's process spent answering scrapes (collect, encode, send): per scrape,
        # and as a share of one core while scraping.
        "scrape_cpu_ms": round(1e3 * on_cpu / on_scrapes, 3) if on_scrapes else 0.0,
        "scrape_core_share": round(on_cpu / on_seconds, 5) if on_seconds else 0.0,
        "scraper": scraped,
        **observe_cost_us(),
    }
    print(f"pipeline FPS with / without scraping /metrics at {hz:g} Hz: median ratio "
          f"{report['ratio_median']} (IQR {report['ratio_iqr'][0]}-{report['ratio_iqr'][1]}, min "
          f"{report['ratio_min']}, max {report['ratio_max']}, {rounds} ABBA pairs of {window_s:g} s); "
          f"frames per CPU second {report['cpu_ratio_median']} (IQR {report['cpu_ratio_iqr'][0]}-"
          f"{report['cpu_ratio_iqr'][1]}); {report['scrapes_per_s']} scrapes/s, each "
          f"{report['scrape_cpu_ms']} ms of CPU ({100 * report['scrape_core_share']:.2f}% of one core; the "
          f"scraper's side {scraped.get('cpu_ms_per_scrape', '-')} ms); "
          f"StageMetrics.observe {report['observe_us']} us (window alone {report['window_only_us']} us)")
    return report


def _scrape_until_eof(url: str, hz: float) -> Dict[str, Any]:
    """GET ``url`` ``hz`` times a second while switched on ("on"/"off" lines on stdin) until EOF,
    on one HTTP/1.1 connection (reopened if the server closes it)."""
    done, active = threading.Event(), threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            (active.set if line.strip() == "on" else active.clear)()
        done.set()

    threading.Thread(target=read_commands, daemon=True).start()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=5)
    latencies: List[float] = []
    errors = 0
    cpu = time.process_time()
    while not done.is_set():
        if not active.wait(0.05):
            continue
        started = time.perf_counter()
        try:
            connection.request("GET", parts.path, headers={"Accept": "text/plain"})
            response = connection.getresponse()
            response.read()
            latencies.append((time.perf_counter() - started) * 1e3)
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()  # the next request opens a new connection
        done.wait(max(0.0, 1.0 / hz - (time.perf_counter() - started)))
    connection.close()
    ordered = sorted(latencies) or [0.0]
    return {"scrapes": len(latencies), "errors": errors, "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "cpu_ms_per_scrape": round(1e3 * (time.process_time() - cpu) / max(1, len(latencies)), 3)}


if __name__ == "__main__":  # the scraper process: python -m agent.bench.scrape URL HZ
    print(json.dumps(_scrape_until_eof(sys.argv[1], float(sys.argv[2]))), flush=True)
