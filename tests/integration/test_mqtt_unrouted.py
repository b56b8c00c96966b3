"""``mqtt.hold_unrouted_s`` against a real Mosquitto: QoS 1 messages the broker acknowledged with
MQTT 5 code 16 ("No matching subscribers", e.g. while the $share consumers of a restarted broker
have not resubscribed yet) stay in the spool and reach the consumer once it subscribes; with
the key off they are lost, which is why it exists. With no consumer the resends keep to one per
delay per message, and the spool's bounds still drop held messages (counted)."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
from mosquitto import Subscriber, agent_config, detections, wait

pytestmark = pytest.mark.integration

SHARED = "$share/grp/detection-agent/+/+/detections"


def seqs(sub: Subscriber):
    return sorted(json.loads(p)["seq"] for p in sub.payloads("/detections"))


def publish(pub, first: int, n: int) -> None:
    for i in range(first, first + n):
        pub.publish_detections("front", i, time.time(), 64, 48, detections(i % 3), {"infer": 3})


@pytest.mark.parametrize("hold", [0.5, 0.0], ids=["hold", "off"])
def test_messages_nobody_took_reach_a_later_shared_consumer_only_when_held(broker, tmp_path, publishers,
                                                                           hold):
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": "5", "hold_unrouted_s": hold}))
    wait(lambda: pub.connected, 10, "publisher connected")
    n = 20
    publish(pub, 0, n)  # seq 1..20: no subscriber yet
    # (the spool deletes acknowledged messages after the step that counted them: wait for both)
    settled = (lambda c: c["unrouted_held"] >= n) if hold else (lambda c: c["backlog"] == 0)
    assert pub.wait_for(lambda c: c["unrouted"] >= n and settled(c), 10), pub.counters()
    c = pub.counters()
    if hold:
        assert c["unrouted_held"] >= n and c["backlog"] >= n  # kept, not acknowledged
    else:
        assert c["unrouted_held"] == 0 and c["backlog"] == 0  # acknowledged, so deleted
    sub = Subscriber(broker, [SHARED], protocol=paho.MQTTv5)
    try:
        publish(pub, n, 5)  # seq 21..25, with the consumer there
        if hold:
            wait(lambda: len(seqs(sub)) >= n + 5, 10, "the held messages resent")
            assert seqs(sub) == list(range(1, n + 6))  # every one, once
            assert pub.wait_for(lambda c: c["backlog"] == 0 and c["unrouted_held"] == 0, 5), pub.counters()
            assert pub.counters()["unrouted_resent"] >= n
        else:
            wait(lambda: len(seqs(sub)) >= 5, 10, "the new messages")
            time.sleep(1.0)  # would be long enough for a resend
            assert seqs(sub) == list(range(n + 1, n + 6))  # seq 1..20 reached nobody: lost
            assert pub.counters()["unrouted_resent"] == 0
    finally:
        sub.close()


def test_without_a_consumer_resends_keep_to_the_delay_and_the_spool_bounds_still_apply(
        broker, tmp_path, publishers):
    delay, held = 1.0, 8
    pub = publishers(agent_config(broker, tmp_path, mqtt={"protocol": "5", "hold_unrouted_s": delay},
                                  spool={"max_messages": 10}))
    wait(lambda: pub.connected, 10, "publisher connected")
    publish(pub, 0, held)
    assert pub.wait_for(lambda c: c["unrouted_held"] >= held, 10), pub.counters()
    before, t0 = pub.counters(), time.monotonic()
    time.sleep(3.5)
    after, elapsed = pub.counters(), time.monotonic() - t0
    resent = after["unrouted_resent"] - before["unrouted_resent"]
    # each held message goes out at most once per delay: no tight loop; but it does go out again
    assert held <= resent <= held * (elapsed / delay + 1), (resent, elapsed)
    # nothing else was sent meanwhile (a read may fall between a resend's two counts: one batch)
    assert abs((after["sent"] - before["sent"]) - resent) <= held
    assert after["backlog"] == held and after["dropped"] == 0
    # 6 more: 14 > spool.max_messages 10, so the 4 oldest held messages go, counted as usual
    publish(pub, held, 6)
    assert pub.wait_for(lambda c: c["dropped_by"].get("spool_max_messages", 0) == 4, 5), pub.counters()
    sub = Subscriber(broker, [SHARED], protocol=paho.MQTTv5)
    try:
        wait(lambda: len(seqs(sub)) >= 10, 10, "the 10 kept messages")
        # the oldest held ones went (seq 1..4), unless one was on the wire for its resend just
        # then (spared like any message in flight; a newer one went instead): 10 distinct remain
        got = seqs(sub)
        assert len(set(got)) == len(got) == 10 and set(got) <= set(range(1, 15)), got
        assert pub.wait_for(lambda c: c["backlog"] == 0, 5), pub.counters()
    finally:
        sub.close()
