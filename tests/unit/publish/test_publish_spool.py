"""The spool: order, cursor, persistence across restarts, bounds, and degrading to memory
when the disk fails (really failing: a path that cannot exist, a full database, a lock)."""

import contextlib
import logging
import sqlite3

import pytest

from agent.publish.spool import Message, Spool


def spool(path, **bounds):
    settings = dict(max_bytes=10**6, max_messages=1000, max_age=3600.0, memory_max_messages=100)
    settings.update(bounds)
    return Spool(None if path is None else str(path), **settings)


def msgs(n, start=0, size=10, **kw):
    return [Message(f"t/{start + i}", bytes([65 + (start + i) % 26]) * size, **kw) for i in range(n)]


def topics(rows):
    return [m.topic for m in rows]


@pytest.fixture(params=["disk", "memory"])
def any_spool(request, tmp_path):
    s = spool(tmp_path / "spool.db" if request.param == "disk" else None)
    yield s
    s.close()


def test_oldest_first_with_a_cursor(any_spool):
    any_spool.add(msgs(5))
    first = any_spool.after(0, 3)
    assert topics(first) == ["t/0", "t/1", "t/2"]
    assert topics(any_spool.after(first[-1].id, 10)) == ["t/3", "t/4"]
    any_spool.remove(first[:2])  # acknowledged
    assert len(any_spool) == 3 and any_spool.bytes == 30
    assert topics(any_spool.after(0, 10)) == ["t/2", "t/3", "t/4"]  # a reconnect resends from here
    any_spool.add(msgs(1, start=5))
    assert topics(any_spool.after(0, 10))[-1] == "t/5"  # new ones always after the backlog


def test_a_newer_message_with_the_same_key_replaces_the_waiting_one(any_spool):
    any_spool.add([Message("stats", b"1", key="stats"), Message("d", b"x")])
    any_spool.add([Message("stats", b"2", key="stats"), Message("stats", b"3", key="stats")])
    rows = any_spool.after(0, 10)
    assert [(m.topic, m.payload) for m in rows] == [("d", b"x"), ("stats", b"3")]
    assert len(any_spool) == 2 and any_spool.bytes == 2


def test_props_and_flags_survive(any_spool):
    any_spool.add([Message("r", b"{}", qos=2, retain=True, props={"correlation_data": "00ff"})])
    row = any_spool.after(0, 1)[0]
    assert (row.qos, row.retain, row.props) == (2, True, {"correlation_data": "00ff"})


def test_a_restart_finds_the_backlog_and_ids_keep_growing(tmp_path):
    path = tmp_path / "spool.db"
    first = spool(path)
    first.add(msgs(3))
    first.remove(first.after(0, 1))
    last = first.last_id()
    first.close()
    again = spool(path)
    assert len(again) == 2 and again.bytes == 20 and again.mode == "disk"
    assert topics(again.after(0, 10)) == ["t/1", "t/2"]
    again.add(msgs(1, start=9))
    assert again.after(0, 10)[-1].id > last
    again.close()


def test_wal_mode_on_disk(tmp_path):
    s = spool(tmp_path / "spool.db")
    s.add(msgs(1))
    assert s._store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


@pytest.mark.parametrize("where", ["disk", "memory"])
@pytest.mark.parametrize("bound, reason", [(dict(max_messages=4), "max_messages"),
                                           (dict(max_bytes=45), "max_bytes")])
def test_bounds_drop_the_oldest_and_count_them(tmp_path, where, bound, reason, caplog):
    s = spool(tmp_path / "s.db" if where == "disk" else None, **bound)
    caplog.set_level(logging.WARNING)
    s.add(msgs(10))
    assert topics(s.after(0, 100)) == ["t/6", "t/7", "t/8", "t/9"]
    assert s.dropped[reason] == 6 and s.dropped_total == 6
    assert "dropped the 6 oldest" in caplog.text  # one add, one line
    s.close()


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_bounds_spare_messages_in_flight(tmp_path, where):
    s = spool(tmp_path / "s.db" if where == "disk" else None, max_bytes=50)
    s.add(msgs(3))
    inflight = s.after(0, 2)[-1].id  # the first two are on the wire
    s.add(msgs(5, start=3), inflight_above=inflight)
    assert topics(s.after(0, 100)) == ["t/0", "t/1", "t/5", "t/6", "t/7"]
    s.close()


def test_max_age(tmp_path):
    now = [1000.0]
    s = Spool(str(tmp_path / "s.db"), max_bytes=10**6, max_messages=100, max_age=60.0,
              memory_max_messages=10, clock=lambda: now[0])
    s.add([Message("old", b"1", created=900.0), Message("new", b"2", created=990.0)])
    assert s.trim() == 0  # sizes are fine; age is checked by the periodic job only
    assert s.trim(check_age=True) == 1
    assert topics(s.after(0, 10)) == ["new"] and s.dropped["max_age"] == 1
    s.close()


