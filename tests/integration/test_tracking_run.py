"""Tracking through ``detection-agent run`` and a real broker: track ids on detections,
events and retained counts that validate against schemas/, ``mqtt.detections`` modes, and
``cmd/reset_counts``. The clip is generated with a counting line and its true crossings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from mosquitto import Subscriber, wait

from agent.datasets.video import make_video
from agent.tracking import CountingLine

MODEL = Path("models/shapes-yolov3-tiny.onnx")
SCHEMAS = Path("schemas")
LINE = {"name": "door", "points": [[0.5, 0.0], [0.5, 1.0]], "units": "fraction"}

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="needs the shipped model")


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 s of shapes at 15 FPS crossing the picture's vertical middle, and the true crossings."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    line = CountingLine.from_mapping(LINE, ["circle", "square", "triangle"], "test")
    make_video(path, frames=120, fps=15, seed=21, width=640, height=480, lines=[line])
    return path


def write_config(tmp_path, broker, source, mqtt=None, **top):
    cfg = {
        "device": {"id": "box"},
        "cameras": [{"name": "cam", "source": str(source), "lines": [LINE]}],
        "model": {"path": str(MODEL), "warmup_runs": 0, "threads": 1},
        "tracking": {"enabled": True},
        "mqtt": {"host": broker.host, "port": broker.port, "stats_interval": 3600, "reconnect_min": 0.05,
                 "reconnect_max": 0.4, **(mqtt or {})},
        "spool": {"path": str(tmp_path / "spool.db")},
        "service": {"state_dir": str(tmp_path / "state")},
        **top,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_agent(config, *extra, timeout=180):
    done = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def check_events(events, truth):
    """Schema-valid, seq 1..N without a gap, every track started before its other events and
    ended once, and line_cross totals equal to the generator's true crossings."""
    validator = jsonschema.Draft202012Validator(schema("events"))
    for event in events:
        validator.validate(event)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started, ended = set(), set()
    for event in events:
        if event["type"] == "track_start":
            started.add(event["track_id"])
        else:
            assert event["track_id"] in started, event
        if event["type"] == "track_end":
            assert event["track_id"] not in ended
            ended.add(event["track_id"])
    assert started and started == ended  # the run ended: every track was closed
    crossings = {"in": 0, "out": 0}
    for event in events:
        if event["type"] == "line_cross":
            crossings[event["direction"]] += 1
    return crossings


def test_run_publishes_track_ids_events_and_counts(broker, tmp_path, clip):
    truth = json.loads(clip.with_suffix(".lines.json").read_text())["counts"]["door"]
    sub = Subscriber(broker, ["detection-agent/box/#"])
    try:
        run_agent(write_config(tmp_path, broker, clip))
        wait(lambda: len(sub.payloads("/detections")) >= 120, 15, "120 detections messages")
        wait(lambda: any(json.loads(p)["type"] == "track_end" for p in sub.payloads("/events")), 15, "events")
        events = [json.loads(p) for p in sub.payloads("/cam/events")]
        counts = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/cam/counts")]
        retained = [m.retain for m in sub.messages if m.topic.endswith("/cam/counts")]
        detections = [json.loads(p) for p in sub.payloads("/cam/detections")]
    finally:
        sub.close()
    crossings = check_events(events, truth)
    assert crossings == truth, f"line counts {crossings}, true crossings {truth}"
    counts_validator = jsonschema.Draft202012Validator(schema("counts"))
    for message in counts:
        counts_validator.validate(message)
    assert counts[-1]["lines"]["door"] == crossings  # the last counts message has the totals
    assert not any(retained)  # live delivery to a subscriber that was there: the flag is cleared
    detections_validator = jsonschema.Draft202012Validator(schema("detections"))
    ids = set()
    for message in detections:
        detections_validator.validate(message)
        ids.update(d["track_id"] for d in message["detections"] if d["track_id"] is not None)
        assert all("track_id" in d for d in message["detections"])
    assert ids == {e["track_id"] for e in events}  # the same ids on both topics

    # A late subscriber gets the retained counts: the final totals.
    late = Subscriber(broker, ["detection-agent/box/cam/counts"])
    try:
        wait(lambda: late.messages, 5, "the retained counts")
        assert late.messages[0].retain and json.loads(late.messages[0].payload)["lines"]["door"] == crossings
    finally:
        late.close()


def test_detections_off_leaves_events_and_counts(broker, tmp_path, clip):
    sub = Subscriber(broker, ["detection-agent/box/#"])
    try:
        run_agent(write_config(tmp_path, broker, clip, mqtt={"detections": "off"}))
        wait(lambda: any(json.loads(p)["type"] == "track_end" for p in sub.payloads("/events")), 15, "events")
        events = [json.loads(p) for p in sub.payloads("/cam/events")]
        detections = sub.payloads("/cam/detections")
        counts = sub.payloads("/cam/counts")
    finally:
        sub.close()
    assert detections == []
    assert events and counts
    assert len(events) < 120  # a handful per object, not one per frame


def test_detections_on_change_publishes_fewer_frames_with_the_same_ids(broker, tmp_path, clip):
    sub = Subscriber(broker, ["detection-agent/box/#"])
    try:
        run_agent(write_config(tmp_path, broker, clip, mqtt={"detections": "on_change"}))
        wait(lambda: any(json.loads(p)["type"] == "track_end" for p in sub.payloads("/events")), 15, "events")
        detections = [json.loads(p) for p in sub.payloads("/cam/detections")]
        events = [json.loads(p) for p in sub.payloads("/cam/events")]
    finally:
        sub.close()
    assert 0 < len(detections) < 120
    assert [m["seq"] for m in detections] == list(range(1, len(detections) + 1))  # gapless: none lost
    starts = {e["track_id"] for e in events if e["type"] == "track_start"}
    seen = {d["track_id"] for m in detections for d in m["detections"] if d["track_id"] is not None}
    assert seen == starts  # every confirmed track appears: its arrival is a change


def test_reset_counts_command_zeroes_the_lines(broker, tmp_path, clip):
    """A paced clip (realtime) so the command lands mid-run; counts after it restart from 0."""
    config = write_config(tmp_path, broker, clip, mqtt={"commands": {"enabled": True}})
    cfg = yaml.safe_load(config.read_text())
    cfg["cameras"][0]["realtime"] = True
    config.write_text(yaml.safe_dump(cfg))
    sub = Subscriber(broker, ["detection-agent/box/#"])
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def crossed():
            return any(json.loads(p)["type"] == "line_cross" for p in sub.payloads("/cam/events"))

        wait(crossed, 60, "a first line crossing")
        sub.client.publish("detection-agent/box/cmd/reset_counts", b'{"id": 7}', qos=1)
        wait(lambda: any(json.loads(p).get("id") == 7 for p in sub.payloads("/cmd/result")), 10, "the answer")
        _, err = agent.communicate(timeout=60)
        assert agent.returncode == 0, err
        answer = next(json.loads(p) for p in sub.payloads("/cmd/result") if json.loads(p).get("id") == 7)
        counts = [json.loads(p) for p in sub.payloads("/cam/counts")]
        events = [json.loads(p) for p in sub.payloads("/cam/events")]
    finally:
        if agent.poll() is None:
            agent.kill()
        sub.close()
    assert answer["ok"] and answer["result"] == {"cameras": ["cam"]}
    reset = [c for c in counts if c["since"] > counts[0]["since"]]
    assert reset, "no counts message after the reset"
    after = [e for e in events if e["type"] == "line_cross" and e["ts"] >= reset[0]["since"]]
    final = reset[-1]["lines"]["door"]
    assert final["in"] + final["out"] == len(after)
