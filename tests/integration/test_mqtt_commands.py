"""Commands over a real broker: pause/resume/snapshot/set reach the pipeline's callbacks,
every command is answered, malformed ones with an error, and publishing never stops."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import jsonschema
import numpy as np
import paho.mqtt.client as paho
import pytest
from mosquitto import Subscriber, agent_config, detections, wait
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.publish.commands import CommandError
from agent.runtime.draw import snapshot_jpeg

pytestmark = pytest.mark.integration
ROOT = "detection-agent/box-1"
RESULT_SCHEMA = jsonschema.Draft202012Validator(json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/command-result.schema.json").read_text()))


def sender(broker, protocol=paho.MQTTv311) -> paho.Client:
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect(broker.host, broker.port, 5)
    client.loop_start()
    return client


def close(client: paho.Client) -> None:
    client.disconnect()  # wakes paho's loop at once; loop_stop alone waits out its 1 s select
    client.loop_stop()


def results(sub: Subscriber) -> List[Dict[str, Any]]:
    out = [json.loads(p) for p in sub.payloads("/cmd/result")]
    for result in out:
        RESULT_SCHEMA.validate(result)
    return out


@pytest.fixture
def agent(broker, tmp_path, publishers):
    commands = {"enabled": True, "max_payload": 1024}
    pub = publishers(agent_config(broker, tmp_path, mqtt={"commands": commands}))
    calls: List[Any] = []

    def refuse_if_paused(args):
        if args.get("camera") == "back":
            raise CommandError("back is already paused")
        calls.append(("pause", args))
        return {"paused": args.get("camera") or "all"}

    def snapshot(args):
        image = np.full((48, 64, 3), 90, np.uint8)
        for camera in [args["camera"]] if "camera" in args else ["front", "back"]:
            pub.publish_snapshot(camera, snapshot_jpeg(image, detections(1), ["person", "car", "dog"]))
        return {"cameras": args.get("camera", "all")}

    def broken(args):
        raise RuntimeError("the pipeline fell over")

    pub.commands.register("pause", refuse_if_paused)
    pub.commands.register("resume", broken)
    pub.commands.register("snapshot", snapshot)
    pub.commands.register("set", lambda args: calls.append(("set", args)) or dict(args))
    assert pub.wait_for(lambda c: c["commands"]["subscribed"], 10)
    pub.calls = calls
    return pub


def test_commands_reach_the_pipeline_and_are_answered(broker, agent):
    sub = Subscriber(broker, [f"{ROOT}/cmd/result", f"{ROOT}/+/snapshot"])
    client = sender(broker)
    client.publish(f"{ROOT}/cmd/pause", json.dumps({"camera": "front", "id": "req-1"}), 1)
    client.publish(f"{ROOT}/cmd/set", json.dumps({"conf_threshold": 0.4, "classes": ["person"], "id": 7}), 1)
    client.publish(f"{ROOT}/cmd/snapshot", b"{}", 1)
    client.publish(f"{ROOT}/cmd/pause", json.dumps({"camera": "back"}), 1)
    client.publish(f"{ROOT}/cmd/resume", b"{}", 1)
    wait(lambda: len(results(sub)) >= 5, 10, "five results")
    by_command = {(r["command"], r.get("id")): r for r in results(sub)}
    assert by_command[("pause", "req-1")]["result"] == {"paused": "front"}
    assert by_command[("set", 7)]["result"] == {"conf_threshold": 0.4, "classes": ["person"]}
    assert agent.calls == [("pause", {"camera": "front"}),
                           ("set", {"conf_threshold": 0.4, "classes": ["person"]})]
    refused = [r for r in results(sub) if r["command"] == "pause" and not r["ok"]]
    assert refused and refused[0]["error"] == "back is already paused"
    crashed = by_command[("resume", None)]
    assert not crashed["ok"] and "the pipeline fell over" in crashed["error"]
    snapshots = lambda: sub.payloads("/front/snapshot") + sub.payloads("/back/snapshot")  # noqa: E731
    wait(lambda: len(snapshots()) >= 2, 10, "snapshots of both cameras")
    assert all(p[:2] == b"\xff\xd8" for p in snapshots())  # JPEG
    close(client)
    sub.close()


def test_malformed_commands_are_answered_and_publishing_goes_on(broker, agent):
    sub = Subscriber(broker, [f"{ROOT}/cmd/result", f"{ROOT}/front/detections"])
    client = sender(broker)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            agent.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
            i += 1
            stop.wait(0.01)

    thread = threading.Thread(target=stream)
    thread.start()
    bad = [
        ("set", b"{not json"),
        ("set", json.dumps({"conf_threshold": "high"}).encode()),
        ("set", json.dumps({"iou_threshold": 2}).encode()),
        ("set", json.dumps({"classes": ["unicorn"]}).encode()),
        ("set", json.dumps({"classes": "person"}).encode()),
        ("set", b"{}"),
        ("pause", json.dumps({"camera": "garage"}).encode()),
        ("pause", json.dumps({"colour": "red"}).encode()),
        ("pause", b"[1, 2]"),
        ("pause", b"\xff\xfe\x00binary"),
        ("pause", b"[" * 500 + b"]" * 500),
        ("set", json.dumps({"conf_threshold": 0.5, "pad": "x" * 100_000}).encode()),
        ("explode", b"{}"),
        ("a/b/c", b"{}"),
    ]
    try:
        for name, payload in bad:
            client.publish(f"{ROOT}/cmd/{name}", payload, 1)
        wait(lambda: len(results(sub)) >= len(bad), 15, "an answer to every command")
        answered_at = len(sub.payloads("/detections"))
        wait(lambda: len(sub.payloads("/detections")) >= answered_at + 20, 10,
             "detections after the commands")
    finally:
        stop.set()
        thread.join(10)
    answers = results(sub)
    assert len(answers) == len(bad) and not any(r["ok"] for r in answers)
    errors = " | ".join(r["error"] for r in answers)
    for fragment in ("not valid UTF-8 JSON", "must be a number from 0 to 1", "unknown class name",
                     "non-empty list", "at least one of", "camera must be one of", "unknown key",
                     "must be a JSON object", "over the 1024-byte limit", "unknown command 'explode'",
                     "unknown command 'a/b/c'"):
        assert fragment in errors, fragment
    assert agent.calls == []  # nothing malformed reached the pipeline
    seqs = [json.loads(p)["seq"] for p in sub.payloads("/detections")]
    assert seqs == list(range(1, len(seqs) + 1))  # no message lost or reordered meanwhile
    assert agent.counters()["connected"] and agent.counters()["commands"]["failed"] == len(bad)
    close(client)
    sub.close()


def test_retained_commands_are_refused(broker, tmp_path, publishers):
    client = sender(broker)
    client.publish(f"{ROOT}/cmd/pause", b"{}", 1, retain=True).wait_for_publish(5)
    sub = Subscriber(broker, [f"{ROOT}/cmd/result"])
    try:
        pub = publishers(agent_config(broker, tmp_path, mqtt={"commands": {"enabled": True}}))
        calls: List[Any] = []
        pub.commands.register("pause", calls.append)
        wait(lambda: results(sub), 10, "the answer to the retained command")
        assert not results(sub)[0]["ok"] and "retained commands are ignored" in results(sub)[0]["error"]
        assert calls == []
    finally:
        client.publish(f"{ROOT}/cmd/pause", b"", 1, retain=True).wait_for_publish(5)  # clear it
        close(client)
        sub.close()


def test_an_empty_message_queued_while_the_agent_was_away_does_not_pause_it(broker, tmp_path, publishers):
    """Clearing a retained command (an empty retained publish) while the agent is offline queues
    that empty message in the agent's persistent session; it must not run as `pause {}`."""
    config = agent_config(broker, tmp_path, mqtt={"commands": {"enabled": True}})
    first = publishers(config)
    assert first.wait_for(lambda c: c["commands"]["subscribed"], 10)  # the session and its subscription
    assert first.stop(2)
    client = sender(broker)
    sub = Subscriber(broker, [f"{ROOT}/cmd/result"])
    try:
        client.publish(f"{ROOT}/cmd/pause", b"", 1, retain=True).wait_for_publish(5)
        again = publishers(config, start=False)
        calls: List[Any] = []
        again.commands.register("pause", calls.append)
        again.start()
        wait(lambda: results(sub), 10, "the answer to the queued empty message")
        answer = results(sub)[0]
        assert not answer["ok"] and "an empty message is not a command" in answer["error"]
        assert calls == [] and again.counters()["commands"]["handled"] == 0
    finally:
        close(client)
        sub.close()