def test_a_path_that_cannot_exist_degrades_to_memory_loudly(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    caplog.set_level(logging.ERROR)
    s = spool(blocker / "spool.db", memory_max_messages=3)
    assert s.mode == "memory" and "cannot open" in s.degraded_reason
    assert "SPOOL DEGRADED" in caplog.text
    s.add(msgs(5))  # never raises; the memory bound applies
    assert topics(s.after(0, 10)) == ["t/2", "t/3", "t/4"] and s.dropped["memory"] == 2


def test_disabled_spool_is_memory_only():
    s = spool(None)
    s.add(msgs(2))
    assert s.mode == "memory" and s.degraded_reason is None and len(s) == 2


def test_disk_full_while_running_keeps_every_message(tmp_path, caplog):
    s = spool(tmp_path / "spool.db", memory_max_messages=1000)
    s.add(msgs(20, size=500))
    on_disk = s.after(0, 100)
    # SQLITE_FULL for real: the database may not grow past its current size.
    pages = s._store.db.execute("PRAGMA page_count").fetchone()[0]
    s._store.db.execute(f"PRAGMA max_page_count={pages}")
    caplog.set_level(logging.ERROR)
    s.add(msgs(50, start=20, size=500))
    assert s.mode == "memory" and "full" in s.degraded_reason
    rows = s.after(0, 1000)
    assert topics(rows) == [f"t/{i}" for i in range(70)]  # nothing lost, order kept
    assert [m.id for m in rows[:20]] == [m.id for m in on_disk]  # a cursor stays valid
    assert len(s) == 70 and s.bytes == 70 * 500 and "SPOOL DEGRADED" in caplog.text
    s.remove(rows[:10])
    assert len(s) == 60 and s.after(0, 1)[0].topic == "t/10"


def test_a_spool_locked_by_another_agent_is_not_shared(tmp_path, caplog):
    path = tmp_path / "spool.db"
    owner = spool(path)
    owner.add(msgs(1))
    caplog.set_level(logging.ERROR)
    second = spool(path)
    assert second.mode == "memory" and "another detection-agent" in second.degraded_reason
    second.close()
    owner.close()


def test_an_unreadable_spool_file_degrades(tmp_path):
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    s = spool(path)
    assert s.mode == "memory"
    s.add(msgs(1))
    assert len(s) == 1
    with contextlib.suppress(sqlite3.Error):
        s.close()


def test_a_keyed_message_replaced_while_in_flight_is_counted_once(any_spool):
    # The stalled-broker bug of issue 14: retained stats replaced while the older one waited for
    # its PUBACK, then that late PUBACK; the count went negative and the sender stopped.
    any_spool.add([Message("d", b"xx"), Message("stats", b"1", key="stats")])
    in_flight = any_spool.after(0, 10)  # both sent, neither acknowledged
    any_spool.add([Message("stats", b"22", key="stats")])  # the next stats replaces the old row
    assert len(any_spool) == 2 and any_spool.bytes == 4
    any_spool.remove(in_flight)  # the late PUBACKs: "stats 1" is gone already
    assert len(any_spool) == 1 and any_spool.bytes == 2
    assert [(m.topic, m.payload) for m in any_spool.after(0, 10)] == [("stats", b"22")]
    any_spool.remove(in_flight)  # a PUBACK reported twice changes nothing either
    assert len(any_spool) == 1 and any_spool.audit()
    any_spool.remove(any_spool.after(0, 10))
    assert len(any_spool) == 0 and any_spool.bytes == 0 and not any_spool.has_after(0)


def test_many_replacements_in_flight_never_drift(any_spool):
    sent = []
    for i in range(50):
        any_spool.add([Message("d", b"x"), Message("stats", str(i).encode(), key="stats")])
        sent += any_spool.after(sent[-1].id if sent else 0, 10)
        if i % 7 == 6:  # acknowledgements arrive late and in bursts
            any_spool.remove(sent)
            sent = []
    assert any_spool.audit()  # the running totals match the store itself
    rows = any_spool.after(0, 1000)
    assert len(any_spool) == len(rows) and any_spool.bytes == sum(m.size for m in rows)


def test_audit_finds_and_corrects_a_drift(any_spool, caplog):
    any_spool.add(msgs(3))
    assert any_spool.audit()
    any_spool.count, any_spool.bytes = 7, 1  # what a bug in the bookkeeping would leave
    caplog.set_level(logging.ERROR)
    assert not any_spool.audit()
    assert (len(any_spool), any_spool.bytes) == (3, 30) and "differed from the store" in caplog.text


def test_has_after(any_spool):
    assert not any_spool.has_after(0)
    any_spool.add(msgs(2))
    first, second = any_spool.after(0, 2)
    assert any_spool.has_after(first.id) and not any_spool.has_after(second.id)


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_drops_during_a_long_outage_are_summarised_not_logged_one_by_one(tmp_path, where, caplog):
    s = spool(tmp_path / "s.db" if where == "disk" else None, max_messages=10)
    caplog.set_level(logging.WARNING)
    for i in range(200):  # one frame's message at a time, as the sender adds them
        s.add(msgs(1, start=i))
    assert s.dropped_total == 190
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "dropped the 1 oldest" in lines[0]  # the first at once...
    s.close()
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 2 and "dropped the 189 oldest message(s) (max_messages: 189)" in lines[1]
    assert "190 dropped since the start" in lines[1]  # ...then a summary (at most one a minute)
