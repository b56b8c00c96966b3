"""Prometheus metrics and a health check over HTTP (the ``metrics:`` config section).

``MetricsServer`` serves, on 127.0.0.1:9108 by default:

- ``/metrics``  the Prometheus exposition (text, or OpenMetrics when the scraper asks for it);
- ``/healthz``  200 while the inference loop goes round, 503 with the reason otherwise
  (JSON: ``status``, ``reason`` and a few figures).

Nothing here runs per frame. ``AgentCollector`` reads the counters the agent keeps anyway
(each camera's, the pipeline's ``StageMetrics`` with its latency histograms, the MQTT
publisher's and its spool's) when Prometheus scrapes, through callables, so it sees the
pipeline and the publisher the daemon builds after the server has started (and none
while the model is still loading). docs/grafana-dashboard.json is built on these names,
and a test holds the two together.

Naming: ``detection_agent_`` prefix, base units (seconds, bytes), ``_total`` for counters.
Labels are bounded sets only (camera names, stages, reasons, topic kinds): never a track
id, a frame number or an error text.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from agent.publish.api import Publisher
from agent.runtime.health import Health, agent_version, check_health
from agent.runtime.http import HttpServer, handler_class, is_loopback, serve, url_of
from agent.runtime.metrics import HistogramSnapshot, gpu_load_percent, thermal_zones
from agent.runtime.pipeline import Pipeline

log = logging.getLogger(__name__)

PREFIX = "detection_agent_"
# StageMetrics stage -> histogram name and help. capture_to_publish is observed once per
# processed frame, per camera: its count is also each camera's processed-frames counter.
# The other stages (preprocess, postprocess, tracking) have their p50/p99 in the stats message;
# here they would double the lines of every scrape.
STAGE_HISTOGRAMS = {
    "inference": ("inference_latency_seconds", "Network inference time per batch (backend.infer)."),
    "capture_to_publish": ("end_to_end_latency_seconds",
                           "From frame capture until its result was handed to every sink (MQTT queue)."),
}
END_TO_END = "capture_to_publish"
CAMERA_STATES = ("starting", "online", "reconnecting", "failed", "finished", "stopped")
# Pipeline counters (StageMetrics.count names) exported as they are, with their help.
PIPELINE_COUNTERS = {
    "frames_paused": ("frames_paused", "Frames skipped while the agent was paused (pause command)."),
    "boxes_nonfinite": ("boxes_nonfinite", "Boxes with NaN or infinite coordinates the decoder dropped."),
    "detections_outside_zones": ("detections_outside_zones",
                                 "Detections dropped because they were in none of their camera's zones."),
    "publish_queue_waits": ("pipeline_queue_waits",
                            "Times the inference thread waited for room in the queue to the publish thread."),
    "results_dropped_at_stop": ("results_dropped_at_stop",
                                "Inferred batches not handed to the sinks because the agent was stopping."),
}
SINK_ERRORS = "sink_errors_"
MESSAGE_KINDS = ("detections", "events", "counts", "snapshot", "stats", "status", "command_result", "other")

PipelineSource = Callable[[], Optional[Pipeline]]
PublisherSource = Callable[[], Optional[Publisher]]  # an agent.publish.mqtt.MqttPublisher, when MQTT is on


def _counter(name: str, doc: str, labels: Optional[List[str]] = None) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: Optional[List[str]] = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def histogram_buckets(snapshot: HistogramSnapshot) -> List[Tuple[str, float]]:
    """Cumulative (le, count) pairs in seconds, +Inf last, from per-bucket counts in ms."""
    buckets: List[Tuple[str, float]] = []
    running = 0
    for bound_ms, count in zip(snapshot.bounds_ms, snapshot.counts):
        running += count
        buckets.append((repr(bound_ms / 1000.0), float(running)))
    buckets.append(("+Inf", float(running + snapshot.counts[-1])))
    return buckets


class AgentCollector:
    """Reads the agent's counters at scrape time; see the module docstring for what and why."""

    def __init__(self, pipeline: PipelineSource, publisher: PublisherSource,
                 health: Callable[[], Health]) -> None:
        self._pipeline = pipeline
        self._publisher = publisher
        self._health = health

    def describe(self) -> List[Metric]:
        return []  # names vary with the agent's state: no registration-time checks

    def collect(self) -> Iterator[Metric]:
        health = self._health()
        healthy = _gauge("healthy", "1 while /healthz answers 200 (the inference loop goes round).")
        healthy.add_metric([], 1.0 if health.ok else 0.0)
        yield healthy
        pipeline = self._pipeline()
        if pipeline is not None:
            yield from self._pipeline_metrics(pipeline)
        publisher = self._publisher()
        if publisher is not None:
            yield from self._publisher_metrics(publisher.counters())
        yield from self._system_metrics()

    # -- the pipeline and its cameras -------------------------------------------------------------

    def _pipeline_metrics(self, pipeline: Pipeline) -> Iterator[Metric]:
        detector = pipeline.detector
        info = _gauge("build_info", "The agent's version, inference backend and model (value 1; no sample "
                      "while the model loads).", ["version", "backend", "model"])
        if detector is not None:
            info.add_metric([agent_version(), str(getattr(detector.backend, "name", "unknown")),
                             str(detector.info.name)], 1.0)
        yield info
        histograms = pipeline.metrics.histograms()
        yield from self._camera_metrics(pipeline, histograms)
        for stage, (name, doc) in STAGE_HISTOGRAMS.items():
            keys = sorted(key for key in histograms if key[0] == stage)
            per_camera = stage == END_TO_END
            family = HistogramMetricFamily(PREFIX + name, doc, labels=["camera"] if per_camera else None)
            for key in keys:
                snapshot = histograms[key]
                family.add_metric([key[1]] if per_camera else [], histogram_buckets(snapshot),
                                  snapshot.sum_ms / 1000.0)
            yield family
        counters = pipeline.metrics.counters()
        for counter_key, (name, doc) in PIPELINE_COUNTERS.items():  # not ``key``: typed by the loop above
            counter = _counter(name, doc)
            counter.add_metric([], float(counters.get(counter_key, 0)))
            yield counter
        sink_errors = _counter("sink_errors", "Results a sink failed to handle (logged), by sink.", ["sink"])
        for counter_key, value in sorted(counters.items()):
            if counter_key.startswith(SINK_ERRORS):
                sink_errors.add_metric([counter_key[len(SINK_ERRORS):]], float(value))
        yield sink_errors
        events = _counter("events", "Tracking events by camera and type (track_start, track_end, zone_enter, "
                          "zone_exit, line_cross...); none while tracking is off.", ["camera", "type"])
        for (camera, kind), value in sorted(pipeline.metrics.counts_by("events").items()):
            events.add_metric([camera, kind], float(value))
        yield events
        age = _gauge("inference_heartbeat_age_seconds", "Seconds since the inference loop last went round.")
        age.add_metric([], max(0.0, time.monotonic() - pipeline.heartbeat))
        yield age
        paused = _gauge("paused", "1 while inference is paused by a command.")
        paused.add_metric([], 1.0 if pipeline.paused else 0.0)
        yield paused

    def _camera_metrics(self, pipeline: Pipeline, histograms: Dict[Tuple[str, str], HistogramSnapshot]
                        ) -> Iterator[Metric]:
        captured = _counter("frames_captured", "Frames read from the camera's source.", ["camera"])
        processed = _counter("frames_processed", "Frames inferred and handed to the sinks.", ["camera"])
        dropped = _counter("frames_dropped", "Frames read but never inferred, by reason: superseded "
                           "(a newer frame replaced it before inference was free), blank (all black).",
                           ["camera", "reason"])
        reconnects = _counter("camera_reconnects", "Times the camera was closed and opened again.",
                              ["camera"])
        up = _gauge("camera_up", "1 while the camera delivers frames (state online).", ["camera"])
        state = _gauge("camera_state", "1 for the camera's current state, 0 for the others.",
                       ["camera", "state"])
        for camera in sorted(pipeline.cameras, key=lambda c: c.name):
            stats = camera.stats()
            name = camera.name
            captured.add_metric([name], float(stats.frames))
            done = histograms.get((END_TO_END, name))
            processed.add_metric([name], float(done.count if done is not None else 0))
            dropped.add_metric([name, "superseded"], float(stats.dropped))
            dropped.add_metric([name, "blank"], float(stats.blank))
            reconnects.add_metric([name], float(stats.reconnects))
            current = stats.state.split(":", 1)[0].strip()  # "failed: reason" -> failed (no free text)
            up.add_metric([name], 1.0 if current == "online" else 0.0)
            for known in CAMERA_STATES:
                state.add_metric([name, known], 1.0 if current == known else 0.0)
        yield from (captured, processed, dropped, reconnects, up, state)

    # -- MQTT and the spool -----------------------------------------------------------------------

    @staticmethod
    def _publisher_metrics(counters: Dict[str, Any]) -> Iterator[Metric]:
        def number(key: str) -> float:
            value = counters.get(key, 0)
            return float(value) if isinstance(value, (int, float)) else 0.0

        connected = _gauge("mqtt_connected", "1 while connected to the broker (CONNACK received).")
        connected.add_metric([], 1.0 if counters.get("connected") else 0.0)
        yield connected
        published = _counter("mqtt_messages_published", "Messages delivered, by topic kind: acknowledged by "
                             "the broker (QoS 1) or written to the socket (QoS 0).", ["kind"])
        by_kind = dict(counters.get("published_by") or {})
        for kind in sorted(set(MESSAGE_KINDS) | set(by_kind)):
            published.add_metric([kind], float(by_kind.get(kind, 0)))
        yield published
        dropped = _counter("mqtt_messages_dropped", "Messages given up, by reason (queue full, spool "
                           "bounds, QoS 0 while offline, refused by the broker...).", ["reason"])
        for reason, value in sorted(dict(counters.get("dropped_by") or {}).items()):
            dropped.add_metric([str(reason)], float(value))
        yield dropped
        for key, name, doc in (
                ("sent", "mqtt_messages_sent", "PUBLISH packets written, resends included."),
                ("replayed", "mqtt_messages_replayed",
                 "Messages sent again from the spool after a reconnect or a restart."),
                ("reconnects", "mqtt_reconnects", "Successful connections after the first."),
                ("internal_errors", "mqtt_internal_errors", "Errors inside the MQTT sender (bugs).")):
            counter = _counter(name, doc)
            counter.add_metric([], number(key))
            yield counter
        for key, name, doc in (
                ("queue", "mqtt_queue_messages", "Messages queued for the sender, not in the spool yet."),
                ("inflight", "mqtt_inflight_messages", "Messages sent and not acknowledged yet."),
                ("backlog", "spool_messages", "Messages waiting in the spool (in flight included)."),
                ("backlog_bytes", "spool_bytes", "Payload bytes waiting in the spool."),
                ("backlog_age_s", "spool_oldest_message_age_seconds",
                 "Age of the oldest message in the spool (0 when empty; looked up once a second).")):
            gauge = _gauge(name, doc)
            gauge.add_metric([], number(key))
            yield gauge
        on_disk = _gauge("spool_on_disk", "1 while the spool is on disk, 0 when it fell back to memory.")
        on_disk.add_metric([], 1.0 if counters.get("spool") == "disk" else 0.0)
        yield on_disk

    # -- the machine ------------------------------------------------------------------------------

    @staticmethod
    def _system_metrics() -> Iterator[Metric]:
        # Both families are always there, without samples where the machine has no such files.
        temperatures = _gauge("temperature_celsius", "Thermal zone temperature (a Jetson's CPU-therm, "
                              "GPU-therm...).", ["zone"])
        for zone, celsius in sorted(thermal_zones().items()):
            temperatures.add_metric([zone], celsius)
        yield temperatures
        gpu = gpu_load_percent()
        busy = _gauge("gpu_busy_ratio", "GPU load (a Jetson's gpu.0/load), 0 to 1.")
        if gpu is not None:
            busy.add_metric([], gpu / 100.0)
        yield busy


