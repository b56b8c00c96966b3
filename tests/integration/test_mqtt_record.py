"""``detection-agent record`` as users run it: a subprocess against a real broker, real
messages from the publisher and hand-made ones with a gap and a duplicate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import paho.mqtt.client as paho
import pytest
from mosquitto import agent_config, detections, wait

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class Record:
    """The record command in a subprocess; stderr is read on a thread so 'connected' is seen."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "record", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: List[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")))
        self._reader.start()
        wait(lambda: any("subscribed to" in line for line in self.err) or self.proc.poll() is not None, 30,
             "record to subscribe")
        # Subscribed, or still running: a recorder that resumes a session may get its --count
        # from the backlog and exit before this line runs (finish() checks how it ended).
        subscribed = any("subscribed to" in line for line in self.err)
        assert subscribed or self.proc.poll() is None, "".join(self.err)

    def finish(self, timeout: float = 20) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(5)
        assert self.proc.returncode == 0, "".join(self.err)
        return out


def raw_client(broker) -> paho.Client:
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port, 5)
    client.loop_start()
    return client


def test_record_saves_every_message_and_reports_gaps_and_duplicates(broker, tmp_path):
    out = tmp_path / "rec.jsonl"
    record = Record("--broker", broker.address, "--topic", "detection-agent/+/+/detections",
                    "--out", str(out), "--count", "13")
    client = raw_client(broker)
    sent = []
    for seq in [1, 2, 3, 4, 5, 5, 6, 7, 9, 10, 11, 12]:
        message = {"schema": "detections/1", "device": "d", "camera": "front", "run": "r1", "seq": seq,
                   "frame": seq, "width": 64, "height": 48, "detections": []}
        payload = json.dumps(message, separators=(",", ":"))
        sent.append(payload)
        client.publish("detection-agent/d/front/detections", payload, 1).wait_for_publish(5)
    client.publish("detection-agent/d/front/detections", b"\xff\xd8 not json", 1).wait_for_publish(5)
    other = {"schema": "detections/1", "device": "d", "camera": "back", "run": "r1", "seq": 3, "frame": 1,
             "width": 64, "height": 48, "detections": []}
    client.publish("detection-agent/d/back/detections", json.dumps(other), 1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    report = record.finish()
    lines = out.read_text().splitlines()
    assert lines[:12] == sent and json.loads(lines[12]) == other  # exactly the payloads, in order
    assert "13 message(s)" in report and "1 non-JSON payload(s) skipped" in report
    assert "d/front run r1: seq 1..12, 12 received, 1 missing, 1 duplicate(s); missing seq: 8" in report
    assert "d/back run r1: seq 3..3, 1 received, 2 missing, 0 duplicate(s); missing seq: 1-2" in report


def test_record_of_the_publisher_is_readable_by_eval_and_survives_sigterm(broker, tmp_path, publishers):
    out = tmp_path / "rec.jsonl"
    record = Record("--broker", broker.address, "--out", str(out), "--duration", "60")
    pub = publishers(agent_config(broker, tmp_path))
    for i in range(25):
        pub.publish_detections("front", i, time.time(), 64, 48, detections(i % 3), {"infer": 3})
    wait(lambda: out.exists() and len(out.read_text().splitlines()) >= 25, 15, "25 recorded lines")
    record.proc.send_signal(signal.SIGTERM)  # interrupted: whole lines and the report anyway
    report = record.finish()
    assert f"box-1/front run {pub.run}: seq 1..25, 25 received, 0 missing, 0 duplicate(s)" in report
    from agent.evaluate.recordings import _message

    messages = [_message(line, "rec.jsonl", n) for n, line in enumerate(out.read_text().splitlines(), 1)]
    assert [m["frame"] for m in messages] == list(range(25))


def test_record_reports_what_the_agents_spool_dropped_as_missing(idle_broker, tmp_path, publishers):
    """Issue 14 item 10: an outage longer than the spool holds drops the oldest messages; the
    recorder, there all along with a persistent session, must count them as missing."""
    idle_broker.start()
    out = tmp_path / "rec.jsonl"
    record = Record("--broker", idle_broker.address, "--out", str(out), "--client-id", "rec-drops",
                    "--duration", "60")
    idle_broker.stop()  # the outage: the agent publishes into its (tiny) spool meanwhile
    pub = publishers(agent_config(idle_broker, tmp_path, spool={"max_messages": 15}))
    for i in range(60):
        assert pub.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
    assert pub.wait_for(lambda c: c["dropped_by"].get("spool_max_messages") == 45, 10)
    idle_broker.start()
    wait(lambda: out.exists() and len(out.read_text().splitlines()) >= 15, 20, "the 15 messages kept")
    record.proc.send_signal(signal.SIGTERM)
    report = record.finish()
    assert f"box-1/front run {pub.run}: seq 46..60, 15 received, 45 missing, 0 duplicate(s); " \
           "missing seq: 1-45 (45 before the first received: dropped by the agent's spool bounds" in report


def test_record_with_a_broker_that_never_answers_fails_clearly(tmp_path):
    from mosquitto import free_port

    proc = subprocess.run([sys.executable, "-m", "agent", "record", "--broker", f"127.0.0.1:{free_port()}",
                           "--out", str(tmp_path / "x.jsonl"), "--duration", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "error: never connected to 127.0.0.1:" in proc.stderr
