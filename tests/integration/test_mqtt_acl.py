"""The broker ACL that docs/mqtt.md recommends, run for real: a Mosquitto with exactly the
documented file; the agent works under it, operators can command it, nobody else can."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, List

import paho.mqtt.client as paho
import pytest
from mosquitto import Mosquitto, Subscriber, agent_config, detections, make_password_file, wait

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs/mqtt.md"
ROOT = "detection-agent/jetson-01"
USERS = {"jetson-01": "pw-1", "jetson-02": "pw-2", "ops": "pw-ops", "viewer": "pw-view"}


def documented_acl() -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- acl example[^>]*-->\n```text\n(.*?)```", text, re.S)
    assert found, "docs/mqtt.md lost its ACL example"
    return found.group(1)


@pytest.fixture
def acl_broker(tmp_path):
    acl = tmp_path / "acl.conf"
    # "viewer" is a consumer with read rights only, appended to the documented file.
    acl.write_text(documented_acl() + "\nuser viewer\ntopic read detection-agent/#\n", encoding="utf-8")
    passwords = make_password_file(tmp_path / "passwd", USERS)
    broker = Mosquitto(tmp_path / "acl-broker", password_file=passwords, acl_file=acl)
    try:
        yield broker.start()
    finally:
        broker.kill()


def client_as(broker, user: str) -> paho.Client:
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, USERS[user])
    client.connect(broker.host, broker.port, 5)
    client.loop_start()
    return client


def close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def test_the_documented_acl_lets_only_operators_command_a_device(acl_broker, tmp_path, publishers):
    mqtt = {"username": "jetson-01", "password": USERS["jetson-01"], "commands": {"enabled": True}}
    pub = publishers(agent_config(acl_broker, tmp_path, device="jetson-01", mqtt=mqtt), start=False)
    calls: List[Any] = []
    pub.commands.register("pause", lambda args: calls.append(args) or {"paused": True})
    pub.start()
    assert pub.wait_for(lambda c: c["connected"] and c["commands"]["subscribed"], 10), pub.counters()
    ops = Subscriber(acl_broker, [f"{ROOT}/#"], username="ops", password=USERS["ops"])

    # The agent's own traffic passes the ACL: status, detections, camera status, stats.
    for i in range(3):
        assert pub.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
    pub.publish_camera_status("front", "online")
    pub.publish_stats()
    wait(lambda: len(ops.payloads("/front/detections")) == 3 and ops.payloads("/stats")
         and ops.payloads("/front/status") and b"online" in ops.payloads(f"{ROOT}/status"), 10,
         "the agent's messages under the ACL")

    # Another device, a read-only consumer: their commands never reach the agent.
    for user in ("jetson-02", "viewer"):
        intruder = client_as(acl_broker, user)
        intruder.publish(f"{ROOT}/cmd/pause", json.dumps({"id": f"from-{user}"}), 1).wait_for_publish(5)
        intruder.publish(f"{ROOT}/cmd/result", b'{"forged": true}', 1).wait_for_publish(5)
        close(intruder)
    # An operator's command does, and its answer comes back.
    operator = client_as(acl_broker, "ops")
    operator.publish(f"{ROOT}/cmd/pause", json.dumps({"id": "from-ops"}), 1).wait_for_publish(5)
    wait(lambda: ops.payloads("/cmd/result"), 10, "the answer to the operator's command")
    time.sleep(0.5)  # the refused publishes went before the operator's: nothing more is coming
    answers = [json.loads(p) for p in ops.payloads("/cmd/result")]
    assert [a.get("id") for a in answers] == ["from-ops"] and answers[0]["ok"]
    assert calls == [{}] and pub.counters()["commands"]["handled"] == 1
    assert not ops.payloads("/cmd/pause") or all(b"from-ops" in p for p in ops.payloads("/cmd/pause"))

    # The device cannot write outside its own topics, not even another device's commands.
    pub_client = client_as(acl_broker, "jetson-01")
    watcher = Subscriber(acl_broker, ["detection-agent/jetson-02/#"], username="ops", password=USERS["ops"])
    pub_client.publish("detection-agent/jetson-02/cmd/pause", b"{}", 1).wait_for_publish(5)
    pub_client.publish("detection-agent/jetson-02/front/detections", b"{}", 1).wait_for_publish(5)
    time.sleep(0.5)
    assert watcher.messages == []
    close(pub_client)
    close(operator)
    watcher.close()
    ops.close()