def build_registry(pipeline: PipelineSource, publisher: PublisherSource,
                   health: Callable[[], Health]) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): the agent's collector plus
    the standard process_* (CPU, memory, file descriptors) and python_info metrics."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(pipeline, publisher, health))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP, each request in its own daemon thread."""

    def __init__(self, pipeline: PipelineSource, publisher: PublisherSource, host: str = "127.0.0.1",
                 port: int = 9108, stall_timeout: float = 10.0) -> None:
        self.host = host
        self.stall_timeout = float(stall_timeout)
        self._pipeline = pipeline
        self._requested_port = int(port)
        self.registry = build_registry(pipeline, publisher, self.health)
        self.scrapes = 0
        self.scrape_cpu_s = 0.0  # CPU time of the threads that answered /metrics (bench --scrape-hz)
        self._lock = threading.Lock()
        self._server: Optional[HttpServer] = None
        self._thread: Optional[threading.Thread] = None

    def health(self) -> Health:
        return check_health(self._pipeline(), self.stall_timeout)

    @property
    def port(self) -> int:
        """The bound port once started (the one picked when ``port`` was 0), else the one asked for."""
        return int(self._server.server_address[1]) if self._server is not None else self._requested_port

    @property
    def url(self) -> str:
        return url_of(self.host, self.port, "/metrics")

    def start(self) -> MetricsServer:
        """Bind and serve; ``ConfigError`` naming ``metrics:`` and the address if it cannot be bound."""
        if self._server is None:
            # Keep-alive, as Prometheus scrapes: one connection and one thread for many scrapes,
            # not a new thread and socket each time; an idle connection is closed after a minute.
            handler = handler_class("metrics", self._route, timeout=60, keep_alive=True)
            self._server, self._thread = serve(self.host, self._requested_port, handler, "metrics")
            log.info("metrics at %s, health at %s", self.url, url_of(self.host, self.port, "/healthz"))
            if not is_loopback(self.host):
                log.info("metrics.host is %s: anyone who can reach port %d reads the metrics (counts and "
                         "timings, no pictures)", self.host, self.port)
        return self

    def close(self) -> None:
        """Stop serving; safe to call more than once."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    def _route(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path.rstrip("/") or "/"
        if path == "/metrics":
            started = time.thread_time()
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            try:
                body = encoder(self.registry)
            except Exception:  # a collector bug: this scrape fails, the agent and the server go on
                log.exception("collecting the metrics failed")
                _send(request, 500, "text/plain; charset=utf-8",
                      b"collecting the metrics failed (see the log)\n")
                return
            _send(request, 200, content_type, body)
            with self._lock:  # one thread per request: scrapes may overlap
                self.scrapes += 1
                self.scrape_cpu_s += time.thread_time() - started
        elif path == "/healthz":
            health = self.health()
            _send(request, 200 if health.ok else 503, "application/json",
                  (json.dumps(health.as_json()) + "\n").encode())
        elif path == "/":
            _send(request, 200, "text/plain; charset=utf-8",
                  b"detection-agent: /metrics (Prometheus), /healthz (200 while inference runs)\n")
        else:
            _send(request, 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")


def _send(request: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    request.wfile.write(body)


__all__ = ["AgentCollector", "MetricsServer", "build_registry", "histogram_buckets"]
