"""Prometheus /metrics and /healthz on a real agent: `detection-agent run` with a real broker and
clip, scraped over HTTP and parsed with prometheus_client's parser; and a real pipeline whose
inference is held (a backend hung in a driver call, which cannot happen for real on a CPU)."""

import json
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from mosquitto import free_port, wait
from prometheus_client.parser import text_string_to_metric_families
from test_run import MODEL, start_agent, write_config

from agent.capture import Camera
from agent.config.schema import CameraConfig
from agent.datasets.video import make_video
from agent.inference.detector import DetectorSettings, build_detector
from agent.runtime.pipeline import Pipeline
from agent.runtime.prometheus import MetricsServer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))  # the dashboard's PromQL reader
from test_prometheus import dashboard_expressions, exported_names, promql_metric_names  # noqa: E402

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def get(url: str) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def health(base: str) -> Tuple[int, Dict[str, object]]:
    status, body = get(base + "/healthz")
    return status, json.loads(body)


def scrape(base: str) -> Tuple[str, Samples]:
    status, body = get(base + "/metrics")
    assert status == 200, body
    text = body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def labels_of(samples: Samples, name: str) -> List[Dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples if sample == name]


@pytest.fixture(scope="module")
def paced_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of video played at its own rate (realtime): the agent runs long enough to be scraped."""
    path = tmp_path_factory.mktemp("paced") / "clip.mp4"
    make_video(path, frames=150, fps=15, seed=4, width=320, height=240)
    return path


def test_run_serves_metrics_and_healthz_until_its_input_ends(broker, tmp_path: Path,
                                                              paced_clip: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, broker, paced_clip, realtime=True)
    agent = start_agent(config, "--set", "metrics.enabled=true", "--set", f"metrics.port={port}",
                        "--set", "metrics.stall_timeout=2", "--set", "mqtt.drain_timeout=4",
                        "--set", "tracking.enabled=true", "--set", "tracking.update_interval_s=0.2")
    try:
        codes: List[Tuple[int, Dict[str, object]]] = []

        def healthy() -> bool:
            try:
                codes.append(health(base))
            except OSError:  # not listening yet
                return False
            return codes[-1][0] == 200

        wait(healthy, 60, "/healthz 200", interval=0.1)
        before = codes[:-1]  # while the model loaded, if the server was that quick
        assert all(code == 503 and str(body["reason"]).startswith("starting") for code, body in before), codes
        assert codes[-1][1]["status"] == "ok" and codes[-1][1]["reason"] == "the inference loop is running"
        _, first = scrape(base)
        def moved(now: Samples) -> bool:
            # 5 more frames, and a track confirmed and updated since (min_hits frames, then
            # update_interval_s): the model's speed on a busy machine decides how long that takes.
            return (value(now, "detection_agent_frames_processed_total", camera="cam")
                    >= value(first, "detection_agent_frames_processed_total", camera="cam") + 5
                    and value(now, "detection_agent_events_total", camera="cam", type="track_update")
                    > value(first, "detection_agent_events_total", camera="cam", type="track_update"))

        wait(lambda: moved(scrape(base)[1]), 30, "5 more frames and a track_update")
        text, second = scrape(base)

        # Counters move between two scrapes, and agree with each other.
        for name, labels in (("detection_agent_frames_captured_total", {"camera": "cam"}),
                             ("detection_agent_frames_processed_total", {"camera": "cam"}),
                             ("detection_agent_inference_latency_seconds_count", {}),
                             ("detection_agent_end_to_end_latency_seconds_count", {"camera": "cam"}),
                             ("detection_agent_mqtt_messages_published_total", {"kind": "detections"}),
                             ("detection_agent_events_total", {"camera": "cam", "type": "track_update"})):
            assert value(second, name, **labels) > value(first, name, **labels), name
        processed = value(second, "detection_agent_frames_processed_total", camera="cam")
        assert value(second, "detection_agent_frames_captured_total", camera="cam") >= processed
        assert value(second, "detection_agent_end_to_end_latency_seconds_count", camera="cam") == processed
        assert value(second, "detection_agent_end_to_end_latency_seconds_bucket", camera="cam", le="+Inf") \
            == processed
        assert 0 < value(second, "detection_agent_inference_latency_seconds_sum") < 60
        assert value(second, "detection_agent_mqtt_messages_published_total", kind="status") >= 1  # online
        assert value(second, "detection_agent_events_total", camera="cam", type="track_start") >= 1
        published = "detection_agent_mqtt_messages_published_total"
        wait(lambda: value(scrape(base)[1], published, kind="events") >= 1, 10, "an events message acked")
        assert value(second, "detection_agent_mqtt_connected") == 1
        assert value(second, "detection_agent_camera_up", camera="cam") == 1
        assert value(second, "detection_agent_camera_state", camera="cam", state="online") == 1
        assert value(second, "detection_agent_healthy") == 1
        [build] = labels_of(second, "detection_agent_build_info")
        assert (build["backend"], build["model"]) == ("onnxruntime", MODEL.stem) and build["version"]
        assert value(second, "process_resident_memory_bytes") > 10e6
        # The dashboard names only metrics this agent exports.
        exported = exported_names(text)
        dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
        for expression in dashboard_expressions(dashboard):
            assert promql_metric_names(expression) <= exported, expression

        # The broker goes away: disconnected, the spool fills and ages.
        broker.kill()
        wait(lambda: value(scrape(base)[1], "detection_agent_mqtt_connected") == 0, 20, "mqtt_connected 0")
        wait(lambda: value(scrape(base)[1], "detection_agent_spool_oldest_message_age_seconds") >= 1.0, 20,
             "a spooled message at least 1 s old")
        _, offline = scrape(base)
        assert value(offline, "detection_agent_spool_messages") > 0
        assert value(offline, "detection_agent_spool_bytes") > 0
        assert value(offline, "detection_agent_spool_on_disk") == 1

        # The clip ends: the pipeline stops while the agent drains (the broker is still away).
        wait(lambda: health(base)[0] == 503, 60, "/healthz 503 once the input ended", interval=0.1)
        status, body = health(base)
        assert status == 503 and body["status"] == "unhealthy"
        assert body["reason"] == "the input ended: no more frames will be processed", body
        assert value(scrape(base)[1], "detection_agent_healthy") == 0
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 4, err  # what was spooled is still undelivered: EXIT_UNDELIVERED
    assert f"metrics at http://127.0.0.1:{port}/metrics" in err
    with pytest.raises(OSError):  # the server is gone with the agent
        get(base + "/healthz")


def test_run_with_the_metrics_port_taken_is_a_config_error(broker, tmp_path: Path, paced_clip: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        agent = start_agent(write_config(tmp_path, broker, paced_clip), "--set", "metrics.enabled=true",
                            "--set", f"metrics.port={port}")
        _, err = agent.communicate(timeout=60)
    assert agent.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith(f"error: metrics: cannot listen on 127.0.0.1:{port}:"), err


@pytest.fixture(scope="module")
def looped_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("looped") / "clip.mp4"
    make_video(path, frames=30, fps=15, seed=4, width=320, height=240)
    return path


def test_healthz_says_503_while_inference_is_stalled_and_200_once_it_goes_on(looped_clip: Path) -> None:
    gate = threading.Event()
    gate.set()
    held = threading.Event()

    def detector_that_can_hang():  # the real model; its inference waits while the gate is closed
        detector = build_detector(MODEL, DetectorSettings())
        infer = detector.infer_prepared

        def gated(batch):  # type: ignore[no-untyped-def]
            if not gate.is_set():
                held.set()
                gate.wait()
            return infer(batch)

        detector.infer_prepared = gated  # type: ignore[method-assign]
        return detector

    camera = Camera(CameraConfig(name="cam", source=str(looped_clip), loop=True, realtime=True))
    pipeline: Optional[Pipeline] = None
    server = MetricsServer(lambda: pipeline, lambda: None, port=0, stall_timeout=0.5).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert health(base) == (503, {"status": "unhealthy",
                                      "reason": "starting: the pipeline is not built yet"})
        pipeline = Pipeline([camera], detector_that_can_hang, [])
        pipeline.start()
        wait(lambda: health(base)[0] == 200, 30, "/healthz 200")
        wait(lambda: pipeline.frames_processed >= 3, 30, "3 frames")

        gate.clear()  # the next inference hangs
        wait(held.is_set, 10, "an inference held")
        wait(lambda: health(base)[0] == 503, 10, "/healthz 503", interval=0.05)
        status, body = health(base)
        assert status == 503 and str(body["reason"]).startswith("the inference loop has not gone round for ")
        assert float(body["heartbeat_age_s"]) > 0.5  # type: ignore[arg-type]
        _, stalled = scrape(base)
        assert value(stalled, "detection_agent_healthy") == 0
        assert value(stalled, "detection_agent_inference_heartbeat_age_seconds") > 0.5
        dropped = value(stalled, "detection_agent_frames_dropped_total", camera="cam", reason="superseded")
        # The live camera keeps reading meanwhile: the frames inference is too late for are counted.
        wait(lambda: value(scrape(base)[1], "detection_agent_frames_dropped_total", camera="cam",
                           reason="superseded") >= dropped + 3, 10, "superseded frames counted")

        gate.set()  # the backend comes back
        wait(lambda: health(base)[0] == 200, 10, "/healthz 200 again", interval=0.05)
        assert value(scrape(base)[1], "detection_agent_healthy") == 1
        pipeline.stop()  # a stopped pipeline's loop goes round no more
        wait(lambda: health(base)[0] == 503, 10, "/healthz 503 after stop", interval=0.05)
    finally:
        gate.set()
        if pipeline is not None:
            pipeline.stop()
        server.close()


def test_bench_scrape_takes_turns_and_counts_what_scraping_costs(looped_clip: Path) -> None:
    from agent.bench.scrape import run_scrape_bench

    report = run_scrape_bench(MODEL, looped_clip, hz=10.0, rounds=2, window_s=1.0)
    assert len(report["fps_with"]) == len(report["fps_without"]) == len(report["ratios"]) == 2
    assert all(fps > 0 for fps in report["fps_with"] + report["fps_without"])
    assert report["scraper"]["errors"] == 0 and report["scraper"]["scrapes"] >= 5
    assert report["scrapes_per_s"] > 2 and report["scrapes_while_off"] <= 4  # 1 in flight per switch at most
    assert report["scrape_cpu_ms"] > 0 and 0 < report["scrape_core_share"] < 1
    assert report["ratio_min"] <= report["ratio_median"] <= report["ratio_max"]
    assert len(report["cpu_ratios"]) == 2 and report["observe_us"] > 0
