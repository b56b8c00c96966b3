"""Consumers that scale out: ``record --share`` processes split one fleet's traffic through an
MQTT 5 shared subscription, and ``eval`` reads their files as one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from mosquitto import agent_config, detections, wait
from test_mqtt_record import REPO, Record

pytestmark = pytest.mark.integration


def test_shared_recorders_split_the_messages_and_together_hold_each_once(broker, tmp_path, publishers):
    outs = [tmp_path / f"rec{i}.jsonl" for i in range(2)]
    summaries = [tmp_path / f"rec{i}.json" for i in range(2)]
    records = [Record("--broker", broker.address, "--share", "grp", "--client-id", f"rec-{i}",
                      "--out", str(outs[i]), "--summary", str(summaries[i]), "--duration", "60")
               for i in range(2)]
    assert all("$share/grp/detection-agent/+/+/detections" in "".join(r.err) for r in records)
    pubs = [publishers(agent_config(broker, tmp_path / f"a{k}", device=f"box-{k}")) for k in range(2)]
    for pub in pubs:
        wait(lambda p=pub: p.connected, 10, "publisher connected")
    n = 60
    for i in range(n):
        for pub in pubs:
            pub.publish_detections("front", i, time.time(), 64, 48, detections(i % 3), {"infer": 3})
        time.sleep(0.005)

    def lines():
        return [line for out in outs if out.exists() for line in out.read_text().splitlines()]

    wait(lambda: len(lines()) >= 2 * n, 20, f"{2 * n} recorded lines")
    for record in records:
        record.proc.send_signal(signal.SIGTERM)
    reports = [record.finish() for record in records]
    per_file = [len(out.read_text().splitlines()) for out in outs]
    assert all(count > 0 for count in per_file) and sum(per_file) == 2 * n, per_file  # split, none twice
    seen = {}
    for line in lines():
        msg = json.loads(line)
        seen.setdefault((msg["device"], msg["run"]), []).append(msg["seq"])
    assert {dev: sorted(seqs) for (dev, _), seqs in seen.items()} == {
        "box-0": list(range(1, n + 1)), "box-1": list(range(1, n + 1))}
    # each process reports only its part (gaps are the other member's share); the JSON summary
    # carries the latency histogram that adds up across the group
    assert all("missing" in report for report in reports)
    data = [json.loads(s.read_text()) for s in summaries]
    assert sum(d["recorded"] for d in data) == 2 * n
    assert sum(d["latency"]["count"] for d in data) == 2 * n
    assert all(0 <= d["latency_ms"]["p50"] < 5000 for d in data)


def test_eval_reads_the_recordings_of_a_group_as_one(tmp_path):
    # Ground truth as make-video writes it, frames 0..3; two recorders' files, one message in both.
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({
        "images": [{"id": f, "file_name": f"f{f}", "width": 64, "height": 48} for f in range(4)],
        "annotations": [{"id": f + 1, "image_id": f, "category_id": 0, "bbox": [10, 10, 20, 20],
                         "area": 400, "iscrowd": 0} for f in range(4)],
        "categories": [{"id": 0, "name": "person"}]}))

    def message(frame: int) -> str:
        return json.dumps({"schema": "detections/1", "device": "d", "camera": "front", "run": "r",
                           "seq": frame + 1, "frame": frame, "width": 64, "height": 48,
                           "detections": [{"label": "person", "class_id": 0, "score": 0.9,
                                           "box": [10, 10, 30, 30]}]})

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(message(f) for f in (0, 2)) + "\n")
    second.write_text("\n".join(message(f) for f in (1, 2, 3)) + "\n")
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "agent", "eval", "--gt", str(truth), "--pred", str(first),
                           str(second), "--json", str(out), "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["stats"]["AP50"] == pytest.approx(1.0), result["stats"]
    alone = subprocess.run([sys.executable, "-m", "agent", "eval", "--gt", str(truth), "--pred", str(first),
                            "--json", str(out), "--quiet"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert alone.returncode == 0 and json.loads(out.read_text())["stats"]["AP50"] < 0.9


def test_record_share_refuses_a_bad_group(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agent", "record", "--broker", "127.0.0.1:1",
                           "--share", "a/b", "--out", str(tmp_path / "x.jsonl")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --share 'a/b'")
    assert not (tmp_path / "x.jsonl").exists()


def test_record_keeps_its_mqtt5_session_while_away(broker, tmp_path):
    # MQTT 5 sessions end with the connection unless the client asks for an expiry: with
    # --client-id, record asks for one and resumes its session (clean start off).
    from test_mqtt_record import raw_client

    first = Record("--broker", broker.address, "--protocol", "5", "--client-id", "rec-v5",
                   "--out", str(tmp_path / "a.jsonl"), "--duration", "60")
    first.proc.send_signal(signal.SIGTERM)
    first.finish()
    client = raw_client(broker)
    for seq in range(1, 6):  # published while the recorder is away
        body = {"schema": "detections/1", "device": "d", "camera": "c", "run": "r", "seq": seq}
        client.publish("detection-agent/d/c/detections", json.dumps(body), 1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    out = tmp_path / "b.jsonl"
    second = Record("--broker", broker.address, "--protocol", "5", "--client-id", "rec-v5",
                    "--out", str(out), "--count", "5", "--duration", "30")
    report = second.finish()
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, 5], report