def test_a_retained_command_sent_while_the_agent_is_connected_is_refused_on_mqtt5(broker, tmp_path,
                                                                                 publishers):
    # The broker clears the retain flag on live delivery unless the subscription asks for
    # retain-as-published (MQTT 5); without it this command ran.
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": "5", "commands": {"enabled": True}}))
    calls: List[Any] = []
    pub.commands.register("pause", calls.append)
    assert pub.wait_for(lambda c: c["commands"]["subscribed"], 10)
    sub = Subscriber(broker, [f"{ROOT}/cmd/result"])
    client = sender(broker, protocol=paho.MQTTv5)
    try:
        client.publish(f"{ROOT}/cmd/pause", b"{}", 1, retain=True).wait_for_publish(5)
        wait(lambda: results(sub), 10, "the answer to the live retained command")
        assert not results(sub)[0]["ok"] and "retained commands are ignored" in results(sub)[0]["error"]
        client.publish(f"{ROOT}/cmd/pause", b"{}", 1).wait_for_publish(5)  # the same, not retained: runs
        wait(lambda: len(results(sub)) >= 2, 10, "the answer to the plain command")
        assert results(sub)[1]["ok"] and calls == [{}]
    finally:
        client.publish(f"{ROOT}/cmd/pause", b"", 1, retain=True).wait_for_publish(5)  # clear it
        close(client)
        sub.close()


