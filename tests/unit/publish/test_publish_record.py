"""record: broker addresses, seq gap and duplicate reports, lines written and flushed one by one."""

import argparse
import dataclasses
import io
import json

import pytest

from agent.cli.record import register
from agent.errors import BadInputError
from agent.publish.record import DEFAULT_TOPIC, Recorder, RecordOptions, SeqTracker, parse_broker


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:1883", ("127.0.0.1", 1883)), ("broker.local:8883", ("broker.local", 8883)),
    ("broker", ("broker", 1883)), ("[::1]:1884", ("::1", 1884)), ("[fe80::1]", ("fe80::1", 1883)),
])
def test_parse_broker(text, expected):
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text", ["", ":1883", "host:", "host:abc", "host:70000", "[::1", "host:0"])
def test_parse_broker_rejects(text):
    with pytest.raises(BadInputError, match="PORT"):
        parse_broker(text)


def msg(seq, camera="front", run="r1", device="d"):
    return {"schema": "detections/1", "device": device, "camera": camera, "run": run, "seq": seq}


def test_tracker_reports_gaps_and_duplicates_per_stream():
    tracker = SeqTracker()
    for seq in [1, 2, 3, 5, 5, 6, 9, 10]:
        tracker.add(msg(seq))
    for seq in [4, 5, 6]:
        tracker.add(msg(seq, camera="back"))
    tracker.add(msg(1, run="r2"))
    tracker.add({"schema": "stats/1"})  # no seq: not a stream
    summary = {(s["camera"], s["run"]): s for s in tracker.summary()}
    front = summary[("front", "r1")]
    assert (front["first"], front["last"], front["received"], front["unique"]) == (1, 10, 8, 7)
    assert front["missing"] == 3 and front["missing_ranges"] == [(4, 4), (7, 8)] and front["duplicates"] == 1
    back = summary[("back", "r1")]
    assert (back["missing"], back["missing_ranges"], back["missing_before_first"]) == (3, [(1, 3)], 3)
    assert summary[("front", "r2")]["received"] == 1 and summary[("front", "r2")]["missing"] == 0
    lines = tracker.report_lines()
    assert "d/front run r1: seq 1..10, 8 received, 3 missing, 1 duplicate(s); missing seq: 4, 7-8" in lines
    back_line = next(line for line in lines if "/back" in line)
    assert back_line.startswith("d/back run r1: seq 4..6, 3 received, 3 missing, 0 duplicate(s); "
                                "missing seq: 1-3")
    assert "3 before the first received: dropped by the agent's spool bounds" in back_line


def test_messages_the_spool_dropped_at_the_start_of_an_outage_are_missing():
    # Issue 14 item 10: the spool drops the oldest messages first; a persistent recorder then
    # sees seq 41..60 of the run. That is 40 lost messages, not "0 missing".
    tracker = SeqTracker()
    for seq in range(41, 61):
        tracker.add(msg(seq))
    (stream,) = tracker.summary()
    assert stream["missing"] == 40 and stream["missing_ranges"] == [(1, 40)]
    assert "20 received, 40 missing" in tracker.report_lines()[0]


def test_recorder_writes_each_payload_as_one_line_at_once(tmp_path):
    path = tmp_path / "out.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        recorder = Recorder(out, count=3)
        recorder.feed(b'{"seq":1,"camera":"front","run":"r","device":"d"}')
        assert path.read_text() == '{"seq":1,"camera":"front","run":"r","device":"d"}\n'  # flushed already
        recorder.feed(b"\xff\xd8 a jpeg")  # not JSON: skipped, counted
        recorder.feed(b'{\n "seq": 2\n}')  # pretty-printed by someone: still one line
        recorder.feed(b'[1, 2]')  # JSON, but not a message
        assert not recorder.done.is_set()
        recorder.feed(b'{"seq":3}')
        assert recorder.done.is_set()
        recorder.feed(b'{"seq":4}')  # after the count: ignored
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert (recorder.recorded, recorder.skipped) == (3, 2)


def test_parser_defaults():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["record", "--broker", "h:1", "--out", "x.jsonl"])
    assert (args.topic, args.qos, args.duration, args.count, args.client_id) == (None, 1, None, None, None)
    assert DEFAULT_TOPIC == "detection-agent/+/+/detections"
    assert callable(args.handler)
    # The command's defaults are the library's: every option is a RecordOptions field.
    fields = {f.name: f.default for f in dataclasses.fields(RecordOptions)}
    given = {k: v for k, v in vars(args).items() if k != "handler"}
    assert set(given) == set(fields) and given == {**fields, "broker": "h:1", "out": "x.jsonl"}


def test_record_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, agent.publish.record; "
            "print(sorted(m for m in ('paho', 'numpy', 'cv2', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recorder_counts_and_stops_even_from_a_stream():
    out = io.StringIO()
    recorder = Recorder(out, count=None)
    for i in range(5):
        recorder.feed(json.dumps(msg(i + 1)).encode())
    assert recorder.recorded == 5 and out.getvalue().count("\n") == 5
    assert recorder.tracker.summary()[0]["missing"] == 0


def test_shared_filters_join_a_group_or_refuse_a_bad_one():
    from agent.publish.record import shared_filters

    assert shared_filters(None, [DEFAULT_TOPIC]) == [DEFAULT_TOPIC]
    assert shared_filters("fleet", ["a/#", "b/+/c"]) == ["$share/fleet/a/#", "$share/fleet/b/+/c"]
    for group in ("", "a/b", "x+", "#"):
        with pytest.raises(BadInputError, match="--share"):
            shared_filters(group, [DEFAULT_TOPIC])
    with pytest.raises(BadInputError, match="already a shared subscription"):
        shared_filters("g", ["$share/g/x"])


def test_recorder_measures_latency_from_the_message_ts(tmp_path):
    import time

    with open(tmp_path / "o.jsonl", "w", encoding="utf-8") as out:
        recorder = Recorder(out, count=None)
        recorder.feed(json.dumps({"seq": 1, "ts": time.time() - 0.25}).encode())
        recorder.feed(b'{"seq": 2}')  # no ts: recorded, no latency
    assert recorder.recorded == 2 and recorder.latency.count == 1
    assert 0.25 <= recorder.latency.percentile(50) < 0.25 * 1.02 + 0.05
