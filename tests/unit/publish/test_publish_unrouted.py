"""Held unrouted messages (MQTT 5 PUBACK code 16, ``mqtt.hold_unrouted_s``): resent after the
delay and not sooner, in spool order, never the retained ones; the spool's bounds drop them
(counted as usual) although they sit below the send cursor."""

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.publish.spool import Message, Spool
from agent.publish.unrouted import NO_MATCHING_SUBSCRIBERS, Unrouted, is_unrouted


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def spooled(s, n, **kw):
    s.add([Message(f"t/{i}", b"x" * 10, **kw) for i in range(n)])
    return s.after(0, n)


@pytest.fixture(params=["disk", "memory"])
def spool(request, tmp_path):
    path = str(tmp_path / "s.db") if request.param == "disk" else None
    s = Spool(path, max_bytes=10**6, max_messages=1000, max_age=60.0, memory_max_messages=1000,
              clock=Clock(1000.0))
    yield s
    s.close()


def test_the_reason_code_is_recognised_as_paho_reports_it():
    assert is_unrouted(ReasonCode(PacketTypes.PUBACK, identifier=NO_MATCHING_SUBSCRIBERS))
    assert is_unrouted(16)
    assert not is_unrouted(ReasonCode(PacketTypes.PUBACK, identifier=0))  # success
    assert not is_unrouted(ReasonCode(PacketTypes.PUBACK, identifier=0x87))  # not authorized
    assert not is_unrouted(None)


def test_off_nothing_is_held_but_each_one_is_counted():
    u = Unrouted(0.0)
    assert not u.note(Message("t", b"x", id=1))
    assert u.counters() == {"unrouted": 1, "unrouted_held": 0, "unrouted_resent": 0}


def test_a_held_message_is_due_after_the_delay_and_not_before():
    clock = Clock()
    u = Unrouted(2.0, clock)
    assert u.note(Message("t", b"x", id=7))
    assert u.due(100) == []
    clock.t += 1.99
    assert u.due(100) == []
    clock.t += 0.02
    assert [m.id for m in u.due(100)] == [7]
    assert u.due(100) == [] and len(u) == 0  # taken: only a new code 16 holds it again
    assert u.counters() == {"unrouted": 1, "unrouted_held": 0, "unrouted_resent": 1}


def test_due_messages_come_in_spool_order_within_the_window():
    clock = Clock()
    u = Unrouted(1.0, clock)
    for msg_id in (5, 3, 4, 1, 2):  # PUBACKs may come in any order
        u.note(Message("t", b"x", id=msg_id))
    clock.t += 1.0
    first = u.due(3)
    assert [m.id for m in first] == [3, 4, 5]  # the three held first, sorted
    assert [m.id for m in u.due(3)] == [1, 2]


def test_no_tight_loop_one_resend_per_delay_whatever_the_polling():
    # No consumer ever: each resend is answered with code 16 again. Polled every 10 ms for 10 s,
    # 20 messages held for 1 s each go out at most 10 times each.
    clock = Clock()
    u = Unrouted(1.0, clock)
    for i in range(1, 21):
        u.note(Message("t", b"x", id=i))
    sends = 0
    for _ in range(1000):
        clock.t += 0.01
        batch = u.due(100)
        sends += len(batch)
        for msg in batch:  # the broker answers code 16 again at once
            u.note(msg)
    assert 9 * 20 <= sends <= 10 * 20
    assert u.counters()["unrouted_resent"] == sends and len(u) == 20


def test_messages_that_could_not_be_sent_are_held_again_not_lost_from_the_list():
    clock = Clock()
    u = Unrouted(1.0, clock)
    u.note(Message("t", b"x", id=1))
    u.note(Message("t", b"x", id=2))
    clock.t += 1.0
    batch = u.due(10)
    u.put_back(batch[1:])  # the client refused the second publish (connection going)
    assert list(u.held) == [2] and u.counters()["unrouted_resent"] == 1
    assert u.due(10) == []  # a new delay
    clock.t += 1.0
    assert [m.id for m in u.due(10)] == [2]


def test_retained_messages_are_not_held():
    u = Unrouted(5.0)
    assert not u.note(Message("stats", b"{}", retain=True, id=3))
    assert len(u) == 0 and u.counters()["unrouted"] == 1


def test_a_reconnect_forgets_the_held_list():
    u = Unrouted(1.0)
    u.note(Message("t", b"x", id=1))
    u.clear()
    assert len(u) == 0


def test_max_messages_drops_held_messages_below_the_cursor_and_counts_them(spool):
    spool.max_messages = spool._bound = 5
    sent = spooled(spool, 5)
    u = Unrouted(30.0, Clock())
    for msg in sent[:3]:  # three answered with code 16; two still in flight
        u.note(msg)
    cursor = sent[-1].id
    spool.add([Message(f"n/{i}", b"y" * 10) for i in range(4)], inflight_above=cursor, held=u)
    left = [m.topic for m in spool.after(0, 100)]
    # without ``held`` nothing below the cursor could go and the spool would keep 9
    assert left == ["t/3", "t/4", "n/1", "n/2", "n/3"]
    assert spool.dropped["max_messages"] == 4 and len(u) == 0  # the 3 held, then the oldest new one
    assert len(spool) == 5


def test_max_age_drops_held_messages_and_spares_those_in_flight(spool):
    sent = spooled(spool, 4, created=900.0)  # older than max_age (60 s) at clock 1000
    u = Unrouted(30.0, Clock())
    u.note(sent[0])
    u.note(sent[1])  # sent[2], sent[3]: in flight
    assert spool.trim(sent[-1].id, check_age=True, held=u) == 2
    assert [m.topic for m in spool.after(0, 10)] == ["t/2", "t/3"]
    assert spool.dropped["max_age"] == 2 and len(u) == 0


def test_without_held_messages_trim_is_unchanged(spool):
    sent = spooled(spool, 3)
    u = Unrouted(30.0, Clock())
    assert spool.trim(sent[-1].id, check_age=True, held=u) == 0
    assert len(spool) == 3