def mqtt5_request(client: paho.Client, command: str, response_topic: str, correlation: bytes) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    client.publish(f"{ROOT}/cmd/{command}", b"{}", 1, properties=props).wait_for_publish(5)


def test_mqtt5_response_topic_and_correlation_data(broker, tmp_path, publishers):
    commands = {"enabled": True, "response_prefix": "replies"}
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": "5", "commands": commands}))
    pub.commands.register("pause", lambda args: {"paused": True})
    assert pub.wait_for(lambda c: c["commands"]["subscribed"], 10)
    replies = Subscriber(broker, ["replies/me", f"{ROOT}/cmd/result/#"], protocol=paho.MQTTv5)
    client = sender(broker, protocol=paho.MQTTv5)
    mqtt5_request(client, "pause", "replies/me", b"\x00\x01req-42")  # under the configured prefix
    mqtt5_request(client, "pause", f"{ROOT}/cmd/result/console-7", b"req-43")  # under the device's own
    wait(lambda: len(replies.messages) >= 2, 10, "the replies on the response topics")
    by_topic = {m.topic: m for m in replies.messages}
    expected = (("replies/me", b"\x00\x01req-42"), (f"{ROOT}/cmd/result/console-7", b"req-43"))
    for topic, correlation in expected:
        reply = by_topic[topic]
        assert reply.properties.CorrelationData == correlation
        body = json.loads(reply.payload)
        RESULT_SCHEMA.validate(body)
        assert body["ok"] and body["result"] == {"paused": True}
    close(client)
    replies.close()


@pytest.mark.parametrize("target", ["evil/injected", f"{ROOT}/status", "detection-agent/box-2/cmd/result",
                                    "replies/me"])
def test_mqtt5_response_topic_outside_the_allowed_ones_is_refused(broker, tmp_path, publishers, target):
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": "5", "commands": {"enabled": True}}))
    calls: List[Any] = []
    pub.commands.register("pause", calls.append)
    assert pub.wait_for(lambda c: c["commands"]["subscribed"], 10)
    spy = Subscriber(broker, ["#"], protocol=paho.MQTTv5)
    client = sender(broker, protocol=paho.MQTTv5)
    mqtt5_request(client, "pause", target, b"req-1")
    wait(lambda: spy.payloads("/cmd/result"), 10, "the refusal on cmd/result")
    refusal = json.loads(spy.payloads("/cmd/result")[0])
    assert not refusal["ok"] and f"response topic '{target}' is not allowed" in refusal["error"]
    assert calls == []  # not run either
    time.sleep(0.3)  # anything sent to the target would have arrived with the refusal
    written = [m for m in spy.messages if m.topic == target and b"command-result" in bytes(m.payload)]
    assert written == []
    if target.endswith("/status"):
        assert [bytes(m.payload) for m in spy.messages if m.topic == target] == [b"online"]
    close(client)
    spy.close()
