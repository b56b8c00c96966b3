"""The MQTT contract against a real Mosquitto and real paho subscribers: schemas, seq,
retained status and stats, skipping, Home Assistant discovery, MQTT 3.1.1 and 5."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as paho
import pytest
from mosquitto import Subscriber, agent_config, detections, wait

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
pytestmark = pytest.mark.integration


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def retained(broker, topic: str, timeout: float = 5.0) -> bytes:
    """The retained payload of ``topic``, read by a fresh subscriber."""
    sub = Subscriber(broker, [topic], qos=1)
    try:
        wait(lambda: any(m.retain for m in sub.messages), timeout, f"a retained message on {topic}")
        return bytes([m for m in sub.messages if m.retain][-1].payload)
    finally:
        sub.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_every_message_arrives_valid_with_consecutive_seq(broker, tmp_path, publishers, protocol):
    sub = Subscriber(broker, ["detection-agent/#"],
                     protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311)
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": protocol, "stats_interval": 0.3}))
    assert pub.wait_for(lambda c: c["connected"], 10)
    frames = 60
    for i in range(frames):
        for camera in ("front", "back"):
            assert pub.publish_detections(camera, i, 1.7e9 + i / 30, 640, 480, detections(i % 4, seed=i),
                                          {"preprocess": 1.5, "infer": 20.25})
    wait(lambda: len(sub.payloads("/detections")) >= 2 * frames, 20, "every detections message")

    check = validator("detections")
    messages = [json.loads(p) for p in sub.payloads("/detections")]
    for message in messages:
        check.validate(message)
    assert {m["run"] for m in messages} == {pub.run}
    for camera in ("front", "back"):
        mine = [m for m in messages if m["camera"] == camera]
        assert [m["seq"] for m in mine] == list(range(1, frames + 1))  # in order, no gap, no duplicate
        assert [m["frame"] for m in mine] == list(range(frames))
        assert all(m["skipped"] == 0 for m in mine)
    first = next(m for m in messages if m["camera"] == "back" and m["frame"] == 3)
    assert first["device"] == "box-1" and first["model"] == "test-model"
    assert (first["width"], first["height"], first["latency_ms"]) == (640, 480, {"preprocess": 1.5,
                                                                                 "infer": 20.25})
    assert len(first["detections"]) == 3 and first["detections"][0]["label"] in ("person", "car", "dog")

    # Retained status and stats, as a newcomer sees them.
    assert retained(broker, "detection-agent/box-1/status") == b"online"
    wait(lambda: sub.payloads("/stats"), 5, "a stats message")
    stats = json.loads(retained(broker, "detection-agent/box-1/stats"))
    validator("stats").validate(stats)
    assert stats["run"] == pub.run and stats["mqtt"]["connected"] is True

    assert pub.wait_for(lambda c: c["acked"] >= 2 * frames and c["backlog"] == 0, 5)
    assert pub.counters()["dropped"] == 0
    assert pub.stop(5)
    assert retained(broker, "detection-agent/box-1/status") == b"offline"
    validator("status").validate("offline")
    sub.close()


def test_skipped_frames_do_not_break_seq(broker, tmp_path, publishers):
    sub = Subscriber(broker, ["detection-agent/+/+/detections"])
    pub = publishers(agent_config(broker, tmp_path, mqtt={"skip_empty": True}))
    accepted = [pub.publish_detections("front", i, time.time(), 320, 240, detections(1 if i % 3 == 2 else 0),
                                       {}) for i in range(30)]
    assert accepted == [i % 3 == 2 for i in range(30)]
    wait(lambda: len(sub.payloads()) >= 10, 10, "ten messages")
    messages = [json.loads(p) for p in sub.payloads()]
    assert [m["seq"] for m in messages] == list(range(1, 11))  # no gap: skipping is not loss
    assert [m["frame"] for m in messages] == list(range(2, 30, 3))
    assert [m["skipped"] for m in messages] == [2] * 10  # ...and the consumer can see the skipping
    sub.close()


def test_homeassistant_discovery(broker, tmp_path, publishers):
    sub = Subscriber(broker, ["homeassistant/#"])
    ha = {"enabled": True, "classes": ["person"]}
    publishers(agent_config(broker, tmp_path, mqtt={"homeassistant": ha}))
    wait(lambda: len(sub.messages) >= 3, 10, "discovery configs")
    configs = {m.topic: json.loads(m.payload) for m in sub.messages}
    online = configs["homeassistant/binary_sensor/detection_agent_box-1/online/config"]
    assert online["state_topic"] == "detection-agent/box-1/status" and online["payload_on"] == "online"
    count = configs["homeassistant/sensor/detection_agent_box-1/front_person/config"]
    assert count["state_topic"] == "detection-agent/box-1/front/detections"
    assert count["availability_topic"] == "detection-agent/box-1/status"
    assert "'person'" in count["value_template"]
    assert set(configs) == {"homeassistant/binary_sensor/detection_agent_box-1/online/config",
                            "homeassistant/sensor/detection_agent_box-1/front_person/config",
                            "homeassistant/sensor/detection_agent_box-1/back_person/config"}
    sub.close()
