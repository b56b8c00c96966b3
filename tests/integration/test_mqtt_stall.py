"""A broker that stalls without closing the connection, and a network path that freezes, then
both recover: every message published meanwhile must arrive, and the sender must report no
internal error (issue 14, item 1)."""

from __future__ import annotations

import json
import threading
import time
from typing import Dict, List

import pytest
from mosquitto import Subscriber, agent_config, detections, wait

from agent.bench.relay import Relay

pytestmark = pytest.mark.integration


def seqs(sub: Subscriber) -> List[int]:
    return [json.loads(p)["seq"] for p in sub.payloads("/front/detections")]


def stream_through_a_fault(pub, sub, fault_start, fault_end, *, before: float, during: float,
                           after: float, fps: float = 15.0) -> Dict[str, int]:
    """Publish at ``fps`` for ``before`` s, call ``fault_start``, go on for ``during`` s, call
    ``fault_end``, go on for ``after`` s; then wait for delivery and return the figures."""
    published = [0]
    stop = threading.Event()

    def stream() -> None:
        interval = 1.0 / fps
        next_at = time.monotonic()
        while not stop.is_set():
            if pub.publish_detections("front", published[0], time.time(), 64, 48, detections(2), {}):
                published[0] += 1
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(before)
        fault_start()
        time.sleep(during)
        fault_end()
        time.sleep(after)
    finally:
        stop.set()
        thread.join(10)
    total = published[0]
    # Delivery of the backlog: a few seconds at most once the path is back.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not set(range(1, total + 1)) <= set(seqs(sub)):
        time.sleep(0.1)
    got = set(seqs(sub))
    pub.wait_for(lambda c: c["backlog"] == 0, 5)
    counters = pub.counters()
    return {"published": total, "delivered": len(got & set(range(1, total + 1))),
            "missing": len(set(range(1, total + 1)) - got), "internal_errors": counters["internal_errors"],
            "backlog": counters["backlog"], "dropped": counters["dropped"]}


def test_broker_stalled_8s_with_stats_every_2s_loses_nothing(broker, tmp_path, publishers):
    sub = Subscriber(broker, ["detection-agent/+/+/detections"], client_id="stall-sub")
    # Default keepalive: an 8 s stall does not end the connection, the broker just goes quiet.
    config = agent_config(broker, tmp_path, mqtt={"stats_interval": 2, "keepalive": 60})
    pub = publishers(config)
    assert pub.wait_for(lambda c: c["connected"], 10)
    report = stream_through_a_fault(pub, sub, broker.freeze, broker.thaw, before=3, during=8, after=3)
    print(f"\nstalled broker: {report}")
    assert report["published"] > 150
    assert report["missing"] == 0 and report["internal_errors"] == 0
    assert report["backlog"] == 0 and report["dropped"] == 0
    sub.close()


def test_network_frozen_with_stats_every_2s_loses_nothing(broker, tmp_path, publishers):
    sub = Subscriber(broker, ["detection-agent/+/+/detections"], client_id="frozen-sub")
    with Relay(broker.port) as relay:
        config = agent_config(broker, tmp_path, mqtt={"stats_interval": 2, "keepalive": 60,
                                                      "port": relay.port})
        pub = publishers(config)
        assert pub.wait_for(lambda c: c["connected"], 10)
        report = stream_through_a_fault(pub, sub, relay.freeze, relay.thaw, before=3, during=10, after=3)
    print(f"\nfrozen network: {report}")
    assert report["missing"] == 0 and report["internal_errors"] == 0
    assert report["backlog"] == 0 and report["dropped"] == 0
    sub.close()


def test_internal_errors_never_stop_the_sender_and_show_in_stats_and_log(broker, tmp_path, publishers,
                                                                         caplog):
    """A bug inside a sender step (simulated: the spool's add fails three times) loses nothing:
    what was taken from the queue is kept and stored on the next step; the errors are counted
    in counters() and the stats message, and logged once with their traceback, not per step."""
    sub = Subscriber(broker, ["detection-agent/box-1/#"], client_id="internal-sub")
    pub = publishers(agent_config(broker, tmp_path))
    assert pub.wait_for(lambda c: c["connected"], 10)
    spool = pub._sender.spool
    real_add, failures = spool.add, [3]

    def add_with_a_bug(messages, *args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("simulated bookkeeping bug")
        return real_add(messages, *args, **kwargs)

    spool.add = add_with_a_bug
    caplog.set_level("ERROR", logger="agent.publish.sender")
    for i in range(40):
        assert pub.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
        time.sleep(0.01)
    wait(lambda: set(range(1, 41)) <= set(seqs(sub)), 15, "every message despite the errors")
    counters = pub.counters()
    assert counters["internal_errors"] == 3 and "simulated bookkeeping bug" in counters["last_internal_error"]
    assert counters["backlog"] == 0 and counters["dropped"] == 0
    pub.publish_stats()
    wait(lambda: sub.payloads("/stats"), 10, "the stats message")
    stats = json.loads(sub.payloads("/stats")[-1])
    assert stats["mqtt"]["internal_errors"] == 3 and "drain_queue" in stats["mqtt"]["last_internal_error"]
    lines = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None  # the first, with its traceback
    sub.close()
