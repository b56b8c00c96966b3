"""Prometheus metrics: histograms against prometheus_client's own, the collector's names against
the Grafana dashboard's PromQL, topic kinds, the spool's oldest message, health, the config section."""

import json
import re
from pathlib import Path
from typing import Any, Iterator, Set

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.capture import Camera
from agent.config.loader import load
from agent.config.schema import AgentConfig, CameraConfig
from agent.errors import ConfigError
from agent.inference.detector import Detector
from agent.publish.spool import Message, Spool
from agent.runtime.health import check_health
from agent.runtime.metrics import BUCKETS_MS, LatencyHistogram, StageMetrics
from agent.runtime.pipeline import Pipeline
from agent.runtime.prometheus import build_registry, histogram_buckets

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
# Grafana's variables, replaced by what they stand for before the PromQL is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "${__range}": "1h"}


def exported_names(exposition: str) -> Set[str]:
    """Every series name an exposition defines, empty families included (their HELP/TYPE)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count")}
    names: Set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_expressions(dashboard: Any) -> Iterator[str]:
    """Every PromQL expression in a dashboard: panel targets and query variables."""
    if isinstance(dashboard, dict):
        for key, value in dashboard.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from dashboard_expressions(value)
    elif isinstance(dashboard, list):
        for item in dashboard:
            yield from dashboard_expressions(item)


def promql_metric_names(expression: str) -> Set[str]:
    """Metric names a PromQL expression selects, read from the real parser's syntax tree.

    ``label_values(METRIC, label)`` (a Grafana variable query) is reduced to its METRIC first.
    """
    import promql_parser

    found = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expression, re.S)
    if found:
        expression = found.group(1)
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    expression = re.sub(r"\$\{?\w+\}?", ".*", expression)  # $camera, ${instance} inside =~ matchers
    names: Set[str] = set()

    def walk(node: Any) -> None:
        if type(node).__name__ == "VectorSelector":
            if node.name:
                names.add(node.name)
            for matcher in getattr(node.matchers, "matchers", []) or []:
                if matcher.name == "__name__":
                    names.add(matcher.value)
            return
        for attribute in ("expr", "lhs", "rhs", "param", "vector_selector"):
            child = getattr(node, attribute, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expression))
    return names


def never_loaded() -> Detector:
    raise RuntimeError("these pipelines are never started")


def idle_pipeline() -> Pipeline:
    """A real pipeline over one camera, not started: its model is still "loading"."""
    return Pipeline([Camera(CameraConfig(name="front", source="rtsp://127.0.0.1:9/front"))], never_loaded, [])


def collector_exposition() -> str:
    """What the collector exports for an agent with one camera and an MQTT publisher, not started."""
    from agent.publish.mqtt import MqttPublisher

    config = AgentConfig.model_validate({"cameras": [{"name": "front", "source": "clip.mp4"}],
                                         "model": {"path": "model.onnx"}, "spool": {"enabled": False}})
    pipeline = idle_pipeline()
    publisher = MqttPublisher(config, "model", ["object"])
    registry = build_registry(lambda: pipeline, lambda: publisher, lambda: check_health(pipeline, 10.0))
    return generate_latest(registry).decode()


# -- histograms ----------------------------------------------------------------------------------

def test_histogram_buckets_match_prometheus_client_for_the_same_observations() -> None:
    values_ms = [0.2, 1.0, 1.0001, 2.5, 7.0, 42.0, 99.9, 100.0, 250.0, 999.0, 12000.0, 30.0, 30.0]
    ours = LatencyHistogram()
    registry = CollectorRegistry()
    reference = Histogram("ref_seconds", "reference", buckets=[b / 1000.0 for b in BUCKETS_MS],
                          registry=registry)
    for value in values_ms:
        ours.add(value)
        reference.observe(value / 1000.0)
    expected = {float(s.labels["le"]): s.value for s in registry.collect().__next__().samples
                if s.name == "ref_seconds_bucket"}
    snapshot = ours.snapshot()
    assert {float(le): count for le, count in histogram_buckets(snapshot)} == expected
    assert snapshot.count == len(values_ms)
    assert snapshot.sum_ms == pytest.approx(sum(values_ms))


def test_stage_metrics_keep_a_histogram_per_camera_and_one_window_per_stage() -> None:
    metrics = StageMetrics()
    metrics.observe("capture_to_publish", 10.0, "a")
    metrics.observe("capture_to_publish", 20.0, "a")
    metrics.observe("capture_to_publish", 40.0, "b")
    metrics.observe("inference", 5.0)
    histograms = metrics.histograms()
    assert {key: h.count for key, h in histograms.items()} == \
        {("capture_to_publish", "a"): 2, ("capture_to_publish", "b"): 1, ("inference", ""): 1}
    assert metrics.snapshot()["latency_ms"]["capture_to_publish"]["count"] == 3  # the stats payload's window


# -- the dashboard against the collector -------------------------------------------------------------

def test_every_dashboard_expression_parses_and_names_an_exported_metric() -> None:
    exported = exported_names(collector_exposition())
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = list(dashboard_expressions(dashboard))
    assert len(expressions) >= 20
    used: Set[str] = set()
    for expression in expressions:
        names = promql_metric_names(expression)
        assert names, f"no metric in {expression!r}"
        assert names <= exported, f"{expression!r} names {sorted(names - exported)}, not exported"
        used |= names
    # The list: each figure is on the dashboard.
    for name in ("detection_agent_frames_captured_total", "detection_agent_frames_processed_total",
                 "detection_agent_frames_dropped_total", "detection_agent_camera_reconnects_total",
                 "detection_agent_inference_latency_seconds_bucket",
                 "detection_agent_end_to_end_latency_seconds_bucket",
                 "detection_agent_mqtt_messages_published_total", "detection_agent_spool_messages",
                 "detection_agent_spool_oldest_message_age_seconds", "detection_agent_mqtt_connected",
                 "detection_agent_build_info", "detection_agent_events_total"):
        assert name in used, name


def test_the_alert_rules_in_the_deployment_guide_name_exported_metrics() -> None:
    exported = exported_names(collector_exposition()) | {"up"}  # up: Prometheus' own, per target
    guide = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    rules = re.findall(r"^\s*expr: (.+)$", guide, re.M)
    assert len(rules) >= 4
    for expression in rules:
        names = promql_metric_names(expression)
        assert names and names <= exported, f"{expression!r} names {sorted(names - exported)}, not exported"


def test_the_promql_reader_finds_names_and_rejects_broken_expressions() -> None:
    assert promql_metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{camera=~"$camera"}'
                               '[$__rate_interval]))) / on() group_left b') == {"a_bucket", "b"}
    assert promql_metric_names("label_values(detection_agent_build_info, instance)") == \
        {"detection_agent_build_info"}
    assert promql_metric_names('{__name__="x_total"}') == {"x_total"}
    with pytest.raises(Exception):  # noqa: B017 (the binding raises its own error type)
        promql_metric_names("sum(rate(x[5m])")


def test_names_follow_prometheus_conventions() -> None:
    for family in text_string_to_metric_families(collector_exposition()):
        if family.name.startswith(("process_", "python_")):
            continue  # prometheus_client's standard collectors
        assert family.name.startswith("detection_agent_"), family.name
        assert not re.search(r"_(ms|milliseconds|percent|kb|mb)(_|$)", family.name), family.name
        assert family.type in ("counter", "gauge", "histogram"), family.name
        for sample in family.samples:
            assert not {"track", "track_id", "frame", "id"} & set(sample.labels), sample


# -- MQTT figures -------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic, kind", [
    ("detection-agent/box/front/detections", "detections"),
    ("detection-agent/box/front/events", "events"),
    ("detection-agent/box/front/counts", "counts"),
    ("detection-agent/box/front/snapshot", "snapshot"),
    ("detection-agent/box/stats", "stats"),
    ("detection-agent/box/status", "status"),
    ("detection-agent/box/front/status", "status"),
    ("detection-agent/box/cmd/result", "command_result"),
    ("replies/for/me", "other"),
])
def test_topic_kinds(topic: str, kind: str) -> None:
    from agent.publish.sender_stats import topic_kind

    assert topic_kind(topic) == kind


@pytest.mark.parametrize("on_disk", [True, False])
def test_spool_reports_when_its_oldest_message_was_created(tmp_path: Path, on_disk: bool) -> None:
    spool = Spool(str(tmp_path / "spool.db") if on_disk else None, max_bytes=10**6, max_messages=100,
                  max_age=3600.0, memory_max_messages=100)
    try:
        assert spool.oldest_created() is None
        messages = [Message(f"t/{i}", b"x", created=1000.0 + i) for i in range(3)]
        spool.add(messages)
        assert spool.oldest_created() == 1000.0
        spool.remove(messages[:2])  # acknowledged
        assert spool.oldest_created() == 1002.0
        spool.remove(messages[2:])
        assert spool.oldest_created() is None
    finally:
        spool.close()


# -- health and config ------------------------------------------------------------------------------

def test_health_before_the_pipeline_exists_and_while_the_model_loads() -> None:
    assert check_health(None, 10.0) == (False, "starting: the pipeline is not built yet", {})
    pipeline = idle_pipeline()
    health = check_health(pipeline, 10.0)
    assert not health.ok and health.reason == "starting: the model is loading"
    assert health.as_json() == {"status": "unhealthy", "reason": "starting: the model is loading"}


MINIMAL = "cameras:\n  - name: front\n    source: /dev/video0\nmodel:\n  path: model.onnx\n"


def test_metrics_section_defaults_and_durations(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL)
    metrics = load(path, environ={}).metrics
    assert (metrics.enabled, metrics.host, metrics.port, metrics.stall_timeout) == \
        (False, "127.0.0.1", 9108, 10.0)
    path.write_text(MINIMAL + "metrics:\n  enabled: true\n  port: 0\n  stall_timeout: 2m\n")
    metrics = load(path, environ={}).metrics
    assert (metrics.enabled, metrics.port, metrics.stall_timeout) == (True, 0, 120.0)
    shipped = load(REPO / "configs" / "agent.yaml", environ={}).metrics
    assert (shipped.enabled, shipped.port, shipped.stall_timeout) == (False, 9108, 10.0)


def test_metrics_section_errors_name_the_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL + "metrics:\n  port: 70000\n  stall_timeout: soon\n  enable: true\n")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    problems = [line.replace(str(tmp_path) + "/", "") for line in info.value.problems]
    assert any(p.startswith("agent.yaml:7: metrics.port:") for p in problems), problems
    assert any(p.startswith("agent.yaml:8: metrics.stall_timeout:") and "duration" in p
               for p in problems), problems
    assert any(p.startswith("agent.yaml:9: metrics.enable: unknown key") for p in problems), problems
