"""Payloads, topics and the frame gate: the wire contract without a network."""

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from agent.publish.payloads import (
    FrameGate,
    Topics,
    detections_payload,
    encode,
    new_run_id,
    result_payload,
    stats_payload,
)
from agent.runtime.draw import snapshot_jpeg
from agent.types import Detections

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def schema(name):
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def dets(n):
    boxes = np.array([[10 * i, 20, 10 * i + 5.55, 40.04] for i in range(n)], np.float32).reshape(n, 4)
    return Detections(boxes, np.linspace(0.9, 0.5, n).astype(np.float32), np.arange(n, dtype=np.int32) % 2)


def message(n=2, **overrides):
    fields = dict(device="jetson-01", camera="front", run="20260101T000000Z-abcdef", seq=7, frame=41,
                  skipped=2, ts=1767225600.123456, width=1280, height=720, model="yolov3-tiny",
                  latency_ms={"infer": 12.3456, "nms": 0.5}, detections=dets(n), names=["person", "café"])
    fields.update(overrides)
    return detections_payload(**fields)


def test_detections_payload_has_the_contract_fields_and_validates():
    payload = message()
    schema("detections").validate(payload)
    assert list(payload) == ["schema", "device", "camera", "run", "seq", "frame", "skipped", "ts", "width",
                             "height", "model", "latency_ms", "detections"]
    assert payload["schema"] == "detections/1" and payload["seq"] == 7 and payload["skipped"] == 2
    assert payload["latency_ms"] == {"infer": 12.346, "nms": 0.5}
    assert payload["detections"][1] == {"label": "café", "class_id": 1, "score": 0.5,
                                        "box": [10.0, 20.0, 15.6, 40.0]}


def test_empty_frame_validates_and_schema_rejects_broken_messages():
    check = schema("detections")
    check.validate(message(0))
    too_sure = {"label": "x", "class_id": 0, "score": 1.5, "box": [0, 0, 1, 1]}
    no_run = {k: v for k, v in message().items() if k != "run"}
    for broken in (dict(message(), seq=0), dict(message(), extra=1), no_run,
                   dict(message(), detections=[too_sure])):
        with pytest.raises(jsonschema.ValidationError):
            check.validate(broken)


def test_encode_is_one_compact_utf8_line_and_refuses_nan():
    data = encode(message())
    assert b"\n" not in data and b", " not in data and "café".encode() in data
    assert json.loads(data) == json.loads(json.dumps(message()))
    with pytest.raises(ValueError):
        encode({"score": float("nan")})


def test_topics():
    topics = Topics("site/detection-agent/dev")
    assert topics.detections("front") == "site/detection-agent/dev/front/detections"
    assert topics.snapshot("front") == "site/detection-agent/dev/front/snapshot"
    assert topics.status == "site/detection-agent/dev/status"
    assert topics.stats == "site/detection-agent/dev/stats"
    assert (topics.cmd_filter, topics.cmd_result) == ("site/detection-agent/dev/cmd/#",
                                                      "site/detection-agent/dev/cmd/result")


def test_run_ids_are_new_each_time_and_sort_by_start():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_run_id(0.0))
    assert new_run_id(1e9) < new_run_id(2e9)


def test_gate_skip_empty_counts_what_it_skips():
    gate = FrameGate(skip_empty=True, max_rate=None)
    admitted = [gate.admit(n, t) for t, n in enumerate([0, 0, 3, 0, 1])]
    assert admitted == [False, False, True, False, True]
    assert gate.skipped_total == 3


def test_gate_rate_cap_keeps_an_even_cadence():
    gate = FrameGate(skip_empty=False, max_rate=10.0)
    rng = np.random.default_rng(0)
    times = np.arange(300) / 30.0 + rng.uniform(-0.004, 0.004, 300)  # 30 fps with jitter
    admitted, skipped = [], []
    for i, t in enumerate(times):
        if gate.admit(1, float(t)):
            admitted.append(i)
            skipped.append(gate.take_skipped())
    assert len(admitted) in (99, 100, 101)  # 10 of every 30, not fewer because of jitter
    assert set(np.diff(admitted)) <= {2, 3, 4}
    assert sum(skipped) + len(admitted) <= 300 and skipped[1:] == [d - 1 for d in np.diff(admitted)]


def test_gate_without_options_admits_everything():
    gate = FrameGate(False, None)
    assert all(gate.admit(0, 0.0) for _ in range(5)) and gate.take_skipped() == 0


def test_stats_and_result_payloads_validate():
    counters = {"sent": 3, "acked": 3, "spooled": 0, "replayed": 0, "dropped": 0, "reconnects": 0,
                "connected": True, "backlog": 0, "state": "up", "last_error": None, "spool": "disk"}
    extra = {"cameras": {"a": {}}, "schema": "evil"}
    stats = stats_payload(device="d", run="r", started=100.0, mqtt=counters, extra=extra, now=160.0)
    schema("stats").validate(stats)
    assert stats["schema"] == "stats/1" and stats["uptime_s"] == 60.0 and stats["cameras"] == {"a": {}}
    ok = result_payload(device="d", command="set", ok=True, request_id="a1", result={"conf_threshold": 0.3})
    bad = result_payload(device="d", command="explode", ok=False, error="unknown command")
    for payload in (ok, bad):
        schema("command-result").validate(payload)
    assert "result" not in bad and "id" not in bad and ok["id"] == "a1"
    with pytest.raises(jsonschema.ValidationError):
        schema("command-result").validate(dict(bad, result={}))


def test_snapshot_is_a_jpeg_with_the_boxes_drawn():
    image = np.zeros((60, 80, 3), np.uint8)
    jpeg = snapshot_jpeg(image, dets(1), ["person", "car"], quality=90)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    import cv2

    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (60, 80, 3) and decoded.max() > 100  # a box was drawn on black
